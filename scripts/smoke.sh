#!/usr/bin/env bash
# Check a running Beamline Router deployment from outside, after a deploy or a rollback:
# a decide round trip for a tenant whose policy is deployed, the backpressure status
# subject, and /readyz. Exit 0 when every check passes, 1 otherwise.
#
#   scripts/smoke.sh nats://nats-1:4222 [metrics host:port] [tenant]
#   SMOKE_CONFIG=/etc/beamline/router.toml scripts/smoke.sh   # serve's URLs, auth and TLS
#
# Uses the router binary itself (`beamline-router smoke`): $ROUTER_BIN, else the one on
# PATH, else a debug build of this checkout.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="${ROUTER_BIN:-$(command -v beamline-router || true)}"
if [ -z "$BIN" ]; then
    cargo build --quiet --bin beamline-router
    BIN="${CARGO_TARGET_DIR:-target}/debug/beamline-router"
fi
ARGS=(smoke --tenant "${3:-acme}")
if [ -n "${SMOKE_CONFIG:-}" ]; then
    ARGS+=(--config "$SMOKE_CONFIG")
else
    ARGS+=(--nats-url "${1:-nats://127.0.0.1:4222}")
fi
if [ -n "${2:-}" ]; then
    ARGS+=(--metrics "$2")
fi
exec "$BIN" "${ARGS[@]}"
