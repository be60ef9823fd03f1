"""GameServer settings: each one an environment variable and a ``--flag`` (see ``--help``)."""

from __future__ import annotations

from dataclasses import dataclass

from servicekit.config import CommonConfig, ConfigError, setting


@dataclass(frozen=True)
class GameServerConfig(CommonConfig):
    node_id: str = setting(
        "1", env="GAMESERVER_NODE_ID",
        help="this GameServer's id: a number 1..65535; 'ordinal' = from a StatefulSet pod "
        "name (gameserver-N -> N+1); 'auto' = the lowest free id, leased in Redis (identical "
        "replicas, e.g. docker compose --scale)")
    bind_host: str = setting("0.0.0.0", env="GAMESERVER_BIND_HOST",
                             help="address the P2P and mesh ports listen on")
    p2p_port: int = setting(9001, env="GAMESERVER_P2P_PORT",
                            help="ZeroMQ ROUTER port Gateways connect to", min=1, max=65535)
    mesh_port: int = setting(
        9101, env="GAMESERVER_MESH_PORT",
        help="service-mesh port: GameServer-to-GameServer calls and the admin CLI "
        "(cluster-internal: no authentication)", min=1, max=65535)
    advertise_host: str = setting(
        "", env="GAMESERVER_ADVERTISE_HOST",
        help="host Gateways and peers use to reach this node (empty: this host's address)")
    metrics_host: str = setting("0.0.0.0", env="GAMESERVER_METRICS_HOST",
                                help="address of /metrics, /healthz, /readyz")
    metrics_port: int = setting(8090, env="GAMESERVER_METRICS_PORT",
                                help="port of /metrics, /healthz, /readyz", min=0, max=65535)
    reconnect_grace_s: float = setting(
        60.0, env="RECONNECT_GRACE_S",
        help="seconds a disconnected session stays resumable", min=1.0)
    session_lease_s: float = setting(
        120.0, env="SESSION_LEASE_S",
        help="TTL of an attached session in Redis, renewed by its owner", min=5.0)
    auth_mode: str = setting("none", env="AUTH_MODE", help="none|hmac",
                             choices=("none", "hmac"))
    auth_secret: str = setting("", env="AUTH_SECRET",
                               help="HMAC secret for AUTH_MODE=hmac tokens")
    response_cache_size: int = setting(
        64, env="RESPONSE_CACHE_SIZE",
        help="responses kept per session for retried sequence ids", min=1, max=4096)
    compression_threshold_bytes: int = setting(
        1024, env="COMPRESSION_THRESHOLD_BYTES",
        help="payloads above this are LZ4-compressed for clients that accept lz4", min=0)
    heartbeat_s: float = setting(1.0, env="NODE_HEARTBEAT_S",
                                 help="registry heartbeat interval", min=0.05)
    node_ttl_s: float = setting(5.0, env="NODE_TTL_S",
                                help="registry entry expiry without heartbeat", min=0.2)
    max_pending_commits: int = setting(
        10000, env="MAX_PENDING_COMMITS",
        help="sessions queued for the next group commit before MOVEs get SERVER_BUSY",
        min=1)
    mesh_deadline_s: float = setting(
        1.0, env="MESH_DEADLINE_S",
        help="deadline of a service-mesh call (kick on another node, whisper, handover)",
        min=0.05)
    admin_token: str = setting(
        "", env="ADMIN_TOKEN",
        help="enables POST /admin/kick on the metrics port for requests bearing this token")
    redis_request_timeout_s: float = setting(
        2.0, env="REDIS_REQUEST_TIMEOUT_S",
        help="bound on the Redis work of one request (LOGIN, RECONNECT, LOGOUT, WHISPER, "
        "admin kick) and on how long a MOVE's answer is held for its commit; past it the "
        "request is answered SERVER_UNAVAILABLE", min=0.1, max=60.0)
    redis_wait_replicas: int = setting(
        0, env="REDIS_WAIT_REPLICAS",
        help="durable acknowledgements: a MOVE is answered only after its commit reached "
        "this many replicas of its master (WAIT, once per tick; per master on a cluster); "
        "0 = answer once the master has it (docs/OPERATIONS.md §1.4.3)", min=0, max=16)
    drain_timeout_s: float = setting(
        10.0, env="GAMESERVER_DRAIN_TIMEOUT_S",
        help="on SIGTERM: seconds to flush state before exiting anyway", min=0.0)

    def validate(self) -> None:
        super().validate()
        if self.node_id not in ("auto", "ordinal") and not (
                self.node_id.isdigit() and 1 <= int(self.node_id) <= 65535):
            raise ConfigError("GAMESERVER_NODE_ID must be 1..65535, 'ordinal' or 'auto', "
                              f"got {self.node_id!r}")
        if self.auth_mode == "hmac" and not self.auth_secret:
            raise ConfigError("AUTH_SECRET must be set when AUTH_MODE=hmac")
        if self.node_ttl_s <= self.heartbeat_s:
            raise ConfigError("NODE_TTL_S must be greater than NODE_HEARTBEAT_S")
        if self.p2p_port == self.mesh_port:
            raise ConfigError("GAMESERVER_MESH_PORT must differ from GAMESERVER_P2P_PORT")
