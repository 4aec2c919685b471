#!/usr/bin/env bash
# Renders `pipe report --format html` in headless Chromium and checks what the browser built:
# the tables and one SVG chart with a line per run, and no request leaving the file.
#
#   scripts/check-report-html.sh [CACHE_DIR] [OUT_DIR]
#
# Needs Debian's chromium (apt-get install chromium) and a cache with at least one run
# (e.g. after `cargo run -- run pipelines/nsmc-tiny.yaml --mirror ../shared/nsmc`).
set -euo pipefail
cd "$(dirname "$0")/.."
cache="${1:-cache}"
out="${2:-target/report-check}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
browser="$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)"
if [ -z "$browser" ]; then
  echo "error: no chromium found; install it with: apt-get install chromium" >&2
  exit 2
fi
cargo run --quiet -- --cache-dir "$cache" report --format html --output "$out/report.html"
flags=(--headless --no-sandbox --disable-gpu --no-first-run --disable-background-networking
       --user-data-dir="$out/profile")
"$browser" "${flags[@]}" --dump-dom "file://$out/report.html" > "$out/dom.html" 2> "$out/chromium.log"
"$browser" "${flags[@]}" --window-size=1200,1600 --screenshot="$out/report.png" \
  "file://$out/report.html" >> "$out/chromium.log" 2>&1
fail() { echo "error: $1 (see $out/dom.html)" >&2; exit 1; }
grep -q "<svg" "$out/dom.html" || fail "the rendered page has no SVG chart"
grep -q "<polyline" "$out/dom.html" || fail "the chart has no line"
grep -q "<table" "$out/dom.html" || fail "the rendered page has no table"
grep -q "Accuracy per epoch" "$out/dom.html" || fail "the rendered page is not the report"
if grep -Eq '(src|href)="https?://' "$out/report.html"; then fail "the report loads something from the network"; fi
[ -s "$out/report.png" ] || fail "chromium wrote no screenshot"
echo "ok: rendered in $("$browser" --version); DOM has $(grep -o '<tr' "$out/dom.html" | wc -l) table rows and $(grep -o '<polyline' "$out/dom.html" | wc -l) chart lines; screenshot $out/report.png"
