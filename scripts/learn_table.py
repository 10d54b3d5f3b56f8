#!/usr/bin/env python3
"""Markdown rows of `sid2 bench learn` results (learn.json), one per run folder and sampler
setting, for EXPERIMENTS.md. Standard library only.

    python3 scripts/learn_table.py runs/ablate-base runs/ablate-vmse ...
"""
import json
import pathlib
import sys

print("| run | samples | held-out val loss / v-MSE at the end | sampler | PSNR (dB) | SSIM | last frame repeated: PSNR / SSIM | training samples/s |")
print("|---|---|---|---|---|---|---|---|")
for folder in sys.argv[1:]:
    path = pathlib.Path(folder) / "learn.json"
    if not path.exists():
        print(f"| {folder} | (no learn.json) | | | | | | |")
        continue
    r = json.loads(path.read_text())
    val = r["val_curve"][-1] if r["val_curve"] else (None, float("nan"), float("nan"))
    for p in r["predictions"]:
        e = p["eval"]
        print(
            f"| {pathlib.Path(folder).name} | {r['samples']} | {val[1]:.3f} / {val[2]:.4f} | {p.get('sampler', 'ancestral')} {p['steps']} | "
            f"{e['mean_psnr_db']:.2f} | {e['mean_ssim']:.3f} | {e['last_frame_psnr_db']:.2f} / {e['last_frame_ssim']:.3f} | {r['samples_per_s']:.2f} |"
        )
