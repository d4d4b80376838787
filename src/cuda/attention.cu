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
 * so one captured graph serves every frame.
 *
 * That is versions 1 and 2 (cu_attention_v). Later ones, each kept callable for the lab and
 * MG_CUDA_ATTN: 3 folds the combine into the kernel (clusters, att_finish), 4 runs 128-query
 * blocks, 5 to 7 are the wgmma kernels for dh 128 (attn_wgmma_kernel, attn_wgmma2_kernel).
 * attn_default_version says which the library runs and why. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <cooperative_groups.h>

#include "cuda/cuda_common.h"
#include "cuda/rope_dev.h"

namespace cg = cooperative_groups;

#define AT_BQ 64
#define AT_BK 64

template <int DH> struct att_smem {
    bf16 k[2][AT_BK][DH + 8];
    bf16 v[2][AT_BK][DH + 8];
};

/* RoPE folded into the attention (cu_attention_rope, ROPE): the keys of the current frame
 * (ring slot p->slot, keys [cur0, cur0 + N)) are not read from the ring but from the qkv GEMM's
 * output (kc, vc: rows of stride ldq), rotated in shared memory after they land, and written
 * to the ring by the blocks of query tile 0 (each key tile of a head belongs to one split, so
 * every ring element is written once, and no block reads what another writes: the current
 * slot is never read from the ring). q is rotated in registers as it is loaded. */
struct att_rope {
    const bf16 *kc, *vc; /* the current frame's k and v: qkv + d, qkv + 2d */
    bf16 *kw, *vw;       /* the ring (the kernel's k, v) */
    const float *cos_sp, *sin_sp;
    const cu_frame_params *p;
    int ldq;
};
/* The angles of the key chunks a thread rotates are loaded with the tile (plain loads into
 * registers, one tile ahead, so their latency hides under the tile before): a K chunk of 8
 * columns is 4 pairs, so its cos and sin are one float4 each, from the per-frame time table
 * (pairs < nt: all 4 or none, nt being a multiple of 4) or the spatial tables. Only the thread
 * that loads a chunk rotates it, so the rotation needs no barrier of its own. (Measured worse,
 * dev/cuda/README.md: the angles read at rotation time, two L2 round trips per tile, all on
 * the split that holds the current slot; and the angles in shared memory beside the tiles,
 * 69.6 KB a block at dh 64.) */
template <int DH, int NT> struct att_rope_regs {
    float4 c[AT_BK * DH / 8 / NT], s[AT_BK * DH / 8 / NT];
};

template <int DH, int NT, bool ROPE>
__device__ __forceinline__ void att_load(att_smem<DH> &sm, int buf, int key0, const bf16 *k, const bf16 *v,
                                         int ldkv, int h, int Nk, int tid, const att_rope &rp, int cur0, int cur1,
                                         att_rope_regs<DH, NT> &ra) {
    const int chunks = DH / 8; /* 16-byte pieces per row */
    const int npairs = DH / 2, nt = npairs / 4;
#pragma unroll
    for (int i = 0; i < AT_BK * chunks / NT; i++) {
        int idx = tid + NT * i, r = idx / chunks, c = (idx % chunks) * 8, key = key0 + r;
        bool ok = key < Nk;
        const bf16 *ks = k, *vs = v;
        size_t off = (size_t)key * ldkv + h * DH + c;
        if (ROPE && key >= cur0 && key < cur1) {
            int n = key - cur0, j0 = c / 2;
            ks = rp.kc, vs = rp.vc, off = (size_t)n * rp.ldq + h * DH + c;
            ra.c[i] = *reinterpret_cast<const float4 *>(j0 < nt ? rp.p->tcos + j0 : rp.cos_sp + (size_t)n * npairs + j0);
            ra.s[i] = *reinterpret_cast<const float4 *>(j0 < nt ? rp.p->tsin + j0 : rp.sin_sp + (size_t)n * npairs + j0);
        }
        cp_async16(&sm.k[buf][r][c], ok ? ks + off : k, ok);
        cp_async16(&sm.v[buf][r][c], ok ? vs + off : v, ok);
    }
}

/* After the thread's own copies of a tile landed (cp.async.wait, before the barrier): rotate
 * the current frame's key chunks it loaded, in place, and from query tile 0 store them and
 * their v chunks to the ring. */
template <int DH, int NT>
__device__ __forceinline__ void att_rope_tile(att_smem<DH> &sm, int buf, int key0, int ldkv, int h, int tid,
                                              const att_rope &rp, int cur0, int cur1, const att_rope_regs<DH, NT> &ra) {
    const int chunks = DH / 8;
    const bool writer = blockIdx.x == 0;
#pragma unroll
    for (int i = 0; i < AT_BK * chunks / NT; i++) {
        int idx = tid + NT * i, r = idx / chunks, c = (idx % chunks) * 8, key = key0 + r;
        if (key < cur0 || key >= cur1) continue;
        float4 cs = ra.c[i], sn = ra.s[i];
        uint4 raw = *reinterpret_cast<const uint4 *>(&sm.k[buf][r][c]);
        __nv_bfloat162 *pr = reinterpret_cast<__nv_bfloat162 *>(&raw);
        pr[0] = rope_rot(pr[0], cs.x, sn.x), pr[1] = rope_rot(pr[1], cs.y, sn.y);
        pr[2] = rope_rot(pr[2], cs.z, sn.z), pr[3] = rope_rot(pr[3], cs.w, sn.w);
        *reinterpret_cast<uint4 *>(&sm.k[buf][r][c]) = raw;
        if (writer) {
            size_t off = (size_t)key * ldkv + h * DH + c;
            *reinterpret_cast<uint4 *>(rp.kw + off) = raw;
            *reinterpret_cast<uint4 *>(rp.vw + off) = *reinterpret_cast<const uint4 *>(&sm.v[buf][r][c]);
        }
    }
}

__device__ __forceinline__ uint32_t ld_u32(const bf16 *p) { return *reinterpret_cast<const uint32_t *>(p); }
__device__ __forceinline__ uint32_t pack_raw(bf16 lo, bf16 hi) {
    return (uint32_t)__bfloat16_as_ushort(lo) | ((uint32_t)__bfloat16_as_ushort(hi) << 16);
}

/* The fold (FOLD, version 3 and up): the splits of one query tile are one thread-block
 * cluster of gridDim.z blocks (at most 8); each leaves its partial (m, l, unnormalised o) in
 * its own shared memory, and block r of the cluster combines rows r, r + S, ... of all S
 * partials through distributed shared memory and stores them: no second kernel, no scratch. */
template <int DH, int BQ> struct att_fold_smem {
    float o[BQ][DH + 4];
    float m[BQ], l[BQ];
};
template <int DH, int BQ> static constexpr size_t att_smem_size() {
    return sizeof(att_smem<DH>) > sizeof(att_fold_smem<DH, BQ>) ? sizeof(att_smem<DH>) : sizeof(att_fold_smem<DH, BQ>);
}

/* The end of every version: the row sums reduced over the quad, then one of three stores:
 * the fold (FOLD, clusters), out (no split), or the partial triple for the combine kernel.
 * o, m, l in the mma accumulator layout: warp w of the block holds rows 16w + lane/4 (+ 8). */
template <int DH, int NW, bool FOLD>
__device__ __forceinline__ void att_finish(float (&o)[DH / 8][4], float m0, float m1, float l0, float l1,
                                           unsigned char *att_raw, bf16 *out, float *part_o, float *part_ml, int Nq,
                                           int H) {
    constexpr int NT = NW * 32, BQ = NW * 16;
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t = lane & 3;
    const int h = blockIdx.y, split = blockIdx.z, splits = gridDim.z;
    const int r0 = blockIdx.x * BQ + warp * 16 + g, r1 = r0 + 8;
    l0 += __shfl_xor_sync(0xffffffffu, l0, 1);
    l0 += __shfl_xor_sync(0xffffffffu, l0, 2);
    l1 += __shfl_xor_sync(0xffffffffu, l1, 1);
    l1 += __shfl_xor_sync(0xffffffffu, l1, 2);
    const int D = H * DH;
    if (FOLD && splits > 1) {
        att_fold_smem<DH, BQ> &fs = *reinterpret_cast<att_fold_smem<DH, BQ> *>(att_raw);
        /* the loop's last __syncthreads (or no loop at all) leaves the K/V buffers free */
        const int lr0 = r0 - blockIdx.x * BQ, lr1 = lr0 + 8;
#pragma unroll
        for (int nd = 0; nd < DH / 8; nd++) {
            int c = nd * 8 + 2 * t;
            *reinterpret_cast<float2 *>(&fs.o[lr0][c]) = make_float2(o[nd][0], o[nd][1]);
            *reinterpret_cast<float2 *>(&fs.o[lr1][c]) = make_float2(o[nd][2], o[nd][3]);
        }
        if (t == 0) fs.m[lr0] = m0, fs.l[lr0] = l0, fs.m[lr1] = m1, fs.l[lr1] = l1;
        cg::cluster_group cluster = cg::this_cluster();
        cluster.sync();
        const int rank = (int)cluster.block_rank(), mine = (BQ - rank + splits - 1) / splits;
        for (int idx = tid; idx < mine * (DH / 4); idx += NT) {
            int lr = rank + splits * (idx / (DH / 4)), c = 4 * (idx % (DH / 4)), row = blockIdx.x * BQ + lr;
            if (row >= Nq) continue;
            float M = -INFINITY;
            for (int s = 0; s < splits; s++) M = fmaxf(M, cluster.map_shared_rank(&fs.m[lr], s)[0]);
            float4 num = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
            float den = 0.0f;
            for (int s = 0; s < splits; s++) {
                const att_fold_smem<DH, BQ> *rs = cluster.map_shared_rank(&fs, s);
                float w = exp2f(rs->m[lr] - M);
                float4 ov = *reinterpret_cast<const float4 *>(&rs->o[lr][c]);
                den += w * rs->l[lr];
                num.x += w * ov.x, num.y += w * ov.y, num.z += w * ov.z, num.w += w * ov.w;
            }
            float id = 1.0f / den;
            __nv_bfloat162 lo = __floats2bfloat162_rn(num.x * id, num.y * id), hi = __floats2bfloat162_rn(num.z * id, num.w * id);
            uint2 pk = make_uint2(*reinterpret_cast<uint32_t *>(&lo), *reinterpret_cast<uint32_t *>(&hi));
            *reinterpret_cast<uint2 *>(out + (size_t)row * D + h * DH + c) = pk;
        }
        cluster.sync(); /* no block leaves while another still reads its shared memory */
        return;
    }
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

/* LDM: fragments of K and V through ldmatrix (x4 loads two n-tiles' B fragments in one
 * instruction; .trans gives V's key-pairs without a transpose) instead of 32- and 16-bit
 * shared loads. dev/cuda/attention.cu times both. NW warps of 16 query rows each: 4 (64
 * queries per block) or 8 (128, version 4 for dh 128: each K/V tile brought into shared
 * memory serves twice the rows). ROPE (cu_attention_rope): q, k and v of the current frame
 * from the qkv rows, RoPE applied, the ring slot written (above); at dh 64 held to 168
 * registers (3 blocks an SM, as the plain kernel: at 169 it fit 2, and s 512x512's 288 blocks
 * would take two waves), at the price of 44 bytes of spill. */
template <int DH, bool LDM, int NW, bool FOLD, bool ROPE>
__global__ void __launch_bounds__(NW * 32, ROPE && DH == 64 ? 3 : 0) attn_kernel(bf16 *out, float *part_o, float *part_ml, const bf16 *q, int ldq,
                                                       const bf16 *k, const bf16 *v, int ldkv, const int *nk_slots,
                                                       int Nk_arg, int Nq, int H, float scale_log2, att_rope rp) {
    constexpr int NT = NW * 32, BQ = NW * 16;
    extern __shared__ __align__(16) unsigned char att_raw[];
    att_smem<DH> &sm = *reinterpret_cast<att_smem<DH> *>(att_raw);
    pdl_wait();
    pdl_trigger();
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t = lane & 3;
    const int h = blockIdx.y, split = blockIdx.z, splits = gridDim.z;
    const int Nk = nk_slots ? nk_slots[0] * Nk_arg : Nk_arg;
    const int ntiles = (Nk + AT_BK - 1) / AT_BK, per = (ntiles + splits - 1) / splits;
    const int tb = split * per, te = min(ntiles, tb + per);
    const int r0 = blockIdx.x * BQ + warp * 16 + g, r1 = r0 + 8;

    uint32_t qf[DH / 16][4];
#pragma unroll
    for (int kc = 0; kc < DH / 16; kc++) {
        int c = h * DH + kc * 16 + 2 * t;
        qf[kc][0] = r0 < Nq ? ld_u32(q + (size_t)r0 * ldq + c) : 0u;
        qf[kc][1] = r1 < Nq ? ld_u32(q + (size_t)r1 * ldq + c) : 0u;
        qf[kc][2] = r0 < Nq ? ld_u32(q + (size_t)r0 * ldq + c + 8) : 0u;
        qf[kc][3] = r1 < Nq ? ld_u32(q + (size_t)r1 * ldq + c + 8) : 0u;
    }
    /* ROPE: the current frame is ring slot p->slot (rows of Nk_arg keys); q rotated here:
     * each register is one pair (2j, 2j+1), j = kc*8 + t (+ 4 for the upper half) */
    int cur0 = 0, cur1 = 0;
    if (ROPE) {
        cur0 = rp.p->slot * Nk_arg, cur1 = cur0 + Nk_arg;
        const int npairs = DH / 2, nt = npairs / 4;
#pragma unroll
        for (int kc = 0; kc < DH / 16; kc++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                int row = e & 1 ? r1 : r0, j = kc * 8 + t + (e >> 1) * 4;
                if (row >= Nq) continue;
                float c, sn;
                rope_cs(&c, &sn, rp.cos_sp, rp.sin_sp, rp.p, row, npairs, nt, j);
                __nv_bfloat162 x = rope_rot(*reinterpret_cast<__nv_bfloat162 *>(&qf[kc][e]), c, sn);
                qf[kc][e] = *reinterpret_cast<uint32_t *>(&x);
            }
    }
    float o[DH / 8][4];
#pragma unroll
    for (int nd = 0; nd < DH / 8; nd++) o[nd][0] = o[nd][1] = o[nd][2] = o[nd][3] = 0.0f;
    float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.0f, l1 = 0.0f;

    att_rope_regs<DH, NT> ra; /* ROPE: the angles of the next tile's current-frame chunks */
    if (tb < te) {
        att_load<DH, NT, ROPE>(sm, 0, tb * AT_BK, k, v, ldkv, h, Nk, tid, rp, cur0, cur1, ra);
        cp_async_commit();
    }
    for (int tile = tb; tile < te; tile++) {
        int buf = (tile - tb) & 1;
        if constexpr (ROPE) {
            /* the tile's copies and angles are in: rotate, then the next tile's load (it
             * overwrites the angles) goes out under this tile's products */
            cp_async_wait<0>();
            if (tile * AT_BK < cur1 && (tile + 1) * AT_BK > cur0)
                att_rope_tile<DH, NT>(sm, buf, tile * AT_BK, ldkv, h, tid, rp, cur0, cur1, ra);
            if (tile + 1 < te) {
                att_load<DH, NT, ROPE>(sm, buf ^ 1, (tile + 1) * AT_BK, k, v, ldkv, h, Nk, tid, rp, cur0, cur1, ra);
                cp_async_commit();
            }
        } else if (tile + 1 < te) {
            att_load<DH, NT, ROPE>(sm, buf ^ 1, (tile + 1) * AT_BK, k, v, ldkv, h, Nk, tid, rp, cur0, cur1, ra);
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
    att_finish<DH, NW, FOLD>(o, m0, m1, l0, l1, att_raw, out, part_o, part_ml, Nq, H);
}

/* ---- version 5 (dh 128): wgmma (sm_90a) -----------------------------------------------
 * D (64 x 128 fp32, per warpgroup) += A (64 x 16) B (16 x 128): A and B from shared memory
 * through descriptors (both K-major), D in the mma.sync accumulator layout repeated over 16
 * n8 chunks (warp w of the warpgroup: rows 16w + lane/4, + 8): d[chunk][4].
 *
 * Version 5: 128 queries per block, 64 rows for each of two warpgroups; the Q tile
 * stays in shared memory; 128-key K/V tiles double-buffered with cp.async in the 128-byte
 * swizzled layout wgmma reads (each 64-column half of a tile: rows of 128 bytes, 16-byte
 * chunk c of row r at c ^ (r % 8)); S = Q K^T with A and B from shared memory (8 wgmma
 * m64n128k16 per tile and warpgroup), the online softmax in registers, O += P V with P from
 * registers (S's accumulator fragment is P's A fragment) and V MN-major (transposed
 * descriptor), no transpose pass. */
__device__ __forceinline__ void wgmma_ss_m64n128k16(float (&d)[16][4], uint64_t da, uint64_t db, int acc = 1) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 "
        "{"
        "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
        "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "
        "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "
        "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63"
        "}, %64, %65, p, 1, 1, 0, 0;\n}\n"
        : "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3]), "+f"(d[1][0]), "+f"(d[1][1]), "+f"(d[1][2]), "+f"(d[1][3]),
          "+f"(d[2][0]), "+f"(d[2][1]), "+f"(d[2][2]), "+f"(d[2][3]), "+f"(d[3][0]), "+f"(d[3][1]), "+f"(d[3][2]), "+f"(d[3][3]),
          "+f"(d[4][0]), "+f"(d[4][1]), "+f"(d[4][2]), "+f"(d[4][3]), "+f"(d[5][0]), "+f"(d[5][1]), "+f"(d[5][2]), "+f"(d[5][3]),
          "+f"(d[6][0]), "+f"(d[6][1]), "+f"(d[6][2]), "+f"(d[6][3]), "+f"(d[7][0]), "+f"(d[7][1]), "+f"(d[7][2]), "+f"(d[7][3]),
          "+f"(d[8][0]), "+f"(d[8][1]), "+f"(d[8][2]), "+f"(d[8][3]), "+f"(d[9][0]), "+f"(d[9][1]), "+f"(d[9][2]), "+f"(d[9][3]),
          "+f"(d[10][0]), "+f"(d[10][1]), "+f"(d[10][2]), "+f"(d[10][3]), "+f"(d[11][0]), "+f"(d[11][1]), "+f"(d[11][2]), "+f"(d[11][3]),
          "+f"(d[12][0]), "+f"(d[12][1]), "+f"(d[12][2]), "+f"(d[12][3]), "+f"(d[13][0]), "+f"(d[13][1]), "+f"(d[13][2]), "+f"(d[13][3]),
          "+f"(d[14][0]), "+f"(d[14][1]), "+f"(d[14][2]), "+f"(d[14][3]), "+f"(d[15][0]), "+f"(d[15][1]), "+f"(d[15][2]), "+f"(d[15][3])
        : "l"(da), "l"(db), "r"(acc)
        : "memory");
}
/* The same with A from registers (the mma.sync A fragment of the warp's 16 rows) and B
 * MN-major (V as stored: keys by rows, dims contiguous; transpose bit set). */
__device__ __forceinline__ void wgmma_rs_m64n128k16_tb(float (&d)[16][4], const uint32_t (&a)[4], uint64_t db) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 "
        "{"
        "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
        "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "
        "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "
        "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63"
        "}, {%64, %65, %66, %67}, %68, p, 1, 1, 1;\n}\n"
        : "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3]), "+f"(d[1][0]), "+f"(d[1][1]), "+f"(d[1][2]), "+f"(d[1][3]),
          "+f"(d[2][0]), "+f"(d[2][1]), "+f"(d[2][2]), "+f"(d[2][3]), "+f"(d[3][0]), "+f"(d[3][1]), "+f"(d[3][2]), "+f"(d[3][3]),
          "+f"(d[4][0]), "+f"(d[4][1]), "+f"(d[4][2]), "+f"(d[4][3]), "+f"(d[5][0]), "+f"(d[5][1]), "+f"(d[5][2]), "+f"(d[5][3]),
          "+f"(d[6][0]), "+f"(d[6][1]), "+f"(d[6][2]), "+f"(d[6][3]), "+f"(d[7][0]), "+f"(d[7][1]), "+f"(d[7][2]), "+f"(d[7][3]),
          "+f"(d[8][0]), "+f"(d[8][1]), "+f"(d[8][2]), "+f"(d[8][3]), "+f"(d[9][0]), "+f"(d[9][1]), "+f"(d[9][2]), "+f"(d[9][3]),
          "+f"(d[10][0]), "+f"(d[10][1]), "+f"(d[10][2]), "+f"(d[10][3]), "+f"(d[11][0]), "+f"(d[11][1]), "+f"(d[11][2]), "+f"(d[11][3]),
          "+f"(d[12][0]), "+f"(d[12][1]), "+f"(d[12][2]), "+f"(d[12][3]), "+f"(d[13][0]), "+f"(d[13][1]), "+f"(d[13][2]), "+f"(d[13][3]),
          "+f"(d[14][0]), "+f"(d[14][1]), "+f"(d[14][2]), "+f"(d[14][3]), "+f"(d[15][0]), "+f"(d[15][1]), "+f"(d[15][2]), "+f"(d[15][3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db), "r"(1)
        : "memory");
}

#define WG_BQ 128
#define WG_BK 128
#define WG_TILE (WG_BK * 128 * 2)            /* bytes of one 128 x 128 bf16 tile */
#define WG_SMEM (5 * WG_TILE + 1024)         /* Q, K x 2, V x 2, and the 1024-byte alignment */

__device__ __forceinline__ uint64_t wg_desc(uint32_t saddr, uint32_t lbo, uint32_t sbo) {
    return (uint64_t)((saddr & 0x3FFFFu) >> 4) | ((uint64_t)((lbo & 0x3FFFFu) >> 4) << 16) |
           ((uint64_t)((sbo & 0x3FFFFu) >> 4) << 32) | ((uint64_t)1 << 62); /* 128-byte swizzle */
}
/* byte offset of 16-byte chunk cc (0..15) of row r in a 128-row tile of 128 bf16 columns */
__device__ __forceinline__ uint32_t wg_swz(int r, int cc) {
    return (uint32_t)((cc >> 3) * (WG_BK * 128) + r * 128 + (((cc & 7) ^ (r & 7)) << 4));
}
__device__ __forceinline__ void wg_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wg_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wg_wait0() { asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory"); }
__device__ __forceinline__ void fence_proxy_async() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }
/* pin accumulators (and A registers) across an asynchronous wgmma, as CUTLASS does */
__device__ __forceinline__ void wg_pin(float (&d)[16][4]) {
#pragma unroll
    for (int i = 0; i < 16; i++)
#pragma unroll
        for (int j = 0; j < 4; j++) asm volatile("" : "+f"(d[i][j])::"memory");
}

/* 128 rows x 128 bf16 columns from rows row0.. of x (stride ld, column offset col) into the
 * swizzled tile at sm; rows at or past nrows are zeros */
__device__ __forceinline__ void wg_load(unsigned char *sm, const bf16 *x, int ld, int col, int row0, int nrows,
                                        int tid) {
#pragma unroll
    for (int i = 0; i < 8; i++) {
        int idx = tid + 256 * i, r = idx >> 4, cc = idx & 15, row = row0 + r;
        bool ok = row < nrows;
        cp_async16(sm + wg_swz(r, cc), ok ? x + (size_t)row * ld + col + cc * 8 : x, ok);
    }
}

/* The start of versions 5 to 7 (dh 128), after the PDL wait: the dynamic shared memory aligned
 * to 1024 bytes (the swizzle's period) and carved as the Q tile, then the K tiles (sk), then the
 * V tiles (sv); this block's head and its split's key tiles [tb, te) of the Nk keys; the Q tile
 * and the split's first K and V tiles in flight, as one cp.async group; the output o zeroed.
 * Inlined, it leaves the kernels' machine code byte for byte what it was when each wrote this
 * out itself. */
struct wg_block {
    unsigned char *sm;   /* generic pointer to the Q tile */
    uint32_t sq, sk, sv; /* shared-window addresses of the Q tile and the first K and V tiles */
    int h, Nk, tb, te;
};
__device__ __forceinline__ wg_block wg_start(float (&o)[16][4], const bf16 *q, int ldq, const bf16 *k, const bf16 *v,
                                             int ldkv, const int *nk_slots, int Nk_arg, int Nq, int tid) {
    constexpr int DH = 128;
    extern __shared__ __align__(16) unsigned char att_raw[];
    wg_block b;
    uint32_t s0 = (uint32_t)__cvta_generic_to_shared(att_raw), pad = (1024u - (s0 & 1023u)) & 1023u;
    b.sm = att_raw + pad;
    b.sq = s0 + pad, b.sk = b.sq + WG_TILE, b.sv = b.sk + 2 * WG_TILE;
    b.h = blockIdx.y;
    const int split = blockIdx.z, splits = gridDim.z;
    b.Nk = nk_slots ? nk_slots[0] * Nk_arg : Nk_arg;
    const int ntiles = (b.Nk + WG_BK - 1) / WG_BK, per = (ntiles + splits - 1) / splits;
    b.tb = split * per, b.te = min(ntiles, b.tb + per);

    wg_load(b.sm, q, ldq, b.h * DH, blockIdx.x * WG_BQ, Nq, tid);
    if (b.tb < b.te) {
        wg_load(b.sm + WG_TILE, k, ldkv, b.h * DH, b.tb * WG_BK, b.Nk, tid);
        wg_load(b.sm + 3 * WG_TILE, v, ldkv, b.h * DH, b.tb * WG_BK, b.Nk, tid);
    }
    cp_async_commit();
#pragma unroll
    for (int nd = 0; nd < DH / 8; nd++) o[nd][0] = o[nd][1] = o[nd][2] = o[nd][3] = 0.0f;
    return b;
}

template <bool FOLD>
__global__ void __launch_bounds__(256, 1) attn_wgmma_kernel(bf16 *out, float *part_o, float *part_ml, const bf16 *q,
                                                           int ldq, const bf16 *k, const bf16 *v, int ldkv,
                                                           const int *nk_slots, int Nk_arg, int Nq, int H,
                                                           float scale_log2) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    constexpr int DH = 128;
    pdl_wait();
    pdl_trigger();
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, t = lane & 3, wg = warp >> 2;
    float o[DH / 8][4];
    const auto [sm, sq, sk, sv, h, Nk, tb, te] = wg_start(o, q, ldq, k, v, ldkv, nk_slots, Nk_arg, Nq, tid);
    float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.0f, l1 = 0.0f;
    /* V as B (keys x dims, MN-major): the two 64-dim halves a tile half apart (the leading
     * offset), 8-key groups 1024 bytes apart (the stride offset) */
    const uint32_t vl = WG_BK * 128, vs = 1024;

    for (int tile = tb; tile < te; tile++) {
        int buf = (tile - tb) & 1;
        if (tile + 1 < te) {
            wg_load(sm + (1 + (buf ^ 1)) * WG_TILE, k, ldkv, h * DH, (tile + 1) * WG_BK, Nk, tid);
            wg_load(sm + (3 + (buf ^ 1)) * WG_TILE, v, ldkv, h * DH, (tile + 1) * WG_BK, Nk, tid);
            cp_async_commit();
            cp_async_wait<1>();
        } else {
            cp_async_wait<0>();
        }
        fence_proxy_async(); /* cp.async's writes, read next by the tensor cores (async proxy) */
        __syncthreads();
        /* S (64 x 128 per warpgroup) = Q K^T: 8 k-steps of 16 dims, 32 bytes apart inside a
         * 64-dim half, the halves a tile half apart */
        float s[WG_BK / 8][4];
#pragma unroll
        for (int nt = 0; nt < WG_BK / 8; nt++) s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.0f;
        wg_pin(s);
        wg_fence();
#pragma unroll
        for (int ks = 0; ks < DH / 16; ks++) {
            uint32_t off = (uint32_t)((ks >> 2) * (WG_BQ * 128) + (ks & 3) * 32);
            wgmma_ss_m64n128k16(s, wg_desc(sq + off + wg * 64 * 128, 16, 1024),
                                wg_desc(sk + buf * WG_TILE + off, 16, 1024));
        }
        wg_commit();
        wg_wait0();
        wg_pin(s);
        /* scale into the log2 domain, mask keys past the end, online softmax (as attn_kernel) */
        int key0 = tile * WG_BK;
        float mx0 = -INFINITY, mx1 = -INFINITY;
#pragma unroll
        for (int nt = 0; nt < WG_BK / 8; nt++) {
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
        float mn0 = fmaxf(m0, mx0), mn1 = fmaxf(m1, mx1);
        float a0 = exp2f(m0 - mn0), a1 = exp2f(m1 - mn1);
        m0 = mn0, m1 = mn1;
        float ls0 = 0.0f, ls1 = 0.0f;
        uint32_t pa[WG_BK / 16][4];
#pragma unroll
        for (int nt = 0; nt < WG_BK / 8; nt++) {
            s[nt][0] = exp2f(s[nt][0] - m0), s[nt][1] = exp2f(s[nt][1] - m0);
            s[nt][2] = exp2f(s[nt][2] - m1), s[nt][3] = exp2f(s[nt][3] - m1);
            ls0 += s[nt][0] + s[nt][1], ls1 += s[nt][2] + s[nt][3];
            pa[nt >> 1][(nt & 1) * 2] = pack_bf16x2(s[nt][0], s[nt][1]);
            pa[nt >> 1][(nt & 1) * 2 + 1] = pack_bf16x2(s[nt][2], s[nt][3]);
        }
        l0 = l0 * a0 + ls0, l1 = l1 * a1 + ls1;
#pragma unroll
        for (int nd = 0; nd < DH / 8; nd++) o[nd][0] *= a0, o[nd][1] *= a0, o[nd][2] *= a1, o[nd][3] *= a1;
        /* O (64 x 128) += P (64 x 128 keys) V (128 keys x 128): 8 k-steps of 16 keys (2048
         * bytes of V apart) */
        wg_pin(o);
        wg_fence();
#pragma unroll
        for (int kj = 0; kj < WG_BK / 16; kj++)
            wgmma_rs_m64n128k16_tb(o, pa[kj], wg_desc(sv + buf * WG_TILE + kj * 2048, vl, vs));
        wg_commit();
        wg_wait0();
        wg_pin(o);
#pragma unroll
        for (int kj = 0; kj < WG_BK / 16; kj++)
#pragma unroll
            for (int e = 0; e < 4; e++) asm volatile("" : "+r"(pa[kj][e])::"memory");
        __syncthreads();
    }
    cp_async_wait<0>(); /* an empty split loaded Q and never waited; the fold reuses that memory */
    __syncthreads();
    att_finish<DH, 8, FOLD>(o, m0, m1, l0, l1, sm, out, part_o, part_ml, Nq, H);
#else
    __trap(); /* built without sm_90a: cu_attention_v never launches it (wg_ok) */
#endif
}

/* Version 6 = 5 with the two warpgroups half an iteration apart, so that one's softmax runs
 * while the other's products keep the tensor cores busy (5 runs both in lockstep: both
 * products, then both softmaxes with the tensor cores idle). Warpgroup 0 issues P_j V_j right
 * after its softmax and waits for it only at the next tile's S; warpgroup 1 issues
 * P_{j-1} V_{j-1} together with S_j. V needs three buffers (tile j-1 is still being read while
 * tile j+1 loads), one barrier per tile (the next tile's load starts after it). Full tiles
 * skip the key mask; the scale folds into the exponent's FFMA. */
#define WG2_SMEM (6 * WG_TILE + 1024) /* Q, K x 2, V x 3, alignment */
/* Version 7 (LATE) = 6 with the next tile's cp.async issued after this tile's products (in 6
 * the 16 copies per thread stand between the barrier and the first wgmma, every tile), and S
 * started with scale-d = 0 instead of 64 register zeroings. */

__device__ __forceinline__ float ex2_approx(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
    return y;
}
__device__ __forceinline__ void wg_pin_a(uint32_t (&a)[WG_BK / 16][4]) {
#pragma unroll
    for (int i = 0; i < WG_BK / 16; i++)
#pragma unroll
        for (int j = 0; j < 4; j++) asm volatile("" : "+r"(a[i][j])::"memory");
}
__device__ __forceinline__ void wg_pv(float (&o)[16][4], const uint32_t (&pa)[WG_BK / 16][4], uint32_t sv) {
    wg_fence();
#pragma unroll
    for (int kj = 0; kj < WG_BK / 16; kj++)
        wgmma_rs_m64n128k16_tb(o, pa[kj], wg_desc(sv + kj * 2048, WG_BK * 128, 1024));
    wg_commit();
}

template <bool FOLD, bool LATE>
__global__ void __launch_bounds__(256, 1) attn_wgmma2_kernel(bf16 *out, float *part_o, float *part_ml, const bf16 *q,
                                                            int ldq, const bf16 *k, const bf16 *v, int ldkv,
                                                            const int *nk_slots, int Nk_arg, int Nq, int H,
                                                            float scale_log2) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    constexpr int DH = 128;
    pdl_wait();
    pdl_trigger();
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, t = lane & 3, wg = warp >> 2;
    float o[DH / 8][4];
    const auto [sm, sq, sk, sv, h, Nk, tb, te] = wg_start(o, q, ldq, k, v, ldkv, nk_slots, Nk_arg, Nq, tid);
    uint32_t pa[WG_BK / 16][4];
#pragma unroll
    for (int kj = 0; kj < WG_BK / 16; kj++) pa[kj][0] = pa[kj][1] = pa[kj][2] = pa[kj][3] = 0u;
    float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.0f, l1 = 0.0f;
    float s[WG_BK / 8][4]; /* zeroed once: 6 zeroes it every tile, 7 starts S with scale-d = 0 */
#pragma unroll
    for (int nt = 0; nt < WG_BK / 8; nt++) s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.0f;

    for (int tile = tb; tile < te; tile++) {
        const int idx = tile - tb, kb = idx & 1, vb = idx % 3;
        cp_async_wait<0>();
        fence_proxy_async(); /* cp.async's writes, read next by the tensor cores (async proxy) */
        __syncthreads();     /* tile j is in; every product of tile j-1 on K and of j-2 on V is done */
        if (!LATE && tile + 1 < te) {
            wg_load(sm + (1 + (kb ^ 1)) * WG_TILE, k, ldkv, h * DH, (tile + 1) * WG_BK, Nk, tid);
            wg_load(sm + (3 + (idx + 1) % 3) * WG_TILE, v, ldkv, h * DH, (tile + 1) * WG_BK, Nk, tid);
            cp_async_commit();
        }
        if (wg == 1 && idx > 0) wg_pv(o, pa, sv + ((idx + 2) % 3) * WG_TILE); /* P_{j-1} V_{j-1} */
        if (!LATE) {
#pragma unroll
            for (int nt = 0; nt < WG_BK / 8; nt++) s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.0f;
        }
        wg_pin(s);
        wg_fence();
#pragma unroll
        for (int ks = 0; ks < DH / 16; ks++) {
            uint32_t off = (uint32_t)((ks >> 2) * (WG_BQ * 128) + (ks & 3) * 32);
            wgmma_ss_m64n128k16(s, wg_desc(sq + off + wg * 64 * 128, 16, 1024), wg_desc(sk + kb * WG_TILE + off, 16, 1024),
                                LATE && ks == 0 ? 0 : 1);
        }
        wg_commit();
        if (LATE && tile + 1 < te) { /* the copies go out while the tensor cores work */
            wg_load(sm + (1 + (kb ^ 1)) * WG_TILE, k, ldkv, h * DH, (tile + 1) * WG_BK, Nk, tid);
            wg_load(sm + (3 + (idx + 1) % 3) * WG_TILE, v, ldkv, h * DH, (tile + 1) * WG_BK, Nk, tid);
            cp_async_commit();
        }
        wg_wait0(); /* S_j and the pending P V */
        wg_pin(s);
        wg_pin(o);
        wg_pin_a(pa);
        /* online softmax in raw scores (the scale is positive: the max commutes with it) */
        const int key0 = tile * WG_BK;
        if (key0 + WG_BK > Nk) {
#pragma unroll
            for (int nt = 0; nt < WG_BK / 8; nt++)
#pragma unroll
                for (int e = 0; e < 4; e++)
                    if (key0 + nt * 8 + 2 * t + (e & 1) >= Nk) s[nt][e] = -INFINITY;
        }
        float mx0 = -INFINITY, mx1 = -INFINITY;
#pragma unroll
        for (int nt = 0; nt < WG_BK / 8; nt++) {
            mx0 = fmaxf(mx0, fmaxf(s[nt][0], s[nt][1]));
            mx1 = fmaxf(mx1, fmaxf(s[nt][2], s[nt][3]));
        }
        mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 1));
        mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 2));
        mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 1));
        mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 2));
        /* every tile in range holds a valid key, so the maxima are finite */
        float mn0 = fmaxf(m0, mx0 * scale_log2), mn1 = fmaxf(m1, mx1 * scale_log2);
        float a0 = ex2_approx(m0 - mn0), a1 = ex2_approx(m1 - mn1);
        m0 = mn0, m1 = mn1;
        float ls0 = 0.0f, ls1 = 0.0f;
#pragma unroll
        for (int nt = 0; nt < WG_BK / 8; nt++) {
            s[nt][0] = ex2_approx(fmaf(s[nt][0], scale_log2, -m0)), s[nt][1] = ex2_approx(fmaf(s[nt][1], scale_log2, -m0));
            s[nt][2] = ex2_approx(fmaf(s[nt][2], scale_log2, -m1)), s[nt][3] = ex2_approx(fmaf(s[nt][3], scale_log2, -m1));
            ls0 += s[nt][0] + s[nt][1], ls1 += s[nt][2] + s[nt][3];
            pa[nt >> 1][(nt & 1) * 2] = pack_bf16x2(s[nt][0], s[nt][1]);
            pa[nt >> 1][(nt & 1) * 2 + 1] = pack_bf16x2(s[nt][2], s[nt][3]);
        }
        l0 = l0 * a0 + ls0, l1 = l1 * a1 + ls1;
#pragma unroll
        for (int nd = 0; nd < DH / 8; nd++) o[nd][0] *= a0, o[nd][1] *= a0, o[nd][2] *= a1, o[nd][3] *= a1;
        if (wg == 0) wg_pv(o, pa, sv + vb * WG_TILE); /* P_j V_j, waited for at the next S */
    }
    if (wg == 1 && te > tb) wg_pv(o, pa, sv + ((te - 1 - tb) % 3) * WG_TILE);
    wg_wait0();
    wg_pin(o);
    wg_pin_a(pa);
    cp_async_wait<0>(); /* an empty split loaded Q and never waited; the fold reuses that memory */
    __syncthreads();
    att_finish<DH, 8, FOLD>(o, m0, m1, l0, l1, sm, out, part_o, part_ml, Nq, H);
#else
    __trap(); /* built without sm_90a: cu_attention_v never launches it (wg_ok) */
#endif
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

/* Versions (cu_attention_v; the lab times each): 1 plain 32/16-bit fragment loads, 2 ldmatrix
 * fragments, both with the separate combine kernel when split; 3 = 2 with the combine folded
 * into the kernel (clusters, at most AT_MAX_FOLD splits; more fall back to the combine
 * kernel); 4 = 3 with 128-query blocks (8 warps) for dh 128; 5 = wgmma for dh 128 (4 where
 * the card is not sm_90), the fold as 3; 6 = 5 with the warpgroups half a tile apart; 7 = 6
 * with the next tile's copies after this tile's products. At dh 64, 4 to 7 are 3. */
#define AT_MAX_FOLD 8
#define AT_VERSIONS CU_ATTN_VERSIONS

template <int DH, bool LDM, int NW, bool FOLD> static cudaError_t attn_attr(void) {
    cudaError_t e = cudaFuncSetAttribute(attn_kernel<DH, LDM, NW, FOLD, false>,
                                         cudaFuncAttributeMaxDynamicSharedMemorySize, (int)att_smem_size<DH, NW * 16>());
    if (e != cudaSuccess) return e;
    return cudaFuncSetAttribute(attn_kernel<DH, LDM, NW, FOLD, true>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                (int)att_smem_size<DH, NW * 16>());
}

template <int DH> static cudaError_t attn_attrs(void) {
    cudaError_t e;
    if ((e = attn_attr<DH, false, 4, false>()) != cudaSuccess) return e;
    if ((e = attn_attr<DH, true, 4, false>()) != cudaSuccess) return e;
    if ((e = attn_attr<DH, true, 4, true>()) != cudaSuccess) return e;
    if constexpr (DH == 128) {
        if ((e = attn_attr<DH, true, 8, false>()) != cudaSuccess) return e;
        return attn_attr<DH, true, 8, true>();
    }
    return cudaSuccess;
}

/* wgmma needs the sm_90a machine code this file is built for (Makefile: NVCC_ARCH) */
static int wg_ok(void) {
    static int ok = -1;
    if (ok < 0) {
        int dev = 0, major = 0, minor = 0;
        ok = cudaGetDevice(&dev) == cudaSuccess &&
             cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) == cudaSuccess &&
             cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev) == cudaSuccess && major == 9 &&
             minor == 0;
    }
    return ok;
}

extern "C" mg_status cu_attention_setup(void) {
    CU_TRY(attn_attrs<64>());
    CU_TRY(attn_attrs<128>());
    if (wg_ok()) {
        CU_TRY(cudaFuncSetAttribute(attn_wgmma_kernel<false>, cudaFuncAttributeMaxDynamicSharedMemorySize, WG_SMEM));
        CU_TRY(cudaFuncSetAttribute(attn_wgmma_kernel<true>, cudaFuncAttributeMaxDynamicSharedMemorySize, WG_SMEM));
        CU_TRY(cudaFuncSetAttribute(attn_wgmma2_kernel<false, false>, cudaFuncAttributeMaxDynamicSharedMemorySize, WG2_SMEM));
        CU_TRY(cudaFuncSetAttribute(attn_wgmma2_kernel<true, false>, cudaFuncAttributeMaxDynamicSharedMemorySize, WG2_SMEM));
        CU_TRY(cudaFuncSetAttribute(attn_wgmma2_kernel<false, true>, cudaFuncAttributeMaxDynamicSharedMemorySize, WG2_SMEM));
        CU_TRY(cudaFuncSetAttribute(attn_wgmma2_kernel<true, true>, cudaFuncAttributeMaxDynamicSharedMemorySize, WG2_SMEM));
    }
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
    if (want > AT_MAX_FOLD) want = AT_MAX_FOLD; /* one cluster (portable size) folds them */
    return want < 1 ? 1 : want;
}

extern "C" size_t cu_attention_scratch_floats(int Nq, int H, int dh, int splits) {
    return splits <= 1 ? 0 : (size_t)splits * Nq * H * (dh + 2);
}

template <int DH, bool LDM, int NW, bool FOLD>
static cudaError_t attn_launch(int Nq, int H, int splits, cudaStream_t st, bf16 *out, float *part_o, float *part_ml,
                               const bf16 *q, int ldq, const bf16 *k, const bf16 *v, int ldkv, const int *nk_slots,
                               int Nk, float scale_log2, const att_rope *rp) {
    dim3 grid((Nq + NW * 16 - 1) / (NW * 16), H, splits);
    if (rp)
        return cu_launch_ex(attn_kernel<DH, LDM, NW, FOLD, true>, grid, dim3(NW * 32), att_smem_size<DH, NW * 16>(), st,
                            FOLD ? (unsigned)splits : 1u, out, part_o, part_ml, q, ldq, k, v, ldkv, nk_slots, Nk, Nq,
                            H, scale_log2, *rp);
    att_rope none;
    memset(&none, 0, sizeof none);
    return cu_launch_ex(attn_kernel<DH, LDM, NW, FOLD, false>, grid, dim3(NW * 32), att_smem_size<DH, NW * 16>(), st,
                        FOLD ? (unsigned)splits : 1u, out, part_o, part_ml, q, ldq, k, v, ldkv, nk_slots, Nk, Nq, H,
                        scale_log2, none);
}

template <int DH>
static cudaError_t attn_dispatch(int version, int Nq, int H, int splits, cudaStream_t st, bf16 *out, float *part_o,
                                 float *part_ml, const bf16 *q, int ldq, const bf16 *k, const bf16 *v, int ldkv,
                                 const int *nk_slots, int Nk, float scale_log2, const att_rope *rp) {
    bool fold = version >= 3 && splits > 1 && splits <= AT_MAX_FOLD;
#define AT_GO(LDM, NW, FOLD) \
    attn_launch<DH, LDM, NW, FOLD>(Nq, H, splits, st, out, part_o, part_ml, q, ldq, k, v, ldkv, nk_slots, Nk, scale_log2, rp)
    if (version == 1) return AT_GO(false, 4, false);
    if constexpr (DH == 128) {
        if (version >= 5 && wg_ok() && !rp) {
            dim3 grid((Nq + WG_BQ - 1) / WG_BQ, H, splits);
            if (version >= 6) {
#define AT_WG2(F, L)                                                                                                  \
    cu_launch_ex(attn_wgmma2_kernel<F, L>, grid, dim3(256), (size_t)WG2_SMEM, st, F ? (unsigned)splits : 1u, out, part_o, \
                 part_ml, q, ldq, k, v, ldkv, nk_slots, Nk, Nq, H, scale_log2)
                if (version >= 7) return fold ? AT_WG2(true, true) : AT_WG2(false, true);
                return fold ? AT_WG2(true, false) : AT_WG2(false, false);
#undef AT_WG2
            }
            if (fold)
                return cu_launch_ex(attn_wgmma_kernel<true>, grid, dim3(256), (size_t)WG_SMEM, st, (unsigned)splits,
                                    out, part_o, part_ml, q, ldq, k, v, ldkv, nk_slots, Nk, Nq, H, scale_log2);
            return cu_launch_ex(attn_wgmma_kernel<false>, grid, dim3(256), (size_t)WG_SMEM, st, 1u, out, part_o,
                                part_ml, q, ldq, k, v, ldkv, nk_slots, Nk, Nq, H, scale_log2);
        }
        if (version >= 4) return fold ? AT_GO(true, 8, true) : AT_GO(true, 8, false);
    }
    return fold ? AT_GO(true, 4, true) : AT_GO(true, 4, false);
#undef AT_GO
}

/* The library's version: MG_CUDA_ATTN=<1..AT_VERSIONS> for A/B runs (read once), else the
 * fastest measured (H100, dev/cuda/logs/h100-attn-call2.log): dh 128 unsplit (1b 512x512)
 * version 6, 1.57x over 2; dh 128 split (1b 256x256) 2 (split + combine kernel: 25.0 us
 * against 27.6 for 6 and 3); dh 64 version 3 (the fold: 12.9 -> 11.6 us at s 256x256,
 * 52.5 -> 52.0 at s 512x512; frames within noise). */
static int attn_default_version(int dh, int splits) {
    static int v = -1;
    if (v < 0) {
        const char *e = getenv("MG_CUDA_ATTN");
        int x = e && *e ? atoi(e) : 0;
        v = x >= 1 && x <= AT_VERSIONS ? x : 0;
    }
    if (v) return v;
    return dh == 128 ? (splits <= 1 ? 6 : 2) : 3;
}

/* Versions with a RoPE-folded form (cu_attention_rope_v): those of attn_kernel, i.e. all at
 * dh 64, 1 to 4 at dh 128 (the wgmma kernels load Q and K/V in their swizzled layout and are
 * not done). */
static bool attn_rope_has(int version, int dh) { return dh == 64 || version <= 4 || !wg_ok(); }

static mg_status attn_run(int version, bf16_t *out, const bf16_t *q, int ldq, const bf16_t *k, const bf16_t *v,
                          int ldkv, const int *nk_slots, int Nk, int Nq, int H, int dh, int splits, float *scratch,
                          const att_rope *rp, cudaStream_t st) {
    if (!cu_attention_ok(dh) || ldq % 8 || ldkv % 8)
        return mg_fail(MG_ERR_UNSUPPORTED, "CUDA attention: head width %d (64 or 128), strides %d/%d (multiples of 8)",
                       dh, ldq, ldkv);
    if (version < 1 || version > AT_VERSIONS)
        return mg_fail(MG_ERR_ARG, "CUDA attention: version %d (1 to %d)", version, AT_VERSIONS);
    if (rp && !attn_rope_has(version, dh))
        return mg_fail(MG_ERR_UNSUPPORTED, "CUDA attention: version %d at head width %d has no RoPE-folded form", version,
                       dh);
    if (Nq <= 0 || H <= 0) return MG_OK;
    if (splits < 1) splits = 1;
    bool fold = version >= 3 && splits <= AT_MAX_FOLD;
    float *part_o = scratch, *part_ml = scratch ? scratch + (size_t)splits * Nq * H * dh : nullptr;
    if (splits > 1 && !fold && !scratch) return mg_fail(MG_ERR_ARG, "CUDA attention: %d splits need scratch", splits);
    float scale_log2 = (float)(1.0 / sqrt((double)dh) * 1.4426950408889634);
    if (dh == 64)
        CU_TRY(attn_dispatch<64>(version, Nq, H, splits, st, (bf16 *)out, part_o, part_ml, (const bf16 *)q, ldq,
                                 (const bf16 *)k, (const bf16 *)v, ldkv, nk_slots, Nk, scale_log2, rp));
    else
        CU_TRY(attn_dispatch<128>(version, Nq, H, splits, st, (bf16 *)out, part_o, part_ml, (const bf16 *)q, ldq,
                                  (const bf16 *)k, (const bf16 *)v, ldkv, nk_slots, Nk, scale_log2, rp));
    if (splits > 1 && !fold) {
        size_t n = (size_t)Nq * H * dh;
        CU_LAUNCH(attn_combine_kernel, cu_blocks(n, 256), 256, 0, st, (bf16 *)out, (const float *)part_o,
                  (const float *)part_ml, Nq, H, dh, splits);
    }
    return MG_OK;
}

extern "C" mg_status cu_attention(bf16_t *out, const bf16_t *q, int ldq, const bf16_t *k, const bf16_t *v, int ldkv,
                                  const int *nk_slots, int Nk, int Nq, int H, int dh, int splits, float *scratch,
                                  cudaStream_t st) {
    return cu_attention_v(attn_default_version(dh, splits), out, q, ldq, k, v, ldkv, nk_slots, Nk, Nq, H, dh, splits,
                          scratch, st);
}

extern "C" mg_status cu_attention_v(int version, bf16_t *out, const bf16_t *q, int ldq, const bf16_t *k,
                                    const bf16_t *v, int ldkv, const int *nk_slots, int Nk, int Nq, int H, int dh,
                                    int splits, float *scratch, cudaStream_t st) {
    return attn_run(version, out, q, ldq, k, v, ldkv, nk_slots, Nk, Nq, H, dh, splits, scratch, nullptr, st);
}

/* Where the frame may fold RoPE into attention (MG_CUDA_ROPEATT=1): dh 64 (s and tiny). At
 * dh 128 the folded form exists for versions 1 to 4 only: the library runs wgmma (6, no folded
 * form) unsplit, and at 1b 256x256 (version 2, 4 splits) the folded kernel measured slower
 * (dev/cuda/README.md). */
extern "C" int cu_attention_rope_ok(int dh, int splits) {
    return dh == 64 && attn_rope_has(attn_default_version(dh, splits), dh);
}

extern "C" mg_status cu_attention_rope_v(int version, bf16_t *out, bf16_t *qkv, int ldq, bf16_t *k_ring,
                                         bf16_t *v_ring, const float *cos_sp, const float *sin_sp,
                                         const cu_frame_params *p, int N, int H, int dh, int splits, float *scratch,
                                         cudaStream_t st) {
    if (ldq < 3 * H * dh)
        return mg_fail(MG_ERR_ARG, "CUDA attention+rope: qkv row stride %d < 3 x %d x %d", ldq, H, dh);
    att_rope rp;
    const int d = H * dh;
    rp.kc = (const bf16 *)qkv + d, rp.vc = (const bf16 *)qkv + 2 * d;
    rp.kw = (bf16 *)k_ring, rp.vw = (bf16 *)v_ring;
    rp.cos_sp = cos_sp, rp.sin_sp = sin_sp, rp.p = p, rp.ldq = ldq;
    return attn_run(version, out, qkv, ldq, k_ring, v_ring, d, &p->vis, N, N, H, dh, splits, scratch, &rp, st);
}

extern "C" mg_status cu_attention_rope(bf16_t *out, bf16_t *qkv, int ldq, bf16_t *k_ring, bf16_t *v_ring,
                                       const float *cos_sp, const float *sin_sp, const cu_frame_params *p, int N, int H,
                                       int dh, int splits, float *scratch, cudaStream_t st) {
    return cu_attention_rope_v(attn_default_version(dh, splits), out, qkv, ldq, k_ring, v_ring, cos_sp, sin_sp, p, N, H,
                               dh, splits, scratch, st);
}
