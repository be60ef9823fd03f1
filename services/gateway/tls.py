"""TLS for game clients: the server context, its reload on SIGHUP, and what a failed
handshake is called.

The context is the ``ssl`` module's secure default for servers
(``ssl.create_default_context(Purpose.CLIENT_AUTH)``) with TLS 1.2 as the floor; nothing is
loosened. A reload loads the new certificate and key into a scratch context first, so a
missing, unreadable or mismatched file changes nothing and is logged; only then are they
loaded into the live context, which OpenSSL applies to handshakes that start afterwards
(connections already up keep theirs). That is how a cert-manager renewal needs no restart.

Client-initiated renegotiation (TLS 1.2) is refused: it costs the server a handshake per
request at the client's will, and nothing needs it. The connections themselves run in
:mod:`gateway.tls_connection`.
"""

from __future__ import annotations

import logging
import ssl

from gateway import metrics

log = logging.getLogger("gateway.tls")


def server_context(cert_file: str, key_file: str) -> ssl.SSLContext:
    """Raises OSError or ssl.SSLError if the files are missing, unreadable or do not match."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.options |= ssl.OP_NO_RENEGOTIATION
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


def failure_reason(exc: BaseException) -> str:
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
