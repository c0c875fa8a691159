#ifndef KV_CLIBFUZZER_H
#define KV_CLIBFUZZER_H
#include <stddef.h>
#include <stdint.h>

/// libFuzzer's driver (compiler-rt, linked by -sanitize=fuzzer). kv-fuzz calls it from its own
/// entry point: SwiftPM aliases an executable's `main` to the module's entry point, which
/// would otherwise take the place of libFuzzer's `main`. Referenced only in fuzzing builds.
int LLVMFuzzerRunDriver(int *argc, char ***argv, int (*callback)(const uint8_t *data, size_t size));

#endif
