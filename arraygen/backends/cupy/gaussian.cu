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

template <typename T> struct Pair;
template <> struct Pair<float> { typedef float2 type; };
template <> struct Pair<double> { typedef double2 type; };

// Both passes over the last two axes of a C-contiguous (B, H, W) array in one kernel.
// A block of 256 + 2 RX threads makes S consecutive TH x 256 output tiles of one column strip.
// Thread t owns input column x0 - RX + t: it runs the vertical pass down TH + 2 RY rows
// straight from global memory (coalesced across the warp) into TH register accumulators and
// parks them in shared memory; the 2 RY halo rows at the bottom stay in registers as the top
// halo of the next tile, so each input row is loaded once per strip. After a barrier the
// horizontal pass makes two adjacent outputs per work item from RX + 1 paired (8- or 16-byte)
// shared-memory loads and writes the tile.
template <typename T, int RY, int RX, int TH, int S>
__global__ void __launch_bounds__(256 + 2 * RX) gauss2d(const T* __restrict__ x, T* __restrict__ y,
                                                        const T* __restrict__ wy,
                                                        const T* __restrict__ wx,
                                                        int H, int W, int tiles_x, int strips,
                                                        int mode, T cval) {
    constexpr int TW = 256;
    constexpr int NT = TW + 2 * RX;
    constexpr int HALO = 2 * RY;
    typedef typename Pair<T>::type T2;
    __shared__ __align__(16) T s[TH][NT];
    const int t = threadIdx.x;
    const i64 blk = blockIdx.x;
    const int bx = (int)(blk % tiles_x);
    const i64 rest = blk / tiles_x;
    const int strip = (int)(rest % strips);
    const i64 plane = (rest / strips) * (i64)H * W;
    const int x0 = bx * TW;
    const int c = gauss_src(x0 - RX + t, W, mode);
    const T* col = x + plane + (c >= 0 ? c : 0);

    T wv[2 * RY + 1];
#pragma unroll
    for (int k = 0; k <= 2 * RY; ++k) wv[k] = __ldg(wy + k);
    T keep[HALO > 0 ? HALO : 1];

    for (int tile = 0; tile < S; ++tile) {
        const int y0 = (strip * S + tile) * TH;
        if (y0 >= H) break;  // uniform across the block
        T acc[TH];
#pragma unroll
        for (int q = 0; q < TH; ++q) acc[q] = T(0);
        if (c >= 0) {
            const bool inside = (y0 - RY >= 0) && (y0 + TH + RY <= H);
#pragma unroll
            for (int j = 0; j < TH + HALO; ++j) {
                T v;
                if (j < HALO && tile > 0) {
                    v = keep[j < HALO ? j : 0];
                } else {
                    const int row = inside ? y0 - RY + j : gauss_src(y0 - RY + j, H, mode);
                    v = row >= 0 ? __ldg(col + (i64)row * W) : cval;
                }
                if (j >= TH) keep[j >= TH ? j - TH : 0] = v;  // read at step j - TH already
#pragma unroll
                for (int k = 0; k <= 2 * RY; ++k) {
                    const int q = j - k;
                    if (q >= 0 && q < TH) acc[q] += wv[k] * v;
                }
            }
        } else {
#pragma unroll
            for (int q = 0; q < TH; ++q) acc[q] = cval;
        }
        if (tile > 0) __syncthreads();  // the previous tile's horizontal pass is done with s
#pragma unroll
        for (int q = 0; q < TH; ++q) s[q][t] = acc[q];
        __syncthreads();

        T wh[2 * RX + 1];
#pragma unroll
        for (int k = 0; k <= 2 * RX; ++k) wh[k] = __ldg(wx + k);
        const int rows = min(TH, H - y0);
        for (int u = t; u < TH * (TW / 2); u += NT) {
            const int q = u / (TW / 2);
            const int p = 2 * (u % (TW / 2));  // output columns x0 + p, x0 + p + 1
            if (q >= rows || x0 + p >= W) continue;
            const T2* src = reinterpret_cast<const T2*>(&s[q][p]);
            T v[2 * RX + 2];
#pragma unroll
            for (int m = 0; m <= RX; ++m) {
                const T2 pair = src[m];
                v[2 * m] = pair.x;
                v[2 * m + 1] = pair.y;
            }
            T o0 = T(0), o1 = T(0);
#pragma unroll
            for (int k = 0; k <= 2 * RX; ++k) {
                o0 += wh[k] * v[k];
                o1 += wh[k] * v[k + 1];
            }
            T* out = y + plane + (i64)(y0 + q) * W + x0 + p;
            out[0] = o0;
            if (x0 + p + 1 < W) out[1] = o1;
        }
    }
}
