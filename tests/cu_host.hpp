// What the host harnesses of the CUDA C sources share (tests/*_cu_host.cpp): the CUDA
// qualifiers as plain C++ (__shared__ arrays become function statics: blocks run one after
// another; __syncthreads is a std::barrier of the block's std::threads), the intrinsics the
// kernels use, and the .bin file I/O. Each harness declares its own Dim3 (the index type its
// kernels were written against), threadIdx/blockIdx (thread_local) and launch loop, then
// includes its .cu file.
#pragma once
#include <barrier>
#include <cmath>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

static std::barrier<>* g_barrier = nullptr;

#define __global__
#define __device__
#define __forceinline__ inline
#define __launch_bounds__(n)
#define __shared__ static
#define __align__(n) __attribute__((aligned(n)))
#define __syncthreads() g_barrier->arrive_and_wait()
// the one inline-asm statement of the kernels (tile_common.cuh): r = ex2.approx.ftz(t)
#define asm(...) (r = host_ex2_ftz(t))

static inline float host_ex2_ftz(float t) {
    const float r = std::exp2f(t);
    return std::fabs(r) < 1.17549435e-38f ? 0.0f : r;
}
static inline float __int_as_float(int i) { float f; std::memcpy(&f, &i, 4); return f; }
static inline int __float_as_int(float f) { int i; std::memcpy(&i, &f, 4); return i; }
static inline double __longlong_as_double(unsigned long long i) {
    double f; std::memcpy(&f, &i, 8); return f;
}
using std::exp2; using std::fma; using std::fmaf; using std::fmaxf; using std::fminf;
using std::log2; using std::log2f;

template <typename T> std::vector<T> load(const std::string& path) {
    std::ifstream f(path, std::ios::binary | std::ios::ate);
    std::vector<T> v(f.tellg() / sizeof(T));
    f.seekg(0);
    f.read(reinterpret_cast<char*>(v.data()), v.size() * sizeof(T));
    return v;
}
template <typename T> void save(const std::string& path, const std::vector<T>& v) {
    std::ofstream f(path, std::ios::binary);
    f.write(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(T));
}
