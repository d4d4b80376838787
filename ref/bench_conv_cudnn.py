# cuDNN's 3x3 convolutions on the autoencoder's shapes, timed the way the kernel lab
# (dev/cuda/conv3x3.cu) times mirage's: bf16 NHWC (channels_last), batch 1, bias, L2 flushed by a
# 256 MiB memset before every run, CUDA events, median of 30. cudnn.benchmark lets cuDNN try
# its algorithms once per shape and keep the fastest, so this is cuDNN at its best on the card.
# Issue 4 asks for the implicit-GEMM conv to be measured against cuDNN; dev/cuda/README.md has
# both from one call.
#   python3 ref/bench_conv_cudnn.py [--json]
import argparse, json, statistics
import torch
import torch.nn.functional as F

SHAPES = [  # (name, H, W, Ci, Co, stride): output sizes as the lab's table
    ("512x512", 512, 512, 64, 64, 1),
    ("256x256", 256, 256, 64, 64, 1),
    ("128x128", 128, 128, 64, 64, 1),
    ("64x64", 64, 64, 64, 64, 1),
    ("32x32", 32, 32, 64, 64, 1),
    ("256x256 stride 2 (from 512x512)", 512, 512, 64, 64, 2),
]

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--iters", type=int, default=30)
    args = ap.parse_args()
    torch.backends.cudnn.benchmark = True
    dev = torch.device("cuda")
    flush = torch.empty(256 << 20, dtype=torch.uint8, device=dev)
    print(f"cudnn {torch.backends.cudnn.version()} | torch {torch.__version__} | {torch.cuda.get_device_name()}")
    rows = []
    for name, H, W, Ci, Co, s in SHAPES:
        x = torch.randn(1, Ci, H, W, device=dev).to(torch.bfloat16).contiguous(memory_format=torch.channels_last)
        w = (torch.randn(Co, Ci, 3, 3, device=dev) * 0.05).to(torch.bfloat16).contiguous(memory_format=torch.channels_last)
        b = torch.randn(Co, device=dev).to(torch.bfloat16)
        for _ in range(5):  # cudnn.benchmark's search, then warm
            y = F.conv2d(x, w, b, stride=s, padding=1)
        torch.cuda.synchronize()
        t = []
        for _ in range(args.iters):
            flush.zero_()
            e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            e0.record()
            y = F.conv2d(x, w, b, stride=s, padding=1)
            e1.record()
            torch.cuda.synchronize()
            t.append(e0.elapsed_time(e1) * 1e3)
        us = statistics.median(t)
        Ho, Wo = y.shape[2], y.shape[3]
        flop = 2.0 * Ho * Wo * Co * Ci * 9
        rows.append({"shape": name, "us": us, "tflops": flop / us / 1e6, "out": [Ho, Wo],
                     "channels_last": y.is_contiguous(memory_format=torch.channels_last)})
        print(f"cudnn conv3x3 {Ci}->{Co} out {Wo}x{Ho} ({name}): {us:8.1f} us  {flop / us / 1e6:6.1f} TFLOP/s")
    if args.json:
        print(json.dumps({"cudnn": torch.backends.cudnn.version(), "torch": torch.__version__,
                          "gpu": torch.cuda.get_device_name(), "rows": rows}))

if __name__ == "__main__":
    main()
