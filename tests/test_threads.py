"""Threads: pool sizing, determinism across thread counts, GIL release, concurrency, fork safety."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest
import torch

import reprkit
from reprkit import _core
from reprkit.errors import InvalidParameterError


@pytest.fixture(autouse=True)
def _restore_threads():
    yield
    reprkit.set_num_threads(None)


def test_pool_runs_exactly_the_requested_threads():
    for n in (1, 2, 3):
        assert _core._pool_threads(n) == n


def test_default_follows_torch_and_set_num_threads_overrides():
    assert reprkit.get_num_threads() == torch.get_num_threads()
    reprkit.set_num_threads(3)
    assert reprkit.get_num_threads() == 3
    with pytest.raises(InvalidParameterError):
        reprkit.set_num_threads(0)
    with pytest.raises(InvalidParameterError):
        reprkit.pairwise_distances(np.ones((2, 2)), n_jobs=0)


@pytest.mark.parametrize("metric", ["euclidean", "sqeuclidean", "cosine"])
def test_results_identical_for_one_and_two_threads(metric):
    r = np.random.default_rng(0)
    x = r.standard_normal((300, 40)).astype(np.float32)
    y = r.standard_normal((257, 40)).astype(np.float32)
    a = reprkit.pairwise_distances(x, y, metric, n_jobs=1)
    b = reprkit.pairwise_distances(x, y, metric, n_jobs=2)
    assert np.array_equal(a, b)
    tx = torch.from_numpy(x).requires_grad_(True)
    grads = []
    for n in (1, 2):
        reprkit.set_num_threads(n)
        tx.grad = None
        reprkit.pairwise_distances(tx, metric=metric).sum().backward()
        grads.append(tx.grad.clone())
    assert torch.equal(grads[0], grads[1])


def test_concurrent_python_threads_get_correct_results():
    r = np.random.default_rng(1)
    inputs = [r.standard_normal((200, 30)) for _ in range(6)]
    expected = [reprkit.pairwise_distances(x) for x in inputs]
    results = [None] * len(inputs)

    def work(i):
        for _ in range(3):
            results[i] = reprkit.pairwise_distances(inputs[i], n_jobs=1 + i % 2)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(inputs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for got, want in zip(results, expected):
        assert np.array_equal(got, want)


def test_gil_is_released_during_kernels():
    x = np.random.default_rng(2).standard_normal((3000, 256)).astype(np.float32)
    start = time.perf_counter()
    reprkit.pairwise_distances(x, n_jobs=1)
    single = time.perf_counter() - start
    done = threading.Event()
    ticks = []

    def kernel():
        reprkit.pairwise_distances(x, n_jobs=1)
        done.set()

    t = threading.Thread(target=kernel)
    t.start()
    while not done.is_set():
        ticks.append(time.perf_counter())
        time.sleep(0.001)
    t.join()
    # With the GIL held, this loop would stall for the whole kernel; released, it keeps ticking.
    gaps = np.diff(ticks) if len(ticks) > 1 else np.array([single])
    assert len(ticks) > 5 and gaps.max() < 0.5 * single + 0.05


def test_dataloader_fork_workers_do_not_hang():
    script = textwrap.dedent(
        """
        import numpy as np, torch, reprkit
        from torch.utils.data import DataLoader, Dataset
        x = np.random.default_rng(0).standard_normal((64, 8))
        want = reprkit.pairwise_distances(x, n_jobs=2)  # parent builds its pool first
        class D(Dataset):
            def __len__(self): return 4
            def __getitem__(self, i):
                return torch.from_numpy(reprkit.pairwise_distances(x, n_jobs=2)[i])
        dl = DataLoader(D(), batch_size=2, num_workers=2, multiprocessing_context="fork")
        rows = torch.cat([b for b in dl])
        assert np.allclose(rows.numpy(), want[:4])
        print("ok")
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("ok")


def test_numpy_only_use_without_torch():
    script = textwrap.dedent(
        """
        import sys
        sys.modules["torch"] = None  # make `import torch` fail
        import numpy as np, reprkit
        assert "torch" not in [m for m in sys.modules if sys.modules[m] is not None]
        print(reprkit.pairwise_distances(np.eye(2))[0, 1])
        try:
            reprkit.reference.pairwise_distances(np.eye(2))
        except ImportError as e:
            assert "reprkit[torch]" in str(e), e
            print("clear")
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [str(np.sqrt(2.0)), "clear"]
