#!/usr/bin/env bash
# Times the cache operations a team repeats all day — a no-op rerun, `pipe status`, a push of
# the whole cache, a pull into an empty cache, a no-op rerun with the remote — for two pipe
# binaries side by side (A, B alternating, $ROUNDS rounds, default 5), on a copy of one filled cache,
# against a local S3 server (moto). Prints one line per measurement and the medians.
#
#   scripts/bench-cache-ops.sh BEFORE_BINARY AFTER_BINARY CACHE_DIR PIPELINE [--mirror DIR] [--set S.P=V]...
#   scripts/bench-cache-ops.sh /tmp/pipe-before target/debug/pipe /work/nsmc-cache \
#       pipelines/nsmc.yaml --mirror ../shared/nsmc
#
# Needs moto_server (pip install 'moto[server]') on PATH or in $PIPE_PYTHON's venv. The cache is
# copied (never changed); the copies live under $BENCH_DIR (default /tmp/pipe-bench-cache-ops).
set -euo pipefail
[ $# -ge 4 ] || { sed -n '2,12p' "$0"; exit 2; }
A=$(realpath "$1"); B=$(realpath "$2"); SOURCE=$(realpath "$3"); PIPELINE=$(realpath "$4"); shift 4
EXTRA=("$@")
# `--set` overrides (a shortened training, say) apply to status, push and pull as to run.
SETS=()
for ((i = 0; i < ${#EXTRA[@]}; i++)); do
    [ "${EXTRA[$i]}" = --set ] && SETS+=(--set "${EXTRA[$((i + 1))]}")
done
DIR=${BENCH_DIR:-/tmp/pipe-bench-cache-ops}
MOTO=$(command -v moto_server || echo "$(dirname "${PIPE_PYTHON:-/usr/bin/python3}")/moto_server")
rm -rf "$DIR" && mkdir -p "$DIR"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$MOTO" -H 127.0.0.1 -p "$PORT" >"$DIR/moto.log" 2>&1 &
MOTO_PID=$!
trap 'kill $MOTO_PID 2>/dev/null || true' EXIT
for _ in $(seq 50); do curl -s "http://127.0.0.1:$PORT/" >/dev/null && break; sleep 0.2; done
curl -s -X PUT "http://127.0.0.1:$PORT/bench" >/dev/null
export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench AWS_REGION=us-east-1 AWS_ALLOW_HTTP=true
export AWS_ENDPOINT_URL="http://127.0.0.1:$PORT" AWS_METADATA_ENDPOINT=http://127.0.0.1:9
unset PIPE_REMOTE PIPE_REMOTE_MODE
# Only results and run records (no scratch, locks or checkpoints).
copy() {
    rm -rf "$1" && mkdir -p "$1/steps" "$1/runs"
    for d in "$SOURCE"/steps/*; do [ -f "$d/manifest.json" ] && cp -r "$d" "$1/steps/"; done
    cp "$SOURCE"/runs/*.json "$1/runs/"
}
seconds() { local t0 t1; t0=$(date +%s.%N); "$@" >/dev/null 2>&1 || { echo "failed: $*" >&2; exit 1; }; t1=$(date +%s.%N); echo "$t1 - $t0" | bc; }
du -sh "$SOURCE/steps" | sed 's/^/cache: /'
for round in $(seq "${ROUNDS:-5}"); do
    for which in A B; do
        bin=${!which}; c="$DIR/$which-$round"
        copy "$c/cache"
        cd "$(dirname "$PIPELINE")/.."
        echo "$which noop $(seconds "$bin" --cache-dir "$c/cache" run "$PIPELINE" "${EXTRA[@]}")"
        echo "$which status $(seconds "$bin" --cache-dir "$c/cache" status "$PIPELINE" "${SETS[@]}")"
        echo "$which push $(seconds "$bin" --cache-dir "$c/cache" push "$PIPELINE" "${SETS[@]}" --remote "s3://bench/$which-$round")"
        mkdir -p "$c/empty"
        echo "$which pull $(seconds "$bin" --cache-dir "$c/empty" pull "$PIPELINE" "${SETS[@]}" --remote "s3://bench/$which-$round")"
        echo "$which noop-remote $(seconds "$bin" --cache-dir "$c/cache" run "$PIPELINE" "${EXTRA[@]}" --remote "s3://bench/$which-$round")"
        rm -rf "$c"
    done
done | tee "$DIR/times.txt"
python3 - "$DIR/times.txt" <<'EOF'
import statistics, sys
times = {}
for line in open(sys.argv[1]):
    which, op, s = line.split()
    times.setdefault(op, {}).setdefault(which, []).append(float(s))
print(f"{'operation':<12} {'A median s':>10} {'B median s':>10} {'B/A':>6}")
for op, t in times.items():
    a, b = statistics.median(t["A"]), statistics.median(t["B"])
    print(f"{op:<12} {a:10.3f} {b:10.3f} {b / a:6.2f}")
EOF
