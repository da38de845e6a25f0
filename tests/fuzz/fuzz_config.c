/*
 * libFuzzer target: the config loader on whole files, as the daemon reads
 * them (config_load_buffer is what config_load calls), every value parser
 * included; an accepted config is dumped too, which formats every value.
 * Host names are answered from literals only (see fuzz_getaddrinfo.c), so
 * a run never waits on DNS.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "config.h"
#include "fuzz.h"

/* One input: load it, dump or print the errors, free everything. */
int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct config_errors errs;
	struct config *cfg;
	FILE *sink;

	sink = fuzz_sink();
	cfg = config_load_buffer("fuzz.ini", (const char *)data, size, &errs);
	if (cfg != NULL) {
		config_dump(cfg, sink);
		config_free(cfg);
	} else
		config_errors_print(&errs, sink);
	config_errors_clear(&errs);
	return 0;
}
