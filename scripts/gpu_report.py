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
    "image-cnn": "not measured with its 40 epochs; 3 epochs: 91.22% in 83 s",
}


def fmt(v, digits=2):
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


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

    backend = next((r.get("report") or {} for r in by.get("adapter", [])), {}).get("backend", "wgpu")
    md = ["# dpsgd on a GPU (scripts/gpu-check)", ""]
    md.append(f"Elapsed {elapsed:.0f} s of a {budget:.0f} s budget.")
    for r in by.get("nvidia-smi", []):
        md.append(f"nvidia-smi: {r['gpu']}")
    for r in by.get("adapter", []):
        rep = r.get("report") or {}
        driver = f", {rep['driver']}" if rep.get("driver") else ""
        md.append(
            f"{backend} device: {rep.get('name', '?')} ({rep.get('device_type', '?')}, "
            f"{rep.get('api', '?')}{driver}); software: {rep.get('software')}; "
            f"smoke product error {fmt((rep.get('smoke_matmul') or {}).get('relative_error'), 9)}"
            + ("" if r.get("ok") else f" — REFUSED (exit {r.get('exit')})")
        )
    md.append("")

    md += [f"## The engine against the per-example loop (`dpsgd bench check --backend {backend}`)", "",
           "| model | method | clipped / batch | norm error | fast-path sum error | fallback error | passed |",
           "|---|---|---|---|---|---|---|"]
    for r in by.get("check", []):
        c = r["result"]
        md.append(
            f"| {c['model']} | {c['dp_method']} | {c['clipped_examples']} / {c['batch_size']} | "
            f"{c['norm_relative_error']:.1e} | {c['fast_path_relative_error']:.1e} "
            f"({c['fast_path_worst_parameter']}) | {c['fallback_relative_error']:.1e} | {c['passed']} |"
        )
    for r in by.get("tests", []):
        if "skipped" in r:
            md.append(f"\nper_example tests: skipped ({r['skipped']})")
        else:
            md.append(f"\nper_example tests (every body on each backend of the binary): {r['summary']} (exit {r['exit']})"
                      + (f"; failed: {', '.join(r['failed'])}" if r["failed"] else ""))
    md.append("")

    mem = {}
    for r in by.get("memory", []):
        if "peak_mib" in r and r.get("peak_mib") is not None and r.get("baseline_mib") is not None:
            mem[(r["model"], r["mode"])] = r["peak_mib"] - r["baseline_mib"]
    md += [f"## DP step vs non-private step (`dpsgd bench step --backend {backend}`)", "",
           "| model | batch | non-private ms | DP ms | DP / non-private | DP examples/s | CPU (flex, 2 cores) non-private / DP ms |",
           "|---|---|---|---|---|---|---|"]
    for r in by.get("bench", []):
        if "result" in r:
            b = r["result"]
            key = (b["model"], b["batch_size"])
            cpu = CPU_STEP.get(key)
            md.append(
                f"| {b['model']} | {b['batch_size']} | {b['non_private_ms']:.2f} | {b['dp_ms']:.2f} | "
                f"**{b['ratio']:.2f}** | {b['dp_examples_per_s']:.0f} | "
                f"{cpu[0] + ' / ' + cpu[1] if cpu else '–'} |"
            )
        else:
            why = r.get("skipped") or f"exit {r.get('exit')}"
            md.append(f"| {r['model']} | {r['batch_size']} | – | – | – | – | ({why}) |")
    if mem:
        md += ["", "Peak device memory of one step alone, above the idle device (nvidia-smi, MiB):", "",
               "| model | non-private | DP | ratio |", "|---|---|---|---|"]
        for model in ["mlp", "cnn", "transformer", "lstm"]:
            np_, dp = mem.get((model, "nonprivate")), mem.get((model, "dp"))
            ratio = f"{dp / np_:.2f}" if np_ and dp is not None and np_ > 0 else "–"
            md.append(f"| {model} | {fmt(np_)} | {fmt(dp)} | {ratio} |")
    torch = [r["result"] for r in by.get("torch", []) if "result" in r]
    if torch:
        md += ["", "PyTorch on the same GPU (`benches/reference/torch_step.py --device cuda`):", "",
               "| model | batch | torch non-private ms | Opacus ghost ms |", "|---|---|---|---|"]
        for t in torch:
            md.append(f"| {t['model']} | {t['batch_size']} | {t['torch_ms']:.2f} | {fmt(t.get('opacus_ghost_ms'))} |")
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
            f"| {r['name']} | `{r['flags']}` | {r['exit']}{' (over its cap)' if r['exit'] == 124 else ''} | "
            f"{fmt(100 * acc if acc is not None else None)}% | {fmt(rep.get('epsilon'), 3)} | "
            f"{fmt(rep.get('feature_seconds'), 1)} | {fmt(rep.get('wall_seconds'), 1)} | "
            f"{fmt(r.get('command_seconds'), 1)} | {CPU_TRAIN.get(r['name'], '')} |"
        )
    md.append("")

    with open(f"{out}/gpu-check.json", "w") as f:
        json.dump(summary, f, indent=1)
    with open(f"{out}/gpu-check.md", "w") as f:
        f.write("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
