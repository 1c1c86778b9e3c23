// Fisher hot path kernels for CuPy (RawModule, float and double). Launcher contract: see
// arraygen/fisher.py. Elements are handled in quads (4 consecutive elements = one 16-byte float4
// or two double2, and exactly one Philox block of the noise stream); 64-bit offsets throughout.
#include "philox.cuh"

namespace arraygen {

template <typename T>
struct Quad {
    T a[4];
};

// Loads/stores of a whole quad; p + 4*q must be 16-byte aligned (the launcher checks the bases).
__device__ __forceinline__ Quad<float> load4(const float* p, long long e) {
    const float4 v = *reinterpret_cast<const float4*>(p + e);
    return Quad<float>{{v.x, v.y, v.z, v.w}};
}
__device__ __forceinline__ Quad<double> load4(const double* p, long long e) {
    const double2 v0 = *reinterpret_cast<const double2*>(p + e);
    const double2 v1 = *reinterpret_cast<const double2*>(p + e + 2);
    return Quad<double>{{v0.x, v0.y, v1.x, v1.y}};
}
__device__ __forceinline__ void store4(float* p, long long e, const Quad<float>& q) {
    __stcs(reinterpret_cast<float4*>(p + e), make_float4(q.a[0], q.a[1], q.a[2], q.a[3]));
}
__device__ __forceinline__ void store4(double* p, long long e, const Quad<double>& q) {
    __stcs(reinterpret_cast<double2*>(p + e), make_double2(q.a[0], q.a[1]));
    __stcs(reinterpret_cast<double2*>(p + e + 2), make_double2(q.a[2], q.a[3]));
}

// Quad q restricted to [start, stop): whole-quad vector load, else masked scalar loads (zeros).
template <typename T>
__device__ __forceinline__ Quad<T> load_quad(const T* p, long long q, long long start,
                                             long long stop) {
    const long long e = 4 * q;
    if (e >= start && e + 4 <= stop) return load4(p, e);
    Quad<T> r;
#pragma unroll
    for (int k = 0; k < 4; ++k) r.a[k] = (e + k >= start && e + k < stop) ? p[e + k] : T(0);
    return r;
}

template <typename T>
__device__ __forceinline__ void store_quad(T* p, long long q, long long start, long long stop,
                                           const Quad<T>& r) {
    const long long e = 4 * q;
    if (e >= start && e + 4 <= stop) {
        store4(p, e, r);
        return;
    }
#pragma unroll
    for (int k = 0; k < 4; ++k)
        if (e + k >= start && e + k < stop) p[e + k] = r.a[k];
}

template <typename T>
struct StepParams {
    T momentum, one_minus_momentum, step_size, two_step_size;
    long long n_per;  // elements per sample
    PhiloxKey key;
};

// Kernel arguments are plain scalars (exact C types from the launcher), gathered here.
#define ARRAYGEN_STEP_ARGS(T) \
    T momentum, T one_minus_momentum, T step_size, T two_step_size, long long n_per, \
        unsigned int c2, unsigned int c3, unsigned int k0, unsigned int k1
#define ARRAYGEN_STEP_PARAMS \
    StepParams<T> { momentum, one_minus_momentum, step_size, two_step_size, n_per, {c2, c3, k0, k1} }

// Sum over the valid lanes of (m v + (1 - m)(s^2 + eps))^-1/2.
template <typename T>
__device__ __forceinline__ T quad_rsqrt_sum(const Quad<T>& s, const Quad<T>& v, T eps, T m,
                                            T one_m, long long q, long long start,
                                            long long stop) {
    T acc = 0;
#pragma unroll
    for (int k = 0; k < 4; ++k) {
        const long long e = 4 * q + k;
        if (e >= start && e < stop) {
            const T vn = m * v.a[k] + one_m * (s.a[k] * s.a[k] + eps);
            acc += (T)1 / ag_sqrt(vn);
        }
    }
    return acc;
}

// Block-wide sum (any multiple of 32 threads, fixed order, every thread gets the result).
template <typename T>
__device__ __forceinline__ T block_sum(T value) {
    __shared__ T warp_sums[32];
    __shared__ T total;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) value += __shfl_down_sync(0xffffffffu, value, off);
    if (lane == 0) warp_sums[warp] = value;
    __syncthreads();
    if (warp == 0) {
        const int n_warps = blockDim.x >> 5;
        T w = lane < n_warps ? warp_sums[lane] : T(0);
#pragma unroll
        for (int off = 16; off > 0; off >>= 1) w += __shfl_down_sync(0xffffffffu, w, off);
        if (lane == 0) total = w;
    }
    __syncthreads();
    const T result = total;
    __syncthreads();
    return result;
}

// The update of one quad given its score and v: writes x_new and v_new for the valid lanes.
template <typename T>
__device__ __forceinline__ void update_quad_x(const Quad<T>& xq, const T* __restrict__ noise,
                                              T* __restrict__ x_out, T* __restrict__ v_out,
                                              const Quad<T>& s, const Quad<T>& v, T eps,
                                              T scale, const StepParams<T>& prm, long long q,
                                              long long start, long long stop) {
    const T m = prm.momentum, one_m = prm.one_minus_momentum;
    const T h = prm.step_size, two_h = prm.two_step_size;
    T z[4];
    if (noise != nullptr) {
        const Quad<T> nq = load_quad(noise, q, start, stop);
#pragma unroll
        for (int k = 0; k < 4; ++k) z[k] = nq.a[k];
    } else {
        box_muller<T>(philox4x32_10((unsigned long long)q, prm.key), z);
    }
    Quad<T> xo, vo;
#pragma unroll
    for (int k = 0; k < 4; ++k) {
        const T vn = m * v.a[k] + one_m * (s.a[k] * s.a[k] + eps);
        const T p = ((T)1 / ag_sqrt(vn)) * scale;
        vo.a[k] = vn;
        xo.a[k] = xq.a[k] + h * p * s.a[k] + ag_sqrt(two_h * p) * z[k];
    }
    store_quad(x_out, q, start, stop, xo);
    store_quad(v_out, q, start, stop, vo);
}

template <typename T>
__device__ __forceinline__ void update_quad(const T* __restrict__ x, const T* __restrict__ noise,
                                            T* __restrict__ x_out, T* __restrict__ v_out,
                                            const Quad<T>& s, const Quad<T>& v, T eps,
                                            T scale, const StepParams<T>& prm, long long q,
                                            long long start, long long stop) {
    update_quad_x(load_quad(x, q, start, stop), noise, x_out, v_out, s, v, eps, scale, prm, q,
                  start, stop);
}

}  // namespace arraygen

using namespace arraygen;

// F = score^2 + eps[i / n_per]. Vector path over whole quads (DIAG_UNROLL per thread, all loads
// issued before the stores), scalar tail.
#define DIAG_UNROLL 4
template <typename T>
__global__ void fisher_diagonal_kernel(const T* __restrict__ s, const T* __restrict__ eps,
                                       T* __restrict__ out, long long n, long long n_per,
                                       double inv_n_per, int n_eps) {
    const long long n_quads = n / 4;
    const long long step = (long long)gridDim.x * blockDim.x * DIAG_UNROLL;
    const T e_all = eps[0];
    for (long long q0 = (long long)blockIdx.x * blockDim.x * DIAG_UNROLL + threadIdx.x;
         q0 < n_quads; q0 += step) {
        Quad<T> a[DIAG_UNROLL];
#pragma unroll
        for (int u = 0; u < DIAG_UNROLL; ++u) {
            const long long q = q0 + (long long)u * blockDim.x;
            if (q < n_quads) a[u] = load4(s, 4 * q);
        }
#pragma unroll
        for (int u = 0; u < DIAG_UNROLL; ++u) {
            const long long q = q0 + (long long)u * blockDim.x;
            if (q >= n_quads) break;
            const long long e0 = 4 * q;
            Quad<T> r;
            if (n_eps == 1) {
#pragma unroll
                for (int k = 0; k < 4; ++k) r.a[k] = a[u].a[k] * a[u].a[k] + e_all;
            } else {
                // e0 / n_per through a double reciprocal (64-bit division is slow), fixed up
                long long b = (long long)((double)e0 * inv_n_per);
                b -= (b * n_per > e0);
                b += ((b + 1) * n_per <= e0);
                const long long limit = (b + 1) * n_per;
                const T eb = eps[b];
#pragma unroll
                for (int k = 0; k < 4; ++k) {
                    const T ek = (e0 + k < limit) ? eb : eps[(e0 + k) / n_per];
                    r.a[k] = a[u].a[k] * a[u].a[k] + ek;
                }
            }
            store4(out, e0, r);
        }
    }
    const long long tail_stride = (long long)gridDim.x * blockDim.x;
    for (long long i = 4 * n_quads + (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += tail_stride)
        out[i] = s[i] * s[i] + eps[n_eps == 1 ? 0 : i / n_per];
}

// One block per sample (grid-stride over samples). The first KQ quads of each thread stay in
// registers between the reduction and the update; quads beyond are re-read (from L2). At most
// 1024 threads (64 registers each). KQ = 0: no register cache (smaller blocks, more per SM).
// PX: the x quads of the cached part are loaded with score and v, before the block reduction,
// so all three streams are in flight at once (the barrier no longer drains the memory pipe).
// MAXT: the most threads per block it is launched with (512 leaves 128 registers per thread).
template <typename T, int KQ, int PX, int MAXT>
__global__ void __launch_bounds__(MAXT) fisher_step_fused(const T* __restrict__ x, const T* __restrict__ s,
                                  const T* __restrict__ v, const T* __restrict__ eps,
                                  const T* __restrict__ noise, T* __restrict__ x_out,
                                  T* __restrict__ v_out, long long n_samples, ARRAYGEN_STEP_ARGS(T)) {
    const StepParams<T> prm = ARRAYGEN_STEP_PARAMS;
    const T m = prm.momentum, one_m = prm.one_minus_momentum;
    for (long long b = blockIdx.x; b < n_samples; b += gridDim.x) {
        const long long start = b * prm.n_per, stop = start + prm.n_per;
        const long long q0 = start / 4, q_end = (stop + 3) / 4;
        const T eb = eps[b];
        Quad<T> sc[KQ > 0 ? KQ : 1], vc[KQ > 0 ? KQ : 1], xc[KQ > 0 && PX ? KQ : 1];
        T acc = 0;
#pragma unroll
        for (int k = 0; k < KQ; ++k) {
            const long long q = q0 + threadIdx.x + (long long)k * blockDim.x;
            if (q < q_end) {
                sc[k] = load_quad(s, q, start, stop);
                vc[k] = load_quad(v, q, start, stop);
                if constexpr (PX) xc[k] = load_quad(x, q, start, stop);
            }
        }
#pragma unroll
        for (int k = 0; k < KQ; ++k) {
            const long long q = q0 + threadIdx.x + (long long)k * blockDim.x;
            if (q < q_end) acc += quad_rsqrt_sum(sc[k], vc[k], eb, m, one_m, q, start, stop);
        }
        for (long long q = q0 + threadIdx.x + (long long)KQ * blockDim.x; q < q_end;
             q += blockDim.x)
            acc += quad_rsqrt_sum(load_quad(s, q, start, stop), load_quad(v, q, start, stop), eb,
                                  m, one_m, q, start, stop);
        const T total = block_sum(acc);
        const T scale = (T)((double)prm.n_per / (double)total);
#pragma unroll
        for (int k = 0; k < KQ; ++k) {
            const long long q = q0 + threadIdx.x + (long long)k * blockDim.x;
            if (q < q_end) {
                if constexpr (PX)
                    update_quad_x(xc[k], noise, x_out, v_out, sc[k], vc[k], eb, scale, prm, q,
                                  start, stop);
                else
                    update_quad(x, noise, x_out, v_out, sc[k], vc[k], eb, scale, prm, q, start,
                                stop);
            }
        }
        for (long long q = q0 + threadIdx.x + (long long)KQ * blockDim.x; q < q_end;
             q += blockDim.x)
            update_quad(x, noise, x_out, v_out, load_quad(s, q, start, stop),
                        load_quad(v, q, start, stop), eb, scale, prm, q, start, stop);
    }
}

// Hopper thread-block clusters: the rank of this block in its cluster, a cluster-wide barrier
// (release/acquire), and a load from the shared memory of another block of the cluster.
__device__ __forceinline__ unsigned ag_cluster_rank() {
    unsigned r;
    asm volatile("mov.u32 %0, %%cluster_ctarank;\n" : "=r"(r));
    return r;
}
__device__ __forceinline__ void ag_cluster_sync() {
    asm volatile("barrier.cluster.arrive.release.aligned;\n\tbarrier.cluster.wait.acquire.aligned;\n"
                 ::: "memory");
}
__device__ __forceinline__ unsigned ag_cluster_addr(const void* smem, unsigned rank) {
    unsigned a, r;
    asm volatile("{ .reg .u64 p; cvta.to.shared.u64 p, %1; cvt.u32.u64 %0, p; }\n"
                 : "=r"(a) : "l"(smem));
    asm volatile("mapa.shared::cluster.u32 %0, %1, %2;\n" : "=r"(r) : "r"(a), "r"(rank));
    return r;
}
__device__ __forceinline__ float ag_ld_cluster(const float* smem, unsigned rank) {
    float v;
    asm volatile("ld.shared::cluster.f32 %0, [%1];\n" : "=f"(v) : "r"(ag_cluster_addr(smem, rank))
                 : "memory");
    return v;
}
__device__ __forceinline__ double ag_ld_cluster(const double* smem, unsigned rank) {
    double v;
    asm volatile("ld.shared::cluster.f64 %0, [%1];\n" : "=d"(v) : "r"(ag_cluster_addr(smem, rank))
                 : "memory");
    return v;
}

// One cluster of CL blocks per sample (grid = samples * CL): block `rank` owns the rank-th
// CL-th of the sample's quads, keeps the first KQ quads per thread of score, v and x in
// registers (all three loads in flight before the reduction), reduces its part, and the CL
// partial sums are read from the cluster's shared memory in rank order (deterministic), so a
// sample's preconditioner needs no second pass and several small blocks share an SM (their
// load, reduce and update phases overlap). Quads beyond the register cache are re-read.
template <typename T, int KQ, int CL>
__global__ void __cluster_dims__(CL, 1, 1) __launch_bounds__(256)
fisher_step_cluster(const T* __restrict__ x, const T* __restrict__ s, const T* __restrict__ v,
                    const T* __restrict__ eps, const T* __restrict__ noise,
                    T* __restrict__ x_out, T* __restrict__ v_out, long long n_samples,
                    ARRAYGEN_STEP_ARGS(T)) {
    const StepParams<T> prm = ARRAYGEN_STEP_PARAMS;
    const T m = prm.momentum, one_m = prm.one_minus_momentum;
    __shared__ T part;
    const unsigned rank = ag_cluster_rank();
    const long long b = blockIdx.x / CL;
    const long long start = b * prm.n_per, stop = start + prm.n_per;
    const long long q0 = start / 4, q_end = (stop + 3) / 4;
    const long long per = (q_end - q0 + CL - 1) / CL;
    const long long qa = q0 + rank * per;
    const long long qb = min(qa + per, q_end);
    const T eb = eps[b];
    Quad<T> sc[KQ], vc[KQ], xc[KQ];
#pragma unroll
    for (int k = 0; k < KQ; ++k) {
        const long long q = qa + threadIdx.x + (long long)k * blockDim.x;
        if (q < qb) {
            sc[k] = load_quad(s, q, start, stop);
            vc[k] = load_quad(v, q, start, stop);
            xc[k] = load_quad(x, q, start, stop);
        }
    }
    T acc = 0;
#pragma unroll
    for (int k = 0; k < KQ; ++k) {
        const long long q = qa + threadIdx.x + (long long)k * blockDim.x;
        if (q < qb) acc += quad_rsqrt_sum(sc[k], vc[k], eb, m, one_m, q, start, stop);
    }
    for (long long q = qa + threadIdx.x + (long long)KQ * blockDim.x; q < qb; q += blockDim.x)
        acc += quad_rsqrt_sum(load_quad(s, q, start, stop), load_quad(v, q, start, stop), eb, m,
                              one_m, q, start, stop);
    const T block_total = block_sum(acc);
    if (threadIdx.x == 0) part = block_total;
    ag_cluster_sync();
    T total = 0;
#pragma unroll
    for (int r = 0; r < CL; ++r) total += ag_ld_cluster(&part, (unsigned)r);
    ag_cluster_sync();  // no block leaves (freeing `part`) before every block has read it
    const T scale = (T)((double)prm.n_per / (double)total);
#pragma unroll
    for (int k = 0; k < KQ; ++k) {
        const long long q = qa + threadIdx.x + (long long)k * blockDim.x;
        if (q < qb)
            update_quad_x(xc[k], noise, x_out, v_out, sc[k], vc[k], eb, scale, prm, q, start,
                          stop);
    }
    for (long long q = qa + threadIdx.x + (long long)KQ * blockDim.x; q < qb; q += blockDim.x)
        update_quad(x, noise, x_out, v_out, load_quad(s, q, start, stop),
                    load_quad(v, q, start, stop), eb, scale, prm, q, start, stop);
}

// Few large samples, pass 1: block t handles tile t % tiles of sample t / tiles -> partial[t].
template <typename T>
__global__ void fisher_step_partial(const T* __restrict__ s, const T* __restrict__ v,
                                    const T* __restrict__ eps, T* __restrict__ partial,
                                    long long tiles, long long tile, ARRAYGEN_STEP_ARGS(T)) {
    const StepParams<T> prm = ARRAYGEN_STEP_PARAMS;
    const T m = prm.momentum, one_m = prm.one_minus_momentum;
    const long long t = blockIdx.x, b = t / tiles;
    const long long start = b * prm.n_per + (t - b * tiles) * tile;
    const long long stop = min(start + tile, (b + 1) * prm.n_per);
    const T eb = eps[b];
    T acc = 0;
    for (long long q = start / 4 + threadIdx.x; q < (stop + 3) / 4; q += blockDim.x)
        acc += quad_rsqrt_sum(load_quad(s, q, start, stop), load_quad(v, q, start, stop), eb, m,
                              one_m, q, start, stop);
    const T total = block_sum(acc);
    if (threadIdx.x == 0) partial[t] = total;
}

// Pass 2: reduce the sample's partials (fixed order), then update the tile.
template <typename T>
__global__ void fisher_step_update(const T* __restrict__ x, const T* __restrict__ s,
                                   const T* __restrict__ v, const T* __restrict__ eps,
                                   const T* __restrict__ noise, const T* __restrict__ partial,
                                   T* __restrict__ x_out, T* __restrict__ v_out, long long tiles,
                                   long long tile, ARRAYGEN_STEP_ARGS(T)) {
    const StepParams<T> prm = ARRAYGEN_STEP_PARAMS;
    const long long t = blockIdx.x, b = t / tiles;
    T acc = 0;
    for (long long j = b * tiles + threadIdx.x; j < (b + 1) * tiles; j += blockDim.x)
        acc += partial[j];
    const T total = block_sum(acc);
    const T scale = (T)((double)prm.n_per / (double)total);
    const long long start = b * prm.n_per + (t - b * tiles) * tile;
    const long long stop = min(start + tile, (b + 1) * prm.n_per);
    const T eb = eps[b];
    for (long long q = start / 4 + threadIdx.x; q < (stop + 3) / 4; q += blockDim.x)
        update_quad(x, noise, x_out, v_out, load_quad(s, q, start, stop),
                    load_quad(v, q, start, stop), eb, scale, prm, q, start, stop);
}

// The stream itself, for tests: words and normals of elements 0..n-1.
__global__ void philox_stream_words(unsigned int* __restrict__ out, long long n, unsigned int c2,
                                    unsigned int c3, unsigned int k0, unsigned int k1) {
    const PhiloxKey key{c2, c3, k0, k1};
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long b = (long long)blockIdx.x * blockDim.x + threadIdx.x; 4 * b < n; b += stride) {
        const uint4 w = philox4x32_10((unsigned long long)b, key);
        const unsigned int ws[4] = {w.x, w.y, w.z, w.w};
        for (int k = 0; k < 4 && 4 * b + k < n; ++k) out[4 * b + k] = ws[k];
    }
}

template <typename T>
__global__ void philox_stream_normal(T* __restrict__ out, long long n, unsigned int c2,
                                     unsigned int c3, unsigned int k0, unsigned int k1) {
    const PhiloxKey key{c2, c3, k0, k1};
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long b = (long long)blockIdx.x * blockDim.x + threadIdx.x; 4 * b < n; b += stride) {
        T z[4];
        box_muller<T>(philox4x32_10((unsigned long long)b, key), z);
        for (int k = 0; k < 4 && 4 * b + k < n; ++k) out[4 * b + k] = z[k];
    }
}

// Explicit instantiations so that plain `nvcc -c` compiles every kernel the launcher uses.
#define ARRAYGEN_INSTANTIATE(T, KQ)                                                            \
    template __global__ void fisher_diagonal_kernel<T>(const T*, const T*, T*, long long,      \
                                                       long long, double, int);                \
    template __global__ void fisher_step_fused<T, KQ, 0, 1024>(const T*, const T*, const T*,  \
                                                               const T*, const T*, T*, T*,     \
                                                               long long,                      \
                                                               ARRAYGEN_STEP_ARGS(T));         \
    template __global__ void fisher_step_partial<T>(const T*, const T*, const T*, T*,          \
                                                    long long, long long, ARRAYGEN_STEP_ARGS(T)); \
    template __global__ void fisher_step_update<T>(const T*, const T*, const T*, const T*,     \
                                                   const T*, const T*, T*, T*, long long,      \
                                                   long long, ARRAYGEN_STEP_ARGS(T));             \
    template __global__ void philox_stream_normal<T>(T*, long long, unsigned int,             \
                                                     unsigned int, unsigned int, unsigned int);
#define ARRAYGEN_INSTANTIATE_FUSED(T, KQ, PX, MAXT)                                           \
    template __global__ void fisher_step_fused<T, KQ, PX, MAXT>(const T*, const T*, const T*, \
                                                                const T*, const T*, T*, T*,    \
                                                                long long,                     \
                                                                ARRAYGEN_STEP_ARGS(T));
ARRAYGEN_INSTANTIATE(float, 4)
ARRAYGEN_INSTANTIATE(double, 1)
// (KQ, PX, MAXT) variants the launcher may pick (FUSED_VARIANTS in fisher.py)
ARRAYGEN_INSTANTIATE_FUSED(float, 0, 0, 1024)
ARRAYGEN_INSTANTIATE_FUSED(float, 1, 1, 1024)
ARRAYGEN_INSTANTIATE_FUSED(float, 2, 0, 1024)
ARRAYGEN_INSTANTIATE_FUSED(float, 2, 1, 1024)
ARRAYGEN_INSTANTIATE_FUSED(float, 2, 1, 512)
ARRAYGEN_INSTANTIATE_FUSED(float, 4, 0, 512)
ARRAYGEN_INSTANTIATE_FUSED(float, 4, 1, 512)
ARRAYGEN_INSTANTIATE_FUSED(double, 0, 0, 1024)
ARRAYGEN_INSTANTIATE_FUSED(double, 1, 0, 512)
ARRAYGEN_INSTANTIATE_FUSED(double, 2, 1, 512)
#define ARRAYGEN_INSTANTIATE_CLUSTER(T, KQ, CL)                                               \
    template __global__ void fisher_step_cluster<T, KQ, CL>(const T*, const T*, const T*,     \
                                                            const T*, const T*, T*, T*,        \
                                                            long long, ARRAYGEN_STEP_ARGS(T));
ARRAYGEN_INSTANTIATE_CLUSTER(float, 2, 8)
ARRAYGEN_INSTANTIATE_CLUSTER(float, 4, 4)
ARRAYGEN_INSTANTIATE_CLUSTER(float, 2, 1)
ARRAYGEN_INSTANTIATE_CLUSTER(double, 1, 8)
