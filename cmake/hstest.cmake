# Test registration shared by every module's CMakeLists.txt.
#
#   hs_unit_test(NAME LIBS...)   builds tests/unit/NAME.c (cmocka) and runs it
#   hs_py_test(NAME)             runs tests/integration/NAME.py against build/bin
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
  add_test(NAME integration.${name}
           COMMAND ${Python3_EXECUTABLE} -m unittest -v ${name}
           WORKING_DIRECTORY ${CMAKE_SOURCE_DIR}/tests/integration)
  set_tests_properties(integration.${name} PROPERTIES TIMEOUT 600
                       ENVIRONMENT "${HS_TEST_ENV}")
endfunction()
