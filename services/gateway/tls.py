"""TLS for game clients: the server context, its reload on SIGHUP, and the handshake.

The context is the ``ssl`` module's secure default for servers
(``ssl.create_default_context(Purpose.CLIENT_AUTH)``) with TLS 1.2 as the floor; nothing is
loosened. A reload loads the new certificate and key into a scratch context first, so a
missing, unreadable or mismatched file changes nothing and is logged; only then are they
loaded into the live context, which OpenSSL applies to handshakes that start afterwards
(connections already up keep theirs). That is how a cert-manager renewal needs no restart.

The handshake is driven by ``loop.start_tls`` from :class:`TlsHandshake` instead of giving
``create_server`` an ``ssl=`` context: asyncio (and uvloop) drop a failed or stalled server
handshake in silence, and an operator needs to see a plaintext client on the TLS port, a
TLS 1.1 client or a stalled handshake as a counter (and a DEBUG line), without any of them
disturbing other clients.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable
from typing import cast

from gateway import metrics

log = logging.getLogger("gateway.tls")


def server_context(cert_file: str, key_file: str) -> ssl.SSLContext:
    """Raises OSError or ssl.SSLError if the files are missing, unreadable or do not match."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_file, key_file)
    return context


class ServerTls:
    """The live server context and what it was loaded from."""

    def __init__(self, cert_file: str, key_file: str) -> None:
        self.cert_file = cert_file
        self.key_file = key_file
        self.context = server_context(cert_file, key_file)

    def reload(self) -> bool:
        """SIGHUP: load the files again for new connections; on failure keep the current
        ones. (Two small file reads on the event loop: rare, and cheaper than a thread.)"""
        try:
            server_context(self.cert_file, self.key_file)
        except (OSError, ssl.SSLError) as exc:
            metrics.tls_reloads.labels("failed").inc()
            log.error("TLS certificate reload failed, keeping the current certificate: "
                      "%s (GATEWAY_TLS_CERT_FILE=%s, GATEWAY_TLS_KEY_FILE=%s)", exc,
                      self.cert_file, self.key_file)
            return False
        self.context.load_cert_chain(self.cert_file, self.key_file)
        metrics.tls_reloads.labels("ok").inc()
        log.info("TLS certificate reloaded from %s", self.cert_file)
        return True


class TlsHandshake(asyncio.Protocol):
    """Accepts one TCP connection on the TLS port, runs the server handshake, and hands the
    TLS transport to the real protocol (``make_protocol()``) once it succeeded.

    The handshake task starts eagerly, so ``start_tls`` has taken the transport over before
    any byte of the ClientHello can reach this protocol (pausing the transport here instead
    stalls uvloop's server handshake). A failed handshake (not TLS at all, a
    protocol version or cipher we refuse, a peer that went away) or one that took longer
    than ``timeout_s`` closes this connection, counts, and logs at DEBUG.
    """

    def __init__(self, tls: ServerTls, make_protocol: Callable[[], asyncio.Protocol],
                 timeout_s: float) -> None:
        self._tls = tls
        self._make_protocol = make_protocol
        self._timeout_s = timeout_s

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        tcp = cast(asyncio.Transport, transport)
        loop = asyncio.get_running_loop()
        # Started eagerly: start_tls takes the transport over before this returns, so no
        # byte of the ClientHello can reach this protocol.
        task = asyncio.Task(self._handshake(loop, tcp), loop=loop, eager_start=True)
        _pending.add(task)
        task.add_done_callback(_pending.discard)

    async def _handshake(self, loop: asyncio.AbstractEventLoop, tcp: asyncio.Transport) -> None:
        peer = tcp.get_extra_info("peername")
        early = _EarlyData()
        try:
            secure = await loop.start_tls(tcp, early, self._tls.context, server_side=True,
                                          ssl_handshake_timeout=self._timeout_s)
        except (OSError, ssl.SSLError, TimeoutError, ConnectionError) as exc:
            reason = _failure_reason(exc)
            metrics.tls_handshake_failures.labels(reason).inc()
            log.debug("TLS handshake failed, closing: Peer=%s, Reason=%s (%s)", peer, reason,
                      exc)
            tcp.abort()
            return
        if secure is None:  # the peer went away during the handshake
            metrics.tls_handshake_failures.labels("closed").inc()
            return
        metrics.tls_handshakes.inc()
        protocol = self._make_protocol()
        secure.set_protocol(protocol)
        protocol.connection_made(secure)
        early.hand_over(protocol)

    def connection_lost(self, exc: Exception | None) -> None:
        pass  # before the handshake completed: _handshake counts it


class _EarlyData(asyncio.Protocol):
    """Stands in for the real protocol during the handshake. asyncio's TLS layer passes on
    application data decrypted in the same read as the handshake's end (a TLS 1.3 client
    sends its LOGIN right behind its Finished) before ``start_tls`` returns: it is kept
    here and handed to the real protocol, in order, once that one is connected."""

    def __init__(self) -> None:
        self._data: list[bytes] = []
        self._eof = False
        self._lost: tuple[Exception | None] | None = None

    def data_received(self, data: bytes) -> None:
        self._data.append(data)

    def eof_received(self) -> bool:
        self._eof = True
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = (exc,)

    def hand_over(self, protocol: asyncio.Protocol) -> None:
        for data in self._data:
            protocol.data_received(data)
        self._data.clear()
        if self._eof:
            protocol.eof_received()
        if self._lost is not None:
            protocol.connection_lost(self._lost[0])


def _failure_reason(exc: BaseException) -> str:
    """A small fixed set of label values for the failure counter."""
    text = str(exc).lower()
    if isinstance(exc, TimeoutError) or "taking longer" in text or "timed out" in text:
        return "timeout"
    # OpenSSL's words for bytes that are not a TLS record at all.
    if any(word in text for word in ("wrong_version_number", "http_request", "https_proxy",
                                     "packet_length_too_long", "record_layer_failure")):
        return "not_tls"
    if any(word in text for word in ("unsupported_protocol", "protocol_version",
                                     "version_too_low", "no_protocols_available")):
        return "protocol_version"
    if isinstance(exc, ssl.SSLError):
        return "tls_error"
    return "closed"


#: Handshake tasks, referenced until done (the loop keeps only weak references).
_pending: set[asyncio.Task[None]] = set()
