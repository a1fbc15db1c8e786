// Small inline-PTX wrappers for the sm_80+ tensor-core kernels: cp.async, ldmatrix, mma.sync
// m16n8k16 (f16/bf16 -> f32), packed conversions and the fast exponential. Kept apart from the
// algorithms so that every kernel family spells each instruction the same way. Operand layouts are
// those of the PTX ISA ("Matrix fragments for mma.m16n8k16"); the comments name what the caller
// must supply.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <type_traits>

namespace qkv2ctx::cuda::ptx {

// 32-bit shared-memory address of a generic pointer into shared memory (what ldmatrix/cp.async take).
__device__ __forceinline__ std::uint32_t smem_u32(const void* p) {
  return static_cast<std::uint32_t>(__cvta_generic_to_shared(p));
}

// ---- cp.async (sm_80) ------------------------------------------------------------------------------

// 16 bytes global -> shared, cached in L2 only (.cg: the tiles are staged in shared memory, L1 would
// only duplicate them). With valid == false nothing is read and the 16 bytes are zero-filled, which is
// how out-of-range rows are handled without a branch around the copy.
__device__ __forceinline__ void cp_async_16(std::uint32_t smem_dst, const void* gmem_src, bool valid) {
  const int src_bytes = valid ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_dst), "l"(gmem_src),
               "r"(src_bytes)
               : "memory");
}

__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }

// Waits until at most `kPending` of this thread's most recent commit groups are still in flight.
template <int kPending>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending) : "memory");
}

// ---- ldmatrix --------------------------------------------------------------------------------------

// Four 8x8 b16 matrices; lanes 8i..8i+7 supply the row addresses of matrix i (16-byte aligned rows).
// Thread l receives, in r[i], row l/4, columns 2(l%4) and 2(l%4)+1 of matrix i.
__device__ __forceinline__ void ldmatrix_x4(std::uint32_t (&r)[4], std::uint32_t smem_addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr));
}

// As ldmatrix_x4, transposed: thread l receives rows 2(l%4) and 2(l%4)+1 of column l/4 of matrix i.
__device__ __forceinline__ void ldmatrix_x4_trans(std::uint32_t (&r)[4], std::uint32_t smem_addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr));
}

// ---- mma.sync m16n8k16, f32 accumulators ------------------------------------------------------------

// d += a * b with a 16x16 (row-major fragment: a[0] rows g / cols 2t.., a[1] rows g+8, a[2] rows g /
// cols 2t+8.., a[3] rows g+8 / cols 2t+8..), b 16x8 (b0: k rows 2t, 2t+1 of column g; b1: k rows
// 2t+8, 2t+9), d 16x8 (d[0..1]: row g, cols 2t, 2t+1; d[2..3]: row g+8), g = lane/4, t = lane%4.
// Elem selects the input type: __half or __nv_bfloat16.
template <class Elem>
__device__ __forceinline__ void mma_m16n8k16(float (&d)[4], const std::uint32_t (&a)[4], std::uint32_t b0,
                                             std::uint32_t b1) {
  if constexpr (std::is_same_v<Elem, __half>) {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
        "{%8, %9}, {%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  } else {
    static_assert(std::is_same_v<Elem, __nv_bfloat16>, "mma_m16n8k16: __half or __nv_bfloat16");
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
        "{%8, %9}, {%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
}

// ---- conversions and special functions --------------------------------------------------------------

// Two floats rounded to nearest even into one 32-bit register of Elem pairs: `lo` in bits 0..15
// (the lower column index of a fragment), `hi` in bits 16..31.
template <class Elem>
__device__ __forceinline__ std::uint32_t pack2_rn(float lo, float hi) {
  std::uint32_t r;
  if constexpr (std::is_same_v<Elem, __half>) {
    asm("cvt.rn.f16x2.f32 %0, %1, %2;\n" : "=r"(r) : "f"(hi), "f"(lo));
  } else {
    static_assert(std::is_same_v<Elem, __nv_bfloat16>, "pack2_rn: __half or __nv_bfloat16");
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;\n" : "=r"(r) : "f"(hi), "f"(lo));
  }
  return r;
}

// 2^x on the MUFU unit (relative error ~2^-22, denormal results flushed to zero; 2^-inf = +0).
__device__ __forceinline__ float exp2_approx(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}

}  // namespace qkv2ctx::cuda::ptx
