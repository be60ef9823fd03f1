"""The cluster's CURVE keys: what ``CLUSTER_CURVE_SECRET_FILE`` holds and what follows from it.

One key pair for the whole cluster, not one per node: every GameServer, Gateway and the
admin CLI holds the same secret key, and a peer is admitted when it proves it holds it
(libzmq's CURVE handshake proves possession of the secret behind the public key a client
presents; our ZAP handler, :mod:`servicekit.zap`, admits only the cluster's public keys).
Per-node keys would need a key directory to distribute and revoke; a single Secret is what
a compose file or a Helm chart can carry, and it is enough to tell "inside the cluster"
from "anyone who can reach the port", which is the line this draws.

The file holds one Z85 secret key per line (``#`` starts a comment). The first is the key
this process uses; every key listed is accepted from peers. That makes rotation three
rolling restarts: ``old,new`` everywhere, then ``new,old``, then ``new`` (docs/SECURITY.md).
A server's public key is published in the node registry, so a client dials each server
with the key that server really uses, provided it is one this client accepts.

libzmq does the cryptography (libsodium, in its I/O thread); this module only reads and
checks keys, never logs or repeats a secret, and names the file in every error.
"""

from __future__ import annotations

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

    def server_key_for(self, published: str | None) -> bytes | None:
        """The public key to expect from a server that published ``published`` in the
        registry: that key when this process accepts it, ``None`` when it does not (the
        caller must not dial). A server that published none is expected to use ours."""
        if not published:
            return self.public
        key = published.encode()
        return key if key in self.accepted else None


def generate_secret() -> str:
    """A new Z85 secret key, as ``python -m gameserver keygen`` prints it."""
    _, secret = zmq.curve_keypair()
    return secret.decode("ascii")


def parse_keys(text: str, source: str) -> ClusterKeys:
    """Keys from the file's text; ``source`` names the file in errors (never the text)."""
    secrets: list[bytes] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
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
