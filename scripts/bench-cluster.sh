#!/usr/bin/env bash
# The end-to-end bench (router against raw JetStream, in one run) on a 3-node JetStream
# cluster on loopback: three nats-servers (free ports, temporary stores) routed to each
# other, the router and the raw path each given R3 streams (the router chooses 3 on a
# cluster of 3; the bench's raw stream follows the same rule). Stops the cluster after.
#
#   scripts/bench-cluster.sh --quick     # extra arguments go to `beamline-router bench`
set -euo pipefail
cd "$(dirname "$0")/.."
NATS="$(scripts/install-nats-server.sh)"
TARGET_DIR="${CARGO_TARGET_DIR:-target}"
BIN="${BENCH_BIN:-}"
if [ -z "$BIN" ]; then
    cargo build --quiet --release --bin beamline-router
    BIN="$TARGET_DIR/release/beamline-router"
fi
dir="$(mktemp -d)"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$dir"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
client=(); route=()
for i in 1 2 3; do client+=("$(free_port)"); route+=("$(free_port)"); done
routes="nats://127.0.0.1:${route[0]},nats://127.0.0.1:${route[1]},nats://127.0.0.1:${route[2]}"
for i in 0 1 2; do
    "$NATS" -js -a 127.0.0.1 -p "${client[$i]}" -sd "$dir/n$((i + 1))" -n "n$((i + 1))" \
        --cluster_name bench --cluster "nats://127.0.0.1:${route[$i]}" --routes "$routes" \
        >"$dir/n$((i + 1)).log" 2>&1 &
    pids+=("$!")
done
urls="nats://127.0.0.1:${client[0]},nats://127.0.0.1:${client[1]},nats://127.0.0.1:${client[2]}"
# Wait until the meta group has a leader: a stream create then succeeds.
for _ in $(seq 1 300); do
    if grep -q "JetStream cluster new metadata leader\|Self is new JetStream cluster metadata leader" "$dir"/n*.log 2>/dev/null; then
        break
    fi
    sleep 0.1
done
echo "3-node cluster at $urls"
"$BIN" bench --nats-server "$NATS" --nats-url "$urls" "$@"
