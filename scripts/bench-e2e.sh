#!/usr/bin/env bash
# End-to-end benchmark: the router against raw JetStream, on this machine, in one run
# (docs/PERFORMANCE.md, "End to end"). Gets the pinned nats-server, builds the router in
# release, and runs `beamline-router bench`, which starts a nats-server (temp store, free
# port) and `beamline-router serve` as child processes and prints a table and a
# `BENCH_JSON {...}` line.
#
#   scripts/bench-e2e.sh                          # full: saturation, then 25/50/80 % load
#   scripts/bench-e2e.sh --quick --min-ratio 0.2  # a few seconds; exit 1 below the floor
#   scripts/bench-e2e.sh --help                   # every flag
#
# Extra arguments go to `beamline-router bench`. Timings are only comparable within one
# run: compare the ratio, not absolute figures, across machines or loads.
set -euo pipefail
cd "$(dirname "$0")/.."

NATS_SERVER_BIN="$(scripts/install-nats-server.sh)"
export NATS_SERVER_BIN
TARGET_DIR="${CARGO_TARGET_DIR:-target}"

# BENCH_BIN: run this router binary (bench and `serve` child alike) instead of building
# the release one; CI passes the debug binary `scripts/test.sh` has just built, because a
# release build of the service costs minutes on a 2-core runner (docs/PERFORMANCE.md).
BIN="${BENCH_BIN:-}"
if [ -z "$BIN" ]; then
    cargo build --quiet --release --bin beamline-router
    BIN="$TARGET_DIR/release/beamline-router"
fi
exec "$BIN" bench --nats-server "$NATS_SERVER_BIN" "$@"
