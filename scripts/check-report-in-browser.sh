#!/usr/bin/env bash
# Opens an HTML privacy report in headless Chromium, takes a full-page
# screenshot and fails on a page or console error, or an empty screenshot.
# Skips (exit 0, saying so) on a machine without Chromium.
#
#   scripts/check-report-in-browser.sh report.html [screenshot.png]
set -euo pipefail
page=${1:?usage: check-report-in-browser.sh PAGE.html [SCREENSHOT.png]}
shot=${2:-${page%.html}.png}
browser=$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)
if [ -z "$browser" ]; then
    echo "browser check skipped: no headless Chromium here (install the OS package chromium)"
    exit 0
fi
log=$(mktemp)
"$browser" --headless=new --disable-gpu --no-sandbox --hide-scrollbars \
    --window-size=1100,4000 --enable-logging=stderr --v=0 \
    --screenshot="$shot" "file://$(realpath "$page")" 2>"$log" || {
    cat "$log"
    exit 1
}
if grep -E "Uncaught|CONSOLE\(.*\).*[Ee]rror|Failed to load" "$log"; then
    echo "browser check failed: errors while rendering $page"
    exit 1
fi
test -s "$shot" || { echo "browser check failed: no screenshot"; exit 1; }
echo "browser check passed: $shot"
