// The CUDA C block-sparse kernels (arraygen/backends/cupy/blocksparse.cu) run on the CPU, for
// tests/test_blocksparse_gpu.py: a block is blockDim.x std::threads meeting at a std::barrier for
// __syncthreads, __shared__ arrays are function statics (blocks run one after another), and
// ex2.approx.ftz is exp2f with subnormal results flushed to zero. Compile with
//   g++ -std=c++20 -O1 -ffp-contract=off -pthread -I arraygen/backends/cupy -I DIR_OF_INC
//       tests/blocksparse_cu_host.cpp
// where blocksparse_cu_host_kernels.inc lists the instances (KERNEL(kind, T, instance),).
// Usage: a.out KERNEL DIR; DIR holds params.txt ("n m d p pc bx by tpc splits threads s [c0]",
// c0: one launch at that first right-hand side instead of all of them) and
// x.bin, y.bin, u.bin, a.bin, b.bin, w2.bin, yy.bin (native floats of the kernel's type),
// offsets.bin and cols.bin (int32); writes part.bin (matvec) or acc.bin, mx.bin, sm.bin.
#include <barrier>
#include <cmath>
#include <cstring>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "cu_host.hpp"

struct Dim3 { unsigned int x = 0, y = 0, z = 0; };
thread_local Dim3 threadIdx, blockIdx;
static Dim3 blockDim, gridDim;

#define __CUDACC_RTC__  // skip the nvcc-only explicit instantiations
#include "blocksparse.cu"

struct Params { long long n, m, d, p, pc, bx, by, tpc, splits, threads; double s; long long c0 = -1; };

// one launch: grid (gx, gy) of `threads` threads, blocks one after another
template <typename F> void launch(long long gx, long long gy, long long threads, F body) {
    gridDim = Dim3{(unsigned)gx, (unsigned)gy, 1};
    blockDim = Dim3{(unsigned)threads, 1, 1};
    for (long long by = 0; by < gy; ++by)
        for (long long bx = 0; bx < gx; ++bx) {
            std::barrier<> bar(threads);
            g_barrier = &bar;
            std::vector<std::thread> ts;
            for (long long t = 0; t < threads; ++t)
                ts.emplace_back([&, t] {
                    threadIdx = Dim3{(unsigned)t, 0, 0};
                    blockIdx = Dim3{(unsigned)bx, (unsigned)by, 0};
                    body();
                });
            for (auto& th : ts) th.join();
        }
}

template <typename T> struct Inputs {
    std::vector<T> x, y, u, a, b, w2, yy;
    std::vector<int> offsets, cols;
    explicit Inputs(const std::string& dir)
        : x(load<T>(dir + "/x.bin")), y(load<T>(dir + "/y.bin")), u(load<T>(dir + "/u.bin")),
          a(load<T>(dir + "/a.bin")), b(load<T>(dir + "/b.bin")), w2(load<T>(dir + "/w2.bin")),
          yy(load<T>(dir + "/yy.bin")), offsets(load<int>(dir + "/offsets.bin")),
          cols(load<int>(dir + "/cols.bin")) {}
};

template <typename T, typename K>
void run(const char* kind, K kernel, const Params& q, const std::string& dir) {
    Inputs<T> in(dir);
    const long long kx = (long long)in.offsets.size() - 1;
    const long long pa = q.p > 0 ? q.p : 1, step = q.pc > 0 ? q.pc : 1;
    std::vector<T> part(q.splits * q.n * pa, T(0)), mx(q.splits * q.n), sm(q.splits * q.n);
    const std::string k = kind;
    for (long long c0 = q.c0 >= 0 ? q.c0 : 0; c0 < (q.c0 >= 0 ? q.c0 + 1 : pa); c0 += step) {
        launch(kx * q.tpc, q.splits, q.threads, [&] {
            if constexpr (std::is_invocable_v<K, const T*, const T*, const T*, const T*, const T*,
                                              const int*, const int*, long long, long long, int,
                                              int, int, int, int, T, T*>)
                kernel(in.x.data(), in.y.data(), in.u.data(), in.a.data(), in.b.data(),
                       in.offsets.data(), in.cols.data(), q.n, q.m, (int)q.bx, (int)q.by,
                       (int)q.tpc, (int)q.p, (int)c0, (T)q.s, part.data());
            else if constexpr (std::is_invocable_v<K, const T*, const T*, const T*, const T*,
                                                   const int*, const int*, long long, long long,
                                                   int, int, int, int, int, T, T*, T*, T*>)
                kernel(in.x.data(), in.y.data(), in.u.data(), in.w2.data(), in.offsets.data(),
                       in.cols.data(), q.n, q.m, (int)q.bx, (int)q.by, (int)q.tpc, (int)q.p,
                       (int)c0, (T)q.s, part.data(), mx.data(), sm.data());
            else if constexpr (std::is_invocable_v<K, const T*, const T*, const T*, const T*,
                                                   const T*, const T*, const int*, const int*,
                                                   long long, long long, int, int, int, int, int,
                                                   int, T, T*>)
                kernel(in.x.data(), in.y.data(), in.yy.data(), in.u.data(), in.a.data(),
                       in.b.data(), in.offsets.data(), in.cols.data(), q.n, q.m, (int)q.d,
                       (int)q.bx, (int)q.by, (int)q.tpc, (int)q.p, (int)c0, (T)q.s,
                       part.data());
            else
                kernel(in.x.data(), in.y.data(), in.yy.data(), in.u.data(), in.w2.data(),
                       in.offsets.data(), in.cols.data(), q.n, q.m, (int)q.d, (int)q.bx,
                       (int)q.by, (int)q.tpc, (int)q.p, (int)c0, (T)q.s, part.data(),
                       mx.data(), sm.data());
        });
    }
    if (k == "mv") {
        save(dir + "/part.bin", part);
    } else {
        save(dir + "/acc.bin", part);
        save(dir + "/mx.bin", mx);
        save(dir + "/sm.bin", sm);
    }
}

#define KERNEL(kind, T, ...) {#__VA_ARGS__, [](const Params& q, const std::string& d) { \
    run<T>(kind, &__VA_ARGS__, q, d); }}

int main(int argc, char** argv) {
    if (argc != 3) {
        std::cerr << "usage: " << argv[0] << " KERNEL DIR\n";
        return 2;
    }
    const std::map<std::string, std::function<void(const Params&, const std::string&)>> table = {
#include "blocksparse_cu_host_kernels.inc"
    };
    std::ifstream pf(std::string(argv[2]) + "/params.txt");
    Params q;
    pf >> q.n >> q.m >> q.d >> q.p >> q.pc >> q.bx >> q.by >> q.tpc >> q.splits >> q.threads >>
        q.s;
    long long c0 = -1;
    if (pf >> c0) q.c0 = c0;  // optional: one launch at this first right-hand side
    auto strip = [](const std::string& s) {
        std::string out;
        for (char c : s)
            if (c != ' ') out += c;
        return out;
    };
    const std::string key = strip(argv[1]);
    for (const auto& [k, fn] : table)
        if (strip(k) == key) {
            fn(q, argv[2]);
            return 0;
        }
    std::cerr << "unknown kernel " << argv[1] << "\n";
    return 3;
}
