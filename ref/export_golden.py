# Writes tests/data/golden_tiny.safetensors: inputs and outputs of the oracle for the tiny
# config (weights: init seed 1, full random), computed in float64 and stored as F32, HWC.
# Before writing it checks the oracle against itself: the fast init equals the Python-int
# xoshiro, float32 agrees with float64, and streaming frame by frame equals the block-causal
# parallel forward. Run from the repo root: /usr/bin/python3 ref/export_golden.py
import argparse, os, shlex, sys
import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import model as M
import st

def hwc(t):  # (T, C, H, W) tensor -> (T, H, W, C) float32 array
    return t.permute(0, 2, 3, 1).detach().cpu().numpy().astype(np.float32)

def make_frames(rng, T=4, H=48, W=64):
    """A smooth pattern drifting right and down, plus a little noise."""
    y, x = np.mgrid[0:H, 0:W].astype(np.float64)
    frames = []
    for t in range(T):
        u, v = x - 3 * t, y - 2 * t
        r = 128 + 90 * np.sin(0.13 * u + 0.07 * v)
        g = 128 + 80 * np.cos(0.05 * u - 0.11 * v + 1.0)
        b = 110 + 60 * np.sin(0.02 * (u * u + v * v) ** 0.5 * 3)
        frames.append(np.stack([r, g, b], -1) + rng.normal(0, 3, (H, W, 3)))
    return np.clip(np.round(frames), 0, 255).astype(np.uint8)

def make_inputs(seed=2024):
    rng = np.random.default_rng(seed)
    normal = lambda *s: rng.standard_normal(s).astype(np.float32)
    return {
        "frames": make_frames(rng),
        "dec.in": normal(6, 8, 4),
        "dit.z": normal(6, 8, 4), "dit.cond": normal(6, 8, 4),
        "dit.sigma": np.array([0.7], np.float32), "dit.meta": np.array([1, 5], np.int32),
        "par.z": normal(4, 6, 8, 4), "par.cond": normal(4, 6, 8, 4),
        "par.sigma": np.array([0.9, 0.3, 0.6, 0.05], np.float32), "par.meta": np.array([2, 2], np.int32),
        "stream.noise": normal(4, 6, 8, 4), "stream.ctx_noise": normal(4, 6, 8, 4),
    }

RUNS = {"stream": dict(steps=2, K=2, prompt="colorize", guidance=1.0),
        "cfg": dict(steps=2, K=2, prompt="dream", guidance=2.5)}

def run_stream(m, I, steps, K, prompt, guidance):
    s = M.Stream(m, steps, K, prompt, guidance)
    outs, zs = [], []
    for t in range(len(I["frames"])):
        out, z = s.step(I["frames"][t], m_lat(m, I["stream.noise"][t]), m_lat(m, I["stream.ctx_noise"][t]))
        outs.append(out[0].detach().cpu().numpy().astype(np.float32))
        zs.append(hwc(z)[0])
    return np.stack(outs), np.stack(zs)

def m_lat(m, a):  # HWC latent(s) from the file -> (T, Z, h, w) in the model's dtype
    t = torch.from_numpy(np.asarray(a, np.float32))
    t = t[None] if t.dim() == 3 else t
    return t.permute(0, 3, 1, 2).to(m.device, m.dtype)

def compute(m, I):
    O, trace = {}, {}
    with torch.no_grad():
        O["enc.out"] = hwc(m.encode(I["frames"][0]))[0]
        O["dec.out"] = m.decode(m_lat(m, I["dec.in"]))[0].cpu().numpy().astype(np.float32)
        prompt, frame = (int(x) for x in I["dit.meta"])
        v = m.dit(m_lat(m, I["dit.z"]), m_lat(m, I["dit.cond"]), [float(I["dit.sigma"][0])], prompt, [frame],
                  0, trace=trace)
        O["dit.v"] = hwc(v)[0]
        # intermediates of the single call, to find where a C implementation departs
        O["dit.c"] = trace["c"][0].numpy().astype(np.float32)
        O["dit.x.in"] = trace["x.in"][0].numpy().astype(np.float32)
        O["dit.x.0"] = trace["x.0"][0].numpy().astype(np.float32)
        prompt, K = (int(x) for x in I["par.meta"])
        T = len(I["par.z"])
        O["par.v"] = hwc(m.dit(m_lat(m, I["par.z"]), m_lat(m, I["par.cond"]), [float(s) for s in I["par.sigma"]],
                               prompt, list(range(T)), K))
        for name, r in RUNS.items():
            O[name + ".out"], O[name + ".z"] = run_stream(m, I, **r)
    return O

def check_init(cfg, W):
    """The numpy lane generator must give exactly the Python-int xoshiro256** values."""
    Wx = M.init_weights(cfg, 1, True, exact=True)
    for n in W:
        assert np.array_equal(W[n].view(np.uint32), Wx[n].view(np.uint32)), f"init mismatch in {n}"
    print(f"init: fast == exact Python-int xoshiro256** for all {len(W)} tensors "
          f"({sum(w.size for w in W.values())} values)")

def check_stream_equals_parallel(m, I):
    """Frame-by-frame with the KV ring must equal the block-causal parallel forward."""
    prompt, K = (int(x) for x in I["par.meta"])
    z, cond = m_lat(m, I["par.z"]), m_lat(m, I["par.cond"])
    sig = [float(s) for s in I["par.sigma"]]
    T = len(sig)
    with torch.no_grad():
        vp = m.dit(z, cond, sig, prompt, list(range(T)), K)
        ring, err = M.Ring(K), 0.0
        for t in range(T):  # (a) the dit with a ring, each frame's own k, v pushed after it
            v, kvs = m.dit(z[t:t + 1], cond[t:t + 1], [sig[t]], prompt, [t], K, ring)
            ring.push(kvs, t)
            err = max(err, (v[0] - vp[t]).abs().max().item())
        print(f"stream == parallel (dit + ring, K={K}): max |diff| {err:.3g}")
        assert err < 1e-10
        # (b) the whole Stream procedure with one step: v_t = eps_t - z_t must equal the
        # parallel forward over [zc_0 .. zc_{t-1}, eps_t] at [s_ctx .. s_ctx, 1]
        s, sc = M.Stream(m, 1, K, "colorize"), m.cfg["sigma_ctx"]
        eps, ctx = m_lat(m, I["stream.noise"]), m_lat(m, I["stream.ctx_noise"])
        conds, zcs, err = [], [], 0.0
        for t in range(T):
            _, zt = s.step(I["frames"][t], eps[t:t + 1], ctx[t:t + 1])
            conds.append(m.encode(I["frames"][t]))
            vp = m.dit(torch.cat(zcs + [eps[t:t + 1]]), torch.cat(conds), [sc] * t + [1.0], 1, list(range(t + 1)), K)
            err = max(err, ((eps[t] - zt[0]) - vp[t]).abs().max().item())
            zcs.append((1 - sc) * zt + sc * ctx[t:t + 1])
        print(f"stream == parallel (Stream, 1 step, K={K}): max |diff| {err:.3g}")
        assert err < 1e-10

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="tests/data/golden_tiny.safetensors")
    args = ap.parse_args()
    torch.set_num_threads(1)  # one summation order, so the file is reproducible
    cfg = M.config("tiny")
    W = M.init_weights(cfg, 1, True)
    check_init(cfg, W)
    I = make_inputs()
    m64 = M.Mirage(cfg, W, torch.float64)
    check_stream_equals_parallel(m64, I)
    O = compute(m64, I)
    O32 = compute(M.Mirage(cfg, W, torch.float32), I)
    print(f"{'tensor':14s} {'shape':16s} {'max|ref|':>9s} {'fp32 err':>9s} {'rel':>9s}")
    for n, a in O.items():
        err, mx = np.abs(O32[n] - a).max(), np.abs(a).max()
        print(f"{n:14s} {str(a.shape):16s} {mx:9.3g} {err:9.3g} {err / max(mx, 1e-30):9.2g}")
        assert err <= 1e-5 * max(1.0, mx), f"float32 and float64 oracles disagree on {n}"
    tensors = {f"weights/{n}": W[n] for n in ("enc.in.weight", "dit.t1.bias", "dit.prompt")}
    tensors.update(I)
    tensors.update(O)
    meta = {"format": "mirage-golden", "golden_version": "1",
            "command": shlex.join([sys.executable] + sys.argv), "config": "tiny",
            "weights_seed": "1", "weights_full_random": "1", "par_positions": "0,1,2,3"}
    for name, r in RUNS.items():
        meta.update({f"{name}_{k}": str(v) for k, v in
                     dict(steps=r["steps"], ring=r["K"], prompt=r["prompt"], guidance=M._fmt(r["guidance"])).items()})
    st.write(args.out, tensors, meta)
    print(f"wrote {args.out}: {len(tensors)} tensors, {os.path.getsize(args.out)} bytes")

if __name__ == "__main__":
    main()
