"""Who may talk to a CURVE port: the ZAP handler, and the record of everyone refused.

libzmq asks a ZAP handler (``inproc://zeromq.zap.01`` in the socket's context) about each
CURVE client that completed the cryptographic handshake, passing the client's public key
and IP address. Without a handler libzmq admits *any* key, so :class:`ClusterAuthenticator`
must be started before a CURVE socket binds. It is pyzmq's own asyncio authenticator
(``zmq.auth``), given a callback that accepts exactly the cluster's public keys; we only
add the peer's address to what a refusal reports.

Peers that never reach ZAP are refused by libzmq itself: a plaintext ZeroMQ client
(mechanism mismatch) or anything that is not ZMTP. :class:`HandshakeWatch` reads those
from the bound socket's monitor. libzmq 4.3's monitor names only the listening endpoint
for them, not the peer, so they are logged once per port instead of once per address.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable

import zmq
from zmq.auth.asyncio import AsyncioAuthenticator
from zmq.utils.monitor import parse_monitor_message

from servicekit.curve import ClusterKeys
from servicekit.zmqloop import ZmqReader

log = logging.getLogger("servicekit.zap")

#: Peer addresses remembered for "logged once"; past it, refusals are still counted.
MAX_REMEMBERED_PEERS = 10_000

#: (port name, reason) -> None: the metric of refusals.
RefusalCounter = Callable[[str, str], None]


class Refusals:
    """Counts every refused peer and logs each peer address once (so a scanner hammering a
    port writes one line, not one per attempt)."""

    def __init__(self, count: RefusalCounter) -> None:
        self._count = count
        self._logged: set[tuple[str, str]] = set()

    def refused(self, port: str, address: str | None, reason: str, why: str) -> None:
        self._count(port, reason)
        key = (port, address or "")
        if key in self._logged or len(self._logged) >= MAX_REMEMBERED_PEERS:
            return
        self._logged.add(key)
        if address:
            log.warning("Refused a ZeroMQ peer at %s on the %s port: %s (logged once per "
                        "address; every refusal is counted)", address, port, why)
        else:
            log.warning("Refused a ZeroMQ peer on the %s port: %s (libzmq does not say from "
                        "where; logged once per port; every refusal is counted)", port, why)


class ClusterAuthenticator(AsyncioAuthenticator):
    """ZAP: a CURVE client is admitted when its public key is one of the cluster's."""

    def __init__(self, context: zmq.Context[zmq.Socket[bytes]], keys: ClusterKeys,
                 ports: Iterable[str], refusals: Refusals) -> None:
        super().__init__(context, log=logging.getLogger("servicekit.zap.zmq"))
        self._accepted = keys.accepted
        self._refusals = refusals
        self._address = ""
        self._ports = tuple(ports)

    def start(self) -> None:
        super().start()
        for port in self._ports:
            self.configure_curve_callback(port, credentials_provider=self)

    async def handle_zap_message(self, msg: list[bytes]) -> None:
        # The request carries the peer's address; the key callback below does not get it.
        self._address = msg[3].decode(errors="replace") if len(msg) > 3 else ""
        await super().handle_zap_message(msg)

    def callback(self, domain: str, key: bytes) -> bool:
        """pyzmq's credentials-provider hook: ``key`` is the client's Z85 public key."""
        if key in self._accepted:
            return True
        self._refusals.refused(domain, self._address, "unknown_key",
                               "it does not hold the cluster CURVE key")
        return False


#: Handshake failures of a bound socket's peers that ZAP never sees.
_FAILURES = zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
#: Every handshake failure, for the dialling side's monitor.
HANDSHAKE_FAILED = _FAILURES | zmq.EVENT_HANDSHAKE_FAILED_AUTH


class HandshakeWatch:
    """Counts and logs the peers a bound CURVE socket refused before ZAP (see above)."""

    def __init__(self, sock: zmq.Socket[bytes], port: str, refusals: Refusals) -> None:
        self._sock = sock
        self._port = port
        self._refusals = refusals
        self._monitor = sock.get_monitor_socket(_FAILURES)
        self._reader = ZmqReader(self._monitor, self._on_events, asyncio.get_running_loop())

    def _on_events(self, messages: list[list[bytes]]) -> None:
        for message in messages:
            event = parse_monitor_message(message)
            if (event["event"] == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
                    and event["value"] == zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH):
                self._refusals.refused(self._port, None, "not_curve",
                                       "it does not use CURVE")
            else:
                self._refusals.refused(self._port, None, "handshake",
                                       "its ZeroMQ handshake failed")

    def close(self) -> None:
        self._reader.close()
        self._sock.disable_monitor()
        self._monitor.close(0)


class PortGuard:
    """A GameServer's admission to its CURVE ports, whole: the ZAP handler, started here,
    before any of them binds, and the handshake watch of each bound socket. Without keys
    (CURVE off) it does nothing."""

    def __init__(self, context: zmq.Context[zmq.Socket[bytes]], keys: ClusterKeys | None,
                 ports: Iterable[str], count: RefusalCounter) -> None:
        self._refusals = Refusals(count)
        self._watches: list[HandshakeWatch] = []
        self._authenticator: ClusterAuthenticator | None = None
        if keys is not None:
            self._authenticator = ClusterAuthenticator(context, keys, ports, self._refusals)
            self._authenticator.start()

    def watch(self, sock: zmq.Socket[bytes], port: str) -> None:
        """Count and log the peers ``sock`` (bound, serving ``port``) refuses before ZAP."""
        if self._authenticator is not None:
            self._watches.append(HandshakeWatch(sock, port, self._refusals))

    def close(self) -> None:
        for watch in self._watches:
            watch.close()
        self._watches.clear()
        if self._authenticator is not None:
            self._authenticator.stop()
            self._authenticator = None


def describe_handshake_failure(event: int, value: int) -> str:
    """Why a handshake this process started failed, for the dialling side's log line."""
    if event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
        return "the server refused our CURVE key (CLUSTER_CURVE_SECRET_FILE differs)"
    if value == zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH:
        return "one side uses CURVE and the other does not (set CLUSTER_CURVE_SECRET_FILE " \
               "on every service, or on none)"
    if value == zmq.PROTOCOL_ERROR_ZMTP_CRYPTOGRAPHIC:
        return "the CURVE handshake failed (the server does not hold the key we expect)"
    return f"ZeroMQ handshake failed (code {value})"
