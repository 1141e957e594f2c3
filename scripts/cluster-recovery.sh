#!/usr/bin/env bash
# Recovery after a leader SIGKILL on a 3-node loopback cluster, over several runs of the
# two leader-kill tests of tests/nats_cluster.rs: median and maximum of the time from the
# kill to the first request published after it being answered, and of the router's part
# (from the last election the kill made necessary to that answer).
#
#   scripts/cluster-recovery.sh          # 10 runs of each
#   scripts/cluster-recovery.sh 20
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-10}"
NATS_SERVER_BIN="$(scripts/install-nats-server.sh)"
export NATS_SERVER_BIN
# One build, then the same binary every run (an edit during the runs changes nothing).
bin="$(cargo test --test nats_cluster --no-run --message-format=json 2>/dev/null \
    | python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "nats_cluster":
        print(m["executable"])')"
out="$(mktemp)"
for i in $(seq 1 "$runs"); do
    "$bin" the_decide_ --nocapture --test-threads 1 2>&1 \
        | grep -E "^(stream|consumer)-leader: recovery" >>"$out" || true
    echo "run $i of $runs done" >&2
done
python3 - "$out" <<'PY'
import re, statistics, sys
rows = {}
def secs(text):
    m = re.match(r"Some\(([\d.]+)(ms|s|µs)\)", text)
    if not m:
        return None
    v = float(m.group(1))
    return {"s": v, "ms": v / 1e3, "µs": v / 1e6}[m.group(2)]
for line in open(sys.argv[1]):
    kind = line.split(":")[0]
    rec = secs(re.search(r"recovery (\S+)", line).group(1))
    part = secs(re.search(r"router's part (\S+);", line).group(1))
    rows.setdefault(kind, []).append((rec, part))
for kind, values in rows.items():
    rec = [r for r, _ in values if r is not None]
    part = [p for _, p in values if p is not None]
    print(f"{kind}: {len(values)} runs; recovery median {statistics.median(rec):.2f} s, "
          f"max {max(rec):.2f} s; the router's part median {statistics.median(part)*1e3:.0f} ms, "
          f"max {max(part)*1e3:.0f} ms")
PY
