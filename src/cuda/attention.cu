/* Attention for our shape: the current frame's queries against the visible ring slots' keys
 * (plus the current frame's own), softmax(q k^T / sqrt(dh)) v, flash-style: scores never leave
 * registers, the softmax is online (running max and sum per row), bf16 operands on the tensor
 * cores (mma.sync m16n8k16), fp32 accumulation.
 *
 * A block is 4 warps and 64 query rows of one head (16 per warp); key/value tiles of 64 rows
 * are shared by the 4 warps, double-buffered in shared memory with cp.async. The score
 * fragment of two adjacent 8-key tiles is exactly the A fragment of the P V product, so P
 * goes from the softmax to the second mma without shared memory. V's B fragment needs pairs
 * along keys, which are 16-bit loads from row-major shared V (no transpose pass).
 *
 * At 256x256 one frame has 256 queries: 4 query blocks x 6 heads is far too few blocks for
 * 132 SMs, so the keys are split over gridDim.z parts and a second kernel combines the
 * partial (max, sum, unnormalised output) triples — the flash-decoding scheme. The key
 * count can be read from the device (the visible slots of the ring change while it fills),
 * so one captured graph serves every frame. */
#include <math.h>

#include "cuda/cuda_common.h"

#define AT_BQ 64
#define AT_BK 64

template <int DH> struct att_smem {
    bf16 k[2][AT_BK][DH + 8];
    bf16 v[2][AT_BK][DH + 8];
};

template <int DH>
__device__ __forceinline__ void att_load(att_smem<DH> &sm, int buf, int key0, const bf16 *k, const bf16 *v,
                                         int ldkv, int h, int Nk, int tid) {
    const int chunks = DH / 8; /* 16-byte pieces per row */
#pragma unroll
    for (int i = 0; i < AT_BK * chunks / 128; i++) {
        int idx = tid + 128 * i, r = idx / chunks, c = (idx % chunks) * 8, key = key0 + r;
        bool ok = key < Nk;
        size_t off = (size_t)key * ldkv + h * DH + c;
        cp_async16(&sm.k[buf][r][c], ok ? k + off : k, ok);
        cp_async16(&sm.v[buf][r][c], ok ? v + off : v, ok);
    }
}

__device__ __forceinline__ uint32_t ld_u32(const bf16 *p) { return *reinterpret_cast<const uint32_t *>(p); }
__device__ __forceinline__ uint32_t pack_raw(bf16 lo, bf16 hi) {
    return (uint32_t)__bfloat16_as_ushort(lo) | ((uint32_t)__bfloat16_as_ushort(hi) << 16);
}

/* LDM: fragments of K and V through ldmatrix (x4 loads two n-tiles' B fragments in one
 * instruction; .trans gives V's key-pairs without a transpose) instead of 32- and 16-bit
 * shared loads. dev/cuda/attention.cu times both. */
template <int DH, bool LDM>
__global__ void __launch_bounds__(128) attn_kernel(bf16 *out, float *part_o, float *part_ml, const bf16 *q, int ldq,
                                                   const bf16 *k, const bf16 *v, int ldkv, const int *nk_slots,
                                                   int Nk_arg, int Nq, int H, float scale_log2) {
    extern __shared__ __align__(16) unsigned char att_raw[];
    att_smem<DH> &sm = *reinterpret_cast<att_smem<DH> *>(att_raw);
    pdl_wait();
    pdl_trigger();
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t = lane & 3;
    const int h = blockIdx.y, split = blockIdx.z, splits = gridDim.z;
    const int Nk = nk_slots ? nk_slots[0] * Nk_arg : Nk_arg;
    const int ntiles = (Nk + AT_BK - 1) / AT_BK, per = (ntiles + splits - 1) / splits;
    const int tb = split * per, te = min(ntiles, tb + per);
    const int r0 = blockIdx.x * AT_BQ + warp * 16 + g, r1 = r0 + 8;

    uint32_t qf[DH / 16][4];
#pragma unroll
    for (int kc = 0; kc < DH / 16; kc++) {
        int c = h * DH + kc * 16 + 2 * t;
        qf[kc][0] = r0 < Nq ? ld_u32(q + (size_t)r0 * ldq + c) : 0u;
        qf[kc][1] = r1 < Nq ? ld_u32(q + (size_t)r1 * ldq + c) : 0u;
        qf[kc][2] = r0 < Nq ? ld_u32(q + (size_t)r0 * ldq + c + 8) : 0u;
        qf[kc][3] = r1 < Nq ? ld_u32(q + (size_t)r1 * ldq + c + 8) : 0u;
    }
    float o[DH / 8][4];
#pragma unroll
    for (int nd = 0; nd < DH / 8; nd++) o[nd][0] = o[nd][1] = o[nd][2] = o[nd][3] = 0.0f;
    float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.0f, l1 = 0.0f;

    if (tb < te) {
        att_load<DH>(sm, 0, tb * AT_BK, k, v, ldkv, h, Nk, tid);
        cp_async_commit();
    }
    for (int tile = tb; tile < te; tile++) {
        int buf = (tile - tb) & 1;
        if (tile + 1 < te) {
            att_load<DH>(sm, buf ^ 1, (tile + 1) * AT_BK, k, v, ldkv, h, Nk, tid);
            cp_async_commit();
            cp_async_wait<1>();
        } else {
            cp_async_wait<0>();
        }
        __syncthreads();
        /* S (16 x 64) = Q K^T */
        float s[AT_BK / 8][4];
#pragma unroll
        for (int nt = 0; nt < AT_BK / 8; nt++) s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.0f;
        if (LDM) {
            /* matrix i of lane l's x4: keys np*16 + (i>>1)*8 + l%8, dims kc*16 + (i&1)*8 */
            const int mi = lane >> 3, lr = lane & 7;
#pragma unroll
            for (int np = 0; np < AT_BK / 16; np++)
#pragma unroll
                for (int kc = 0; kc < DH / 16; kc++) {
                    uint32_t b[4];
                    ldmatrix_x4(b, &sm.k[buf][np * 16 + (mi >> 1) * 8 + lr][kc * 16 + (mi & 1) * 8]);
                    mma_bf16_16816(s[2 * np], qf[kc], b);
                    mma_bf16_16816(s[2 * np + 1], qf[kc], b + 2);
                }
        } else {
#pragma unroll
            for (int nt = 0; nt < AT_BK / 8; nt++)
#pragma unroll
                for (int kc = 0; kc < DH / 16; kc++) {
                    uint32_t b[2];
                    b[0] = ld_u32(&sm.k[buf][nt * 8 + g][kc * 16 + 2 * t]);
                    b[1] = ld_u32(&sm.k[buf][nt * 8 + g][kc * 16 + 2 * t + 8]);
                    mma_bf16_16816(s[nt], qf[kc], b);
                }
        }
        /* scale into the log2 domain, mask keys past the end, online softmax */
        int key0 = tile * AT_BK;
        float mx0 = -INFINITY, mx1 = -INFINITY;
#pragma unroll
        for (int nt = 0; nt < AT_BK / 8; nt++) {
#pragma unroll
            for (int e = 0; e < 4; e++) {
                int key = key0 + nt * 8 + 2 * t + (e & 1);
                s[nt][e] = key < Nk ? s[nt][e] * scale_log2 : -INFINITY;
            }
            mx0 = fmaxf(mx0, fmaxf(s[nt][0], s[nt][1]));
            mx1 = fmaxf(mx1, fmaxf(s[nt][2], s[nt][3]));
        }
        mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 1));
        mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 2));
        mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 1));
        mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 2));
        /* every tile in range holds a valid key, so the new maxima are finite */
        float mn0 = fmaxf(m0, mx0), mn1 = fmaxf(m1, mx1);
        float a0 = exp2f(m0 - mn0), a1 = exp2f(m1 - mn1);
        m0 = mn0, m1 = mn1;
        float ls0 = 0.0f, ls1 = 0.0f;
#pragma unroll
        for (int nt = 0; nt < AT_BK / 8; nt++) {
            s[nt][0] = exp2f(s[nt][0] - m0), s[nt][1] = exp2f(s[nt][1] - m0);
            s[nt][2] = exp2f(s[nt][2] - m1), s[nt][3] = exp2f(s[nt][3] - m1);
            ls0 += s[nt][0] + s[nt][1], ls1 += s[nt][2] + s[nt][3];
        }
        l0 = l0 * a0 + ls0, l1 = l1 * a1 + ls1; /* per-thread partial sums; reduced at the end */
#pragma unroll
        for (int nd = 0; nd < DH / 8; nd++) o[nd][0] *= a0, o[nd][1] *= a0, o[nd][2] *= a1, o[nd][3] *= a1;
        /* O (16 x DH) += P (16 x 64) V (64 x DH) */
#pragma unroll
        for (int kc = 0; kc < AT_BK / 16; kc++) {
            uint32_t pa[4];
            pa[0] = pack_bf16x2(s[2 * kc][0], s[2 * kc][1]);
            pa[1] = pack_bf16x2(s[2 * kc][2], s[2 * kc][3]);
            pa[2] = pack_bf16x2(s[2 * kc + 1][0], s[2 * kc + 1][1]);
            pa[3] = pack_bf16x2(s[2 * kc + 1][2], s[2 * kc + 1][3]);
            if (LDM) {
                /* matrix i: keys kc*16 + (i&1)*8 + l%8, dims np*16 + (i>>1)*8, transposed */
                const int mi = lane >> 3, lr = lane & 7;
#pragma unroll
                for (int np = 0; np < DH / 16; np++) {
                    uint32_t b[4];
                    ldmatrix_x4_trans(b, &sm.v[buf][kc * 16 + (mi & 1) * 8 + lr][np * 16 + (mi >> 1) * 8]);
                    mma_bf16_16816(o[2 * np], pa, b);
                    mma_bf16_16816(o[2 * np + 1], pa, b + 2);
                }
            } else {
                int kr = kc * 16 + 2 * t;
#pragma unroll
                for (int nd = 0; nd < DH / 8; nd++) {
                    int dc = nd * 8 + g;
                    uint32_t b[2];
                    b[0] = pack_raw(sm.v[buf][kr][dc], sm.v[buf][kr + 1][dc]);
                    b[1] = pack_raw(sm.v[buf][kr + 8][dc], sm.v[buf][kr + 9][dc]);
                    mma_bf16_16816(o[nd], pa, b);
                }
            }
        }
        __syncthreads();
    }
    l0 += __shfl_xor_sync(0xffffffffu, l0, 1);
    l0 += __shfl_xor_sync(0xffffffffu, l0, 2);
    l1 += __shfl_xor_sync(0xffffffffu, l1, 1);
    l1 += __shfl_xor_sync(0xffffffffu, l1, 2);
    const int D = H * DH;
    if (splits == 1) {
        float i0 = 1.0f / l0, i1 = 1.0f / l1;
#pragma unroll
        for (int nd = 0; nd < DH / 8; nd++) {
            int c = h * DH + nd * 8 + 2 * t;
            if (r0 < Nq)
                *reinterpret_cast<__nv_bfloat162 *>(out + (size_t)r0 * D + c) = __floats2bfloat162_rn(o[nd][0] * i0, o[nd][1] * i0);
            if (r1 < Nq)
                *reinterpret_cast<__nv_bfloat162 *>(out + (size_t)r1 * D + c) = __floats2bfloat162_rn(o[nd][2] * i1, o[nd][3] * i1);
        }
        return;
    }
#pragma unroll
    for (int nd = 0; nd < DH / 8; nd++) {
        int c = h * DH + nd * 8 + 2 * t;
        if (r0 < Nq) *reinterpret_cast<float2 *>(part_o + ((size_t)split * Nq + r0) * D + c) = make_float2(o[nd][0], o[nd][1]);
        if (r1 < Nq) *reinterpret_cast<float2 *>(part_o + ((size_t)split * Nq + r1) * D + c) = make_float2(o[nd][2], o[nd][3]);
    }
    if (t == 0) {
        if (r0 < Nq) *reinterpret_cast<float2 *>(part_ml + (((size_t)split * Nq + r0) * H + h) * 2) = make_float2(m0, l0);
        if (r1 < Nq) *reinterpret_cast<float2 *>(part_ml + (((size_t)split * Nq + r1) * H + h) * 2) = make_float2(m1, l1);
    }
}

/* out = sum_s 2^(m_s - M) o_s / sum_s 2^(m_s - M) l_s; an empty split has m = -inf, l = 0. */
__global__ void attn_combine_kernel(bf16 *out, const float *part_o, const float *part_ml, int Nq, int H, int DH,
                                    int splits) {
    pdl_wait();
    pdl_trigger();
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    int D = H * DH;
    if (i >= (size_t)Nq * D) return;
    int col = (int)(i % D), r = (int)(i / D), h = col / DH;
    float M = -INFINITY;
    for (int s = 0; s < splits; s++) M = fmaxf(M, part_ml[(((size_t)s * Nq + r) * H + h) * 2]);
    float num = 0.0f, den = 0.0f;
    for (int s = 0; s < splits; s++) {
        const float *ml = part_ml + (((size_t)s * Nq + r) * H + h) * 2;
        float w = exp2f(ml[0] - M);
        den += w * ml[1];
        num += w * part_o[((size_t)s * Nq + r) * D + col];
    }
    out[i] = f2bf(num / den);
}

template <int DH> static size_t att_smem_bytes() { return sizeof(att_smem<DH>); }

extern "C" mg_status cu_attention_setup(void) {
    CU_TRY(cudaFuncSetAttribute(attn_kernel<64, false>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)att_smem_bytes<64>()));
    CU_TRY(cudaFuncSetAttribute(attn_kernel<128, false>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)att_smem_bytes<128>()));
    CU_TRY(cudaFuncSetAttribute(attn_kernel<64, true>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)att_smem_bytes<64>()));
    CU_TRY(cudaFuncSetAttribute(attn_kernel<128, true>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)att_smem_bytes<128>()));
    return MG_OK;
}

extern "C" int cu_attention_ok(int dh) { return dh == 64 || dh == 128; }

extern "C" int cu_attention_splits(const cu_ctx *c, int Nq, int Nk_max, int H) {
    int blocks = (Nq + AT_BQ - 1) / AT_BQ * H, ntiles = (Nk_max + AT_BK - 1) / AT_BK;
    int sms = cu_ctx_sm_count(c);
    if (blocks >= sms) return 1; /* the card is full without splitting: splits only add the combine */
    int want = (3 * sms / 2 + blocks - 1) / blocks; /* about 1.5 blocks per SM */
    int cap = ntiles / 2 > 1 ? ntiles / 2 : 1;                 /* at least two tiles per split */
    if (want > cap) want = cap;
    if (want > 16) want = 16;
    return want < 1 ? 1 : want;
}

extern "C" size_t cu_attention_scratch_floats(int Nq, int H, int dh, int splits) {
    return splits <= 1 ? 0 : (size_t)splits * Nq * H * (dh + 2);
}

template <int DH>
static cudaError_t attn_launch(int ldm, dim3 grid, cudaStream_t st, bf16 *out, float *part_o, float *part_ml,
                               const bf16 *q, int ldq, const bf16 *k, const bf16 *v, int ldkv, const int *nk_slots,
                               int Nk, int Nq, int H, float scale_log2) {
    if (ldm)
        return cu_launch(attn_kernel<DH, true>, grid, 128, att_smem_bytes<DH>(), st, out, part_o, part_ml, q, ldq, k, v,
                         ldkv, nk_slots, Nk, Nq, H, scale_log2);
    return cu_launch(attn_kernel<DH, false>, grid, 128, att_smem_bytes<DH>(), st, out, part_o, part_ml, q, ldq, k, v,
                     ldkv, nk_slots, Nk, Nq, H, scale_log2);
}

extern "C" mg_status cu_attention(bf16_t *out, const bf16_t *q, int ldq, const bf16_t *k, const bf16_t *v, int ldkv,
                                  const int *nk_slots, int Nk, int Nq, int H, int dh, int splits, float *scratch,
                                  cudaStream_t st) {
    return cu_attention_v(2, out, q, ldq, k, v, ldkv, nk_slots, Nk, Nq, H, dh, splits, scratch, st);
}

extern "C" mg_status cu_attention_v(int version, bf16_t *out, const bf16_t *q, int ldq, const bf16_t *k,
                                    const bf16_t *v, int ldkv, const int *nk_slots, int Nk, int Nq, int H, int dh,
                                    int splits, float *scratch, cudaStream_t st) {
    if (!cu_attention_ok(dh) || ldq % 8 || ldkv % 8)
        return mg_fail(MG_ERR_UNSUPPORTED, "CUDA attention: head width %d (64 or 128), strides %d/%d (multiples of 8)",
                       dh, ldq, ldkv);
    if (Nq <= 0 || H <= 0) return MG_OK;
    if (splits < 1) splits = 1;
    float *part_o = scratch, *part_ml = scratch ? scratch + (size_t)splits * Nq * H * dh : nullptr;
    if (splits > 1 && !scratch) return mg_fail(MG_ERR_ARG, "CUDA attention: %d splits need scratch", splits);
    float scale_log2 = (float)(1.0 / sqrt((double)dh) * 1.4426950408889634);
    dim3 grid((Nq + AT_BQ - 1) / AT_BQ, H, splits);
    int ldm = version >= 2;
    if (dh == 64)
        CU_TRY(attn_launch<64>(ldm, grid, st, (bf16 *)out, part_o, part_ml, (const bf16 *)q, ldq, (const bf16 *)k,
                               (const bf16 *)v, ldkv, nk_slots, Nk, Nq, H, scale_log2));
    else
        CU_TRY(attn_launch<128>(ldm, grid, st, (bf16 *)out, part_o, part_ml, (const bf16 *)q, ldq, (const bf16 *)k,
                                (const bf16 *)v, ldkv, nk_slots, Nk, Nq, H, scale_log2));
    if (splits > 1) {
        size_t n = (size_t)Nq * H * dh;
        CU_LAUNCH(attn_combine_kernel, cu_blocks(n, 256), 256, 0, st, (bf16 *)out, (const float *)part_o,
                  (const float *)part_ml, Nq, H, dh, splits);
    }
    return MG_OK;
}
