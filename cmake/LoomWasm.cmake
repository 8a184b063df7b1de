# WebAssembly builds of Loom's own programs, beside the native ones: the proof that the
# same headers give the same bits under Emscripten (SIMD128), and its speed. One CMake build
# cannot use two compilers for C++, so em++ runs as custom commands. Node.js runs the
# result (a single .js file with the .wasm inside; it reads and writes the real filesystem,
# and its threads are Web Workers); loom_generate is also linked for browsers.
#
# A consumer builds its own program the same way: em++ with the flags below, the `include`
# folder and the header-only dependencies on the include path (see docs/webassembly.md).
set(LOOM_WASM AUTO CACHE STRING "Build and test Loom's programs for WebAssembly with Emscripten's em++ and Node.js (AUTO: when both are found; ON, OFF)")
set_property(CACHE LOOM_WASM PROPERTY STRINGS AUTO ON OFF)

set(LOOM_WASM_ENABLED OFF)
if(NOT LOOM_WASM STREQUAL "OFF")
  find_program(LOOM_EMXX NAMES em++)
  find_program(LOOM_WASM_NODE NAMES node nodejs)
  if(LOOM_EMXX AND LOOM_WASM_NODE)
    set(LOOM_WASM_ENABLED ON)
  elseif(LOOM_WASM STREQUAL "ON")
    message(FATAL_ERROR "loom: LOOM_WASM=ON but em++ or node was not found. On Debian/Ubuntu: apt-get install emscripten nodejs")
  endif()
endif()
message(STATUS "loom: WebAssembly builds and tests: ${LOOM_WASM_ENABLED}")

if(LOOM_WASM_ENABLED)
  # em++ must not see /usr/include itself (glibc's headers break it), which is where the
  # header-only dependencies usually are: it gets a folder of links to just those.
  set(LOOM_WASM_INCLUDE_DIR "${PROJECT_BINARY_DIR}/wasm-include")
  file(MAKE_DIRECTORY "${LOOM_WASM_INCLUDE_DIR}")
  foreach(header IN ITEMS xtensor/xtensor.hpp xtl/xtl_config.hpp xsimd/xsimd.hpp nlohmann/json.hpp)
    string(REGEX REPLACE "/.*" "" library "${header}")
    string(MAKE_C_IDENTIFIER "${library}" key)
    find_path(LOOM_WASM_${key}_PARENT ${header})
    if(NOT LOOM_WASM_${key}_PARENT)
      message(FATAL_ERROR "loom: ${header} not found for the WebAssembly builds")
    endif()
    file(CREATE_LINK "${LOOM_WASM_${key}_PARENT}/${library}" "${LOOM_WASM_INCLUDE_DIR}/${library}" SYMBOLIC)
  endforeach()

  # Debian's emscripten finds its JavaScript optimiser's modules through NODE_PATH.
  set(LOOM_WASM_ENVIRONMENT "")
  if(EXISTS /usr/share/nodejs/acorn)
    set(LOOM_WASM_ENVIRONMENT NODE_PATH=/usr/share/nodejs)
  endif()

  file(GLOB_RECURSE LOOM_WASM_HEADERS CONFIGURE_DEPENDS "${PROJECT_SOURCE_DIR}/include/loom/*.hpp")

  # -ffp-contract=off: as natively (WebAssembly SIMD has no fused multiply-add, but the
  # scalar code must not get one either). -msimd128: the kernels' four-lane registers.
  set(LOOM_WASM_COMPILE_FLAGS
    -std=c++20 -O2 -msimd128 -ffp-contract=off -DLOOM_FP_CONTRACT_OFF -fexceptions -pthread
    -I${PROJECT_SOURCE_DIR}/include -isystem ${LOOM_WASM_INCLUDE_DIR})
  # Threads: a pool of 8 Web Workers started with the program; more start when asked.
  # Memory: up to 4 GiB, the most a 32-bit address space holds.
  set(LOOM_WASM_LINK_FLAGS
    -O2 -msimd128 -fexceptions -pthread -sPTHREAD_POOL_SIZE=8 -sEXIT_RUNTIME=1
    -sALLOW_MEMORY_GROWTH=1 -sMAXIMUM_MEMORY=4GB -Wno-pthreads-mem-growth)
  # Node.js: one .js file with the .wasm inside, on the real filesystem.
  set(LOOM_WASM_NODE_FLAGS -sNODERAWFS=1 -sSINGLE_FILE=1)
  # Browsers: a module factory (EXPORT_NAME) whose main() runs on a worker, so that it may
  # wait for its threads, with Emscripten's in-memory filesystem exported as FS.
  set(LOOM_WASM_WEB_FLAGS -sMODULARIZE=1 -sPROXY_TO_PTHREAD=1 -sENVIRONMENT=web,worker -sEXPORTED_RUNTIME_METHODS=FS)
endif()

# loom_add_wasm_program(<target> NODE <program.js> [WEB <program.js> EXPORT_NAME <name>]
#                       SOURCES <file>... [DEFINITIONS <NAME=value>...])
# compiles the sources once with em++ and links them for Node.js and, with WEB, for
# browsers (then <program.js> beside a .wasm and a .worker.js), in the default build.
function(loom_add_wasm_program target)
  cmake_parse_arguments(PARSE_ARGV 1 wasm "" "NODE;WEB;EXPORT_NAME" "SOURCES;DEFINITIONS")
  list(TRANSFORM wasm_DEFINITIONS PREPEND -D)
  set(objects "")
  foreach(source IN LISTS wasm_SOURCES)
    get_filename_component(name "${source}" NAME_WE)
    set(object "${CMAKE_CURRENT_BINARY_DIR}/${target}.dir/${name}.o")
    add_custom_command(
      OUTPUT "${object}"
      COMMAND ${CMAKE_COMMAND} -E make_directory "${CMAKE_CURRENT_BINARY_DIR}/${target}.dir"
      COMMAND ${CMAKE_COMMAND} -E env ${LOOM_WASM_ENVIRONMENT}
              ${LOOM_EMXX} ${LOOM_WASM_COMPILE_FLAGS} ${wasm_DEFINITIONS} -c "${source}" -o "${object}"
      DEPENDS "${source}" ${LOOM_WASM_HEADERS}
      COMMENT "em++ ${name}.cpp (WebAssembly SIMD128)"
      VERBATIM)
    list(APPEND objects "${object}")
  endforeach()
  set(outputs "")
  foreach(kind IN ITEMS NODE WEB)
    if(NOT wasm_${kind})
      continue()
    endif()
    set(flags ${LOOM_WASM_${kind}_FLAGS})
    if(kind STREQUAL "WEB")
      list(APPEND flags -sEXPORT_NAME=${wasm_EXPORT_NAME})
    endif()
    get_filename_component(folder "${wasm_${kind}}" DIRECTORY)
    add_custom_command(
      OUTPUT "${wasm_${kind}}"
      COMMAND ${CMAKE_COMMAND} -E make_directory "${folder}"
      COMMAND ${CMAKE_COMMAND} -E env ${LOOM_WASM_ENVIRONMENT}
              ${LOOM_EMXX} ${LOOM_WASM_LINK_FLAGS} ${flags} ${objects} -o "${wasm_${kind}}"
      DEPENDS ${objects}
      COMMENT "em++ ${target}: ${wasm_${kind}}"
      VERBATIM)
    list(APPEND outputs "${wasm_${kind}}")
  endforeach()
  add_custom_target(${target} ALL DEPENDS ${outputs})
endfunction()
