"""Gateway settings: each one an environment variable and a ``--flag`` (see ``--help``)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from servicekit.config import CommonConfig, ConfigError, setting


@dataclass(frozen=True)
class GatewayConfig(CommonConfig):
    node_id: int = setting(1, env="GATEWAY_NODE_ID", help="this Gateway's id", min=1, max=65535)
    client_host: str = setting("0.0.0.0", env="GATEWAY_CLIENT_HOST",
                               help="address game clients connect to")
    client_port: int = setting(5000, env="GATEWAY_CLIENT_PORT",
                               help="TCP port game clients connect to", min=0, max=65535)
    tls_cert_file: str = setting(
        "", env="GATEWAY_TLS_CERT_FILE",
        help="PEM certificate (chain) for TLS clients; with GATEWAY_TLS_KEY_FILE the Gateway "
        "also listens for TLS on GATEWAY_TLS_PORT; SIGHUP reloads both files")
    tls_key_file: str = setting("", env="GATEWAY_TLS_KEY_FILE",
                                help="PEM private key of GATEWAY_TLS_CERT_FILE")
    tls_port: int = setting(5443, env="GATEWAY_TLS_PORT",
                            help="TCP port of TLS game clients (with a certificate set)",
                            min=0, max=65535)
    plaintext: bool = setting(
        True, env="GATEWAY_PLAINTEXT",
        help="also listen for plaintext clients on GATEWAY_CLIENT_PORT (false: TLS only)")
    ws_port: int = setting(
        5080, env="GATEWAY_WS_PORT",
        help="port of WebSocket game clients (RFC 6455 on path /, one v1 frame per binary "
        "message); 0 switches it off, as does GATEWAY_PLAINTEXT=false", min=0, max=65535)
    wss_port: int = setting(
        5444, env="GATEWAY_WSS_PORT",
        help="port of WebSocket clients over TLS (with GATEWAY_TLS_CERT_FILE set); 0 "
        "switches it off", min=0, max=65535)
    ws_allowed_origins: str = setting(
        "", env="GATEWAY_WS_ALLOWED_ORIGINS",
        help="comma-separated Origins a WebSocket upgrade may come from, e.g. "
        "https://game.example.com (empty: any, including none)")
    reuse_port: bool = setting(
        False, env="GATEWAY_REUSE_PORT",
        help="listen with SO_REUSEPORT, so that several Gateway processes on one host share "
        "the client ports and the kernel spreads new connections over them (one process is "
        "one core)")
    p2p_port: int = setting(
        8001, env="GATEWAY_P2P_PORT",
        help="reserved for GameServer-initiated P2P connections; v1 Gateways dial the "
        "GameServers' P2P ports instead and do not listen here", min=0, max=65535)
    metrics_host: str = setting("0.0.0.0", env="GATEWAY_METRICS_HOST",
                                help="address of /metrics, /healthz, /readyz")
    metrics_port: int = setting(8080, env="GATEWAY_METRICS_PORT",
                                help="port of /metrics, /healthz, /readyz", min=0, max=65535)
    idle_timeout_s: float = setting(30.0, env="IDLE_TIMEOUT_S",
                                    help="seconds without a client frame before IDLE_TIMEOUT",
                                    min=0.1)
    max_connections: int = setting(50000, env="GATEWAY_MAX_CONNECTIONS",
                                   help="client connections accepted at once", min=1)
    max_send_buffer_bytes: int = setting(
        1 << 20, env="GATEWAY_MAX_SEND_BUFFER_BYTES",
        help="bytes queued for a client that does not read before it is disconnected",
        min=4096)
    client_max_inflight: int = setting(
        64, env="CLIENT_MAX_INFLIGHT",
        help="requests of one client forwarded and not yet answered; at the cap the Gateway "
        "stops reading that socket until answers drain", min=1)
    client_max_inflight_bytes: int = setting(
        256 * 1024, env="CLIENT_MAX_INFLIGHT_BYTES",
        help="bytes of one client's requests forwarded and not yet answered (the same "
        "pause; a single frame may overshoot it)", min=1024)
    client_rate_limit: float = setting(
        200.0, env="CLIENT_RATE_LIMIT",
        help="frames per second one client may send (token bucket); frames over it are "
        "answered ERROR_RES RATE_LIMITED, not forwarded; 0 switches the limit off", min=0.0)
    client_rate_burst: float = setting(
        0.0, env="CLIENT_RATE_BURST",
        help="token-bucket depth: frames a client may send at once; 0 means twice "
        "CLIENT_RATE_LIMIT", min=0.0)
    rate_limit_kick_s: float = setting(
        5.0, env="RATE_LIMIT_KICK_S",
        help="seconds a client may stay over CLIENT_RATE_LIMIT before KICKOUT_NTF "
        "RATE_LIMITED", min=0.1)
    login_timeout_s: float = setting(
        10.0, env="LOGIN_TIMEOUT_S",
        help="seconds a connection may go without a successful LOGIN or RECONNECT before "
        "KICKOUT_NTF LOGIN_TIMEOUT (also after a LOGOUT); 0 switches it off", min=0.0)
    discovery_interval_s: float = setting(
        1.0, env="DISCOVERY_INTERVAL_S", help="how often the GameServer registry is read",
        min=0.05)
    handover_timeout_s: float = setting(
        10.0, env="GATEWAY_HANDOVER_TIMEOUT_S",
        help="longest a socket's frames are held while its session moves to another "
        "GameServer; then the client is told SERVER_SHUTDOWN and resumes", min=0.5)
    drain_grace_s: float = setting(
        5.0, env="GATEWAY_DRAIN_GRACE_S",
        help="on SIGTERM: seconds clients get after SERVER_SHUTDOWN before sockets close",
        min=0.0)

    @property
    def rate_burst(self) -> float:
        """The effective bucket depth (CLIENT_RATE_BURST, or twice the rate when unset)."""
        return self.client_rate_burst or 2 * self.client_rate_limit

    @property
    def tls_enabled(self) -> bool:
        return bool(self.tls_cert_file and self.tls_key_file)

    @property
    def ws_origins(self) -> list[str]:
        """GATEWAY_WS_ALLOWED_ORIGINS as a list (empty: any Origin)."""
        return [o.strip().rstrip("/") for o in self.ws_allowed_origins.split(",")
                if o.strip()]

    def validate(self) -> None:
        super().validate()
        for origin in self.ws_origins:
            # A browser sends scheme://host[:port] (or "null"): anything else never matches.
            if origin != "null" and not re.fullmatch(r"https?://[^\s/,]+", origin):
                raise ConfigError(
                    f"GATEWAY_WS_ALLOWED_ORIGINS: {origin!r} is not an origin; give "
                    "scheme://host[:port] as a browser sends it, e.g. https://game.example.com")
        if self.max_send_buffer_bytes < self.max_frame_bytes:
            raise ConfigError(
                "GATEWAY_MAX_SEND_BUFFER_BYTES must be at least MAX_FRAME_BYTES"
            )
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            raise ConfigError("GATEWAY_TLS_CERT_FILE and GATEWAY_TLS_KEY_FILE go together: "
                              "set both or neither")
        if not self.plaintext and not self.tls_enabled:
            raise ConfigError("GATEWAY_PLAINTEXT=false needs GATEWAY_TLS_CERT_FILE and "
                              "GATEWAY_TLS_KEY_FILE: the Gateway would accept no client")
        if self.client_rate_limit and self.rate_burst < 1:
            raise ConfigError("CLIENT_RATE_BURST must be at least 1 when CLIENT_RATE_LIMIT is on")
