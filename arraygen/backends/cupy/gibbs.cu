// Gibbs hot path kernels for CuPy (RawModule, float and double). Launcher contract: see
// arraygen/gibbs.py. One launch per colour: each thread owns a quad of 4 consecutive elements of
// the int8 spins (B, C, H, W) = exactly one Philox block of the sweep's uniform stream, and
// resamples those of the quad's sites that have the current colour (sites of one colour are never
// coupled, so the in-place update has no races). 64-bit element offsets throughout.
#include "philox.cuh"

namespace arraygen {

__device__ __forceinline__ float ag_exp(float x) { return expf(x); }
__device__ __forceinline__ double ag_exp(double x) { return exp(x); }

__device__ __forceinline__ int wrap(int v, int n) {
    // one conditional add/subtract covers v in [-n, 2n) (offsets are reduced to |d| <= n/2 by
    // the launcher); the modulo is a rare fallback for halos wider than the grid
    if (v < 0) v += n;
    else if (v >= n) v -= n;
    if ((unsigned)v >= (unsigned)n) {
        v %= n;
        if (v < 0) v += n;
    }
    return v;
}

// Geometry of the grid and the colouring. pattern_n > 0: colour(c, y, x) = (pa c + pb y + pd x)
// mod pattern_n (no colour array read); otherwise colors[site].
struct Grid {
    int C, H, W, K, periodic, pattern_n, pa, pb, pd;
};

template <typename T>
__device__ __forceinline__ T field(const signed char* __restrict__ s, const T* __restrict__ J,
                                   const int* __restrict__ offs, const Grid g, long long N,
                                   long long chain, int c, int y, int x, long long site, T acc) {
    for (int k = 0; k < g.K; ++k) {
        const int dc = __ldg(offs + 3 * k), dy = __ldg(offs + 3 * k + 1),
                  dx = __ldg(offs + 3 * k + 2);
        int fc = c + dc, fy = y + dy, fx = x + dx;
        int bc = c - dc, by = y - dy, bx = x - dx;
        bool fok = true, bok = true;
        if (g.periodic) {
            fc = wrap(fc, g.C); fy = wrap(fy, g.H); fx = wrap(fx, g.W);
            bc = wrap(bc, g.C); by = wrap(by, g.H); bx = wrap(bx, g.W);
        } else {
            fok = fc >= 0 && fc < g.C && fy >= 0 && fy < g.H && fx >= 0 && fx < g.W;
            bok = bc >= 0 && bc < g.C && by >= 0 && by < g.H && bx >= 0 && bx < g.W;
        }
        const long long kN = (long long)k * N;
        if (fok) {
            const long long f = ((long long)fc * g.H + fy) * g.W + fx;
            acc += __ldg(J + kN + site) * (T)s[chain + f];
        }
        if (bok) {
            const long long b = ((long long)bc * g.H + by) * g.W + bx;
            acc += __ldg(J + kN + b) * (T)s[chain + b];
        }
    }
    return acc;
}

template <typename T>
__global__ void gibbs_phase(signed char* __restrict__ s, const T* __restrict__ J,
                            const T* __restrict__ h, const signed char* __restrict__ colors,
                            const int* __restrict__ offs, const T* __restrict__ u, int has_u,
                            int C, int H, int W, int K, int periodic, int pn, int pa, int pb,
                            int pd, long long total, int bias_batched, int col, T two_beta,
                            unsigned int c2, unsigned int c3, unsigned int k0, unsigned int k1) {
    const Grid g{C, H, W, K, periodic, pn, pa, pb, pd};
    const long long N = (long long)g.C * g.H * g.W;
    const long long quads = (total + 3) / 4;
    for (long long q = blockIdx.x * (long long)blockDim.x + threadIdx.x; q < quads;
         q += (long long)gridDim.x * blockDim.x) {
        const long long e0 = 4 * q;
        long long b = e0 / N;
        long long site = e0 - b * N;
        int c = (int)(site / ((long long)g.H * g.W));
        int rem = (int)(site - (long long)c * g.H * g.W);
        int y = rem / g.W, x = rem - y * g.W;
        uint4 w = make_uint4(0u, 0u, 0u, 0u);
        if (!has_u) w = philox4x32_10((unsigned long long)q, PhiloxKey{c2, c3, k0, k1});
        const unsigned int words[4] = {w.x, w.y, w.z, w.w};
#pragma unroll
        for (int lane = 0; lane < 4; ++lane) {
            const long long e = e0 + lane;
            if (e >= total) break;
            const int colour = g.pattern_n > 0
                                   ? (g.pa * c + g.pb * y + g.pd * x) % g.pattern_n
                                   : (int)colors[site];
            if (colour == col) {
                const long long chain = b * N;
                const T hb = __ldg(h + (bias_batched ? chain + site : site));
                const T gamma = field<T>(s, J, offs, g, N, chain, c, y, x, site, hb);
                const T p = (T)1 / ((T)1 + ag_exp(-two_beta * gamma));
                const T ue = has_u ? __ldg(u + e) : (T)uniform_from_word(words[lane], 0.0f);
                s[e] = ue < p ? (signed char)1 : (signed char)-1;
            }
            // advance (b, site, c, y, x) to the next element
            ++site;
            if (++x == g.W) {
                x = 0;
                if (++y == g.H) {
                    y = 0;
                    if (++c == g.C) {
                        c = 0;
                        site = 0;
                        ++b;
                    }
                }
            }
        }
    }
}

}  // namespace arraygen

namespace arraygen {

// Fused sweep for plane-local stencils (every dc == 0) with W % 4 == 0: one launch per sweep,
// reading s_in and writing s_out (ping-pong, so no block reads what another one writes). A block
// owns a tile of TH rows x TWQ quads of one plane (b, c) and keeps the spins of the tile plus a
// halo of n_colors * (Ry rows, HQ quads) in shared memory. Colour phase col updates, in shared
// memory, the sites of colour col in the tile grown by (n_colors - 1 - col) halo widths: the
// sites it needs from earlier phases were updated there by this block, and every site's update
// depends only on its inputs and its own Philox uniform, so halo sites get exactly the value
// their owning block computes. Global traffic per sweep: the spins once each way and the
// couplings and bias about once (the halo re-reads hit L1/L2).
template <typename T>
__global__ void gibbs_sweep_tiled(const signed char* __restrict__ s_in,
                                  signed char* __restrict__ s_out, const T* __restrict__ J,
                                  const T* __restrict__ h, const signed char* __restrict__ colors,
                                  const int* __restrict__ offs, const T* __restrict__ u, int has_u,
                                  int C, int H, int W, int K, int periodic, int pn, int pa, int pb,
                                  int pd, int n_colors, int Ry, int HQ, int TH, int TWQ,
                                  int tiles_y, int tiles_x, int bias_batched, T two_beta,
                                  unsigned int c2, unsigned int c3, unsigned int k0,
                                  unsigned int k1) {
    extern __shared__ int smem_words[];
    signed char* sm = reinterpret_cast<signed char*>(smem_words);
    // after the spins: the float uniforms of every quad of the first phase's region
    float* su = reinterpret_cast<float*>(smem_words + (TH + 2 * n_colors * Ry) *
                                         (TWQ + 2 * n_colors * HQ));
    const int WQ = W >> 2;
    const long long HW = (long long)H * W;
    const long long N = (long long)C * HW;
    const int tile = blockIdx.x % (tiles_y * tiles_x);
    const long long plane = blockIdx.x / (tiles_y * tiles_x);  // b * C + c
    const int c = (int)(plane % C);
    const long long chain = (plane / C) * N;
    const int y0 = (tile / tiles_x) * TH;
    const int q0 = (tile % tiles_x) * TWQ;
    const int SY = n_colors * Ry, SQ = n_colors * HQ;
    const int SWQ = TWQ + 2 * SQ, SW = 4 * SWQ;
    const int SH = TH + 2 * SY;
    const signed char* pin = s_in + plane * HW;

    // load the spins of tile + full halo (zero outside the grid for open boundaries)
    for (int t = threadIdx.x; t < SH * SWQ; t += blockDim.x) {
        const int ry = t / SWQ - SY, rq = t % SWQ - SQ;
        int gy = y0 + ry, gq = q0 + rq;
        int v = 0;
        if (periodic) {
            gy = wrap(gy, H);
            gq = wrap(gq, WQ);
            v = __ldg(reinterpret_cast<const int*>(pin + (long long)gy * W) + gq);
        } else if (gy >= 0 && gy < H && gq >= 0 && gq < WQ) {
            v = __ldg(reinterpret_cast<const int*>(pin + (long long)gy * W) + gq);
        }
        smem_words[t] = v;
    }
    // Philox uniforms of the quads of the largest (first) phase region, drawn once per sweep
    const int UQ = TWQ + 2 * (n_colors - 1) * HQ;
    const int UR = TH + 2 * (n_colors - 1) * Ry;
    if (!has_u) {
        for (int t = threadIdx.x; t < UR * UQ; t += blockDim.x) {
            int gy = y0 + t / UQ - (n_colors - 1) * Ry, gq = q0 + t % UQ - (n_colors - 1) * HQ;
            if (periodic) {
                gy = wrap(gy, H);
                gq = wrap(gq, WQ);
            } else if (gy < 0 || gy >= H || gq < 0 || gq >= WQ) {
                continue;
            }
            const uint4 w = philox4x32_10((unsigned long long)((plane * H + gy) * WQ + gq),
                                          PhiloxKey{c2, c3, k0, k1});
            su[4 * t] = uniform_from_word(w.x, 0.0f);
            su[4 * t + 1] = uniform_from_word(w.y, 0.0f);
            su[4 * t + 2] = uniform_from_word(w.z, 0.0f);
            su[4 * t + 3] = uniform_from_word(w.w, 0.0f);
        }
    }
    __syncthreads();

    for (int col = 0; col < n_colors; ++col) {
        const int E = n_colors - 1 - col;
        const int ry0 = -E * Ry, nrows = TH + 2 * E * Ry;
        const int rq0 = -E * HQ, nq = TWQ + 2 * E * HQ;
        for (int t = threadIdx.x; t < nrows * nq; t += blockDim.x) {
            const int ry = ry0 + t / nq, rq = rq0 + t % nq;
            int gy = y0 + ry, gq = q0 + rq;
            if (periodic) {
                gy = wrap(gy, H);
                gq = wrap(gq, WQ);
            } else if (gy < 0 || gy >= H || gq < 0 || gq >= WQ) {
                continue;
            }
            const int srow = (ry + SY) * SW;
            const int uq = ((ry + (n_colors - 1) * Ry) * UQ + rq + (n_colors - 1) * HQ) * 4;
            int colour0 = pn > 0 ? (pa * c + pb * gy + pd * 4 * gq) % pn : 0;
#pragma unroll
            for (int lane = 0; lane < 4; ++lane) {
                const int gx = 4 * gq + lane;
                const long long site = (long long)c * HW + (long long)gy * W + gx;
                int colour;
                if (pn > 0) {
                    colour = colour0;
                    colour0 += pd;
                    if (colour0 >= pn) colour0 -= pn;
                } else {
                    colour = (int)colors[site];
                }
                if (colour != col) continue;
                const int sx = 4 * (rq + SQ) + lane;
                T gamma = __ldg(h + (bias_batched ? chain + site : site));
                for (int k = 0; k < K; ++k) {
                    const int dy = __ldg(offs + 3 * k + 1), dx = __ldg(offs + 3 * k + 2);
                    const long long kN = (long long)k * N;
                    const T sf = (T)sm[srow + dy * SW + sx + dx];
                    const T sb = (T)sm[srow - dy * SW + sx - dx];
                    int by = gy - dy, bx = gx - dx;
                    bool bok = true;
                    if (periodic) {
                        by = wrap(by, H);
                        bx = wrap(bx, W);
                    } else {
                        bok = by >= 0 && by < H && bx >= 0 && bx < W;
                    }
                    gamma += __ldg(J + kN + site) * sf;  // 0 spin outside an open grid
                    if (bok) gamma += __ldg(J + kN + (long long)c * HW + (long long)by * W + bx) * sb;
                }
                const T p = (T)1 / ((T)1 + ag_exp(-two_beta * gamma));
                const T ue = has_u ? __ldg(u + chain + site) : (T)su[uq + lane];
                sm[srow + sx] = ue < p ? (signed char)1 : (signed char)-1;
            }
        }
        __syncthreads();
    }

    signed char* pout = s_out + plane * HW;
    for (int t = threadIdx.x; t < TH * TWQ; t += blockDim.x) {
        const int ry = t / TWQ, rq = t % TWQ;
        const int gy = y0 + ry, gq = q0 + rq;
        if (gy < H && gq < WQ)
            reinterpret_cast<int*>(pout + (long long)gy * W)[gq] = smem_words[(ry + SY) * SWQ + rq + SQ];
    }
}

}  // namespace arraygen
