#ifndef CSOAKHEAP_H
#define CSOAKHEAP_H
#include <stddef.h>

/// Bytes malloc hands out now over every arena: what the arenas took from the system, less their
/// free chunks, plus mmapped large blocks (from glibc's malloc_info; malloc.h is not part of
/// Swift's Glibc module).
size_t soak_heap_in_use(void);

#endif
