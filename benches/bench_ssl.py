"""The self-supervised benchmarks in one command: forward+backward time and peak extra memory of
reprkit's self-supervised losses against plain torch and the peers (lightly, open_clip, PML), float32.

Each family keeps its own script (its cases, peers and table layout differ); this runs them in
sequence, each in its own process, with the arguments given after the family name:

    PYTHONPATH=python python benches/bench_ssl.py                         # every family, default sizes
    PYTHONPATH=python python benches/bench_ssl.py multimodal supcon       # CLIP/SigLIP, SupCon/uniformity
    PYTHONPATH=python python benches/bench_ssl.py redundancy -- --dims 2048

Families: multimodal (CLIP, SigLIP vs open_clip, B = 4096, 16384), supcon (SupCon vs PML,
uniformity vs plain torch), redundancy (Barlow Twins, VICReg vs lightly, N = 2048, d = 2048, 8192),
dino (DINO vs lightly, B = 256, 2 + 6 crops, K = 65536), byol (a BYOL / SimSiam training run with a
linear probe, reprkit against lightly's loss with the same seeds).
"""

from __future__ import annotations

import os
import subprocess
import sys

FAMILIES = {
    "multimodal": "bench_ssl_multimodal.py",
    "supcon": "bench_ssl_supcon.py",
    "redundancy": "bench_ssl_redundancy.py",
    "dino": "bench_ssl_dino.py",
    "byol": "bench_ssl_byol.py",
}


def main(argv: list) -> int:
    extra: list = []
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1:]
    names = argv or list(FAMILIES)
    unknown = [n for n in names if n not in FAMILIES]
    if unknown:
        print(f"unknown families {unknown}; choose from {list(FAMILIES)}", file=sys.stderr)
        return 2
    here = os.path.dirname(os.path.abspath(__file__))
    status = 0
    for n in names:
        print(f"\n## {n} ({FAMILIES[n]})\n", flush=True)
        rc = subprocess.call([sys.executable, os.path.join(here, FAMILIES[n]), *extra])
        status = status or rc
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
