"""Every GameServer metric in one place (documented in docs/OPERATIONS.md).

Per-message metrics use servicekit.fastmetrics (no lock, no per-update label lookup);
the rest are ordinary prometheus-client metrics.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from servicekit.fastmetrics import FastCounter, FastHistogram, register_fast

NS = "gameserver"

handler_duration = FastHistogram(
    f"{NS}_handler_duration_seconds",
    "Time spent handling a request (router and handler, after the idempotency check), "
    "by message type",
    ["msg_type"],
)
requests = FastCounter(
    f"{NS}_requests_total", "Client requests handled, by message type and result",
    ["msg_type", "result"],
)
duplicates = FastCounter(
    f"{NS}_duplicate_requests_total",
    "Requests whose sequence id was already processed, by outcome (cached|rejected)",
    ["outcome"],
)
p2p_records = FastCounter(
    f"{NS}_p2p_records_total", "Data-plane records exchanged with Gateways, by direction",
    ["direction"],
)
p2p_batches = FastCounter(
    f"{NS}_p2p_batches_total",
    "Data-plane batches (ZeroMQ messages) exchanged with Gateways, by direction; records "
    "per batch = p2p_records_total / p2p_batches_total",
    ["direction"],
)
register_fast([handler_duration, requests, duplicates, p2p_records, p2p_batches])

sessions_active = Gauge(f"{NS}_sessions_active", "Sessions attached to this GameServer")
sessions_created = Counter(f"{NS}_sessions_created_total", "Sessions created by LOGIN")
sessions_resumed = Counter(
    f"{NS}_sessions_resumed_total",
    "Sessions taken on by this GameServer, by how (reconnect|adopt|handover)", ["how"]
)
sessions_kicked = Counter(
    f"{NS}_sessions_kicked_total", "Sockets kicked by this GameServer, by reason", ["reason"]
)
sessions_detached = Counter(
    f"{NS}_sessions_detached_total", "Sessions whose socket went away, now in reconnect grace"
)
sessions_expired = Counter(
    f"{NS}_sessions_expired_total",
    "Detached sessions that were not resumed within the grace period",
)
sessions_logged_out = Counter(f"{NS}_sessions_logged_out_total", "Sessions ended by LOGOUT")
sessions_fenced = Counter(
    f"{NS}_sessions_fenced_total",
    "Sessions dropped here because they are no longer ours: taken over by another owner "
    "(moved) or no longer in Redis (gone)",
)
redis_duration = Histogram(
    f"{NS}_redis_operation_duration_seconds", "Redis operation latency, by operation",
    ["operation"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
redis_errors = Counter(
    f"{NS}_redis_errors_total", "Failed Redis operations, by operation", ["operation"]
)
commit_batch_sessions = Histogram(
    f"{NS}_commit_batch_sessions", "Sessions written per group commit",
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000),
)
commits_pending = Gauge(
    f"{NS}_commits_pending",
    "Sessions with state changes not yet in Redis (queued or being written; their "
    "responses are held back)"
)
commits_unconfirmed = Counter(
    f"{NS}_commits_unconfirmed_total",
    "Held state-change responses answered SERVER_UNAVAILABLE because their commit did not "
    "reach Redis within REDIS_REQUEST_TIMEOUT_S (the write is still retried)"
)
gateways_connected = Gauge(
    f"{NS}_gateways_connected", "Gateways that said HELLO within the liveness window"
)
p2p_dropped = Counter(
    f"{NS}_p2p_dropped_messages_total",
    "Data-plane batches to a Gateway that could not be sent, by reason "
    "(high_water_mark|unreachable)", ["reason"],
)
node_info = Gauge(f"{NS}_node_info", "Constant 1, labelled with this node's identity "
                  "(instance_id: this process; Prometheus' own 'instance' is the target)",
                  ["node_id", "instance_id"])
ready = Gauge(f"{NS}_ready", "1 when /readyz answers ready")

mesh_calls = Counter(
    f"{NS}_mesh_calls_total",
    "Service-mesh calls made to other GameServers, by method and outcome "
    "(ok|unreachable|timeout|<remote error code>)", ["method", "outcome"],
)
mesh_call_duration = Histogram(
    f"{NS}_mesh_call_duration_seconds", "Service-mesh call latency, by method", ["method"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
mesh_served = Counter(
    f"{NS}_mesh_requests_served_total",
    "Service-mesh calls this GameServer answered, by method and result (ok|error)",
    ["method", "result"],
)
handovers = Counter(
    f"{NS}_session_handovers_total",
    "Sessions handed to another GameServer while draining, by outcome", ["outcome"],
)

internal_refusals = Counter(
    f"{NS}_internal_refusals_total",
    "ZeroMQ peers refused on the P2P and mesh ports with CLUSTER_CURVE_SECRET_FILE set, by "
    "port (p2p|mesh) and reason (unknown_key: CURVE without the cluster key; not_curve: no "
    "CURVE at all; handshake: not a valid ZeroMQ handshake)",
    ["port", "reason"],
)


def create_known_series() -> None:
    """Zero series for every label value known in advance: without a first sample at 0,
    rate()/increase() miss a counter's first jump (an alert on the first Redis errors)."""
    from protocol.messages import KickReason

    for how in ("reconnect", "adopt", "handover"):
        sessions_resumed.labels(how)
    for kick in KickReason:
        sessions_kicked.labels(kick.value)
    for operation in ("login", "resume", "commit", "detach", "logout", "renew", "locate",
                      "end_session", "heartbeat"):
        redis_errors.labels(operation)
    for reason in ("high_water_mark", "unreachable"):
        p2p_dropped.labels(reason)
    for port in ("p2p", "mesh"):
        for refusal in ("unknown_key", "not_curve", "handshake"):
            internal_refusals.labels(port, refusal)
    for outcome in ("ok", "gone", "no_target", "failed", "unreachable"):
        handovers.labels(outcome)
