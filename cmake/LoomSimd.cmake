# SIMD target of a program. Loom's kernels give the same bits on every target; the target
# only decides speed. The loom::loom target itself adds no -m flags: a consumer's own
# flags choose (e.g. -march=native), and the headers follow xsimd's default architecture.
#   native  -march=native (this machine's best)
#   avx512  AVX-512 F/BW/DQ/VL with AVX2, FMA instructions (never contracted) and F16C
#   avx2    AVX2 + FMA + F16C
#   sse2    the x86-64 baseline
#   scalar  plain C++ (LOOM_SIMD_SCALAR), no auto-vectorisation either
set(LOOM_SIMD_LEVELS native avx512 avx2 sse2 scalar)

function(loom_target_simd target scope level)
  if(level STREQUAL "native")
    target_compile_options(${target} ${scope} -march=native)
  elseif(level STREQUAL "avx512")
    target_compile_options(${target} ${scope} -mavx512f -mavx512bw -mavx512dq -mavx512vl -mavx2 -mfma -mf16c -mbmi2)
  elseif(level STREQUAL "avx2")
    target_compile_options(${target} ${scope} -mavx2 -mfma -mf16c -mbmi2)
  elseif(level STREQUAL "sse2")
    # The x86-64 baseline: nothing to add.
  elseif(level STREQUAL "scalar")
    target_compile_definitions(${target} ${scope} LOOM_SIMD_SCALAR)
    target_compile_options(${target} ${scope} -fno-tree-vectorize)
  else()
    message(FATAL_ERROR "loom: unknown SIMD level '${level}' (one of: ${LOOM_SIMD_LEVELS})")
  endif()
endfunction()
