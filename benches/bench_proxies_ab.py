"""In-process A/B of one fwd+bwd step (B = 512, d = 512, float32): the fused proxy kernels against the
two-pass ones (forward + recomputing backward, still used for forward-only calls), plain torch and
ArcFace's fused kernel on the same shape. Best-of wall and CPU (``time.process_time``) seconds.

    PYTHONPATH=python python benches/bench_proxies_ab.py THREADS C1,C2 [REPEAT] [anchor,nca]
"""
import sys, time, os
import torch
import torch.nn.functional as F
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_proxies import make_case
from reprkit import functional as Fn
import reprkit.losses.proxies as LP
from reprkit.reference.proxies import anchor_loss_from_terms, reduce as rreduce

T = int(sys.argv[1]); CS = [int(c) for c in sys.argv[2].split(",")]; REP = int(sys.argv[3]) if len(sys.argv) > 3 else 7
torch.set_num_threads(T)

def old_anchor(x, y, w):
    u = F.normalize(x, dim=1)
    pos, neg, cnt = LP._ProxyAnchor.apply(u, w, y, 0.1, 32.0, T)
    return anchor_loss_from_terms(pos, neg, cnt)

def old_nca(x, y, w):
    u = F.normalize(x, dim=1)
    per, _ = LP._ProxyNCA.apply(u, w, y, 16.0, T)
    return per.mean()

def timeit(x, w, fn):
    def step():
        x.grad = None; w.grad = None
        out = fn(); out.backward()
    step(); step()
    bw, bc = 1e9, 1e9
    for _ in range(REP):
        t0, c0 = time.perf_counter(), time.process_time()
        step()
        bw, bc = min(bw, time.perf_counter() - t0), min(bc, time.process_time() - c0)
    return bw, bc

print(f"# threads={T} load={os.getloadavg()}")
for c in CS:
    for loss in (sys.argv[4].split(",") if len(sys.argv) > 4 else ("anchor", "nca")):
        x, w, fn = make_case(loss, "reprkit", c)
        g = torch.Generator().manual_seed(0)
        y = torch.randint(0, c, (512,), generator=g)
        x2, w2, tfn = make_case(loss, "torch", c)
        res = {}
        res["fused"] = timeit(x, w, lambda: (Fn.proxy_anchor_loss(x, y, w, 0.1, 32.0, n_jobs=T) if loss == "anchor" else Fn.proxy_nca_loss(x, y, w, 8.0, n_jobs=T)))
        res["twopass"] = timeit(x, w, lambda: (old_anchor(x, y, w) if loss == "anchor" else old_nca(x, y, w)))
        res["torch"] = timeit(x2, w2, tfn)
        if loss == "nca":
            res["arcface"] = timeit(x, w, lambda: Fn.arcface_loss(x, y, w, 0.5, 64.0, n_jobs=T))
        print(c, loss, " ".join(f"{k}: {a:.4f}s wall {b:.4f}s cpu" for k, (a, b) in res.items()), flush=True)
print(f"# load at end {os.getloadavg()}")
