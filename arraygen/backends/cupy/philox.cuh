// Philox4x32-10 and its uniform / Box-Muller conversions, exactly as arraygen/random.py defines
// the stream: element e uses word e % 4 of the block with counter (b lo, b hi, c2, c3), b = e / 4,
// and key (k0, k1) = (seed lo, seed hi). Self-contained (no system headers) for NVRTC and nvcc.
#pragma once

namespace arraygen {

struct PhiloxKey {
    unsigned int c2, c3, k0, k1;  // counter words 2/3 (the key's call counter), key words
};

__device__ __forceinline__ uint4 philox4x32_10(unsigned long long block, PhiloxKey key) {
    unsigned int c0 = (unsigned int)(block & 0xffffffffull);
    unsigned int c1 = (unsigned int)(block >> 32);
    unsigned int c2 = key.c2, c3 = key.c3, k0 = key.k0, k1 = key.k1;
#pragma unroll
    for (int round = 0; round < 10; ++round) {
        const unsigned int hi0 = __umulhi(0xD2511F53u, c0), lo0 = 0xD2511F53u * c0;
        const unsigned int hi1 = __umulhi(0xCD9E8D57u, c2), lo1 = 0xCD9E8D57u * c2;
        c0 = hi1 ^ c1 ^ k0;
        c1 = lo1;
        c2 = hi0 ^ c3 ^ k1;
        c3 = lo0;
        k0 += 0x9E3779B9u;
        k1 += 0xBB67AE85u;
    }
    return make_uint4(c0, c1, c2, c3);
}

// uniform in (0, 1): float ((w >> 9) + 0.5) * 2^-23, double (w + 0.5) * 2^-32 (both exact)
__device__ __forceinline__ float uniform_from_word(unsigned int w, float) {
    return ((float)(w >> 9) + 0.5f) * 1.1920928955078125e-07f;
}
__device__ __forceinline__ double uniform_from_word(unsigned int w, double) {
    return ((double)w + 0.5) * 2.3283064365386963e-10;
}

__device__ __forceinline__ float ag_log(float x) { return logf(x); }
__device__ __forceinline__ double ag_log(double x) { return log(x); }
__device__ __forceinline__ float ag_sqrt(float x) { return sqrtf(x); }
__device__ __forceinline__ double ag_sqrt(double x) { return sqrt(x); }
__device__ __forceinline__ float ag_sin(float x) { return sinf(x); }
__device__ __forceinline__ double ag_sin(double x) { return sin(x); }
__device__ __forceinline__ float ag_cos(float x) { return cosf(x); }
__device__ __forceinline__ double ag_cos(double x) { return cos(x); }

// Four standard normals of one block: (r01 cos 2pi u1, r01 sin 2pi u1, r23 cos 2pi u3, r23 sin 2pi u3)
template <typename T>
__device__ __forceinline__ void box_muller(uint4 w, T (&z)[4]) {
    const T two_pi = (T)6.283185307179586;
    const T u0 = uniform_from_word(w.x, T(0)), u1 = uniform_from_word(w.y, T(0));
    const T u2 = uniform_from_word(w.z, T(0)), u3 = uniform_from_word(w.w, T(0));
    const T r01 = ag_sqrt((T)-2 * ag_log(u0));
    const T r23 = ag_sqrt((T)-2 * ag_log(u2));
    const T t1 = two_pi * u1, t3 = two_pi * u3;
    z[0] = r01 * ag_cos(t1);
    z[1] = r01 * ag_sin(t1);
    z[2] = r23 * ag_cos(t3);
    z[3] = r23 * ag_sin(t3);
}

}  // namespace arraygen
