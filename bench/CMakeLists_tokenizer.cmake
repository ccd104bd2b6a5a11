# Standalone tokenizer benchmark; not included by the build. To use it, include this file
# from the top-level CMakeLists.txt after bitrack_core is defined, or build by hand (see
# the header of bench_tokenizer.c).
add_executable(bench_tokenizer ${CMAKE_SOURCE_DIR}/bench/bench_tokenizer.c)
target_compile_definitions(bench_tokenizer PRIVATE BR_BENCH_TOKENIZER_STANDALONE)
target_compile_options(bench_tokenizer PRIVATE ${BR_WARNINGS})
target_link_libraries(bench_tokenizer PRIVATE bitrack_core)
