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

// The plane (b, c) that a block of a one-launch-per-sweep kernel works on, per_plane blocks
// each: plane = b C + c, the block's index in the plane, and chain = b C H W (N = C H W).
struct BlockPlane {
    long long plane, chain;
    int c, index;
};
__device__ __forceinline__ BlockPlane block_plane(int per_plane, int C, long long N) {
    BlockPlane p;
    p.plane = blockIdx.x / per_plane;
    p.index = (int)(blockIdx.x - p.plane * per_plane);
    p.c = (int)(p.plane % C);
    p.chain = (p.plane / C) * N;
    return p;
}

// REGULAR colourings (NC in {1, 2, 4}, PD odd): the first lane of colour col in the quads of
// global row y, colour = (pa c + PB y + PD x) mod NC with 4 | x (PD is its own inverse mod NC)
template <int NC, int PB, int PD>
__device__ __forceinline__ int first_lane(int col, int pa_c, int y) {
    const int v = (col - pa_c - PB * y) * PD;
    if constexpr ((NC & (NC - 1)) == 0) return (int)((unsigned)v & (NC - 1));  // y may be < 0
    else return (v % NC + NC) % NC;
}

// f(Int<l0>{}) for a run-time lane l0 < NC, NC in {1, 2, 4}
template <int NC, typename F>
__device__ __forceinline__ void with_lane(int l0, F&& f) {
    if (l0 == 0) f(Int<0>{});
    else if constexpr (NC > 1) {
        if (l0 == 1) f(Int<1 % NC>{});
        else if constexpr (NC > 2) {
            if (l0 == 2) f(Int<2 % NC>{});
            else f(Int<3 % NC>{});
        }
    }
}

// 1 / x for x >= 1 (x = 1 + e in the heat-bath probability), branch-free so that the updates of
// a phase overlap. float: for x < 2^126 the approximate reciprocal and one Newton step, the fast
// path ptxas emits for __frcp_rn (correctly rounded); above, 0: 1 / x < 2^-126 lies below every
// uniform ((w >> 9) + 0.5) 2^-23, so u < p decides the same.
__device__ __forceinline__ float ag_rcp(float x) {
    float r;
    asm("rcp.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(x));
    r = fmaf(r, -fmaf(x, r, -1.0f), r);
    return x < 0x1p126f ? r : 0.0f;
}
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

// The same sum with the couplings staged in shared memory: js[((k PLANE_ROWS + slot) 4 + lane) SWQ
// + quad] holds J[k] at the window row kept in `slot`, column 4 quad + lane (lane-major rows: the
// threads of a warp, on consecutive quads, read consecutive words), the spins are at
// sm[slot 4 SWQ + 4 quad + lane]. at[RY + dy] = 4 SWQ x (the slot of the site's row + dy), in a
// window of consecutive rows or a rolling ring of them: the offset of that row in both arrays
// (in elements of js, in bytes of sm). Zero outside an open grid.
template <typename T, int PLANE_ROWS, int SWQ, int RY, int KI, int... OFF>
__device__ __forceinline__ T field_staged(T gamma, const signed char* sm, const T* js,
                                          const int* at, int quad, int lane) {
    if constexpr (2 * KI < (int)sizeof...(OFF)) {
        constexpr int dy = PackAt<2 * KI, OFF...>::value, dx = PackAt<2 * KI + 1, OFF...>::value;
        const T* jk = js + KI * PLANE_ROWS * 4 * SWQ;
        const int bx = lane - dx;  // constant once the lane loop is unrolled
        const int fwd = at[RY + dy], here = at[RY], back = at[RY - dy];
        gamma += times_spin(jk[here + lane * SWQ + quad], (int)sm[fwd + 4 * quad + lane + dx]);
        gamma += times_spin(jk[back + (bx & 3) * SWQ + quad + (bx >> 2)],
                            (int)sm[back + 4 * quad + lane - dx]);
        return field_staged<T, PLANE_ROWS, SWQ, RY, KI + 1, OFF...>(gamma, sm, js, at, quad,
                                                                   lane);
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
// colour = (pa c + PB y + PD x) mod NC and W % 4 == 0. Spins ping-pong s_in -> s_out. HAS_U: the
// uniforms are read from u (injected), else drawn from the Philox stream keyed by (c2, c3, k0, k1).
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

template <typename T, bool PERIODIC, bool HAS_U, int NC, int PB, int PD, int RWQ, int QPT,
          int STAGE, int... OFF>
__global__ void __launch_bounds__(8 * RWQ, (fused_min_blocks<T, STAGE, RWQ, QPT, OFF...>()))
gibbs_sweep_fused(const signed char* __restrict__ s_in, signed char* __restrict__ s_out,
                  const T* __restrict__ J, const T* __restrict__ h, const T* __restrict__ u,
                  int C, int H, int W, int pa, int tiles_y, int tiles_x,
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
    const BlockPlane bp = block_plane(tiles_y * tiles_x, C, N);
    const long long plane = bp.plane, chain = bp.chain;
    const int c = bp.c, tile = bp.index;
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
            if constexpr (!HAS_U)
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
        [[maybe_unused]] const int site = gy * W + x;
        T gamma;
        if constexpr (STAGE) {
            int at[2 * RY + 1];
#pragma unroll
            for (int i = 0; i <= 2 * RY; ++i) at[i] = (row - RY + i) * SWB;
            gamma = field_staged<T, SH, SWQ, RY, 0, OFF...>(hv[STAGE ? j : 0][LANE], sm, js, at,
                                                           quad, LANE);
        } else {
            gamma = field_global<T, PERIODIC, SWB, 0, OFF...>(
                __ldg(hp + site), sm, row * SWB + 4 * quad + LANE, Jc, N, site, gy, x, H, W);
        }
        const T p = ag_rcp((T)1 + ag_exp(-two_beta * gamma));  // = 1 / (1 + e), correctly rounded
        T ue;
        if constexpr (HAS_U) {
            ue = __ldg(up + site);
        } else {
            const unsigned int w = LANE == 0 ? w4.x : LANE == 1 ? w4.y : LANE == 2 ? w4.z : w4.w;
            ue = (T)uniform_from_word(w, 0.0f);
        }
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
                else if constexpr (!HAS_U)
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
            // the same for all of this thread's quads (rows 8 apart, NC | 8)
            with_lane<NC>(first_lane<NC, PB, PD>(col, pa * c, y_top + RY + ly), phase);
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


// Row counts of the rolling window of gibbs_sweep_stream (the launcher in gibbs.py mirrors them).
// Colour phase p runs LAG = RY rows behind phase p - 1. At a step whose phase-0 band starts at row
// b, the rows read are [b - BELOW, b + ABOVE); RB more rows are fetched for the next step meanwhile.
template <int NC, int RB, int... OFF>
struct StreamRows {
    static constexpr int RY = pack_max_abs<OFF...>(0);
    static constexpr int LAG = RY;
    static constexpr int BELOW = (NC - 1) * LAG + RY;
    static constexpr int ABOVE = RB + RY;
    static constexpr int RING = BELOW + ABOVE + RB;      // rows of spins and couplings kept
    static constexpr int WORD_ROWS = (NC - 1) * LAG + RB;  // rows of Philox blocks kept
};

// A grid row that moves down by D rows a step: r, and the row read for it (wrapped into a
// periodic grid, clamped into an open one: an open grid's rows outside it are read, not used).
// advance takes d = D mod H.
template <bool PERIODIC, int D>
struct RowCursor {
    int r, gy;
    __device__ __forceinline__ void start(int row, int H) {
        r = row;
        gy = PERIODIC ? wrap(row, H) : min(max(row, 0), H - 1);
    }
    __device__ __forceinline__ void advance(int H, int d) {
        r += D;
        if (PERIODIC) {
            gy += d;
            gy = gy >= H ? gy - H : gy;
        } else {
            gy = min(max(r, 0), H - 1);
        }
    }
};

// (v + D) mod N for 0 <= v < N, 0 <= D < N
template <int D, int N>
__device__ __forceinline__ int add_mod(int v) {
    v += D;
    return v >= N ? v - N : v;
}

// The rows of strip `strip` of plane `plane` from y0 to y0 + rows_out.
//
// A block of (RB / QY) x (RWQ / QX) threads takes the strip's RWQ quads (its tile,
// RWQ - 2 (NC - 1) RXQ quads, plus the colour halo in x) and walks the rows in steps of RB
// rows: at each step colour phase p updates, in shared memory, the sites of colour p in the
// band of RB rows that starts p LAG rows above phase 0's band (each thread takes QY x QX quads
// of it), with a barrier between phases. A site's neighbours of earlier colours lie at most RY
// rows away, so they were updated in an earlier step or phase; those of later colours are
// still the sweep's inputs, since those phases run LAG >= RY rows behind. Phase p covers the
// rows grown by (NC - 1 - p) RY rows and RXQ quads on each side (the colour halo), so the
// tile's sites end exact, as in gibbs_sweep_fused. Each row's spins, couplings and Philox
// blocks are kept in rings in shared memory from the step that first reads them to the last,
// fetched one step ahead (by 16-byte loads into registers, stored to the ring a phase later):
// every coupling is read from global memory once per block, and the segment's rows only once.
//
// Shared memory (dynamic, bytes): K RING 4 SWQ sizeof(T) of couplings (lane-major, as
// field_staged reads them), WORD_ROWS 4 RWQ 4 of Philox words, RING SWQ 4 of spins.
template <typename T, bool PERIODIC, bool HAS_U, int NC, int PB, int PD, int RWQ, int RB, int QX,
          int QY, int... OFF>
__device__ __forceinline__ void stream_segment(
    const signed char* __restrict__ s_in, signed char* __restrict__ s_out,
    const T* __restrict__ J, const T* __restrict__ h, const T* __restrict__ u, int C,
    int H, int W, int pa, long long plane, int strip, int y0, int rows_out, int bias_batched,
    T two_beta, const PhiloxKey key) {
    using Rows = StreamRows<NC, RB, OFF...>;
    constexpr int K = (int)sizeof...(OFF) / 2;
    constexpr int RY = Rows::RY, LAG = Rows::LAG, RING = Rows::RING;
    constexpr int BELOW = Rows::BELOW, ABOVE = Rows::ABOVE, WORD_ROWS = Rows::WORD_ROWS;
    constexpr int RXQ = (pack_max_abs<OFF...>(1) + 3) / 4;
    constexpr int TX = RWQ / QX, TY = RB / QY, NT = TX * TY;  // threads per row, rows, all
    constexpr int GY = (NC - 1) * RY, GQ = (NC - 1) * RXQ;
    static_assert(TX * QX == RWQ && TY * QY == RB, "QX | RWQ and QY | RB");
    constexpr int SWQ = RWQ + 2 * RXQ, SWB = 4 * SWQ, PLANE = RING * 4 * SWQ;
    static_assert(RWQ > 2 * GQ, "the colour halo leaves no tile");
    extern __shared__ int smem_words[];
    T* js = reinterpret_cast<T*>(smem_words);                                 // K planes
    unsigned int* ws = reinterpret_cast<unsigned int*>(js + K * PLANE);     // Philox words
    int* sm_words = reinterpret_cast<int*>(ws + WORD_ROWS * 4 * RWQ);        // spins
    signed char* sm = reinterpret_cast<signed char*>(sm_words);

    const int WQ = W >> 2;
    const int HW = H * W;
    const long long N = (long long)C * HW;
    const int c = (int)(plane % C);
    const long long chain = (plane / C) * N;
    const int top = y0 - GY;              // first row of colour phase 0
    const int origin = top - BELOW;       // the ring's row 0: no row read lies above it
    const int q_left = strip * (RWQ - 2 * GQ) - GQ - RXQ;  // global quad of window quad 0
    // offsets within a plane are 32-bit unsigned (the launcher compiles this kernel for
    // C H W < 2^31), which saves their sign extensions in the step's addresses
    const signed char* pin = s_in + plane * HW;
    signed char* pout = s_out + plane * HW;
    const unsigned long long first_block = (unsigned long long)plane * H * WQ;  // Philox counter
    const int rb_mod_h = RB % H;
    const T* __restrict__ hp = h + (bias_batched ? chain : 0) + (long long)c * HW;
    const T* __restrict__ Jc = J + (long long)c * HW;
    const T* __restrict__ up = u + chain + (long long)c * HW;

    // the window column of window quad `quad`: grid quad (wrapped) and whether it is inside
    auto column = [&](int quad, int& gq) {
        gq = q_left + quad;
        if (PERIODIC) {
            gq = wrap(gq, WQ);
            return true;
        }
        return gq >= 0 && gq < WQ;
    };
    // the first BELOW + ABOVE rows, before the first step, by asynchronous copies to their
    // ring slots (zero-filled outside an open grid)
    for (int t = threadIdx.x; t < (BELOW + ABOVE) * SWQ; t += NT) {
        const int i = t / SWQ, quad = t - i * SWQ, r = origin + i;
        int gq;
        const bool inside = column(quad, gq) && (PERIODIC || (r >= 0 && r < H));
        const int g = inside ? (PERIODIC ? wrap(r, H) : r) * W + 4 * gq : 0;
        const int bytes = inside ? (int)sizeof(T) : 0;
        copy_async(sm_words + i * SWQ + quad, pin + g, inside ? 4 : 0);
        const T* src = Jc + g;
#pragma unroll
        for (int k = 0; k < K; ++k) {
#pragma unroll
            for (int l = 0; l < 4; ++l)
                copy_async(js + k * PLANE + i * SWB + l * SWQ + quad, src + l, bytes);
            src += N;
        }
    }

    // thread (lx, ly) takes, in each phase, the QY x QX quads (row ly + TY yj of the band,
    // window quad RXQ + lx + TX xj): independent updates that overlap
    const int lx = threadIdx.x % TX, ly = threadIdx.x / TX;
    int gqs[QX];
    bool qoks[QX];
#pragma unroll
    for (int xj = 0; xj < QX; ++xj) {
        qoks[xj] = column(RXQ + lx + TX * xj, gqs[xj]);
        if (!PERIODIC) gqs[xj] = min(max(gqs[xj], 0), WQ - 1);  // in range, read if off
    }
    // Each step fetches the rows [b + ABOVE, b + ABOVE + RB) of the next, by 16-byte loads
    // into registers (a quad's 4 couplings of one offset, or its 4 spins: a unit) and stores
    // to the ring after a phase: the loads of group g of units are issued at the start of
    // phase g and stored at the start of phase g + 1, so their latency hides behind a phase.
    // Unit 0 is the spins, unit 1 + k the couplings of offset k. This thread fetches the quads
    // it updates, of rows ly + TY yj, and its share of the units of the 2 RXQ halo quads of
    // each row (in group 0).
    constexpr int UNITS = K + 1, GROUPS = NC > 1 ? NC - 1 : 1;
    constexpr int PER_GROUP = (UNITS + GROUPS - 1) / GROUPS;
    // The halo units are shared out evenly over the warps (PER_WARP each), so that every warp
    // reaches the barriers with the same work: lane l of warp w takes units
    // w PER_WARP + l + WARP it, l + WARP it < PER_WARP.
    constexpr int HALO = RB * 2 * RXQ * UNITS, WARP = NT < 32 ? NT : 32, WARPS = NT / WARP;
    constexpr int PER_WARP = (HALO + WARPS - 1) / WARPS, HALO_IT = (PER_WARP + WARP - 1) / WARP;
    constexpr int HI = HALO_IT > 0 ? HALO_IT : 1;
    const int halo_lane = threadIdx.x % WARP;
    const int halo_first = threadIdx.x / WARP * PER_WARP + halo_lane;
    // whether this thread has a halo unit in iteration it
    auto halo_active = [&](int it) {
        return halo_lane + WARP * it < PER_WARP && halo_first + WARP * it < HALO;
    };
    RowCursor<PERIODIC, RB> fetch_row[QY], halo_row[HI];
    int fetch_slot[QY], halo_slot[HI], halo_quad[HI], halo_col[HI];
    bool halo_on[HI];
    const T* halo_src[HI];
#pragma unroll
    for (int yj = 0; yj < QY; ++yj) {
        fetch_slot[yj] = BELOW + ABOVE + ly + TY * yj;
        fetch_row[yj].start(origin + fetch_slot[yj], H);
    }
#pragma unroll
    for (int it = 0; it < HALO_IT; ++it) {
        constexpr int HW2 = RXQ > 0 ? 2 * RXQ : 1;  // (no halo when RXQ = 0: no iteration)
        const int v = halo_first + WARP * it, item = v / UNITS, unit = v - item * UNITS;
        const int i = item / HW2, hq = item - i * HW2;
        int gq;
        const int quad = hq < RXQ ? hq : RWQ + hq;
        halo_quad[it] = quad + (unit == 0 ? 0 : (unit - 1) * PLANE);  // + the plane's offset
        halo_on[it] = column(quad, gq) && halo_active(it);
        halo_col[it] = 4 * gq;
        halo_src[it] = unit == 0 ? nullptr : Jc + (unit - 1) * N;
        halo_slot[it] = BELOW + ABOVE + i;
        halo_row[it].start(origin + halo_slot[it], H);
    }
    T unit_regs[QY][QX][PER_GROUP][4], halo_regs[HI][4];
    int spin_regs[QY][QX], halo_spins[HI];
    auto fetch_load = [&](auto g_c) {
        constexpr int G = decltype(g_c)::value;
#pragma unroll
        for (int yj = 0; yj < QY; ++yj) {
            const RowCursor<PERIODIC, RB>& f = fetch_row[yj];
            const bool row_in = PERIODIC || (f.r >= 0 && f.r < H);
#pragma unroll
            for (int xj = 0; xj < QX; ++xj) {
                const bool inside = row_in && qoks[xj];
                const unsigned g = f.gy * W + 4 * gqs[xj];
                const T* quad_j = Jc + g;  // offset k's couplings at quad_j + k N
                static_for<PER_GROUP>([&](auto m_c) {
                    constexpr int M = decltype(m_c)::value, U = G * PER_GROUP + M;
                    if constexpr (U == 0) {
                        spin_regs[yj][xj] =
                            inside ? __ldg(reinterpret_cast<const int*>(pin + g)) : 0;
                    } else if constexpr (U < UNITS) {
                        T* v = unit_regs[yj][xj][M];
                        if (inside) load4<T>(quad_j + (U - 1) * N, unit_regs[yj][xj][M]);
                        else v[0] = v[1] = v[2] = v[3] = (T)0;
                    }
                });
            }
        }
        if constexpr (G == 0) {
#pragma unroll
            for (int it = 0; it < HALO_IT; ++it) {
                const RowCursor<PERIODIC, RB>& f = halo_row[it];
                const bool inside = halo_on[it] && (PERIODIC || (f.r >= 0 && f.r < H));
                const unsigned g = f.gy * W + halo_col[it];
                T* v = halo_regs[it];
                v[0] = v[1] = v[2] = v[3] = (T)0;
                halo_spins[it] = 0;
                if (inside && halo_src[it] == nullptr)
                    halo_spins[it] = __ldg(reinterpret_cast<const int*>(pin + g));
                else if (inside)
                    load4<T>(halo_src[it] + g, halo_regs[it]);
            }
        }
    };
    auto fetch_store = [&](auto g_c) {
        constexpr int G = decltype(g_c)::value;
#pragma unroll
        for (int yj = 0; yj < QY; ++yj) {
#pragma unroll
            for (int xj = 0; xj < QX; ++xj) {
                const int quad = RXQ + lx + TX * xj;
                static_for<PER_GROUP>([&](auto m_c) {
                    constexpr int M = decltype(m_c)::value, U = G * PER_GROUP + M;
                    if constexpr (U == 0) {
                        sm_words[fetch_slot[yj] * SWQ + quad] = spin_regs[yj][xj];
                    } else if constexpr (U < UNITS) {
                        T* dst = js + (U - 1) * PLANE + fetch_slot[yj] * SWB + quad;
#pragma unroll
                        for (int l = 0; l < 4; ++l) dst[l * SWQ] = unit_regs[yj][xj][M][l];
                    }
                });
            }
        }
        if constexpr (G == 0) {
#pragma unroll
            for (int it = 0; it < HALO_IT; ++it) {
                if (halo_active(it)) {
                    if (halo_src[it] == nullptr) {
                        sm_words[halo_slot[it] * SWQ + halo_quad[it]] = halo_spins[it];
                    } else {
                        T* dst = js + halo_slot[it] * SWB + halo_quad[it];
#pragma unroll
                        for (int l = 0; l < 4; ++l) dst[l * SWQ] = halo_regs[it][l];
                    }
                }
            }
        }
        if constexpr (G == GROUPS - 1) {  // the rows of the step after
#pragma unroll
            for (int yj = 0; yj < QY; ++yj) {
                fetch_slot[yj] = add_mod<RB % RING, RING>(fetch_slot[yj]);
                fetch_row[yj].advance(H, rb_mod_h);
            }
#pragma unroll
            for (int it = 0; it < HALO_IT; ++it) {
                halo_slot[it] = add_mod<RB % RING, RING>(halo_slot[it]);
                halo_row[it].advance(H, rb_mod_h);
            }
        }
    };
    wait_async();
    __syncthreads();

    // see gibbs_sweep_fused: with NC in {1, 2, 4} and PD odd, the sites of one colour in a quad
    // are NC lanes apart from a lane l0 that depends on the row only (the same for a thread's
    // rows, TY apart, when NC | PB TY)
    constexpr bool REGULAR =
        (NC == 1 || ((NC == 2 || NC == 4) && PD % 2 == 1)) && (QY == 1 || (PB * TY) % NC == 0);
    constexpr int PER_QUAD = REGULAR ? 4 / NC : 1;
    const int steps = (rows_out + 2 * GY + RB - 1) / RB;
    // the rows of this thread's quads in each phase's band at the next step
    RowCursor<PERIODIC, RB> next_row[NC][QY];
#pragma unroll
    for (int p = 0; p < NC; ++p)
#pragma unroll
        for (int yj = 0; yj < QY; ++yj) next_row[p][yj].start(top - p * LAG + ly + TY * yj, H);
    // the bias of the sites this thread updates in each phase (REGULAR: lanes l0 + NC m, else
    // all 4), loaded one step ahead: a global load at the head of each update's sum would stall
    // every phase
    constexpr int BL = REGULAR ? PER_QUAD : 4;
    T bias[NC][QY][QX][BL], bias_next[NC][QY][QX][BL];
    auto load_bias = [&]() {
        static_for<NC>([&](auto p_c) {
            constexpr int P = decltype(p_c)::value;
#pragma unroll
            for (int yj = 0; yj < QY; ++yj) {
                const int gy = next_row[P][yj].gy;
                [[maybe_unused]] const int l0 = REGULAR ? first_lane<NC, PB, PD>(P, pa * c, gy) : 0;
#pragma unroll
                for (int xj = 0; xj < QX; ++xj) {
                    const T* hq = hp + (unsigned)(gy * W + 4 * gqs[xj]);
                    if constexpr (REGULAR) {
#pragma unroll
                        for (int m = 0; m < BL; ++m)
                            bias_next[P][yj][xj][m] = __ldg(hq + l0 + NC * m);
                    } else {
                        load4<T>(hq, bias_next[P][yj][xj]);
                    }
                }
            }
        });
    };
    load_bias();

    // ring offsets (4 SWQ slot) of the rows ly + TY yj - (NC - 1) LAG - RY + i of each step's
    // band, i < ROWS: the rows every phase's sites and neighbours lie in; and the offsets of the
    // rows of each phase in the ring of Philox words. Both advance by RB rows a step.
    constexpr int ROWS = (NC - 1) * LAG + 2 * RY + 1;
    int at[QY][ROWS], word_at[QY][NC];
#pragma unroll
    for (int yj = 0; yj < QY; ++yj) {
#pragma unroll
        for (int i = 0; i < ROWS; ++i) at[yj][i] = (ly + TY * yj + i) % RING * SWB;
#pragma unroll
        for (int p = 0; p < NC; ++p)
            word_at[yj][p] = (BELOW + ly + TY * yj - p * LAG) % WORD_ROWS * 4 * RWQ;
    }

#pragma unroll 1
    for (int step = 0; step < steps; ++step) {
        if (step > 0) {
#pragma unroll
            for (int yj = 0; yj < QY; ++yj) {
#pragma unroll
                for (int i = 0; i < ROWS; ++i)
                    at[yj][i] = add_mod<RB % RING * SWB, RING * SWB>(at[yj][i]);
#pragma unroll
                for (int p = 0; p < NC; ++p)
                    word_at[yj][p] =
                        add_mod<RB % WORD_ROWS * 4 * RWQ, WORD_ROWS * 4 * RWQ>(word_at[yj][p]);
            }
        }
        RowCursor<PERIODIC, RB> row[NC][QY];
#pragma unroll
        for (int p = 0; p < NC; ++p)
#pragma unroll
            for (int yj = 0; yj < QY; ++yj) {
                row[p][yj] = next_row[p][yj];
                next_row[p][yj].advance(H, rb_mod_h);
#pragma unroll
                for (int xj = 0; xj < QX; ++xj)
#pragma unroll
                    for (int l = 0; l < BL; ++l) bias[p][yj][xj][l] = bias_next[p][yj][xj][l];
            }
        const bool fetching = step + 1 < steps;
        if (fetching) load_bias();
        static_for<NC>([&](auto p_c) {
            constexpr int P = decltype(p_c)::value;
            if (fetching) {
                if constexpr (P >= 1 && P - 1 < GROUPS) fetch_store(Int<P - 1>{});
                if constexpr (P < GROUPS) fetch_load(Int<P>{});
            }
            // rows of this thread's quads: global row, ring offsets of rows r - RY .. r + RY
            constexpr int FIRST = (NC - 1 - P) * LAG;  // of row r - RY in `at`
            bool row_on[QY];
#pragma unroll
            for (int yj = 0; yj < QY; ++yj) {
                const int r = row[P][yj].r;
                row_on[yj] = r >= y0 - (NC - 1 - P) * RY &&
                             r < y0 + rows_out + (NC - 1 - P) * RY && (PERIODIC || (r >= 0 && r < H));
            }
            auto on = [&](int yj, int xj) {
                const int lq = lx + TX * xj;
                return row_on[yj] && qoks[xj] && lq >= P * RXQ && lq < RWQ - P * RXQ;
            };
            // Philox blocks: drawn by phase 0, kept in the ring for the later phases
            uint4 w4[QY][QX];
#pragma unroll
            for (int yj = 0; yj < QY; ++yj) {
#pragma unroll
                for (int xj = 0; xj < QX; ++xj) {
                    w4[yj][xj] = make_uint4(0u, 0u, 0u, 0u);
                    if (P != 0 || HAS_U) continue;
                    w4[yj][xj] = philox4x32_10(
                        first_block + (unsigned)(row[P][yj].gy * WQ + gqs[xj]), key);
                    if (NC > 1 && on(yj, xj)) {
                        unsigned int* wq = ws + word_at[yj][P] + lx + TX * xj;
                        wq[0] = w4[yj][xj].x;
                        wq[RWQ] = w4[yj][xj].y;
                        wq[2 * RWQ] = w4[yj][xj].z;
                        wq[3 * RWQ] = w4[yj][xj].w;
                    }
                }
            }
            // the new spin of lane LANE of quad (yj, xj)
            auto update = [&](auto lane_c, int yj, int xj) -> signed char {
                constexpr int LANE = decltype(lane_c)::value;
                const int quad = RXQ + lx + TX * xj;
                const T hb = bias[P][yj][xj][REGULAR ? LANE / NC : LANE];
                const T gamma = field_staged<T, RING, SWQ, RY, 0, OFF...>(hb, sm, js, at[yj] + FIRST,
                                                                          quad, LANE);
                const T p = ag_rcp((T)1 + ag_exp(-two_beta * gamma));
                T ue;
                if constexpr (HAS_U) {
                    ue = __ldg(up + row[P][yj].gy * W + 4 * gqs[xj] + LANE);
                } else {
                    const uint4 wv = w4[yj][xj];
                    const unsigned int w =
                        P == 0 ? (LANE == 0 ? wv.x : LANE == 1 ? wv.y : LANE == 2 ? wv.z : wv.w)
                               : ws[word_at[yj][P] + LANE * RWQ + lx + TX * xj];
                    ue = (T)uniform_from_word(w, 0.0f);
                }
                return ue < p ? (signed char)1 : (signed char)-1;
            };
            if constexpr (REGULAR) {
                // every quad, on or not (discarded), with compile-time lanes; stores after, so
                // the updates overlap
                auto phase = [&](auto l0_c) {
                    constexpr int L0 = decltype(l0_c)::value;
                    signed char fresh[QY][QX][PER_QUAD];
#pragma unroll
                    for (int yj = 0; yj < QY; ++yj)
#pragma unroll
                        for (int xj = 0; xj < QX; ++xj)
                            static_for<PER_QUAD>([&](auto m) {
                                fresh[yj][xj][m.value] =
                                    update(Int<L0 + NC * decltype(m)::value>{}, yj, xj);
                            });
#pragma unroll
                    for (int yj = 0; yj < QY; ++yj)
#pragma unroll
                        for (int xj = 0; xj < QX; ++xj) {
                            if (!on(yj, xj)) continue;
                            const int to = at[yj][FIRST + RY] + 4 * (RXQ + lx + TX * xj) + L0;
#pragma unroll
                            for (int m = 0; m < PER_QUAD; ++m) sm[to + NC * m] = fresh[yj][xj][m];
                        }
                };
                // the colour of the band's row itself (an open grid's rows outside it too)
                with_lane<NC>(first_lane<NC, PB, PD>(P, pa * c, PERIODIC ? row[P][0].gy : row[P][0].r),
                              phase);
            } else {
#pragma unroll
                for (int yj = 0; yj < QY; ++yj)
#pragma unroll
                    for (int xj = 0; xj < QX; ++xj) {
                        if (!on(yj, xj)) continue;
                        const int colour0 = (pa * c + PB * row[P][yj].gy + PD * 4 * gqs[xj]) % NC;
                        const int to = at[yj][FIRST + RY] + 4 * (RXQ + lx + TX * xj);
                        static_for<4>([&](auto lane) {
                            if ((colour0 + PD * decltype(lane)::value) % NC == P)
                                sm[to + decltype(lane)::value] = update(lane, yj, xj);
                        });
                    }
            }
            if constexpr (P == NC - 1) {
                // the last phase completes the quad (its earlier colours were set by earlier
                // phases, behind barriers; its own by this thread): write the tile's quads;
                // unwrapped columns, so a periodic grid's last strip does not write the first's
#pragma unroll
                for (int yj = 0; yj < QY; ++yj)
#pragma unroll
                    for (int xj = 0; xj < QX; ++xj) {
                        const int lq = lx + TX * xj;
                        if (on(yj, xj) && lq >= GQ && lq < RWQ - GQ && q_left + RXQ + lq < WQ)
                            reinterpret_cast<int*>(pout)[(unsigned)(row[P][yj].gy * WQ + gqs[xj])] =
                                sm_words[at[yj][FIRST + RY] / 4 + RXQ + lq];
                    }
            } else {
                __syncthreads();
            }
        });
        if constexpr (NC == GROUPS) {  // one phase: its loads are stored after it
            if (fetching) fetch_store(Int<0>{});
        }
        __syncthreads();
    }
}

// One launch per sweep, streaming down the rows: for plane-local stencils with a linear colouring
// colour = (pa c + PB y + PD x) mod NC and W % 4 == 0, like gibbs_sweep_fused (HAS_U too), but
// with no halo of rows to stage for each tile. Spins ping-pong s_in -> s_out.
//
// The blocks: first the head, planes x chunks x strips blocks (plane, chunk, strip), strips
// fastest, each taking chunk_rows rows of one strip (the last chunk may be shorter): the blocks
// that run together stream adjacent strips at the same rows, so the columns their windows share
// are read from L2. Then the tail: the rows [chunks chunk_rows, H) of every (plane, strip)
// column, laid end to end (plane-major, then strip, then row), tail_rows_per_block rows to a
// block, one segment per column it touches: blocks the head leaves idle in its last wave.
template <typename T, bool PERIODIC, bool HAS_U, int NC, int PB, int PD, int RWQ, int RB, int QX,
          int QY, int... OFF>
__global__ void __launch_bounds__(RB / QY * RWQ / QX, 1)
gibbs_sweep_stream(const signed char* __restrict__ s_in, signed char* __restrict__ s_out,
                   const T* __restrict__ J, const T* __restrict__ h, const T* __restrict__ u,
                   int C, int H, int W, int pa, int chunk_rows, int chunks,
                   int strips, int planes, int tail_rows_per_block, int bias_batched,
                   T two_beta, unsigned int c2, unsigned int c3, unsigned int k0,
                   unsigned int k1) {
    // two call sites: each SM runs one block, so only one inlined copy of the segment is hot
    // there, and the head's stays as simple as a block with one segment
    const PhiloxKey key{c2, c3, k0, k1};
    const long long head_blocks = (long long)planes * chunks * strips;
    if (blockIdx.x < head_blocks) {
        const long long plane = blockIdx.x / (chunks * strips);
        const int index = (int)(blockIdx.x - plane * (chunks * strips));
        const int chunk = index / strips, strip = index - chunk * strips;
        const int y0 = chunk * chunk_rows;
        stream_segment<T, PERIODIC, HAS_U, NC, PB, PD, RWQ, RB, QX, QY, OFF...>(
            s_in, s_out, J, h, u, C, H, W, pa, plane, strip, y0,
            min(chunk_rows, H - y0), bias_batched, two_beta, key);
        return;
    }
    const int tail_top = min(chunks * chunk_rows, H), tail = H - tail_top;
    long long pos = (blockIdx.x - head_blocks) * tail_rows_per_block;
    const long long end = min(pos + tail_rows_per_block, (long long)planes * strips * tail);
    while (pos < end) {
        const long long column = pos / tail;  // plane strips + strip
        const int y = (int)(pos - column * tail);
        const int rows_out = (int)min((long long)(tail - y), end - pos);
        stream_segment<T, PERIODIC, HAS_U, NC, PB, PD, RWQ, RB, QX, QY, OFF...>(
            s_in, s_out, J, h, u, C, H, W, pa, column / strips, (int)(column % strips),
            tail_top + y, rows_out, bias_batched, two_beta, key);
        pos += rows_out;
    }
}

}  // namespace arraygen
