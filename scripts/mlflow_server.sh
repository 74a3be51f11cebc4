#!/usr/bin/env bash
# An MLflow tracking server for a team: start it once, point every sweep at it with
#   python -m raycf.sweep --set tracking.uri=http://HOST:PORT     (or export MLFLOW_TRACKING_URI=...)
#
#   bash scripts/mlflow_server.sh              # start: 127.0.0.1:5000, sqlite + artifacts under ~/.raycf/mlflow
#   bash scripts/mlflow_server.sh status       # pid, URL, /health
#   bash scripts/mlflow_server.sh stop         # stop the server this PID_FILE names
#
#   PORT=5001 DATA_DIR=/srv/mlflow bash scripts/mlflow_server.sh
#   ALSO_BIND=10.0.1.5 bash scripts/mlflow_server.sh     # loopback + a private address Ray workers on other nodes reach
#   BACKEND_STORE_URI=postgresql://mlflow@db.internal:5432/mlflow \
#   ARTIFACTS_DESTINATION=s3://my-bucket/raycf/mlflow bash scripts/mlflow_server.sh
#
# Environment (defaults in brackets):
#   HOST [127.0.0.1]   interface to bind. Keep it loopback or a private address; reach the server from a laptop
#                      through an SSH / kubectl port-forward, never by opening the port publicly (no auth here).
#   ALSO_BIND          a second address to listen on (same port), e.g. the node's private IP or a pod IP: Ray
#                      workers on other nodes reach the server there while HOST stays loopback, which is where an
#                      SSH (-L 5000:localhost:5000) or kubectl port-forward arrives. Served by gunicorn
#                      (--gunicorn-opts --bind), which listens on several addresses; uvicorn takes one.
#   PORT [5000]        port
#   DATA_DIR [~/.raycf/mlflow]   holds the default sqlite file, artifacts, the PID file and the log
#   BACKEND_STORE_URI [sqlite:///$DATA_DIR/mlflow.db]   runs, params, metrics. sqlite is fine for one server
#                      process (raycf's Ray workers all write through this one server); for many users or several
#                      server replicas use PostgreSQL: postgresql://USER@HOST:5432/DB (password in ~/.pgpass or
#                      PGPASSWORD, never in the URI of a shared file).
#   ARTIFACTS_DESTINATION [$DATA_DIR/artifacts]   a local folder, s3://bucket/prefix or gs://bucket/prefix. The
#                      server proxies artifacts, so only the server needs cloud credentials (and boto3 /
#                      google-cloud-storage installed), not the Ray workers.
#   ALLOWED_HOSTS      --allowed-hosts (MLflow's DNS-rebinding guard). Default: localhost and private IPs. Set it
#                      when clients use a DNS name, e.g. ALLOWED_HOSTS='raycf-mlflow*,localhost:*' on Kubernetes.
#   PID_FILE [$DATA_DIR/mlflow-$PORT.pid]   LOG_FILE [$DATA_DIR/mlflow-$PORT.log]   WAIT_S [90]
#   MLFLOW [mlflow]    the mlflow command (e.g. .venv/bin/mlflow)
#
# Fast start: MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false and --workers 1 (healthy in ~5 s instead of ~13 s).
# The server runs in its own session (setsid), so `stop` ends it and its worker processes by that group id.
set -euo pipefail

cmd="${1:-start}"
HOST="${HOST:-127.0.0.1}"
PORT="${PORT:-5000}"
DATA_DIR="${DATA_DIR:-$HOME/.raycf/mlflow}"
BACKEND_STORE_URI="${BACKEND_STORE_URI:-sqlite:///$DATA_DIR/mlflow.db}"
ARTIFACTS_DESTINATION="${ARTIFACTS_DESTINATION:-$DATA_DIR/artifacts}"
PID_FILE="${PID_FILE:-$DATA_DIR/mlflow-$PORT.pid}"
LOG_FILE="${LOG_FILE:-$DATA_DIR/mlflow-$PORT.log}"
WAIT_S="${WAIT_S:-90}"
MLFLOW="${MLFLOW:-mlflow}"

# /health is answered on the bound address; a wildcard bind is checked on loopback
probe_host="$HOST"
case "$HOST" in 0.0.0.0|::|"[::]") probe_host=127.0.0.1 ;; esac
URL="http://$probe_host:$PORT"

healthy() {
    python3 - "$URL/health" <<'EOF' >/dev/null 2>&1
import sys, urllib.request
sys.exit(0 if urllib.request.urlopen(sys.argv[1], timeout=2).read().strip() == b"OK" else 1)
EOF
}

running_pid() {  # the recorded pid, if that process is still alive and is an mlflow server (not a reused pid)
    [ -f "$PID_FILE" ] || return 1
    local pid
    pid="$(cat "$PID_FILE")"
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
    ps -o args= -p "$pid" 2>/dev/null | grep -q mlflow || return 1
    echo "$pid"
}

start() {
    local pid
    if pid="$(running_pid)"; then
        if healthy; then echo "mlflow server already running: pid $pid, $URL"; return 0; fi
        echo "error: pid $pid from $PID_FILE is alive but $URL/health does not answer; run '$0 stop' first" >&2
        return 1
    fi
    mkdir -p "$DATA_DIR" "$(dirname "$PID_FILE")" "$(dirname "$LOG_FILE")"
    case "$ARTIFACTS_DESTINATION" in *://*) ;; *) mkdir -p "$ARTIFACTS_DESTINATION" ;; esac
    if healthy; then
        echo "error: something already answers on $URL (not started by $PID_FILE); choose another PORT" >&2
        return 1
    fi
    local args=(server --backend-store-uri "$BACKEND_STORE_URI" --artifacts-destination "$ARTIFACTS_DESTINATION"
                --host "$HOST" --port "$PORT" --workers 1)
    [ -n "${ALLOWED_HOSTS:-}" ] && args+=(--allowed-hosts "$ALLOWED_HOSTS")
    [ -n "${ALSO_BIND:-}" ] && args+=(--gunicorn-opts "--bind $ALSO_BIND:$PORT")
    # setsid without -f execs in place (a background job of a script is no group leader), so $! is the
    # server's pid and also its process-group id
    MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false setsid "$MLFLOW" "${args[@]}" >>"$LOG_FILE" 2>&1 < /dev/null &
    pid=$!
    echo "$pid" > "$PID_FILE"
    local t=0
    until healthy; do
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "error: mlflow server exited during start; last lines of $LOG_FILE:" >&2
            tail -n 20 "$LOG_FILE" >&2
            rm -f "$PID_FILE"
            return 1
        fi
        if [ "$t" -ge "$WAIT_S" ]; then
            echo "error: $URL/health did not answer within ${WAIT_S}s; stopping pid $pid (log: $LOG_FILE)" >&2
            stop >/dev/null
            return 1
        fi
        sleep 1
        t=$((t + 1))
    done
    echo "mlflow server up: pid $pid, $URL${ALSO_BIND:+ and http://$ALSO_BIND:$PORT} (backend $BACKEND_STORE_URI, artifacts $ARTIFACTS_DESTINATION, log $LOG_FILE)"
}

stop() {
    local pid
    if ! pid="$(running_pid)"; then
        echo "no mlflow server running for $PID_FILE"
        rm -f "$PID_FILE"
        return 0
    fi
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 20); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.5
    done
    kill -0 "$pid" 2>/dev/null && { kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true; }
    rm -f "$PID_FILE"
    echo "mlflow server stopped (pid $pid)"
}

status() {
    local pid
    if pid="$(running_pid)" && healthy; then echo "running: pid $pid, $URL"; return 0; fi
    if pid="$(running_pid)"; then echo "unhealthy: pid $pid alive, $URL/health does not answer"; return 1; fi
    echo "not running ($PID_FILE)"
    return 3
}

case "$cmd" in
    start) start ;;
    stop) stop ;;
    status) status ;;
    *) echo "usage: $0 [start|stop|status]  (settings via HOST, PORT, DATA_DIR, BACKEND_STORE_URI, ARTIFACTS_DESTINATION, ...)" >&2
       exit 2 ;;
esac
