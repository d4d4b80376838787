/* LayerNorm (no affine, eps 1e-5, biased variance) + adaLN modulation, optionally preceded by
 * the gated residual add of the branch that just finished: one warp per row, the row held in
 * registers, so x is read once and written once. The residual stream x stays fp32; the
 * normalised output is bf16 because it only feeds a GEMM. Two-pass statistics as on the CPU. */
#include <cuda_fp8.h>
#include <stdlib.h>

#include "cuda/cuda_common.h"

#define LN_ROWS_PER_BLOCK 8

/* Every global load of a row is issued before the first store: with the stores in the same
 * unrolled loop (and no __restrict__) the compiler had to keep each iteration's loads behind
 * the previous iteration's store, a chain of ~12 dependent L2 round trips per row (11 µs per
 * call at 256 x 384 on an H200, the largest DiT kernel; ncu, dev/cuda/README.md). */
/* Q8: the output goes to e4m3 q (N, C) = out / *qs (one scale for the tensor, given), for the
 * FP8 GEMMs, instead of bf16 out. */
template <int MAXV, bool Q8 = false>
__global__ void ln_mod_kernel(bf16 *__restrict__ out, float *__restrict__ x, const float *__restrict__ y,
                              const float *__restrict__ gate, const float *__restrict__ shift,
                              const float *__restrict__ scale, int N, int C, uint8_t *__restrict__ q,
                              const float *__restrict__ qs) {
    pdl_wait();
    pdl_trigger();
    int row = blockIdx.x * LN_ROWS_PER_BLOCK + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (row >= N) return;
    float *xr = x + (size_t)row * C;
    const float *yr = y ? y + (size_t)row * C : nullptr;
    float v[MAXV], sum = 0.0f;
#pragma unroll
    for (int i = 0; i < MAXV; i++) {
        int c = lane + 32 * i;
        v[i] = c < C ? xr[c] : 0.0f;
    }
    if (yr) {
        float yv[MAXV], gv[MAXV];
#pragma unroll
        for (int i = 0; i < MAXV; i++) {
            int c = lane + 32 * i;
            yv[i] = c < C ? yr[c] : 0.0f;
            gv[i] = c < C ? gate[c] : 0.0f;
        }
#pragma unroll
        for (int i = 0; i < MAXV; i++) {
            int c = lane + 32 * i;
            v[i] += gv[i] * yv[i];
            if (c < C) xr[c] = v[i];
        }
    }
#pragma unroll
    for (int i = 0; i < MAXV; i++) sum += v[i]; /* v = 0 past the row's end */
    for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
    float mean = sum / (float)C, ss = 0.0f;
#pragma unroll
    for (int i = 0; i < MAXV; i++) {
        int c = lane + 32 * i;
        if (c < C) {
            float d = v[i] - mean;
            ss += d * d;
        }
    }
    for (int o = 16; o > 0; o >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, o);
    if (Q8) {
        if (!q) return;
        float rstd = rsqrtf(ss / (float)C + 1e-5f), inv = 1.0f / *qs;
#pragma unroll
        for (int i = 0; i < MAXV; i++) {
            int c = lane + 32 * i;
            v[i] = c < C ? (v[i] - mean) * rstd * (1.0f + scale[c]) + shift[c] : 0.0f;
        }
        uint8_t *qrow = q + (size_t)row * C;
#pragma unroll
        for (int i = 0; i < MAXV; i++) {
            int c = lane + 32 * i;
            if (c < C) qrow[c] = (uint8_t)__nv_cvt_float_to_fp8(v[i] * inv, __NV_SATFINITE, __NV_E4M3);
        }
        return;
    }
    if (!out) return;
    float rstd = rsqrtf(ss / (float)C + 1e-5f);
    bf16 *orow = out + (size_t)row * C;
    /* the modulation 16 columns per lane at a time: loads, then stores */
#pragma unroll
    for (int i0 = 0; i0 < MAXV; i0 += 16) {
        float sh[16], sc[16];
#pragma unroll
        for (int k = 0; k < 16; k++) {
            int i = i0 + k, c = lane + 32 * i;
            bool ok = i < MAXV && c < C;
            sh[k] = ok ? shift[c] : 0.0f;
            sc[k] = ok ? scale[c] : 0.0f;
        }
#pragma unroll
        for (int k = 0; k < 16; k++) {
            int i = i0 + k, c = lane + 32 * i;
            if (i < MAXV && c < C) orow[c] = f2bf((v[i] - mean) * rstd * (1.0f + sc[k]) + sh[k]);
        }
    }
}

/* The first slice's kernel, kept for the A/B (MG_CUDA_LN2=0): loads and stores interleaved. */
template <int MAXV>
__global__ void ln_mod_kernel_v1(bf16 *out, float *x, const float *y, const float *gate, const float *shift,
                              const float *scale, int N, int C) {
    pdl_wait();
    pdl_trigger();
    int row = blockIdx.x * LN_ROWS_PER_BLOCK + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (row >= N) return;
    float *xr = x + (size_t)row * C;
    const float *yr = y ? y + (size_t)row * C : nullptr;
    float v[MAXV], sum = 0.0f;
#pragma unroll
    for (int i = 0; i < MAXV; i++) {
        int c = lane + 32 * i;
        v[i] = 0.0f;
        if (c < C) {
            float a = xr[c];
            if (yr) {
                a += gate[c] * yr[c];
                xr[c] = a;
            }
            v[i] = a;
            sum += a;
        }
    }
    for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
    float mean = sum / (float)C, ss = 0.0f;
#pragma unroll
    for (int i = 0; i < MAXV; i++) {
        int c = lane + 32 * i;
        if (c < C) {
            float d = v[i] - mean;
            ss += d * d;
        }
    }
    for (int o = 16; o > 0; o >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, o);
    if (!out) return;
    float rstd = rsqrtf(ss / (float)C + 1e-5f);
    bf16 *orow = out + (size_t)row * C;
#pragma unroll
    for (int i = 0; i < MAXV; i++) {
        int c = lane + 32 * i;
        if (c < C) orow[c] = f2bf((v[i] - mean) * rstd * (1.0f + scale[c]) + shift[c]);
    }
}

/* Version 3 (MG_CUDA_LN=3): a warp per row, 2 rows per block (4x the blocks of v2: 128 at 256
 * rows instead of 32, so the row loads spread over more SMs' load units), 16-byte loads (lane
 * holds columns 4(lane + 32i) .. +3: NV loads per tensor instead of 4 NV), and the modulation
 * loaded with the row, before the reductions, so a row is one round trip of loads, the two
 * shuffle reductions, and the stores. Versions 4 and 5: the same with 1 and 4 rows per block
 * (the lab and the frame A/B pick). C % 4 == 0, C <= 1024 (five row-slices of registers: at
 * 2048 they spill) and 16-byte aligned rows (ln_v3_ok); elsewhere version 2 runs. */
template <int NV, bool Q8, int ROWS>
__global__ void __launch_bounds__(32 * ROWS) ln_mod_kernel_v3(bf16 *__restrict__ out, float *__restrict__ x,
                                                                 const float *__restrict__ y,
                                                                 const float *__restrict__ gate,
                                                                 const float *__restrict__ shift,
                                                                 const float *__restrict__ scale, int N, int C,
                                                                 uint8_t *__restrict__ q, const float *__restrict__ qs) {
    pdl_wait();
    pdl_trigger();
    int row = blockIdx.x * ROWS + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (row >= N) return;
    float4 *xr = reinterpret_cast<float4 *>(x + (size_t)row * C);
    const float4 *yr = y ? reinterpret_cast<const float4 *>(y + (size_t)row * C) : nullptr;
    const float4 *g4 = reinterpret_cast<const float4 *>(gate), *sh4 = reinterpret_cast<const float4 *>(shift);
    const float4 *sc4 = reinterpret_cast<const float4 *>(scale);
    const int C4 = C >> 2;
    const float4 z4 = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    float4 v[NV], yv[NV], gv[NV], sh[NV], sc[NV];
#pragma unroll
    for (int i = 0; i < NV; i++) {
        int c = lane + 32 * i;
        bool ok = c < C4;
        v[i] = ok ? xr[c] : z4;
        yv[i] = ok && yr ? yr[c] : z4;
        gv[i] = ok && yr ? g4[c] : z4;
        sh[i] = ok ? sh4[c] : z4;
        sc[i] = ok ? sc4[c] : z4;
    }
    float sum = 0.0f;
#pragma unroll
    for (int i = 0; i < NV; i++) {
        if (yr) {
            v[i].x += gv[i].x * yv[i].x, v[i].y += gv[i].y * yv[i].y;
            v[i].z += gv[i].z * yv[i].z, v[i].w += gv[i].w * yv[i].w;
            if (lane + 32 * i < C4) xr[lane + 32 * i] = v[i];
        }
        sum += (v[i].x + v[i].y) + (v[i].z + v[i].w); /* zeros past the row's end */
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
    float mean = sum / (float)C, ss = 0.0f;
#pragma unroll
    for (int i = 0; i < NV; i++) {
        if (lane + 32 * i < C4) {
            float a = v[i].x - mean, b = v[i].y - mean, c = v[i].z - mean, d = v[i].w - mean;
            ss += (a * a + b * b) + (c * c + d * d);
        }
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, o);
    float rstd = rsqrtf(ss / (float)C + 1e-5f);
    if (Q8 ? !q : !out) return;
    float inv = Q8 ? 1.0f / *qs : 1.0f;
#pragma unroll
    for (int i = 0; i < NV; i++) {
        int c = lane + 32 * i;
        if (c >= C4) continue;
        float o0 = (v[i].x - mean) * rstd * (1.0f + sc[i].x) + sh[i].x;
        float o1 = (v[i].y - mean) * rstd * (1.0f + sc[i].y) + sh[i].y;
        float o2 = (v[i].z - mean) * rstd * (1.0f + sc[i].z) + sh[i].z;
        float o3 = (v[i].w - mean) * rstd * (1.0f + sc[i].w) + sh[i].w;
        if (Q8) {
            uint32_t b0 = __nv_cvt_float_to_fp8(o0 * inv, __NV_SATFINITE, __NV_E4M3);
            uint32_t b1 = __nv_cvt_float_to_fp8(o1 * inv, __NV_SATFINITE, __NV_E4M3);
            uint32_t b2 = __nv_cvt_float_to_fp8(o2 * inv, __NV_SATFINITE, __NV_E4M3);
            uint32_t b3 = __nv_cvt_float_to_fp8(o3 * inv, __NV_SATFINITE, __NV_E4M3);
            reinterpret_cast<uint32_t *>(q + (size_t)row * C)[c] = b0 | b1 << 8 | b2 << 16 | b3 << 24;
        } else {
            uint2 pk = make_uint2(pack_bf16x2(o0, o1), pack_bf16x2(o2, o3));
            reinterpret_cast<uint2 *>(out + (size_t)row * C)[c] = pk;
        }
    }
}

static bool al16(const void *p) { return ((uintptr_t)p & 15) == 0; }
static bool ln_v3_ok(const void *out, const float *x, const float *y, const float *gate, const float *shift,
                     const float *scale, int C) {
    return C % 4 == 0 && C <= 1024 && ((uintptr_t)out & 7) == 0 && al16(x) && al16(y) && al16(gate) && al16(shift) &&
           al16(scale);
}

template <bool Q8, int ROWS>
static cudaError_t ln_v3_launch(bf16 *out, float *x, const float *y, const float *gate, const float *shift,
                                const float *scale, int N, int C, uint8_t *q, const float *qs, cudaStream_t st) {
    dim3 grid(cu_blocks((size_t)N, ROWS)), block(32 * ROWS);
#define LN3_GO(NV) cu_launch(ln_mod_kernel_v3<NV, Q8, ROWS>, grid, block, 0, st, out, x, y, gate, shift, scale, N, C, q, qs)
    if (C <= 128) return LN3_GO(1);
    if (C <= 256) return LN3_GO(2);
    if (C <= 384) return LN3_GO(3);
    if (C <= 512) return LN3_GO(4);
    if (C <= 768) return LN3_GO(6);
    return LN3_GO(8);
#undef LN3_GO
}
/* versions 3, 4, 5: 2, 1, 4 rows per block */
template <bool Q8>
static cudaError_t ln_v3_go(int ver, bf16 *out, float *x, const float *y, const float *gate, const float *shift,
                            const float *scale, int N, int C, uint8_t *q, const float *qs, cudaStream_t st) {
    if (ver == 4) return ln_v3_launch<Q8, 1>(out, x, y, gate, shift, scale, N, C, q, qs, st);
    if (ver == 5) return ln_v3_launch<Q8, 4>(out, x, y, gate, shift, scale, N, C, q, qs, st);
    return ln_v3_launch<Q8, 2>(out, x, y, gate, shift, scale, N, C, q, qs, st);
}

/* The version: MG_CUDA_LN=<1..5> if set, else MG_CUDA_LN2=0 for version 1 (the older switch),
 * else the default (read once). Version 3 falls back to 2 where ln_v3_ok does not hold. */
static int ln_version(void) {
    static int v = 0;
    if (!v) {
        const char *e = getenv("MG_CUDA_LN");
        int x = e && *e ? atoi(e) : 0;
        v = x >= 1 && x <= 5 ? x : cu_opt("LN2", 1) ? 3 : 1;
    }
    return v;
}

static mg_status ln_launch(int ver, bf16 *out, float *x, const float *y, const float *gate, const float *shift,
                           const float *scale, int N, int C, cudaStream_t st) {
    if (ver < 1 || ver > 5) return mg_fail(MG_ERR_ARG, "CUDA layernorm: version %d (1 to 5)", ver);
    if (N <= 0) return MG_OK;
    dim3 grid(cu_blocks((size_t)N, LN_ROWS_PER_BLOCK)), block(32 * LN_ROWS_PER_BLOCK);
    if (ver >= 3 && ln_v3_ok(out, x, y, gate, shift, scale, C)) {
        CU_TRY(ln_v3_go<false>(ver, out, x, y, gate, shift, scale, N, C, nullptr, nullptr, st));
        return MG_OK;
    }
    if (ver == 1) {
        if (C <= 256) CU_LAUNCH(ln_mod_kernel_v1<8>, grid, block, 0, st, out, x, y, gate, shift, scale, N, C);
        else if (C <= 512) CU_LAUNCH(ln_mod_kernel_v1<16>, grid, block, 0, st, out, x, y, gate, shift, scale, N, C);
        else if (C <= 1024) CU_LAUNCH(ln_mod_kernel_v1<32>, grid, block, 0, st, out, x, y, gate, shift, scale, N, C);
        else if (C <= 2048) CU_LAUNCH(ln_mod_kernel_v1<64>, grid, block, 0, st, out, x, y, gate, shift, scale, N, C);
        else return mg_fail(MG_ERR_UNSUPPORTED, "CUDA layernorm: width %d > 2048 is not supported", C);
        return MG_OK;
    }
    if (C <= 256) CU_LAUNCH(ln_mod_kernel<8>, grid, block, 0, st, out, x, y, gate, shift, scale, N, C,
                                  (uint8_t *)nullptr, (float *)nullptr);
    else if (C <= 512) CU_LAUNCH(ln_mod_kernel<16>, grid, block, 0, st, out, x, y, gate, shift, scale, N, C,
                                  (uint8_t *)nullptr, (float *)nullptr);
    else if (C <= 1024) CU_LAUNCH(ln_mod_kernel<32>, grid, block, 0, st, out, x, y, gate, shift, scale, N, C,
                                  (uint8_t *)nullptr, (float *)nullptr);
    else if (C <= 2048) CU_LAUNCH(ln_mod_kernel<64>, grid, block, 0, st, out, x, y, gate, shift, scale, N, C,
                                  (uint8_t *)nullptr, (float *)nullptr);
    else return mg_fail(MG_ERR_UNSUPPORTED, "CUDA layernorm: width %d > 2048 is not supported", C);
    return MG_OK;
}

extern "C" mg_status cu_layernorm_modulate(bf16_t *out, const float *x, const float *shift, const float *scale,
                                           int N, int C, cudaStream_t st) {
    return ln_launch(ln_version(), (bf16 *)out, (float *)x, nullptr, nullptr, shift, scale, N, C, st);
}

extern "C" mg_status cu_gated_residual_ln(float *x, const float *y, const float *gate, bf16_t *out,
                                          const float *shift, const float *scale, int N, int C, cudaStream_t st) {
    return ln_launch(ln_version(), (bf16 *)out, x, y, gate, shift, scale, N, C, st);
}

extern "C" mg_status cu_gated_residual_ln_v(int version, float *x, const float *y, const float *gate, bf16_t *out,
                                            const float *shift, const float *scale, int N, int C, cudaStream_t st) {
    return ln_launch(version, (bf16 *)out, x, y, gate, shift, scale, N, C, st);
}

extern "C" mg_status cu_gated_residual_ln_fp8(float *x, const float *y, const float *gate, fp8_t *q, const float *qs,
                                              const float *shift, const float *scale, int N, int C, cudaStream_t st) {
    if (N <= 0) return MG_OK;
    dim3 grid(cu_blocks((size_t)N, LN_ROWS_PER_BLOCK)), block(32 * LN_ROWS_PER_BLOCK);
    uint8_t *q8 = (uint8_t *)q;
    if (ln_version() >= 3 && ln_v3_ok(nullptr, x, y, gate, shift, scale, C) && ((uintptr_t)q8 & 3) == 0) {
        CU_TRY(ln_v3_go<true>(ln_version(), nullptr, x, y, gate, shift, scale, N, C, q8, qs, st));
        return MG_OK;
    }
    if (C <= 256) CU_LAUNCH(ln_mod_kernel<8, true>, grid, block, 0, st, (bf16 *)nullptr, x, y, gate, shift, scale, N, C, q8, qs);
    else if (C <= 512) CU_LAUNCH(ln_mod_kernel<16, true>, grid, block, 0, st, (bf16 *)nullptr, x, y, gate, shift, scale, N, C, q8, qs);
    else if (C <= 1024) CU_LAUNCH(ln_mod_kernel<32, true>, grid, block, 0, st, (bf16 *)nullptr, x, y, gate, shift, scale, N, C, q8, qs);
    else if (C <= 2048) CU_LAUNCH(ln_mod_kernel<64, true>, grid, block, 0, st, (bf16 *)nullptr, x, y, gate, shift, scale, N, C, q8, qs);
    else return mg_fail(MG_ERR_UNSUPPORTED, "CUDA layernorm: width %d > 2048 is not supported", C);
    return MG_OK;
}
