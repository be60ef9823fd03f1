"""Every Gateway metric in one place (documented in docs/OPERATIONS.md)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

from servicekit.fastmetrics import FastCounter, register_fast

NS = "gateway"

frames = FastCounter(f"{NS}_frames_total", "Client frames, by direction (in|out)", ["direction"])
bytes_ = FastCounter(f"{NS}_bytes_total", "Client bytes, by direction (in|out)", ["direction"])
register_fast([frames, bytes_])

connected_clients = Gauge(f"{NS}_connected_clients", "Client TCP connections open now")
connections = Counter(f"{NS}_connections_total", "Client TCP connections accepted")
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
    "idle_timeout|backpressure|shutdown|gameserver_down|handover_overflow|"
    "handover_timeout)", ["reason"],
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
