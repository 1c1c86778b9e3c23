// The CUDA C tiled kernels (arraygen/backends/cupy/tiled.cu) run on the CPU, for
// tests/test_tiled_variants.py: every block is 128 std::threads meeting at a std::barrier for
// __syncthreads, __shared__ arrays are function statics (blocks run one after another), and
// ex2.approx.ftz is exp2f with subnormal results flushed to zero. Compile with
//   g++ -std=c++20 -O1 -ffp-contract=off -pthread -I arraygen/backends/cupy tests/tiled_cu_host.cpp
// Usage: a.out KERNEL DIR; DIR holds params.txt ("n m d p pc chunk splits s rows") and inputs
// x.bin, y.bin, u.bin, w2.bin, ctr.bin (native floats of the kernel's type); writes part.bin
// (matvec: splits x n x p) or acc.bin, mx.bin, sm.bin (softmax).
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

struct Dim3 { long long x = 0, y = 0, z = 0; };
thread_local Dim3 threadIdx, blockIdx;

#include "tiled.cu"

// one launch: grid (gx, gy) of TILED_THREADS threads, blocks one after another
template <typename K, typename... A> void launch(K kernel, long long gx, long long gy, A... args) {
    for (long long by = 0; by < gy; ++by)
        for (long long bx = 0; bx < gx; ++bx) {
            std::barrier<> bar(TILED_THREADS);
            g_barrier = &bar;
            std::vector<std::thread> ts;
            for (int t = 0; t < TILED_THREADS; ++t)
                ts.emplace_back([&, t] {
                    threadIdx = Dim3{t, 0, 0};
                    blockIdx = Dim3{bx, by, 0};
                    kernel(args...);
                });
            for (auto& th : ts) th.join();
        }
}

struct Params { long long n, m, d, p, pc, chunk, splits; double s; long long rows; };

template <typename T, typename K> void run_matvec(K kernel, const Params& q, const std::string& dir,
                                                 bool direct) {
    auto x = load<T>(dir + "/x.bin"), y = load<T>(dir + "/y.bin"), u = load<T>(dir + "/u.bin");
    auto ctr = load<T>(dir + "/ctr.bin");
    std::vector<T> ones(q.n > q.m ? q.n : q.m, T(1));
    std::vector<T> part(q.splits * q.n * q.p, T(0));
    const long long gx = (q.n + TILED_THREADS * q.rows - 1) / (TILED_THREADS * q.rows);
    for (long long c0 = 0; c0 < q.p; c0 += q.pc) {
        if constexpr (std::is_invocable_v<K, const T*, const T*, const T*, const T*, const T*,
                                          long long, long long, long long, int, int, T, T*>)
            launch(kernel, gx, q.splits, (const T*)x.data(), (const T*)y.data(),
                   (const T*)u.data(), (const T*)ones.data(), (const T*)ones.data(), q.n, q.m,
                   q.chunk, (int)q.p, (int)c0, (T)q.s, part.data());
        else
            launch(kernel, gx, q.splits, (const T*)x.data(), (const T*)y.data(),
                   (const T*)u.data(), (const T*)ctr.data(), q.n, q.m, q.chunk, (int)q.p,
                   (int)c0, (T)q.s, part.data());
    }
    (void)direct;
    save(dir + "/part.bin", part);
}

template <typename T, typename K> void run_softmax(K kernel, const Params& q,
                                                  const std::string& dir) {
    auto x = load<T>(dir + "/x.bin"), y = load<T>(dir + "/y.bin"), v = load<T>(dir + "/u.bin");
    auto w2 = load<T>(dir + "/w2.bin"), ctr = load<T>(dir + "/ctr.bin");
    const long long pa = q.p > 0 ? q.p : 1;
    std::vector<T> acc(q.splits * q.n * pa, T(0)), mx(q.splits * q.n), sm(q.splits * q.n);
    const long long gx = (q.n + TILED_THREADS * q.rows - 1) / (TILED_THREADS * q.rows);
    const long long step = q.pc > 0 ? q.pc : 1;
    for (long long c0 = 0; c0 < (q.p > 0 ? q.p : 1); c0 += step) {
        if constexpr (std::is_invocable_v<K, const T*, const T*, const T*, const T*, long long,
                                          long long, long long, int, int, T, T*, T*, T*>)
            launch(kernel, gx, q.splits, (const T*)x.data(), (const T*)y.data(),
                   (const T*)v.data(), (const T*)w2.data(), q.n, q.m, q.chunk, (int)q.p,
                   (int)c0, (T)q.s, acc.data(), mx.data(), sm.data());
        else
            launch(kernel, gx, q.splits, (const T*)x.data(), (const T*)y.data(),
                   (const T*)v.data(), (const T*)w2.data(), (const T*)ctr.data(), q.n, q.m,
                   q.chunk, (int)q.p, (int)c0, (T)q.s, acc.data(), mx.data(), sm.data());
    }
    save(dir + "/acc.bin", acc);
    save(dir + "/mx.bin", mx);
    save(dir + "/sm.bin", sm);
}

#define MV(T, ...) {#__VA_ARGS__, [](const Params& q, const std::string& d) { \
    run_matvec<T>(&__VA_ARGS__, q, d, false); }}
#define SM(T, ...) {#__VA_ARGS__, [](const Params& q, const std::string& d) { \
    run_softmax<T>(&__VA_ARGS__, q, d); }}

int main(int argc, char** argv) {
    if (argc != 3) {
        std::cerr << "usage: " << argv[0] << " KERNEL DIR\n";
        return 2;
    }
    const std::map<std::string, std::function<void(const Params&, const std::string&)>> table = {
#include "tiled_cu_host_kernels.inc"
    };
    std::ifstream pf(std::string(argv[2]) + "/params.txt");
    Params q;
    pf >> q.n >> q.m >> q.d >> q.p >> q.pc >> q.chunk >> q.splits >> q.s >> q.rows;
    std::string name = argv[1];
    std::string key;
    for (char c : name)
        if (c != ' ') key += c;
    for (const auto& [k, fn] : table) {
        std::string kk;
        for (char c : k)
            if (c != ' ') kk += c;
        if (kk == key) {
            fn(q, argv[2]);
            return 0;
        }
    }
    std::cerr << "unknown kernel " << name << "\n";
    return 3;
}
