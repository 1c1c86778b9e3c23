// Device code shared by the dense tile kernels (tiled.cu) and the block-sparse ones
// (blocksparse.cu), included by both (CuPy compiles with this folder on the include path;
// -I arraygen/backends/cupy for nvcc and the host tests). The two walk their columns
// differently (y in order; the column clusters of a CSR pair list) but stage a column, sum a
// staged tile into the row accumulators and store a row with the same code, kept here once:
// small __forceinline__ functions, and macros for the loop nests (below), so that every kernel
// compiles to the SASS it had with the loops written out in it (checked: nvcc sm_90, before
// and after, byte-identical).
//
// Layout of a staged column of width W in shared memory: y' = s y in [0, D), then the
// right-hand sides in [D, D + PC), then (matvec with bandwidths) b_j or (softmax) w2_j at D + PC.
// Units as in tiled.cu: exponents in log2 units, kernel value exp2(-|x' - y'|^2).
#pragma once

template <typename T> __device__ __forceinline__ T tile_exp2(T t);
template <> __device__ __forceinline__ float tile_exp2<float>(float t) {
    float r;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(t));
    return r;
}
template <> __device__ __forceinline__ double tile_exp2<double>(double t) { return exp2(t); }

template <typename T> __device__ __forceinline__ T tile_log2(T t);
template <> __device__ __forceinline__ float tile_log2<float>(float t) { return log2f(t); }
template <> __device__ __forceinline__ double tile_log2<double>(double t) { return log2(t); }

template <typename T> __device__ __forceinline__ T tile_neg_inf();
template <> __device__ __forceinline__ float tile_neg_inf<float>() {
    return __int_as_float(0xff800000);
}
template <> __device__ __forceinline__ double tile_neg_inf<double>() {
    return __longlong_as_double(0xfff0000000000000ULL);
}

// The softmax's initial running maximum (finite: z - lowest never overflows to NaN).
template <typename T> __device__ __forceinline__ T tile_lowest();
template <> __device__ __forceinline__ float tile_lowest<float>() { return -1e30f; }
template <> __device__ __forceinline__ double tile_lowest<double>() { return -1e300; }

// The loop nests below (row load and store, staging, tile bodies) are macros, not functions:
// nvcc unrolls a callee's loops before inlining it, which reorders the kernels' instructions; a
// macro leaves the kernels' code exactly as written out (the dense kernels were tuned so).
//
// Stage column j into row t of sy (width W): y' and the right-hand sides rhs[j, c0 + c] (0 past
// p); a column that is not ok (a tail) stages zeros. The kernel stages slot D + PC itself.
#define TILE_STAGE_DIRECT(T, D, PC, W, sy, t, y, rhs, j, ok, p, c0, s)                         \
    {                                                                                          \
        _Pragma("unroll") for (int k = 0; k < D; ++k) sy[t * W + k] =                          \
            ok ? y[j * D + k] * s : T(0);                                                      \
        _Pragma("unroll") for (int c = 0; c < PC; ++c) sy[t * W + D + c] =                     \
            (ok && c0 + c < p) ? rhs[j * p + c0 + c] : T(0);                                   \
    }

// One staged tile of TJ columns added to the matvec accumulators acc[ROWS][PC]:
// acc[r][c] += sum_t exp2(na_r b_t |x'_r - y'_t|^2) u_t[c] (BW; else exp2(-|x'_r - y'_t|^2)),
// the tile summed first into its own partials (two-level summation, for float32 accuracy).
#define TILE_MATVEC_TILE(T, D, PC, BW, W, ROWS, TJ, sy, xr, na, acc)                           \
    {                                                                                          \
        T part[ROWS][PC];                                                                      \
        _Pragma("unroll") for (int r = 0; r < ROWS; ++r)                                       \
            _Pragma("unroll") for (int c = 0; c < PC; ++c) part[r][c] = T(0);                  \
        _Pragma("unroll 4") for (int t = 0; t < TJ; ++t) {                                     \
            T yk[W];                                                                           \
            _Pragma("unroll") for (int k = 0; k < W; ++k) yk[k] = sy[t * W + k];               \
            _Pragma("unroll") for (int r = 0; r < ROWS; ++r) {                                 \
                T diff = xr[r][0] - yk[0];                                                     \
                T q = diff * diff;                                                             \
                _Pragma("unroll") for (int k = 1; k < D; ++k) {                                \
                    diff = xr[r][k] - yk[k];                                                   \
                    q = fma(diff, diff, q);                                                    \
                }                                                                              \
                const T e = BW ? tile_exp2<T>((na[r] * yk[D + PC]) * q) : tile_exp2<T>(-q);    \
                _Pragma("unroll") for (int c = 0; c < PC; ++c) part[r][c] =                    \
                    fma(e, yk[D + c], part[r][c]);                                             \
            }                                                                                  \
        }                                                                                      \
        _Pragma("unroll") for (int r = 0; r < ROWS; ++r)                                       \
            _Pragma("unroll") for (int c = 0; c < PC; ++c) acc[r][c] += part[r][c];            \
    }

// One staged tile of TJ columns in the online softmax of ROWS rows, z = w2_t - |x'_r - y'_t|^2:
// running max mx, sm = sum 2^(z - mx), acc = sum 2^(z - mx) v_t (PA = max(PC, 1) slots), a new
// maximum rescaling what was accumulated (partials included); per-tile partials as above.
#define TILE_SOFTMAX_TILE(T, D, PC, PA, W, ROWS, TJ, sy, xr, mx, sm, acc)                      \
    {                                                                                          \
        T ps[ROWS], pacc[ROWS][PA];                                                            \
        _Pragma("unroll") for (int r = 0; r < ROWS; ++r) {                                     \
            ps[r] = T(0);                                                                      \
            _Pragma("unroll") for (int c = 0; c < PA; ++c) pacc[r][c] = T(0);                  \
        }                                                                                      \
        _Pragma("unroll 2") for (int t = 0; t < TJ; ++t) {                                     \
            T yk[W];                                                                           \
            _Pragma("unroll") for (int k = 0; k < W; ++k) yk[k] = sy[t * W + k];               \
            _Pragma("unroll") for (int r = 0; r < ROWS; ++r) {                                 \
                T z = yk[D + PC];                                                              \
                _Pragma("unroll") for (int k = 0; k < D; ++k) {                                \
                    const T diff = xr[r][k] - yk[k];                                           \
                    z = fma(-diff, diff, z);                                                   \
                }                                                                              \
                T q = z - mx[r];                                                               \
                if (q > T(0)) {                                                                \
                    const T f = tile_exp2<T>(-q);                                              \
                    sm[r] *= f;                                                                \
                    ps[r] *= f;                                                                \
                    _Pragma("unroll") for (int c = 0; c < PC; ++c) {                           \
                        acc[r][c] *= f;                                                        \
                        pacc[r][c] *= f;                                                       \
                    }                                                                          \
                    mx[r] = z;                                                                 \
                    q = T(0);                                                                  \
                }                                                                              \
                const T e = tile_exp2<T>(q);                                                   \
                ps[r] += e;                                                                    \
                _Pragma("unroll") for (int c = 0; c < PC; ++c) pacc[r][c] =                    \
                    fma(e, yk[D + c], pacc[r][c]);                                             \
            }                                                                                  \
        }                                                                                      \
        _Pragma("unroll") for (int r = 0; r < ROWS; ++r) {                                     \
            sm[r] += ps[r];                                                                    \
            _Pragma("unroll") for (int c = 0; c < PC; ++c) acc[r][c] += pacc[r][c];            \
        }                                                                                      \
    }

// Row i of x scaled by s into xr (zeros when !ok).
#define TILE_LOAD_SCALED(T, D, xr, x, i, ok, s)                                                 \
    _Pragma("unroll") for (int k = 0; k < D; ++k) xr[k] = ok ? x[i * D + k] * s : T(0);

// Row i of a matvec result: out[i, c0 + c] = acc[c] for the columns below p (a statement).
#define TILE_STORE_ROW(PC, out, i, p, c0, acc)                                                  \
    {                                                                                          \
        _Pragma("unroll") for (int c = 0; c < PC; ++c) if (c0 + c < p)                         \
            out[i * p + c0 + c] = acc[c];                                                      \
    }

// Row i of a softmax partial result: mx_out[i], sm_out[i] (by the launch of the first columns,
// c0 = 0) and acc_out[i, c0 + c] (a statement).
#define TILE_STORE_SOFTMAX(PC, acc_out, mx_out, sm_out, i, p, c0, mx, sm, acc)                  \
    {                                                                                          \
        if (c0 == 0) {                                                                         \
            mx_out[i] = mx;                                                                    \
            sm_out[i] = sm;                                                                    \
        }                                                                                      \
        _Pragma("unroll") for (int c = 0; c < PC; ++c) if (c0 + c < p)                         \
            acc_out[(i) * p + c0 + c] = acc[c];                                                \
    }

// One column of the one-row online softmax (cosine kernels), exponent z (log2 units): a new
// maximum rescales sm and acc, then sm += 2^(z - mx), acc[c] += 2^(z - mx) v[j, c0 + c] below p.
#define TILE_ONLINE_TERM(T, PC, z, mx, sm, acc, v, j, p, c0)                                     \
    {                                                                                          \
        T q = z - mx;                                                                          \
        if (q > T(0)) {                                                                        \
            const T f = tile_exp2<T>(-q);                                                      \
            sm *= f;                                                                           \
            _Pragma("unroll") for (int c = 0; c < PC; ++c) acc[c] *= f;                        \
            mx = z;                                                                            \
            q = T(0);                                                                          \
        }                                                                                      \
        const T e = tile_exp2<T>(q);                                                           \
        sm += e;                                                                               \
        _Pragma("unroll") for (int c = 0; c < PC; ++c) if (c0 + c < p) acc[c] =                \
            fma(e, v[j * p + c0 + c], acc[c]);                                                 \
    }

// Law of cosines, one row against column j (x, y centred, d any): the squared distance
// max(xx + yy_j - 2 x.y_j, 0), xx = |x|^2.
template <typename T>
__device__ __forceinline__ T tile_cos_sqdist(const T* xi, const T* y,
                                             const T* yy, long long j, int d, T xx) {
    const T* yj = y + j * d;
    T dot = T(0);
    for (int k = 0; k < d; ++k) dot = fma(xi[k], yj[k], dot);
    T q = xx + yy[j] - T(2) * dot;
    return q > T(0) ? q : T(0);
}

// |x|^2 of a row of d coordinates.
template <typename T> __device__ __forceinline__ T tile_sqnorm(const T* xi, int d) {
    T xx = T(0);
    for (int k = 0; k < d; ++k) xx = fma(xi[k], xi[k], xx);
    return xx;
}
