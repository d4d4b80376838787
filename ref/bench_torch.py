# Times the PyTorch oracle the way `mirage bench` times the C engine: batch 1, per frame
# encode + N denoise steps (each attending to a full ring of K frames) + KV refresh + decode,
# after warm-up. fp32 on CPU, bf16 on CUDA (timed with CUDA events); --compile wraps encode,
# decode and the DiT in torch.compile(mode="max-autotune") where torch has it. The input
# frame and the noise are made once and live on the device; the output stays there.
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

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True, help="weights file, or a config name (tiny, s, b, 1b: init seed 0, full random)")
    ap.add_argument("--size", default="256x256", help="WxH, multiples of 16")
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--compile", action="store_true")
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
    compiled = a.compile and hasattr(torch, "compile")
    if a.compile and not compiled:
        print(f"note: torch {torch.__version__} has no torch.compile; running eager")
    if compiled:
        for fn in ("encode", "decode", "dit_core"):
            setattr(m, fn, torch.compile(getattr(m, fn), mode="max-autotune"))
    names = ["encode"] + [f"step{i}" for i in range(a.steps)] + ["refresh", "decode"]

    def one_frame():  # -> ms per component
        if compiled and cuda and hasattr(torch, "compiler") and hasattr(torch.compiler, "cudagraph_mark_step_begin"):
            torch.compiler.cudagraph_mark_step_begin()
        if cuda:
            ev = [torch.cuda.Event(enable_timing=True)]
            ev[0].record()
            def tick(name):
                ev.append(torch.cuda.Event(enable_timing=True))
                ev[-1].record()
            s.step(frame, noise, ctx, tick)
            ev[-1].synchronize()
            return [x.elapsed_time(y) for x, y in zip(ev, ev[1:])]
        t = [time.perf_counter()]
        s.step(frame, noise, ctx, lambda name: t.append(time.perf_counter()))
        return [1000 * (y - x) for x, y in zip(t, t[1:])]

    dev = device_name(a.device)
    prec = "bf16" if cuda else "fp32"
    print(f"bench_torch: model {cfg['config']} ({m.params() / 1e6:.2f} M params) | {W}x{H} | steps {a.steps} | "
          f"ring {K} | {a.device} {prec} ({dev}, {threads} threads) | {'compiled' if compiled else 'eager'} | "
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
                              ring=K, iters=a.iters, threads=threads, compile=compiled, torch=torch.__version__,
                              components_ms=comp)))

if __name__ == "__main__":
    main()
