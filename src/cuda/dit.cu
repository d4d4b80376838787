/* The DiT's GEMMs for small token counts, with their neighbours fused in (cu_dgemm_*).
 *
 * At 256 tokens a layer through cuBLASLt was nine kernels (qkv GEMM, RoPE + ring write,
 * attention + combine, proj GEMM, gated residual + layernorm, fc1, fc2, gated residual +
 * layernorm), each running a few µs for ~0.1 GFLOP: the layer was launch- and latency-bound.
 * Here a layer is five (six with the attention's combine):
 *
 *   qkv   A = LN(x)*(1+scale)+shift computed in the prologue (x fp32, rows held by the block),
 *         epilogue + bias, RoPE on q and k, q to the qkv buffer, k and v to the ring slot
 *   attn  (attention.cu)
 *   proj  A = attention output (bf16), epilogue x += gate1 * (acc + bias)
 *   fc1   A = LN(x) modulated as above, epilogue GELU(acc + bias) -> bf16
 *   fc2   A = hidden (bf16), epilogue x += gate2 * (acc + bias)
 *
 * so the residual stream x never leaves fp32, no layernorm or element-wise pass remains, and
 * every kernel waits on its predecessor with griddepcontrol (cuda_common.h): the weights of
 * the first pipeline stages are fetched before the wait, overlapping the previous kernel.
 *
 * Tiles: BM x BN outputs per block of 4 warps (2 x 2), mma.sync m16n8k16 bf16 with fp32
 * accumulation, ldmatrix fragments, k-blocks of 32 through a cp.async pipeline of NS stages
 * (the layout and fragment code of conv.cu's implicit GEMM). In LN mode the block's BM rows of
 * A are normalised once into shared memory (whole K) and only the weights stream.
 *
 * Long K and few tiles (proj and fc2 at 256 tokens: 24 tiles of 64x64) are split over K
 * across a thread-block cluster of S blocks: each block reduces its slice, the partial tiles
 * meet in distributed shared memory, and block r of the cluster sums rows r*BM/S.. of all S
 * partials in rank order (deterministic: no atomics) and runs the epilogue for them.
 *
 * Status: correct (make test-gpu) but measured SLOWER than cuBLASLt plus the separate kernels
 * on an H200 (s 256x256: 3.29 vs 2.51 ms per frame; ncu: the LN-prologue GEMMs 18-26 µs each
 * against 5-6 µs), so the frame step uses it only with MG_CUDA_FUSED=1 (dev/cuda/README.md). */
#include <cooperative_groups.h>
#include <string.h>

#include "cuda/cuda_common.h"

namespace cg = cooperative_groups;

#define DG_BK 32
#define DG_LDS (DG_BK + 8) /* shared row stride of a pipeline stage (bf16): 80 bytes */
#define DG_LN_MAXKV 12     /* LN mode: K <= 64 * 12 = 768 */

struct dg_params {
    int M, N, K;
    const bf16 *a;
    const float *x, *shift, *scale;
    const bf16 *w;
    const void *bias;
    void *out;
    const float *gate;
    int ldq;
    bf16 *k_ring, *v_ring;
    const float *cos_sp, *sin_sp;
    const cu_frame_params *prm;
    int heads, dh;
};

/* The CPU's GELU (act.c): 0.5x(1+tanh z) = x / (1 + exp(-2z)), z = sqrt(2/pi)(x + 0.044715x^3). */
__device__ __forceinline__ float dg_gelu(float x) {
    const float k2 = 2.0f * 0.7978845608028654f;
    return x / (1.0f + expf(-k2 * (x + 0.044715f * x * x * x)));
}

/* Output pair (row, col), (row, col + 1) of the GEMM, col even, both inside the matrix. */
template <int EPI>
__device__ __forceinline__ void dg_store(const dg_params &p, int row, int col, float v0, float v1) {
    if (EPI == CU_DG_F32) {
        if (p.bias) {
            const float *b = (const float *)p.bias;
            v0 += b[col], v1 += b[col + 1];
        }
        *reinterpret_cast<float2 *>((float *)p.out + (size_t)row * p.N + col) = make_float2(v0, v1);
    } else if (EPI == CU_DG_GELU) {
        if (p.bias) {
            const bf16 *b = (const bf16 *)p.bias;
            v0 += bf2f(b[col]), v1 += bf2f(b[col + 1]);
        }
        *reinterpret_cast<__nv_bfloat162 *>((bf16 *)p.out + (size_t)row * p.N + col) =
            __floats2bfloat162_rn(dg_gelu(v0), dg_gelu(v1));
    } else if (EPI == CU_DG_RESID) {
        if (p.bias) {
            const float *b = (const float *)p.bias;
            v0 += b[col], v1 += b[col + 1];
        }
        float2 *xp = reinterpret_cast<float2 *>((float *)p.out + (size_t)row * p.N + col);
        float2 xv = *xp;
        xv.x += p.gate[col] * v0;
        xv.y += p.gate[col + 1] * v1;
        *xp = xv;
    } else { /* CU_DG_QKV */
        if (p.bias) {
            const bf16 *b = (const bf16 *)p.bias;
            v0 += bf2f(b[col]), v1 += bf2f(b[col + 1]);
        }
        const int d = p.heads * p.dh, sec = col / d, cc = col - sec * d;
        if (sec < 2) { /* RoPE on the pair (2j, 2j+1) of its head, as rope_kv_kernel */
            const int npairs = p.dh >> 1, nt = npairs >> 2, j = (cc % p.dh) >> 1;
            float c, s;
            if (j < nt) {
                c = p.prm->tcos[j], s = p.prm->tsin[j];
            } else {
                c = p.cos_sp[(size_t)row * npairs + j], s = p.sin_sp[(size_t)row * npairs + j];
            }
            float r0 = v0 * c - v1 * s, r1 = v0 * s + v1 * c;
            v0 = r0, v1 = r1;
        }
        __nv_bfloat162 pr = __floats2bfloat162_rn(v0, v1);
        if (sec == 0) {
            *reinterpret_cast<__nv_bfloat162 *>((bf16 *)p.out + (size_t)row * p.ldq + col) = pr;
        } else {
            bf16 *ring = sec == 1 ? p.k_ring : p.v_ring;
            *reinterpret_cast<__nv_bfloat162 *>(ring + ((size_t)p.prm->slot * p.M + row) * d + cc) = pr;
        }
    }
}

template <int BM, int BN, int NS, int AM, int EPI, bool SPLIT>
__global__ void __launch_bounds__(128) dgemm_kernel(dg_params p) {
    constexpr int WM = 2, WN = 2, MT = BM / (WM * 16), NT = BN / (WN * 8);
    static_assert(MT >= 1 && NT >= 2 && NT % 2 == 0, "tile");
    static_assert(BM % 16 == 0 && (BM * 4) % 128 == 0 && (BN * 4) % 128 == 0, "tile loads");
    extern __shared__ __align__(16) unsigned char dg_raw[];
    bf16 *sB = reinterpret_cast<bf16 *>(dg_raw); /* [NS][BN][DG_LDS] */
    bf16 *sA = sB + NS * BN * DG_LDS;            /* LN: [BM][K + 8]; else [NS][BM][DG_LDS] */
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t = lane & 3;
    const int wm = warp / WN, wn = warp % WN;
    const int n0 = blockIdx.x * BN, m0 = blockIdx.y * BM, K = p.K, KP = K + 8;
    const int nkl = K / DG_BK / (int)gridDim.z, kb0 = (int)blockIdx.z * nkl; /* this block's k-blocks */

    auto load_b = [&](int buf, int kb) {
#pragma unroll
        for (int j = 0; j < BN * 4 / 128; j++) {
            int idx = tid + 128 * j, r = idx >> 2, c = (idx & 3) * 8, n = n0 + r;
            bool ok = n < p.N;
            cp_async16(sB + (buf * BN + r) * DG_LDS + c, ok ? p.w + (size_t)n * K + kb * DG_BK + c : p.w, ok);
        }
    };
    auto load_a = [&](int buf, int kb) {
#pragma unroll
        for (int j = 0; j < BM * 4 / 128; j++) {
            int idx = tid + 128 * j, r = idx >> 2, c = (idx & 3) * 8, m = m0 + r;
            bool ok = m < p.M;
            cp_async16(sA + (buf * BM + r) * DG_LDS + c, ok ? p.a + (size_t)m * K + kb * DG_BK + c : p.a, ok);
        }
    };

    /* the weights do not depend on the previous kernel: start them before waiting on it */
#pragma unroll
    for (int s = 0; s < NS - 1; s++)
        if (s < nkl) load_b(s, kb0 + s);
    pdl_wait();
    pdl_trigger();

    if (AM == CU_DG_A_LN) {
        /* LN(x) * (1 + scale) + shift for the block's rows, whole K, into sA (bf16). Each warp
         * takes BM/4 rows, 4 at a time (their loads in flight together), a row as float2 per
         * lane: two-pass statistics in registers as ln_mod_kernel. */
        const int KV = K / 64, RPW = BM / 4;
        for (int rg = 0; rg < RPW; rg += 4) {
            float2 v[4][DG_LN_MAXKV];
#pragma unroll
            for (int j = 0; j < 4; j++) {
                int r = m0 + warp * RPW + rg + j;
                const float2 *xr = reinterpret_cast<const float2 *>(p.x + (size_t)(r < p.M ? r : 0) * K);
#pragma unroll
                for (int i = 0; i < DG_LN_MAXKV; i++) v[j][i] = i < KV ? xr[lane + 32 * i] : make_float2(0.0f, 0.0f);
            }
#pragma unroll
            for (int j = 0; j < 4; j++) {
                float sum = 0.0f;
#pragma unroll
                for (int i = 0; i < DG_LN_MAXKV; i++)
                    if (i < KV) sum += v[j][i].x + v[j][i].y;
#pragma unroll
                for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
                float mean = sum / (float)K, ss = 0.0f;
#pragma unroll
                for (int i = 0; i < DG_LN_MAXKV; i++)
                    if (i < KV) {
                        float dx = v[j][i].x - mean, dy = v[j][i].y - mean;
                        ss += dx * dx + dy * dy;
                    }
#pragma unroll
                for (int o = 16; o > 0; o >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, o);
                float rstd = rsqrtf(ss / (float)K + 1e-5f);
                int rl = warp * RPW + rg + j;
                bool valid = m0 + rl < p.M;
                bf16 *dst = sA + rl * KP;
#pragma unroll
                for (int i = 0; i < DG_LN_MAXKV; i++)
                    if (i < KV) {
                        int c = 2 * lane + 64 * i;
                        float2 sh = *reinterpret_cast<const float2 *>(p.shift + c);
                        float2 sc = *reinterpret_cast<const float2 *>(p.scale + c);
                        uint32_t pk = valid ? pack_bf16x2((v[j][i].x - mean) * rstd * (1.0f + sc.x) + sh.x,
                                                          (v[j][i].y - mean) * rstd * (1.0f + sc.y) + sh.y)
                                            : 0u;
                        *reinterpret_cast<uint32_t *>(dst + c) = pk;
                    }
            }
        }
    }
    /* the A stages (a group is committed even when empty: "all but NS-2 groups done" then
     * always means "k-block kb has landed"; the weights issued above join group 0) */
#pragma unroll
    for (int s = 0; s < NS - 1; s++) {
        if (AM == CU_DG_A_BF16 && s < nkl) load_a(s, kb0 + s);
        cp_async_commit();
    }

    float acc[MT][NT][4];
#pragma unroll
    for (int mt = 0; mt < MT; mt++)
#pragma unroll
        for (int nt = 0; nt < NT; nt++) acc[mt][nt][0] = acc[mt][nt][1] = acc[mt][nt][2] = acc[mt][nt][3] = 0.0f;

    const int mi = lane >> 3, lr = lane & 7;
    for (int kb = 0; kb < nkl; kb++) {
        cp_async_wait<NS - 2>();
        __syncthreads(); /* k-block kb visible to all (and, the first time, the LN rows); everyone is done with kb-1's buffer */
        int nxt = kb + NS - 1;
        if (nxt < nkl) {
            load_b(nxt % NS, kb0 + nxt);
            if (AM == CU_DG_A_BF16) load_a(nxt % NS, kb0 + nxt);
        }
        cp_async_commit();
        const int buf = kb % NS;
        const bf16 *As = AM == CU_DG_A_LN ? sA + (kb0 + kb) * DG_BK : sA + buf * BM * DG_LDS;
        const int lda = AM == CU_DG_A_LN ? KP : DG_LDS;
        const bf16 *Bs = sB + buf * BN * DG_LDS;
#pragma unroll
        for (int ks = 0; ks < DG_BK; ks += 16) {
            uint32_t a[MT][4], b[NT][2];
#pragma unroll
            for (int mt = 0; mt < MT; mt++) /* matrices: rows +0/+8 (i&1), k +0/+8 (i>>1) */
                ldmatrix_x4(a[mt], As + ((wm * MT + mt) * 16 + (mi & 1) * 8 + lr) * lda + ks + (mi >> 1) * 8);
#pragma unroll
            for (int nt = 0; nt < NT; nt += 2) { /* matrices: k +0/+8 (i&1), n-tile +0/+1 (i>>1) */
                uint32_t r[4];
                ldmatrix_x4(r, Bs + ((wn * NT + nt) * 8 + (mi >> 1) * 8 + lr) * DG_LDS + ks + (mi & 1) * 8);
                b[nt][0] = r[0], b[nt][1] = r[1], b[nt + 1][0] = r[2], b[nt + 1][1] = r[3];
            }
#pragma unroll
            for (int mt = 0; mt < MT; mt++)
#pragma unroll
                for (int nt = 0; nt < NT; nt++) mma_bf16_16816(acc[mt][nt], a[mt], b[nt]);
        }
    }
    cp_async_wait<0>();

    if constexpr (!SPLIT) {
#pragma unroll
        for (int mt = 0; mt < MT; mt++)
#pragma unroll
            for (int nt = 0; nt < NT; nt++) {
                int col = n0 + (wn * NT + nt) * 8 + 2 * t;
                if (col >= p.N) continue;
#pragma unroll
                for (int half = 0; half < 2; half++) {
                    int row = m0 + (wm * MT + mt) * 16 + g + 8 * half;
                    if (row < p.M) dg_store<EPI>(p, row, col, acc[mt][nt][2 * half], acc[mt][nt][2 * half + 1]);
                }
            }
        return;
    }

    /* split over K: partial tile to shared memory, then block r of the cluster sums rows
     * [r*BM/S, (r+1)*BM/S) of every rank's partial, in rank order, and stores them */
    constexpr int RLD = BN + 4; /* floats */
    float *red = reinterpret_cast<float *>(dg_raw);
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
    const int S = (int)gridDim.z, rank = (int)cluster.block_rank(), rows = BM / S;
    for (int idx = tid; idx < rows * (BN / 2); idx += 128) {
        int rl = rank * rows + idx / (BN / 2), cl = 2 * (idx % (BN / 2));
        float2 sum = make_float2(0.0f, 0.0f);
        for (int q = 0; q < S; q++) {
            const float *rp = cluster.map_shared_rank(red, q);
            float2 v = *reinterpret_cast<const float2 *>(rp + rl * RLD + cl);
            sum.x += v.x, sum.y += v.y;
        }
        int row = m0 + rl, col = n0 + cl;
        if (row < p.M && col < p.N) dg_store<EPI>(p, row, col, sum.x, sum.y);
    }
    cluster.sync(); /* no block leaves while another still reads its shared memory */
}

/* ---- plans and launches ---------------------------------------------------------------- */

#define DG_NS_LN 4
#define DG_NS_BF16 5

static const int dg_tiles[3][2] = {{64, 64}, {32, 64}, {32, 32}};

static size_t dg_smem(int tile, int amode, int K, int split) {
    int BM = dg_tiles[tile][0], BN = dg_tiles[tile][1];
    size_t b;
    if (amode == CU_DG_A_LN)
        b = (size_t)DG_NS_LN * BN * DG_LDS * 2 + (size_t)BM * (K + 8) * 2;
    else
        b = (size_t)DG_NS_BF16 * (BM + BN) * DG_LDS * 2;
    size_t red = split > 1 ? (size_t)BM * (BN + 4) * 4 : 0;
    return b > red ? b : red;
}

typedef void (*dg_kernel_t)(dg_params);

template <int BM, int BN>
static dg_kernel_t dg_pick_tile(int amode, int epi, int split) {
    if (amode == CU_DG_A_LN) {
        switch (epi) {
        case CU_DG_F32: return dgemm_kernel<BM, BN, DG_NS_LN, CU_DG_A_LN, CU_DG_F32, false>;
        case CU_DG_GELU: return dgemm_kernel<BM, BN, DG_NS_LN, CU_DG_A_LN, CU_DG_GELU, false>;
        case CU_DG_QKV: return dgemm_kernel<BM, BN, DG_NS_LN, CU_DG_A_LN, CU_DG_QKV, false>;
        default: return nullptr;
        }
    }
    switch (epi) {
    case CU_DG_F32:
        return split > 1 ? dgemm_kernel<BM, BN, DG_NS_BF16, CU_DG_A_BF16, CU_DG_F32, true>
                         : dgemm_kernel<BM, BN, DG_NS_BF16, CU_DG_A_BF16, CU_DG_F32, false>;
    case CU_DG_RESID:
        return split > 1 ? dgemm_kernel<BM, BN, DG_NS_BF16, CU_DG_A_BF16, CU_DG_RESID, true>
                         : dgemm_kernel<BM, BN, DG_NS_BF16, CU_DG_A_BF16, CU_DG_RESID, false>;
    case CU_DG_GELU: return split > 1 ? nullptr : dgemm_kernel<BM, BN, DG_NS_BF16, CU_DG_A_BF16, CU_DG_GELU, false>;
    default: return nullptr;
    }
}

static dg_kernel_t dg_kernel(int tile, int amode, int epi, int split) {
    switch (tile) {
    case 0: return dg_pick_tile<64, 64>(amode, epi, split);
    case 1: return dg_pick_tile<32, 64>(amode, epi, split);
    default: return dg_pick_tile<32, 32>(amode, epi, split);
    }
}

extern "C" int cu_dgemm_ok(int M, int N, int K, int amode) {
    if (M <= 0 || N <= 0 || N % 2 || K <= 0 || K % DG_BK) return 0;
    if (amode == CU_DG_A_LN && (K % 64 || K > 64 * DG_LN_MAXKV)) return 0;
    return 1;
}

extern "C" mg_status cu_dgemm_plan(const cu_ctx *c, cu_dgemm *g, int M, int N, int K, int amode, int epi,
                                   int max_split) {
    memset(g, 0, sizeof *g);
    if (!cu_dgemm_ok(M, N, K, amode) || (amode == CU_DG_A_LN && epi == CU_DG_RESID) ||
        (amode == CU_DG_A_BF16 && epi == CU_DG_QKV))
        return mg_fail(MG_ERR_UNSUPPORTED, "CUDA fused GEMM: %dx%dx%d (A mode %d, epilogue %d) not supported", M, N, K,
                       amode, epi);
    /* the largest tile that still gives ~2/3 of a block per SM, splitting K (clusters of 2 or
     * 4) before shrinking the tile where the A operand streams; else the smallest tile */
    int target = 2 * cu_ctx_sm_count(c) / 3, nk = K / DG_BK, tile = 2, split = 1;
    for (int ti = 0, found = 0; ti < 3 && !found; ti++) {
        int tiles = (int)(cu_blocks((size_t)M, (unsigned)dg_tiles[ti][0]) * cu_blocks((size_t)N, (unsigned)dg_tiles[ti][1]));
        for (int s = 1; s <= 4 && !found; s *= 2) {
            if (s > 1 && (amode != CU_DG_A_BF16 || epi == CU_DG_GELU || s > max_split || nk % s || nk / s < 2 ||
                          dg_tiles[ti][0] % s))
                continue;
            if (tiles * s >= target) tile = ti, split = s, found = 1;
        }
    }
    g->M = M, g->N = N, g->K = K, g->amode = amode, g->epi = epi, g->tile = tile, g->split = split;
    g->smem = dg_smem(tile, amode, K, split);
    dg_kernel_t k = dg_kernel(tile, amode, epi, split);
    if (!k) return mg_fail(MG_ERR_UNSUPPORTED, "CUDA fused GEMM: no kernel for A mode %d, epilogue %d", amode, epi);
    CU_TRY(cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)g->smem));
    return MG_OK;
}

extern "C" mg_status cu_dgemm_run(const cu_dgemm *g, const cu_dgemm_args *a, cudaStream_t st) {
    dg_params p;
    memset(&p, 0, sizeof p);
    p.M = g->M, p.N = g->N, p.K = g->K;
    p.a = (const bf16 *)a->a, p.x = a->x, p.shift = a->shift, p.scale = a->scale;
    p.w = (const bf16 *)a->w, p.bias = a->bias, p.out = a->out, p.gate = a->gate, p.ldq = a->ldq;
    p.k_ring = (bf16 *)a->k_ring, p.v_ring = (bf16 *)a->v_ring, p.cos_sp = a->cos_sp, p.sin_sp = a->sin_sp;
    p.prm = a->p, p.heads = a->heads, p.dh = a->dh;
    if (g->epi == CU_DG_QKV && (p.heads * p.dh * 3 != g->N || p.dh % 2 || p.dh / 2 / 4 > CU_MAX_TPAIRS || !p.prm))
        return mg_fail(MG_ERR_ARG, "CUDA fused GEMM: qkv epilogue needs N = 3 x heads x dh and the frame parameters");
    int BM = dg_tiles[g->tile][0], BN = dg_tiles[g->tile][1];
    dim3 grid(cu_blocks((size_t)g->N, (unsigned)BN), cu_blocks((size_t)g->M, (unsigned)BM), (unsigned)g->split);
    dg_kernel_t k = dg_kernel(g->tile, g->amode, g->epi, g->split);
    CU_TRY(cu_launch_ex(k, grid, 128, g->smem, st, (unsigned)g->split, p));
    return MG_OK;
}
