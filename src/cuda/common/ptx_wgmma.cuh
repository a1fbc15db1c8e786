// Inline-PTX wrappers for the sm_90a warpgroup MMA (wgmma) of the Hopper FP16/BF16 kernels. Compiled
// only for sm_90a (__CUDA_ARCH_FEAT_SM90_ALL); on other targets the wrappers trap, and the host never
// launches a kernel that reaches them there (the planner takes the Hopper tiles on SM 9.0 only).
//
// Shared-memory operands are addressed by matrix descriptors (PTX ISA, "Matrix Descriptor Format"):
// start address, leading byte offset (LBO), stride byte offset (SBO) and the layout type (bits 62-63,
// e.g. 1 = 128-byte swizzle), all addresses in 16-byte units. The canonical layouts and what LBO / SBO
// mean for K-major and MN-major operands are those of the PTX ISA (CUTLASS documents the same forms in
// cute/atom/mma_traits_sm90_gmma.hpp, make_gmma_desc); the kernel that lays out its tiles says which.
// V as the B operand of P·V is MN-major ([keys][D] as stored), which 16-bit types allow through
// imm-trans-b.
//
// Accumulators are float d[N/8][4]: d[j][i] is the mma.m16n8 C fragment element i of n-tile j (8
// columns) of the warp's 16 rows of the 64-row tile: rows g (i = 0, 1) and g + 8 (i = 2, 3), columns
// 8j + 2q + (i & 1), g = lane / 4, q = lane % 4 (the layout the sm_80 kernels' softmax already uses).
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <type_traits>

namespace qkv2ctx::cuda::ptx {

#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define QKV2CTX_WGMMA_ENABLED 1
#endif

// Matrix descriptor with layout type 0 (no swizzle) at shared address `addr`; a swizzled layout ORs its
// type into bits 62-63.
__device__ __forceinline__ std::uint64_t wgmma_desc(std::uint32_t addr, std::uint32_t lbo_bytes,
                                                    std::uint32_t sbo_bytes) {
  return static_cast<std::uint64_t>((addr & 0x3FFFFu) >> 4) |
         (static_cast<std::uint64_t>((lbo_bytes >> 4) & 0x3FFFu) << 16) |
         (static_cast<std::uint64_t>((sbo_bytes >> 4) & 0x3FFFu) << 32);  // layout type 0: no swizzle
}

__device__ __forceinline__ void wgmma_fence() {
#ifdef QKV2CTX_WGMMA_ENABLED
  asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#else
  __trap();
#endif
}
__device__ __forceinline__ void wgmma_commit() {
#ifdef QKV2CTX_WGMMA_ENABLED
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
#else
  __trap();
#endif
}
template <int kPending>
__device__ __forceinline__ void wgmma_wait() {
#ifdef QKV2CTX_WGMMA_ENABLED
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(kPending) : "memory");
#else
  __trap();
#endif
}

// Shared-memory writes of the generic proxy (st.shared, cp.async) become visible to the async proxy
// wgmma reads through: each writer fences after its writes complete, before the barrier that
// precedes the wgmma.
__device__ __forceinline__ void fence_proxy_async_shared() {
#ifdef QKV2CTX_WGMMA_ENABLED
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
#endif
}

// Four 8x8 b16 matrices stored to shared memory (sm_90): lanes 8i..8i+7 supply the row addresses of
// matrix i (16-byte rows); thread l supplies, in r[i], row l/4, columns 2(l%4) and 2(l%4)+1 of matrix i
// (the layout ldmatrix_x4 loads).
__device__ __forceinline__ void stmatrix_x4(std::uint32_t smem_addr, const std::uint32_t (&r)[4]) {
#ifdef QKV2CTX_WGMMA_ENABLED
  asm volatile("stmatrix.sync.aligned.m8n8.x4.shared.b16 [%0], {%1, %2, %3, %4};\n" ::"r"(smem_addr), "r"(r[0]),
               "r"(r[1]), "r"(r[2]), "r"(r[3])
               : "memory");
#else
  (void)smem_addr, (void)r;
  __trap();
#endif
}

// Pins accumulator registers in program order around an asynchronous wgmma: the empty asm "writes"
// them, so the compiler neither moves earlier writes past the wgmma nor reads the results before the
// wait that follows it. It orders values, not registers: an empty asm emits no PTX, and a "+" operand
// may be satisfied through a copy, so it cannot keep a wgmma's A registers from being reused before
// the wait (fused_wgmma.cuh writes new P only after the wait, ordered by a fence on its inputs).
template <int N>
__device__ __forceinline__ void wgmma_fence_operands(float (&d)[N][4]) {
#pragma unroll
  for (int j = 0; j < N; ++j)
#pragma unroll
    for (int i = 0; i < 4; ++i) asm volatile("" : "+f"(d[j][i])::"memory");
}

// Operand lists of the asm statements below, per N: the accumulator registers and the argument
// numbers that follow them (written out once: inline asm needs literal strings).
#define QKV2CTX_WGMMA_REGS_N32 "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15}"
#define QKV2CTX_WGMMA_ARG0_N32 "%16"
#define QKV2CTX_WGMMA_ARG1_N32 "%17"
#define QKV2CTX_WGMMA_ARG2_N32 "%18"
#define QKV2CTX_WGMMA_ARG3_N32 "%19"
#define QKV2CTX_WGMMA_ARG4_N32 "%20"
#define QKV2CTX_WGMMA_ARG5_N32 "%21"
#define QKV2CTX_WGMMA_REGS_N64 "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}"
#define QKV2CTX_WGMMA_ARG0_N64 "%32"
#define QKV2CTX_WGMMA_ARG1_N64 "%33"
#define QKV2CTX_WGMMA_ARG2_N64 "%34"
#define QKV2CTX_WGMMA_ARG3_N64 "%35"
#define QKV2CTX_WGMMA_ARG4_N64 "%36"
#define QKV2CTX_WGMMA_ARG5_N64 "%37"
#define QKV2CTX_WGMMA_REGS_N128 "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}"
#define QKV2CTX_WGMMA_ARG0_N128 "%64"
#define QKV2CTX_WGMMA_ARG1_N128 "%65"
#define QKV2CTX_WGMMA_ARG2_N128 "%66"
#define QKV2CTX_WGMMA_ARG3_N128 "%67"
#define QKV2CTX_WGMMA_ARG4_N128 "%68"
#define QKV2CTX_WGMMA_ARG5_N128 "%69"


// The accumulator operands of n-tile j (8 columns: 4 accumulators per thread) with constraint C ("+f"
// for f32, "+r" for s32); N columns = N/8 tiles.
#define QKV2CTX_WGMMA_ACC_TILE(d, j, C) C(d[j][0]), C(d[j][1]), C(d[j][2]), C(d[j][3])
#define QKV2CTX_WGMMA_ACC_N32(d, C)                                                      \
  QKV2CTX_WGMMA_ACC_TILE(d, 0, C), QKV2CTX_WGMMA_ACC_TILE(d, 1, C), QKV2CTX_WGMMA_ACC_TILE(d, 2, C), \
      QKV2CTX_WGMMA_ACC_TILE(d, 3, C)
#define QKV2CTX_WGMMA_ACC_N64(d, C)                                                                       \
  QKV2CTX_WGMMA_ACC_N32(d, C), QKV2CTX_WGMMA_ACC_TILE(d, 4, C), QKV2CTX_WGMMA_ACC_TILE(d, 5, C),           \
      QKV2CTX_WGMMA_ACC_TILE(d, 6, C), QKV2CTX_WGMMA_ACC_TILE(d, 7, C)
#define QKV2CTX_WGMMA_ACC_N128(d, C)                                                                      \
  QKV2CTX_WGMMA_ACC_N64(d, C), QKV2CTX_WGMMA_ACC_TILE(d, 8, C), QKV2CTX_WGMMA_ACC_TILE(d, 9, C),           \
      QKV2CTX_WGMMA_ACC_TILE(d, 10, C), QKV2CTX_WGMMA_ACC_TILE(d, 11, C), QKV2CTX_WGMMA_ACC_TILE(d, 12, C), \
      QKV2CTX_WGMMA_ACC_TILE(d, 13, C), QKV2CTX_WGMMA_ACC_TILE(d, 14, C), QKV2CTX_WGMMA_ACC_TILE(d, 15, C)

// d (+)= A·Bᵀ, m64nNk16, Elem x Elem -> f32, A and B K-major in shared memory (descriptors): the
// scores Q·Kᵀ. accumulate = false overwrites d.
#define QKV2CTX_WGMMA_SS(N, TY)                                                                       \
  asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, " QKV2CTX_WGMMA_ARG2_N##N ", 0;\n"                   \
               "wgmma.mma_async.sync.aligned.m64n" #N "k16.f32." TY "." TY " " QKV2CTX_WGMMA_REGS_N##N \
               ", " QKV2CTX_WGMMA_ARG0_N##N ", " QKV2CTX_WGMMA_ARG1_N##N ", p, 1, 1, 0, 0;\n}\n"        \
               : QKV2CTX_WGMMA_ACC_N##N(d, "+f")                                                      \
               : "l"(desc_a), "l"(desc_b), "r"(accumulate ? 1 : 0))

// d += A·B, m64nNk16, A from registers (the mma.m16n8k16 A fragment layout of the warp's 16 rows:
// P straight from the softmax), B MN-major in shared memory (imm-trans-b = 1: V as stored, [keys][D]).
#define QKV2CTX_WGMMA_RS(N, TY)                                                                        \
  asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, " QKV2CTX_WGMMA_ARG5_N##N ", 0;\n"                    \
               "wgmma.mma_async.sync.aligned.m64n" #N "k16.f32." TY "." TY " " QKV2CTX_WGMMA_REGS_N##N  \
               ", {" QKV2CTX_WGMMA_ARG0_N##N ", " QKV2CTX_WGMMA_ARG1_N##N ", " QKV2CTX_WGMMA_ARG2_N##N  \
               ", " QKV2CTX_WGMMA_ARG3_N##N "}, " QKV2CTX_WGMMA_ARG4_N##N ", p, 1, 1, 1;\n}\n"           \
               : QKV2CTX_WGMMA_ACC_N##N(d, "+f")                                                       \
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "r"(1))

template <class Elem, int N>
__device__ __forceinline__ void wgmma_ss(float (&d)[N / 8][4], std::uint64_t desc_a, std::uint64_t desc_b,
                                         bool accumulate) {
  static_assert(std::is_same_v<Elem, __half> || std::is_same_v<Elem, __nv_bfloat16>, "wgmma_ss: f16 or bf16");
  constexpr bool kHalf = std::is_same_v<Elem, __half>;
#ifdef QKV2CTX_WGMMA_ENABLED
  if constexpr (N == 64) {
    if constexpr (kHalf) QKV2CTX_WGMMA_SS(64, "f16"); else QKV2CTX_WGMMA_SS(64, "bf16");
  } else if constexpr (N == 128) {
    if constexpr (kHalf) QKV2CTX_WGMMA_SS(128, "f16"); else QKV2CTX_WGMMA_SS(128, "bf16");
  } else {
    static_assert(N == 64 || N == 128, "wgmma_ss: N = 64 or 128 (keys per K tile)");
  }
#else
  (void)d, (void)desc_a, (void)desc_b, (void)accumulate, (void)kHalf;
  __trap();
#endif
}

template <class Elem, int N>
__device__ __forceinline__ void wgmma_rs_trans_b(float (&d)[N / 8][4], const std::uint32_t (&a)[4],
                                                 std::uint64_t desc_b) {
  static_assert(std::is_same_v<Elem, __half> || std::is_same_v<Elem, __nv_bfloat16>, "wgmma_rs: f16 or bf16");
  constexpr bool kHalf = std::is_same_v<Elem, __half>;
#ifdef QKV2CTX_WGMMA_ENABLED
  if constexpr (N == 32) {
    if constexpr (kHalf) QKV2CTX_WGMMA_RS(32, "f16"); else QKV2CTX_WGMMA_RS(32, "bf16");
  } else if constexpr (N == 64) {
    if constexpr (kHalf) QKV2CTX_WGMMA_RS(64, "f16"); else QKV2CTX_WGMMA_RS(64, "bf16");
  } else if constexpr (N == 128) {
    if constexpr (kHalf) QKV2CTX_WGMMA_RS(128, "f16"); else QKV2CTX_WGMMA_RS(128, "bf16");
  } else {
    static_assert(N == 32 || N == 64 || N == 128, "wgmma_rs: N = 32, 64 or 128 (the head size)");
  }
#else
  (void)d, (void)a, (void)desc_b, (void)kHalf;
  __trap();
#endif
}

// The INT8 forms (s8 x s8 -> s32, m64nNk32; integer wgmma has no transpose or scale immediates, so
// both operands are K-major: V enters P·V transposed, see fused_sm90/int8_wgmma.cuh). The A registers of
// the RS form hold the mma.m16n8k32 A fragment of the warp's 16 rows (4 consecutive k per register:
// a0 row g / k 4q.., a1 row g+8, a2 row g / k 16+4q.., a3 row g+8); accumulators as above.
#define QKV2CTX_WGMMA_SS_S8(N)                                                                        \
  asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, " QKV2CTX_WGMMA_ARG2_N##N ", 0;\n"                   \
               "wgmma.mma_async.sync.aligned.m64n" #N "k32.s32.s8.s8 " QKV2CTX_WGMMA_REGS_N##N        \
               ", " QKV2CTX_WGMMA_ARG0_N##N ", " QKV2CTX_WGMMA_ARG1_N##N ", p;\n}\n"                  \
               : QKV2CTX_WGMMA_ACC_N##N(d, "+r")                                                      \
               : "l"(desc_a), "l"(desc_b), "r"(accumulate ? 1 : 0))
#define QKV2CTX_WGMMA_RS_S8(N)                                                                        \
  asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, " QKV2CTX_WGMMA_ARG5_N##N ", 0;\n"                   \
               "wgmma.mma_async.sync.aligned.m64n" #N "k32.s32.s8.s8 " QKV2CTX_WGMMA_REGS_N##N        \
               ", {" QKV2CTX_WGMMA_ARG0_N##N ", " QKV2CTX_WGMMA_ARG1_N##N ", " QKV2CTX_WGMMA_ARG2_N##N \
               ", " QKV2CTX_WGMMA_ARG3_N##N "}, " QKV2CTX_WGMMA_ARG4_N##N ", p;\n}\n"                 \
               : QKV2CTX_WGMMA_ACC_N##N(d, "+r")                                                      \
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "r"(accumulate ? 1 : 0))

// d (+)= A·Bᵀ, A and B K-major in shared memory (Q·Kᵀ); accumulate = false overwrites d.
template <int N>
__device__ __forceinline__ void wgmma_ss_s8(int (&d)[N / 8][4], std::uint64_t desc_a, std::uint64_t desc_b,
                                            bool accumulate) {
#ifdef QKV2CTX_WGMMA_ENABLED
  if constexpr (N == 64) QKV2CTX_WGMMA_SS_S8(64);
  else if constexpr (N == 128) QKV2CTX_WGMMA_SS_S8(128);
  else static_assert(N == 64 || N == 128, "wgmma_ss_s8: N = 64 or 128 (keys per K tile)");
#else
  (void)d, (void)desc_a, (void)desc_b, (void)accumulate;
  __trap();
#endif
}

// d (+)= A·B, A from registers, B K-major in shared memory (P·V with Vᵀ stored [D][keys]).
template <int N>
__device__ __forceinline__ void wgmma_rs_s8(int (&d)[N / 8][4], const std::uint32_t (&a)[4], std::uint64_t desc_b,
                                            bool accumulate) {
#ifdef QKV2CTX_WGMMA_ENABLED
  if constexpr (N == 32) QKV2CTX_WGMMA_RS_S8(32);
  else if constexpr (N == 64) QKV2CTX_WGMMA_RS_S8(64);
  else if constexpr (N == 128) QKV2CTX_WGMMA_RS_S8(128);
  else static_assert(N == 32 || N == 64 || N == 128, "wgmma_rs_s8: N = 32, 64 or 128 (the head size)");
#else
  (void)d, (void)a, (void)desc_b, (void)accumulate;
  __trap();
#endif
}

// wgmma_fence_operands for s32 accumulators and other 32-bit integer values.
template <class T, int N>
__device__ __forceinline__ void wgmma_fence_operands(T (&d)[N][4]) {
  static_assert(std::is_integral_v<T> && sizeof(T) == 4, "32-bit integers (floats: the overload above)");
#pragma unroll
  for (int j = 0; j < N; ++j)
#pragma unroll
    for (int i = 0; i < 4; ++i) asm volatile("" : "+r"(d[j][i])::"memory");
}

#undef QKV2CTX_WGMMA_SS_S8
#undef QKV2CTX_WGMMA_RS_S8
#undef QKV2CTX_WGMMA_SS
#undef QKV2CTX_WGMMA_RS
#undef QKV2CTX_WGMMA_ACC_TILE
#undef QKV2CTX_WGMMA_ACC_N32
#undef QKV2CTX_WGMMA_ARG0_N32
#undef QKV2CTX_WGMMA_ARG1_N32
#undef QKV2CTX_WGMMA_ARG2_N32
#undef QKV2CTX_WGMMA_ARG3_N32
#undef QKV2CTX_WGMMA_ARG4_N32
#undef QKV2CTX_WGMMA_ARG5_N32
#undef QKV2CTX_WGMMA_REGS_N32
#undef QKV2CTX_WGMMA_ACC_N128
#undef QKV2CTX_WGMMA_ACC_N64
#undef QKV2CTX_WGMMA_ARG0_N128
#undef QKV2CTX_WGMMA_ARG0_N64
#undef QKV2CTX_WGMMA_ARG1_N128
#undef QKV2CTX_WGMMA_ARG1_N64
#undef QKV2CTX_WGMMA_ARG2_N128
#undef QKV2CTX_WGMMA_ARG2_N64
#undef QKV2CTX_WGMMA_ARG3_N128
#undef QKV2CTX_WGMMA_ARG3_N64
#undef QKV2CTX_WGMMA_ARG4_N128
#undef QKV2CTX_WGMMA_ARG4_N64
#undef QKV2CTX_WGMMA_ARG5_N128
#undef QKV2CTX_WGMMA_ARG5_N64
#undef QKV2CTX_WGMMA_REGS_N128
#undef QKV2CTX_WGMMA_REGS_N64

}  // namespace qkv2ctx::cuda::ptx
