#!/usr/bin/env bash
# Checks that two `dpsgd` binaries give the same JSON on seeded runs of
# train, audit and compare, and the same `--help` for every command (issue
# 27: a redesign leaves behaviour unchanged).
# Keys ending in `seconds` (timings) are removed before comparing (and CSV
# columns so named); every other value, and the SVG figures and Markdown
# tables, must be identical.
#
#   scripts/check-same-output.sh OLD_BINARY NEW_BINARY
#
# e.g. scripts/check-same-output.sh /tmp/dpsgd-before "$CARGO_TARGET_DIR/debug/dpsgd"
# Exit 0 when every JSON is the same, 1 (with a diff) otherwise.
set -euo pipefail
if [ $# -ne 2 ]; then
    echo "usage: $0 OLD_BINARY NEW_BINARY" >&2
    exit 2
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# Both called `dpsgd` (clap prints the name it was called by).
mkdir -p "$work/bin/old" "$work/bin/new"
ln -s "$(realpath "$1")" "$work/bin/old/dpsgd"
ln -s "$(realpath "$2")" "$work/bin/new/dpsgd"
old=$work/bin/old/dpsgd
new=$work/bin/new/dpsgd

run_all() { # BINARY DIR
    local bin=$1 dir=$2
    mkdir -p "$dir"
    (
        cd "$dir"
        "$bin" train --seed 1 --epochs 2 --quiet --report train.json >/dev/null
        "$bin" audit --seed 1 --epochs 2 --attacks loss --quiet --out audit >/dev/null
        "$bin" compare --seed 1 --epochs 1 --defences none,dp:eps=8 --attacks loss \
            --quiet --out compare >/dev/null
        "$bin" sweep --seed 1 --epochs 1 --epsilons 1,8 --quiet --out sweep >/dev/null
        "$bin" epsilon --sample-rate 0.01 --noise-multiplier 1.1 --steps 1000 --delta 1e-5 --json >epsilon.json
    )
}

# The file with its timings masked: JSON without the keys ending in
# `seconds` (pretty-printed, sorted), CSV without the columns so named,
# anything else as it is.
mask() {
    python3 - "$1" <<'PY'
import csv, json, sys
path = sys.argv[1]
def strip(v):
    if isinstance(v, dict):
        return {k: strip(x) for k, x in v.items() if not k.endswith("seconds")}
    if isinstance(v, list):
        return [strip(x) for x in v]
    return v
if path.endswith(".json"):
    print(json.dumps(strip(json.load(open(path))), indent=1, sort_keys=True))
elif path.endswith(".csv"):
    rows = list(csv.reader(open(path)))
    keep = [i for i, h in enumerate(rows[0]) if not h.endswith("seconds")] if rows else []
    for r in rows:
        print(",".join(r[i] for i in keep if i < len(r)))
else:
    sys.stdout.write(open(path, encoding="utf-8", errors="replace").read())
PY
}

run_all "$old" "$work/old"
run_all "$new" "$work/new"

status=0
count=0
for cmd in "" epsilon calibrate train sweep audit compare bench "bench step" report help; do
    # shellcheck disable=SC2086 # an empty $cmd is the top-level help
    if diff <("$old" $cmd --help 2>&1) <("$new" $cmd --help 2>&1) >"$work/diff"; then
        echo "same: dpsgd $cmd --help"
    else
        echo "DIFFERENT: dpsgd $cmd --help"
        head -40 "$work/diff"
        status=1
    fi
done
while IFS= read -r file; do
    rel=${file#"$work/old/"}
    count=$((count + 1))
    if [ ! -f "$work/new/$rel" ]; then
        echo "DIFFERENT: $rel missing from the new binary's output"
        status=1
        continue
    fi
    if ! diff <(mask "$file") <(mask "$work/new/$rel") >"$work/diff"; then
        echo "DIFFERENT: $rel"
        head -40 "$work/diff"
        status=1
    else
        echo "same: $rel"
    fi
done < <(find "$work/old" \( -name '*.json' -o -name '*.csv' -o -name '*.md' -o -name '*.svg' \) | sort)
[ "$count" -gt 0 ] || { echo "no JSON written" >&2; exit 1; }
exit $status
