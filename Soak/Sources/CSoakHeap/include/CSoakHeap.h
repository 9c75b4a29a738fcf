#ifndef CSOAKHEAP_H
#define CSOAKHEAP_H
#include <stddef.h>

/// Bytes malloc hands out now: small blocks plus mmapped large ones (glibc's mallinfo2, which
/// Swift's Glibc module does not import: malloc.h is not part of it).
size_t soak_heap_in_use(void);

#endif
