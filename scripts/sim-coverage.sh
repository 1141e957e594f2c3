#!/usr/bin/env bash
# Line coverage of the router's code (core, host, intake, policy, contracts) by a simulator
# sweep: which of the code production runs the seeds actually execute (docs/SIMULATION.md,
# "What the seeds reach"). Builds the simulator with `-C instrument-coverage` into its own
# target directory, runs the sweep, and prints llvm-cov's per-file report and a summary
# per area. Needs llvm-profdata and llvm-cov no older than 19 (Debian: `apt-get install
# llvm-19`; LLVM_BIN overrides where they are).
#
#   scripts/sim-coverage.sh            # seeds 1..300
#   scripts/sim-coverage.sh 1..3000
set -euo pipefail
cd "$(dirname "$0")/.."
SEEDS="${1:-1..301}"
LLVM_BIN="${LLVM_BIN:-/usr/lib/llvm-19/bin}"
TARGET="${COVERAGE_TARGET_DIR:-target/coverage}"
OUT="$(mktemp -d)"
RUSTFLAGS="-C instrument-coverage" CARGO_TARGET_DIR="$TARGET" \
    cargo build --quiet --release -p beamline-sim
LLVM_PROFILE_FILE="$OUT/sweep-%p-%m.profraw" "$TARGET/release/beamline-sim" sweep --seeds "$SEEDS" --jobs 2 | tail -1
"$LLVM_BIN/llvm-profdata" merge -sparse "$OUT"/*.profraw -o "$OUT/sweep.profdata"
"$LLVM_BIN/llvm-cov" report "$TARGET/release/beamline-sim" -instr-profile="$OUT/sweep.profdata" \
    --ignore-filename-regex='(/rustc/|\.cargo/registry|/sim/)' | tee "$OUT/report.txt"
python3 - "$OUT/report.txt" <<'PY'
import collections, sys
areas = collections.defaultdict(lambda: [0, 0])
for line in open(sys.argv[1]):
    p = line.split()
    if len(p) < 10 or not p[1].isdigit():
        continue
    area = p[0].split("/")[0]
    areas[area][0] += int(p[7])
    areas[area][1] += int(p[8])
for area, (lines, missed) in sorted(areas.items()):
    print(f"{area:10} {lines:6} lines  {100 * (lines - missed) / lines:5.1f}% executed")
PY
rm -rf "$OUT"
