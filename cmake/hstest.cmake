# Test registration shared by every module's CMakeLists.txt.
#
#   hs_unit_test(NAME LIBS...)   builds tests/unit/NAME.c (cmocka) and runs it
#   hs_py_test(NAME [NOT_SANITIZED])
#                                runs tests/integration/NAME.py against build/bin
#   hs_fuzz_target(NAME SRC LIB) a libFuzzer target over LIB (see below)
#
# Every test gets a hard timeout so that a hung process cannot stall CI.

set(HS_TEST_ENV
  "HS_BIN_DIR=${CMAKE_BINARY_DIR}/bin"
  "HS_SOURCE_DIR=${CMAKE_SOURCE_DIR}"
  "HS_SANITIZE=$<BOOL:${HS_SANITIZE}>"
  "ASAN_OPTIONS=detect_leaks=1:abort_on_error=1"
  "UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1"
  "PYTHONDONTWRITEBYTECODE=1")

function(hs_unit_test name)
  add_executable(${name} ${CMAKE_SOURCE_DIR}/tests/unit/${name}.c)
  target_link_libraries(${name} PRIVATE ${ARGN} PkgConfig::CMOCKA)
  set_target_properties(${name} PROPERTIES RUNTIME_OUTPUT_DIRECTORY
                        ${CMAKE_BINARY_DIR}/tests)
  add_test(NAME unit.${name} COMMAND ${name})
  set_tests_properties(unit.${name} PROPERTIES TIMEOUT 300
                       ENVIRONMENT "${HS_TEST_ENV}")
endfunction()

function(hs_py_test name)
  # NOT_SANITIZED: a test of the harness, the pages or the benchmarks, whose
  # C code paths the sanitized build already runs in other tests; it runs
  # in the normal build only, which keeps CI's time down.
  if(HS_SANITIZE AND "NOT_SANITIZED" IN_LIST ARGN)
    return()
  endif()
  add_test(NAME integration.${name}
           COMMAND ${Python3_EXECUTABLE} -m unittest -v ${name}
           WORKING_DIRECTORY ${CMAKE_SOURCE_DIR}/tests/integration)
  set_tests_properties(integration.${name} PROPERTIES TIMEOUT 600
                       ENVIRONMENT "${HS_TEST_ENV}")
endfunction()

# A libFuzzer target: SRC defines LLVMFuzzerTestOneInput over LIB, with
# its seed inputs in fuzz/seeds beside SRC.  Every build replays the seeds
# once (unit.fuzz_NAME_seeds, through tests/fuzz/replay_main.c); with
# -DHS_FUZZ=ON (clang, as ./hammerstack test builds build-fuzz/) the target
# is built with libFuzzer and fuzz.NAME runs it for HS_FUZZ_SECONDS.
option(HS_FUZZ "Build the libFuzzer targets (needs clang)" OFF)
set(HS_FUZZ_SECONDS 20 CACHE STRING "How long each fuzz test runs")
if(HS_FUZZ AND NOT CMAKE_C_COMPILER_ID MATCHES "Clang")
  message(FATAL_ERROR "HS_FUZZ needs clang: CC=clang cmake -DHS_FUZZ=ON ...")
endif()

function(hs_fuzz_target name src lib)
  get_filename_component(dir ${CMAKE_CURRENT_SOURCE_DIR}/${src} DIRECTORY)
  set(seeds ${dir}/seeds)
  if(HS_FUZZ)
    target_compile_options(${lib} PRIVATE -fsanitize=fuzzer-no-link)
    add_executable(fuzz_${name} ${src})
    target_compile_options(fuzz_${name} PRIVATE -fsanitize=fuzzer)
    target_link_options(fuzz_${name} PRIVATE -fsanitize=fuzzer)
    target_link_libraries(fuzz_${name} PRIVATE ${lib})
    set(corpus ${CMAKE_BINARY_DIR}/fuzz-corpus/${name})
    file(MAKE_DIRECTORY ${corpus})
    add_test(NAME fuzz.${name}
             COMMAND fuzz_${name} -max_total_time=${HS_FUZZ_SECONDS}
                     -timeout=10 -rss_limit_mb=2048 -print_final_stats=1
                     ${corpus} ${seeds})
    set_tests_properties(fuzz.${name} PROPERTIES
                         TIMEOUT 300 ENVIRONMENT "${HS_TEST_ENV}")
  else()
    add_executable(fuzz_${name}_seeds ${src}
                   ${CMAKE_SOURCE_DIR}/tests/fuzz/replay_main.c)
    target_link_libraries(fuzz_${name}_seeds PRIVATE ${lib})
    set_target_properties(fuzz_${name}_seeds PROPERTIES
                          RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/tests)
    add_test(NAME unit.fuzz_${name}_seeds
             COMMAND fuzz_${name}_seeds ${seeds})
    set_tests_properties(unit.fuzz_${name}_seeds PROPERTIES
                         TIMEOUT 120 ENVIRONMENT "${HS_TEST_ENV}")
  endif()
endfunction()
