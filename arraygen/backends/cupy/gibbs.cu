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

namespace arraygen {

// Compile-time stencil: the offsets (dy0, dx0, dy1, dx1, ...) are a template pack, so the
// neighbour loops unroll with constant shared-memory shifts.
template <int I, int... V>
struct PackAt;
template <int I, int F, int... R>
struct PackAt<I, F, R...> {
    static constexpr int value = PackAt<I - 1, R...>::value;
};
template <int F, int... R>
struct PackAt<0, F, R...> {
    static constexpr int value = F;
};

template <int... V>
__host__ __device__ constexpr int pack_max_abs(int parity) {
    constexpr int v[] = {V..., 0};
    int m = 0;
    for (int i = parity; i < (int)sizeof...(V); i += 2) {
        const int a = v[i] < 0 ? -v[i] : v[i];
        m = a > m ? a : m;
    }
    return m;
}

template <int V>
struct Int {
    static constexpr int value = V;
};

// f(Int<0>{}), ..., f(Int<N - 1>{})
template <int N, int I = 0, typename F>
__device__ __forceinline__ void static_for(F&& f) {
    if constexpr (I < N) {
        f(Int<I>{});
        static_for<N, I + 1>(f);
    }
}

__device__ __forceinline__ float ag_rcp(float x) { return __frcp_rn(x); }
__device__ __forceinline__ double ag_rcp(double x) { return __drcp_rn(x); }

// J * s for a spin s in {-1, 0, +1} (sign-extended int8) without a conversion: the sign of J is
// flipped when s < 0; s = 0 occurs only where J = 0 (outside an open grid)
__device__ __forceinline__ float times_spin(float j, int s) {
    return __int_as_float(__float_as_int(j) ^ (s & 0x80000000));
}
__device__ __forceinline__ double times_spin(double j, int s) {
    return __longlong_as_double(__double_as_longlong(j) ^ ((long long)(s & 0x80000000) << 32));
}

// gamma + sum over offsets k >= KI of J[k, i] s[i + o_k] + J[k, i - o_k] s[i - o_k], couplings
// read from global memory. A site of an open grid sees zero spins outside it (shared memory),
// and J[k, i] = 0 on the edges that leave it.
template <typename T, bool PERIODIC, int SWB, int KI, int... OFF>
__device__ __forceinline__ T field_global(T gamma, const signed char* sm, int si,
                                          const T* __restrict__ Jc, long long N, int site,
                                          int gy, int x, int H, int W) {
    if constexpr (2 * KI < (int)sizeof...(OFF)) {
        constexpr int dy = PackAt<2 * KI, OFF...>::value, dx = PackAt<2 * KI + 1, OFF...>::value;
        const T* __restrict__ Jk = Jc + KI * N;
        gamma += times_spin(__ldg(Jk + site), (int)sm[si + dy * SWB + dx]);
        const int by = gy - dy, bx = x - dx;
        if (PERIODIC) {
            gamma += times_spin(__ldg(Jk + wrap(by, H) * W + wrap(bx, W)),
                                (int)sm[si - dy * SWB - dx]);
        } else if (by >= 0 && by < H && bx >= 0 && bx < W) {
            gamma += times_spin(__ldg(Jk + by * W + bx), (int)sm[si - dy * SWB - dx]);
        }
        return field_global<T, PERIODIC, SWB, KI + 1, OFF...>(gamma, sm, si, Jc, N, site, gy, x,
                                                             H, W);
    } else {
        return gamma;
    }
}

// The same sum with the couplings staged in shared memory: js[((k SH + row) 4 + lane) SWQ + quad]
// holds J[k] at window row `row`, column 4 quad + lane (lane-major rows: the threads of a warp,
// on consecutive quads, read consecutive words). Zero outside an open grid.
template <typename T, int SH, int SWQ, int KI, int... OFF>
__device__ __forceinline__ T field_staged(T gamma, const signed char* sm, const T* js, int row,
                                          int quad, int lane) {
    if constexpr (2 * KI < (int)sizeof...(OFF)) {
        constexpr int dy = PackAt<2 * KI, OFF...>::value, dx = PackAt<2 * KI + 1, OFF...>::value;
        constexpr int SWB = 4 * SWQ;
        const T* jk = js + KI * SH * 4 * SWQ;
        const int bx = lane - dx;  // constant once the lane loop is unrolled
        const int si = row * SWB + 4 * quad + lane;
        gamma += times_spin(jk[(row * 4 + lane) * SWQ + quad], (int)sm[si + dy * SWB + dx]);
        gamma += times_spin(jk[((row - dy) * 4 + (bx & 3)) * SWQ + quad + (bx >> 2)],
                            (int)sm[si - dy * SWB - dx]);
                return field_staged<T, SH, SWQ, KI + 1, OFF...>(gamma, sm, js, row, quad, lane);
    } else {
        return gamma;
    }
}

// cp.async of `bytes` (4 or 8) from global to shared memory; bytes_read = 0 stores zeros
template <typename T, typename U>
__device__ __forceinline__ void copy_async(T* dst, const U* src, int bytes_read) {
    const unsigned int d = (unsigned int)__cvta_generic_to_shared(dst);
    if constexpr (sizeof(T) == 8) {
        asm volatile("cp.async.ca.shared.global [%0], [%1], 8, %2;\n" ::"r"(d), "l"(src),
                     "r"(bytes_read));
    } else {
        asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(d), "l"(src),
                     "r"(bytes_read));
    }
}

__device__ __forceinline__ void wait_async() { asm volatile("cp.async.wait_all;\n" ::: "memory"); }

template <typename T>
__device__ __forceinline__ void load4(const T* __restrict__ p, T (&out)[4]);
template <>
__device__ __forceinline__ void load4<float>(const float* __restrict__ p, float (&out)[4]) {
    const float4 v = __ldg(reinterpret_cast<const float4*>(p));
    out[0] = v.x; out[1] = v.y; out[2] = v.z; out[3] = v.w;
}
template <>
__device__ __forceinline__ void load4<double>(const double* __restrict__ p, double (&out)[4]) {
    const double2 a = __ldg(reinterpret_cast<const double2*>(p));
    const double2 b = __ldg(reinterpret_cast<const double2*>(p) + 1);
    out[0] = a.x; out[1] = a.y; out[2] = b.x; out[3] = b.y;
}

// One launch per sweep for plane-local stencils (every dc == 0) with a linear colouring
// colour = (pa c + PB y + PD x) mod NC and W % 4 == 0. Spins ping-pong s_in -> s_out.
//
// A block of 8 RWQ threads (RWQ = 32 or 64) owns a region of RH = 8 QPT rows x RWQ quads of one
// plane (b, c); thread t takes quad t % RWQ of rows t / RWQ + 8 j, so warps read whole rows. Shared
// memory holds the spins of the region plus one stencil radius around it (the window). Colour
// phase col updates the region's sites of colour col at least col radii from its edge: their
// neighbours of earlier colours were updated in this block by the phases before, those of later
// colours are still the sweep's inputs, and every update depends only on those and on the
// site's own uniform, so the block computes exactly what the owner of each site computes. The
// tile written out is the region less (NC - 1) radii on each side.
//
// STAGE 1 or 2: the window's couplings are copied to shared memory first, by vector loads (1) or
// asynchronous copies that overlap the Philox draws (2), so every value is read from global
// memory once per block; each quad's bias goes to registers. STAGE 0: each update reads them
// from global memory (cache hits for the backward couplings
// J[k, i - o_k], the forward couplings of neighbouring quads). Shared memory (dynamic):
// STAGE ? K SH SWQ 4 sizeof(T) : 0 bytes of couplings, then SH SWQ 4 bytes of spins.
template <int RWQ, int QPT, int... OFF>
__host__ __device__ constexpr int fused_window_sites() {
    return (8 * QPT + 2 * pack_max_abs<OFF...>(0)) * 4 *
           (RWQ + 2 * ((pack_max_abs<OFF...>(1) + 3) / 4));
}

// Blocks per SM the register budget is set for: 1024 threads when the staged couplings of a
// 256-thread block fit in 48 KB, else 512.
template <typename T, int STAGE, int RWQ, int QPT, int... OFF>
__host__ __device__ constexpr int fused_min_blocks() {
    return (STAGE && (int)(sizeof...(OFF) / 2 * sizeof(T)) * fused_window_sites<RWQ, QPT, OFF...>() <=
                         49152 * (RWQ / 32)
                ? 4 : 2) * 32 / RWQ;
}

template <typename T, bool PERIODIC, int NC, int PB, int PD, int RWQ, int QPT, int STAGE,
          int... OFF>
__global__ void __launch_bounds__(8 * RWQ, (fused_min_blocks<T, STAGE, RWQ, QPT, OFF...>()))
gibbs_sweep_fused(const signed char* __restrict__ s_in, signed char* __restrict__ s_out,
                  const T* __restrict__ J, const T* __restrict__ h, const T* __restrict__ u,
                  int has_u, int C, int H, int W, int pa, int tiles_y, int tiles_x,
                  int bias_batched, T two_beta, unsigned int c2, unsigned int c3,
                  unsigned int k0, unsigned int k1) {
    constexpr int K = (int)sizeof...(OFF) / 2;
    constexpr int RY = pack_max_abs<OFF...>(0);
    constexpr int RXQ = (pack_max_abs<OFF...>(1) + 3) / 4;
    constexpr int NT = 8 * RWQ, RH = 8 * QPT;
    constexpr int GY = (NC - 1) * RY, GQ = (NC - 1) * RXQ;
    constexpr int SWQ = RWQ + 2 * RXQ, SWB = 4 * SWQ, SH = RH + 2 * RY;
    constexpr int PLANE = SH * 4 * SWQ;  // elements of one staged (window) plane
    static_assert(RH > 2 * GY && RWQ > 2 * GQ, "the colour halo leaves no tile");
    extern __shared__ int smem_words[];
    T* js = reinterpret_cast<T*>(smem_words);  // K planes of couplings
    int* sm_words = reinterpret_cast<int*>(STAGE ? js + K * PLANE : js);
    signed char* sm = reinterpret_cast<signed char*>(sm_words);

    const int WQ = W >> 2;
    const int HW = H * W;
    const long long N = (long long)C * HW;
    const int tiles = tiles_y * tiles_x;
    const long long plane = blockIdx.x / tiles;  // b * C + c
    const int tile = (int)(blockIdx.x - plane * tiles);
    const int c = (int)(plane % C);
    const long long chain = (plane / C) * N;
    const int y_top = (tile / tiles_x) * (RH - 2 * GY) - GY - RY;  // global row of window row 0
    const int q_left = (tile % tiles_x) * (RWQ - 2 * GQ) - GQ - RXQ;
    const signed char* pin = s_in + plane * HW;
    const T* __restrict__ hp = h + (bias_batched ? chain : 0) + (long long)c * HW;
    const T* __restrict__ Jc = J + (long long)c * HW;
    const T* __restrict__ up = u + chain + (long long)c * HW;

#pragma unroll
    for (int t = threadIdx.x; t < SH * SWQ; t += NT) {
        const int row = t / SWQ, quad = t - row * SWQ;
        int gy = y_top + row, gq = q_left + quad;
        bool inside = true;
        if (PERIODIC) {
            gy = wrap(gy, H);
            gq = wrap(gq, WQ);
        } else {
            inside = gy >= 0 && gy < H && gq >= 0 && gq < WQ;
        }
        const int g = gy * W + 4 * gq;
        if constexpr (STAGE == 2) {
            // asynchronous copies (zero-filled outside an open grid) overlap the Philox below
            const int src = inside ? 4 : 0;
            copy_async(sm_words + t, pin + (inside ? g : 0), src);
#pragma unroll
            for (int k = 0; k < K; ++k) {
#pragma unroll
                for (int l = 0; l < 4; ++l)
                    copy_async(js + k * PLANE + (row * 4 + l) * SWQ + quad,
                               Jc + k * N + (inside ? g + l : 0), inside ? (int)sizeof(T) : 0);
            }
            continue;
        }
        sm_words[t] = inside ? __ldg(reinterpret_cast<const int*>(pin + g)) : 0;
        if constexpr (STAGE == 1) {
            T v[4] = {0, 0, 0, 0};
#pragma unroll
            for (int k = 0; k < K; ++k) {
                if (inside) load4<T>(Jc + k * N + g, v);
#pragma unroll
                for (int l = 0; l < 4; ++l) js[k * PLANE + (row * 4 + l) * SWQ + quad] = v[l];
            }
        }
    }

    const int lx = threadIdx.x % RWQ, ly = threadIdx.x / RWQ;
    const PhiloxKey key{c2, c3, k0, k1};
    int gq = q_left + RXQ + lx;
    bool qok = true;
    if (PERIODIC) gq = wrap(gq, WQ);
    else qok = gq >= 0 && gq < WQ;
    const int x0 = 4 * gq;
    // Small stencils keep each quad's Philox block in registers across the colour phases; large
    // ones would spill, so they loop over the quads and draw the block again in each phase.
    constexpr bool KEEP = STAGE || QPT * K < 8;
    uint4 words[KEEP ? QPT : 1];
    T hv[STAGE ? QPT : 1][4];
    if constexpr (KEEP) {
#pragma unroll
        for (int j = 0; j < QPT; ++j) {
            int gy = y_top + RY + ly + 8 * j;
            if (PERIODIC) gy = wrap(gy, H);
            words[j] = make_uint4(0u, 0u, 0u, 0u);
            if (!qok || !(PERIODIC || (gy >= 0 && gy < H))) continue;
            if constexpr (STAGE) load4<T>(hp + gy * W + x0, hv[j]);
            if (!has_u)
                words[j] = philox4x32_10((unsigned long long)((plane * H + gy) * WQ + gq), key);
        }
    }
    if constexpr (STAGE == 2) wait_async();
    __syncthreads();

    // With NC in {1, 2, 4} and PD odd, every quad holds 4 / NC sites of each colour, NC lanes
    // apart from lane l0, and l0 is the same for all of a thread's quads (rows 8 apart). A phase
    // then computes those sites with compile-time lanes and no branches (inactive quads too,
    // discarded) and stores after, so the updates of a thread's quads overlap.
    constexpr bool REGULAR = NC == 1 || ((NC == 2 || NC == 4) && PD % 2 == 1);
    constexpr int PER_QUAD = REGULAR ? 4 / NC : 1;
    const int quad = RXQ + lx;
    // the new spin of the site at window (row, quad, LANE), global row gy
    auto update = [&](auto lane_c, int j, int row, int gy, int x0u, uint4 w4) -> signed char {
        constexpr int LANE = decltype(lane_c)::value;
        const int x = x0u + LANE;
        const int site = gy * W + x;
        T gamma;
        if constexpr (STAGE) {
            gamma = field_staged<T, SH, SWQ, 0, OFF...>(hv[STAGE ? j : 0][LANE], sm, js, row,
                                                       quad, LANE);
        } else {
            gamma = field_global<T, PERIODIC, SWB, 0, OFF...>(
                __ldg(hp + site), sm, row * SWB + 4 * quad + LANE, Jc, N, site, gy, x, H, W);
        }
        const T p = ag_rcp((T)1 + ag_exp(-two_beta * gamma));  // = 1 / (1 + e), correctly rounded
        const unsigned int w = LANE == 0 ? w4.x : LANE == 1 ? w4.y : LANE == 2 ? w4.z : w4.w;
        const T ue = has_u ? __ldg(up + site) : (T)uniform_from_word(w, 0.0f);
        return ue < p ? (signed char)1 : (signed char)-1;
    };

#pragma unroll 1
    for (int col = 0; col < NC; ++col) {
        const bool xin = lx >= col * RXQ && lx < RWQ - col * RXQ;
        auto phase = [&](auto l0_c) {
            constexpr int L0 = decltype(l0_c)::value;
            signed char fresh[REGULAR ? QPT : 1][PER_QUAD];
            int where[REGULAR ? QPT : 1];  // window byte of the quad's lane L0, or -1
#pragma unroll(KEEP ? QPT : 1)
            for (int j = 0; j < QPT; ++j) {
                const int r = ly + 8 * j;
                int gy = y_top + RY + r;
                if (PERIODIC) gy = wrap(gy, H);
                const bool active = qok && xin && r >= col * RY && r < RH - col * RY &&
                                    (PERIODIC || (gy >= 0 && gy < H));
                if (!REGULAR && !active) continue;
                if (!active) gy = 0;  // in range for the discarded global reads
                const int x0u = active ? x0 : 0;
                uint4 w4 = make_uint4(0u, 0u, 0u, 0u);
                if constexpr (KEEP) w4 = words[j];
                else if (!has_u)
                    w4 = philox4x32_10((unsigned long long)((plane * H + gy) * WQ + gq), key);
                const int row = RY + r;
                if constexpr (REGULAR) {
                    where[j] = active ? row * SWB + 4 * quad + L0 : -1;
                    static_for<PER_QUAD>([&](auto m) {
                        fresh[j][m.value] = update(Int<L0 + NC * decltype(m)::value>{}, j, row,
                                                   gy, x0u, w4);
                    });
                } else {
                    const int colour0 = (pa * c + PB * gy + PD * x0u) % NC;
                    static_for<4>([&](auto lane) {
                        if ((colour0 + PD * decltype(lane)::value) % NC == col)
                            sm[row * SWB + 4 * quad + decltype(lane)::value] =
                                update(lane, j, row, gy, x0u, w4);
                    });
                }
            }
            if constexpr (REGULAR) {
#pragma unroll(KEEP ? QPT : 1)
                for (int j = 0; j < QPT; ++j) {
                    if (where[j] < 0) continue;
#pragma unroll
                    for (int m = 0; m < PER_QUAD; ++m) sm[where[j] + NC * m] = fresh[j][m];
                }
            }
        };
        if constexpr (REGULAR) {
            // colour of lane 0 of this thread's quads: (pa c + PB y + PD x0) mod NC, 4 | x0 and
            // NC | 8, so it does not depend on the quad's column or on j
            const int base = ((pa * c + PB * (y_top + RY + ly)) % NC + NC) % NC;
            const int l0 = ((col - base + NC) * PD) % NC;
            if (l0 == 0) phase(Int<0>{});
            else if constexpr (NC > 1) {
                if (l0 == 1) phase(Int<1 % NC>{});
                else if constexpr (NC > 2) {
                    if (l0 == 2) phase(Int<2 % NC>{});
                    else phase(Int<3 % NC>{});
                }
            }
        } else {
            phase(Int<0>{});
        }
        __syncthreads();
    }

    signed char* pout = s_out + plane * HW;
    if (lx < GQ || lx >= RWQ - GQ) return;
    const int oq = q_left + RXQ + lx;
#pragma unroll
    for (int j = 0; j < QPT; ++j) {
        const int r = ly + 8 * j;
        const int oy = y_top + RY + r;
        if (r >= GY && r < RH - GY && oy < H && oq < WQ)
            reinterpret_cast<int*>(pout + oy * W)[oq] = sm_words[(RY + r) * SWQ + RXQ + lx];
    }
}

}  // namespace arraygen
