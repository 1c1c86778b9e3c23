// Gaussian hot path (launcher contract: arraygen/gaussian.py). Mode codes follow
// arraygen.gaussian.MODES: 0 reflect, 1 mirror, 2 nearest, 3 wrap, 4 constant.
// Compiled by CuPy (RawModule, name_expressions) and, for CI, by `nvcc -arch=sm_90 -c`.

typedef long long i64;

// Source index of i on an axis of length n (-1: the constant value).
__device__ __forceinline__ int gauss_src(int i, int n, int mode) {
    if (i >= 0 && i < n) return i;
    if (mode == 4) return -1;
    if (mode == 2) return i < 0 ? 0 : n - 1;
    if (mode == 3) { int j = i % n; return j < 0 ? j + n : j; }
    if (n == 1) return 0;
    if (mode == 0) { int p = 2 * n; int j = i % p; if (j < 0) j += p; return j >= n ? p - 1 - j : j; }
    int p = 2 * n - 2; int j = i % p; if (j < 0) j += p; return j >= n ? p - j : j;
}

// One pass along the middle axis of a C-contiguous (outer, n, inner) array:
// y[o, i, j] = sum_k w[k] x[o, src(i + k - r), j]. One thread per output, grid-stride loop.
template <typename T>
__global__ void gauss_pass(const T* __restrict__ x, T* __restrict__ y, const T* __restrict__ w,
                           i64 total, int n, i64 inner, int r, int mode, T cval) {
    const i64 stride = (i64)gridDim.x * blockDim.x;
    for (i64 e = (i64)blockIdx.x * blockDim.x + threadIdx.x; e < total; e += stride) {
        const i64 j = e % inner;
        const i64 t = e / inner;
        const int i = (int)(t % n);
        const T* base = x + (t - i) * inner + j;
        T acc = w[r] * base[(i64)i * inner];
        for (int k = 1; k <= r; ++k) {
            const int a = gauss_src(i - k, n, mode);
            const int b = gauss_src(i + k, n, mode);
            const T va = a >= 0 ? base[(i64)a * inner] : cval;
            const T vb = b >= 0 ? base[(i64)b * inner] : cval;
            acc += w[r + k] * (va + vb);
        }
        y[e] = acc;
    }
}

template <typename T> struct Vec;
template <> struct Vec<float> { typedef float4 type; };
template <> struct Vec<double> { typedef double2 type; };
__device__ __forceinline__ void unpack(float4 v, float* a) { a[0] = v.x; a[1] = v.y; a[2] = v.z; a[3] = v.w; }
__device__ __forceinline__ void unpack(double2 v, double* a) { a[0] = v.x; a[1] = v.y; }
__device__ __forceinline__ float4 pack(const float* a) { return make_float4(a[0], a[1], a[2], a[3]); }
__device__ __forceinline__ double2 pack(const double* a) { return make_double2(a[0], a[1]); }

// Both passes over the last two axes of a C-contiguous (B, H, W) array, staged in shared
// memory (the launcher's fused kernel). A block of 256
// threads makes one TH x TW output tile: (1) it loads the TH + 2 RY rows x TW + 2 RA columns
// of input around it (RA = RX rounded up to a 16-byte vector of VEC elements) into s with
// independent 16-byte loads, all issued before the first shared-memory store, falling back to
// element-wise loads with the mode's index remapping for vectors that leave the array (or when
// !vec: W not a multiple of VEC); (2) the vertical pass turns s into m (TH rows, RPT outputs
// per work item from RPT + 2 RY shared loads); (3) the horizontal pass makes VEC adjacent
// outputs per work item from (VEC + 2 RX) values of m and writes them with one 16-byte store.
template <typename T, int RY, int RX, int TH, int TW>
__global__ void __launch_bounds__(256, sizeof(T) == 4 ? 4 : 2)
gauss2t(const T* __restrict__ x, T* __restrict__ y, const T* __restrict__ wy,
        const T* __restrict__ wx, int H, int W, int tiles_x, int tiles_y, int mode, T cval,
        int vec) {
    typedef typename Vec<T>::type V;
    constexpr int NTH = 256;
    constexpr int VEC = 16 / sizeof(T);
    constexpr int RA = (RX + VEC - 1) / VEC * VEC;
    constexpr int SW = TW + 2 * RA;
    constexpr int SH = TH + 2 * RY;
    constexpr int CPR = SW / VEC;            // vectors per staged row
    constexpr int NCH = SH * CPR;            // vectors in the staged tile
    constexpr int PER = (NCH + NTH - 1) / NTH;
    constexpr int RPT = TH < 8 ? TH : 8;     // vertical outputs per work item
    static_assert(TW % VEC == 0 && TH % RPT == 0, "tile shape");
    __shared__ __align__(16) T s[SH][SW];
    __shared__ __align__(16) T m[TH][SW];

    const int t = threadIdx.x;
    const i64 blk = blockIdx.x;
    const int bx = (int)(blk % tiles_x);
    const i64 rest = blk / tiles_x;
    const int by = (int)(rest % tiles_y);
    const i64 plane = (rest / tiles_y) * (i64)H * W;
    const T* xp = x + plane;
    const int x0 = bx * TW, y0 = by * TH;
    const int cx = x0 - RA;  // global column of s[.][0]

    // (1) stage the input tile
    V v[PER];
    bool ok[PER];
#pragma unroll
    for (int i = 0; i < PER; ++i) {
        const int u = t + i * NTH;
        const int r = u / CPR;
        const int gc = cx + (u - r * CPR) * VEC;
        const int gr = gauss_src(y0 - RY + r, H, mode);
        ok[i] = u < NCH && vec && gr >= 0 && gc >= 0 && gc + VEC <= W;
        if (ok[i]) v[i] = __ldg(reinterpret_cast<const V*>(xp + (i64)gr * W + gc));
    }
#pragma unroll
    for (int i = 0; i < PER; ++i) {
        const int u = t + i * NTH;
        if (u >= NCH) continue;
        const int r = u / CPR;
        const int c = (u - r * CPR) * VEC;
        if (ok[i]) {
            *reinterpret_cast<V*>(&s[r][c]) = v[i];
        } else {
            const int gr = gauss_src(y0 - RY + r, H, mode);
#pragma unroll
            for (int e = 0; e < VEC; ++e) {
                const int gc = gauss_src(cx + c + e, W, mode);
                s[r][c + e] = (gr >= 0 && gc >= 0) ? __ldg(xp + (i64)gr * W + gc) : cval;
            }
        }
    }
    __syncthreads();

    // (2) vertical pass: m[q][c] = sum_k wy[k] s[q + k][c]
    {
        T wv[2 * RY + 1];
#pragma unroll
        for (int k = 0; k <= 2 * RY; ++k) wv[k] = __ldg(wy + k);
        for (int u = t; u < SW * (TH / RPT); u += NTH) {
            const int run = u / SW;
            const int c = u - run * SW;
            const int q0 = run * RPT;
            T acc[RPT];
#pragma unroll
            for (int q = 0; q < RPT; ++q) acc[q] = T(0);
#pragma unroll
            for (int j = 0; j < RPT + 2 * RY; ++j) {
                const T a = s[q0 + j][c];
#pragma unroll
                for (int k = 0; k <= 2 * RY; ++k) {
                    const int q = j - k;
                    if (q >= 0 && q < RPT) acc[q] += wv[k] * a;
                }
            }
            // constant mode: the horizontal pass pads ITS input with cval (scipy's passes
            // each pad their own input), not with the vertically filtered cval
            const bool pad = gauss_src(cx + c, W, mode) < 0;
#pragma unroll
            for (int q = 0; q < RPT; ++q) m[q0 + q][c] = pad ? cval : acc[q];
        }
    }
    __syncthreads();

    // (3) horizontal pass: y[y0 + q][x0 + p] = sum_k wx[k] m[q][RA - RX + p + k]
    T wh[2 * RX + 1];
#pragma unroll
    for (int k = 0; k <= 2 * RX; ++k) wh[k] = __ldg(wx + k);
    const int rows = min(TH, H - y0);
    constexpr int HP = TW / VEC;
    for (int u = t; u < TH * HP; u += NTH) {
        const int q = u / HP;
        const int p = (u - q * HP) * VEC;
        if (q >= rows || x0 + p >= W) continue;
        T a[VEC + 2 * RX + VEC];
        if constexpr ((RA - RX) % VEC == 0) {
            const V* src = reinterpret_cast<const V*>(&m[q][RA - RX + p]);
#pragma unroll
            for (int g = 0; g < (2 * RX + VEC) / VEC; ++g) unpack(src[g], &a[g * VEC]);
        } else {
#pragma unroll
            for (int g = 0; g < VEC + 2 * RX; ++g) a[g] = m[q][RA - RX + p + g];
        }
        T o[VEC];
#pragma unroll
        for (int e = 0; e < VEC; ++e) {
            T acc = T(0);
#pragma unroll
            for (int k = 0; k <= 2 * RX; ++k) acc += wh[k] * a[e + k];
            o[e] = acc;
        }
        T* out = y + plane + (i64)(y0 + q) * W + x0 + p;
        if (vec && x0 + p + VEC <= W) {
            *reinterpret_cast<V*>(out) = pack(o);
        } else {
#pragma unroll
            for (int e = 0; e < VEC; ++e)
                if (x0 + p + e < W) out[e] = o[e];
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Column-strip variant of the fused 2-D filter (gauss2s). A block of NT threads owns a strip of
// TW = NT * VEC output columns and a segment of up to `seg` output rows of one plane, and walks
// down it: input rows arrive in stages of P = 2 RY + 1 rows, copied global -> shared memory with
// cp.async (16-byte copies, double-buffered, so the next stage is in flight while this one is
// filtered); the horizontal pass reads each staged row from shared memory (VEC outputs per
// thread from VEC + 2 RX values), and the vertical pass accumulates into a ring of P register
// rows (output row i lives in slot i % P; input row j adds wy[k] to output j - k), so each input
// row is read from DRAM once per segment (vertical halo 2 RY rows per segment, not per tile).
// Writes are 16-byte streaming stores of whole rows of the strip. Vectors that leave the array
// (strip edges), rows with no source (constant mode) and !vec fall back to element-wise
// staging with the mode's index remapping.
__device__ __forceinline__ void ag_cp_async16(void* smem, const void* gmem) {
    unsigned s;  // the shared-window address (PTX, so NVRTC needs no intrinsic header)
    asm volatile("{ .reg .u64 p; cvta.to.shared.u64 p, %1; cvt.u32.u64 %0, p; }\n"
                 : "=r"(s) : "l"(smem));
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(s), "l"(gmem));
}
__device__ __forceinline__ void ag_cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
__device__ __forceinline__ void ag_cp_async_wait1() { asm volatile("cp.async.wait_group 1;\n" ::); }
__device__ __forceinline__ void ag_stcs(float* p, const float* o) {
    __stcs(reinterpret_cast<float4*>(p), make_float4(o[0], o[1], o[2], o[3]));
}
__device__ __forceinline__ void ag_stcs(double* p, const double* o) {
    __stcs(reinterpret_cast<double2*>(p), make_double2(o[0], o[1]));
}

template <typename T, int RY, int RX, int NT>
__global__ void __launch_bounds__(NT)
gauss2s(const T* __restrict__ x, T* __restrict__ y, const T* __restrict__ wy,
        const T* __restrict__ wx, int H, int W, int strips, int segs, int seg, int mode, T cval,
        int vec) {
    typedef typename Vec<T>::type V;
    constexpr int VEC = 16 / sizeof(T);
    constexpr int P = 2 * RY + 1;              // rows per stage = ring length
    constexpr int RA = (RX + VEC - 1) / VEC * VEC;
    constexpr int TW = NT * VEC;
    constexpr int SW = TW + 2 * RA;
    constexpr int CPR = SW / VEC;              // vectors per staged row
    constexpr int NCH = P * CPR;               // vectors per stage
    __shared__ __align__(16) T s[2][P][SW];

    const int t = threadIdx.x;
    const long long blk = blockIdx.x;
    const int sx = (int)(blk % strips);
    const long long rest = blk / strips;
    const int sg = (int)(rest % segs);
    const long long plane = (rest / segs) * (long long)H * W;
    const T* xp = x + plane;
    T* yp = y + plane;
    const int x0 = sx * TW;
    const int cx = x0 - RA;                    // global column of s[.][.][0]
    const int r0 = sg * seg;                   // first output row of the segment
    const int nout = min(seg, H - r0);
    const int n_in = nout + 2 * RY;            // input rows r0 - RY .. r0 + nout - 1 + RY
    const int stages = (n_in + P - 1) / P;

    auto stage = [&](int b) {
        T(*buf)[SW] = s[b & 1];
        for (int u = t; u < NCH; u += NT) {
            const int r = u / CPR;
            const int c = (u - r * CPR) * VEC;
            const int j = b * P + r;
            if (j >= n_in) continue;
            const int gr = gauss_src(r0 - RY + j, H, mode);
            const int gc = cx + c;
            if (vec && gr >= 0 && gc >= 0 && gc + VEC <= W) {
                ag_cp_async16(&buf[r][c], xp + (long long)gr * W + gc);
            } else {
#pragma unroll
                for (int e = 0; e < VEC; ++e) {
                    const int sc = gauss_src(gc + e, W, mode);
                    buf[r][c + e] = (gr >= 0 && sc >= 0) ? __ldg(xp + (long long)gr * W + sc) : cval;
                }
            }
        }
        ag_cp_async_commit();
    };

    T wv[P], wh[2 * RX + 1];
#pragma unroll
    for (int k = 0; k < P; ++k) wv[k] = __ldg(wy + k);
#pragma unroll
    for (int k = 0; k <= 2 * RX; ++k) wh[k] = __ldg(wx + k);
    T acc[P][VEC];
#pragma unroll
    for (int q = 0; q < P; ++q)
#pragma unroll
        for (int e = 0; e < VEC; ++e) acc[q][e] = T(0);

    const int col = x0 + t * VEC;              // first output column of this thread
    const bool full = vec && col + VEC <= W;
    stage(0);
    for (int b = 0; b < stages; ++b) {
        if (b + 1 < stages) stage(b + 1);
        else ag_cp_async_commit();             // an empty group keeps wait_group 1 exact
        ag_cp_async_wait1();
        __syncthreads();
        T(*buf)[SW] = s[b & 1];
#pragma unroll
        for (int jj = 0; jj < P; ++jj) {
            const int j = b * P + jj;
            if (j < n_in) {
                // horizontal: h[e] = sum_k wx[k] row[RA - RX + t VEC + e + k]
                T a[VEC + 2 * RX];
                if constexpr ((RA - RX) % VEC == 0) {
                    const V* src = reinterpret_cast<const V*>(&buf[jj][RA - RX + t * VEC]);
#pragma unroll
                    for (int g = 0; g < (VEC + 2 * RX) / VEC; ++g) unpack(src[g], &a[g * VEC]);
                } else {
#pragma unroll
                    for (int g = 0; g < VEC + 2 * RX; ++g) a[g] = buf[jj][RA - RX + t * VEC + g];
                }
                T h[VEC];
#pragma unroll
                for (int e = 0; e < VEC; ++e) {
                    T v = wh[RX] * a[e + RX];
#pragma unroll
                    for (int k = 1; k <= RX; ++k) v += wh[RX + k] * (a[e + RX - k] + a[e + RX + k]);
                    h[e] = v;
                }
                // vertical ring: output j - k gets wy[k] * h; slot j % P starts afresh (k = 0)
#pragma unroll
                for (int e = 0; e < VEC; ++e) acc[jj][e] = wv[0] * h[e];
#pragma unroll
                for (int k = 1; k < P; ++k) {
                    const int q = (jj - k + P) % P;
#pragma unroll
                    for (int e = 0; e < VEC; ++e) acc[q][e] += wv[k] * h[e];
                }
                // output row i = j - 2 RY is complete (slot (j + 1) % P)
                const int i = j - 2 * RY;
                if (i >= 0 && col < W) {
                    const int q = (jj + 1) % P;
                    T* out = yp + (long long)(r0 + i) * W + col;
                    if (full) {
                        ag_stcs(out, acc[q]);
                    } else {
#pragma unroll
                        for (int e = 0; e < VEC; ++e)
                            if (col + e < W) out[e] = acc[q][e];
                    }
                }
            }
        }
        __syncthreads();                       // buffer b & 1 is refilled at stage b + 2
    }
}
