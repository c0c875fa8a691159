// A C target needs a source file; kv_prefetch is inline in the header.
#include "prefetch.h"
