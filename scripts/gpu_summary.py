#!/usr/bin/env python3
"""The summary table of a gpu-check.sh run: every stage with its status, its numbers (MFU against
the bf16 matmul peak measured in the same call) and the peak GPU memory sampled while it ran.
Standard library only."""
import json
import pathlib
import sys

out = pathlib.Path(sys.argv[1])
rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines() if line.strip()]


def output(stage):
    try:
        return json.loads((out / f"{stage}.out").read_text())
    except (OSError, ValueError):
        return None


peak = (output("peak-bf16") or {}).get("tflops")
print(f"# gpu-check: {out}\n")
print("| stage | status | seconds | peak GPU MiB | numbers |")
print("|---|---|---|---|---|")
for r in rows:
    name = r["stage"]
    if r.get("skipped"):
        print(f"| {name} | skipped: {r['skipped']} | | | |")
        continue
    status = "TIMED OUT" if r["timed_out"] else ("ok" if r["rc"] == 0 else f"FAILED (exit {r['rc']})")
    o = output(name)
    numbers = ""
    if isinstance(o, dict) and "tflops" in o:
        numbers = f"{o['tflops']:.3f} TFLOP/s {o['dtype']} at n={o['n']}"
    elif isinstance(o, dict) and "max_relative_error" in o:
        status += "" if o["ok"] else " (WRONG RESULT)"
        numbers = f"max rel. error {o['max_relative_error']:.2e} (tolerance {o['tolerance']:.0e}), {o['seconds']:.3f} s, shape {o['shape']}"
    elif isinstance(o, dict) and "achieved_tflops" in o:
        mfu = f", MFU {100 * o['achieved_tflops'] / peak:.1f} % of the measured bf16 peak" if peak else ""
        numbers = f"{o['samples_per_s']:.2f} samples/s, warm-up {o['warmup_s']:.1f} s, {o['achieved_tflops']:.3f} TFLOP/s{mfu}, peak RSS {o['peak_rss_mib']:.0f} MiB"
    elif isinstance(o, dict) and "shapes_tuned" in o:
        numbers = f"{o['kernels_compiled']} kernels compiled ({o['distinct_kernels']} distinct), {o['shapes_tuned']} shapes tuned {o['tuned_by_kind']}, warm-up {o['warmup_s']} s, step {o['step_s']} s"
    elif isinstance(o, dict) and "samples_per_s" in o:
        numbers = f"{o['samples_per_s']:.2f} samples/s (torch {o['torch']}, {o['device']}, compile {o['compile']}), peak reserved {o.get('peak_reserved_mib')} MiB"
    elif name == "real-train":
        log = out / "run" / "metrics.jsonl"
        losses = [json.loads(l)["loss"] for l in log.read_text().splitlines() if '"kind":"train"' in l] if log.exists() else []
        if losses:
            numbers = f"loss {losses[0]:.4f} -> {losses[-1]:.4f} over {len(losses)} logs" + (" (fell)" if losses[-1] < losses[0] else " (DID NOT FALL)")
    elif name == "real-sample":
        pred = out / "samples" / "predictions.bin"
        numbers = f"{pred} ({pred.stat().st_size} bytes)" if pred.exists() else "no predictions.bin"
    gpu = r.get("peak_gpu_mib")
    print(f"| {name} | {status} | {r['seconds']} | {'' if gpu is None else gpu} | {numbers} |")
