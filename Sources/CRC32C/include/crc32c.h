#ifndef KV_CRC32C_H
#define KV_CRC32C_H

#include <stddef.h>
#include <stdint.h>

/// CRC-32C (Castagnoli) of `length` bytes, continuing from `crc` (0 to start).
uint32_t kv_crc32c(uint32_t crc, const void *bytes, size_t length);

#endif
