#ifndef KV_PREFETCH_H
#define KV_PREFETCH_H

/// Asks the CPU to start loading the cache line at `address` (a hint: it never faults, whatever
/// the address, and changes nothing). Swift has no prefetch of its own.
static inline void kv_prefetch(const void *address) {
    __builtin_prefetch(address, 0, 3);
}

#endif
