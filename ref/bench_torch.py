# Times the PyTorch oracle the way `mirage bench` times the C engine: batch 1, per frame
# encode + N denoise steps (each attending to a full ring of K frames) + KV refresh + decode,
# after warm-up. fp32 on CPU, bf16 on CUDA (timed with CUDA events). The input frame and the
# noise are made once and live on the device; the output stays there.
#
# --compile: torch.compile(mode="max-autotune") where torch has it, over the whole frame (the
# default, --compile-scope frame): one function of device tensors only — the u8 frame, the noise,
# the ring's K and V for every layer, and the frame index — does encode, the denoising steps,
# the KV refresh and decode and returns the ring slid by one frame, so inductor sees the frame
# as one graph (CUDA graphs included) with no host work inside it: the conditioning vectors of
# each step are made once, the RoPE angles on the device from the frame index. This is the
# strongest peer, the shape of ../shared/peer_torch.py. --compile-scope parts wraps only
# encode, decode and the DiT core (Stream.step's host glue between them: the RoPE tables and
# conditioning vectors made on the host for every pass, the ring's clone and concatenation).
# --check-frame N (no --compile needed, any device): runs N frames both ways, the whole-frame
# function and Stream.step, and prints the largest difference (the ring's keys in another
# order: equal up to rounding).
#   /usr/bin/python3 ref/bench_torch.py --model tiny --size 128x128 --steps 2 --device cpu --json
import argparse, json, os, platform, sys, time
import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import model as M

def device_name(dev):
    if dev == "cuda":
        return torch.cuda.get_device_name()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"

class WholeFrame:
    """Stream.step as one function of device tensors (see the top of this file). The ring is
    kept in age order, oldest first (Stream's Ring keeps slot order; attention does not care
    about the order of its keys). Starts from a Stream whose ring is full."""
    def __init__(self, s, H, W):
        m, cfg = s.m, s.m.cfg
        assert s.ring.kv is not None and len(s.ring.slots) == s.K, "fill the ring first"
        self.m, self.s, self.steps, self.K = m, s, s.steps, s.K
        p = cfg["patch"]
        th, tw = H // 8 // p, W // 8 // p
        self.N = th * tw
        order = [i % s.K for i in range(s.f, s.f + s.K)]  # slots, oldest first
        N = self.N
        self.hk = torch.stack([torch.cat([k[:, i * N:(i + 1) * N] for i in order], 1) for k, _ in s.ring.kv])
        self.hv = torch.stack([torch.cat([v[:, i * N:(i + 1) * N] for i in order], 1) for _, v in s.ring.kv])
        self.c = [m.cond_vec([s.sig[i]], s.prompt) for i in range(s.steps)] + [m.cond_vec([cfg["sigma_ctx"]], s.prompt)]
        npairs = cfg["d"] // cfg["heads"] // 2
        nt = npairs // 4
        self.om_t = torch.tensor(cfg["rope_theta"] ** (-np.arange(nt) / nt), dtype=torch.float64, device=m.device)
        cos, sin = m.rope_tables([0], th, tw)  # the spatial pairs: the same for every frame
        self.cs_sp, self.sn_sp = cos[..., nt:].clone(), sin[..., nt:].clone()
        self.f = torch.tensor(float(s.f), dtype=torch.float64, device=m.device)
        self.dream = m.prompts[s.prompt] == "dream"

    def fn(self, frame, noise, ctx_noise, hk, hv, f):
        m, N = self.m, self.N
        cond = torch.zeros_like(noise) if self.dream else m.encode(frame)
        ang = torch.fmod(f * self.om_t, 2 * np.pi)  # the temporal pairs, as rope_tables makes them
        ct = ang.cos().to(m.dtype).expand(1, N, 1, -1)
        st = ang.sin().to(m.dtype).expand(1, N, 1, -1)
        cos, sin = torch.cat([ct, self.cs_sp], -1), torch.cat([st, self.sn_sp], -1)
        hist = [(hk[l], hv[l]) for l in range(hk.shape[0])]
        z = noise
        for i in range(self.steps):
            v, _ = m.dit_core(z, cond, self.c[i], cos, sin, self.K, hist)
            z = z + (self.s.sig[i + 1] - self.s.sig[i]) * v
        s = m.cfg["sigma_ctx"]
        kvs = m.dit_core((1 - s) * z + s * ctx_noise, cond, self.c[-1], cos, sin, self.K, hist, refresh=True)
        nk = torch.cat([hk[:, :, N:], torch.stack([k for k, _ in kvs])], 2)
        nv = torch.cat([hv[:, :, N:], torch.stack([v for _, v in kvs])], 2)
        return m.decode(z), z, nk, nv

    def step(self, fn, frame, noise, ctx_noise):
        out, z, nk, nv = fn(frame, noise, ctx_noise, self.hk, self.hv, self.f)
        self.hk.copy_(nk)
        self.hv.copy_(nv)
        self.f += 1
        return out, z

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True, help="weights file, or a config name (tiny, s, b, 1b: init seed 0, full random)")
    ap.add_argument("--size", default="256x256", help="WxH, multiples of 16")
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--compile-scope", choices=["frame", "parts"], default="frame")
    ap.add_argument("--check-frame", type=int, default=0, metavar="N")
    ap.add_argument("--json", action="store_true", help="last line: a JSON object")
    ap.add_argument("--ring", type=int, default=None, help="history frames K (default: the model's)")
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0, help="CPU threads (default: all cores)")
    a = ap.parse_args()
    W, H = (int(x) for x in a.size.lower().split("x"))
    assert W % 16 == 0 and H % 16 == 0, "frame sizes must be multiples of 16"
    cuda = a.device == "cuda"
    threads = a.threads or os.cpu_count()
    torch.set_num_threads(threads)
    if a.model in M.CONFIGS:
        cfg = M.config(a.model)
        weights = M.init_weights(cfg, 0, True)
    else:
        cfg, weights = M.load(a.model)
    dtype = torch.bfloat16 if cuda else torch.float32
    m = M.Mirage(cfg, weights, dtype, a.device, fast=True)
    K = cfg["ring"] if a.ring is None else a.ring
    s = M.Stream(m, a.steps, K, prompt=1)
    g = torch.Generator().manual_seed(0)
    with torch.inference_mode():  # everything, so compiled code sees one kind of tensor
        frame = torch.randint(0, 256, (H, W, 3), dtype=torch.uint8, generator=g).to(a.device)
        noise, ctx = (torch.randn(1, cfg["z_ch"], H // 8, W // 8, generator=g).to(a.device, dtype) for _ in range(2))
        for _ in range(K):  # fill the ring first, so compiled code only ever sees it full
            s.step(frame, noise, ctx)
    if a.check_frame:
        with torch.inference_mode():
            wf = WholeFrame(s, H, W)
            worst = 0.0
            for t in range(a.check_frame):
                n1, c1 = (torch.randn(noise.shape, generator=g).to(a.device, dtype) for _ in range(2))
                o_ref, z_ref = s.step(frame, n1, c1)
                o, z = wf.step(wf.fn, frame, n1, c1)
                d = max(float((o - o_ref).abs().max() / o_ref.abs().max()), float((z - z_ref).abs().max() / z_ref.abs().max()))
                worst = max(worst, d)
                print(f"frame {t}: whole-frame function against Stream.step: max |diff| / max |ref| {d:.3g}")
        print(f"check-frame: {a.check_frame} frames, worst {worst:.3g}")
        return 0 if worst < (5e-2 if cuda else 1e-4) else 1
    compiled = a.compile and hasattr(torch, "compile")
    if a.compile and not compiled:
        print(f"note: torch {torch.__version__} has no torch.compile; running eager")
    whole = compiled and a.compile_scope == "frame"
    if whole:
        with torch.inference_mode():
            wf = WholeFrame(s, H, W)
        frame_fn = torch.compile(wf.fn, mode="max-autotune")
    elif compiled:
        for fn in ("encode", "decode", "dit_core"):
            setattr(m, fn, torch.compile(getattr(m, fn), mode="max-autotune"))
    names = ["frame"] if whole else ["encode"] + [f"step{i}" for i in range(a.steps)] + ["refresh", "decode"]

    def one_frame():  # -> ms per component
        if compiled and cuda and hasattr(torch, "compiler") and hasattr(torch.compiler, "cudagraph_mark_step_begin"):
            torch.compiler.cudagraph_mark_step_begin()
        if cuda:
            ev = [torch.cuda.Event(enable_timing=True)]
            ev[0].record()
            def tick(name):
                ev.append(torch.cuda.Event(enable_timing=True))
                ev[-1].record()
            if whole:
                wf.step(frame_fn, frame, noise, ctx)
                tick("frame")
            else:
                s.step(frame, noise, ctx, tick)
            ev[-1].synchronize()
            return [x.elapsed_time(y) for x, y in zip(ev, ev[1:])]
        t = [time.perf_counter()]
        if whole:
            wf.step(frame_fn, frame, noise, ctx)
            t.append(time.perf_counter())
        else:
            s.step(frame, noise, ctx, lambda name: t.append(time.perf_counter()))
        return [1000 * (y - x) for x, y in zip(t, t[1:])]

    dev = device_name(a.device)
    prec = "bf16" if cuda else "fp32"
    print(f"bench_torch: model {cfg['config']} ({m.params() / 1e6:.2f} M params) | {W}x{H} | steps {a.steps} | "
          f"ring {K} | {a.device} {prec} ({dev}, {threads} threads) | {('compiled, ' + a.compile_scope) if compiled else 'eager'} | "
          f"torch {torch.__version__}", flush=True)
    with torch.inference_mode():
        t0 = time.perf_counter()
        for _ in range(a.warmup):
            one_frame()
        print(f"ring filled with {K} frames, warm-up {a.warmup} frames in {time.perf_counter() - t0:.1f} s, timing {a.iters}", flush=True)
        ts = np.array([one_frame() for _ in range(a.iters)])  # (iters, components)
    total = ts.sum(1)
    comp = {n: float(np.median(ts[:, i])) for i, n in enumerate(names)}
    for n, v in comp.items():
        print(f"{n:8s} {v:9.3f} ms p50")
    p50, p99 = float(np.percentile(total, 50)), float(np.percentile(total, 99))
    print(f"frame    {p50:9.3f} ms p50 | {p99:.3f} ms p99 | {1000 / p50:.1f} fps")
    if a.json:
        print(json.dumps(dict(p50_ms=p50, p99_ms=p99, fps=1000 / p50, params=m.params(), device=dev,
                              backend=a.device, dtype=prec, model=cfg["config"], size=f"{W}x{H}", steps=a.steps,
                              ring=K, iters=a.iters, threads=threads, compile=compiled, compile_scope=a.compile_scope if compiled else None, torch=torch.__version__,
                              components_ms=comp)))

if __name__ == "__main__":
    main()
