#!/usr/bin/env bash
# Opens an HTML privacy report in headless Chromium and fails on:
#   * a script on the page (the report promises none) or a page/console error;
#   * a layout error, measured in the browser on a copy of the page with a
#     checking script added (the page itself is untouched):
#       - the page is wider than the window (at 1100 px, and at 700 px, about
#         an A4 page's printable width), i.e. something overflows sideways;
#       - a table cell or heading whose text overflows its box;
#       - a chart (SVG) or image that renders empty or fails to load;
#       - a link to an anchor that is not on the page;
#       - two charts drawn over each other, two labels of a chart drawn
#         over each other, or a label running past its chart;
#   * a print to PDF that fails or is empty.
# Then it takes a full-page screenshot (the window is as tall as the page).
#
# With --hostile (a page built from reports whose strings are injections,
# see crates/dpsgd-cli/tests/html_hostile.rs), it checks instead that the
# page runs nothing and holds only its own markup, in the browser: a copy
# of the page with a probe first in its head (alert, confirm, prompt and
# print recorded, not shown) fails on any call of them, any script but the
# probe, any element the page does not write (iframe, object, form, ...),
# any event-handler attribute, any javascript: URL, any image but the
# inversion grid's data: PNG. Layout is not checked (an injection is text
# and may be long).
#
# Skips (exit 0, saying so) on a machine without Chromium.
#
#   scripts/check-report-in-browser.sh [--hostile] report.html [screenshot.png]
set -euo pipefail
hostile=false
if [ "${1:-}" = --hostile ]; then
    hostile=true
    shift
fi
page=${1:?usage: check-report-in-browser.sh [--hostile] PAGE.html [SCREENSHOT.png]}
shot=${2:-${page%.html}.png}
test -s "$page" || { echo "browser check failed: $page is missing or empty"; exit 1; }
browser=$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)
if [ -z "$browser" ]; then
    echo "browser check skipped: no headless Chromium here (install the OS package chromium)"
    exit 0
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# Flags for a closed network: no background connections, a fresh profile.
run_browser() {
    "$browser" --headless=new --no-sandbox --disable-gpu --disable-quic \
        --no-first-run --disable-background-networking --disable-component-update \
        --disable-sync --hide-scrollbars --user-data-dir="$work/profile" \
        --enable-logging=stderr --v=0 "$@"
}
errors_in() {
    grep -E "Uncaught|CONSOLE\(.*\).*[Ee]rror|Failed to load|net::ERR_" "$1" || true
}

if grep -qi "<script" "$page"; then
    echo "browser check failed: $page contains a script (the report promises none)"
    exit 1
fi

# The checking script, added to a copy of the page beside it (so relative
# links resolve the same way).
probe="$(dirname "$page")/.layout-check-$$.html"
trap 'rm -rf "$work" "$probe"' EXIT

if $hostile; then
    python3 - "$page" "$probe" <<'PY'
import sys
page, probe = sys.argv[1], sys.argv[2]
html = open(page, encoding="utf-8").read()
# First in the head, before anything the reports put on the page.
hook = r"""<script data-dpsgd-probe>
window.__dpsgdRan = [];
for (const f of ['alert', 'confirm', 'prompt', 'print'])
  window[f] = (...args) => { window.__dpsgdRan.push(`${f}(${args.join(', ')})`); };
window.addEventListener('load', () => setTimeout(() => {
  const problems = [];
  const own = new Set(['html', 'head', 'meta', 'title', 'style', 'body', 'h1', 'h2', 'h3', 'p',
    'b', 'sup', 'code', 'div', 'a', 'table', 'tbody', 'tr', 'th', 'td', 'ul', 'li', 'img', 'svg',
    'text', 'line', 'polyline', 'circle', 'rect', 'path', 'script', 'pre']);
  for (const el of document.querySelectorAll('*')) {
    const tag = el.tagName.toLowerCase();
    if (!own.has(tag)) problems.push(`a <${tag}> element`);
    if (tag === 'script' && !el.hasAttribute('data-dpsgd-probe'))
      problems.push(`a script: ${el.outerHTML.slice(0, 80)}`);
    if (tag === 'img' && !(el.classList.contains('grid') && el.getAttribute('src').startsWith('data:image/png;base64,')))
      problems.push(`an image that is not the grid: ${el.outerHTML.slice(0, 80)}`);
    for (const a of el.attributes) {
      if (a.name.toLowerCase().startsWith('on'))
        problems.push(`an event handler ${a.name} on <${tag}>`);
      if (/^\s*javascript:/i.test(a.value))
        problems.push(`a javascript: URL in ${a.name} of <${tag}>`);
    }
  }
  if (document.querySelectorAll('title, style').length !== 2 || document.querySelectorAll('head > title, head > style').length !== 2)
    problems.push('the title or the style sheet was broken out of');
  for (const call of window.__dpsgdRan) problems.push(`the page ran ${call}`);
  const out = document.createElement('pre');
  out.id = 'dpsgd-hostile-check';
  out.textContent = JSON.stringify({ problems });
  document.body.appendChild(out);
}, 100));
</script>"""
at = html.find("<head>")
if at < 0:
    sys.exit("the page has no <head>")
at += len("<head>")
open(probe, "w", encoding="utf-8").write(html[:at] + hook + html[at:])
PY
    run_browser --window-size=1100,900 --virtual-time-budget=5000 \
        --dump-dom "file://$(realpath "$probe")" >"$work/dom.html" 2>"$work/hostile.log" || {
        cat "$work/hostile.log"
        echo "browser check failed: Chromium could not open $page"
        exit 1
    }
    result=$(python3 - "$work/dom.html" <<'PY'
import html, json, re, sys
dom = open(sys.argv[1], encoding="utf-8").read()
m = re.search(r'<pre id="dpsgd-hostile-check">(.*?)</pre>', dom, re.S)
if not m:
    print("ERROR the check did not run (no result in the rendered page)")
    sys.exit()
for p in json.loads(html.unescape(m.group(1)))["problems"]:
    print("ERROR " + p)
PY
)
    if grep -q "^ERROR" <<<"$result"; then
        grep "^ERROR" <<<"$result" | sed "s/^ERROR/hostile input:/" | sort | uniq -c | head -20
        echo "browser check failed: $page runs or holds markup from its reports"
        exit 1
    fi
    echo "browser check passed: $page (hostile reports) runs nothing and holds only its own markup"
    exit 0
fi
python3 - "$page" "$probe" <<'PY'
import sys
page, probe = sys.argv[1], sys.argv[2]
html = open(page, encoding="utf-8").read()
script = r"""
<script>
window.addEventListener('load', () => {
  const problems = [];
  const doc = document.documentElement;
  if (doc.scrollWidth > window.innerWidth + 1)
    problems.push(`page ${doc.scrollWidth}px wide in a ${window.innerWidth}px window`);
  for (const el of document.querySelectorAll('td, th, h1, h2, h3, p, li')) {
    if (el.scrollWidth > el.clientWidth + 1 && getComputedStyle(el).overflowX !== 'visible')
      problems.push(`text overflows its ${el.tagName}: ${el.textContent.slice(0, 60)}`);
    const r = el.getBoundingClientRect();
    if (r.right > doc.clientWidth + 1)
      problems.push(`${el.tagName} ends at ${Math.round(r.right)}px, past the page: ${el.textContent.slice(0, 60)}`);
  }
  const charts = [...document.querySelectorAll('svg')];
  charts.forEach((svg, i) => {
    const r = svg.getBoundingClientRect();
    if (r.width < 50 || r.height < 50) problems.push(`chart ${i} renders ${r.width}x${r.height}`);
    if (svg.querySelectorAll('path, polyline, line, rect, circle').length === 0)
      problems.push(`chart ${i} draws nothing`);
  });
  charts.forEach((svg, c) => {
    const texts = [...svg.querySelectorAll('text')].map(t => [t, t.getBoundingClientRect()]);
    for (let i = 0; i < texts.length; i++) for (let j = i + 1; j < texts.length; j++) {
      const [a, ra] = texts[i], [b, rb] = texts[j];
      const w = Math.min(ra.right, rb.right) - Math.max(ra.left, rb.left);
      const h = Math.min(ra.bottom, rb.bottom) - Math.max(ra.top, rb.top);
      if (w > 1 && h > 1) problems.push(`chart ${c}: labels "${a.textContent}" and "${b.textContent}" overlap`);
    }
    const box = svg.getBoundingClientRect();
    for (const [t, r] of texts)
      if (r.left < box.left - 1 || r.right > box.right + 1 || r.top < box.top - 1 || r.bottom > box.bottom + 1)
        problems.push(`chart ${c}: label "${t.textContent}" runs past the chart`);
  });
  for (let i = 0; i < charts.length; i++) for (let j = i + 1; j < charts.length; j++) {
    const a = charts[i].getBoundingClientRect(), b = charts[j].getBoundingClientRect();
    const w = Math.min(a.right, b.right) - Math.max(a.left, b.left);
    const h = Math.min(a.bottom, b.bottom) - Math.max(a.top, b.top);
    if (w > 2 && h > 2) problems.push(`charts ${i} and ${j} overlap`);
  }
  for (const img of document.querySelectorAll('img'))
    if (!img.complete || img.naturalWidth === 0) problems.push(`image does not load: ${img.src.slice(0, 60)}`);
  for (const a of document.querySelectorAll('a[href^="#"]')) {
    const id = decodeURIComponent(a.getAttribute('href').slice(1));
    if (!document.getElementById(id)) problems.push(`link to a missing anchor #${id}`);
  }
  const out = document.createElement('pre');
  out.id = 'dpsgd-layout-check';
  out.textContent = JSON.stringify({ height: doc.scrollHeight, charts: charts.length, problems });
  document.body.appendChild(out);
});
</script>
"""
at = html.rfind("</body>")
html = html[:at] + script + html[at:] if at >= 0 else html + script
open(probe, "w", encoding="utf-8").write(html)
PY

height=0
for width in 1100 700; do
    log="$work/check-$width.log"
    run_browser --window-size="$width,900" --virtual-time-budget=5000 \
        --dump-dom "file://$(realpath "$probe")" >"$work/dom-$width.html" 2>"$log" || {
        cat "$log"
        echo "browser check failed: Chromium could not open $page"
        exit 1
    }
    found=$(errors_in "$log")
    if [ -n "$found" ]; then
        echo "$found"
        echo "browser check failed: errors while rendering $page at $width px"
        exit 1
    fi
    result=$(python3 - "$work/dom-$width.html" <<'PY'
import html, json, re, sys
dom = open(sys.argv[1], encoding="utf-8").read()
m = re.search(r'<pre id="dpsgd-layout-check">(.*?)</pre>', dom, re.S)
if not m:
    print("ERROR the layout check did not run (no result in the rendered page)")
    sys.exit()
r = json.loads(html.unescape(m.group(1)))
for p in r["problems"]:
    print("ERROR " + p)
print(f"HEIGHT {r['height']}")
print(f"CHARTS {r['charts']}")
PY
)
    if grep -q "^ERROR" <<<"$result"; then
        grep "^ERROR" <<<"$result" | sed "s/^ERROR/layout error at $width px:/"
        echo "browser check failed: layout errors in $page"
        exit 1
    fi
    if [ "$width" = 1100 ]; then
        height=$(sed -n 's/^HEIGHT //p' <<<"$result")
        charts=$(sed -n 's/^CHARTS //p' <<<"$result")
    fi
done

# Printing: a PDF that is not empty.
pdf="$work/print.pdf"
run_browser --no-pdf-header-footer --print-to-pdf="$pdf" "file://$(realpath "$page")" \
    >/dev/null 2>"$work/print.log" || { cat "$work/print.log"; echo "browser check failed: printing"; exit 1; }
if [ ! -s "$pdf" ] || [ "$(head -c 4 "$pdf")" != "%PDF" ]; then
    echo "browser check failed: printing $page gave no PDF"
    exit 1
fi
pages=$(grep -ac "/Type /Page\b" "$pdf" || true)

# The screenshot: the window as tall as the page (at most 20 000 px).
height=$((height < 20000 ? height + 20 : 20000))
run_browser --window-size="1100,$height" --screenshot="$shot" "file://$(realpath "$page")" \
    >/dev/null 2>"$work/shot.log" || { cat "$work/shot.log"; echo "browser check failed: screenshot"; exit 1; }
found=$(errors_in "$work/shot.log")
if [ -n "$found" ]; then
    echo "$found"
    echo "browser check failed: errors while rendering $page"
    exit 1
fi
test -s "$shot" || { echo "browser check failed: no screenshot"; exit 1; }
echo "browser check passed: $charts charts, no layout error at 1100 or 700 px, prints (${pages:-?} PDF pages); screenshot $shot (1100x$height)"
