#!/usr/bin/env bash
# Puts Prometheus, promtool and Alertmanager on this machine (Debian's `prometheus` and
# `prometheus-alertmanager` packages; the registries our machines reach include Debian)
# and prints promtool's absolute path on stdout. The tests use promtool to lint the
# router's /metrics and to unit-test the rules, and run a real Prometheus and
# Alertmanager in the alert drill (tests/alert_drill.rs). Nothing is started here.
# Binaries already on PATH are reused without touching the network.
set -euo pipefail

log() { echo "install-prometheus: $*" >&2; }

if command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1 \
    && command -v prometheus-alertmanager >/dev/null 2>&1; then
    command -v promtool
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || { log "need root or sudo to apt-get install prometheus"; exit 1; }
    SUDO="sudo"
fi
command -v apt-get >/dev/null 2>&1 || { log "no apt-get: install promtool (Prometheus 2.x) and set PROMTOOL_BIN"; exit 1; }
log "apt-get install prometheus prometheus-alertmanager"
$SUDO apt-get update -qq >&2
# No recommends: the binaries only. In a container without systemd nothing starts;
# where systemd runs, the packages' services may start on their default ports, which
# the tests do not use (each test picks free ports).
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    prometheus prometheus-alertmanager >&2
command -v promtool
