"""Small helpers shared by the benchmark scripts."""

from __future__ import annotations

import os
import platform
import time
from typing import Callable


def best_of(fn: Callable[[], object], repeat: int = 5, warmup: int = 1) -> float:
    """Best wall time of `repeat` runs after `warmup` runs (seconds)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{cpu}, {len(os.sched_getaffinity(0))} cores, load {os.getloadavg()[0]:.1f}"


def _status_bytes(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(field)


class PeakMemory:
    """Peak extra resident memory of the code run between ``start()`` and ``stop()``, in bytes.

    ``start()`` trims malloc's free lists, resets the RSS high-water mark (Linux: writing 5 to
    /proc/self/clear_refs resets VmHWM to the current RSS) and records VmRSS; ``stop()`` returns
    VmHWM − that base. ru_maxrss cannot be used instead: a subprocess inherits its parent's maximum
    (Linux keeps it across fork and exec), so its growth under-reports a child of a large parent.
    Where /proc is missing (not Linux) it falls back to ru_maxrss growth and says so in ``exact``.
    """

    def __init__(self) -> None:
        self.base = 0
        self.exact = True

    def start(self) -> "PeakMemory":
        import ctypes
        import gc
        import resource

        gc.collect()
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):
            pass
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            self.base = _status_bytes("VmRSS")
        except OSError:
            self.exact = False
            self.base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        return self

    def stop(self) -> int:
        import resource

        if self.exact:
            return _status_bytes("VmHWM") - self.base
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - self.base


OMP_HELP = ("'best' (default): the peers at their library default, reprkit the faster of the default and "
            "OMP_WAIT_POLICY=PASSIVE; otherwise the OMP_WAIT_POLICY of every subprocess ('' = library default)")


def policy_env(policy: str) -> dict:
    """os.environ with OMP_WAIT_POLICY set to ``policy`` ('' = unset: the library default)."""
    env = dict(os.environ)
    env.pop("OMP_WAIT_POLICY", None)
    if policy:
        env["OMP_WAIT_POLICY"] = policy
    return env


def run_case(cmd: list, reprkit: bool, mode: str = "best", timeout: float = 900) -> dict:
    """Runs one benchmark case in fresh subprocesses and parses the JSON of its last stdout line.

    Each side at its own best setting: with ``mode="best"`` a peer runs at its library default
    (OMP_WAIT_POLICY=PASSIVE slows torch-based peers) and reprkit runs under both the default and
    PASSIVE, keeping the faster (recorded as ``"omp"``); any other ``mode`` is the OMP_WAIT_POLICY of
    every side. A failure or timeout gives ``{"skip": reason}``.
    """
    import json
    import subprocess

    policies = (["", "PASSIVE"] if reprkit else [""]) if mode == "best" else [mode]
    res: dict = {}
    for policy in policies:
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=policy_env(policy))
        except subprocess.TimeoutExpired:
            res = res if "time" in res else {"skip": f"> {timeout:.0f} s"}
            continue
        if p.returncode == 0:
            got = json.loads(p.stdout.strip().splitlines()[-1])
            got["omp"] = policy or "default"
            if "time" not in res or got.get("time", float("inf")) < res["time"]:
                res = got
        elif "time" not in res:
            tail = (p.stderr.strip().splitlines() or [f"exit status {p.returncode}"])[-1]
            res = {"skip": "failed: " + tail[:80]}
    return res
