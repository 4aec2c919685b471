#!/usr/bin/env bash
# Speed of two pipe binaries side by side (BENCHMARKS_BUILD.md): benches/speed.yaml run ROUNDS
# times with each, alternating A and B so that a change in the machine's load hits both, each
# run into an empty cache with --jobs 1. Prints every step's median wall time and the ratio B/A.
#
#   scripts/bench-build.sh BIN_A BIN_B [ROUNDS] [NSMC_MIRROR]
#   scripts/bench-build.sh /tmp/before/debug/pipe target/debug/pipe 3 ../shared/nsmc
set -euo pipefail
a="$1" b="$2" rounds="${3:-3}" mirror="${4:-../shared/nsmc}"
pipeline="$(dirname "$0")/../benches/speed.yaml"
work="$(mktemp -d /tmp/bench-build.XXXXXX)"
trap 'rm -rf "$work"' EXIT
for round in $(seq 1 "$rounds"); do
    for side in a b; do
        bin="$a"; [[ "$side" = b ]] && bin="$b"
        rm -rf "$work/cache"
        "$bin" --cache-dir "$work/cache" run "$pipeline" --mirror "$mirror" --jobs 1 --json \
            >"$work/$side.$round.json" 2>"$work/$side.$round.log" || {
            echo "error: $bin failed, log: $work/$side.$round.log" >&2; tail -5 "$work/$side.$round.log" >&2; trap - EXIT; exit 1; }
        echo "round $round $side done" >&2
    done
done
python3 - "$work" "$rounds" <<'PY'
import json, statistics, sys
work, rounds = sys.argv[1], int(sys.argv[2])
def times(side):
    out = {}
    for r in range(1, rounds + 1):
        for s in json.load(open(f"{work}/{side}.{r}.json"))["steps"]:
            out.setdefault(s["name"], []).append(s["seconds"] or 0.0)
    return out
a, b = times("a"), times("b")
print(f"{'step':<14} {'A median s':>10} {'B median s':>10} {'B/A':>6}   (runs A, B)")
for name in a:
    ma, mb = statistics.median(a[name]), statistics.median(b[name])
    ratio = f"{mb / ma:6.2f}" if ma >= 0.05 else "     -"
    print(f"{name:<14} {ma:>10.2f} {mb:>10.2f} {ratio}   {a[name]} {b[name]}")
ta = statistics.median([sum(v[i] for v in a.values()) for i in range(rounds)])
tb = statistics.median([sum(v[i] for v in b.values()) for i in range(rounds)])
print(f"{'all steps':<14} {ta:>10.2f} {tb:>10.2f} {tb / ta:6.2f}")
PY
