/* placeholder */
#include "harness.h"
extern int cp_placeholder_harness;
