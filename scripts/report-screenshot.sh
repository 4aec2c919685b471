#!/usr/bin/env bash
# Renders `pipe report --format html` in headless Chromium, takes a screenshot to look at, and
# checks what the browser built: the charts (axis titles, legends), the tables, and no request
# leaving the file. For checking the report by eye; not part of .ci/run.
#
#   scripts/report-screenshot.sh [--cache-dir DIR] [--out DIR] [--height PX] [PIPELINE.yaml]
#
#   --cache-dir DIR   the cache whose runs are reported (default: cache); only read
#   --out DIR         where report.html, dom.html and report.png go (default: target/report-screenshot)
#   --height PX       the window's height, so the screenshot holds the whole page (default 2000)
#   PIPELINE.yaml     passed to `pipe report` (default: the pipeline run last with the cache)
#
# Uses $PIPE, else target/debug/pipe, else `cargo run`. Needs Debian's chromium
# (apt-get install chromium). Example, a sweep of two learning rates in a scratch cache:
#   target/debug/pipe --cache-dir /tmp/sweep run pipelines/nsmc-tiny.yaml --mirror ../shared/nsmc \
#     --sweep finetune.lr=5e-4,1e-3
#   scripts/report-screenshot.sh --cache-dir /tmp/sweep --out /tmp/sweep-report
set -euo pipefail
cd "$(dirname "$0")/.."
cache=cache
out=target/report-screenshot
height=2000
report_args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --cache-dir) cache="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --height) height="$2"; shift 2 ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) report_args+=("$1"); shift ;;
  esac
done
browser="$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)"
if [ -z "$browser" ]; then
  echo "error: no chromium found" >&2
  echo "  help: install it with: apt-get install -y chromium" >&2
  exit 2
fi
if [ -n "${PIPE:-}" ]; then pipe=("$PIPE")
elif [ -x target/debug/pipe ]; then pipe=(target/debug/pipe)
else pipe=(cargo run --quiet --)
fi
mkdir -p "$out"
out="$(cd "$out" && pwd)"
"${pipe[@]}" --cache-dir "$cache" report "${report_args[@]}" --format html --output "$out/report.html"
flags=(--headless --no-sandbox --disable-gpu --no-first-run --disable-background-networking
       --hide-scrollbars --user-data-dir="$out/profile")
"$browser" "${flags[@]}" --dump-dom "file://$out/report.html" > "$out/dom.html" 2> "$out/chromium.log"
"$browser" "${flags[@]}" --window-size="1200,$height" --screenshot="$out/report.png" \
  "file://$out/report.html" >> "$out/chromium.log" 2>&1
fail() { echo "error: $1 (see $out/dom.html)" >&2; exit 1; }
grep -q "Accuracy per epoch" "$out/dom.html" || fail "the rendered page is not the report"
if grep -q "No per-epoch accuracy to chart" "$out/dom.html"; then
  echo "note: the run has no per-epoch metrics (unfinished or failed): no charts to check" >&2
else
  grep -q 'class="chart"' "$out/dom.html" || fail "the rendered page has no chart"
  grep -q 'class="axis-title"' "$out/dom.html" || fail "the charts have no axis titles"
  grep -q 'class="legend-entry"' "$out/dom.html" || fail "the charts have no legend"
  grep -q "<table" "$out/dom.html" || fail "the rendered page has no table"
fi
if grep -Eq '(src|href)="?(https?:)?//' "$out/report.html"; then fail "the report loads something from the network"; fi
[ -s "$out/report.png" ] || fail "chromium wrote no screenshot"
charts=$(grep -o 'class="chart"' "$out/dom.html" | wc -l)
lines=$(grep -o 'class="series"' "$out/dom.html" | wc -l)
echo "ok: rendered in $("$browser" --version 2>/dev/null); $charts chart(s), $lines line(s); screenshot $out/report.png"
