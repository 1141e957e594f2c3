#!/usr/bin/env bash
# Runs the real-NATS test set against Debian's nats-server 2.9.10, the oldest server the
# router supports (docs/OPERATIONS.md, "Compatibility"). Installs it with apt first.
#
#   scripts/compat-2.9.sh                 # every tests/nats_*.rs and tests/conformance*.rs
#   scripts/compat-2.9.sh -- --nocapture  # extra arguments go to cargo test
#
# Needs root (or sudo) for apt-get. The Debian binary lands in /usr/sbin or /usr/bin;
# NATS_SERVER_BIN points the tests at it (tests/support::nats_server_bin).
set -euo pipefail
cd "$(dirname "$0")/.."

log() { echo "compat-2.9: $*" >&2; }

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

find_bin() {
    for bin in /usr/sbin/nats-server /usr/bin/nats-server; do
        if [ -x "$bin" ]; then echo "$bin"; return 0; fi
    done
    return 1
}

if ! bin="$(find_bin)"; then
    log "installing Debian's nats-server with apt-get"
    $SUDO apt-get update >&2
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y nats-server >&2
    # The package ships a systemd unit; on a machine with systemd it may start a server
    # on 4222. The tests use free ports and their own stores, so it does not matter.
    bin="$(find_bin)" || { log "apt installed nats-server, but no binary in /usr/sbin or /usr/bin"; exit 1; }
fi
version="$("$bin" --version)"
log "using $bin ($version)"
case "$version" in
    *v2.9.*) ;;
    *) log "warning: expected a 2.9.x server, got $version" ;;
esac
export NATS_SERVER_BIN="$bin"

# The real-NATS test set: every integration test that starts a nats-server.
tests=()
for file in tests/nats_*.rs tests/conformance*.rs; do
    [ -f "$file" ] || continue
    name="$(basename "$file" .rs)"
    tests+=(--test "$name")
done
[ "${#tests[@]}" -gt 0 ] || { log "no real-NATS tests found"; exit 1; }
log "running: ${tests[*]}"

# --no-fail-fast: a failing test binary must not hide the results of the others.
cargo test --no-fail-fast --features service "${tests[@]}" "$@"
