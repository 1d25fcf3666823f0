"""Retrieval metrics of the bench's mixture (n × 384, 100 classes) against
itself, once, printing the wall time and the process's CPU use in each second
of the call: stretches near 1.0 on 2 threads are serial phases or threads
waiting on each other. reprkit only (no peer): for A/B runs of two builds,
point PYTHONPATH at each build's python/ folder.

    PYTHONPATH=python python benches/trace_retrieval.py [N] [--n-jobs J]
"""

import argparse
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_metrics import mixture  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("n", nargs="?", type=int, default=100_000)
    ap.add_argument("--n-jobs", type=int, default=2)
    args = ap.parse_args()
    from reprkit.metrics import retrieval_metrics

    x, y = mixture(args.n, 384, 100, 2.0)
    per_second, stop = [], threading.Event()

    def monitor():
        tick = os.sysconf("SC_CLK_TCK")
        last = None
        while not stop.is_set():
            with open("/proc/self/stat") as f:
                fields = f.read().split()
            used = (int(fields[13]) + int(fields[14])) / tick
            if last is not None:
                per_second.append(used - last)
            last = used
            stop.wait(1.0)

    threading.Thread(target=monitor, daemon=True).start()
    t = time.perf_counter()
    res = retrieval_metrics(x, y, n_jobs=args.n_jobs)
    wall = time.perf_counter() - t
    stop.set()
    print(f"n={args.n} n_jobs={args.n_jobs} wall {wall:.2f} s  MAP@R {res['mean_average_precision_at_r']:.6f}")
    print("CPU seconds used in each second:", " ".join(f"{c:.1f}" for c in per_second))


if __name__ == "__main__":
    main()
