#!/usr/bin/env bash
# Run the whole sample on this machine: Redis check, one GameServer, one Gateway, a client.
#
#   ./run-sample.sh                     interactive client when stdin is a terminal,
#                                       else a short scripted demo
#   RUN_SAMPLE_NO_CLIENT=1 ./run-sample.sh
#                                       start everything, print where to connect, wait for Ctrl-C
#
# Settings are the services' usual environment variables (REDIS_CONNECTION, GATEWAY_CLIENT_PORT,
# GATEWAY_P2P_PORT, GATEWAY_METRICS_PORT, GAMESERVER_P2P_PORT, GAMESERVER_MESH_PORT,
# GAMESERVER_METRICS_PORT, ...; see `python -m gateway --help`). Logs go to .run/.
# Ctrl-C or the end of the client stops everything this script started.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$ROOT"
"$ROOT/scripts/ensure-venv.sh"
PY="$ROOT/.venv/bin/python"
RUN_DIR="$ROOT/.run"
mkdir -p "$RUN_DIR"

export REDIS_CONNECTION="${REDIS_CONNECTION:-redis-dev.k8s.home:6379}"
export GATEWAY_CLIENT_PORT="${GATEWAY_CLIENT_PORT:-5000}"
export GATEWAY_WS_PORT="${GATEWAY_WS_PORT:-5080}"
export GATEWAY_P2P_PORT="${GATEWAY_P2P_PORT:-8001}"
export GATEWAY_METRICS_PORT="${GATEWAY_METRICS_PORT:-8080}"
export GAMESERVER_P2P_PORT="${GAMESERVER_P2P_PORT:-9001}"
export GAMESERVER_MESH_PORT="${GAMESERVER_MESH_PORT:-9101}"
export GAMESERVER_METRICS_PORT="${GAMESERVER_METRICS_PORT:-8090}"
# One machine: the Gateway reaches the GameServer over loopback, whatever this host's name.
export GAMESERVER_ADVERTISE_HOST="${GAMESERVER_ADVERTISE_HOST:-127.0.0.1}"
# The GameServer's P2P and mesh ports: this machine only, and CURVE with a key of this sample's
# own (made once in .run/; bring yours with CLUSTER_CURVE_SECRET_FILE). docs/SECURITY.md.
export GAMESERVER_BIND_HOST="${GAMESERVER_BIND_HOST:-127.0.0.1}"
# A demo should stop promptly on Ctrl-C.
export GATEWAY_DRAIN_GRACE_S="${GATEWAY_DRAIN_GRACE_S:-1}"
export PYTHONUNBUFFERED=1
READY_TIMEOUT_S="${RUN_SAMPLE_READY_TIMEOUT_S:-20}"
STOP_TIMEOUT_S="${RUN_SAMPLE_STOP_TIMEOUT_S:-5}"

ok() { echo "✓ $*"; }
fail() { echo "✗ $*" >&2; }
info() { echo "→ $*"; }

# --- stopping everything we started, whatever happens -------------------------------------

STARTED_PIDS=()    # in start order
STARTED_NAMES=()

stop_pid() {  # stop_pid PID NAME: SIGTERM, wait up to STOP_TIMEOUT_S, then SIGKILL
  local pid=$1 name=$2 waited=0
  kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
  kill -TERM "$pid" 2>/dev/null || true
  while kill -0 "$pid" 2>/dev/null; do
    if ((waited >= STOP_TIMEOUT_S * 10)); then
      fail "$name (pid $pid) still running after ${STOP_TIMEOUT_S}s: SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      break
    fi
    sleep 0.1
    waited=$((waited + 1))
  done
  wait "$pid" 2>/dev/null || true
}

cleanup() {
  local status=$?
  trap - EXIT INT TERM
  if ((${#STARTED_PIDS[@]})); then
    info "stopping ${STARTED_NAMES[*]}"
    local i
    # Newest first: the Gateway drains its clients before the GameServer goes away.
    for ((i = ${#STARTED_PIDS[@]} - 1; i >= 0; i--)); do
      stop_pid "${STARTED_PIDS[i]}" "${STARTED_NAMES[i]}"
    done
    ok "stopped; logs are in $RUN_DIR"
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

started() {  # started PID NAME
  STARTED_PIDS+=("$1")
  STARTED_NAMES+=("$2")
}

# --- ports --------------------------------------------------------------------------------

busy="$("$PY" - \
  "GATEWAY_CLIENT_PORT=$GATEWAY_CLIENT_PORT" "GATEWAY_WS_PORT=$GATEWAY_WS_PORT" \
  "GATEWAY_P2P_PORT=$GATEWAY_P2P_PORT" \
  "GATEWAY_METRICS_PORT=$GATEWAY_METRICS_PORT" "GAMESERVER_P2P_PORT=$GAMESERVER_P2P_PORT" \
  "GAMESERVER_MESH_PORT=$GAMESERVER_MESH_PORT" "GAMESERVER_METRICS_PORT=$GAMESERVER_METRICS_PORT" \
  <<'PY'
import socket
import sys

# SO_REUSEADDR as the services use it: a port in TIME_WAIT is free, one with a listener is not.
for item in sys.argv[1:]:
    name, _, port = item.partition("=")
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("0.0.0.0", int(port)))
        except OSError as exc:
            print(f"port {port} ({name}) is in use: {exc.strerror}")
        except ValueError:
            print(f"{name}={port!r} is not a port number")
PY
)"
if [[ -n "$busy" ]]; then
  while IFS= read -r line; do fail "$line"; done <<<"$busy"
  echo "  stop what uses it, or choose another port with the variable named above" >&2
  exit 1
fi

# --- Redis --------------------------------------------------------------------------------

# Exit 0 if Redis answers PING within 1 s, 1 if not, 2 if REDIS_CONNECTION (or a REDIS_TLS_*
# file) is malformed. Prints the host:port it tried (without credentials). rediss:// is
# checked with the services' own TLS arguments (servicekit.redis_tls).
redis_probe() {
  "$PY" - "$1" <<'PY'
import os
import sys

import redis

from servicekit.config import ConfigError
from servicekit.redis_tls import RedisTls
from servicekit.redis_url import display_address, to_redis_url

tls = RedisTls(*(os.environ.get(f"REDIS_TLS_{name}_FILE", "") for name in ("CA", "CERT", "KEY")))
try:
    url = to_redis_url(sys.argv[1])
    tls.check(url)
    print(display_address(sys.argv[1]))
except ConfigError as exc:
    print(exc)
    sys.exit(2)
try:
    client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1,
                                  **tls.client_kwargs(url))
    client.ping()
except Exception:
    sys.exit(1)
PY
}

free_port() {
  "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

probe_status=0
redis_address="$(redis_probe "$REDIS_CONNECTION")" || probe_status=$?
if ((probe_status == 2)); then
  fail "REDIS_CONNECTION is not valid: $redis_address"
  exit 1
elif ((probe_status == 0)); then
  ok "Redis is running at $redis_address"
elif command -v redis-server >/dev/null 2>&1; then
  fail "Redis is NOT running at $redis_address"
  port="$(free_port)"
  info "starting a throwaway local redis-server on 127.0.0.1:$port"
  redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no \
    --dir "$RUN_DIR" --logfile "$RUN_DIR/redis.log" --daemonize no >/dev/null 2>&1 &
  started $! redis-server
  export REDIS_CONNECTION="127.0.0.1:$port"
  unset REDIS_TLS_CA_FILE REDIS_TLS_CERT_FILE REDIS_TLS_KEY_FILE  # it speaks plain TCP
  for _ in $(seq 1 100); do
    redis_probe "$REDIS_CONNECTION" >/dev/null && break
    kill -0 "${STARTED_PIDS[-1]}" 2>/dev/null || break
    sleep 0.1
  done
  if ! redis_probe "$REDIS_CONNECTION" >/dev/null; then
    fail "the throwaway redis-server did not answer; see $RUN_DIR/redis.log"
    tail -n 20 "$RUN_DIR/redis.log" >&2 || true
    exit 1
  fi
  ok "Redis is running at $REDIS_CONNECTION (throwaway, data is not kept)"
else
  echo "✗ Redis is NOT running at $redis_address → start redis-server or set REDIS_CONNECTION" >&2
  exit 1
fi

# --- services -----------------------------------------------------------------------------

if [[ -z "${CLUSTER_CURVE_SECRET_FILE:-}" ]]; then
  if [[ ! -s "$RUN_DIR/cluster.key" ]]; then
    (umask 077 && "$PY" -m gameserver keygen >"$RUN_DIR/cluster.key.new" \
      && mv "$RUN_DIR/cluster.key.new" "$RUN_DIR/cluster.key")
  fi
  export CLUSTER_CURVE_SECRET_FILE="$RUN_DIR/cluster.key"
fi
ok "internal traffic uses CURVE (key file: $CLUSTER_CURVE_SECRET_FILE)"

: >"$RUN_DIR/gameserver.log"
: >"$RUN_DIR/gateway.log"
info "starting the GameServer (log: .run/gameserver.log)"
"$PY" -m gameserver >>"$RUN_DIR/gameserver.log" 2>&1 </dev/null &
started $! gameserver
info "starting the Gateway (log: .run/gateway.log)"
"$PY" -m gateway >>"$RUN_DIR/gateway.log" 2>&1 </dev/null &
started $! gateway

# is_ready PORT: /readyz answers 200 (http.client: never goes through an http_proxy).
is_ready() {
  "$PY" - "$1" <<'PY'
import http.client
import sys

conn = http.client.HTTPConnection("127.0.0.1", int(sys.argv[1]), timeout=1)
try:
    conn.request("GET", "/readyz")
    sys.exit(0 if conn.getresponse().status == 200 else 1)
except OSError:
    sys.exit(1)
PY
}

show_logs() {
  local name
  for name in gameserver gateway; do
    echo "--- last 20 lines of .run/$name.log ---" >&2
    tail -n 20 "$RUN_DIR/$name.log" >&2 || true
  done
}

wait_ready() {  # wait_ready NAME PID METRICS_PORT
  local name=$1 pid=$2 port=$3 deadline=$((SECONDS + READY_TIMEOUT_S))
  until is_ready "$port"; do
    if ! kill -0 "$pid" 2>/dev/null; then
      fail "$name exited before it became ready"
      show_logs
      exit 1
    fi
    if ((SECONDS >= deadline)); then
      fail "$name not ready after ${READY_TIMEOUT_S}s (http://127.0.0.1:$port/readyz)"
      show_logs
      exit 1
    fi
    sleep 0.2
  done
  ok "$name is ready (http://127.0.0.1:$port/readyz)"
}

wait_ready gameserver "${STARTED_PIDS[-2]}" "$GAMESERVER_METRICS_PORT"
wait_ready gateway "${STARTED_PIDS[-1]}" "$GATEWAY_METRICS_PORT"
ok "Gateway accepts game clients on 127.0.0.1:$GATEWAY_CLIENT_PORT (WebSocket: ws://127.0.0.1:$GATEWAY_WS_PORT/)"

# --- client -------------------------------------------------------------------------------

CLIENT=("$PY" -m test_client --host 127.0.0.1 --port "$GATEWAY_CLIENT_PORT" --user-id 1)

if [[ "${RUN_SAMPLE_NO_CLIENT:-0}" == 1 ]]; then
  echo "  connect with: .venv/bin/python -m test_client --host 127.0.0.1 --port $GATEWAY_CLIENT_PORT --user-id 1"
  echo "  metrics:      http://127.0.0.1:$GATEWAY_METRICS_PORT/metrics  http://127.0.0.1:$GAMESERVER_METRICS_PORT/metrics"
  echo "  Ctrl-C stops everything"
  # Returns when a service exits on its own (or a signal arrives, which runs the trap).
  wait -n "${STARTED_PIDS[-2]}" "${STARTED_PIDS[-1]}" || true
  fail "a service exited on its own"
  show_logs
  exit 1
fi

if [[ -t 0 ]]; then
  info "interactive client as user 1 (type help; Ctrl-D or logout to quit)"
  "${CLIENT[@]}"
else
  info "scripted demo: echo hello; move 3 4; ping; logout"
  "${CLIENT[@]}" --run "echo hello; move 3 4; ping; logout"
fi
