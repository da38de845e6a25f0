/*
 * What the fuzz targets share: the libFuzzer entry point every target
 * defines, and a sink for the text they format. The same targets are
 * linked into a replay driver (replay.c) that make check runs with any
 * compiler, so the seed corpus is also a regression suite.
 */
#ifndef CP_FUZZ_H
#define CP_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

int LLVMFuzzerTestOneInput(const uint8_t *, size_t);
FILE *fuzz_sink(void);

#endif
