# The mirage model in PyTorch, written straight from docs/ARCHITECTURE.md: the oracle that the
# C engine is tested against. Runs in float64 on torch 1.13 CPU (golden files) and in bf16 on
# torch 2.x CUDA (bench). Conventions at the API:
#   pixels   u8 (T, H, W, 3) in, float (T, H, W, 3) out (HWC, like the C side)
#   latents  (T, Z, H/8, W/8) torch tensors (NCHW, so the convs are plain F.conv2d)
#   weights  {name: tensor} in PyTorch layouts, named exactly as in the weights file
# Init: python3 ref/model.py init CONFIG OUT.safetensors [--seed N] [--full-random]
import math, os, sys
import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import st

PROMPTS = ["none", "colorize", "upscale", "restore", "style:toon", "style:sketch",
           "style:thermal", "dream"]
CONFIGS = {"tiny": (32, 192, 6, 3), "s": (64, 384, 12, 6), "b": (64, 768, 12, 12),
           "1b": (64, 2048, 20, 16)}  # name: (tae_ch, d, layers, heads)
INTS = ["tae_ch", "z_ch", "d", "layers", "heads", "patch", "ring"]
FLOATS = ["sigma_ctx", "shift", "rope_theta"]

def config(name):
    c, d, L, h = CONFIGS[name]
    return dict(config=name, tae_ch=c, z_ch=4, d=d, layers=L, heads=h, patch=2, ring=3,
                sigma_ctx=0.05, shift=1.0, rope_theta=10000.0, prompts=list(PROMPTS))

def tensor_shapes(cfg):
    """[(name, shape, fan_in)] in file order; fan_in sets the init bound (None: prompt rows)."""
    c, Z, d, p = cfg["tae_ch"], cfg["z_ch"], cfg["d"], cfg["patch"]
    out = []
    def conv(name, ci, co, bias=True):
        out.append((name + ".weight", (co, ci, 3, 3), ci * 9))
        if bias:
            out.append((name + ".bias", (co,), ci * 9))
    def block(name):
        for k in ("c1", "c2", "c3"):
            conv(f"{name}.{k}", c, c)
    def linear(name, i, o):
        out.append((name + ".weight", (o, i), i))
        out.append((name + ".bias", (o,), i))
    conv("enc.in", 3, c)
    block("enc.b0")
    for s in (1, 2, 3):
        conv(f"enc.down{s}", c, c, bias=False)
        for b in range(3 * s - 2, 3 * s + 1):
            block(f"enc.b{b}")
    conv("enc.out", c, Z)
    conv("dec.in", Z, c)
    for b in range(3):
        block(f"dec.b{b}")
    for s in (1, 2, 3):
        conv(f"dec.up{s}", c, c, bias=False)
        for b in range(3 * s, min(3 * s + 3, 10)):
            block(f"dec.b{b}")
    conv("dec.out", c, 3)
    linear("dit.in", 2 * Z * p * p, d)
    linear("dit.t1", 256, d)
    linear("dit.t2", d, d)
    out.append(("dit.prompt", (len(cfg["prompts"]), d), None))
    for i in range(cfg["layers"]):
        b = f"dit.blocks.{i}."
        linear(b + "ada", d, 6 * d)
        linear(b + "qkv", d, 3 * d)
        linear(b + "proj", d, d)
        linear(b + "fc1", d, 4 * d)
        linear(b + "fc2", 4 * d, d)
    linear("dit.final.ada", d, 2 * d)
    linear("dit.final.out", d, Z * p * p)
    return out

# ----------------------------------------------------------------------------------------
# deterministic init: xoshiro256** seeded per tensor by splitmix64(seed ^ fnv1a64(name))

M64 = (1 << 64) - 1

def splitmix64(state):
    """Returns (new state, output), as mg_splitmix64."""
    state = (state + 0x9E3779B97F4A7C15) & M64
    z = ((state ^ (state >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return state, z ^ (z >> 31)

def fnv1a64(data):
    h = 0xcbf29ce484222325
    for byte in data:
        h = ((h ^ byte) * 0x100000001b3) & M64
    return h

def rng_seed(seed):
    s = []
    for _ in range(4):
        seed, x = splitmix64(seed)
        s.append(x)
    return s

def rotl(x, k):
    return ((x << k) | (x >> (64 - k))) & M64

def xoshiro_next(s):
    """One xoshiro256** step on s = [s0, s1, s2, s3], Python ints or numpy uint64 lanes."""
    s0, s1, s2, s3 = s
    result = (rotl((s1 * 5) & M64, 7) * 9) & M64
    t = (s1 << 17) & M64
    s2 ^= s0; s3 ^= s1; s1 ^= s2; s0 ^= s3; s2 ^= t; s3 = rotl(s3, 45)
    s[:] = [s0, s1, s2, s3]
    return result

def rng_outputs_exact(seed, n):
    """The first n outputs of mg_rng_seed(seed), one Python-int step at a time."""
    s = rng_seed(seed)
    return np.array([xoshiro_next(s) for _ in range(n)], np.uint64)

def _bits(s):
    return np.array([(w >> i) & 1 for w in s for i in range(64)], np.float32)

_JUMPS = []  # A^(2^k) over GF(2), A the xoshiro state update (linear: xors, shifts, rotations)

def _jump(k):
    if not _JUMPS:
        cols = []
        for b in range(256):  # column b: the step applied to state bit b
            s = [0, 0, 0, 0]
            s[b // 64] = 1 << (b % 64)
            xoshiro_next(s)
            cols.append(_bits(s))
        _JUMPS.append(np.stack(cols, 1))
    while len(_JUMPS) <= k:
        _JUMPS.append(_JUMPS[-1] @ _JUMPS[-1] % 2)  # float32 sums of <= 256 ones are exact
    return _JUMPS[k]

def rng_outputs(seed, n):
    """Same values as rng_outputs_exact, fast: P lanes of m = 2^k outputs run in lockstep
    with numpy, lane l starting at output l*m, its state reached with the jump matrices."""
    k = max(0, n.bit_length() // 2 - 2)  # m ~ sqrt(n)/4
    m = 1 << k
    P = -(-n // m)
    V = _bits(rng_seed(seed))[:, None]  # column l: the state of lane l
    while V.shape[1] < P:
        V = np.concatenate([V, _jump(k) @ V % 2], 1)
        k += 1
    V = V[:, :P].T.reshape(P, 4, 64).astype(np.uint64)
    words = (V << np.arange(64, dtype=np.uint64)).sum(-1, dtype=np.uint64)  # (P, 4)
    s = [np.ascontiguousarray(words[:, i]) for i in range(4)]
    out = np.empty((m, P), np.uint64)
    for j in range(m):
        out[j] = xoshiro_next(s)
    return out.T.reshape(-1)[:n]

def init_weights(cfg, seed, full_random, exact=False):
    """{name: float32 array}, bit-identical to `mirage init` (docs/ARCHITECTURE.md)."""
    W = {}
    for name, shape, fan_in in tensor_shapes(cfg):
        if not full_random and (".ada." in name or name.startswith("dit.final.")):
            W[name] = np.zeros(shape, np.float32)  # adaLN-zero
            continue
        if fan_in is None:
            bound = np.float32(0.02) * np.sqrt(np.float32(3))
        else:
            bound = np.float32(1) / np.sqrt(np.float32(fan_in))
        x = (rng_outputs_exact if exact else rng_outputs)(seed ^ fnv1a64(name.encode()), math.prod(shape))
        u = (x >> np.uint64(40)).astype(np.float32) * np.float32(2.0 ** -24)
        W[name] = ((np.float32(2) * u - np.float32(1)) * bound).reshape(shape)
    return W

# ----------------------------------------------------------------------------------------
# weights file

def _fmt(x):
    s = repr(float(x))
    return s[:-2] if s.endswith(".0") else s

def save(path, cfg, W):
    meta = dict(format="mirage", format_version="1", config=cfg["config"])
    meta.update({k: str(cfg[k]) for k in INTS})
    meta.update({k: _fmt(cfg[k]) for k in FLOATS})
    meta["prompts"] = ",".join(cfg["prompts"])
    st.write(path, {n: np.asarray(W[n], np.float32) for n, _, _ in tensor_shapes(cfg)}, meta)

def load(path):
    """(cfg, {name: float32 array}); checks every tensor of the spec's table and no others."""
    W, meta = st.read(path)
    assert meta.get("format") == "mirage" and meta.get("format_version") == "1", f"{path}: not a mirage v1 file"
    cfg = dict(config=meta["config"], prompts=meta["prompts"].split(","))
    cfg.update({k: int(meta[k]) for k in INTS})
    cfg.update({k: float(meta[k]) for k in FLOATS})
    want = {n: s for n, s, _ in tensor_shapes(cfg)}
    assert set(W) == set(want), f"{path}: missing {set(want) - set(W)}, extra {set(W) - set(want)}"
    for n, s in want.items():
        assert W[n].shape == s, f"{path}: tensor {n}: expected {s}, found {W[n].shape}"
    return cfg, {n: W[n].astype(np.float32) for n in want}

def sigmas(steps, shift):
    s = [1 - i / steps for i in range(steps + 1)]
    return [shift * x / (1 + (shift - 1) * x) for x in s]

# ----------------------------------------------------------------------------------------
# the model

def layernorm(x):
    return F.layer_norm(x, x.shape[-1:], eps=1e-5)  # no affine, biased variance

def rope(x, cos, sin):
    """x (T, N, h, dh); pair j rotates elements (2j, 2j+1); cos, sin (T, N, 1, dh/2)."""
    x0, x1 = x[..., 0::2], x[..., 1::2]
    return torch.stack([x0 * cos - x1 * sin, x0 * sin + x1 * cos], -1).flatten(-2)

class Ring:
    """The KV ring: per layer the (k, v) of the last K frames (after RoPE), frame f in slot
    f mod K. `kv` holds the slots concatenated (h, K*N, dh) per layer, or None when empty."""
    def __init__(self, K):
        self.K, self.slots, self.kv = K, {}, None
    def push(self, kvs, f):
        if self.K == 0:
            return
        self.slots[f % self.K] = [(k.clone(), v.clone()) for k, v in kvs]
        frames = [self.slots[i] for i in sorted(self.slots)]
        self.kv = [(torch.cat([fr[l][0] for fr in frames], 1), torch.cat([fr[l][1] for fr in frames], 1))
                   for l in range(len(kvs))]

class Mirage:
    def __init__(self, cfg, W, dtype=torch.float64, device="cpu", fast=False):
        self.cfg, self.dtype, self.device = cfg, dtype, device
        self.fast = fast and hasattr(F, "scaled_dot_product_attention")  # never for golden files
        self.W = {n: torch.as_tensor(w).to(device, dtype) for n, w in W.items()}
        self.prompts = cfg["prompts"]

    def params(self):
        return sum(w.numel() for w in self.W.values())

    def conv(self, x, name, stride=1):
        return F.conv2d(x, self.W[name + ".weight"], self.W.get(name + ".bias"), stride, 1)

    def block(self, x, name):
        y = F.relu(self.conv(x, name + ".c1"))
        y = F.relu(self.conv(y, name + ".c2"))
        return F.relu(self.conv(y, name + ".c3") + x)

    def linear(self, x, name):
        return F.linear(x, self.W[name + ".weight"], self.W[name + ".bias"])

    def encode(self, frames):
        """u8 (T, H, W, 3) or (H, W, 3) -> latent (T, Z, H/8, W/8)."""
        x = torch.as_tensor(frames).to(self.device)
        x = (x[None] if x.dim() == 3 else x).permute(0, 3, 1, 2).to(self.dtype) / 255
        return self.encode_x(x)

    def encode_x(self, x):
        """pixels (T, 3, H, W) in [0,1], the model's dtype -> latent (T, Z, H/8, W/8)."""
        x = self.block(self.conv(x, "enc.in"), "enc.b0")
        for s in (1, 2, 3):
            x = self.conv(x, f"enc.down{s}", 2)
            for b in range(3 * s - 2, 3 * s + 1):
                x = self.block(x, f"enc.b{b}")
        return self.conv(x, "enc.out")

    def decode(self, z):
        """latent (T, Z, h, w) -> image (T, 8h, 8w, 3), unclamped."""
        x = F.relu(self.conv(z, "dec.in"))
        for b in range(3):
            x = self.block(x, f"dec.b{b}")
        for s in (1, 2, 3):
            x = self.conv(F.interpolate(x, scale_factor=2, mode="nearest"), f"dec.up{s}")
            for b in range(3 * s, min(3 * s + 3, 10)):
                x = self.block(x, f"dec.b{b}")
        return self.conv(x, "dec.out").permute(0, 2, 3, 1)

    def cond_vec(self, sigma, prompt):
        """c = t2(silu(t1(temb(sigma)))) + prompt[k], one row per frame: (T, d)."""
        j = torch.arange(128, dtype=torch.float64)
        a = torch.tensor(sigma, dtype=torch.float64)[:, None] * 1000 * torch.exp(-math.log(10000) * j / 128)
        # made on the CPU in float64; non_blocking: no stream sync on CUDA (the bench)
        temb = torch.cat([a.cos(), a.sin()], 1).to(self.device, self.dtype, non_blocking=True)  # cos first
        return self.linear(F.silu(self.linear(temb, "dit.t1")), "dit.t2") + self.W["dit.prompt"][prompt]

    def rope_tables(self, pos, th, tw):
        """cos, sin (T, N, 1, dh/2): pairs [0,nt) turn with the frame index, then ny pairs
        with the token row, nx with the column; angles in float64, reduced mod 2pi."""
        npairs = self.cfg["d"] // self.cfg["heads"] // 2
        nt = npairs // 4
        ny = (npairs - nt) // 2
        nx = npairs - nt - ny
        T, N = len(pos), th * tw
        om = lambda n: self.cfg["rope_theta"] ** (-np.arange(n) / n)
        f = np.asarray(pos, np.float64)[:, None, None]
        ty = np.repeat(np.arange(th), tw).astype(np.float64)[None, :, None]
        tx = np.tile(np.arange(tw), th).astype(np.float64)[None, :, None]
        ang = np.concatenate([np.broadcast_to(f * om(nt), (T, N, nt)), np.broadcast_to(ty * om(ny), (T, N, ny)),
                              np.broadcast_to(tx * om(nx), (T, N, nx))], -1)
        ang = np.fmod(ang, 2 * math.pi)
        cs = torch.from_numpy(np.stack([np.cos(ang), np.sin(ang)])[:, :, :, None])
        cs = cs.to(self.device, self.dtype, non_blocking=True)
        return cs[0], cs[1]

    def attention(self, q, k, v, mask):
        """q (h, M, dh), k, v (h, Mk, dh), mask (M, Mk) bool (True: visible) or None."""
        if self.fast:
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        s = q @ k.transpose(1, 2) / math.sqrt(q.shape[-1])
        if mask is not None:
            s = s.masked_fill(~mask, float("-inf"))
        acc = torch.float64 if q.dtype == torch.float64 else torch.float32
        return torch.softmax(s, -1, dtype=acc).to(v.dtype) @ v

    def dit(self, z, cond, sigma, prompt, pos, K, ring=None, refresh=False, trace=None):
        """Velocity (T, Z, h, w) for latents z and encoded frames cond (T, Z, h, w) at noise
        levels sigma[t] (floats) and absolute frame indices pos[t], prompt row `prompt`.
        ring None: the block-causal parallel forward, frame t sees frames max(0,t-K)..t of the
        clip. ring given (T = 1): the frame sees the ring and itself, and (v, [(k, v)] per
        layer) is returned; with refresh=True only the per-layer (k, v)."""
        c = self.cond_vec(sigma, prompt)
        p = self.cfg["patch"]
        cos, sin = self.rope_tables(pos, z.shape[2] // p, z.shape[3] // p)
        if trace is not None:
            trace["c"] = c
        return self.dit_core(z, cond, c, cos, sin, K, None if ring is None else (ring.kv or []), refresh, trace)

    def dit_core(self, z, cond, c, cos, sin, K, hist, refresh=False, trace=None):
        # tensors in, tensors out: this is what bench_torch.py hands to torch.compile
        T, Z, H, W = z.shape
        p, d, nh, L = self.cfg["patch"], self.cfg["d"], self.cfg["heads"], self.cfg["layers"]
        dh, th, tw = d // nh, H // p, W // p
        N = th * tw
        # patchify: feature ch*p*p + py*p + px of token (ty, tx); z channels first, then cond
        x = torch.cat([z, cond], 1).reshape(T, 2 * Z, th, p, tw, p).permute(0, 2, 4, 1, 3, 5)
        x = self.linear(x.reshape(T, N, 2 * Z * p * p), "dit.in")  # (T, N, d)
        if trace is not None:
            trace["x.in"] = x
        sc = F.silu(c)[:, None]  # (T, 1, d)
        mask = None
        if hist is None:  # block-causal with window K over the clip
            f = torch.arange(T, device=z.device).repeat_interleave(N)
            mask = (f[None, :] <= f[:, None]) & (f[None, :] >= f[:, None] - K)
        kvs = []
        for l in range(L):
            b = f"dit.blocks.{l}."
            sh1, sc1, g1, sh2, sc2, g2 = self.linear(sc, b + "ada").chunk(6, -1)
            y = layernorm(x) * (1 + sc1) + sh1
            q, k, v = self.linear(y, b + "qkv").reshape(T, N, 3, nh, dh).unbind(2)
            q, k = rope(q, cos, sin), rope(k, cos, sin)
            q, k, v = (t.reshape(T * N, nh, dh).transpose(0, 1) for t in (q, k, v))  # (h, T*N, dh)
            if hist is not None:
                kvs.append((k, v))
                if refresh and l == L - 1:
                    return kvs  # the refresh keeps only k, v: the rest of the pass is unused
                if hist:
                    k, v = torch.cat([hist[l][0], k], 1), torch.cat([hist[l][1], v], 1)
            a = self.attention(q, k, v, mask).transpose(0, 1).reshape(T, N, d)
            x = x + g1 * self.linear(a, b + "proj")
            y = layernorm(x) * (1 + sc2) + sh2
            x = x + g2 * self.linear(F.gelu(self.linear(y, b + "fc1"), approximate="tanh"), b + "fc2")
            if trace is not None:
                trace[f"x.{l}"] = x
        sh, scale = self.linear(sc, "dit.final.ada").chunk(2, -1)
        x = self.linear(layernorm(x) * (1 + scale) + sh, "dit.final.out")  # (T, N, Z*p*p)
        v = x.reshape(T, th, tw, Z, p, p).permute(0, 3, 1, 4, 2, 5).reshape(T, Z, H, W)
        return v if hist is None else (v, kvs)

class Stream:
    """One stream, frame by frame: the spec's "One frame" procedure, noise passed in."""
    def __init__(self, model, steps, K=None, prompt=1, guidance=1.0):
        self.m, self.steps, self.g = model, steps, guidance
        self.K = model.cfg["ring"] if K is None else K
        self.prompt = prompt if isinstance(prompt, int) else model.prompts.index(prompt)
        self.sig = sigmas(steps, model.cfg["shift"])
        self.ring, self.f = Ring(self.K), 0

    def velocity(self, z, cond, sigma):
        m, pos = self.m, [self.f]
        v, _ = m.dit(z, cond, [sigma], self.prompt, pos, self.K, self.ring)
        if self.g != 1:  # CFG: the unconditional pass uses row 0 and sees the same ring
            vu, _ = m.dit(z, cond, [sigma], 0, pos, self.K, self.ring)
            v = vu + self.g * (v - vu)
        return v

    def step(self, frame, noise, ctx_noise, tick=lambda name: None):
        """frame u8 (H, W, 3); noise, ctx_noise (1, Z, h, w). Returns (image (1, H, W, 3), z)."""
        m = self.m
        if m.prompts[self.prompt] == "dream":
            cond = torch.zeros_like(noise)  # dream: the input is dropped
        else:
            cond = m.encode(frame)
        tick("encode")
        z = noise
        for i in range(self.steps):
            z = z + (self.sig[i + 1] - self.sig[i]) * self.velocity(z, cond, self.sig[i])
            tick(f"step{i}")
        # KV refresh at the context level, with the conditional prompt, ring visible
        s = m.cfg["sigma_ctx"]
        zc = (1 - s) * z + s * ctx_noise
        kvs = m.dit(zc, cond, [s], self.prompt, [self.f], self.K, self.ring, refresh=True)
        self.ring.push(kvs, self.f)
        self.f += 1
        tick("refresh")
        out = m.decode(z)
        tick("decode")
        return out, z

if __name__ == "__main__":
    import argparse
    ap = argparse.ArgumentParser(description="write freshly initialised weights (like `mirage init`)")
    ap.add_argument("cmd", choices=["init"])
    ap.add_argument("config", choices=list(CONFIGS))
    ap.add_argument("out")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--full-random", action="store_true")
    a = ap.parse_args()
    cfg = config(a.config)
    save(a.out, cfg, init_weights(cfg, a.seed, a.full_random))
    print(f"wrote {a.out}: {a.config}, seed {a.seed}, full_random {int(a.full_random)}")
