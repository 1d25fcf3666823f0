"""Distributed losses: W gloo ranks on 127.0.0.1 against one process on the concatenated batch.

For every loss with ``gather_distributed=True``: the ranks' mean loss equals the
single-process loss of the global batch, and every rank's input gradient after
DDP's averaging (÷ W) equals that rank's slice of the single-process gradient
(float64, tight). A negative control checks that a gradient off by world_size
fails the comparison. One job per world size computes every case (world 2 spawned,
world 3 forked; starting the workers is the slow part); a two-rank DDP step of a small model (NT-Xent, CLIP)
gives the parameters of one process.
"""

from __future__ import annotations

import os
import socket

import pytest

torch = pytest.importorskip("torch")
import torch.distributed as dist  # noqa: E402
import torch.multiprocessing as mp  # noqa: E402

import reprkit.functional as RF  # noqa: E402
from reprkit import distributed as D  # noqa: E402
from reprkit import miners  # noqa: E402

pytestmark = pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not built")

D_FEAT = 6


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _data(n: int) -> dict:
    """The global batch (float64), the same in every process."""
    g = torch.Generator().manual_seed(1234)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    lab = torch.randint(0, 3, (n,), generator=g)
    return {"a": r(n, D_FEAT), "b": r(n, D_FEAT), "v": r(n, 2, D_FEAT), "y": lab, "w": torch.rand(n, generator=g, dtype=torch.float64) + 0.5,
            "q": r(5, D_FEAT), "s": torch.tensor(3.0, dtype=torch.float64), "t": torch.tensor(-1.5, dtype=torch.float64)}


def _unit(t):
    return torch.nn.functional.normalize(t, dim=1)


# name -> (inputs that get gradients, loss(inputs dict, gather)).
CASES = {
    "ntxent": ("ab", lambda x, g: RF.ntxent_loss(x["a"], x["b"], 0.5, gather_distributed=g)),
    "ntxent_torch": ("ab", lambda x, g: RF.ntxent_loss(x["a"], x["b"], 0.5, backend="torch", gather_distributed=g)),
    "ntxent_weighted": ("ab", lambda x, g: RF.ntxent_loss(x["a"], x["b"], 0.5, weights=x["w"], gather_distributed=g)),
    "ntxent_none": ("ab", lambda x, g: RF.ntxent_loss(x["a"], x["b"], 0.5, reduction="none", gather_distributed=g).mean()),
    "infonce": ("ab", lambda x, g: RF.infonce_loss(x["a"], x["b"], None, 0.3, gather_distributed=g)),
    "infonce_sum_torch": ("ab", lambda x, g: RF.infonce_loss(x["a"], x["b"], None, 0.3, reduction="sum", backend="torch",
                                                             gather_distributed=g)),
    "infonce_queue": ("ab", lambda x, g: RF.infonce_loss(x["a"], x["b"], x["q"], 0.3, gather_distributed=g)),
    "clip": ("ab", lambda x, g: RF.clip_loss(_unit(x["a"]), _unit(x["b"]), 7.0, gather_distributed=g)),
    "clip_torch": ("ab", lambda x, g: RF.clip_loss(x["a"], x["b"], 0.8, backend="torch", gather_distributed=g)),
    "clip_scale": ("abs", lambda x, g: RF.clip_loss(_unit(x["a"]), _unit(x["b"]), x["s"], gather_distributed=g)),
    "siglip_params": ("abst", lambda x, g: RF.siglip_loss(_unit(x["a"]), _unit(x["b"]), x["s"], x["t"], gather_distributed=g)),
    "siglip": ("ab", lambda x, g: RF.siglip_loss(_unit(x["a"]), _unit(x["b"]), 5.0, -2.0, gather_distributed=g)),
    "siglip_torch": ("ab", lambda x, g: RF.siglip_loss(x["a"], x["b"], 0.7, 0.5, backend="torch", gather_distributed=g)),
    "supcon": ("a", lambda x, g: RF.supcon_loss(x["a"], x["y"], 0.5, gather_distributed=g)),
    "supcon_torch": ("a", lambda x, g: RF.supcon_loss(x["a"], x["y"], 0.5, backend="torch", gather_distributed=g)),
    "supcon_views_torch": ("v", lambda x, g: RF.supcon_loss(x["v"], None, 0.5, backend="torch", gather_distributed=g)),
    "supcon_views": ("v", lambda x, g: RF.supcon_loss(x["v"], None, 0.5, gather_distributed=g)),
    "uniformity": ("a", lambda x, g: RF.uniformity_loss(x["a"], 2.0, normalize=True, gather_distributed=g)),
    "hypersphere": ("ab", lambda x, g: RF.hypersphere_loss(x["a"], x["b"], normalize=True, gather_distributed=g)),
    "barlow": ("ab", lambda x, g: RF.barlow_twins_loss(x["a"], x["b"], 0.05, gather_distributed=g)),
    "vicreg": ("ab", lambda x, g: RF.vicreg_loss(x["a"], x["b"], gather_distributed=g)),
    "contrastive": ("a", lambda x, g: RF.contrastive_loss(x["a"], x["y"], 3.0, gather_distributed=g)),
    "triplet": ("a", lambda x, g: RF.triplet_margin_loss(x["a"], x["y"], 1.0, gather_distributed=g)),
    "triplet_hard": ("a", lambda x, g: RF.triplet_margin_loss(x["a"], x["y"], 1.0, "batch_hard", gather_distributed=g)),
    "lifted": ("a", lambda x, g: RF.lifted_structure_loss(x["a"], x["y"], 1.0, gather_distributed=g)),
    "multi_similarity": ("a", lambda x, g: RF.multi_similarity_loss(x["a"], x["y"], gather_distributed=g)),
    "circle": ("a", lambda x, g: RF.circle_loss(x["a"], x["y"], gamma=8.0, gather_distributed=g)),
    "mined_triplet": ("a", lambda x, g: RF.triplet_margin_loss(
        x["a"], x["y"], 0.5, indices_tuple=miners.batch_hard(x["a"], x["y"], gather_distributed=g), gather_distributed=g)),
    "mined_ms": ("a", lambda x, g: RF.multi_similarity_loss(
        x["a"], x["y"], indices_tuple=miners.multi_similarity(x["a"], x["y"], 0.5, gather_distributed=g), gather_distributed=g)),
}


REPLICATED = ("q", "s", "t")  # the same on every rank (a queue, a loss's parameters)


def _slices(sizes):
    off = [sum(sizes[:i]) for i in range(len(sizes))]
    return [slice(o, o + s) for o, s in zip(off, sizes)]


def _local(data, sl):
    x = {k: (v.clone() if k in REPLICATED else v[sl].clone()) for k, v in data.items()}
    for k in ("a", "b", "v", "s", "t"):
        x[k].requires_grad_(True)
    return x


def _ddp_models():
    torch.manual_seed(7)
    return torch.nn.Linear(D_FEAT, 4).double(), torch.nn.Linear(D_FEAT, 4).double()


def _ddp_step(kind, f, h, x, gather):
    """One SGD step of f (and h for CLIP's text tower) on the batch; returns the new parameters."""
    params = list(f.parameters()) + (list(h.parameters()) if kind == "clip" else [])
    opt = torch.optim.SGD(params, lr=0.5)
    if kind == "ntxent":
        loss = RF.ntxent_loss(f(x["a"]), f(x["b"]), 0.5, gather_distributed=gather)
    else:
        loss = RF.clip_loss(_unit(f(x["a"])), _unit(h(x["b"])), 5.0, gather_distributed=gather)
    opt.zero_grad()
    loss.backward()
    opt.step()
    mods = [f, h] if kind == "clip" else [f]
    return [p.detach().clone() for m in mods for p in (m.module if hasattr(m, "module") else m).parameters()]


def _worker(rank, world, port, sizes, out, ddp):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        data = _data(sum(sizes))
        sl = _slices(sizes)[rank]
        res = {"gather": D.all_gather(torch.arange(sizes[rank]) + 100 * rank)}
        for name, (wrt, fn) in CASES.items():
            x = _local(data, sl)
            loss = fn(x, True)
            grads = torch.autograd.grad(loss, [x[k] for k in wrt])
            res[name] = (loss.detach(), [g.detach() for g in grads])
        from reprkit import MemoryBank

        bank = MemoryBank(64, D_FEAT, dtype=torch.float64, gather_distributed=True)
        x = _local(data, sl)
        bank.add(x["a"], x["y"])
        res["bank"] = bank.get()
        if ddp:
            for kind in ("ntxent", "clip"):
                f, h = _ddp_models()
                f = torch.nn.parallel.DistributedDataParallel(f)
                h = torch.nn.parallel.DistributedDataParallel(h)
                res["ddp_" + kind] = _ddp_step(kind, f, h, _local(data, sl), True)
        torch.save(res, os.path.join(out, f"rank{rank}.pt"))
        dist.barrier()  # no rank tears gloo down while a peer still uses it
    finally:
        dist.destroy_process_group()


def _run(world, sizes, tmp_path, ddp=False, method="spawn"):
    # The protocol is torch.multiprocessing spawn (a fresh interpreter: nothing inherited);
    # one world size also runs forked, the start method torch's own MultiProcessTestCase uses, which
    # checks that reprkit's Rust pools survive a fork.
    if method not in mp.get_all_start_methods():
        method = "spawn"
    mp.start_processes(_worker, args=(world, _free_port(), sizes, str(tmp_path), ddp), nprocs=world, join=True,
                       start_method=method)
    return [torch.load(tmp_path / f"rank{r}.pt") for r in range(world)]


def _references(sizes):
    """The single-process losses and gradients on the global batch (computed before the workers start:
    it also warms up the imports a forked child inherits)."""
    data = _data(sum(sizes))
    out = {}
    for name, (wrt, fn) in CASES.items():
        x = _local(data, slice(None))
        ref = fn(x, False)
        out[name] = (ref.detach(), torch.autograd.grad(ref, [x[k] for k in wrt]))
    return out


def _check(results, sizes, refs):
    world = len(sizes)
    sl = _slices(sizes)
    for r, res in enumerate(results):  # all_gather: rank order, unequal sizes
        assert torch.equal(res["gather"], torch.cat([torch.arange(s) + 100 * q for q, s in enumerate(sizes)]))
        # MemoryBank(gather_distributed=True) enqueues the global batch (detached) on every rank
        data = _data(sum(sizes))
        assert torch.equal(res["bank"][0], data["a"]) and torch.equal(res["bank"][1], data["y"])
        assert not res["bank"][0].requires_grad
    for name, (wrt, fn) in CASES.items():
        ref, rgrads = refs[name]
        mean_loss = sum(res[name][0] for res in results) / world
        torch.testing.assert_close(mean_loss, ref, rtol=1e-10, atol=1e-12, msg=f"{name}: loss")
        for r, res in enumerate(results):
            for k, g, gr in zip(wrt, res[name][1], rgrads):
                if k in REPLICATED:  # a replicated parameter: DDP's average of the ranks' gradients is the global one
                    gm = sum(rr[name][1][wrt.index(k)] for rr in results) / world
                    torch.testing.assert_close(gm, gr, rtol=1e-9, atol=1e-12, msg=f"{name}: grad {k}")
                    continue
                # DDP averages the ranks' gradients: rank r's gradient / W is its slice of the global one.
                torch.testing.assert_close(g / world, gr[sl[r]], rtol=1e-9, atol=1e-12, msg=f"{name}: rank {r} grad {k}")
                # Negative control: a gradient off by world_size (PML's and lightly's old bugs) fails.
                assert not torch.allclose(g, gr[sl[r]], rtol=1e-6, atol=1e-9), f"{name}: the control did not fail"


def test_world_2_every_loss_and_ddp_step(tmp_path):
    sizes = [5, 5]
    refs = _references(sizes)
    data = _data(sum(sizes))
    singles = {}
    for kind in ("ntxent", "clip"):
        f, h = _ddp_models()
        singles[kind] = _ddp_step(kind, f, h, _local(data, slice(None)), False)
    results = _run(2, sizes, tmp_path, ddp=True)
    _check(results, sizes, refs)
    for kind, single in singles.items():
        for res in results:
            for p, q in zip(res["ddp_" + kind], single):
                torch.testing.assert_close(p, q, rtol=1e-10, atol=1e-12, msg=f"DDP {kind}")
        f0, _ = _ddp_models()  # the step moved the parameters: the comparison is not vacuous
        assert not torch.allclose(single[0], f0.weight)


def test_world_3_unequal_batches(tmp_path):
    sizes = [3, 4, 6]
    refs = _references(sizes)
    _check(_run(3, sizes, tmp_path, method="fork"), sizes, refs)


def test_all_gather_is_identity_without_process_group():
    assert not dist.is_initialized()
    x = torch.randn(4, 3, requires_grad=True)
    g = D.all_gather(x)
    assert g is x
    assert D.world_size() == 1 and D.rank() == 0 and not D.is_distributed()
    ref, n = D.all_gather_local_first(x)
    assert ref is x and n == 4
    a, b = torch.randn(6, 5, dtype=torch.float64), torch.randn(6, 5, dtype=torch.float64)
    # the flag changes nothing in one process
    assert torch.equal(RF.ntxent_loss(a, b, gather_distributed=True), RF.ntxent_loss(a, b))
    assert torch.equal(RF.clip_loss(a, b, gather_distributed=True), RF.clip_loss(a, b))
