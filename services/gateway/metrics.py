"""Every Gateway metric in one place (documented in docs/OPERATIONS.md)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from servicekit.fastmetrics import FastCounter, register_fast

NS = "gateway"

#: How clients connect: the client port, the TLS port, WebSocket, WebSocket over TLS.
TRANSPORTS = ("tcp", "tls", "ws", "wss")

frames = FastCounter(f"{NS}_frames_total", "Client frames, by direction (in|out) and transport",
                     ["direction", "transport"])
bytes_ = FastCounter(f"{NS}_bytes_total", "Client bytes, by direction (in|out) and transport",
                     ["direction", "transport"])
p2p_records = FastCounter(
    f"{NS}_p2p_records_total",
    "Data-plane records exchanged with GameServers, by direction (in|out)", ["direction"])
p2p_batches = FastCounter(
    f"{NS}_p2p_batches_total",
    "Data-plane batches (ZeroMQ messages) exchanged with GameServers, by direction; records "
    "per batch = p2p_records_total / p2p_batches_total", ["direction"])
register_fast([frames, bytes_, p2p_records, p2p_batches])

connected_clients = Gauge(f"{NS}_connected_clients", "Client connections open now, by transport",
                          ["transport"])
connections = Counter(f"{NS}_connections_total", "Client connections accepted, by transport",
                      ["transport"])


class TransportCounters:
    """The traffic counters of one transport, looked up once per connection, not per frame
    (a fast counter's cell is a one-element list, incremented in place)."""

    __slots__ = ("bytes_in", "bytes_out", "frames_in", "frames_out", "name")

    def __init__(self, name: str) -> None:
        self.name = name
        self.frames_in = frames.child("in", name)
        self.frames_out = frames.child("out", name)
        self.bytes_in = bytes_.child("in", name)
        self.bytes_out = bytes_.child("out", name)


COUNTERS = {name: TransportCounters(name) for name in TRANSPORTS}
rejected_connections = Counter(
    f"{NS}_rejected_connections_total", "Connections refused, by reason", ["reason"]
)
dropped_frames = Counter(
    f"{NS}_dropped_frames_total",
    "Client frames not delivered to a GameServer, by reason (each answered SERVER_UNAVAILABLE)",
    ["reason"],
)
unroutable_records = Counter(
    f"{NS}_unroutable_records_total",
    "Records from GameServers for sockets that are gone, by kind", ["kind"],
)
disconnects = Counter(
    f"{NS}_disconnects_total",
    "Client connections closed, by reason (client_closed|kicked|protocol_error|"
    "idle_timeout|login_timeout|rate_limited|backpressure|shutdown|gameserver_down|"
    "handover_overflow|handover_timeout)", ["reason"],
)
tls_handshakes = Counter(f"{NS}_tls_handshakes_total", "TLS handshakes completed on the TLS port")
tls_handshake_failures = Counter(
    f"{NS}_tls_handshake_failures_total",
    "TLS-port connections closed before their handshake completed, by reason "
    "(not_tls|protocol_version|tls_error|timeout|closed)", ["reason"],
)
ws_upgrades = Counter(f"{NS}_ws_upgrades_total",
                      "WebSocket upgrades accepted on the WebSocket ports")
ws_upgrade_failures = Counter(
    f"{NS}_ws_upgrade_failures_total",
    "WebSocket-port connections refused before the upgrade, by reason "
    "(origin|path|handshake|timeout)", ["reason"],
)
ws_protocol_errors = Counter(
    f"{NS}_ws_protocol_errors_total",
    "WebSocket connections closed for a message the protocol refuses, by reason "
    "(text_message|bad_message)", ["reason"],
)
tls_reloads = Counter(f"{NS}_tls_reloads_total",
                      "Certificate reloads on SIGHUP, by outcome (ok|failed)", ["outcome"])
rate_limited_frames = Counter(
    f"{NS}_rate_limited_frames_total",
    "Client frames refused by the per-connection rate limit (answered ERROR_RES RATE_LIMITED)",
)
reading_pauses = Counter(
    f"{NS}_reading_pauses_total",
    "Times a client socket stopped being read because its in-flight window was full",
)
reading_paused_clients = Gauge(
    f"{NS}_reading_paused_clients",
    "Client sockets not being read now: CLIENT_MAX_INFLIGHT(_BYTES) requests unanswered",
)
backpressure_disconnects = Counter(
    f"{NS}_backpressure_disconnects_total",
    "Clients disconnected because they did not read their data",
)
protocol_errors = Counter(f"{NS}_protocol_errors_total", "Framing violations by clients")
gameservers_live = Gauge(f"{NS}_gameservers_live",
                         "GameServers answering HELLO within the liveness window")
gameservers_known = Gauge(f"{NS}_service_discovery_count_servers",
                          "GameServers listed in the registry")
pinned_sockets = Gauge(f"{NS}_pinned_sockets", "Client sockets pinned to a session")
ready = Gauge(f"{NS}_ready", "1 when /readyz answers ready")
redis_duration = Histogram(
    f"{NS}_redis_operation_duration_seconds", "Redis operation latency, by operation",
    ["operation"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
redis_errors = Counter(
    f"{NS}_redis_errors_total", "Failed Redis operations, by operation", ["operation"]
)


def create_known_series() -> None:
    """Zero series for every label value known in advance (see the GameServer's twin)."""
    for reason in ("draining", "max_connections"):
        rejected_connections.labels(reason)
    for reason in ("no_gameserver", "high_water_mark", "unreachable"):
        dropped_frames.labels(reason)
    for kind in ("send", "pin"):
        unroutable_records.labels(kind)
    for reason in ("client_closed", "kicked", "protocol_error", "idle_timeout",
                   "login_timeout", "rate_limited", "backpressure", "shutdown",
                   "gameserver_down", "handover_overflow", "handover_timeout"):
        disconnects.labels(reason)
    redis_errors.labels("discovery")
    for reason in ("not_tls", "protocol_version", "tls_error", "timeout", "closed"):
        tls_handshake_failures.labels(reason)
    for outcome in ("ok", "failed"):
        tls_reloads.labels(outcome)
    for reason in ("origin", "path", "handshake", "timeout"):
        ws_upgrade_failures.labels(reason)
    for reason in ("text_message", "bad_message"):
        ws_protocol_errors.labels(reason)
