// Multi-spin-coded Gibbs sweeps of +-J nearest-neighbour Ising models for CuPy (launcher:
// gibbs_msc.py; contract: arraygen/_kernels/gibbs_msc.py; the NumPy version of the same
// algorithm: arraygen.reference.gibbs.msc_sweeps).
//
// Spins are rows of uint32 words, 32 spins per word (bit j of word q <-> x = 32 q + j, 1 <-> +1,
// bits past W are 0). A site with P positive terms J s_nb > 0 among its four edges and M edges
// missing (open grid) has field index idx = 2 P + M; it takes +1 iff its Philox word
// w < table[idx] (exact integer thresholds of u < p). The Philox word of sweep t at flat element
// e of the spins (B, C, H, W) is word e % 4 of block e / 4: the float-coupling kernels' stream.
// Per word the positive terms are four bit planes (neighbour bits XOR coupling-sign bits),
// summed by a bitwise adder into three planes, spread into bytes (the byte offset 4 idx of each
// site of the word's active colour), then one byte permute, one shared load and one compare.
//
// gibbs_msc_sweep: one launch per sweep. A block owns a band of `rows` rows of one (chain,
// channel) plane, one thread per word of the row (the whole row in one block, so left/right
// neighbours come from shared memory). It walks down the band: for row y it updates colour 0 of
// row y + 1 (old neighbours only), then colour 1 of row y (new colour 0 around it). Colour 0 of
// the rows just above and below the band is recomputed (from old spins: the result the owning
// block gets), so bands are independent; spins go from `sin` to `sout`. The Philox block of
// four sites is drawn once per sweep: the colour-1 words wait in registers for one row.
// gibbs_msc_phase: one launch per colour, one thread per word, in place (for rows wider than
// one block); each phase draws every block of its words and uses half of the words.
#include "philox.cuh"

#ifndef MSC_RING  // the dynamic shared memory (a host harness for tests defines its own)
#define MSC_RING extern __shared__ unsigned int ring[]
#endif

namespace arraygen {
namespace msc {

typedef unsigned int u32;
typedef unsigned long long u64;

// x & 0xFF as four 2-bit fields (bits 0-1, 2-3, 4-5, 6-7) -> the low bits of bytes 0..3; with
// the masks 0x00050005, 0x01010101 the same for single bits at 0, 2, 4, 6
__device__ __forceinline__ u32 spread4(u32 x, u32 m1, u32 m2) {
    x = (x | (x << 12)) & m1;
    return (x | (x << 6)) & m2;
}

// per-bit sum of four bit planes as three planes: a + b + c + d = s0 + 2 s1 + 4 s2
__device__ __forceinline__ void add4(u32 a, u32 b, u32 c, u32 d, u32& s0, u32& s1, u32& s2) {
    const u32 x1 = a ^ b, c1 = a & b, x2 = c ^ d, c2 = c & d;
    s0 = x1 ^ x2;
    const u32 c3 = x1 & x2;  // c3 = 1 only when c1 = c2 = 0, so c1 + c2 + c3 <= 2
    s1 = c1 ^ c2 ^ c3;
    s2 = c1 & c2;
}

// Bytes 0..3 of word k hold 4 (2 P + M) of the sites j = 2 (4 k + b) + PAR, b = 0..3: the byte
// offset of their threshold. (a, z): the sites' (s0 + 2 s1) fields and s2 bits of P (2 bits a
// site, see update), (ma, mz) the same of M.
template <bool OPEN>
__device__ __forceinline__ u32 offsets4(u32 A, u32 Z, u32 MA, u32 MZ, int k) {
    const u32 a = (A >> (8 * k)) & 0xFFu, z = (Z >> (8 * k)) & 0xFFu;
    u32 off = (spread4(a, 0x000F000Fu, 0x03030303u) << 3)
              | (spread4(z, 0x00050005u, 0x01010101u) << 5);
    if (OPEN) {
        const u32 ma = (MA >> (8 * k)) & 0xFFu, mz = (MZ >> (8 * k)) & 0xFFu;
        off += (spread4(ma, 0x000F000Fu, 0x03030303u) << 2)
               | (spread4(mz, 0x00050005u, 0x01010101u) << 4);
    }
    return off;
}

// Sites j = 2 m + P (m = 0..15) of the word take +1 iff w[m] < thr[2 P_j + M_j]; other bits
// of `me` are kept. pl..pd: positive-term planes, ml..md: missing-edge planes (OPEN only).
// The index of each site is built as a byte offset into `thr` (4 idx, 4 sites per word) and
// read back with one byte permute.
template <int P, bool OPEN>
__device__ __forceinline__ u32 update(u32 me, u32 pl, u32 pr, u32 pu, u32 pd, u32 ml, u32 mr,
                                      u32 mu, u32 md, u32 live, const u32 (&w)[16],
                                      const u32* thr) {
    u32 s0, s1, s2;
    add4(pl, pr, pu, pd, s0, s1, s2);
    // site m: bits 2m, 2m + 1 of A = s0 + 2 s1, bit 2m of Z = s2
    const u32 A = ((s0 >> P) & 0x55555555u) | (((s1 >> P) & 0x55555555u) << 1);
    const u32 Z = (s2 >> P) & 0x55555555u;
    u32 MA = 0u, MZ = 0u;
    if (OPEN) {
        u32 m0, m1, m2;
        add4(ml, mr, mu, md, m0, m1, m2);
        MA = ((m0 >> P) & 0x55555555u) | (((m1 >> P) & 0x55555555u) << 1);
        MZ = (m2 >> P) & 0x55555555u;
    }
    u32 out = me & ~(0x55555555u << P);
    const char* base = reinterpret_cast<const char*>(thr);
#pragma unroll
    for (int k = 0; k < 4; ++k) {
        const u32 off = offsets4<OPEN>(A, Z, MA, MZ, k);
#pragma unroll
        for (int b = 0; b < 4; ++b) {
            const u32 o = __byte_perm(off, 0u, 0x4440u | (u32)b);
            const u32 t = *reinterpret_cast<const u32*>(base + o);
            if (w[4 * k + b] < t) out |= 1u << (2 * (4 * k + b) + P);
        }
    }
    return out & live;
}

// The 32 Philox words of the word's sites x0 .. x0 + 31 (flat elements e0 ..): 8 blocks when
// e0 is a multiple of 4 (W % 4 == 0), else one block per site.
template <bool ALIGNED>
__device__ __forceinline__ void row_words(u64 e0, PhiloxKey key, u32 (&w)[32]) {
    if (ALIGNED) {
        const u64 b0 = e0 >> 2;
#pragma unroll
        for (int k = 0; k < 8; ++k) {
            const uint4 v = philox4x32_10(b0 + k, key);
            w[4 * k] = v.x;
            w[4 * k + 1] = v.y;
            w[4 * k + 2] = v.z;
            w[4 * k + 3] = v.w;
        }
    } else {
#pragma unroll
        for (int j = 0; j < 32; ++j) {
            const u64 e = e0 + j;
            const uint4 v = philox4x32_10(e >> 2, key);
            const int l = (int)(e & 3);
            w[j] = l == 0 ? v.x : (l == 1 ? v.y : (l == 2 ? v.z : v.w));
        }
    }
}

// What one thread knows of its word: the grid and its word q of each row.
struct Lane {
    int H, W, Wq, q, nlive;
    u32 live;   // live bits of the word
    bool last;  // q == Wq - 1
};

// Old spins and coupling signs of one row around the thread's word: the word, the bits just left
// and just right of it (0 where they leave an open grid), the sign bits of the edges (x, x + 1)
// of its sites and of the edge to its left, and of the edges (y, y + 1) of its sites.
struct RowIn {
    u32 me, lbit, rbit, sxw, lsign, sd;
};

// Row y (-H <= y < 3 H) of the plane wrapped (periodic) or -1 (open, outside)
template <bool PERIODIC>
__device__ __forceinline__ int row_of(int y, int H) {
    if (PERIODIC) {
        if (y < 0) y += H;
        if (y >= H) y -= H;
        if (y >= H) y -= H;  // H = 2: the band reads up to 2 rows past its end
        return y;
    }
    return (y < 0 || y >= H) ? -1 : y;
}

// End bits of word q of row `row` (a pointer to its Wq words)
template <bool PERIODIC>
__device__ __forceinline__ void end_bits(const Lane& L, const u32* row, u32& lbit, u32& rbit) {
    lbit = L.q > 0 ? row[L.q - 1] >> 31
                   : (PERIODIC ? (row[L.Wq - 1] >> ((L.W - 1) & 31)) & 1u : 0u);
    rbit = !L.last ? row[L.q + 1] & 1u : (PERIODIC ? row[0] & 1u : 0u);
}

// The RowIn of row y (wrapped if periodic; zeros outside an open grid). s: row 0 of the
// thread's plane; sx, sy: row 0 of its channel in the sign planes (read only if SIGNED).
template <bool PERIODIC, bool SIGNED>
__device__ __forceinline__ RowIn load_row(const Lane& L, const u32* s, const u32* sx,
                                          const u32* sy, int y) {
    RowIn R{0u, 0u, 0u, 0u, 0u, 0u};
    const int r = row_of<PERIODIC>(y, L.H);
    if (r < 0) return R;
    const u32* row = s + (long long)r * L.Wq;
    R.me = row[L.q];
    end_bits<PERIODIC>(L, row, R.lbit, R.rbit);
    if (SIGNED) {
        const u32* sxr = sx + (long long)r * L.Wq;
        R.sxw = sxr[L.q];
        if (L.q > 0) R.lsign = sxr[L.q - 1] >> 31;
        else if (PERIODIC) R.lsign = (sxr[L.Wq - 1] >> ((L.W - 1) & 31)) & 1u;
        R.sd = sy[(long long)r * L.Wq + L.q];
    }
    return R;
}

// Resample the sites of parity P of word `me` of row y (0 <= y < H) given its end bits
// (lbit: x0 - 1, rbit: x0 + nlive), the words of the rows above and below (0 where they leave
// an open grid) and the coupling signs (sxw, lsign of the row; su, sd: of the edges up, down).
template <int P, bool PERIODIC>
__device__ __forceinline__ u32 resample(const Lane& L, int y, u32 me, u32 lbit, u32 rbit, u32 up,
                                        u32 dn, u32 sxw, u32 lsign, u32 su, u32 sd,
                                        const u32 (&w)[16], const u32* thr) {
    const u32 pl = ((me << 1) | lbit) ^ ((sxw << 1) | lsign);
    const u32 pr = ((me >> 1) | (rbit << (L.nlive - 1))) ^ sxw;
    const u32 pu = up ^ su, pd = dn ^ sd;
    u32 ml = 0u, mr = 0u, mu = 0u, md = 0u;
    if (!PERIODIC) {
        ml = L.q == 0 ? 1u : 0u;
        mr = L.last ? 1u << (L.nlive - 1) : 0u;
        mu = y == 0 ? ~0u : 0u;
        md = y == L.H - 1 ? ~0u : 0u;
    }
    return update<P, !PERIODIC>(me, pl, pr, pu, pd, ml, mr, mu, md, L.live, w, thr);
}

// Colour 0 (sites j = P mod 2, P = y & 1) of row y (0 <= y < H, first element e_row of the
// spins) from the old rows U (y - 1), R (y), D (y + 1); `saved` receives the row's colour-1
// Philox words.
template <int P, bool PERIODIC, bool ALIGNED>
__device__ __forceinline__ u32 colour0(const Lane& L, int y, u64 e_row, const RowIn& U,
                                       const RowIn& R, const RowIn& D, PhiloxKey key,
                                       const u32* thr, u32 (&saved)[16]) {
    u32 w[32];
    row_words<ALIGNED>(e_row + 32ull * (u64)L.q, key, w);
    u32 act[16];
#pragma unroll
    for (int m = 0; m < 16; ++m) {
        act[m] = w[2 * m + P];
        saved[m] = w[2 * m + 1 - P];
    }
    return resample<P, PERIODIC>(L, y, R.me, R.lbit, R.rbit, U.me, D.me, R.sxw, R.lsign, U.sd,
                                 R.sd, act, thr);
}

// The band's rolling state at row step y: the new words of rows y - 1 (prev) and y (cur, colour
// 0 new), the old rows y - 1 .. y + 2 (the last loaded one step ahead).
struct Band {
    u32 prev, cur;
    RowIn rm1, r0, r1, r2;
};

// One row step of the band: colour 0 of row y + 1, then colour 1 of row y. P = 1 - (y & 1)
// (the parity of colour 0 in row y + 1 and of colour 1 in row y).
template <int P, bool PERIODIC, bool SIGNED, bool ALIGNED>
__device__ __forceinline__ void band_step(const Lane& L, int y, bool write, const u32* s,
                                          const u32* sx, const u32* sy, u64 e_plane,
                                          PhiloxKey key, const u32* thr, u32* ring, u32* sout,
                                          Band& b, const u32 (&saved_y)[16],
                                          u32 (&saved_next)[16]) {
    const RowIn r3 = load_row<PERIODIC, SIGNED>(L, s, sx, sy, y + 3);  // for the next step
    u32 nxt = 0u;
    if (PERIODIC || y + 1 < L.H) {
        const int yn = row_of<PERIODIC>(y + 1, L.H);
        nxt = colour0<P, PERIODIC, ALIGNED>(L, yn, e_plane + (u64)yn * (u64)L.W, b.r0, b.r1,
                                            b.r2, key, thr, saved_next);
    }
    if (write) ring[((y + 1) % 3) * L.Wq + L.q] = nxt;
    __syncthreads();
    u32 lbit, rbit;
    end_bits<PERIODIC>(L, ring + (y % 3) * L.Wq, lbit, rbit);
    const u32 cur = resample<P, PERIODIC>(L, y, b.cur, lbit, rbit, b.prev, nxt, b.r0.sxw,
                                          b.r0.lsign, b.rm1.sd, b.r0.sd, saved_y, thr);
    if (write) sout[(long long)y * L.Wq + L.q] = cur;
    b.prev = cur;
    b.cur = nxt;
    b.rm1 = b.r0;
    b.r0 = b.r1;
    b.r1 = b.r2;
    b.r2 = r3;
}

template <bool PERIODIC, bool SIGNED, bool ALIGNED>
__global__ void __launch_bounds__(512)
    gibbs_msc_sweep(const u32* __restrict__ sin, u32* __restrict__ sout,
                    const u32* __restrict__ sx, const u32* __restrict__ sy,
                    const u32* __restrict__ table, int C, int H, int W, int Wq, int rows,
                    int chunks, unsigned int c2, unsigned int c3, unsigned int k0,
                    unsigned int k1) {
    __shared__ u32 thr[16];
    MSC_RING;  // rows y % 3: the new colour-0 words of the band's rows (3 Wq words)
    if (threadIdx.x < 16) thr[threadIdx.x] = table[threadIdx.x];
    __syncthreads();
    const PhiloxKey key{c2, c3, k0, k1};
    const int plane = blockIdx.x / chunks;  // (chain, channel)
    const int y0 = (blockIdx.x - plane * chunks) * rows;  // rows is even: y0 is even
    const int y1 = min(H, y0 + rows);
    const bool write = (int)threadIdx.x < Wq;
    Lane L;
    L.H = H;
    L.W = W;
    L.Wq = Wq;
    L.q = write ? (int)threadIdx.x : Wq - 1;  // spare threads shadow the last word
    L.nlive = min(32, W - 32 * L.q);
    L.live = L.nlive == 32 ? ~0u : (1u << L.nlive) - 1u;
    L.last = L.q == Wq - 1;
    const long long prow = (long long)plane * H, srow = (long long)(plane % C) * H;
    const u32* s = sin + prow * Wq;
    u32* out = sout + prow * Wq;
    const u32* sxc = sx + (SIGNED ? srow * Wq : 0);
    const u32* syc = sy + (SIGNED ? srow * Wq : 0);
    const u64 e_plane = (u64)prow * (u64)W;
    u32 even[16], odd[16], spare[16];
    Band b;
    const RowIn ra = load_row<PERIODIC, SIGNED>(L, s, sxc, syc, y0 - 2);
    b.rm1 = load_row<PERIODIC, SIGNED>(L, s, sxc, syc, y0 - 1);
    b.r0 = load_row<PERIODIC, SIGNED>(L, s, sxc, syc, y0);
    b.r1 = load_row<PERIODIC, SIGNED>(L, s, sxc, syc, y0 + 1);
    b.r2 = load_row<PERIODIC, SIGNED>(L, s, sxc, syc, y0 + 2);
    b.prev = 0u;
    if (PERIODIC || y0 > 0) {
        const int yp = row_of<PERIODIC>(y0 - 1, H);
        b.prev = colour0<1, PERIODIC, ALIGNED>(L, yp, e_plane + (u64)yp * (u64)W, ra, b.rm1,
                                               b.r0, key, thr, spare);
    }
    b.cur = colour0<0, PERIODIC, ALIGNED>(L, y0, e_plane + (u64)y0 * (u64)W, b.rm1, b.r0, b.r1,
                                          key, thr, even);
    if (write) ring[(y0 % 3) * Wq + L.q] = b.cur;
    for (int y = y0; y < y1; y += 2) {
        band_step<1, PERIODIC, SIGNED, ALIGNED>(L, y, write, s, sxc, syc, e_plane, key, thr,
                                                ring, out, b, even, odd);
        if (y + 1 < y1)
            band_step<0, PERIODIC, SIGNED, ALIGNED>(L, y + 1, write, s, sxc, syc, e_plane, key,
                                                    thr, ring, out, b, odd, even);
    }
}

template <bool PERIODIC, bool SIGNED, bool ALIGNED>
__global__ void gibbs_msc_phase(u32* s, const u32* __restrict__ sx, const u32* __restrict__ sy,
                                const u32* __restrict__ table, int C, int H, int W, int Wq,
                                long long words, int colour, unsigned int c2, unsigned int c3,
                                unsigned int k0, unsigned int k1) {
    __shared__ u32 thr[16];
    if (threadIdx.x < 16) thr[threadIdx.x] = table[threadIdx.x];
    __syncthreads();
    const PhiloxKey key{c2, c3, k0, k1};
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < words;
         i += (long long)gridDim.x * blockDim.x) {
        const long long r = i / Wq;
        const int q = (int)(i - r * Wq);
        const long long plane = r / H;
        const int y = (int)(r - plane * H);
        Lane L;
        L.H = H;
        L.W = W;
        L.Wq = Wq;
        L.q = q;
        L.nlive = min(32, W - 32 * q);
        L.live = L.nlive == 32 ? ~0u : (1u << L.nlive) - 1u;
        L.last = q == Wq - 1;
        // neighbours' bits of the other colour do not change in this phase: in place is safe
        const u32* sp = s + plane * H * Wq;
        const long long srow = (plane % C) * H;
        const u32* sxc = sx + (SIGNED ? srow * Wq : 0);
        const u32* syc = sy + (SIGNED ? srow * Wq : 0);
        const RowIn U = load_row<PERIODIC, SIGNED>(L, sp, sxc, syc, y - 1);
        const RowIn R = load_row<PERIODIC, SIGNED>(L, sp, sxc, syc, y);
        const RowIn D = load_row<PERIODIC, SIGNED>(L, sp, sxc, syc, y + 1);
        u32 w[32];
        row_words<ALIGNED>((u64)r * (u64)W + 32ull * (u64)q, key, w);
        u32 act[16];
        u32 out;
        if (((y + colour) & 1) == 0) {
#pragma unroll
            for (int m = 0; m < 16; ++m) act[m] = w[2 * m];
            out = resample<0, PERIODIC>(L, y, R.me, R.lbit, R.rbit, U.me, D.me, R.sxw, R.lsign,
                                        U.sd, R.sd, act, thr);
        } else {
#pragma unroll
            for (int m = 0; m < 16; ++m) act[m] = w[2 * m + 1];
            out = resample<1, PERIODIC>(L, y, R.me, R.lbit, R.rbit, U.me, D.me, R.sxw, R.lsign,
                                        U.sd, R.sd, act, thr);
        }
        s[i] = out;
    }
}

// int8 spins (rows of W) -> rows of Wq words
__global__ void msc_pack(const signed char* __restrict__ s, u32* __restrict__ out, int W, int Wq,
                         long long words) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < words;
         i += (long long)gridDim.x * blockDim.x) {
        const long long r = i / Wq;
        const int q = (int)(i - r * Wq);
        const signed char* row = s + r * W;
        u32 word = 0u;
        const int n = min(32, W - 32 * q);
        for (int j = 0; j < n; ++j)
            if (row[32 * q + j] > 0) word |= 1u << j;
        out[i] = word;
    }
}

__global__ void msc_unpack(const u32* __restrict__ words, signed char* __restrict__ s, int W,
                           int Wq, long long total) {
    for (long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x; e < total;
         e += (long long)gridDim.x * blockDim.x) {
        const long long r = e / W;
        const int x = (int)(e - r * W);
        s[e] = ((words[r * Wq + (x >> 5)] >> (x & 31)) & 1u) ? (signed char)1 : (signed char)-1;
    }
}

}  // namespace msc
}  // namespace arraygen
