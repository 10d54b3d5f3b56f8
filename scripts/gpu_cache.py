#!/usr/bin/env python3
"""The part of a CubeCL environment cache that outlives the binary, to keep in the repository.

    python3 scripts/gpu_cache.py autotune-only IN.db OUT.db

A CubeCL environment (`target/environment/<name>.db`, SQLite) holds compiled kernels keyed by
the binary's build id, which any rebuild invalidates, next to autotune results keyed by problem
shape, dtype and a checksum of the candidate list, and the device's measured throughputs, which
stay valid until burn or cubecl change. This keeps the latter two (and the schema) and drops the
rest: 100 MB of kernels become a few hundred KB of decisions, the costly part of a cold start
(scripts/gpu-check.sh measured each tuned matmul shape at 5 to 50 s on an H200). Standard library
only."""
import shutil
import sqlite3
import sys

KEEP = ("autotune/", "throughput/")


def autotune_only(src, dst):
    shutil.copyfile(src, dst)
    db = sqlite3.connect(dst)
    namespaces = [n for (n,) in db.execute("SELECT DISTINCT namespace FROM entries")]
    for n in namespaces:
        if not n.startswith(KEEP):
            db.execute("DELETE FROM entries WHERE namespace = ?", (n,))
    db.commit()
    db.execute("VACUUM")
    kept = db.execute("SELECT count(*) FROM entries").fetchone()[0]
    db.close()
    print(f"{dst}: {kept} autotune and throughput entries kept of {len(namespaces)} namespaces")


if __name__ == "__main__":
    if len(sys.argv) != 4 or sys.argv[1] != "autotune-only":
        sys.exit(__doc__)
    autotune_only(sys.argv[2], sys.argv[3])
