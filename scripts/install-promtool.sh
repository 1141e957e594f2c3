#!/usr/bin/env bash
# Puts promtool (Prometheus' checker) on this machine and prints its absolute path on
# stdout, for the tests that lint the router's /metrics with `promtool check metrics`.
# From Debian's `prometheus` package (the registries our machines reach include Debian);
# an existing promtool on PATH, or $PROMTOOL_BIN, is reused without touching the network.
set -euo pipefail

log() { echo "install-promtool: $*" >&2; }

if [ -n "${PROMTOOL_BIN:-}" ] && [ -x "$PROMTOOL_BIN" ]; then
    echo "$PROMTOOL_BIN"
    exit 0
fi
if command -v promtool >/dev/null 2>&1; then
    command -v promtool
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || { log "need root or sudo to apt-get install prometheus"; exit 1; }
    SUDO="sudo"
fi
command -v apt-get >/dev/null 2>&1 || { log "no apt-get: install promtool (Prometheus 2.x) and set PROMTOOL_BIN"; exit 1; }
log "apt-get install prometheus (for promtool)"
$SUDO apt-get update -qq >&2
# No recommends: promtool and the server binary only; nothing is started.
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends prometheus >&2
command -v promtool
