/* The autoencoder's small levels in one launch: n Blocks in a row at one size (32x32 and 64x64
 * at config s), x = relu(c3(relu(c2(relu(c1 x)))) + x) each, with the feature map resident in
 * the shared memory of one thread-block cluster.
 *
 * Why: at 32x32 and 64x64 every conv of the per-conv path (conv.cu) is one launch of a few
 * tens of blocks walking 18 k-blocks, ~10-11 us each on an H100 for 0.08-0.3 GFLOP: latency,
 * not arithmetic. Here a cluster of up to 16 blocks (one per SM) holds the whole level: block
 * r owns a band of R rows of x and of one scratch map t, each stored with a one-row halo
 * above and below ((R+2) x W pixels of C channels, rows of C+8 bf16 so every ldmatrix phase
 * is free of bank conflicts, as conv_halo_kernel). A conv reads only local shared memory:
 * the nine taps are shifted ldmatrix row addresses into the band (one address per lane, so a
 * pixel at the left or right image edge points its lane at a zero row: the padding), the
 * weights stream through a ring of NS tap-sized slices (C x C bf16 each, cp.async) that runs
 * ahead across conv boundaries, and mma.sync m16n8k16 accumulates in fp32. The epilogue is
 * conv_store's: + bias, + residual (x, for c3), ReLU, bf16 - then the band's first and last
 * rows are pushed into the neighbours' halo rows through distributed shared memory, so the
 * next conv again reads only local memory.
 *
 * The three maps of a Block (x, t1, t2) need only two buffers: c1 reads x and writes t; c2
 * reads t and writes t in place (every output of the band is held in registers until all
 * blocks of the cluster have finished reading t, a cluster barrier between the last tap and
 * the stores); c3 reads t and writes x (the residual is the same element, read then
 * written by one thread). The cluster barrier is split (arrive after the stores and pushes,
 * wait before the next conv reads), with release/acquire semantics, so the pushes are
 * visible where they are read.
 *
 * Ordering, conv k (in = x for c1, t otherwise; out = t for c1 and c2, x for c3):
 *     wait (k > 0) | 9 taps | c2 only: arrive, wait | stores, own rows | __syncthreads |
 *     push the first and last rows to the neighbours' halo rows of out | arrive
 * and after the last conv: wait, then the band of x back to global memory. Nobody writes a
 * buffer a block may still be reading: out is not in (c1, c3) and every block has finished
 * the previous conv (it arrived after its last read); c2's in-place stores wait for all.
 *
 * The input x is read once from global memory (with its halo rows) and written once at the
 * end; t never leaves the SMs. Where a level does not fit (shared memory, 16 blocks, 32
 * warps' registers) or the card has no clusters, cu_tae_level_ok says no and the caller runs
 * the per-conv path. */
#include <cooperative_groups.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "cuda/cuda_common.h"

namespace cg = cooperative_groups;

#define LV_MAXCONV (3 * CU_LEVEL_MAXBLOCKS)

typedef struct lv_params {
    const bf16 *w[LV_MAXCONV];  /* (C, 9*C) each */
    const float *b[LV_MAXCONV]; /* (C) or NULL */
} lv_params;

__device__ __forceinline__ void cluster_arrive() { asm volatile("barrier.cluster.arrive.release.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void cluster_wait() { asm volatile("barrier.cluster.wait.acquire.aligned;\n" ::: "memory"); }

/* Slice j of the weight stream into ring slot j % NS: TPG consecutive taps (one tap, or one
 * row of three) of conv j / (9 / TPG), all C output channels: (C, TPG*C) bf16, rows of
 * TPG*C + 8 (conflict-free ldmatrix phases, as the activations' rows of C + 8). */
template <int C, int NS, int TPG>
__device__ __forceinline__ void lv_load_w(bf16 *ring, const lv_params &p, int j, int tid, int nthr) {
    const int WLD = TPG * C + 8, V = TPG * C / 8;
    const bf16 *w = p.w[j / (9 / TPG)] + (j % (9 / TPG)) * TPG * C;
    bf16 *dst = ring + (j % NS) * C * WLD;
    for (int idx = tid; idx < C * V; idx += nthr) {
        int co = idx / V, c8 = (idx % V) * 8;
        cp_async16(dst + co * WLD + c8, w + (size_t)co * 9 * C + c8, true);
    }
}

/* C channels; each warp MT m-tiles (16 pixels each) x C/8/NG n-tiles; NS weight slices of
 * TPG taps in flight (one barrier per slice). Block rank r of the cluster owns image rows
 * [r*R, min(H, r*R + R)). Threads per block at most: 64 accumulators a thread want more than
 * the 128 registers 512 threads leave, so those forms run at most 8 warps. */
#define LV_MAXT(C, MT, NG) ((MT) * ((C) / 8 / (NG)) * 4 >= 64 ? 256 : 512)

template <int C, int MT, int NG, int NS, int TPG>
__global__ void __launch_bounds__(LV_MAXT(C, MT, NG)) tae_level_kernel(bf16 *x, const __grid_constant__ lv_params p, int nconv,
                                                        int H, int W, int R) {
    const int LD = C + 8, NTW = C / 8 / NG, WLD = TPG * C + 8, G = 9 / TPG; /* G slices per conv */
    static_assert(NTW % 2 == 0, "n-tiles are loaded in pairs");
    extern __shared__ __align__(16) bf16 lsm[];
    bf16 *ring = lsm, *X = ring + NS * C * WLD, *T = X + (size_t)(R + 2) * W * LD, *zero = T + (size_t)(R + 2) * W * LD;
    float *bsm = reinterpret_cast<float *>(zero + LD); /* (nconv, C): every conv's bias, 0 where none */
    cg::cluster_group cluster = cg::this_cluster();
    const int rank = (int)cluster.block_rank(), cs = (int)cluster.num_blocks();
    const int tid = threadIdx.x, nthr = blockDim.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t = lane & 3;
    const int mi = lane >> 3, lr = lane & 7, mg = warp / NG, ng = warp % NG;
    const int r0 = rank * R, nr = max(0, min(R, H - r0)), npx = nr * W;
    const bool up_nb = rank > 0 && nr > 0, dn_nb = rank + 1 < cs && r0 + R < H;
    const int total = nconv * G;

    /* the weights are constant: their first slices are fetched before waiting on the
     * previous kernel */
#pragma unroll
    for (int s = 0; s < NS - 1; s++) {
        if (s < total) lv_load_w<C, NS, TPG>(ring, p, s, tid, nthr);
        cp_async_commit();
    }
    for (int i = tid; i < LD; i += nthr) zero[i] = f2bf(0.0f);
    for (int i = tid; i < nconv * C; i += nthr) {
        const float *b = p.b[i / C];
        bsm[i] = b ? b[i % C] : 0.0f;
    }
    pdl_wait();
    pdl_trigger();
    /* x's band with its halo rows (zeros outside the image: cp.async's zero fill), one
     * group after the weights' first slices; t's halo rows zero until a neighbour pushes
     * into them (those at the image's top and bottom stay zero) */
    {
        const int vec = W * C / 8; /* 16-byte pieces per row */
        for (int idx = tid; idx < (nr + 2) * vec; idx += nthr) {
            int j = idx / vec, e = idx % vec, px = e / (C / 8), c8 = (e % (C / 8)) * 8, iy = r0 - 1 + j;
            bool ok = iy >= 0 && iy < H;
            cp_async16(X + ((size_t)j * W + px) * LD + c8, ok ? x + ((size_t)iy * W + px) * C + c8 : x, ok);
        }
        cp_async_commit();
        for (int idx = tid; idx < 2 * vec; idx += nthr) {
            int j = idx / vec ? nr + 1 : 0, e = idx % vec, px = e / (C / 8), c8 = (e % (C / 8)) * 8;
            *reinterpret_cast<uint4 *>(T + ((size_t)j * W + px) * LD + c8) = make_uint4(0, 0, 0, 0);
        }
    }
    /* each lane's pixel in each of its m-tiles (ldmatrix row (mi & 1) * 8 + lr): -1 past the band */
    int pq[MT];
    bool pl[MT], pr[MT];
#pragma unroll
    for (int mt = 0; mt < MT; mt++) {
        int px = (mg * MT + mt) * 16 + (mi & 1) * 8 + lr;
        pq[mt] = px < npx ? px : -1;
        pl[mt] = px % W == 0, pr[mt] = px % W == W - 1;
    }
    cp_async_wait<0>(); /* the band (and the first weight slices) landed */
    cluster.sync(); /* every block has started and zeroed its halo rows before anyone pushes */

    for (int k = 0; k < nconv; k++) {
        const int kind = k % 3; /* 0: c1 (x -> t), 1: c2 (t -> t), 2: c3 (t -> x, + x) */
        bf16 *in = kind == 0 ? X : T, *out = kind == 2 ? X : T;
        if (k > 0) cluster_wait(); /* the previous conv's rows and pushes are in place */
        float acc[MT][NTW][4];
#pragma unroll
        for (int mt = 0; mt < MT; mt++)
#pragma unroll
            for (int nt = 0; nt < NTW; nt++) acc[mt][nt][0] = acc[mt][nt][1] = acc[mt][nt][2] = acc[mt][nt][3] = 0.0f;
#pragma unroll 1
        for (int gi = 0; gi < G; gi++) {
            const int j = k * G + gi;
            cp_async_wait<NS - 2>();
            __syncthreads(); /* slice j landed for all; everyone is done with slice j - 1's slot */
            if (j + NS - 1 < total) lv_load_w<C, NS, TPG>(ring, p, j + NS - 1, tid, nthr);
            cp_async_commit();
            const bf16 *ws = ring + (j % NS) * C * WLD;
#pragma unroll
            for (int tt = 0; tt < TPG; tt++) {
                const int tap = gi * TPG + tt, ky = tap / 3, kx = tap % 3;
                const bf16 *arow[MT];
#pragma unroll
                for (int mt = 0; mt < MT; mt++) {
                    bool ok = pq[mt] >= 0 && !(kx == 0 && pl[mt]) && !(kx == 2 && pr[mt]);
                    arow[mt] = (ok ? in + (size_t)(pq[mt] + ky * W + kx - 1) * LD : zero) + (mi >> 1) * 8;
                }
#pragma unroll
                for (int ks = 0; ks < C; ks += 16) {
                    uint32_t a[MT][4], b[NTW][2];
#pragma unroll
                    for (int mt = 0; mt < MT; mt++) ldmatrix_x4(a[mt], arow[mt] + ks);
#pragma unroll
                    for (int nt = 0; nt < NTW; nt += 2) { /* matrices: k +0/+8 (mi&1), n-tile +0/+1 (mi>>1) */
                        uint32_t r[4];
                        ldmatrix_x4(r, ws + ((ng * NTW + nt) * 8 + (mi >> 1) * 8 + lr) * WLD + tt * C + ks + (mi & 1) * 8);
                        b[nt][0] = r[0], b[nt][1] = r[1], b[nt + 1][0] = r[2], b[nt + 1][1] = r[3];
                    }
#pragma unroll
                    for (int mt = 0; mt < MT; mt++)
#pragma unroll
                        for (int nt = 0; nt < NTW; nt++) mma_bf16_16816(acc[mt][nt], a[mt], b[nt]);
                }
            }
        }
        if (kind == 1) { /* in place: every block of the cluster has finished reading t */
            cluster_arrive();
            cluster_wait();
        }
        const float *bias = bsm + k * C;
#pragma unroll
        for (int nt = 0; nt < NTW; nt++) {
            const int col = (ng * NTW + nt) * 8 + 2 * t;
            const float b0 = bias[col], b1 = bias[col + 1];
#pragma unroll
            for (int mt = 0; mt < MT; mt++)
#pragma unroll
                for (int half = 0; half < 2; half++) {
                    int px = (mg * MT + mt) * 16 + g + 8 * half;
                    if (px >= npx) continue;
                    __nv_bfloat162 *o = reinterpret_cast<__nv_bfloat162 *>(out + (size_t)(W + px) * LD + col);
                    float v0 = acc[mt][nt][2 * half] + b0, v1 = acc[mt][nt][2 * half + 1] + b1;
                    if (kind == 2) { /* out is x: the residual is the element itself */
                        float2 r = __bfloat1622float2(*o);
                        v0 += r.x, v1 += r.y;
                    }
                    *o = __floats2bfloat162_rn(fmaxf(v0, 0.0f), fmaxf(v1, 0.0f));
                }
        }
        __syncthreads(); /* the band's rows are complete: push the edge rows */
        {
            const int vec = W * C / 8;
            bf16 *above = up_nb ? cluster.map_shared_rank(out, rank - 1) : nullptr;
            bf16 *below = dn_nb ? cluster.map_shared_rank(out, rank + 1) : nullptr;
            for (int idx = tid; idx < 2 * vec; idx += nthr) {
                int side = idx / vec, e = idx % vec, px = e / (C / 8), c8 = (e % (C / 8)) * 8;
                if (side == 0 && up_nb) /* my first row -> the bottom halo row (R + 1) above */
                    *reinterpret_cast<uint4 *>(above + ((size_t)(R + 1) * W + px) * LD + c8) =
                        *reinterpret_cast<const uint4 *>(out + ((size_t)W + px) * LD + c8);
                if (side == 1 && dn_nb) /* my last row (R) -> the top halo row (0) below */
                    *reinterpret_cast<uint4 *>(below + (size_t)px * LD + c8) =
                        *reinterpret_cast<const uint4 *>(out + ((size_t)R * W + px) * LD + c8);
            }
        }
        cluster_arrive();
    }
    cluster_wait(); /* no block leaves while a neighbour may still push into its memory */
    const int vec = W * C / 8;
    for (int idx = tid; idx < nr * vec; idx += nthr) {
        int j = idx / vec, e = idx % vec, px = e / (C / 8), c8 = (e % (C / 8)) * 8;
        *reinterpret_cast<uint4 *>(x + ((size_t)(r0 + j) * W + px) * C + c8) =
            *reinterpret_cast<const uint4 *>(X + ((size_t)(j + 1) * W + px) * LD + c8);
    }
}

/* ---- planning --------------------------------------------------------------------------- */

typedef void (*lv_kernel_t)(bf16 *, const lv_params, int, int, int, int);

typedef struct lv_plan {
    lv_kernel_t kernel;
    int cs, R, warps;
    size_t smem;
} lv_plan;

template <int C, int NS, int TPG> static size_t lv_smem(int R, int W) {
    return ((size_t)NS * C * (TPG * C + 8) + 2 * (size_t)(R + 2) * W * (C + 8) + (C + 8)) * 2 + LV_MAXCONV * C * 4;
}

template <int C, int NS, int TPG> static lv_kernel_t lv_pick(int MT, int NG) {
    if (MT == 1 && NG == 1) return tae_level_kernel<C, 1, 1, NS, TPG>;
    if (MT == 1 && NG == 2) return tae_level_kernel<C, 1, 2, NS, TPG>;
    if (MT == 2 && NG == 1) return tae_level_kernel<C, 2, 1, NS, TPG>;
    if (MT == 2 && NG == 2) return tae_level_kernel<C, 2, 2, NS, TPG>;
    if (C == 32 && MT == 4 && NG == 1) return tae_level_kernel<32, 4, 1, NS, TPG>;
    if (C == 64 && MT == 1 && NG == 4) return tae_level_kernel<64, 1, 4, NS, TPG>;
    return nullptr;
}

/* The versions (cu_tae_level_v): 1 one tap per weight slice (a block barrier per tap), 12
 * slices in flight, 8 warps or fewer where the band allows (two m-tiles a warp); 2 = 1 with a
 * row of three taps per slice (3 barriers a conv), 4 slices in flight; 3 = 2 with 16 warps
 * (one m-tile a warp, the n-tiles split where the band has fewer than 16 m-tiles); 4 = 3 with
 * two m-tiles and half the n-tiles a warp where the band has more than 8 m-tiles (16 warps at
 * 64x64: twice version 2's warps to hide latency, half version 3's B-fragment loads). */
static int lv_choose(lv_plan *pl, int version, int H, int W, int C, int cs_max, size_t smem_max) {
    static const int sizes[] = {16, 8};
    for (int si = 0; si < 2; si++) {
        int cs = sizes[si] < cs_max ? sizes[si] : cs_max;
        if (cs > H) cs = H;
        int R = (H + cs - 1) / cs;
        cs = (H + R - 1) / R; /* no block without rows */
        int mtiles = (R * W + 15) / 16, MT = 0, NG = 0, warps = 0;
        if (version >= 4 && mtiles > 8 && (mtiles + 1) / 2 * 2 <= 16) MT = 2, NG = 2, warps = (mtiles + 1) / 2 * 2;
        else if (version >= 3 && C == 64 && mtiles <= 4) MT = 1, NG = 4, warps = 4 * mtiles;
        else if (version >= 3 && mtiles <= 16) MT = 1, NG = 1, warps = mtiles;
        else if (2 * mtiles <= 16) MT = 1, NG = 2, warps = 2 * mtiles;
        else if ((mtiles + 1) / 2 <= 16) MT = 2, NG = 1, warps = (mtiles + 1) / 2;
        else if (C == 32 && (mtiles + 3) / 4 <= 16) MT = 4, NG = 1, warps = (mtiles + 3) / 4;
        else continue;
        if (warps * 32 > LV_MAXT(C, MT, NG)) continue;
        lv_kernel_t k = nullptr;
        size_t smem = 0;
        if (version == 1 && C == 64 && (smem = lv_smem<64, 12, 1>(R, W)) <= smem_max) k = lv_pick<64, 12, 1>(MT, NG);
        if (version == 1 && C == 32 && (smem = lv_smem<32, 12, 1>(R, W)) <= smem_max) k = lv_pick<32, 12, 1>(MT, NG);
        if (version >= 2 && C == 64 && (smem = lv_smem<64, 4, 3>(R, W)) <= smem_max) k = lv_pick<64, 4, 3>(MT, NG);
        if (version >= 2 && C == 32 && (smem = lv_smem<32, 4, 3>(R, W)) <= smem_max) k = lv_pick<32, 4, 3>(MT, NG);
        if (!k) continue;
        pl->kernel = k, pl->cs = cs, pl->R = R, pl->warps = warps, pl->smem = smem;
        return 1;
    }
    return 0;
}

/* Plans are cached per (device, version, H, W, C): the attributes are set and the cluster's
 * residency checked once (a plan made while an API call failed, e.g. inside a graph capture
 * that forbids it, is not cached). */
#define LV_CACHE 64
static struct lv_entry {
    int dev, version, H, W, C, ok;
    lv_plan plan;
} lv_cache[LV_CACHE];
static int lv_ncache;
static long lv_launches;
static pthread_mutex_t lv_mu = PTHREAD_MUTEX_INITIALIZER;

static int lv_plan_for(lv_plan *out, int version, int H, int W, int C) {
    if (version < 1 || version > CU_LEVEL_VERSIONS || H < 1 || W < 1 || (C != 32 && C != 64) ||
        (size_t)H * W * C > (size_t)64 * 64 * 64)
        return 0;
    int dev = 0;
    if (cudaGetDevice(&dev) != cudaSuccess) return 0;
    pthread_mutex_lock(&lv_mu);
    for (int i = 0; i < lv_ncache; i++)
        if (lv_cache[i].dev == dev && lv_cache[i].version == version && lv_cache[i].H == H && lv_cache[i].W == W &&
            lv_cache[i].C == C) {
            int ok = lv_cache[i].ok;
            if (ok) *out = lv_cache[i].plan;
            pthread_mutex_unlock(&lv_mu);
            return ok;
        }
    int ok = 0, cc = 0, smem_optin = 0, clusters = 0, api_err = 0;
    lv_plan pl;
    memset(&pl, 0, sizeof pl);
    if (cudaDeviceGetAttribute(&cc, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&clusters, cudaDevAttrClusterLaunch, dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&smem_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev) != cudaSuccess)
        api_err = 1;
    else if (cc >= 9 && clusters) {
        for (int cs_max = 16; cs_max >= 8 && !ok && !api_err; cs_max /= 2) {
            if (!lv_choose(&pl, version, H, W, C, cs_max, (size_t)smem_optin)) continue;
            /* the limit is the kernel's, shared by every plan that launches it: the card's
             * maximum, not this plan's size (a smaller plan made later would make the launch
             * of a larger one fail with "invalid argument") */
            if (cudaFuncSetAttribute(pl.kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem_optin) != cudaSuccess ||
                cudaFuncSetAttribute(pl.kernel, cudaFuncAttributeNonPortableClusterSizeAllowed, 1) != cudaSuccess) {
                api_err = 1;
                break;
            }
            cudaLaunchConfig_t cfg = {};
            cudaLaunchAttribute at;
            at.id = cudaLaunchAttributeClusterDimension;
            at.val.clusterDim.x = 1, at.val.clusterDim.y = 1, at.val.clusterDim.z = (unsigned)pl.cs;
            cfg.gridDim = dim3(1, 1, (unsigned)pl.cs);
            cfg.blockDim = dim3((unsigned)pl.warps * 32);
            cfg.dynamicSmemBytes = pl.smem;
            cfg.attrs = &at, cfg.numAttrs = 1;
            int n = 0;
            if (cudaOccupancyMaxActiveClusters(&n, pl.kernel, &cfg) != cudaSuccess) api_err = 1;
            else ok = n >= 1;
        }
    }
    (void)cudaGetLastError(); /* a refused attribute or query must not linger as the next launch's error */
    if (api_err) ok = 0; /* not cached: asked again next time */
    else if (lv_ncache < LV_CACHE) {
        struct lv_entry *e = &lv_cache[lv_ncache++];
        e->dev = dev, e->version = version, e->H = H, e->W = W, e->C = C, e->ok = ok, e->plan = pl;
    }
    pthread_mutex_unlock(&lv_mu);
    if (ok) *out = pl;
    return ok;
}

/* the library's version: MG_CUDA_LEVELV=<n>, else the fastest measured */
static int lv_version(void) {
    const char *e = getenv("MG_CUDA_LEVELV");
    int v = e && *e ? atoi(e) : 0;
    return v >= 1 && v <= CU_LEVEL_VERSIONS ? v : CU_LEVEL_DEFAULT;
}

/* Where the frame step runs it (MG_CUDA_LEVEL=1, the default): where the lab measured it
 * faster than the per-conv path on an H100 (dev/cuda/README.md, logs/h100-level-call3.log):
 * version 2 at 32x32 1.6-1.7x per conv, at 64x64 1.04x (64 channels) and 1.2x (32): up to
 * 64x64 pixels. */
#define LV_FAST_PIX 4096
#define LV_MODE_DEFAULT 1

extern "C" int cu_tae_level_use(int H, int W, int C) {
    const char *e = getenv("MG_CUDA_LEVEL");
    int mode = e && *e ? atoi(e) : LV_MODE_DEFAULT;
    if (mode <= 0 || (mode == 1 && (size_t)H * W > LV_FAST_PIX)) return 0;
    return cu_tae_level_ok(H, W, C);
}

extern "C" int cu_tae_level_ok(int H, int W, int C) {
    lv_plan pl;
    return lv_plan_for(&pl, lv_version(), H, W, C);
}

extern "C" int cu_tae_level_cluster(int version, int H, int W, int C) {
    lv_plan pl;
    return lv_plan_for(&pl, version ? version : lv_version(), H, W, C) ? pl.cs : 0;
}

extern "C" mg_status cu_tae_level_v(int version, bf16_t *x, const bf16_t *const *w, const float *const *b, int nblocks,
                                    int H, int W, int C, cudaStream_t st) {
    lv_plan pl;
    if (nblocks < 1 || nblocks > CU_LEVEL_MAXBLOCKS || !lv_plan_for(&pl, version, H, W, C))
        return mg_fail(MG_ERR_UNSUPPORTED, "CUDA TAE level (version %d): %d Blocks at %dx%d, %d channels (does not apply)",
                       version, nblocks, W, H, C);
    lv_params p;
    memset(&p, 0, sizeof p);
    for (int i = 0; i < 3 * nblocks; i++) {
        if (!w[i]) return mg_fail(MG_ERR_ARG, "CUDA TAE level: conv %d has no weights", i);
        p.w[i] = (const bf16 *)w[i], p.b[i] = b ? b[i] : NULL;
    }
    CU_TRY(cu_launch_ex(pl.kernel, dim3(1, 1, (unsigned)pl.cs), dim3((unsigned)pl.warps * 32), pl.smem, st,
                        (unsigned)pl.cs, (bf16 *)x, p, 3 * nblocks, H, W, pl.R));
    __atomic_add_fetch(&lv_launches, 1, __ATOMIC_RELAXED);
    return MG_OK;
}

extern "C" long cu_tae_level_launches(void) { return __atomic_load_n(&lv_launches, __ATOMIC_RELAXED); }

extern "C" mg_status cu_tae_level(bf16_t *x, const bf16_t *const *w, const float *const *b, int nblocks, int H, int W,
                                  int C, cudaStream_t st) {
    return cu_tae_level_v(lv_version(), x, w, b, nblocks, H, W, C, st);
}
