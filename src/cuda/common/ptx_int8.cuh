// Inline-PTX wrappers for the 8-bit tensor-core path (sm_80+): mma.sync m16n8k32 s8·s8 -> s32, byte
// permutes, named barriers, and the exact int32 <-> float conversions the INT8 kernels do on the FMA
// pipe instead of the conversion unit. cp.async / ldmatrix come from ptx.cuh.
//
// Fragment layouts of mma.m16n8k32 .s8 (PTX ISA, "Matrix fragments for mma.m16n8k32"), with
// g = lane / 4 and q = lane % 4:
//   A (16x32, row-major): a[0] row g,   k 4q..4q+3      a[1] row g+8, k 4q..4q+3
//                         a[2] row g,   k 16+4q..+3     a[3] row g+8, k 16+4q..+3   (byte i = k +i)
//   B (32x8, "col"):      b0   col g,   k 4q..4q+3      b1   col g,   k 16+4q..+3
//   C (16x8, s32):        c[0], c[1] row g, cols 2q, 2q+1;   c[2], c[3] row g+8, cols 2q, 2q+1
#pragma once
#include <cstdint>

namespace qkv2ctx::cuda::ptx {

// d += a * b, exact int32 accumulation of int8 products.
__device__ __forceinline__ void mma_m16n8k32_s8(int (&d)[4], const std::uint32_t (&a)[4], std::uint32_t b0,
                                                std::uint32_t b1) {
  asm("mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Byte i of the result is byte (selector nibble i) of the 8-byte value {hi:lo} (PRMT).
__device__ __forceinline__ std::uint32_t byte_perm(std::uint32_t lo, std::uint32_t hi, std::uint32_t selector) {
  return __byte_perm(lo, hi, selector);
}

// The low bytes of four 32-bit values, in order, in one register (3 PRMT).
__device__ __forceinline__ std::uint32_t pack_low_bytes(std::uint32_t b0, std::uint32_t b1, std::uint32_t b2,
                                                        std::uint32_t b3) {
  const std::uint32_t lo = __byte_perm(b0, b1, 0x0040);  // [b0.0, b1.0, -, -]
  const std::uint32_t hi = __byte_perm(b2, b3, 0x0040);  // [b2.0, b3.0, -, -]
  return __byte_perm(lo, hi, 0x5410);
}

// bar.sync on a named barrier (ids 1..15; 0 is __syncthreads) for `threads` threads (a multiple of 32)
// of the CTA: lets a group of warps synchronize without stopping the others.
__device__ __forceinline__ void named_barrier_sync(int id, int threads) {
  asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}

// Shared-memory accesses by 32-bit address (one register per address instead of a 64-bit generic
// pointer: the resident kernel keeps 64 exponentials per thread live and every register counts).
__device__ __forceinline__ void st_shared_v4(std::uint32_t addr, uint4 v) {
  asm volatile("st.shared.v4.b32 [%0], {%1, %2, %3, %4};\n" ::"r"(addr), "r"(v.x), "r"(v.y), "r"(v.z), "r"(v.w)
               : "memory");
}
__device__ __forceinline__ uint4 ld_shared_v4(std::uint32_t addr) {
  uint4 v;
  asm volatile("ld.shared.v4.b32 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
               : "r"(addr)
               : "memory");
  return v;
}
__device__ __forceinline__ void st_shared_b32(std::uint32_t addr, std::uint32_t v) {
  asm volatile("st.shared.b32 [%0], %1;\n" ::"r"(addr), "r"(v) : "memory");
}
__device__ __forceinline__ std::uint32_t ld_shared_b32(std::uint32_t addr) {
  std::uint32_t v;
  asm volatile("ld.shared.b32 %0, [%1];\n" : "=r"(v) : "r"(addr) : "memory");
  return v;
}

// The value, hidden from the optimizer: address arithmetic derived from it inside a loop is redone
// each iteration instead of being hoisted out and kept in (dozens of) registers for the whole loop.
__device__ __forceinline__ std::uint32_t opaque(std::uint32_t v) {
  asm volatile("mov.b32 %0, %0;\n" : "+r"(v));
  return v;
}

// 1.5 * 2^23: a float in [2^23, 2^24) has an ulp of 1, so adding it to |x| < 2^22 rounds x to an
// integer (to nearest even) held in the low mantissa bits, two's complement around the constant.
inline constexpr float kRoundMagic = 12582912.0f;

// Exact int32 -> float for |v| < 2^22 on the FMA pipe: the bit pattern 0x4B400000 + v is the float
// 1.5 * 2^23 + v (its unit in the last place is 1), and subtracting 1.5 * 2^23 is exact. (I2F runs on
// the quarter-rate conversion unit, which the exponential needs.) BMM1 accumulators satisfy the bound
// for D <= 128: |q.k| <= 128 * 128 * 128 = 2^21.
__device__ __forceinline__ float small_int_to_float(int v) {
  return __fsub_rn(__uint_as_float(0x4B400000u + static_cast<unsigned>(v)), kRoundMagic);  // bits of kRoundMagic
}

// Round-to-nearest-even of x in [0, 2^22) to an integer whose low byte is returned in bits 0..7 of the
// result (upper bits hold the exponent of 1.5 * 2^23 and must be ignored): cvt.rni without the
// conversion unit. Callers clamp x to [0, 127] first, so the byte is the int8 value.
__device__ __forceinline__ std::uint32_t rne_to_low_byte(float x) {
  return static_cast<std::uint32_t>(__float_as_int(__fadd_rn(x, kRoundMagic)));
}

// sat8(RNE(x)) (NaN -> 0) in bits 0..7 of the result, the rest sign bits: cvt.rni.sat.s8.f32, one
// conversion instruction instead of a rounding plus two clamps.
__device__ __forceinline__ std::uint32_t sat_s8_rne(float x) {
  std::uint32_t r;
  asm("cvt.rni.sat.s8.f32 %0, %1;" : "=r"(r) : "f"(x));
  return r;
}

}  // namespace qkv2ctx::cuda::ptx
