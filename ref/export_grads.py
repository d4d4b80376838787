# Writes tests/data/grads_tiny.safetensors: the oracle's training steps for the tiny config, in
# float64, for tests/test_train.c (llm.c's test_gpt2 is the model). Two objectives:
#  - the DiT (stage 2) the way DESIGN.md §2 says: rectified flow with diffusion forcing, one clip
#    of T frames, each frame its own σ, block-causal with window K, all frames in one pass
#    (ref/model.py's parallel forward):
#      x_σ = (1-σ_t) x0 + σ_t ε,   loss = mean((v(x_σ, cond, σ, prompt) - (ε - x0))^2)
#  - the autoencoder (stage 1) on one image x in [0,1]: r = decode(encode(x)),
#      loss = mean|r - x| + mean (r - x)^2   (L1 + L2); "taehf/": + HF mean (lap(r) - lap(x))^2
# For each: the inputs; the loss; a few gradients in full (one of each kind of layer); the L2
# norm of every trained parameter's gradient; the losses of 10 AdamW steps on the same input
# (torch.optim.AdamW, betas 0.9/0.95, eps 1e-8, decoupled weight decay on tensors of rank >= 2,
# global-norm clipping by torch.nn.utils.clip_grad_norm_, fixed lr). TAE entries are "tae/...".
# Weights: init_weights(config('tiny'), seed=1, full_random=True), which the C side rebuilds bit
# for bit with mg_model_init_file. Run from the repo root: /usr/bin/python3 ref/export_grads.py
import argparse, os, shlex, sys
import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import model as M
import st

T, LH, LW, K, PROMPT = 3, 4, 4, 2, 3  # 3 frames of 32x32 pixels: 4x4 latents, 4 tokens a frame
SIGMA = [0.9, 0.25, 0.6]
ADAM = dict(lr=1e-3, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)
CLIP, STEPS = 1.5, 10
FULL = ["dit.in.weight", "dit.in.bias", "dit.t1.weight", "dit.t1.bias", "dit.t2.weight", "dit.t2.bias",
        "dit.prompt", "dit.final.ada.weight", "dit.final.ada.bias", "dit.final.out.weight",
        "dit.final.out.bias"] + [f"dit.blocks.0.{n}.{w}" for n in ("ada", "qkv", "proj", "fc1", "fc2")
                                 for w in ("weight", "bias")]
TH, TW = 24, 16  # the autoencoder's image: latent 3x2
TAE_FULL = ["enc.in.weight", "enc.in.bias", "enc.b0.c1.weight", "enc.b0.c3.bias", "enc.down1.weight",
            "enc.b9.c2.weight", "enc.out.weight", "enc.out.bias", "dec.in.weight", "dec.in.bias",
            "dec.b0.c1.weight", "dec.up1.weight", "dec.up3.weight", "dec.b9.c3.weight", "dec.out.weight",
            "dec.out.bias"]

def make_inputs(seed=2025):
    rng = np.random.default_rng(seed)
    normal = lambda *s: rng.standard_normal(s).astype(np.float32)
    return {"x0": normal(T, LH, LW, 4), "eps": normal(T, LH, LW, 4), "cond": normal(T, LH, LW, 4),
            "sigma": np.array(SIGMA, np.float32), "meta": np.array([PROMPT, K], np.int32),
            "tae/img": (rng.integers(0, 256, (TH, TW, 3)) / 255).astype(np.float32)}

def lat(m, a):  # HWC (T, h, w, Z) array -> (T, Z, h, w) tensor in the model's dtype
    return torch.from_numpy(a).permute(0, 3, 1, 2).to(m.dtype)

def dit_loss(m, I):
    x0, eps, cond = lat(m, I["x0"]), lat(m, I["eps"]), lat(m, I["cond"])
    s = torch.from_numpy(I["sigma"]).to(m.dtype)[:, None, None, None]
    z = (1 - s) * x0 + s * eps
    v = m.dit(z, cond, [float(x) for x in I["sigma"]], PROMPT, list(range(T)), K)
    return ((v - (eps - x0)) ** 2).mean()

def tae_loss(m, I):
    x = torch.from_numpy(I["tae/img"]).to(m.dtype)  # (H, W, 3)
    r = m.decode(m.encode_x(x.permute(2, 0, 1)[None]))[0]
    return (r - x).abs().mean() + ((r - x) ** 2).mean()

HF = 0.5  # --hf-loss of the "taehf/" entries

def lap(a):  # the 4-neighbour Laplacian of an (H, W, C) map over its interior (tae_lap_diff)
    return 4 * a[1:-1, 1:-1] - a[:-2, 1:-1] - a[2:, 1:-1] - a[1:-1, :-2] - a[1:-1, 2:]

def tae_hf_loss(m, I):
    x = torch.from_numpy(I["tae/img"]).to(m.dtype)
    r = m.decode(m.encode_x(x.permute(2, 0, 1)[None]))[0]
    return (r - x).abs().mean() + ((r - x) ** 2).mean() + HF * ((lap(r) - lap(x)) ** 2).mean()

def trainable(cfg, W, dtype, names):
    """A Mirage whose tensors `names` require grad; its own copy of W (float32 tensors made by
    torch.as_tensor would share memory with the arrays, and the optimizer writes in place)."""
    m = M.Mirage(cfg, {n: w.copy() for n, w in W.items()}, dtype)
    for n in names:
        m.W[n].requires_grad_(True)
    return m

def grads(m, names, I, loss_fn):
    loss = loss_fn(m, I)
    loss.backward()
    return loss.item(), {n: m.W[n].grad.detach().clone() for n in names}

def adamw_losses(m, names, I, loss_fn):
    params = [m.W[n] for n in names]
    decay = [m.W[n] for n in names if m.W[n].dim() >= 2]
    no_decay = [m.W[n] for n in names if m.W[n].dim() < 2]
    opt = torch.optim.AdamW([{"params": decay}, {"params": no_decay, "weight_decay": 0.0}], **ADAM)
    losses, norms = [], []
    for _ in range(STEPS):
        opt.zero_grad(set_to_none=False)
        loss = loss_fn(m, I)
        loss.backward()
        norms.append(torch.nn.utils.clip_grad_norm_(params, CLIP).item())
        opt.step()
        losses.append(loss.item())
    return losses, norms

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="tests/data/grads_tiny.safetensors")
    args = ap.parse_args()
    torch.set_num_threads(1)  # one summation order, so the file is reproducible
    cfg = M.config("tiny")
    W = M.init_weights(cfg, 1, True)
    I = make_inputs()
    tensors = dict(I)
    f32 = lambda t: t.detach().numpy().astype(np.float32)
    shapes = [n for n, _, _ in M.tensor_shapes(cfg)]
    for tag, prefix, loss_fn, full in (("DiT", "", dit_loss, FULL), ("TAE", "tae/", tae_loss, TAE_FULL),
                                       ("TAE+HF", "taehf/", tae_hf_loss, TAE_FULL)):
        names = [n for n in shapes if n.startswith("dit.") == (tag == "DiT")]
        loss, G = grads(trainable(cfg, W, torch.float64, names), names, I, loss_fn)
        # what a correct fp32 implementation should see: the same oracle in float32
        loss32, G32 = grads(trainable(cfg, W, torch.float32, names), names, I, loss_fn)
        worst = max(((G32[n].double() - G[n]).norm() / G[n].norm()).item() for n in names)
        print(f"{tag}: loss {loss:.9g} (float32 oracle: rel err {abs(loss32 - loss) / loss:.2g}); worst "
              f"per-tensor |g32 - g64| / |g64| over {len(names)} tensors: {worst:.2g}")
        losses, norms = adamw_losses(trainable(cfg, W, torch.float64, names), names, I, loss_fn)
        losses32, _ = adamw_losses(trainable(cfg, W, torch.float32, names), names, I, loss_fn)
        print(f"{tag}: AdamW losses", " ".join(f"{x:.6f}" for x in losses))
        print(f"{tag}: grad norms  ", " ".join(f"{x:.4f}" for x in norms), f"(clipped at {CLIP})")
        print(f"{tag}: AdamW losses, float32 oracle: max rel err "
              f"{max(abs(a - b) / b for a, b in zip(losses32, losses)):.2g}")
        assert losses[-1] < losses[0], "10 AdamW steps on one input should lower its loss"
        tensors[prefix + "loss"] = np.array([loss], np.float32)
        for n in full:
            tensors[f"{prefix}grad/{n}"] = f32(G[n])
        tensors[prefix + "grad_norms"] = np.array([G[n].norm().item() for n in names], np.float32)
        tensors[prefix + "adamw_losses"] = np.array(losses, np.float32)
        tensors[prefix + "adamw_grad_norms"] = np.array(norms, np.float32)
    dit_names = [n for n in shapes if n.startswith("dit.")]
    meta = {"format": "mirage-grads", "grads_version": "1", "command": shlex.join([sys.executable] + sys.argv),
            "config": "tiny", "weights_seed": "1", "weights_full_random": "1",
            "grad_norms_first": dit_names[0], "grad_norms_count": str(len(dit_names)),
            "tae/grad_norms_first": shapes[0], "tae/grad_norms_count": str(len(shapes) - len(dit_names)),
            "taehf/grad_norms_first": shapes[0], "taehf/grad_norms_count": str(len(shapes) - len(dit_names)),
            "taehf/hf": M._fmt(HF),
            "adamw_lr": M._fmt(ADAM["lr"]), "adamw_beta1": M._fmt(ADAM["betas"][0]),
            "adamw_beta2": M._fmt(ADAM["betas"][1]), "adamw_eps": M._fmt(ADAM["eps"]),
            "adamw_weight_decay": M._fmt(ADAM["weight_decay"]), "adamw_clip": M._fmt(CLIP),
            "adamw_steps": str(STEPS)}
    st.write(args.out, tensors, meta)
    print(f"wrote {args.out}: {len(tensors)} tensors, {os.path.getsize(args.out)} bytes")

if __name__ == "__main__":
    main()
