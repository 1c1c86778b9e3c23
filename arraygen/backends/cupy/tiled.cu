// Tiled diffusion kernel (arraygen.tiled): one tile loop, matvec and online-softmax epilogues.
//
// Direct kernels (d = D <= 16, compile time): a block of THREADS threads owns THREADS * ROWS
// query rows (ROWS per thread, coordinates and accumulators in registers) and walks y in
// tiles of TJ points staged in shared memory (pre-scaled, with their right-hand sides). All
// threads read the same y point at a time (shared-memory broadcast). Coordinates are scaled
// by s = sqrt(beta * log2(e)) so that the kernel value is exp2(-|x' - y'|^2) (ex2.approx for
// float). Tail points of the last tile carry zero weight (matvec: u = 0; softmax: w = -inf).
// Right-hand sides are processed PC at a time (c0 = first column of this launch). The columns
// of y may be split over blockIdx.y (partial results merged by the launcher).
//
// Cosine kernels (any d, centred points): one row per thread, law of cosines
// |x|^2 + |y|^2 - 2 x.y clamped at 0, y read through the cache (all lanes read one point).
//
// Softmax state per row, in log2 units: running max mx, sum sm = sum 2^(z - mx), acc likewise;
// z = w2_j - |x' - y'|^2 with w2 = log2(e) * log_weights. A new maximum rescales by
// 2^(mx_old - mx_new) (rare after the first points). lse = ln 2 * (mx + log2(sm)).
// Sums are two-level (a partial per y tile, then the running total) for float32 accuracy.

#define TILED_THREADS 128
#define TILED_ROWS 4
#define TILED_TJ 64

template <typename T> __device__ __forceinline__ T tiled_exp2(T t);
template <> __device__ __forceinline__ float tiled_exp2<float>(float t) {
    float r;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(t));
    return r;
}
template <> __device__ __forceinline__ double tiled_exp2<double>(double t) { return exp2(t); }

template <typename T> __device__ __forceinline__ T tiled_log2(T t);
template <> __device__ __forceinline__ float tiled_log2<float>(float t) { return log2f(t); }
template <> __device__ __forceinline__ double tiled_log2<double>(double t) { return log2(t); }

template <typename T> __device__ __forceinline__ T tiled_neg_inf();
template <> __device__ __forceinline__ float tiled_neg_inf<float>() {
    return __int_as_float(0xff800000);
}
template <> __device__ __forceinline__ double tiled_neg_inf<double>() {
    return __longlong_as_double(0xfff0000000000000ULL);
}

template <typename T> __device__ __forceinline__ T tiled_lowest();
template <> __device__ __forceinline__ float tiled_lowest<float>() { return -1e30f; }
template <> __device__ __forceinline__ double tiled_lowest<double>() { return -1e300; }

// Partial matvec over the columns [split * chunk, (split + 1) * chunk) of y, split =
// blockIdx.y: part[split, i, c0 + c] = sum_j exp2(-a_i b_j |x'_i - y'_j|^2) u[j, c0 + c]
// (a, b only if BW). The launcher sums the splits (more blocks, a fuller last wave).
template <typename T, int D, int PC, bool BW>
__global__ void __launch_bounds__(TILED_THREADS)
tiled_matvec_direct(const T* __restrict__ x, const T* __restrict__ y, const T* __restrict__ u,
                    const T* __restrict__ a, const T* __restrict__ b, long long n, long long m,
                    long long chunk, int p, int c0, T s, T* __restrict__ part_out) {
    constexpr int W = D + PC + (BW ? 1 : 0);
    __shared__ __align__(16) T sy[TILED_TJ * W];
    const long long base = (long long)blockIdx.x * (TILED_THREADS * TILED_ROWS) + threadIdx.x;
    const long long jb = (long long)blockIdx.y * chunk;
    const long long je = jb + chunk < m ? jb + chunk : m;
    T xr[TILED_ROWS][D], acc[TILED_ROWS][PC], na[TILED_ROWS];
#pragma unroll
    for (int r = 0; r < TILED_ROWS; ++r) {
        const long long i = base + (long long)r * TILED_THREADS;
        const bool ok = i < n;
#pragma unroll
        for (int k = 0; k < D; ++k) xr[r][k] = ok ? x[i * D + k] * s : T(0);
#pragma unroll
        for (int c = 0; c < PC; ++c) acc[r][c] = T(0);
        na[r] = BW ? (ok ? -a[i] : T(-1)) : T(-1);
    }
    for (long long j0 = jb; j0 < je; j0 += TILED_TJ) {
        __syncthreads();
        for (int t = threadIdx.x; t < TILED_TJ; t += TILED_THREADS) {
            const long long j = j0 + t;
            const bool ok = j < je;
#pragma unroll
            for (int k = 0; k < D; ++k) sy[t * W + k] = ok ? y[j * D + k] * s : T(0);
#pragma unroll
            for (int c = 0; c < PC; ++c)
                sy[t * W + D + c] = (ok && c0 + c < p) ? u[j * p + c0 + c] : T(0);
            if (BW) sy[t * W + D + PC] = ok ? b[j] : T(1);
        }
        __syncthreads();
        T part[TILED_ROWS][PC];  // per-tile partial sums: two-level summation (accuracy)
#pragma unroll
        for (int r = 0; r < TILED_ROWS; ++r)
#pragma unroll
            for (int c = 0; c < PC; ++c) part[r][c] = T(0);
#pragma unroll 4
        for (int t = 0; t < TILED_TJ; ++t) {
            T yk[W];
#pragma unroll
            for (int k = 0; k < W; ++k) yk[k] = sy[t * W + k];
#pragma unroll
            for (int r = 0; r < TILED_ROWS; ++r) {
                T diff = xr[r][0] - yk[0];
                T q = diff * diff;
#pragma unroll
                for (int k = 1; k < D; ++k) {
                    diff = xr[r][k] - yk[k];
                    q = fma(diff, diff, q);
                }
                const T e = BW ? tiled_exp2<T>((na[r] * yk[D + PC]) * q)
                               : tiled_exp2<T>(-q);
#pragma unroll
                for (int c = 0; c < PC; ++c) part[r][c] = fma(e, yk[D + c], part[r][c]);
            }
        }
#pragma unroll
        for (int r = 0; r < TILED_ROWS; ++r)
#pragma unroll
            for (int c = 0; c < PC; ++c) acc[r][c] += part[r][c];
    }
    T* out = part_out + (long long)blockIdx.y * n * p;
#pragma unroll
    for (int r = 0; r < TILED_ROWS; ++r) {
        const long long i = base + (long long)r * TILED_THREADS;
        if (i < n) {
#pragma unroll
            for (int c = 0; c < PC; ++c)
                if (c0 + c < p) out[i * p + c0 + c] = acc[r][c];
        }
    }
}

// Online softmax over the columns of split blockIdx.y (as above), in log2 units with
// z = w2_j - |x'_i - y'_j|^2: writes the running max mx[split, i], the sum
// sm[split, i] = sum_j 2^(z - mx) and acc[split, i, c0 + c] = sum_j 2^(z - mx) v[j, c0 + c]
// (PC = 0: no acc). The launcher merges the splits into lse and the softmax average.
template <typename T, int D, int PC>
__global__ void __launch_bounds__(TILED_THREADS)
tiled_softmax_direct(const T* __restrict__ x, const T* __restrict__ y, const T* __restrict__ v,
                     const T* __restrict__ w2, long long n, long long m, long long chunk, int p,
                     int c0, T s, T* __restrict__ acc_out, T* __restrict__ mx_out,
                     T* __restrict__ sm_out) {
    constexpr int W = D + PC + 1;
    constexpr int PA = PC > 0 ? PC : 1;
    __shared__ __align__(16) T sy[TILED_TJ * W];
    const long long base = (long long)blockIdx.x * (TILED_THREADS * TILED_ROWS) + threadIdx.x;
    const long long jb = (long long)blockIdx.y * chunk;
    const long long je = jb + chunk < m ? jb + chunk : m;
    T xr[TILED_ROWS][D], acc[TILED_ROWS][PA], mx[TILED_ROWS], sm[TILED_ROWS];
#pragma unroll
    for (int r = 0; r < TILED_ROWS; ++r) {
        const long long i = base + (long long)r * TILED_THREADS;
        const bool ok = i < n;
#pragma unroll
        for (int k = 0; k < D; ++k) xr[r][k] = ok ? x[i * D + k] * s : T(0);
#pragma unroll
        for (int c = 0; c < PA; ++c) acc[r][c] = T(0);
        mx[r] = tiled_lowest<T>();
        sm[r] = T(0);
    }
    for (long long j0 = jb; j0 < je; j0 += TILED_TJ) {
        __syncthreads();
        for (int t = threadIdx.x; t < TILED_TJ; t += TILED_THREADS) {
            const long long j = j0 + t;
            const bool ok = j < je;
#pragma unroll
            for (int k = 0; k < D; ++k) sy[t * W + k] = ok ? y[j * D + k] * s : T(0);
#pragma unroll
            for (int c = 0; c < PC; ++c)
                sy[t * W + D + c] = (ok && c0 + c < p) ? v[j * p + c0 + c] : T(0);
            sy[t * W + D + PC] = ok ? w2[j] : tiled_neg_inf<T>();
        }
        __syncthreads();
        // per-tile partial sums (two-level summation), rescaled together with the totals
        T ps[TILED_ROWS], pacc[TILED_ROWS][PA];
#pragma unroll
        for (int r = 0; r < TILED_ROWS; ++r) {
            ps[r] = T(0);
#pragma unroll
            for (int c = 0; c < PA; ++c) pacc[r][c] = T(0);
        }
#pragma unroll 2
        for (int t = 0; t < TILED_TJ; ++t) {
            T yk[W];
#pragma unroll
            for (int k = 0; k < W; ++k) yk[k] = sy[t * W + k];
#pragma unroll
            for (int r = 0; r < TILED_ROWS; ++r) {
                T z = yk[D + PC];
#pragma unroll
                for (int k = 0; k < D; ++k) {
                    const T diff = xr[r][k] - yk[k];
                    z = fma(-diff, diff, z);
                }
                T q = z - mx[r];
                if (q > T(0)) {  // new running maximum: rescale what was accumulated
                    const T f = tiled_exp2<T>(-q);
                    sm[r] *= f;
                    ps[r] *= f;
#pragma unroll
                    for (int c = 0; c < PC; ++c) {
                        acc[r][c] *= f;
                        pacc[r][c] *= f;
                    }
                    mx[r] = z;
                    q = T(0);
                }
                const T e = tiled_exp2<T>(q);
                ps[r] += e;
#pragma unroll
                for (int c = 0; c < PC; ++c) pacc[r][c] = fma(e, yk[D + c], pacc[r][c]);
            }
        }
#pragma unroll
        for (int r = 0; r < TILED_ROWS; ++r) {
            sm[r] += ps[r];
#pragma unroll
            for (int c = 0; c < PC; ++c) acc[r][c] += pacc[r][c];
        }
    }
    const long long off = (long long)blockIdx.y * n;
#pragma unroll
    for (int r = 0; r < TILED_ROWS; ++r) {
        const long long i = base + (long long)r * TILED_THREADS;
        if (i < n) {
            if (c0 == 0) {
                mx_out[off + i] = mx[r];
                sm_out[off + i] = sm[r];
            }
#pragma unroll
            for (int c = 0; c < PC; ++c)
                if (c0 + c < p) acc_out[(off + i) * p + c0 + c] = acc[r][c];
        }
    }
}

// Law of cosines for any d (x, y centred): t_ij = -beta2 a_i b_j max(|x|^2 + |y|^2 - 2 x.y, 0).
template <typename T, int PC, bool BW>
__global__ void __launch_bounds__(TILED_THREADS)
tiled_matvec_cos(const T* __restrict__ x, const T* __restrict__ y, const T* __restrict__ yy,
                 const T* __restrict__ u, const T* __restrict__ a, const T* __restrict__ b,
                 long long n, long long m, int d, int p, int c0, T beta2,
                 T* __restrict__ out) {
    const long long i = (long long)blockIdx.x * TILED_THREADS + threadIdx.x;
    if (i >= n) return;
    const T* xi = x + i * d;
    T xx = T(0);
    for (int k = 0; k < d; ++k) xx = fma(xi[k], xi[k], xx);
    const T nb = -beta2 * (BW ? a[i] : T(1));
    T acc[PC];
#pragma unroll
    for (int c = 0; c < PC; ++c) acc[c] = T(0);
    for (long long j = 0; j < m; ++j) {
        const T* yj = y + j * d;
        T dot = T(0);
        for (int k = 0; k < d; ++k) dot = fma(xi[k], yj[k], dot);
        T q = xx + yy[j] - T(2) * dot;
        q = q > T(0) ? q : T(0);
        const T e = tiled_exp2<T>(nb * (BW ? b[j] : T(1)) * q);
#pragma unroll
        for (int c = 0; c < PC; ++c)
            if (c0 + c < p) acc[c] = fma(e, u[j * p + c0 + c], acc[c]);
    }
#pragma unroll
    for (int c = 0; c < PC; ++c)
        if (c0 + c < p) out[i * p + c0 + c] = acc[c];
}

template <typename T, int PC>
__global__ void __launch_bounds__(TILED_THREADS)
tiled_softmax_cos(const T* __restrict__ x, const T* __restrict__ y, const T* __restrict__ yy,
                  const T* __restrict__ v, const T* __restrict__ w2, long long n, long long m,
                  int d, int p, int c0, T beta2, T* __restrict__ out, T* __restrict__ lse) {
    constexpr int PA = PC > 0 ? PC : 1;
    const long long i = (long long)blockIdx.x * TILED_THREADS + threadIdx.x;
    if (i >= n) return;
    const T* xi = x + i * d;
    T xx = T(0);
    for (int k = 0; k < d; ++k) xx = fma(xi[k], xi[k], xx);
    T acc[PA];
#pragma unroll
    for (int c = 0; c < PA; ++c) acc[c] = T(0);
    T mx = tiled_lowest<T>(), sm = T(0);
    for (long long j = 0; j < m; ++j) {
        const T* yj = y + j * d;
        T dot = T(0);
        for (int k = 0; k < d; ++k) dot = fma(xi[k], yj[k], dot);
        T q = xx + yy[j] - T(2) * dot;
        q = q > T(0) ? q : T(0);
        const T z = w2[j] - beta2 * q;
        q = z - mx;
        if (q > T(0)) {
            const T f = tiled_exp2<T>(-q);
            sm *= f;
#pragma unroll
            for (int c = 0; c < PC; ++c) acc[c] *= f;
            mx = z;
            q = T(0);
        }
        const T e = tiled_exp2<T>(q);
        sm += e;
#pragma unroll
        for (int c = 0; c < PC; ++c)
            if (c0 + c < p) acc[c] = fma(e, v[j * p + c0 + c], acc[c]);
    }
    if (c0 == 0) lse[i] = (mx + tiled_log2<T>(sm)) * T(0.69314718055994530942);
#pragma unroll
    for (int c = 0; c < PC; ++c)
        if (c0 + c < p) out[i * p + c0 + c] = acc[c] / sm;
}

#ifdef TILED_NVCC_CHECK
// Instantiations for the plain `nvcc -c` check (CuPy instantiates through name_expressions).
template __global__ void tiled_matvec_direct<float, 3, 1, false>(
    const float*, const float*, const float*, const float*, const float*, long long, long long,
    long long, int, int, float, float*);
template __global__ void tiled_matvec_direct<double, 3, 4, true>(
    const double*, const double*, const double*, const double*, const double*, long long,
    long long, long long, int, int, double, double*);
template __global__ void tiled_softmax_direct<float, 3, 0>(
    const float*, const float*, const float*, const float*, long long, long long, long long,
    int, int, float, float*, float*, float*);
template __global__ void tiled_softmax_direct<double, 2, 4>(
    const double*, const double*, const double*, const double*, long long, long long,
    long long, int, int, double, double*, double*, double*);
template __global__ void tiled_matvec_cos<float, 4, true>(
    const float*, const float*, const float*, const float*, const float*, const float*,
    long long, long long, int, int, int, float, float*);
template __global__ void tiled_softmax_cos<double, 0>(
    const double*, const double*, const double*, const double*, const double*, long long,
    long long, int, int, int, double, double*, double*);
#endif
