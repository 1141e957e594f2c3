#!/usr/bin/env bash
# An interleaved A/B series of `beamline-router bench --quick` (docs/PERFORMANCE.md):
# each round runs every binary once, in the order given, so that the machine's drift
# over the series falls on all of them alike. One line per run:
#   <binary> <router/raw ratio> <router CPU µs/request> <router req/s> <load average before>
# then the medians per binary.
#
#   scripts/bench-series.sh ROUNDS SECS BIN_A BIN_B [BIN_C ...]
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 3 ]; then
    echo "usage: $0 ROUNDS SECS BINARY..." >&2
    exit 2
fi
rounds=$1
secs=$2
shift 2
NATS_SERVER_BIN="${NATS_SERVER_BIN:-$(scripts/install-nats-server.sh)}"
out=$(mktemp)
trap 'rm -f "$out"' EXIT
for _ in $(seq 1 "$rounds"); do
    for bin in "$@"; do
        line=$("$bin" bench --nats-server "$NATS_SERVER_BIN" --quick --secs "$secs" 2>/dev/null | grep BENCH_JSON)
        python3 -c '
import json, sys
j = json.loads(sys.argv[2].split(" ", 1)[1])
r = j["router"]
print(sys.argv[1], round(j["ratio"], 3), round(r["cpu"]["router_us"], 2), round(r["throughput"]), j["load_before"].split()[0])
' "$bin" "$line" | tee -a "$out"
    done
done
python3 - "$out" <<'PY'
import collections, statistics, sys
runs = collections.defaultdict(list)
for line in open(sys.argv[1]):
    b, ratio, us, rps, load = line.split()
    runs[b].append((float(ratio), float(us), float(rps)))
for b, v in runs.items():
    med = lambda i: statistics.median(x[i] for x in v)
    print(f"median {b}: ratio {med(0):.3f}  router {med(1):.2f} us/request  {med(2):.0f} req/s  ({len(v)} runs)")
PY
