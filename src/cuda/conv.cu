/* 3x3 convolution, pad 1, stride 1 or 2, HWC bf16: the autoencoder.
 *
 * The wide layers (c -> c, c = 32 or 64) run as an implicit GEMM on the tensor cores:
 *     out (pixels, Co) = patches (pixels, 9*Ci) @ wt^T (9*Ci, Co)
 * where the patch matrix is never written: each k-block of 32 columns lies inside one tap
 * (Ci % 32 == 0), so a row's 32 values are 64 contiguous bytes of the HWC input, fetched with
 * 16-byte cp.async straight into shared memory (zero-filled outside the image: that is the
 * padding). Why implicit GEMM rather than im2col + cuBLASLt: at 512x512x64 an im2col matrix
 * is 302 MB per conv, written and read back — ~0.2 ms of pure traffic per layer on an H100,
 * more than the conv's arithmetic (4.8 GFLOP, ~10 us at tensor-core rate); gathering on the
 * fly costs nothing extra. The nearest 2x upsample before the decoder's up-convs is fused
 * into the gather (read pixel (y/2, x/2)), and the epilogue adds bias, the Block's residual
 * and the ReLU, so a Block is three launches and no element-wise passes.
 *
 * Tile: 128 output pixels x BN channels per block of 4 warps; each warp 32 pixels x BN,
 * mma.sync m16n8k16 (bf16 in, fp32 accumulate); k-blocks of 32 double-buffered in shared
 * memory. dev/cuda/conv3x3.cu times it against the card's peaks.
 *
 * The thin layers (3 or 4 channels in or out: enc.in, enc.out, dec.in, dec.out) would waste
 * a tensor-core tile; they run as a direct convolution in fp32, one thread per output pixel
 * and 8 output channels, weights in shared memory, reading u8 / fp32 / bf16 and writing any
 * of them (u8 in = x/255, u8 out = clamp and round: the frame conversions fused). */
#include <cooperative_groups.h>
#include <type_traits>

#include "cuda/cuda_common.h"

namespace cg = cooperative_groups;

#define CV_BK 32
#define CV_LD (CV_BK + 8) /* shared row stride (bf16): 80 bytes, conflict-free fragment reads */

/* one element of a frame or feature map: u8 (x/255, and clamp-round back), fp32 or bf16 */
__device__ __forceinline__ float ld_px(const uint8_t *p, size_t i) { return (float)p[i] / 255.0f; }
__device__ __forceinline__ float ld_px(const float *p, size_t i) { return p[i]; }
__device__ __forceinline__ float ld_px(const bf16 *p, size_t i) { return bf2f(p[i]); }
__device__ __forceinline__ void st_px(uint8_t *p, size_t i, float v) { p[i] = to_u8(v); }
__device__ __forceinline__ void st_px(float *p, size_t i, float v) { p[i] = v; }
__device__ __forceinline__ void st_px(bf16 *p, size_t i, float v) { p[i] = f2bf(v); }

/* A block tile of BM pixels x BN channels; 4 warps as WM x WN, each MT m-tiles x NT n-tiles;
 * NS k-blocks in flight (cp.async multistage pipeline). */
template <int BM, int BN, int WM, int WN, int NS> struct conv_cfg {
    static const int MT = BM / (WM * 16), NT = BN / (WN * 8);
};

template <int BM, int BN, int NS> struct conv_smem {
    bf16 a[NS][BM][CV_LD];
    bf16 b[NS][BN][CV_LD];
};

template <int BM, int BN, int NS>
__device__ __forceinline__ void conv_load(conv_smem<BM, BN, NS> &sm, int buf, int kb, const bf16 *in, const bf16 *wt,
                                          const int *a_oy, const int *a_ox, const bool *a_ok, int tid, int H,
                                          int W, int Ci, int Co, int stride, int up, int co0) {
    int k0 = kb * CV_BK, tap = k0 / Ci, ky = tap / 3, kx = tap % 3, K = 9 * Ci;
    int c8 = (tid & 3) * 8, ci = k0 % Ci + c8, Ws = up ? W >> 1 : W;
#pragma unroll
    for (int i = 0; i < BM / 32; i++) {
        int r = (tid >> 2) + 32 * i;
        int iy = a_oy[i] * stride - 1 + ky, ix = a_ox[i] * stride - 1 + kx;
        bool ok = a_ok[i] && iy >= 0 && iy < H && ix >= 0 && ix < W;
        const bf16 *src = in;
        if (ok) src = in + ((size_t)(up ? (iy >> 1) * Ws + (ix >> 1) : iy * W + ix)) * Ci + ci;
        cp_async16(&sm.a[buf][r][c8], src, ok);
    }
#pragma unroll
    for (int j = 0; j < BN * 4 / 128; j++) {
        int idx = tid + 128 * j, r = idx >> 2, c = (idx & 3) * 8, co = co0 + r;
        bool ok = co < Co;
        cp_async16(&sm.b[buf][r][c], ok ? wt + (size_t)co * K + k0 + c : wt, ok);
    }
}

/* out[p, col..col+1] = act(v + bias + res), the epilogue of both forms below */
__device__ __forceinline__ void conv_store(bf16 *out, const float *bias, const bf16 *res, int relu, int p, int col,
                                           int Co, float v0, float v1) {
    size_t o = (size_t)p * Co + col;
    if (bias) v0 += bias[col], v1 += bias[col + 1];
    if (res) {
        float2 r = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162 *>(res + o));
        v0 += r.x, v1 += r.y;
    }
    if (relu) v0 = fmaxf(v0, 0.0f), v1 = fmaxf(v1, 0.0f);
    *reinterpret_cast<__nv_bfloat162 *>(out + o) = __floats2bfloat162_rn(v0, v1);
}

/* SPLIT (version 4, small images): gridDim.z blocks of a cluster each take 1/gridDim.z of
 * the k-blocks of the same tile; the partial tiles meet in distributed shared memory and
 * each block of the cluster sums its share of the tile over the ranks in rank order
 * (deterministic) and runs the epilogue on it. At 32x32 a conv is 32 tiles walking 18
 * k-blocks one after the other; split 6 ways it is 192 blocks of 3. */
template <int BM, int BN, int WM, int WN, int NS, bool LDM, bool SPLIT = false>
__global__ void __launch_bounds__(128) conv_igemm_kernel(bf16 *out, const bf16 *in, const bf16 *wt, const float *bias,
                                                         const bf16 *res, int H, int W, int Ci, int Co, int stride,
                                                         int up, int relu) {
    const int MT = conv_cfg<BM, BN, WM, WN, NS>::MT, NT = conv_cfg<BM, BN, WM, WN, NS>::NT;
    __shared__ __align__(16) conv_smem<BM, BN, NS> sm;
    pdl_wait();
    pdl_trigger();
    int Ho = stride == 2 ? (H + 1) / 2 : H, Wo = stride == 2 ? (W + 1) / 2 : W, npix = Ho * Wo;
    int p0 = blockIdx.x * BM, co0 = blockIdx.y * BN;
    int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t = lane & 3;
    int wm = warp / WN, wn = warp % WN, nk = 9 * Ci / CV_BK / (int)gridDim.z, kb0 = (int)blockIdx.z * nk;
    int a_oy[BM / 32], a_ox[BM / 32];
    bool a_ok[BM / 32];
#pragma unroll
    for (int i = 0; i < BM / 32; i++) {
        int p = p0 + (tid >> 2) + 32 * i;
        a_ok[i] = p < npix;
        a_oy[i] = p / Wo, a_ox[i] = p % Wo;
    }
    float acc[MT][NT][4];
#pragma unroll
    for (int mt = 0; mt < MT; mt++)
#pragma unroll
        for (int nt = 0; nt < NT; nt++) acc[mt][nt][0] = acc[mt][nt][1] = acc[mt][nt][2] = acc[mt][nt][3] = 0.0f;

    /* prologue: NS-1 k-blocks in flight (a group is committed even when empty, so that
     * "all but NS-2 groups done" always means "k-block kb has landed") */
#pragma unroll
    for (int s = 0; s < NS - 1; s++) {
        if (s < nk) conv_load<BM, BN, NS>(sm, s, kb0 + s, in, wt, a_oy, a_ox, a_ok, tid, H, W, Ci, Co, stride, up, co0);
        cp_async_commit();
    }
    for (int kb = 0; kb < nk; kb++) {
        cp_async_wait<NS - 2>();
        __syncthreads(); /* k-block kb visible to all; everyone is done with kb-1's buffer */
        int nxt = kb + NS - 1;
        if (nxt < nk)
            conv_load<BM, BN, NS>(sm, nxt % NS, kb0 + nxt, in, wt, a_oy, a_ox, a_ok, tid, H, W, Ci, Co, stride, up, co0);
        cp_async_commit();
        int buf = kb % NS;
#pragma unroll
        for (int ks = 0; ks < CV_BK; ks += 16) {
            uint32_t a[MT][4], b[NT][2];
            if (LDM) { /* one ldmatrix.x4 per A fragment and per two B fragments */
                const int mi = lane >> 3, lr = lane & 7;
#pragma unroll
                for (int mt = 0; mt < MT; mt++) /* matrices: rows +0/+8 (i&1), k +0/+8 (i>>1) */
                    ldmatrix_x4(a[mt], &sm.a[buf][(wm * MT + mt) * 16 + (mi & 1) * 8 + lr][ks + (mi >> 1) * 8]);
#pragma unroll
                for (int nt = 0; nt < NT; nt += 2) { /* matrices: k +0/+8 (i&1), n-tile +0/+1 (i>>1) */
                    if (nt + 1 < NT) {
                        uint32_t r[4];
                        ldmatrix_x4(r, &sm.b[buf][(wn * NT + nt) * 8 + (mi >> 1) * 8 + lr][ks + (mi & 1) * 8]);
                        b[nt][0] = r[0], b[nt][1] = r[1], b[nt + 1][0] = r[2], b[nt + 1][1] = r[3];
                    } else {
                        int nb = (wn * NT + nt) * 8;
                        b[nt][0] = *reinterpret_cast<const uint32_t *>(&sm.b[buf][nb + g][ks + 2 * t]);
                        b[nt][1] = *reinterpret_cast<const uint32_t *>(&sm.b[buf][nb + g][ks + 2 * t + 8]);
                    }
                }
            } else {
#pragma unroll
                for (int mt = 0; mt < MT; mt++) {
                    int rb = (wm * MT + mt) * 16;
                    a[mt][0] = *reinterpret_cast<const uint32_t *>(&sm.a[buf][rb + g][ks + 2 * t]);
                    a[mt][1] = *reinterpret_cast<const uint32_t *>(&sm.a[buf][rb + g + 8][ks + 2 * t]);
                    a[mt][2] = *reinterpret_cast<const uint32_t *>(&sm.a[buf][rb + g][ks + 2 * t + 8]);
                    a[mt][3] = *reinterpret_cast<const uint32_t *>(&sm.a[buf][rb + g + 8][ks + 2 * t + 8]);
                }
#pragma unroll
                for (int nt = 0; nt < NT; nt++) {
                    int nb = (wn * NT + nt) * 8;
                    b[nt][0] = *reinterpret_cast<const uint32_t *>(&sm.b[buf][nb + g][ks + 2 * t]);
                    b[nt][1] = *reinterpret_cast<const uint32_t *>(&sm.b[buf][nb + g][ks + 2 * t + 8]);
                }
            }
#pragma unroll
            for (int mt = 0; mt < MT; mt++)
#pragma unroll
                for (int nt = 0; nt < NT; nt++) mma_bf16_16816(acc[mt][nt], a[mt], b[nt]);
        }
    }
    cp_async_wait<0>();
    if constexpr (SPLIT) {
        constexpr int RLD = BN + 4; /* floats */
        static_assert(sizeof(conv_smem<BM, BN, NS>) >= (size_t)BM * RLD * 4, "reduction tile");
        float *red = reinterpret_cast<float *>(&sm);
        __syncthreads(); /* every warp is done reading the pipeline buffers */
#pragma unroll
        for (int mt = 0; mt < MT; mt++)
#pragma unroll
            for (int nt = 0; nt < NT; nt++)
#pragma unroll
                for (int half = 0; half < 2; half++) {
                    int rl = (wm * MT + mt) * 16 + g + 8 * half, cl = (wn * NT + nt) * 8 + 2 * t;
                    *reinterpret_cast<float2 *>(red + rl * RLD + cl) =
                        make_float2(acc[mt][nt][2 * half], acc[mt][nt][2 * half + 1]);
                }
        cg::cluster_group cluster = cg::this_cluster();
        cluster.sync();
        const int S = (int)gridDim.z, rank = (int)cluster.block_rank(), total = BM * BN / 2;
        const int chunk = (total + S - 1) / S, lo = rank * chunk, hi = min(total, lo + chunk);
        for (int idx = lo + tid; idx < hi; idx += 128) {
            int rl = idx / (BN / 2), cl = 2 * (idx % (BN / 2));
            float2 sum = make_float2(0.0f, 0.0f);
            for (int q = 0; q < S; q++) {
                const float *rp = cluster.map_shared_rank(red, q);
                float2 v = *reinterpret_cast<const float2 *>(rp + rl * RLD + cl);
                sum.x += v.x, sum.y += v.y;
            }
            int p = p0 + rl, col = co0 + cl;
            if (p < npix && col < Co) conv_store(out, bias, res, relu, p, col, Co, sum.x, sum.y);
        }
        cluster.sync(); /* no block leaves while another still reads its shared memory */
    } else {
        /* epilogue: (+ bias) (+ res) (relu) -> bf16 pairs */
#pragma unroll
        for (int mt = 0; mt < MT; mt++) {
#pragma unroll
            for (int nt = 0; nt < NT; nt++) {
                int col = co0 + (wn * NT + nt) * 8 + 2 * t;
                if (col >= Co) continue;
#pragma unroll
                for (int half = 0; half < 2; half++) {
                    int p = p0 + (wm * MT + mt) * 16 + g + 8 * half;
                    if (p < npix)
                        conv_store(out, bias, res, relu, p, col, Co, acc[mt][nt][2 * half], acc[mt][nt][2 * half + 1]);
                }
            }
        }
    }
}

extern "C" int cu_conv3x3_igemm_ok(int Ci, int Co) { return Ci > 0 && Ci % 32 == 0 && Co > 0 && Co % 8 == 0; }

template <int BM, int BN, int WM, int WN, int NS, bool LDM, bool SPLIT = false>
static cudaError_t igemm_launch(size_t npix, cudaStream_t st, bf16_t *out, const bf16_t *in, const bf16_t *wt,
                                const float *bias, const bf16_t *res, int H, int W, int Ci, int Co, int stride, int up,
                                int relu, int split = 1) {
    dim3 grid(cu_blocks(npix, BM), cu_blocks(Co, BN), SPLIT ? (unsigned)split : 1u);
    return cu_launch_ex(conv_igemm_kernel<BM, BN, WM, WN, NS, LDM, SPLIT>, grid, 128, 0, st, SPLIT ? (unsigned)split : 1u,
                        (bf16 *)out, (const bf16 *)in, (const bf16 *)wt, bias, (const bf16 *)res, H, W, Ci, Co, stride,
                        up, relu);
}

static int conv_sm_count(void) {
    static int n = 0;
    if (!n) {
        int dev = 0, v = 0;
        if (cudaGetDevice(&dev) != cudaSuccess || cudaDeviceGetAttribute(&v, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess)
            v = 132;
        n = v > 0 ? v : 132;
    }
    return n;
}

/* Version 4's K split: the fewest parts (dividing the k-blocks, at most 6: clusters of up to
 * 8 are portable) that give two blocks per SM, else the most. */
static int conv_split(size_t tiles, int nk) {
    static const int cand[] = {1, 2, 3, 6};
    int best = 1;
    for (int i = 0; i < 4; i++) {
        int s = cand[i];
        if (nk % s || nk / s < 2) continue;
        best = s;
        if (tiles * s >= (size_t)2 * conv_sm_count()) break;
    }
    return best;
}

/* ---- version 5: halo tiles for the large, thin levels (stride 1) ------------------------
 * At 256x256 and 128x128 with 64 channels, versions 1-4 gather each input pixel 9 times (once
 * per tap, 128 bytes each through cp.async from L2) and stream the whole weight matrix through
 * shared memory once per 128-pixel tile. Here a block keeps its BN output channels' weights
 * (BN x 9*CI bf16: 74 KB at 64 channels) resident in shared memory for its whole life and
 * walks output tiles of (4*TR) rows x 16 columns: each tile's input halo ((4*TR+2) x 18
 * pixels, all CI channels) is loaded once (16-byte cp.async, zero outside the image: the
 * padding; the nearest 2x upsample read as (y/2, x/2)), and the nine taps are nine shifted
 * ldmatrix reads of that halo (ldmatrix takes one row address per lane, so the shift costs
 * nothing). Warp w computes output rows w*TR .. w*TR+TR-1 (one 16-pixel m-tile each) x BN
 * channels with mma.sync m16n8k16; the epilogue is the other versions' (bias, residual, ReLU).
 * Row strides of CI+8 and 9*CI+8 bf16 make every ldmatrix phase conflict-free. */
template <int CI, int TR, int BN> struct halo_cfg {
    static const int HR = 4 * TR + 2, HC = 18, HLD = CI + 8, WLD = 9 * CI + 8;
    static const size_t SMEM = (size_t)(BN * WLD + HR * HC * HLD) * 2;
};

/* TO: bf16 (the Blocks), or u8 / fp32 with BN = 8 for the thin outputs (thin version 4: dec.out
 * 64 -> 3 straight to the u8 frame; no residual there) */
template <int CI, int TR, int BN, typename TO = bf16>
__global__ void __launch_bounds__(128) conv_halo_kernel(TO *out, const bf16 *in, const bf16 *wt, const float *bias,
                                                        const bf16 *res, int H, int W, int Co, int up, int relu) {
    typedef halo_cfg<CI, TR, BN> C;
    const int NT = BN / 8, K = 9 * CI;
    extern __shared__ __align__(16) bf16 hsm[];
    bf16 *ws = hsm, *hs = hsm + BN * C::WLD;
    int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t = lane & 3;
    int co0 = blockIdx.y * BN;
    /* the weights are constant: fetched before waiting on the previous kernel */
    for (int idx = tid; idx < BN * (K / 8); idx += 128) {
        int r = idx / (K / 8), c = (idx % (K / 8)) * 8, co = co0 + r;
        bool ok = co < Co;
        cp_async16(ws + r * C::WLD + c, ok ? wt + (size_t)co * K + c : wt, ok);
    }
    cp_async_commit();
    pdl_wait();
    pdl_trigger();
    int tw = (W + 15) / 16, th = (H + 4 * TR - 1) / (4 * TR), ntiles = tw * th, Ws = up ? W >> 1 : W;
    const int mi = lane >> 3, lr = lane & 7;
    for (int tile = blockIdx.x; tile < ntiles; tile += gridDim.x) {
        int ty0 = (tile / tw) * 4 * TR, tx0 = (tile % tw) * 16;
        for (int idx = tid; idx < C::HR * C::HC * (CI / 8); idx += 128) {
            int px = idx / (CI / 8), c = (idx % (CI / 8)) * 8, hy = ty0 - 1 + px / C::HC, hx = tx0 - 1 + px % C::HC;
            bool ok = hy >= 0 && hy < H && hx >= 0 && hx < W;
            const bf16 *src = in;
            if (ok) src = in + (size_t)(up ? (hy >> 1) * Ws + (hx >> 1) : hy * W + hx) * CI + c;
            cp_async16(hs + px * C::HLD + c, src, ok);
        }
        cp_async_commit();
        cp_async_wait<0>();
        __syncthreads();
        float acc[TR][NT][4];
#pragma unroll
        for (int mt = 0; mt < TR; mt++)
#pragma unroll
            for (int nt = 0; nt < NT; nt++) acc[mt][nt][0] = acc[mt][nt][1] = acc[mt][nt][2] = acc[mt][nt][3] = 0.0f;
#pragma unroll 1
        for (int tap = 0; tap < 9; tap++) {
            int ky = tap / 3, kx = tap % 3;
#pragma unroll
            for (int ks = 0; ks < CI; ks += 16) {
                uint32_t a[TR][4], b[NT][2];
#pragma unroll
                for (int mt = 0; mt < TR; mt++) /* matrices: pixels +0/+8 (mi&1), channels +0/+8 (mi>>1) */
                    ldmatrix_x4(a[mt], hs + ((warp * TR + mt + ky) * C::HC + (mi & 1) * 8 + lr + kx) * C::HLD + ks +
                                           (mi >> 1) * 8);
                if constexpr (NT == 1) { /* one n-tile: two 32-bit loads per lane */
                    const bf16 *wr = ws + g * C::WLD + tap * CI + ks + 2 * t;
                    b[0][0] = *reinterpret_cast<const uint32_t *>(wr);
                    b[0][1] = *reinterpret_cast<const uint32_t *>(wr + 8);
                } else {
#pragma unroll
                    for (int nt = 0; nt < NT; nt += 2) { /* matrices: k +0/+8 (mi&1), n-tile +0/+1 (mi>>1) */
                        uint32_t r[4];
                        ldmatrix_x4(r, ws + (nt * 8 + (mi >> 1) * 8 + lr) * C::WLD + tap * CI + ks + (mi & 1) * 8);
                        b[nt][0] = r[0], b[nt][1] = r[1], b[nt + 1][0] = r[2], b[nt + 1][1] = r[3];
                    }
                }
#pragma unroll
                for (int mt = 0; mt < TR; mt++)
#pragma unroll
                    for (int nt = 0; nt < NT; nt++) mma_bf16_16816(acc[mt][nt], a[mt], b[nt]);
            }
        }
        __syncthreads(); /* every warp is done with this halo before the next tile's loads */
#pragma unroll
        for (int mt = 0; mt < TR; mt++) {
            int oy = ty0 + warp * TR + mt;
            if (oy >= H) continue;
#pragma unroll
            for (int nt = 0; nt < NT; nt++) {
                int col = co0 + nt * 8 + 2 * t;
                if (col >= Co) continue;
#pragma unroll
                for (int half = 0; half < 2; half++) {
                    int ox = tx0 + g + 8 * half;
                    if (ox >= W) continue;
                    if constexpr (std::is_same<TO, bf16>::value) {
                        conv_store(out, bias, res, relu, oy * W + ox, col, Co, acc[mt][nt][2 * half],
                                   acc[mt][nt][2 * half + 1]);
                    } else {
#pragma unroll
                        for (int j = 0; j < 2; j++) {
                            if (col + j >= Co) continue;
                            float v = acc[mt][nt][2 * half + j] + (bias ? bias[col + j] : 0.0f);
                            st_px(out, (size_t)(oy * W + ox) * Co + col + j, relu ? fmaxf(v, 0.0f) : v);
                        }
                    }
                }
            }
        }
    }
}

/* Persistent grid: as many blocks as fit on the card at once (weights loaded once per block),
 * at most one per tile. */
template <int CI, int TR, int BN, typename TO = bf16>
static cudaError_t halo_launch(cudaStream_t st, void *out, const bf16_t *in, const bf16_t *wt, const float *bias,
                               const bf16_t *res, int H, int W, int Co, int up, int relu) {
    typedef halo_cfg<CI, TR, BN> C;
    /* the shared-memory opt-in is per device (streams on several GPUs, issue 8); setting it
     * twice from two threads is harmless */
    static int per_sm_dev[64];
    int dev = 0;
    cudaError_t e = cudaGetDevice(&dev);
    if (e != cudaSuccess) return e;
    int per_sm = dev >= 0 && dev < 64 ? per_sm_dev[dev] : 0;
    if (!per_sm) {
        e = cudaFuncSetAttribute(conv_halo_kernel<CI, TR, BN, TO>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                 (int)C::SMEM);
        if (e != cudaSuccess) return e;
        e = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, conv_halo_kernel<CI, TR, BN, TO>, 128, C::SMEM);
        if (e != cudaSuccess) return e;
        if (per_sm < 1) per_sm = 1;
        if (dev >= 0 && dev < 64) per_sm_dev[dev] = per_sm;
    }
    size_t tiles = (size_t)cu_blocks(W, 16) * cu_blocks(H, 4 * TR), cap = (size_t)per_sm * conv_sm_count();
    dim3 grid((unsigned)(tiles < cap ? tiles : cap), cu_blocks(Co, BN));
    return cu_launch(conv_halo_kernel<CI, TR, BN, TO>, grid, 128, C::SMEM, st, (TO *)out, (const bf16 *)in,
                     (const bf16 *)wt, bias, (const bf16 *)res, H, W, Co, up, relu);
}

/* Version 5 takes a conv where it applies: stride 1, Ci 32 or 64, and (version 5) at least
 * CV_HALO_PIX output pixels — the large levels; version 6 (lab only) at every size. */
#define CV_HALO_PIX 16384
static int halo_applies(int version, size_t npix, int Ci, int stride) {
    return version >= 5 && stride == 1 && (Ci == 32 || Ci == 64) && (version >= 6 || npix >= CV_HALO_PIX);
}

static cudaError_t halo_run(size_t npix, cudaStream_t st, bf16_t *out, const bf16_t *in, const bf16_t *wt,
                            const float *bias, const bf16_t *res, int H, int W, int Ci, int Co, int up, int relu) {
    int big = npix >= 32768; /* 8-row tiles (two m-tiles per warp) where there are tiles enough */
    if (Ci == 64)
        return big ? halo_launch<64, 2, 64>(st, out, in, wt, bias, res, H, W, Co, up, relu)
                   : halo_launch<64, 1, 64>(st, out, in, wt, bias, res, H, W, Co, up, relu);
    return big ? halo_launch<32, 2, 32>(st, out, in, wt, bias, res, H, W, Co, up, relu)
               : halo_launch<32, 1, 32>(st, out, in, wt, bias, res, H, W, Co, up, relu);
}

/* Below this many output pixels a 128-pixel tile leaves SMs idle (under 2 blocks per SM on an
 * H100/H200): use 32-pixel tiles, four warps side by side over the channels. */
#define CV_SMALL_PIX 32768

extern "C" mg_status cu_conv3x3_igemm_v(int version, bf16_t *out, const bf16_t *in, const bf16_t *wt,
                                        const float *bias, const bf16_t *res, int H, int W, int Ci, int Co, int stride,
                                        int up, int relu, cudaStream_t st) {
    if (!cu_conv3x3_igemm_ok(Ci, Co) || (up && (H % 2 || W % 2)) || (stride != 1 && stride != 2))
        return mg_fail(MG_ERR_UNSUPPORTED, "CUDA conv3x3 (implicit GEMM): Ci %d, Co %d, %dx%d, stride %d, up %d",
                       Ci, Co, W, H, stride, up);
    int Ho = stride == 2 ? (H + 1) / 2 : H, Wo = stride == 2 ? (W + 1) / 2 : W;
    size_t npix = (size_t)Ho * Wo;
    if (!npix) return MG_OK;
    int small = version >= 2 && npix < CV_SMALL_PIX, narrow = Co <= 32;
    cudaError_t e;
    if (halo_applies(version, npix, Ci, stride)) {
        CU_TRY(halo_run(npix, st, out, in, wt, bias, res, H, W, Ci, Co, up, relu));
        return MG_OK;
    }
    if (version >= 5) version = 3; /* where the halo tiles do not apply: version 3 */
    if (version >= 4 && small) { /* v4: v3 with the K split over a cluster where the image is small */
        int split = conv_split(cu_blocks(npix, 32) * cu_blocks(Co, narrow ? 32 : 64), 9 * Ci / CV_BK);
        if (split > 1) {
            if (narrow)
                e = igemm_launch<32, 32, 1, 4, 4, false, true>(npix, st, out, in, wt, bias, res, H, W, Ci, Co, stride, up,
                                                               relu, split);
            else
                e = igemm_launch<32, 64, 1, 4, 4, true, true>(npix, st, out, in, wt, bias, res, H, W, Ci, Co, stride, up,
                                                              relu, split);
            CU_TRY(e);
            return MG_OK;
        }
    }
    if (version < 2) { /* v1: 128-pixel tiles, double buffer, 32-bit fragment loads */
        if (narrow) e = igemm_launch<128, 32, 4, 1, 2, false>(npix, st, out, in, wt, bias, res, H, W, Ci, Co, stride, up, relu);
        else e = igemm_launch<128, 64, 4, 1, 2, false>(npix, st, out, in, wt, bias, res, H, W, Ci, Co, stride, up, relu);
    } else if (small) { /* v2+, small images: 32-pixel tiles, 4 stages */
        if (narrow) e = igemm_launch<32, 32, 1, 4, 4, false>(npix, st, out, in, wt, bias, res, H, W, Ci, Co, stride, up, relu);
        else if (version < 3) e = igemm_launch<32, 64, 1, 4, 4, false>(npix, st, out, in, wt, bias, res, H, W, Ci, Co, stride, up, relu);
        else e = igemm_launch<32, 64, 1, 4, 4, true>(npix, st, out, in, wt, bias, res, H, W, Ci, Co, stride, up, relu);
    } else { /* v2+, large images: 128-pixel tiles, 3 stages; v3: ldmatrix fragments */
        if (narrow && version < 3) e = igemm_launch<128, 32, 4, 1, 3, false>(npix, st, out, in, wt, bias, res, H, W, Ci, Co, stride, up, relu);
        else if (narrow) e = igemm_launch<128, 32, 4, 1, 3, true>(npix, st, out, in, wt, bias, res, H, W, Ci, Co, stride, up, relu);
        else if (version < 3) e = igemm_launch<128, 64, 4, 1, 3, false>(npix, st, out, in, wt, bias, res, H, W, Ci, Co, stride, up, relu);
        else e = igemm_launch<128, 64, 4, 1, 3, true>(npix, st, out, in, wt, bias, res, H, W, Ci, Co, stride, up, relu);
    }
    CU_TRY(e);
    return MG_OK;
}

extern "C" mg_status cu_conv3x3_igemm(bf16_t *out, const bf16_t *in, const bf16_t *wt, const float *bias,
                                      const bf16_t *res, int H, int W, int Ci, int Co, int stride, int up, int relu,
                                      cudaStream_t st) {
    static int version = 0;
    if (!version) version = cu_opt("CONVHALO", 1) ? 5 : cu_opt("CONVSPLIT", 0) ? 4 : 3; /* v4 measured neutral: off; v5 measured faster (RESULTS, third slice): on */
    return cu_conv3x3_igemm_v(version, out, in, wt, bias, res, H, W, Ci, Co, stride, up, relu, st);
}

/* ---- direct convolution for the thin layers ------------------------------------------- */


#define DC_CO 8
#define DC_THREADS 128

template <typename TO, typename TI>
__global__ void conv_direct_kernel(TO *out, const TI *in, const bf16 *wt, const float *bias, int H, int W, int Ci,
                                   int Co, int stride, int up, int relu) {
    extern __shared__ float ws[]; /* (9*Ci, DC_CO): this block's output channels */
    int K = 9 * Ci, co0 = blockIdx.y * DC_CO, nco = Co - co0 < DC_CO ? Co - co0 : DC_CO;
    for (int idx = threadIdx.x; idx < K * DC_CO; idx += blockDim.x) {
        int k = idx / DC_CO, j = idx % DC_CO;
        ws[idx] = j < nco ? bf2f(wt[(size_t)(co0 + j) * K + k]) : 0.0f;
    }
    pdl_wait(); /* the weights above are constant; the input below is the previous kernel's */
    pdl_trigger();
    __syncthreads();
    int Ho = stride == 2 ? (H + 1) / 2 : H, Wo = stride == 2 ? (W + 1) / 2 : W, Ws = up ? W >> 1 : W;
    size_t p = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (p >= (size_t)Ho * Wo) return;
    int oy = (int)(p / Wo), ox = (int)(p % Wo);
    float acc[DC_CO];
#pragma unroll
    for (int j = 0; j < DC_CO; j++) acc[j] = bias && j < nco ? bias[co0 + j] : 0.0f;
    for (int ky = 0; ky < 3; ky++) {
        int iy = oy * stride - 1 + ky;
        if (iy < 0 || iy >= H) continue;
        for (int kx = 0; kx < 3; kx++) {
            int ix = ox * stride - 1 + kx;
            if (ix < 0 || ix >= W) continue;
            size_t src = (size_t)(up ? (iy >> 1) * Ws + (ix >> 1) : iy * W + ix) * Ci;
            const float *wk = ws + (size_t)(ky * 3 + kx) * Ci * DC_CO;
            for (int ci = 0; ci < Ci; ci++) {
                float v = ld_px(in, src + ci);
#pragma unroll
                for (int j = 0; j < DC_CO; j++) acc[j] += v * wk[ci * DC_CO + j];
            }
        }
    }
    for (int j = 0; j < nco; j++) {
        float v = acc[j];
        if (relu) v = fmaxf(v, 0.0f);
        st_px(out, p * Co + co0 + j, v);
    }
}

template <typename TO, typename TI>
static mg_status direct_launch(void *out, const void *in, const bf16_t *wt, const float *bias, int H, int W, int Ci,
                               int Co, int stride, int up, int relu, cudaStream_t st) {
    int Ho = stride == 2 ? (H + 1) / 2 : H, Wo = stride == 2 ? (W + 1) / 2 : W;
    size_t smem = (size_t)9 * Ci * DC_CO * sizeof(float);
    dim3 grid(cu_blocks((size_t)Ho * Wo, DC_THREADS), cu_blocks(Co, DC_CO));
    CU_LAUNCH(conv_direct_kernel<TO, TI>, grid, DC_THREADS, smem, st, (TO *)out, (const TI *)in, (const bf16 *)wt, bias,
              H, W, Ci, Co, stride, up, relu);
    return MG_OK;
}

/* Thin output (Co <= 4, e.g. dec.out 64 -> 3, enc.out 64 -> 4): one thread per pixel holds all
 * outputs; the input row of a tap is read as 16-byte vectors (8 bf16), the weights are one
 * float4 per k in shared memory (a broadcast load). */
template <typename TO>
__global__ void conv_thin_out_kernel(TO *out, const bf16 *in, const bf16 *wt, const float *bias, int H, int W, int Ci,
                                     int Co, int stride, int up, int relu) {
    extern __shared__ float4 w4[]; /* (9*Ci): output channels 0..3 of each k */
    int K = 9 * Ci;
    for (int k = threadIdx.x; k < K; k += blockDim.x)
        w4[k] = make_float4(bf2f(wt[k]), Co > 1 ? bf2f(wt[(size_t)K + k]) : 0.0f, Co > 2 ? bf2f(wt[(size_t)2 * K + k]) : 0.0f,
                            Co > 3 ? bf2f(wt[(size_t)3 * K + k]) : 0.0f);
    pdl_wait();
    pdl_trigger();
    __syncthreads();
    int Ho = stride == 2 ? (H + 1) / 2 : H, Wo = stride == 2 ? (W + 1) / 2 : W, Ws = up ? W >> 1 : W;
    size_t p = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (p >= (size_t)Ho * Wo) return;
    int oy = (int)(p / Wo), ox = (int)(p % Wo);
    float4 acc = make_float4(bias ? bias[0] : 0.0f, bias && Co > 1 ? bias[1] : 0.0f, bias && Co > 2 ? bias[2] : 0.0f,
                             bias && Co > 3 ? bias[3] : 0.0f);
    for (int ky = 0; ky < 3; ky++) {
        int iy = oy * stride - 1 + ky;
        if (iy < 0 || iy >= H) continue;
        for (int kx = 0; kx < 3; kx++) {
            int ix = ox * stride - 1 + kx;
            if (ix < 0 || ix >= W) continue;
            const uint4 *src = reinterpret_cast<const uint4 *>(in + (size_t)(up ? (iy >> 1) * Ws + (ix >> 1) : iy * W + ix) * Ci);
            const float4 *wk = w4 + (ky * 3 + kx) * Ci;
            for (int c8 = 0; c8 < Ci / 8; c8++) {
                uint4 raw = src[c8];
                const __nv_bfloat162 *h2 = reinterpret_cast<const __nv_bfloat162 *>(&raw);
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    float2 v = __bfloat1622float2(h2[e]);
                    float4 wa = wk[c8 * 8 + 2 * e], wb = wk[c8 * 8 + 2 * e + 1];
                    acc.x += v.x * wa.x, acc.y += v.x * wa.y, acc.z += v.x * wa.z, acc.w += v.x * wa.w;
                    acc.x += v.y * wb.x, acc.y += v.y * wb.y, acc.z += v.y * wb.z, acc.w += v.y * wb.w;
                }
            }
        }
    }
    float r[4] = {acc.x, acc.y, acc.z, acc.w};
#pragma unroll
    for (int j = 0; j < 4; j++)
        if (j < Co) st_px(out, p * Co + j, relu ? fmaxf(r[j], 0.0f) : r[j]);
}

/* The 3x3 taps of output pixel (oy, ox) of a thin input, unrolled: f(tap, src, ok), where the
 * tap's CI channels start at element src of the input and ok is false outside the image (the
 * padding; src is then 0). The nearest 2x upsample reads pixel (iy/2, ix/2) of the Ws-wide input. */
template <int CI, typename F>
__device__ __forceinline__ void thin_in_taps(int oy, int ox, int H, int W, int Ws, int stride, int up, F &&f) {
#pragma unroll
    for (int ky = 0; ky < 3; ky++)
#pragma unroll
        for (int kx = 0; kx < 3; kx++) {
            int iy = oy * stride - 1 + ky, ix = ox * stride - 1 + kx;
            bool ok = iy >= 0 && iy < H && ix >= 0 && ix < W;
            size_t src = ok ? (size_t)(up ? (iy >> 1) * Ws + (ix >> 1) : iy * W + ix) * CI : 0;
            f(ky * 3 + kx, src, ok);
        }
}

/* x[tap*CI + c]: the pixel's 9*CI inputs as floats (u8 as x/255), zeros outside the image */
template <typename TI, int CI>
__device__ __forceinline__ void thin_in_gather(float *x, const TI *in, int oy, int ox, int H, int W, int Ws, int stride,
                                               int up) {
    thin_in_taps<CI>(oy, ox, H, W, Ws, stride, up, [&](int tap, size_t src, bool ok) {
#pragma unroll
        for (int c = 0; c < CI; c++) x[tap * CI + c] = ok ? ld_px(in, src + c) : 0.0f;
    });
}

/* Outputs co0..co0+7 of one pixel from its gathered inputs x (K = 9*CI): the bias, the
 * multiply-adds in k order (the same order in every version: bit-identical), the ReLU, one
 * 16-byte bf16 store at out + row + co0 (row: the pixel's first output). The weights of k are
 * the float4s w[wi(k)] (outputs co0..co0+3) and w[wi(k) + hi] (co0+4..co0+7). Inlined, v2's and
 * v3's machine code is byte for byte what it was when each wrote this out itself. */
template <int K, typename WI>
__device__ __forceinline__ void thin_in_out8(bf16 *out, size_t row, const float *x, const float4 *w, WI wi, int hi,
                                             const float *bias, int co0, int relu) {
    float a[8];
#pragma unroll
    for (int j = 0; j < 8; j++) a[j] = bias ? bias[co0 + j] : 0.0f;
#pragma unroll
    for (int k = 0; k < K; k++) {
        float4 w0 = w[wi(k)], w1 = w[wi(k) + hi];
        a[0] += x[k] * w0.x, a[1] += x[k] * w0.y, a[2] += x[k] * w0.z, a[3] += x[k] * w0.w;
        a[4] += x[k] * w1.x, a[5] += x[k] * w1.y, a[6] += x[k] * w1.z, a[7] += x[k] * w1.w;
    }
    uint4 pk;
    uint32_t *pw = reinterpret_cast<uint32_t *>(&pk);
#pragma unroll
    for (int j = 0; j < 4; j++) {
        float u = a[2 * j], v = a[2 * j + 1];
        if (relu) u = fmaxf(u, 0.0f), v = fmaxf(v, 0.0f);
        pw[j] = pack_bf16x2(u, v);
    }
    *reinterpret_cast<uint4 *>(out + row + co0) = pk;
}

/* Thin input (Ci = 3 or 4, e.g. enc.in from the u8 frame, dec.in from the latent): one thread
 * per pixel gathers its 9*CI inputs once into registers, then produces 8 output channels at a
 * time from float4 weight rows in shared memory, written as one 16-byte store. */
template <typename TI, int CI>
__global__ void conv_thin_in_kernel(bf16 *out, const TI *in, const bf16 *wt, const float *bias, int H, int W, int Co,
                                    int stride, int up, int relu) {
    extern __shared__ float4 wsm[]; /* (9*CI, Co/4): k-major, output channels contiguous */
    const int K = 9 * CI;
    float *ws = reinterpret_cast<float *>(wsm);
    for (int idx = threadIdx.x; idx < K * Co; idx += blockDim.x) {
        int k = idx / Co, co = idx % Co;
        ws[idx] = bf2f(wt[(size_t)co * K + k]);
    }
    pdl_wait();
    pdl_trigger();
    __syncthreads();
    int Ho = stride == 2 ? (H + 1) / 2 : H, Wo = stride == 2 ? (W + 1) / 2 : W, Ws = up ? W >> 1 : W;
    size_t p = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (p >= (size_t)Ho * Wo) return;
    int oy = (int)(p / Wo), ox = (int)(p % Wo);
    float x[K];
    thin_in_gather<TI, CI>(x, in, oy, ox, H, W, Ws, stride, up);
    for (int co8 = 0; co8 < Co; co8 += 8)
        thin_in_out8<K>(out, p * Co, x, wsm, [&](int k) { return (k * Co + co8) / 4; }, 1, bias, co8, relu);
}

/* ---- version 3 of the thin layers: more threads, coalesced traffic --------------------------
 * Version 2 gives a pixel one thread. At 32x32 (enc.out, dec.in) that is 1024 threads, 8 blocks on
 * a 132-SM card, each thread walking 2304 multiply-adds in a row; at 256x256 (enc.in) each thread
 * writes its pixel's 64 outputs as eight 16-byte stores 128 bytes apart from its neighbours', and
 * (dec.out) reads its 9 x 128 input bytes alone. Version 3 splits the work of a pixel over lanes:
 *
 *   thin out (Co <= 4): 8 lanes per pixel, lane l takes the channel slices c8 = l, l + 8, ... of every
 *   tap (one 16-byte load each: the 8 lanes read a tap's 128 contiguous bytes together), the partial
 *   sums meet through 3 warp shuffles, and lanes 0..Co-1 store one output each;
 *   thin in (Ci = 3 or 4, below THIN_IN_V3_PIX output pixels): one thread per (pixel, 8 output
 *   channels), so neighbouring threads share the gathered inputs (broadcast loads) and write one
 *   pixel's row as contiguous 16-byte pieces. Same multiply-add order per output as version 2:
 *   bit-identical.
 *
 * Version 4 (the default): version 3, but a thin output from 64 channels at >= CV_HALO_PIX pixels
 * (dec.out at 128x128 and up) runs on the halo tiles of conv version 5 with one n-tile of 8
 * outputs: each input pixel is fetched once per tile instead of once per tap and pixel; and the
 * u8 frame in (enc.in, 3 -> 64) at >= THIN_IN_V3_PIX pixels on the tensor cores as well
 * (conv_thin_in_tc below).
 *
 * Both stage the weights in shared memory once per block and walk the work with a grid stride
 * (a grid of a few blocks per SM), so the staging is not repeated per 256 threads. The weight
 * layouts put what the 8 lanes of a quarter-warp read side by side: no bank conflicts. */
#define TH_THREADS 256
#define TH_G 8 /* lanes per pixel (thin out) */
#define THIN_IN_V3_PIX 16384 /* thin in: version 3 below this many output pixels */

template <typename TO>
__global__ void __launch_bounds__(TH_THREADS) conv_thin_out_v3(TO *out, const bf16 *in, const bf16 *wt,
                                                               const float *bias, int H, int W, int Ci, int Co,
                                                               int stride, int up, int relu) {
    extern __shared__ float4 w4[]; /* float4 (outputs 0..3) at ((tap*8 + e) * C8 + c8): k = tap*Ci + c8*8 + e */
    const int K = 9 * Ci, C8 = Ci / 8;
    for (int k = threadIdx.x; k < K; k += blockDim.x) {
        int tap = k / Ci, c = k % Ci, c8 = c / 8, e = c % 8;
        w4[(tap * 8 + e) * C8 + c8] =
            make_float4(bf2f(wt[k]), Co > 1 ? bf2f(wt[(size_t)K + k]) : 0.0f, Co > 2 ? bf2f(wt[(size_t)2 * K + k]) : 0.0f,
                        Co > 3 ? bf2f(wt[(size_t)3 * K + k]) : 0.0f);
    }
    pdl_wait();
    pdl_trigger();
    __syncthreads();
    int Ho = stride == 2 ? (H + 1) / 2 : H, Wo = stride == 2 ? (W + 1) / 2 : W, Ws = up ? W >> 1 : W;
    int l = threadIdx.x & (TH_G - 1);
    size_t npix = (size_t)Ho * Wo, step = (size_t)gridDim.x * (blockDim.x / TH_G);
    /* a warp's 4 pixels are consecutive and 4-aligned, so its lanes leave the loop together (npix is
     * rounded up to 4; the pixels past it compute nothing), as the full-mask shuffles need */
    size_t pend = (npix + 32 / TH_G - 1) / (32 / TH_G) * (32 / TH_G);
    for (size_t p = (size_t)blockIdx.x * (blockDim.x / TH_G) + threadIdx.x / TH_G; p < pend; p += step) {
        bool live = p < npix;
        float4 acc = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        if (live) {
            int oy = (int)(p / Wo), ox = (int)(p % Wo);
            for (int ky = 0; ky < 3; ky++) {
                int iy = oy * stride - 1 + ky;
                if (iy < 0 || iy >= H) continue;
                for (int kx = 0; kx < 3; kx++) {
                    int ix = ox * stride - 1 + kx;
                    if (ix < 0 || ix >= W) continue;
                    const uint4 *src =
                        reinterpret_cast<const uint4 *>(in + (size_t)(up ? (iy >> 1) * Ws + (ix >> 1) : iy * W + ix) * Ci);
                    const float4 *wk = w4 + (ky * 3 + kx) * 8 * C8;
                    for (int c8 = l; c8 < C8; c8 += TH_G) {
                        uint4 raw = src[c8];
                        const __nv_bfloat162 *h2 = reinterpret_cast<const __nv_bfloat162 *>(&raw);
#pragma unroll
                        for (int e = 0; e < 4; e++) {
                            float2 v = __bfloat1622float2(h2[e]);
                            float4 wa = wk[(2 * e) * C8 + c8], wb = wk[(2 * e + 1) * C8 + c8];
                            acc.x += v.x * wa.x, acc.y += v.x * wa.y, acc.z += v.x * wa.z, acc.w += v.x * wa.w;
                            acc.x += v.y * wb.x, acc.y += v.y * wb.y, acc.z += v.y * wb.z, acc.w += v.y * wb.w;
                        }
                    }
                }
            }
        }
#pragma unroll
        for (int o = TH_G / 2; o > 0; o >>= 1) {
            acc.x += __shfl_xor_sync(0xffffffffu, acc.x, o);
            acc.y += __shfl_xor_sync(0xffffffffu, acc.y, o);
            acc.z += __shfl_xor_sync(0xffffffffu, acc.z, o);
            acc.w += __shfl_xor_sync(0xffffffffu, acc.w, o);
        }
        if (live && l < Co) {
            float v = l == 0 ? acc.x : l == 1 ? acc.y : l == 2 ? acc.z : acc.w;
            if (bias) v += bias[l];
            st_px(out, p * Co + l, relu ? fmaxf(v, 0.0f) : v);
        }
    }
}

template <typename TI, int CI>
__global__ void __launch_bounds__(TH_THREADS) conv_thin_in_v3(bf16 *out, const TI *in, const bf16 *wt,
                                                              const float *bias, int H, int W, int Co, int stride,
                                                              int up, int relu) {
    extern __shared__ float4 wsm[]; /* per k: the low halves (outputs g*8+0..3) of every group g, then the high halves */
    const int K = 9 * CI, NG = Co / 8;
    float *ws = reinterpret_cast<float *>(wsm);
    for (int idx = threadIdx.x; idx < K * Co; idx += blockDim.x) {
        int k = idx / Co, co = idx % Co, g = co / 8, j = co % 8;
        ws[((size_t)k * 2 * NG + (j < 4 ? g : NG + g)) * 4 + (j & 3)] = bf2f(wt[(size_t)co * K + k]);
    }
    pdl_wait();
    pdl_trigger();
    __syncthreads();
    int Ho = stride == 2 ? (H + 1) / 2 : H, Wo = stride == 2 ? (W + 1) / 2 : W, Ws = up ? W >> 1 : W;
    size_t n = (size_t)Ho * Wo * NG;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        size_t p = i / NG;
        int g = (int)(i % NG), oy = (int)(p / Wo), ox = (int)(p % Wo);
        float x[K];
        thin_in_gather<TI, CI>(x, in, oy, ox, H, W, Ws, stride, up);
        thin_in_out8<K>(out, p * Co, x, wsm, [&](int k) { return (size_t)k * 2 * NG + g; }, NG, bias, g * 8, relu);
    }
}

/* Thin version 4 for the u8 frame in (enc.in 3 -> 64 at >= THIN_IN_V3_PIX pixels): the 27 taps
 * of a pixel are one row of a (pixels x 32) bf16 matrix in shared memory (the u8 codes exactly,
 * zero past 27), the weights a (Co x 32) one, and the product runs on the tensor cores
 * (mma.sync m16n8k16, two k-steps); the epilogue scales by 1/255 (the u8 -> [0, 1] of the
 * other versions, applied once to the sum), adds the bias, and writes bf16. A block of 4 warps
 * takes 128 pixels per round (32 per warp: 2 m-tiles x Co/8 n-tiles), grid-stride. */
#define TI_LD 40 /* shared row stride (bf16): 80 bytes, conflict-free ldmatrix */
template <int CI, int CO>
__global__ void __launch_bounds__(128) conv_thin_in_tc(bf16 *out, const uint8_t *in, const bf16 *wt, const float *bias,
                                                       int H, int W, int stride, int up, int relu) {
    const int K = 9 * CI, NT = CO / 8;
    static_assert(9 * CI <= 32 && CO % 16 == 0, "thin in on the tensor cores: 9*CI <= 32, CO a multiple of 16");
    __shared__ __align__(16) bf16 ws[CO][TI_LD], as[128][TI_LD];
    int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t = lane & 3;
    for (int i = tid; i < CO * 32; i += 128) {
        int co = i / 32, k = i % 32;
        ws[co][k] = k < K ? wt[(size_t)co * K + k] : f2bf(0.0f);
    }
    pdl_wait();
    pdl_trigger();
    int Ho = stride == 2 ? (H + 1) / 2 : H, Wo = stride == 2 ? (W + 1) / 2 : W, Ws = up ? W >> 1 : W;
    size_t npix = (size_t)Ho * Wo;
    const int mi = lane >> 3, lr = lane & 7;
    for (size_t p0 = (size_t)blockIdx.x * 128; p0 < npix; p0 += (size_t)gridDim.x * 128) {
        __syncthreads(); /* the weights are in; everyone is done with the previous round's rows */
        size_t p = p0 + tid;
        if (p < npix) {
            int oy = (int)(p / Wo), ox = (int)(p % Wo);
            thin_in_taps<CI>(oy, ox, H, W, Ws, stride, up, [&](int tap, size_t src, bool ok) {
#pragma unroll
                for (int c = 0; c < CI; c++) as[tid][tap * CI + c] = f2bf(ok ? (float)in[src + c] : 0.0f);
            });
#pragma unroll
            for (int k = K; k < 32; k++) as[tid][k] = f2bf(0.0f);
        } else {
#pragma unroll
            for (int k = 0; k < 32; k++) as[tid][k] = f2bf(0.0f);
        }
        __syncthreads();
        float acc[2][NT][4];
#pragma unroll
        for (int mt = 0; mt < 2; mt++)
#pragma unroll
            for (int nt = 0; nt < NT; nt++) acc[mt][nt][0] = acc[mt][nt][1] = acc[mt][nt][2] = acc[mt][nt][3] = 0.0f;
#pragma unroll
        for (int ks = 0; ks < 32; ks += 16) {
            uint32_t a[2][4], b[NT][2];
#pragma unroll
            for (int mt = 0; mt < 2; mt++) /* matrices: rows +0/+8 (mi&1), k +0/+8 (mi>>1) */
                ldmatrix_x4(a[mt], &as[warp * 32 + mt * 16 + (mi & 1) * 8 + lr][ks + (mi >> 1) * 8]);
#pragma unroll
            for (int nt = 0; nt < NT; nt += 2) { /* matrices: k +0/+8 (mi&1), n-tile +0/+1 (mi>>1) */
                uint32_t r[4];
                ldmatrix_x4(r, &ws[nt * 8 + (mi >> 1) * 8 + lr][ks + (mi & 1) * 8]);
                b[nt][0] = r[0], b[nt][1] = r[1], b[nt + 1][0] = r[2], b[nt + 1][1] = r[3];
            }
#pragma unroll
            for (int mt = 0; mt < 2; mt++)
#pragma unroll
                for (int nt = 0; nt < NT; nt++) mma_bf16_16816(acc[mt][nt], a[mt], b[nt]);
        }
#pragma unroll
        for (int mt = 0; mt < 2; mt++)
#pragma unroll
            for (int half = 0; half < 2; half++) {
                size_t q = p0 + warp * 32 + mt * 16 + g + 8 * half;
                if (q >= npix) continue;
#pragma unroll
                for (int nt = 0; nt < NT; nt++) {
                    int col = nt * 8 + 2 * t;
                    float v0 = acc[mt][nt][2 * half] * (1.0f / 255.0f), v1 = acc[mt][nt][2 * half + 1] * (1.0f / 255.0f);
                    if (bias) v0 += bias[col], v1 += bias[col + 1];
                    if (relu) v0 = fmaxf(v0, 0.0f), v1 = fmaxf(v1, 0.0f);
                    *reinterpret_cast<__nv_bfloat162 *>(out + q * CO + col) = __floats2bfloat162_rn(v0, v1);
                }
            }
    }
}

/* Grid of the grid-stride loops: enough blocks for the work, at most 4 per SM. */
static unsigned thin_grid(size_t threads) {
    size_t need = (threads + TH_THREADS - 1) / TH_THREADS, cap = (size_t)4 * conv_sm_count();
    return (unsigned)(need < cap ? (need ? need : 1) : cap);
}

template <typename TO>
static mg_status direct_in(void *out, const void *in, cu_dtype it, const bf16_t *wt, const float *bias, int H, int W,
                           int Ci, int Co, int stride, int up, int relu, cudaStream_t st) {
    switch (it) {
    case CU_U8: return direct_launch<TO, uint8_t>(out, in, wt, bias, H, W, Ci, Co, stride, up, relu, st);
    case CU_F32: return direct_launch<TO, float>(out, in, wt, bias, H, W, Ci, Co, stride, up, relu, st);
    default: return direct_launch<TO, bf16>(out, in, wt, bias, H, W, Ci, Co, stride, up, relu, st);
    }
}

template <typename TI>
static mg_status thin_in_launch(int version, void *out, const void *in, const bf16_t *wt, const float *bias, int H,
                                int W, int Ci, int Co, int stride, int up, int relu, cudaStream_t st) {
    int Ho = stride == 2 ? (H + 1) / 2 : H, Wo = stride == 2 ? (W + 1) / 2 : W;
    dim3 grid(cu_blocks((size_t)Ho * Wo, DC_THREADS));
    size_t smem = (size_t)9 * Ci * Co * sizeof(float);
    /* version 3 where a thread per pixel leaves the card idle; above, version 2's one thread per
     * pixel gathers each input once instead of once per 8 outputs, and measured faster (lab:
     * 256x256 3->64 from u8, 22.2 against 29.4 µs on an H100) */
    if (version >= 4 && std::is_same<TI, uint8_t>::value && Ci == 3 && Co == 64 && (size_t)Ho * Wo >= THIN_IN_V3_PIX) {
        unsigned g4 = thin_grid((size_t)Ho * Wo * 2); /* rounds of 128 pixels per block */
        CU_LAUNCH(conv_thin_in_tc<3, 64>, g4, 128, 0, st, (bf16 *)out, (const uint8_t *)in, (const bf16 *)wt, bias, H, W,
                  stride, up, relu);
        return MG_OK;
    }
    if (version >= 3 && (size_t)Ho * Wo < THIN_IN_V3_PIX) {
        unsigned g3 = thin_grid((size_t)Ho * Wo * (Co / 8));
        if (Ci == 3)
            CU_LAUNCH(conv_thin_in_v3<TI, 3>, g3, TH_THREADS, smem, st, (bf16 *)out, (const TI *)in, (const bf16 *)wt,
                      bias, H, W, Co, stride, up, relu);
        else
            CU_LAUNCH(conv_thin_in_v3<TI, 4>, g3, TH_THREADS, smem, st, (bf16 *)out, (const TI *)in, (const bf16 *)wt,
                      bias, H, W, Co, stride, up, relu);
        return MG_OK;
    }
    if (Ci == 3)
        CU_LAUNCH(conv_thin_in_kernel<TI, 3>, grid, DC_THREADS, smem, st, (bf16 *)out, (const TI *)in, (const bf16 *)wt,
                  bias, H, W, Co, stride, up, relu);
    else
        CU_LAUNCH(conv_thin_in_kernel<TI, 4>, grid, DC_THREADS, smem, st, (bf16 *)out, (const TI *)in, (const bf16 *)wt,
                  bias, H, W, Co, stride, up, relu);
    return MG_OK;
}

template <typename TO>
static mg_status thin_out_launch(int version, void *out, const void *in, const bf16_t *wt, const float *bias, int H,
                                 int W, int Ci, int Co, int stride, int up, int relu, cudaStream_t st) {
    int Ho = stride == 2 ? (H + 1) / 2 : H, Wo = stride == 2 ? (W + 1) / 2 : W;
    if (version >= 4 && stride == 1 && Ci == 64 && (size_t)Ho * Wo >= CV_HALO_PIX) {
        /* version 4, large images: the halo tiles on the tensor cores, one n-tile of 8 outputs
         * (the Co <= 4 real ones and zero weights), so each input pixel is read once per tile
         * instead of once per tap */
        CU_TRY((halo_launch<64, 2, 8, TO>(st, out, (const bf16_t *)in, wt, bias, NULL, H, W, Co, up, relu)));
        return MG_OK;
    }
    if (version >= 3) {
        CU_LAUNCH(conv_thin_out_v3<TO>, thin_grid((size_t)Ho * Wo * TH_G), TH_THREADS, (size_t)9 * Ci * sizeof(float4),
                  st, (TO *)out, (const bf16 *)in, (const bf16 *)wt, bias, H, W, Ci, Co, stride, up, relu);
        return MG_OK;
    }
    dim3 grid(cu_blocks((size_t)Ho * Wo, DC_THREADS));
    CU_LAUNCH(conv_thin_out_kernel<TO>, grid, DC_THREADS, (size_t)9 * Ci * sizeof(float4), st, (TO *)out,
              (const bf16 *)in, (const bf16 *)wt, bias, H, W, Ci, Co, stride, up, relu);
    return MG_OK;
}

extern "C" mg_status cu_conv3x3_direct(void *out, cu_dtype ot, const void *in, cu_dtype it, const bf16_t *wt,
                                       const float *bias, int H, int W, int Ci, int Co, int stride, int up, int relu,
                                       cudaStream_t st) {
    static int version = 0; /* MG_CUDA_THIN4=0: the thin layers' version 3; MG_CUDA_THIN3=0: version 2 */
    if (!version) version = !cu_opt("THIN3", 1) ? 2 : cu_opt("THIN4", 1) ? 4 : 3;
    return cu_conv3x3_direct_v(version, out, ot, in, it, wt, bias, H, W, Ci, Co, stride, up, relu, st);
}

extern "C" mg_status cu_conv3x3_direct_v(int version, void *out, cu_dtype ot, const void *in, cu_dtype it,
                                         const bf16_t *wt, const float *bias, int H, int W, int Ci, int Co, int stride,
                                         int up, int relu, cudaStream_t st) {
    if ((size_t)9 * Ci * DC_CO * sizeof(float) > 48 * 1024 || (up && (H % 2 || W % 2)) || (stride != 1 && stride != 2))
        return mg_fail(MG_ERR_UNSUPPORTED, "CUDA conv3x3 (direct): Ci %d, %dx%d, stride %d, up %d", Ci, W, H, stride, up);
    if ((size_t)H * W == 0 || Co <= 0) return MG_OK;
    if (version >= 2 && it == CU_BF16 && Co <= 4 && Ci % 8 == 0 && (size_t)9 * Ci * 16 <= 48 * 1024) {
        switch (ot) {
        case CU_U8: return thin_out_launch<uint8_t>(version, out, in, wt, bias, H, W, Ci, Co, stride, up, relu, st);
        case CU_F32: return thin_out_launch<float>(version, out, in, wt, bias, H, W, Ci, Co, stride, up, relu, st);
        default: return thin_out_launch<bf16>(version, out, in, wt, bias, H, W, Ci, Co, stride, up, relu, st);
        }
    }
    if (version >= 2 && ot == CU_BF16 && (Ci == 3 || Ci == 4) && Co % 8 == 0 && (size_t)9 * Ci * Co * 4 <= 48 * 1024) {
        switch (it) {
        case CU_U8: return thin_in_launch<uint8_t>(version, out, in, wt, bias, H, W, Ci, Co, stride, up, relu, st);
        case CU_F32: return thin_in_launch<float>(version, out, in, wt, bias, H, W, Ci, Co, stride, up, relu, st);
        default: return thin_in_launch<bf16>(version, out, in, wt, bias, H, W, Ci, Co, stride, up, relu, st);
        }
    }
    switch (ot) {
    case CU_U8: return direct_in<uint8_t>(out, in, it, wt, bias, H, W, Ci, Co, stride, up, relu, st);
    case CU_F32: return direct_in<float>(out, in, it, wt, bias, H, W, Ci, Co, stride, up, relu, st);
    default: return direct_in<bf16>(out, in, it, wt, bias, H, W, Ci, Co, stride, up, relu, st);
    }
}
