#pragma once
// Build-mode checks shared by every Loom header.
// Loom promises bit-identical results across builds; -ffast-math breaks that promise
// (reassociated sums, flushed subnormals, assumed-finite values), so refuse it outright.
#if defined(__FAST_MATH__)
#error "Loom needs IEEE floating point: compile without -ffast-math (and with -ffp-contract=off)"
#endif

// Contracting a * b + c into one fused multiply-add changes results between targets, and
// no pragma turns it off portably, so the build must: the loom::loom CMake target passes
// -ffp-contract=off together with LOOM_FP_CONTRACT_OFF. Other builds pass both by hand.
#if !defined(LOOM_FP_CONTRACT_OFF)
#error "Loom needs -ffp-contract=off: use the loom::loom CMake target, or compile with -ffp-contract=off -DLOOM_FP_CONTRACT_OFF"
#endif

// LOOM_NATIVE_FAST selects the native-fast kernels: fused multiply-adds, and on CPUs with
// AVX-512 BF16, bf16 weights multiplied by activations rounded to bf16 (the way llama.cpp
// runs bf16 models). Results stay bit-identical for any thread count, batch composition and
// prefill chunking, but differ from the portable kernels and between CPU families.
// Defined by the CMake option LOOM_NATIVE_FAST for Loom's own programs, or by hand.
#if defined(LOOM_NATIVE_FAST) && defined(__FMA__)
#define LOOM_USE_FMA 1
#endif
#if defined(LOOM_NATIVE_FAST) && defined(__AVX512BF16__) && defined(__AVX512BW__)
#define LOOM_USE_BF16_DOT 1
#endif

#define LOOM_VERSION_MAJOR 0
#define LOOM_VERSION_MINOR 1
#define LOOM_VERSION_PATCH 0
