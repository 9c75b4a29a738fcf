// live-heap: an LD_PRELOAD library that shows which allocations a process keeps alive between two
// moments, grouped by size and call site. Used to find what an idle connection costs:
//   LD_PRELOAD=build/live-heap.so server &   kill -USR1 <pid>   (start recording)
//   ... open N idle connections ...          kill -USR2 <pid>   (dump to stderr)
// Only allocations made after USR1 and still live at USR2 are reported.
#define _GNU_SOURCE
#include <dlfcn.h>
#include <execinfo.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include <pthread.h>

#define SLOTS (1u << 22)
#define DEPTH 6
#define SKIP 3  // this library's own frames and swift_slowAlloc

typedef struct { void *ptr; size_t size; void *frames[DEPTH]; } slot_t;

static void *(*real_malloc)(size_t);
static void (*real_free)(void *);
static void *(*real_calloc)(size_t, size_t);
static void *(*real_realloc)(void *, size_t);
static int (*real_posix_memalign)(void **, size_t, size_t);
static slot_t *table;
static volatile int recording;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static __thread int inside;

static size_t hash(void *p) { return ((uintptr_t)p >> 4) * 0x9E3779B97F4A7C15ull >> 42 & (SLOTS - 1); }

static void remember(void *p, size_t size) {
    if (!p || !recording || inside) return;
    inside = 1;
    void *frames[DEPTH + SKIP];
    int n = backtrace(frames, DEPTH + SKIP);
    pthread_mutex_lock(&lock);
    size_t i = hash(p);
    while (table[i].ptr && table[i].ptr != (void *)1) i = (i + 1) & (SLOTS - 1);
    table[i].ptr = p;
    table[i].size = size;
    memset(table[i].frames, 0, sizeof(table[i].frames));
    for (int k = SKIP; k < n; k++) table[i].frames[k - SKIP] = frames[k];
    pthread_mutex_unlock(&lock);
    inside = 0;
}

static void forget(void *p) {
    if (!p || !table) return;
    pthread_mutex_lock(&lock);
    size_t i = hash(p);
    while (table[i].ptr) {
        if (table[i].ptr == p) { table[i].ptr = (void *)1; break; }  // tombstone
        i = (i + 1) & (SLOTS - 1);
    }
    pthread_mutex_unlock(&lock);
}

static int by_site(const void *a, const void *b) {
    const slot_t *x = a, *y = b;
    int c = memcmp(x->frames, y->frames, sizeof(x->frames));
    return c ? c : (x->size > y->size) - (x->size < y->size);
}

static void dump(int sig) {
    (void)sig;
    recording = 0;
    inside = 1;
    // Gather live records (the table is ours; a copy keeps sorting out of the hash order).
    static slot_t live[1 << 20];
    size_t count = 0, bytes = 0;
    pthread_mutex_lock(&lock);
    for (size_t i = 0; i < SLOTS && count < (1 << 20); i++)
        if ((uintptr_t)table[i].ptr > 1) { live[count++] = table[i]; bytes += table[i].size; }
    pthread_mutex_unlock(&lock);
    qsort(live, count, sizeof(slot_t), by_site);
    dprintf(2, "live-heap: %zu live allocations, %zu bytes requested\n", count, bytes);
    for (size_t i = 0; i < count;) {
        size_t j = i, sum = 0;
        while (j < count && !memcmp(live[j].frames, live[i].frames, sizeof(live[i].frames)) &&
               live[j].size == live[i].size) { sum += live[j].size; j++; }
        if (j - i >= 100) {
            dprintf(2, "== %zu x %zu bytes\n", j - i, live[i].size);
            int depth = 0;
            while (depth < DEPTH && live[i].frames[depth]) depth++;
            backtrace_symbols_fd(live[i].frames, depth, 2);
        }
        i = j;
    }
    inside = 0;
}

static void start(int sig) { (void)sig; recording = 1; }

static int resolving;
static char early[4096];  // dlsym's own calloc, before the real one is known
static size_t early_used;

static void resolve(void) {
    if (real_malloc || resolving) return;
    resolving = 1;
    real_calloc = dlsym(RTLD_NEXT, "calloc");
    real_malloc = dlsym(RTLD_NEXT, "malloc");
    real_free = dlsym(RTLD_NEXT, "free");
    real_realloc = dlsym(RTLD_NEXT, "realloc");
    real_posix_memalign = dlsym(RTLD_NEXT, "posix_memalign");
    resolving = 0;
}

__attribute__((constructor)) static void init(void) {
    resolve();
    table = mmap(NULL, SLOTS * sizeof(slot_t), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    void *warm[2];
    backtrace(warm, 2);  // loads the unwinder now, not inside malloc
    signal(SIGUSR1, start);
    signal(SIGUSR2, dump);
}

void *malloc(size_t n) { resolve(); void *p = real_malloc(n); remember(p, n); return p; }
void free(void *p) {
    if ((char *)p >= early && (char *)p < early + sizeof(early)) return;
    resolve(); forget(p); real_free(p);
}
void *calloc(size_t a, size_t b) {
    if (!real_calloc) {
        if (resolving) { void *p = early + early_used; early_used += (a * b + 15) & ~15ul; return p; }
        resolve();
    }
    void *p = real_calloc(a, b); remember(p, a * b); return p;
}
void *realloc(void *q, size_t n) { resolve(); forget(q); void *p = real_realloc(q, n); remember(p, n); return p; }
int posix_memalign(void **out, size_t align, size_t n) {
    resolve(); int r = real_posix_memalign(out, align, n); if (!r) remember(*out, n); return r;
}
void *aligned_alloc(size_t align, size_t n) {
    void *p = NULL;
    resolve();
    return real_posix_memalign(&p, align < sizeof(void *) ? sizeof(void *) : align, n) ? NULL : (remember(p, n), p);
}
