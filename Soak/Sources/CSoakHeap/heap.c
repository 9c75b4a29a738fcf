#include "CSoakHeap.h"
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// Reads size="N" of the first element that starts with `tag` at or after `from`.
static size_t size_of(const char *from, const char *tag) {
    const char *p = strstr(from, tag);
    if (!p) return 0;
    const char *size = strstr(p, "size=\"");
    return size ? strtoull(size + 6, NULL, 10) : 0;
}

size_t soak_heap_in_use(void) {
    // mallinfo2 covers only the main arena, and the loops allocate on their own threads' arenas;
    // malloc_info reports every arena, with totals after the last one.
    char *text = NULL;
    size_t length = 0;
    FILE *out = open_memstream(&text, &length);
    if (!out) return 0;
    malloc_info(0, out);
    fclose(out);
    const char *totals = text, *p;
    while ((p = strstr(totals, "</heap>"))) totals = p + 7;
    size_t system = size_of(totals, "<system type=\"current\"");
    size_t free_fast = size_of(totals, "<total type=\"fast\"");
    size_t free_rest = size_of(totals, "<total type=\"rest\"");
    size_t mapped = size_of(totals, "<total type=\"mmap\"");
    free(text);
    return system - free_fast - free_rest + mapped;
}
