# Writes tests/data/adv_tiny.safetensors: the oracle of the adversarial term of stage tae
# (`mirage train tae --adv W`, src/train/adv.h), in float64, for tests/test_adv.c.
# D, a PatchGAN on the RGB image: conv3x3 s2 3->64, LeakyReLU(0.2); conv3x3 s2 64->64, LeakyReLU;
# conv3x3 s2 64->64, LeakyReLU; conv3x3 s1 64->1 (all with biases, padding 1): a logit per 8x8 patch.
# For a batch of B images `img` and reconstructions `rec` (HWC, treated as constants for D):
#   L_D = mean relu(1 - D(img)) + mean relu(1 + D(rec))     (means over the batch's patches)
#   G   = -mean D(rec);  the autoencoder's term is W x G, its gradient dWG/drec through the same D
#         (the D of before its step: simultaneous updates, DECISIONS 21)
# Written: the inputs, D's weights (drawn here with numpy and stored, so the C test loads them
# instead of rebuilding an RNG), the logits, L_D, G, dL_D/dθ for every tensor of D, dWG/drec, and
# D's weights after one torch.optim.AdamW step on dL_D (betas 0.9/0.95, eps 1e-8, no decay).
# Run from the repo root: /usr/bin/python3 ref/export_adv.py
import argparse, os, shlex, sys
import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import model as M
import st

B, H, W, CH, SLOPE = 2, 16, 16, 64, 0.2
WGEN = 0.5        # --adv W of the golden dWG/drec
LR = 1e-3
LAYERS = [(3, CH, 2), (CH, CH, 2), (CH, CH, 2), (CH, 1, 1)]  # (ci, co, stride)

def names():
    return [f"disc.c{l}.{k}" for l in range(len(LAYERS)) for k in ("weight", "bias")]

def make(seed=77):
    rng = np.random.default_rng(seed)
    I = {"adv/img": rng.random((B, H, W, 3)).astype(np.float32),
         # a reconstruction: the image smoothed a little, plus noise, not clamped to [0, 1]
         "adv/rec": None}
    img = I["adv/img"]
    sm = (img + np.roll(img, 1, 1) + np.roll(img, -1, 1) + np.roll(img, 1, 2) + np.roll(img, -1, 2)) / 5
    I["adv/rec"] = (sm + 0.05 * rng.standard_normal(img.shape)).astype(np.float32)
    Wd = {}
    for l, (ci, co, _) in enumerate(LAYERS):
        b = 1 / np.sqrt(ci * 9)
        Wd[f"disc.c{l}.weight"] = rng.uniform(-b, b, (co, ci, 3, 3)).astype(np.float32)
        Wd[f"disc.c{l}.bias"] = rng.uniform(-b, b, (co,)).astype(np.float32)
    return I, Wd

def disc(P, x):  # x (B, H, W, 3) tensor -> logits (B, H/8, W/8)
    h = x.permute(0, 3, 1, 2)
    for l, (_, _, s) in enumerate(LAYERS):
        h = F.conv2d(h, P[f"disc.c{l}.weight"], P[f"disc.c{l}.bias"], stride=s, padding=1)
        if l < len(LAYERS) - 1:
            h = F.leaky_relu(h, SLOPE)
    return h[:, 0]

def losses(P, img, rec):
    lr, lf = disc(P, img), disc(P, rec)
    ld = torch.relu(1 - lr).mean() + torch.relu(1 + lf).mean()
    return lr, lf, ld

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="tests/data/adv_tiny.safetensors")
    args = ap.parse_args()
    torch.set_num_threads(1)
    I, Wd = make()
    dt = torch.float64
    P = {n: torch.tensor(Wd[n], dtype=dt, requires_grad=True) for n in names()}
    img = torch.tensor(I["adv/img"], dtype=dt)
    rec = torch.tensor(I["adv/rec"], dtype=dt, requires_grad=True)
    lr, lf, ld = losses(P, img, rec.detach())
    ld.backward()
    G = -disc(P, rec).mean()
    (drec,) = torch.autograd.grad(WGEN * G, rec)
    acc = ((lr > 0).sum() + (lf < 0).sum()).item() / (2 * lr.numel())
    print(f"L_D {ld.item():.9g}, G {G.item():.9g}, D accuracy {acc:.3f}, |dWG/drec| {drec.norm().item():.4g}")
    f32 = lambda t: t.detach().numpy().astype(np.float32)
    T = dict(I)
    for n in names():
        T["adv/param/" + n] = Wd[n]
    T["adv/logits_real"], T["adv/logits_fake"] = f32(lr), f32(lf)
    T["adv/ld"] = np.array([ld.item()], np.float32)
    T["adv/g"] = np.array([G.item()], np.float32)
    T["adv/acc"] = np.array([acc], np.float32)
    for n in names():
        T["adv/grad/" + n] = f32(P[n].grad)
    T["adv/drec"] = f32(drec)
    # one AdamW step of D on dL_D
    opt = torch.optim.AdamW(list(P.values()), lr=LR, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.0)
    opt.step()
    for n in names():
        T["adv/step1/" + n] = f32(P[n])
    meta = {"format": "mirage-adv-grads", "adv_version": "1", "command": shlex.join([sys.executable] + sys.argv),
            "w_gen": M._fmt(WGEN), "slope": M._fmt(SLOPE), "adamw_lr": M._fmt(LR), "adamw_beta1": "0.9",
            "adamw_beta2": "0.95", "adamw_eps": "1e-08"}
    st.write(args.out, T, meta)
    print(f"wrote {args.out}: {len(T)} tensors, {os.path.getsize(args.out)} bytes")

if __name__ == "__main__":
    main()
