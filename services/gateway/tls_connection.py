"""One TLS client connection: OpenSSL over memory BIOs, inside the TCP protocol.

The ``ssl`` module does all of TLS (handshake, records, alerts, close_notify, key updates)
in an ``ssl.SSLObject``; this shell only moves bytes between it and the TCP transport, and
hands the Gateway's connection protocol a transport (:class:`TlsTransport`) that encrypts
what it writes. That is the sans-I/O shape of the rest of the Gateway.

Why not uvloop's own TLS transport (``create_server(ssl=...)`` or ``loop.start_tls``), which
does the same in Cython:
- **Visibility.** It drops a failed or stalled server handshake in silence. An operator needs
  a plaintext client on the TLS port, a TLS 1.1 client or a stalled handshake as a counter and
  a DEBUG line. Getting those out of ``start_tls`` took an eagerly started task per
  connection and a stand-in protocol for data decrypted before it returned.
- **Speed at many connections.** It gives every connection its own 256 KiB read buffer, where
  a plain TCP connection reads into the event loop's one shared buffer. Measured (echo,
  docs/BENCHMARKS.md), this shell is about 5% faster at 1000 connections and no slower at
  100.

What it refuses: anything OpenSSL refuses (not TLS, TLS < 1.2, a bad record after the
handshake) closes that connection only, counted and logged at DEBUG; a handshake not done
within ``timeout_s`` (the Gateway's idle timeout) likewise.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Callable
from typing import Any, cast

from gateway import metrics
from gateway.layered_transport import LayeredTransport, LayerProtocol
from gateway.tls import ServerTls, failure_reason

log = logging.getLogger("gateway.tls")

#: Plaintext taken from OpenSSL per read call (a client's frames are far smaller).
READ_CHUNK = 65536


class TlsConnection(LayerProtocol):
    """The TCP protocol of the TLS port: runs the server handshake, then carries the
    connection protocol made by ``make_protocol()`` over TLS."""

    def __init__(self, tls: ServerTls, make_protocol: Callable[[], asyncio.Protocol],
                 timeout_s: float) -> None:
        super().__init__()
        self._tls = tls
        self._make_protocol = make_protocol
        self._timeout_s = timeout_s
        self._peer: Any = None

    # ------------------------------------------------------------------ handshake
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._start_timer(transport, self._timeout_s)
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._ssl = self._tls.context.wrap_bio(self._incoming, self._outgoing,
                                               server_side=True)
        self._peer = transport.get_extra_info("peername")

    def _timed_out(self) -> None:
        self._timer = None
        if self._app is None and not self._closing:
            self._refuse("timeout", "not finished within the idle timeout")

    def _handshake(self) -> bool:
        """Advance the handshake; True once it is done and the connection protocol runs."""
        try:
            self._ssl.do_handshake()
        except ssl.SSLWantReadError:
            self._flush()
            return False
        except (ssl.SSLError, OSError) as exc:
            self._flush()  # OpenSSL's alert, if it wrote one
            self._refuse(failure_reason(exc), str(exc))
            return False
        self._flush()
        self._cancel_timer()
        metrics.tls_handshakes.inc()
        app = self._app = self._make_protocol()
        app.connection_made(cast(asyncio.Transport, TlsTransport(self)))
        return True

    def _refuse(self, reason: str, detail: str) -> None:
        metrics.tls_handshake_failures.labels(reason).inc()
        log.debug("TLS handshake failed, closing: Peer=%s, Reason=%s (%s)", self._peer,
                  reason, detail)
        self.abort()

    # ------------------------------------------------------------------ incoming
    def data_received(self, data: bytes) -> None:
        if self._closing:
            return
        self._incoming.write(data)
        if self._app is None and not self._handshake():
            return
        self._read()

    def _read(self) -> None:
        """Hand every whole record's plaintext to the connection protocol in one call."""
        sslobj, incoming = self._ssl, self._incoming
        chunks: list[bytes] = []
        close_notify = False
        try:
            # Asking again after the last whole record would raise SSLWantReadError: an
            # exception per read, which the pending counts avoid.
            while incoming.pending or sslobj.pending():
                chunk = sslobj.read(READ_CHUNK)
                if not chunk:
                    close_notify = True
                    break
                chunks.append(chunk)
        except ssl.SSLWantReadError:
            pass  # a record cut in two by TCP: the rest comes with the next read
        except (ssl.SSLError, OSError) as exc:
            log.debug("TLS error, closing: Peer=%s (%s)", self._peer, exc)
            self._flush()
            self.abort()
            return
        self._flush()  # what OpenSSL answers on its own: key updates, session tickets
        app = self._app
        if app is None:
            return
        if chunks:
            app.data_received(chunks[0] if len(chunks) == 1 else b"".join(chunks))
        if close_notify and not self._closing:
            app.eof_received()
            self.close()

    def eof_received(self) -> bool:
        if self._app is not None and not self._closing:
            self._app.eof_received()
        return False  # the TCP transport closes

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timer()
        if self._app is not None:
            self._app.connection_lost(exc)
        elif not self._closing:
            metrics.tls_handshake_failures.labels("closed").inc()
            log.debug("TLS handshake failed, closing: Peer=%s, Reason=closed (%s)",
                      self._peer, exc or "the peer went away")
        self._closing = True
        self._below = None

    # ------------------------------------------------------------------ outgoing
    def write(self, data: bytes) -> None:
        tcp = self._below
        if tcp is None or self._closing:
            return
        try:
            self._ssl.write(data)
        except (ssl.SSLError, OSError) as exc:
            log.debug("TLS error on write, closing: Peer=%s (%s)", self._peer, exc)
            self.abort()
            return
        tcp.write(self._outgoing.read())

    def _flush(self) -> None:
        if self._outgoing.pending and self._below is not None:
            self._below.write(self._outgoing.read())

    def close(self) -> None:
        """close_notify, then close the TCP transport once what is queued has left."""
        if self._closing or self._below is None:
            return
        self._closing = True
        self._cancel_timer()
        with contextlib.suppress(ssl.SSLError, OSError):
            self._ssl.unwrap()  # writes our close_notify; the peer's is not awaited
        self._flush()
        self._below.close()


class TlsTransport(LayeredTransport):
    """The transport the connection protocol writes to: encrypts, then the TCP transport."""

    def __init__(self, connection: TlsConnection) -> None:
        tcp = connection._below
        assert tcp is not None
        super().__init__(connection, tcp)
        self._connection = connection

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "ssl_object":
            return self._connection._ssl
        return super().get_extra_info(name, default)
