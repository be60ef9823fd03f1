"""The cluster's CURVE keys: what ``CLUSTER_CURVE_SECRET_FILE`` holds and what follows from it.

One key pair for the whole cluster, not one per node: every GameServer, Gateway and the
admin CLI holds the same secret key, and a peer is admitted when it proves it holds it
(libzmq's CURVE handshake proves possession of the secret behind the public key a client
presents; our ZAP handler, :mod:`servicekit.zap`, admits only the cluster's public keys).
Per-node keys would need a key directory to distribute and revoke; a single Secret is what
a compose file or a Helm chart can carry, and it is enough to tell "inside the cluster"
from "anyone who can reach the port", which is the line this draws.

The file holds one Z85 secret key per line, blank lines ignored (no comments: ``#`` is a
Z85 digit, so a key may contain or start with one). The first is the key
this process uses; every key listed is accepted from peers. That makes rotation three
rolling restarts: ``old,new`` everywhere, then ``new,old``, then ``new`` (docs/SECURITY.md).
A server's public key is published in the node registry, so a client dials each server
with the key that server really uses, provided it is one this client accepts.

libzmq does the cryptography (libsodium, in its I/O thread); this module only reads and
checks keys, never logs or repeats a secret, and names the file in every error.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import zmq

from servicekit.config import ConfigError

Z85_KEY_LENGTH = 40


@dataclass(frozen=True, slots=True)
class ClusterKeys:
    """The key this process uses, and the public keys it accepts from peers."""

    secret: bytes
    public: bytes
    accepted: frozenset[bytes]



class CurveMismatch(Exception):
    """This process and a server disagree about CURVE: dialling it could only fail (or, for
    a plaintext server, would send cluster traffic in the clear), so the caller does not."""


def server_key(keys: ClusterKeys | None, published: str) -> bytes | None:
    """The public key to expect from a server that published ``published`` (its
    ``curve_key`` registry field, empty when it runs without CURVE); ``None`` means dial in
    plaintext, which happens only when neither side uses CURVE. Raises
    :class:`CurveMismatch` saying what differs."""
    if keys is None:
        if published:
            raise CurveMismatch("it requires CURVE and CLUSTER_CURVE_SECRET_FILE is not set "
                                "here")
        return None
    if not published:
        raise CurveMismatch("it runs without CURVE and this process has "
                            "CLUSTER_CURVE_SECRET_FILE set (set it on every service)")
    key = published.encode()
    if key not in keys.accepted:
        raise CurveMismatch("its CURVE key is not one this process accepts "
                            "(CLUSTER_CURVE_SECRET_FILE differs)")
    return key


class ServerKeys:
    """The key to dial each server with (:func:`server_key`), logging each disagreement
    once until it changes: a Gateway or mesh client re-reads the registry every second."""

    def __init__(self, keys: ClusterKeys | None, log: logging.Logger, what: str) -> None:
        self.keys = keys
        self._log = log
        self._what = what
        self._reported: dict[int, str] = {}

    def for_node(self, node_id: int, endpoint: str, published: str) -> bytes | None:
        """Raises :class:`CurveMismatch` (logged) when the node must not be dialled."""
        try:
            key = server_key(self.keys, published)
        except CurveMismatch as exc:
            if self._reported.get(node_id) != str(exc):
                self._reported[node_id] = str(exc)
                self._log.error("Not dialling %s node %d at %s: %s", self._what, node_id,
                                endpoint, exc)
            raise
        if self._reported.pop(node_id, None) is not None:
            self._log.info("Dialling %s node %d at %s: CURVE settings agree now", self._what,
                           node_id, endpoint)
        return key


def generate_secret() -> str:
    """A new Z85 secret key, as ``python -m gameserver keygen`` prints it."""
    _, secret = zmq.curve_keypair()
    return secret.decode("ascii")


def parse_keys(text: str, source: str) -> ClusterKeys:
    """Keys from the file's text; ``source`` names the file in errors (never the text)."""
    secrets: list[bytes] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        key = line.encode("ascii", "replace")
        if len(key) != Z85_KEY_LENGTH:
            raise ConfigError(f"{source} line {number}: not a Z85 CURVE secret key "
                              f"(expected {Z85_KEY_LENGTH} characters, got {len(key)})")
        try:
            public = zmq.curve_public(key)
        except (zmq.ZMQError, ValueError):
            raise ConfigError(f"{source} line {number}: not a Z85 CURVE secret key") from None
        secrets.append(key)
        del public
    if not secrets:
        raise ConfigError(f"{source} holds no key; create one with: "
                          "python -m gameserver keygen > FILE")
    publics = [zmq.curve_public(key) for key in secrets]
    return ClusterKeys(secret=secrets[0], public=publics[0], accepted=frozenset(publics))


def load_keys(path: str) -> ClusterKeys | None:
    """The keys in ``path`` (``CLUSTER_CURVE_SECRET_FILE``), or ``None`` when it is empty:
    CURVE off. Raises :class:`ConfigError` naming the file, never quoting it."""
    if not path:
        return None
    try:
        with open(path, encoding="ascii", errors="replace") as file:
            text = file.read()
    except OSError as exc:
        raise ConfigError(f"CLUSTER_CURVE_SECRET_FILE {path}: {exc.strerror}") from None
    return parse_keys(text, f"CLUSTER_CURVE_SECRET_FILE {path}")


def log_curve(log: logging.Logger, keys: ClusterKeys | None, path: str) -> None:
    """The start-up line saying whether internal traffic is protected."""
    if keys is None:
        log.warning("Internal ZeroMQ traffic is NOT authenticated or encrypted: anyone who "
                    "can reach the P2P and mesh ports can act as a cluster member; set "
                    "CLUSTER_CURVE_SECRET_FILE (docs/SECURITY.md)")
    else:
        log.info("Internal ZeroMQ traffic: CURVE with the cluster key in %s (%d key(s) "
                 "accepted)", path, len(keys.accepted))
