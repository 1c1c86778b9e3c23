// Block-sparse tiled diffusion kernel (arraygen.blocksparse): the tiles of tiled.cu, restricted
// to a CSR list of (row cluster, column cluster) pairs.
//
// Points are sorted so that row cluster A is rows [A*BX, min(N, (A+1)*BX)) and column cluster
// B is columns [B*BY, min(M, (B+1)*BY)). Row cluster A sums over the column clusters
// cols[offsets[A] .. offsets[A+1]).
//
// Launch grid: blockIdx.x = A * TPC + row tile (TPC row tiles of blockDim.x * ROWS rows per
// cluster), blockIdx.y = split s of S = gridDim.y: the pairs of row A are cut into S runs of
// ceil(n_A / S) pairs (load balance: long rows are spread over S blocks; the launcher merges the
// S partial results, as the dense kernels' column splits). A block walks the "virtual columns"
// v in [p_s * BY, p_e * BY) of its run (v / BY = pair index, v % BY = offset in the cluster) in
// tiles of TJ columns staged in shared memory, exactly as the dense kernels walk y: coordinates
// pre-scaled by s = sqrt(beta log2 e), kernel value exp2(-|x' - y'|^2), per-tile partial sums
// (two-level summation), online softmax in log2 units with a rescale on a new maximum. Virtual
// columns past the end of a partial last cluster carry zero weight (u = 0, w = -inf).
//
// Every kernel writes per-split partial results (never normalised): matvec part[s, i, c];
// softmax mx[s, i] (running max, log2 units), sm[s, i] = sum 2^(z - mx), acc[s, i, c]. A split
// with no pairs writes 0 / (lowest, 0, 0), which the merge weighs by 0.
//
// Cosine kernels (any d, centred points): one row per thread, same grid and partial outputs.

#define BS_MAX_THREADS 128
#define BS_TJ 64

#include "tile_common.cuh"

// The pair run [ps, pe) of this block's split of row cluster A.
__device__ __forceinline__ void bs_run(const int* __restrict__ offsets, int A, int& ps, int& pe) {
    const int p0 = offsets[A], p1 = offsets[A + 1];
    const int S = (int)gridDim.y;
    const int per = (p1 - p0 + S - 1) / S;
    ps = p0 + (int)blockIdx.y * per;
    ps = ps < p1 ? ps : p1;
    pe = ps + per < p1 ? ps + per : p1;
}

// Column of virtual column v of the run starting at pair ps (v counted from ps * by), or -1
// when it lies past the end of a partial last cluster.
__device__ __forceinline__ long long bs_column(const int* __restrict__ cols, int ps,
                                               unsigned int v, unsigned int by, long long m) {
    const unsigned int k = v / by;
    const long long j = (long long)cols[ps + (int)k] * by + (v - k * by);
    return j < m ? j : -1;
}

// Partial matvec of split blockIdx.y: part[s, i, c0 + c] = sum over the run's columns j of
// exp2(-a_i b_j |x'_i - y'_j|^2) u[j, c0 + c] (a, b only if BW).
template <typename T, int D, int PC, int ROWS, bool BW>
__global__ void __launch_bounds__(BS_MAX_THREADS)
bs_matvec_direct(const T* __restrict__ x, const T* __restrict__ y, const T* __restrict__ u,
                 const T* __restrict__ a, const T* __restrict__ b,
                 const int* __restrict__ offsets, const int* __restrict__ cols, long long n,
                 long long m, int bx, int by, int tpc, int p, int c0, T s,
                 T* __restrict__ part_out) {
    constexpr int W = D + PC + (BW ? 1 : 0);
    __shared__ __align__(16) T sy[BS_TJ * W];
    const int nt = (int)blockDim.x;
    const int A = (int)blockIdx.x / tpc;
    const int local0 = ((int)blockIdx.x - A * tpc) * nt * ROWS + (int)threadIdx.x;
    const long long row0 = (long long)A * bx;
    int ps, pe;
    bs_run(offsets, A, ps, pe);
    const unsigned int vlen = (unsigned int)(pe - ps) * (unsigned int)by;
    T xr[ROWS][D], acc[ROWS][PC], na[ROWS];
#pragma unroll
    for (int r = 0; r < ROWS; ++r) {
        const int l = local0 + r * nt;
        const long long i = row0 + l;
        const bool ok = l < bx && i < n;
        TILE_LOAD_SCALED(T, D, xr[r], x, i, ok, s)
#pragma unroll
        for (int c = 0; c < PC; ++c) acc[r][c] = T(0);
        na[r] = BW ? (ok ? -a[i] : T(-1)) : T(-1);
    }
    for (unsigned int v0 = 0; v0 < vlen; v0 += BS_TJ) {
        __syncthreads();
        for (int t = threadIdx.x; t < BS_TJ; t += nt) {
            const unsigned int v = v0 + t;
            const long long j = v < vlen ? bs_column(cols, ps, v, by, m) : -1;
            const bool ok = j >= 0;
            TILE_STAGE_DIRECT(T, D, PC, W, sy, t, y, u, j, ok, p, c0, s)
            if (BW) sy[t * W + D + PC] = ok ? b[j] : T(1);
        }
        __syncthreads();
        TILE_MATVEC_TILE(T, D, PC, BW, W, ROWS, BS_TJ, sy, xr, na, acc)
    }
    T* out = part_out + (long long)blockIdx.y * n * p;
#pragma unroll
    for (int r = 0; r < ROWS; ++r) {
        const int l = local0 + r * nt;
        const long long i = row0 + l;
        if (l < bx && i < n) TILE_STORE_ROW(PC, out, i, p, c0, acc[r])
    }
}

// Online softmax over the run of split blockIdx.y, z = w2_j - |x'_i - y'_j|^2 (log2 units):
// writes mx[s, i], sm[s, i] = sum 2^(z - mx) and acc[s, i, c0 + c] = sum 2^(z - mx) v[j, c0 + c]
// (PC = 0: no acc).
template <typename T, int D, int PC, int ROWS>
__global__ void __launch_bounds__(BS_MAX_THREADS)
bs_softmax_direct(const T* __restrict__ x, const T* __restrict__ y, const T* __restrict__ v,
                  const T* __restrict__ w2, const int* __restrict__ offsets,
                  const int* __restrict__ cols, long long n, long long m, int bx, int by,
                  int tpc, int p, int c0, T s, T* __restrict__ acc_out, T* __restrict__ mx_out,
                  T* __restrict__ sm_out) {
    constexpr int W = D + PC + 1;
    constexpr int PA = PC > 0 ? PC : 1;
    __shared__ __align__(16) T sy[BS_TJ * W];
    const int nt = (int)blockDim.x;
    const int A = (int)blockIdx.x / tpc;
    const int local0 = ((int)blockIdx.x - A * tpc) * nt * ROWS + (int)threadIdx.x;
    const long long row0 = (long long)A * bx;
    int ps, pe;
    bs_run(offsets, A, ps, pe);
    const unsigned int vlen = (unsigned int)(pe - ps) * (unsigned int)by;
    T xr[ROWS][D], acc[ROWS][PA], mx[ROWS], sm[ROWS];
#pragma unroll
    for (int r = 0; r < ROWS; ++r) {
        const int l = local0 + r * nt;
        const long long i = row0 + l;
        const bool ok = l < bx && i < n;
        TILE_LOAD_SCALED(T, D, xr[r], x, i, ok, s)
#pragma unroll
        for (int c = 0; c < PA; ++c) acc[r][c] = T(0);
        mx[r] = tile_lowest<T>();
        sm[r] = T(0);
    }
    for (unsigned int v0 = 0; v0 < vlen; v0 += BS_TJ) {
        __syncthreads();
        for (int t = threadIdx.x; t < BS_TJ; t += nt) {
            const unsigned int vv = v0 + t;
            const long long j = vv < vlen ? bs_column(cols, ps, vv, by, m) : -1;
            const bool ok = j >= 0;
            TILE_STAGE_DIRECT(T, D, PC, W, sy, t, y, v, j, ok, p, c0, s)
            sy[t * W + D + PC] = ok ? w2[j] : tile_neg_inf<T>();
        }
        __syncthreads();
        TILE_SOFTMAX_TILE(T, D, PC, PA, W, ROWS, BS_TJ, sy, xr, mx, sm, acc)
    }
    const long long off = (long long)blockIdx.y * n;
#pragma unroll
    for (int r = 0; r < ROWS; ++r) {
        const int l = local0 + r * nt;
        const long long i = row0 + l;
        if (l < bx && i < n)
            TILE_STORE_SOFTMAX(PC, acc_out, mx_out, sm_out, off + i, p, c0, mx[r], sm[r],
                               acc[r])
    }
}

// Law of cosines for any d (x, y centred), one row per thread:
// t_ij = -beta2 a_i b_j max(|x|^2 + |y|^2 - 2 x.y, 0); partial matvec of split blockIdx.y.
template <typename T, int PC, bool BW>
__global__ void __launch_bounds__(BS_MAX_THREADS)
bs_matvec_cos(const T* __restrict__ x, const T* __restrict__ y, const T* __restrict__ yy,
              const T* __restrict__ u, const T* __restrict__ a, const T* __restrict__ b,
              const int* __restrict__ offsets, const int* __restrict__ cols, long long n,
              long long m, int d, int bx, int by, int tpc, int p, int c0, T beta2,
              T* __restrict__ part_out) {
    const int A = (int)blockIdx.x / tpc;
    const int l = ((int)blockIdx.x - A * tpc) * (int)blockDim.x + (int)threadIdx.x;
    const long long i = (long long)A * bx + l;
    if (l >= bx || i >= n) return;
    int ps, pe;
    bs_run(offsets, A, ps, pe);
    const T* xi = x + i * d;
    const T xx = tile_sqnorm<T>(xi, d);
    const T nb = -beta2 * (BW ? a[i] : T(1));
    T acc[PC];
#pragma unroll
    for (int c = 0; c < PC; ++c) acc[c] = T(0);
    for (int t = ps; t < pe; ++t) {
        const long long jb = (long long)cols[t] * by;
        const long long je = jb + by < m ? jb + by : m;
        for (long long j = jb; j < je; ++j) {
            T q = tile_cos_sqdist<T>(xi, y, yy, j, d, xx);
            const T e = tile_exp2<T>(nb * (BW ? b[j] : T(1)) * q);
#pragma unroll
            for (int c = 0; c < PC; ++c)
                if (c0 + c < p) acc[c] = fma(e, u[j * p + c0 + c], acc[c]);
        }
    }
    T* out = part_out + (long long)blockIdx.y * n * p;
    TILE_STORE_ROW(PC, out, i, p, c0, acc)
}

template <typename T, int PC>
__global__ void __launch_bounds__(BS_MAX_THREADS)
bs_softmax_cos(const T* __restrict__ x, const T* __restrict__ y, const T* __restrict__ yy,
               const T* __restrict__ v, const T* __restrict__ w2,
               const int* __restrict__ offsets, const int* __restrict__ cols, long long n,
               long long m, int d, int bx, int by, int tpc, int p, int c0, T beta2,
               T* __restrict__ acc_out, T* __restrict__ mx_out, T* __restrict__ sm_out) {
    constexpr int PA = PC > 0 ? PC : 1;
    const int A = (int)blockIdx.x / tpc;
    const int l = ((int)blockIdx.x - A * tpc) * (int)blockDim.x + (int)threadIdx.x;
    const long long i = (long long)A * bx + l;
    if (l >= bx || i >= n) return;
    int ps, pe;
    bs_run(offsets, A, ps, pe);
    const T* xi = x + i * d;
    const T xx = tile_sqnorm<T>(xi, d);
    T acc[PA];
#pragma unroll
    for (int c = 0; c < PA; ++c) acc[c] = T(0);
    T mx = tile_lowest<T>(), sm = T(0);
    for (int t = ps; t < pe; ++t) {
        const long long jb = (long long)cols[t] * by;
        const long long je = jb + by < m ? jb + by : m;
        for (long long j = jb; j < je; ++j) {
            const T q = tile_cos_sqdist<T>(xi, y, yy, j, d, xx);
            const T z = w2[j] - beta2 * q;
            TILE_ONLINE_TERM(T, PC, z, mx, sm, acc, v, j, p, c0)
        }
    }
    const long long off = (long long)blockIdx.y * n;
    TILE_STORE_SOFTMAX(PC, acc_out, mx_out, sm_out, off + i, p, c0, mx, sm, acc)
}

#ifndef __CUDACC_RTC__
// Instantiations for the plain `nvcc -c` check of .ci/run (CuPy instantiates through
// name_expressions; NVRTC defines __CUDACC_RTC__ and skips these).
template __global__ void bs_matvec_direct<float, 3, 1, 2, false>(
    const float*, const float*, const float*, const float*, const float*, const int*,
    const int*, long long, long long, int, int, int, int, int, float, float*);
template __global__ void bs_matvec_direct<double, 3, 4, 4, true>(
    const double*, const double*, const double*, const double*, const double*, const int*,
    const int*, long long, long long, int, int, int, int, int, double, double*);
template __global__ void bs_softmax_direct<float, 3, 0, 2>(
    const float*, const float*, const float*, const float*, const int*, const int*, long long,
    long long, int, int, int, int, int, float, float*, float*, float*);
template __global__ void bs_softmax_direct<double, 2, 4, 1>(
    const double*, const double*, const double*, const double*, const int*, const int*,
    long long, long long, int, int, int, int, int, double, double*, double*, double*);
template __global__ void bs_matvec_cos<float, 4, true>(
    const float*, const float*, const float*, const float*, const float*, const float*,
    const int*, const int*, long long, long long, int, int, int, int, int, int, float, float*);
template __global__ void bs_softmax_cos<double, 0>(
    const double*, const double*, const double*, const double*, const double*, const int*,
    const int*, long long, long long, int, int, int, int, int, int, double, double*, double*,
    double*);
#endif
