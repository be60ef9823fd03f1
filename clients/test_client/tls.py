"""TLS options of the test client: one description for the interactive and scripted client,
the library and the load generator.

``TlsOptions`` is plain data (a bench worker process rebuilds the context from it: an
``ssl.SSLContext`` does not cross a process boundary). The context is the ``ssl`` module's
secure client default: certificate and host name verified, TLS 1.2 or newer.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass


@dataclass(frozen=True)
class TlsOptions:
    #: CA bundle (PEM) to trust instead of the system's: a private CA, a self-signed cert.
    ca_file: str | None = None
    #: Name the certificate must carry, when it differs from the host dialled (an IP, a
    #: load balancer's address).
    server_name: str | None = None

    def context(self) -> ssl.SSLContext:
        """Raises OSError / ssl.SSLError for an unreadable or invalid ``ca_file``."""
        context = ssl.create_default_context(cafile=self.ca_file)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        return context

    def server_hostname(self, host: str) -> str:
        return self.server_name or host
