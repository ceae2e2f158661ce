#!/usr/bin/env python3
"""Summarises scripts/gpu-check's results (one JSON object per line) as
gpu-check.json and gpu-check.md, with the CPU figures docs/benchmarks.md
gives for the same commands beside the GPU's.

Usage: gpu_report.py LINES.jsonl OUT_DIR ELAPSED_SECONDS BUDGET_SECONDS
"""
import json
import sys

# docs/benchmarks.md, "Second pass" (flex, 2 cores, mimalloc): DP and
# non-private step in ms, as measured ranges.
CPU_STEP = {
    ("mlp", 256): ("5.7–5.8", "8.8–9.4"),
    ("mlp", 1024): ("21.0–21.5", "31.9–34.9"),
    ("mlp", 4096): ("93.6–95.4", "125.2–137.6"),
    ("cnn", 256): ("59.1–59.3", "49.1–53.0"),
    ("cnn", 1024): ("263.7–284.1", "236.2–258.6"),
}
# docs/benchmarks.md, "MNIST with the CLI's defaults" and "Augmentation
# multiplicity": the same command on the project's 2-core machine.
CPU_TRAIN = {
    "default": "98.66% (seed 1; mean of 3: 98.71%), training loop 188.6 s, "
    "ScatterNet features 44.6 s, whole command 236 s",
    "image-cnn": "3 epochs (`--model cnn --epochs 3`, seed 1): 91.22% in 83 s",
}


def fmt(v, digits=2):
    """A number with `digits` decimals; – for None (serde writes NaN as null)."""
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def sci(v):
    """A small error in scientific notation; – for None."""
    return "–" if v is None else f"{v:.1e}"


def main():
    path, out, elapsed, budget = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
    results = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                results.append(json.loads(line))
            except json.JSONDecodeError as e:
                results.append({"phase": "unparsed", "line": line, "error": str(e)})
    by = {}
    for r in results:
        by.setdefault(r.get("phase"), []).append(r)
    summary = {"elapsed_seconds": elapsed, "budget_seconds": budget, "results": results}
    # The raw results first: whatever the tables below trip on, they are kept.
    with open(f"{out}/gpu-check.json", "w") as f:
        json.dump(summary, f, indent=1)

    backend = next((r.get("report") or {} for r in by.get("adapter", [])), {}).get("backend", "wgpu")
    md = ["# dpsgd on a GPU (scripts/gpu-check)", ""]
    md.append(f"Elapsed {elapsed:.0f} s of a {budget:.0f} s budget.")
    if by.get("unparsed"):
        md.append(f"**{len(by['unparsed'])} result line(s) could not be read**: see gpu-check.json (`unparsed`).")
    for r in by.get("nvidia-smi", []):
        md.append(f"nvidia-smi: {r['gpu']}")
    for r in by.get("adapter", []):
        rep = r.get("report") or {}
        driver = f", {rep['driver']}" if rep.get("driver") else ""
        md.append(
            f"{backend} device: {rep.get('name', '?')} ({rep.get('device_type', '?')}, "
            f"{rep.get('api', '?')}{driver}); software: {rep.get('software')}; "
            f"smoke product error {sci((rep.get('smoke_matmul') or {}).get('relative_error'))}"
            + ("" if r.get("ok") else f" — REFUSED (exit {r.get('exit')})")
        )
    md.append("")

    md += [f"## The engine against the per-example loop (`dpsgd bench check --backend {backend}`)", "",
           "| model | method | clipped / batch | norm error | fast-path sum error | fallback error | passed |",
           "|---|---|---|---|---|---|---|"]
    for r in by.get("check", []):
        c = r["result"]
        md.append(
            f"| {c.get('model')} | {c.get('dp_method')} | {c.get('clipped_examples')} / {c.get('batch_size')} | "
            f"{sci(c.get('norm_relative_error'))} | {sci(c.get('fast_path_relative_error'))} "
            f"({c.get('fast_path_worst_parameter')}) | {sci(c.get('fallback_relative_error'))} | {c.get('passed')} |"
        )
    for r in by.get("check-exit", []):
        if r.get("skipped") or r.get("exit"):
            md.append(f"\nbench check at batch {r.get('batch_size')}: {r.get('skipped') or 'exit ' + str(r.get('exit'))}")
    for r in by.get("tests", []):
        if "skipped" in r:
            md.append(f"\nper_example tests: skipped ({r['skipped']})")
        else:
            md.append(f"\nper_example tests (every body on each backend of the binary): {r['summary']} (exit {r['exit']})"
                      + (f"; failed: {', '.join(r['failed'])}" if r["failed"] else ""))
    md.append("")

    mem = {}
    for r in by.get("memory", []):
        if r.get("peak_mib") is not None and r.get("baseline_mib") is not None and r.get("samples", 1) > 0:
            mem[(r["model"], r["mode"])] = r["peak_mib"] - r["baseline_mib"]
    md += [f"## DP step vs non-private step (`dpsgd bench step --backend {backend}`)", "",
           "| model | batch | non-private ms | DP ms | DP / non-private | DP examples/s | DP method | CPU (flex, 2 cores) non-private / DP ms |",
           "|---|---|---|---|---|---|---|---|"]
    for r in by.get("bench", []):
        if "result" in r:
            b = r["result"]
            cpu = CPU_STEP.get((b.get("model"), b.get("batch_size")))
            md.append(
                f"| {b.get('model')} | {b.get('batch_size')} | {fmt(b.get('non_private_ms'))} | {fmt(b.get('dp_ms'))} | "
                f"**{fmt(b.get('ratio'))}** | {fmt(b.get('dp_examples_per_s'), 0)} | {b.get('dp_method')} | "
                f"{cpu[0] + ' / ' + cpu[1] if cpu else '–'} |"
            )
        else:
            why = r.get("skipped") or f"exit {r.get('exit')}"
            md.append(f"| {r.get('model')} | {r.get('batch_size')} | – | – | – | – | – | ({why}) |")
    if mem:
        md += ["", "Peak device memory of a process taking 4 steps of one kind, above the idle device "
               "(nvidia-smi every 20 ms, MiB). Each figure holds the process's Vulkan context, both "
               "models, the batch and cubecl's pools, so their ratio is not the CPU tables' "
               "peak-memory ratio; the difference is what the DP step adds:", "",
               "| model | non-private | DP | DP − non-private |", "|---|---|---|---|"]
        for model in ["mlp", "cnn", "transformer", "lstm"]:
            np_, dp = mem.get((model, "nonprivate")), mem.get((model, "dp"))
            diff = dp - np_ if np_ is not None and dp is not None else None
            md.append(f"| {model} | {fmt(np_)} | {fmt(dp)} | {fmt(diff)} |")
    elif by.get("memory"):
        why = next((r.get("skipped") for r in by["memory"] if r.get("skipped")), None)
        md.append("\nPeak device memory: " + (f"skipped ({why})" if why else "no samples were read (see gpu-check.json)"))
    torch = [r["result"] for r in by.get("torch", []) if "result" in r]
    if torch:
        md += ["", "PyTorch on the same GPU (`benches/reference/torch_step.py --device cuda`):", "",
               "| model | batch | torch non-private ms | Opacus ghost ms | TF32 |", "|---|---|---|---|---|"]
        for t in torch:
            md.append(f"| {t.get('model')} | {t.get('batch_size')} | {fmt(t.get('torch_ms'))} | "
                      f"{fmt(t.get('opacus_ghost_ms'))} | {t.get('tf32', '–')} |")
    md.append("")

    md += [f"## DP training on MNIST (`dpsgd train --dataset idx:MNIST --backend {backend} --seed 1`)", "",
           "| run | flags | exit | test accuracy | ε | features s | training s | whole command s | CPU, same command (docs/benchmarks.md) |",
           "|---|---|---|---|---|---|---|---|---|"]
    for r in by.get("train", []):
        if "skipped" in r:
            md.append(f"| {r['name']} | – | skipped ({r['skipped']}) | | | | | | {CPU_TRAIN.get(r['name'], '')} |")
            continue
        rep = r.get("report") or {}
        acc = rep.get("test_accuracy")
        md.append(
            f"| {r['name']} | {'`' + r['flags'] + '`' if r.get('flags') else '(recipe defaults)'} | {r.get('exit')}{' (over its cap)' if r.get('exit') == 124 else ''} | "
            f"{fmt(100 * acc if acc is not None else None)}% | {fmt(rep.get('epsilon'), 3)} | "
            f"{fmt(rep.get('feature_seconds'), 1)} | {fmt(rep.get('wall_seconds'), 1)} | "
            f"{fmt(r.get('command_seconds'), 1)} | {CPU_TRAIN.get(r['name'], '')} |"
        )
    md.append("")

    with open(f"{out}/gpu-check.md", "w") as f:
        f.write("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
