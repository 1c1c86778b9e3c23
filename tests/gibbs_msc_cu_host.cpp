// The CUDA C multi-spin Gibbs kernels (arraygen/backends/cupy/gibbs_msc.cu) run on the CPU, for
// tests/test_gibbs_msc.py: every block is blockDim std::threads meeting at a std::barrier for
// __syncthreads, __shared__ arrays are function statics (blocks run one after another), the
// dynamic shared memory is a global buffer. Compile with
//   g++ -std=c++20 -O1 -pthread -I arraygen/backends/cupy tests/gibbs_msc_cu_host.cpp
// (add -shared -fPIC for the ctypes entry points host_msc_*, used by the stand-in cupy module
// of tests/test_gibbs_msc.py).
// Usage: a.out KERNEL DIR with KERNEL "sweep" or "phase"; DIR holds params.txt
// ("periodic signed B C H W rows threads n_sweeps seed counter") and words.bin (uint32 packed
// spins), sx.bin, sy.bin (uint32 sign planes), table.bin (16 uint32); writes out.bin.
#include <algorithm>
#include <cmath>
#include <barrier>
#include <cstdint>
#include <fstream>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "cu_host.hpp"

struct Dim3 { long long x = 0, y = 0, z = 0; };
thread_local Dim3 threadIdx, blockIdx;
static Dim3 blockDim, gridDim;
static std::vector<unsigned int> g_ring;

struct uint4 { unsigned int x, y, z, w; };
static inline uint4 make_uint4(unsigned int x, unsigned int y, unsigned int z, unsigned int w) {
    return uint4{x, y, z, w};
}
static inline unsigned int __umulhi(unsigned int a, unsigned int b) {
    return (unsigned int)(((unsigned long long)a * b) >> 32);
}
// byte i of the result is byte (s >> 4 i) & 7 of the 8 bytes (y:x)
static inline unsigned int __byte_perm(unsigned int x, unsigned int y, unsigned int s) {
    const unsigned long long v = ((unsigned long long)y << 32) | x;
    unsigned int r = 0;
    for (int i = 0; i < 4; ++i) r |= (unsigned int)((v >> (8 * ((s >> (4 * i)) & 7))) & 0xFF) << (8 * i);
    return r;
}
using std::min;

#define MSC_RING unsigned int* ring = g_ring.data()

#include "gibbs_msc.cu"

// one launch: blocks one after another, each `threads` std::threads
static void launch(long long blocks, long long threads, const std::function<void()>& body) {
    gridDim.x = blocks;
    blockDim.x = threads;
    for (long long b = 0; b < blocks; ++b) {
        std::barrier<> bar(threads);
        g_barrier = &bar;
        std::vector<std::thread> pool;
        for (long long t = 0; t < threads; ++t)
            pool.emplace_back([&, b, t] {
                blockIdx.x = b;
                threadIdx.x = t;
                body();
            });
        for (auto& th : pool) th.join();
    }
}

template <bool PERIODIC, bool SIGNED, bool ALIGNED>
static void run(bool sweep, std::vector<unsigned int>& words, const std::vector<unsigned int>& sx,
                const std::vector<unsigned int>& sy, const std::vector<unsigned int>& table,
                int B, int C, int H, int W, int rows, int threads, int n_sweeps,
                unsigned long long seed, unsigned long long counter) {
    using namespace arraygen::msc;
    const int Wq = (W + 31) / 32;
    const long long n_words = (long long)B * C * H * Wq;
    const unsigned int k0 = (unsigned int)seed, k1 = (unsigned int)(seed >> 32);
    std::vector<unsigned int> other(words.size());
    g_ring.assign(3 * Wq, 0u);
    for (int t = 0; t < n_sweeps; ++t) {
        const unsigned long long ctr = counter + t;
        const unsigned int c2 = (unsigned int)ctr, c3 = (unsigned int)(ctr >> 32);
        if (sweep) {
            const int chunks = (H + rows - 1) / rows;
            launch((long long)B * C * chunks, threads, [&] {
                gibbs_msc_sweep<PERIODIC, SIGNED, ALIGNED>(
                    words.data(), other.data(), sx.data(), sy.data(), table.data(), C, H, W, Wq,
                    rows, chunks, c2, c3, k0, k1);
            });
            words.swap(other);
        } else {
            for (int colour = 0; colour < 2; ++colour)
                launch((n_words + threads - 1) / threads, threads, [&] {
                    gibbs_msc_phase<PERIODIC, SIGNED, ALIGNED>(
                        words.data(), sx.data(), sy.data(), table.data(), C, H, W, Wq, n_words,
                        colour, c2, c3, k0, k1);
                });
        }
    }
}

// C entry points for ctypes (tests drive the CuPy launcher through a stand-in cupy module):
// one launch each, the template flags as ints, `shared` the dynamic shared memory in bytes.
template <typename F>
static void with_flags(int periodic, int sgn, int aligned, F&& f) {
    const int code = (periodic ? 4 : 0) + (sgn ? 2 : 0) + (aligned ? 1 : 0);
    switch (code) {
        case 0: f.template operator()<false, false, false>(); break;
        case 1: f.template operator()<false, false, true>(); break;
        case 2: f.template operator()<false, true, false>(); break;
        case 3: f.template operator()<false, true, true>(); break;
        case 4: f.template operator()<true, false, false>(); break;
        case 5: f.template operator()<true, false, true>(); break;
        case 6: f.template operator()<true, true, false>(); break;
        default: f.template operator()<true, true, true>(); break;
    }
}

extern "C" void host_msc_sweep(int periodic, int sgn, int aligned, long long grid, int threads,
                               long long shared, const unsigned int* sin, unsigned int* sout,
                               const unsigned int* sx, const unsigned int* sy,
                               const unsigned int* table, int C, int H, int W, int Wq, int rows,
                               int chunks, unsigned int c2, unsigned int c3, unsigned int k0,
                               unsigned int k1) {
    g_ring.assign(shared / sizeof(unsigned int), 0u);
    with_flags(periodic, sgn, aligned, [&]<bool P, bool S, bool A>() {
        launch(grid, threads, [&] {
            arraygen::msc::gibbs_msc_sweep<P, S, A>(sin, sout, sx, sy, table, C, H, W, Wq, rows,
                                                    chunks, c2, c3, k0, k1);
        });
    });
}

extern "C" void host_msc_phase(int periodic, int sgn, int aligned, long long grid, int threads,
                               unsigned int* s, const unsigned int* sx, const unsigned int* sy,
                               const unsigned int* table, int C, int H, int W, int Wq,
                               long long words, int colour, unsigned int c2, unsigned int c3,
                               unsigned int k0, unsigned int k1) {
    with_flags(periodic, sgn, aligned, [&]<bool P, bool S, bool A>() {
        launch(grid, threads, [&] {
            arraygen::msc::gibbs_msc_phase<P, S, A>(s, sx, sy, table, C, H, W, Wq, words, colour,
                                                    c2, c3, k0, k1);
        });
    });
}

extern "C" void host_msc_pack(long long grid, int threads, const signed char* s,
                              unsigned int* out, int W, int Wq, long long words) {
    launch(grid, threads, [&] { arraygen::msc::msc_pack(s, out, W, Wq, words); });
}

extern "C" void host_msc_unpack(long long grid, int threads, const unsigned int* words,
                                signed char* s, int W, int Wq, long long total) {
    launch(grid, threads, [&] { arraygen::msc::msc_unpack(words, s, W, Wq, total); });
}

int main(int argc, char** argv) {
    if (argc != 3) return 2;
    const bool sweep = std::string(argv[1]) == "sweep";
    const std::string dir = argv[2];
    std::ifstream pf(dir + "/params.txt");
    int periodic, sgn, B, C, H, W, rows, threads, n_sweeps;
    unsigned long long seed, counter;
    pf >> periodic >> sgn >> B >> C >> H >> W >> rows >> threads >> n_sweeps >> seed >> counter;
    auto words = load<unsigned int>(dir + "/words.bin");
    const auto sx = load<unsigned int>(dir + "/sx.bin");
    const auto sy = load<unsigned int>(dir + "/sy.bin");
    const auto table = load<unsigned int>(dir + "/table.bin");
    const bool aligned = W % 4 == 0;
    const int code = (periodic ? 4 : 0) + (sgn ? 2 : 0) + (aligned ? 1 : 0);
#define CASE(n, p, s, a) \
    case n: run<p, s, a>(sweep, words, sx, sy, table, B, C, H, W, rows, threads, n_sweeps, seed, counter); break;
    switch (code) {
        CASE(0, false, false, false)
        CASE(1, false, false, true)
        CASE(2, false, true, false)
        CASE(3, false, true, true)
        CASE(4, true, false, false)
        CASE(5, true, false, true)
        CASE(6, true, true, false)
        CASE(7, true, true, true)
    }
    std::ofstream out(dir + "/out.bin", std::ios::binary);
    out.write(reinterpret_cast<const char*>(words.data()), words.size() * sizeof(unsigned int));
    return 0;
}
