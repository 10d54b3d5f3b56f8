"""One row of scripts/heldout-videos.sh's table from an eval.json: whole frames (mean over samples,
best of N, repeating the last context frame), then the moving pixels the same way."""
import json
import sys

name, path = sys.argv[1], sys.argv[2]
r = json.load(open(path))
best = r.get("best_of_n") or {}
m = r.get("moving") or {}


def db(v):
    return "  -  " if v is None else "%5.2f" % v


print(
    "%-36s whole %5.2f | best %5.2f | last %5.2f dB   moving (%4.1f %%) %s | best %s | last %s dB"
    % (
        name,
        r["mean_psnr_db"],
        best.get("mean_psnr_db", float("nan")),
        r["last_frame_psnr_db"],
        100 * m.get("fraction", 0.0),
        db(m.get("psnr_db")),
        db(m.get("best_of_n_psnr_db")),
        db(m.get("last_frame_psnr_db")),
    )
)
