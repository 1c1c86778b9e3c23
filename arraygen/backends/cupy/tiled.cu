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

#include "tile_common.cuh"

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
        TILE_LOAD_SCALED(T, D, xr[r], x, i, ok, s)
#pragma unroll
        for (int c = 0; c < PC; ++c) acc[r][c] = T(0);
        na[r] = BW ? (ok ? -a[i] : T(-1)) : T(-1);
    }
    for (long long j0 = jb; j0 < je; j0 += TILED_TJ) {
        __syncthreads();
        for (int t = threadIdx.x; t < TILED_TJ; t += TILED_THREADS) {
            const long long j = j0 + t;
            const bool ok = j < je;
            TILE_STAGE_DIRECT(T, D, PC, W, sy, t, y, u, j, ok, p, c0, s)
            if (BW) sy[t * W + D + PC] = ok ? b[j] : T(1);
        }
        __syncthreads();
        TILE_MATVEC_TILE(T, D, PC, BW, W, TILED_ROWS, TILED_TJ, sy, xr, na, acc)
    }
    T* out = part_out + (long long)blockIdx.y * n * p;
#pragma unroll
    for (int r = 0; r < TILED_ROWS; ++r) {
        const long long i = base + (long long)r * TILED_THREADS;
        if (i < n) TILE_STORE_ROW(PC, out, i, p, c0, acc[r])
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
        TILE_LOAD_SCALED(T, D, xr[r], x, i, ok, s)
#pragma unroll
        for (int c = 0; c < PA; ++c) acc[r][c] = T(0);
        mx[r] = tile_lowest<T>();
        sm[r] = T(0);
    }
    for (long long j0 = jb; j0 < je; j0 += TILED_TJ) {
        __syncthreads();
        for (int t = threadIdx.x; t < TILED_TJ; t += TILED_THREADS) {
            const long long j = j0 + t;
            const bool ok = j < je;
            TILE_STAGE_DIRECT(T, D, PC, W, sy, t, y, v, j, ok, p, c0, s)
            sy[t * W + D + PC] = ok ? w2[j] : tile_neg_inf<T>();
        }
        __syncthreads();
        TILE_SOFTMAX_TILE(T, D, PC, PA, W, TILED_ROWS, TILED_TJ, sy, xr, mx, sm, acc)
    }
    const long long off = (long long)blockIdx.y * n;
#pragma unroll
    for (int r = 0; r < TILED_ROWS; ++r) {
        const long long i = base + (long long)r * TILED_THREADS;
        if (i < n)
            TILE_STORE_SOFTMAX(PC, acc_out, mx_out, sm_out, off + i, p, c0, mx[r], sm[r],
                               acc[r])
    }
}

// ---- Fast-exponent variants (selected by cupy/tiled.py's Tuning; benchmarked side by side) ----
//
// POLY columns: NPOLY of every TILED_PERIOD columns evaluate 2^t (float only) on the FMA units
// instead of the MUFU (FlashAttention-4's split): t is clamped to [-126, 64], split t = k + f by
// the round-to-nearest shifter 1.5 * 2^23 (k = rint(t) in the low mantissa bits, f in
// [-1/2, 1/2] exactly), 2^f by a minimax polynomial of degree DEG (Horner, relative error of
// the float32 evaluation: 7.5e-5 (3), 2.7e-6 (4), 2.2e-7 (5); the coefficients are
// arraygen._kernels.tiled.POLY_EXP2_COEFFS), and k is added to the exponent bits by an integer
// add. Below -126 the result is at most 2^-125 instead of 0 (the MUFU flushes to 0 there).
//
// COS (the FMA-only exponent): points are shifted by ctr (the mean of y) and scaled by s; a row
// keeps a = 2 x' and k = -|x'|^2, a column c = w2 - |y'|^2 (softmax) or -|y'|^2 (matvec), so
// -|x' - y'|^2 + w2 = k + (c + a.y') is D FMAs (the softmax drops k from the exponent and adds
// it to the stored maximum). Without COS the exponent is D differences and D FMAs as above.
// Accuracy: the exponent's rounding error grows from eps |x' - y'|^2 (direct) to about
// eps (|y'|^2 + 2 |x'| |y'|), |y'| up to the y cloud's radius in units of the kernel width
// sqrt(beta log2 e) (terms that do not underflow have |x'| <= |y'| + 11): narrow kernels on wide
// clouds lose digits (relative error ~ 6e-8 (2 R' + 11)^2 per term in float32).
//
// Lazy rescaling (softmax): the reference maximum mr of a row changes only when a tile's partial
// sum sum_t 2^(z_t - mr) fails `<= 2^TILED_LAZY_LOG2` (a term grew past the limit, or inf/NaN:
// the first tile, where mr = lowest); that tile is then redone for that row with the tile
// maximum (MUFU exponentials). Exact: the sums and the stored maximum use the same mr, every
// term is at most 2^16, and no per-pair compare or branch remains in the common path.

#define TILED_PERIOD 16
#define TILED_LAZY_LIMIT 65536.0f  // 2^TILED_LAZY_LOG2, TILED_LAZY_LOG2 = 16

template <int DEG> __device__ __forceinline__ float tiled_poly2(float f);
template <> __device__ __forceinline__ float tiled_poly2<3>(float f) {
    float p = fmaf(0.0551716685295105f, f, 0.2426111251115799f);
    p = fmaf(p, f, 0.6932609677314758f);
    return fmaf(p, f, 0.9999280571937561f);
}
template <> __device__ __forceinline__ float tiled_poly2<4>(float f) {
    float p = fmaf(0.009570102207362652f, f, 0.05591785907745361f);
    p = fmaf(p, f, 0.240247443318367f);
    p = fmaf(p, f, 0.6931217908859253f);
    return fmaf(p, f, 0.9999992847442627f);
}
template <> __device__ __forceinline__ float tiled_poly2<5>(float f) {
    float p = fmaf(0.0013276472454890609f, f, 0.009675540961325169f);
    p = fmaf(p, f, 0.05550713092088699f);
    p = fmaf(p, f, 0.24022120237350464f);
    p = fmaf(p, f, 0.6931469440460205f);
    return fmaf(p, f, 1.0000001192092896f);
}

// 2^t on the FMA units (float); double has no MUFU exponential: the library exp2.
template <int DEG> __device__ __forceinline__ float tiled_exp2_fma(float t) {
    t = fminf(fmaxf(t, -126.0f), 64.0f);
    const float r = t + 12582912.0f;  // 1.5 * 2^23: rint(t) in the low mantissa bits
    const float f = t - (r - 12582912.0f);
    return __int_as_float(__float_as_int(tiled_poly2<DEG>(f)) + (__float_as_int(r) << 23));
}
template <int DEG> __device__ __forceinline__ double tiled_exp2_fma(double t) { return exp2(t); }

// poly is a constant once the column loop is unrolled: no branch remains.
template <typename T, int DEG> __device__ __forceinline__ T tiled_exp2_sel(T t, bool poly) {
    return poly ? tiled_exp2_fma<DEG>(t) : tile_exp2<T>(t);
}

// Exponent of one row against the staged column yk: COS: yk[D] + a.y'; direct: yk[D] - |x'-y'|^2.
template <typename T, int D, bool COS>
__device__ __forceinline__ T tiled_exponent(const T (&xr)[D], const T* yk) {
    T z = yk[D];
#pragma unroll
    for (int k = 0; k < D; ++k) {
        if (COS) {
            z = fma(xr[k], yk[k], z);
        } else {
            const T diff = xr[k] - yk[k];
            z = fma(-diff, diff, z);
        }
    }
    return z;
}

// Row state of the fast kernels: xr = x' (direct) or 2 x' (COS), returns -|x'|^2 (COS) or 0.
template <typename T, int D, bool COS>
__device__ __forceinline__ T tiled_load_row(const T* __restrict__ x, const T* __restrict__ ctr,
                                            long long i, bool ok, T s, T (&xr)[D]) {
    T k2 = T(0);
#pragma unroll
    for (int k = 0; k < D; ++k) {
        const T xs = ok ? (x[i * D + k] - ctr[k]) * s : T(0);
        k2 = fma(-xs, xs, k2);
        xr[k] = COS ? T(2) * xs : xs;
    }
    return COS ? k2 : T(0);
}

// Staged column: y' in sy[0, D), then sy[D] = c0 - |y'|^2 (COS) or c0, c0 = w2_j or 0.
template <typename T, int D, bool COS>
__device__ __forceinline__ void tiled_stage_col(const T* __restrict__ y,
                                                const T* __restrict__ ctr, long long j, bool ok,
                                                T s, T c0, T* sy) {
    T c = c0;
#pragma unroll
    for (int k = 0; k < D; ++k) {
        const T ys = ok ? (y[j * D + k] - ctr[k]) * s : T(0);
        sy[k] = ys;
        if (COS) c = fma(-ys, ys, c);
    }
    sy[D] = c;
}

// Matvec without bandwidths, part[split, i, c0 + c] = sum_j 2^(-|x'_i - y'_j|^2) u[j, c0 + c],
// with the COS exponent and/or NPOLY polynomial columns; a block owns TILED_THREADS * ROWS rows
// (otherwise the launch geometry and splits of tiled_matvec_direct).
template <typename T, int D, int PC, bool COS, int NPOLY, int DEG, int ROWS>
__global__ void __launch_bounds__(TILED_THREADS)
tiled_matvec_fast(const T* __restrict__ x, const T* __restrict__ y, const T* __restrict__ u,
                  const T* __restrict__ ctr, long long n, long long m, long long chunk, int p,
                  int c0, T s, T* __restrict__ part_out) {
    constexpr int W = D + 1 + PC;
    __shared__ __align__(16) T sy[TILED_TJ * W];
    const long long base = (long long)blockIdx.x * (TILED_THREADS * ROWS) + threadIdx.x;
    const long long jb = (long long)blockIdx.y * chunk;
    const long long je = jb + chunk < m ? jb + chunk : m;
    T xr[ROWS][D], kr[ROWS], acc[ROWS][PC];
#pragma unroll
    for (int r = 0; r < ROWS; ++r) {
        const long long i = base + (long long)r * TILED_THREADS;
        kr[r] = tiled_load_row<T, D, COS>(x, ctr, i, i < n, s, xr[r]);
#pragma unroll
        for (int c = 0; c < PC; ++c) acc[r][c] = T(0);
    }
    for (long long j0 = jb; j0 < je; j0 += TILED_TJ) {
        __syncthreads();
        for (int t = threadIdx.x; t < TILED_TJ; t += TILED_THREADS) {
            const long long j = j0 + t;
            const bool ok = j < je;
            tiled_stage_col<T, D, COS>(y, ctr, j, ok, s, T(0), sy + t * W);
#pragma unroll
            for (int c = 0; c < PC; ++c)
                sy[t * W + D + 1 + c] = (ok && c0 + c < p) ? u[j * p + c0 + c] : T(0);
        }
        __syncthreads();
        T part[ROWS][PC];
#pragma unroll
        for (int r = 0; r < ROWS; ++r)
#pragma unroll
            for (int c = 0; c < PC; ++c) part[r][c] = T(0);
#pragma unroll 1
        for (int t0 = 0; t0 < TILED_TJ; t0 += TILED_PERIOD) {
#pragma unroll
            for (int tt = 0; tt < TILED_PERIOD; ++tt) {
                const T* yk = sy + (t0 + tt) * W;
#pragma unroll
                for (int r = 0; r < ROWS; ++r) {
                    T z = tiled_exponent<T, D, COS>(xr[r], yk);
                    if (COS) z += kr[r];
                    const T e = tiled_exp2_sel<T, DEG>(z, tt < NPOLY);
#pragma unroll
                    for (int c = 0; c < PC; ++c) part[r][c] = fma(e, yk[D + 1 + c], part[r][c]);
                }
            }
        }
#pragma unroll
        for (int r = 0; r < ROWS; ++r)
#pragma unroll
            for (int c = 0; c < PC; ++c) acc[r][c] += part[r][c];
    }
    T* out = part_out + (long long)blockIdx.y * n * p;
#pragma unroll
    for (int r = 0; r < ROWS; ++r) {
        const long long i = base + (long long)r * TILED_THREADS;
        if (i < n) TILE_STORE_ROW(PC, out, i, p, c0, acc[r])
    }
}

// Online softmax with lazy rescaling (see above); same outputs as tiled_softmax_direct (the
// stored maximum is the reference maximum mr, plus -|x'|^2 with COS).
template <typename T, int D, int PC, bool COS, int NPOLY, int DEG, int ROWS>
__global__ void __launch_bounds__(TILED_THREADS)
tiled_softmax_lazy(const T* __restrict__ x, const T* __restrict__ y, const T* __restrict__ v,
                   const T* __restrict__ w2, const T* __restrict__ ctr, long long n,
                   long long m, long long chunk, int p, int c0, T s, T* __restrict__ acc_out,
                   T* __restrict__ mx_out, T* __restrict__ sm_out) {
    constexpr int W = D + 1 + PC;
    constexpr int PA = PC > 0 ? PC : 1;
    __shared__ __align__(16) T sy[TILED_TJ * W];
    const long long base = (long long)blockIdx.x * (TILED_THREADS * ROWS) + threadIdx.x;
    const long long jb = (long long)blockIdx.y * chunk;
    const long long je = jb + chunk < m ? jb + chunk : m;
    T xr[ROWS][D], kr[ROWS], acc[ROWS][PA], mr[ROWS], sm[ROWS];
#pragma unroll
    for (int r = 0; r < ROWS; ++r) {
        const long long i = base + (long long)r * TILED_THREADS;
        kr[r] = tiled_load_row<T, D, COS>(x, ctr, i, i < n, s, xr[r]);
#pragma unroll
        for (int c = 0; c < PA; ++c) acc[r][c] = T(0);
        mr[r] = tile_lowest<T>();
        sm[r] = T(0);
    }
    for (long long j0 = jb; j0 < je; j0 += TILED_TJ) {
        __syncthreads();
        for (int t = threadIdx.x; t < TILED_TJ; t += TILED_THREADS) {
            const long long j = j0 + t;
            const bool ok = j < je;
            tiled_stage_col<T, D, COS>(y, ctr, j, ok, s, ok ? w2[j] : tile_neg_inf<T>(),
                                       sy + t * W);
#pragma unroll
            for (int c = 0; c < PC; ++c)
                sy[t * W + D + 1 + c] = (ok && c0 + c < p) ? v[j * p + c0 + c] : T(0);
        }
        __syncthreads();
        T ps[ROWS], pacc[ROWS][PA];
#pragma unroll
        for (int r = 0; r < ROWS; ++r) {
            ps[r] = T(0);
#pragma unroll
            for (int c = 0; c < PA; ++c) pacc[r][c] = T(0);
        }
#pragma unroll 1
        for (int t0 = 0; t0 < TILED_TJ; t0 += TILED_PERIOD) {
#pragma unroll
            for (int tt = 0; tt < TILED_PERIOD; ++tt) {
                const T* yk = sy + (t0 + tt) * W;
#pragma unroll
                for (int r = 0; r < ROWS; ++r) {
                    const T z = tiled_exponent<T, D, COS>(xr[r], yk);
                    const T e = tiled_exp2_sel<T, DEG>(z - mr[r], tt < NPOLY);
                    ps[r] += e;
#pragma unroll
                    for (int c = 0; c < PC; ++c) pacc[r][c] = fma(e, yk[D + 1 + c], pacc[r][c]);
                }
            }
        }
#pragma unroll
        for (int r = 0; r < ROWS; ++r) {
            if (!(ps[r] <= T(TILED_LAZY_LIMIT))) {  // rare: redo this tile with its maximum
                T tm = mr[r];
#pragma unroll 1
                for (int t = 0; t < TILED_TJ; ++t) {
                    const T z = tiled_exponent<T, D, COS>(xr[r], sy + t * W);
                    tm = z > tm ? z : tm;
                }
                const T f = tile_exp2<T>(mr[r] - tm);
                sm[r] *= f;
#pragma unroll
                for (int c = 0; c < PC; ++c) acc[r][c] *= f;
                mr[r] = tm;
                ps[r] = T(0);
#pragma unroll
                for (int c = 0; c < PC; ++c) pacc[r][c] = T(0);
#pragma unroll 1
                for (int t = 0; t < TILED_TJ; ++t) {
                    const T* yk = sy + t * W;
                    const T e = tile_exp2<T>(tiled_exponent<T, D, COS>(xr[r], yk) - tm);
                    ps[r] += e;
#pragma unroll
                    for (int c = 0; c < PC; ++c) pacc[r][c] = fma(e, yk[D + 1 + c], pacc[r][c]);
                }
            }
            sm[r] += ps[r];
#pragma unroll
            for (int c = 0; c < PC; ++c) acc[r][c] += pacc[r][c];
        }
    }
    const long long off = (long long)blockIdx.y * n;
#pragma unroll
    for (int r = 0; r < ROWS; ++r) {
        const long long i = base + (long long)r * TILED_THREADS;
        // every exponent was -inf (mr never left its sentinel): what the polynomial columns
        // summed is 2^-126-sized dust, not mass (lse = -inf as in tiled_softmax_direct)
        const bool empty = mr[r] == tile_lowest<T>();
        if (i < n) {
            if (c0 == 0) {
                mx_out[off + i] = mr[r] + kr[r];
                sm_out[off + i] = empty ? T(0) : sm[r];
            }
#pragma unroll
            for (int c = 0; c < PC; ++c)
                if (c0 + c < p) acc_out[(off + i) * p + c0 + c] = empty ? T(0) : acc[r][c];
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
    const T xx = tile_sqnorm<T>(xi, d);
    const T nb = -beta2 * (BW ? a[i] : T(1));
    T acc[PC];
#pragma unroll
    for (int c = 0; c < PC; ++c) acc[c] = T(0);
    for (long long j = 0; j < m; ++j) {
        const T q = tile_cos_sqdist<T>(xi, y, yy, j, d, xx);
        const T e = tile_exp2<T>(nb * (BW ? b[j] : T(1)) * q);
#pragma unroll
        for (int c = 0; c < PC; ++c)
            if (c0 + c < p) acc[c] = fma(e, u[j * p + c0 + c], acc[c]);
    }
    TILE_STORE_ROW(PC, out, i, p, c0, acc)
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
    const T xx = tile_sqnorm<T>(xi, d);
    T acc[PA];
#pragma unroll
    for (int c = 0; c < PA; ++c) acc[c] = T(0);
    T mx = tile_lowest<T>(), sm = T(0);
    for (long long j = 0; j < m; ++j) {
        const T q = tile_cos_sqdist<T>(xi, y, yy, j, d, xx);
        const T z = w2[j] - beta2 * q;
        TILE_ONLINE_TERM(T, PC, z, mx, sm, acc, v, j, p, c0)
    }
    if (c0 == 0) lse[i] = (mx + tile_log2<T>(sm)) * T(0.69314718055994530942);
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
template __global__ void tiled_matvec_fast<float, 3, 1, true, 2, 5, 4>(
    const float*, const float*, const float*, const float*, long long, long long, long long,
    int, int, float, float*);
template __global__ void tiled_matvec_fast<float, 3, 1, false, 4, 3, 8>(
    const float*, const float*, const float*, const float*, long long, long long, long long,
    int, int, float, float*);
template __global__ void tiled_matvec_fast<double, 2, 4, true, 0, 5, 4>(
    const double*, const double*, const double*, const double*, long long, long long,
    long long, int, int, double, double*);
template __global__ void tiled_softmax_lazy<float, 3, 0, true, 2, 5, 8>(
    const float*, const float*, const float*, const float*, const float*, long long, long long,
    long long, int, int, float, float*, float*, float*);
template __global__ void tiled_softmax_lazy<float, 3, 1, false, 0, 5, 4>(
    const float*, const float*, const float*, const float*, const float*, long long, long long,
    long long, int, int, float, float*, float*, float*);
template __global__ void tiled_softmax_lazy<double, 3, 4, true, 0, 5, 4>(
    const double*, const double*, const double*, const double*, const double*, long long,
    long long, long long, int, int, double, double*, double*, double*);
#endif
