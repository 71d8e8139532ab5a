/* The entry point of every fuzz target: libFuzzer's, or replay.c's main in a
 * build without libFuzzer. Returns 0; a finding is a crash or an abort(). */
#ifndef HB_FUZZ_H
#define HB_FUZZ_H

#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#endif
