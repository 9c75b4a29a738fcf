// call-counter: an LD_PRELOAD library that counts calls to swift_retain, swift_release and
// pthread_mutex_lock per call site, between two moments. Without hardware counters, this is how
// the per-message cost of a server is counted rather than timed (docs/benchmarks.md):
//   LD_PRELOAD=build/call-counter.so server &   kill -USR1 <pid>   (start counting)
//   ... load ...                                 kill -USR2 <pid>   (stop; write the counts)
// Output (to $CALL_COUNTER_OUT, default call-counter.txt): one line per call site,
// "retains releases locks object offset", for addr2line. Calls made inside the Swift runtime
// itself do not go through the PLT and are not seen.
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SITES (1u << 16)

enum { RETAIN, RELEASE, LOCK };
typedef struct { void *site; unsigned long calls[3]; } site_t;

static site_t sites[SITES];
static volatile int counting;
static void *(*real_retain)(void *);
static void (*real_release)(void *);
static int (*real_lock)(pthread_mutex_t *);

static void count(void *site, int kind)
{
    if (!counting) return;
    uintptr_t hash = ((uintptr_t)site >> 2) * 2654435761u;
    for (unsigned i = 0; i < SITES; i++) {
        site_t *s = &sites[(hash + i) & (SITES - 1)];
        void *seen = __atomic_load_n(&s->site, __ATOMIC_RELAXED);
        if (seen == NULL) {
            __atomic_compare_exchange_n(&s->site, &seen, site, 0, __ATOMIC_RELAXED, __ATOMIC_RELAXED);
            seen = __atomic_load_n(&s->site, __ATOMIC_RELAXED);
        }
        if (seen == site) {
            __atomic_fetch_add(&s->calls[kind], 1, __ATOMIC_RELAXED);
            return;
        }
    }
}

void *swift_retain(void *object)
{
    if (!real_retain) real_retain = (void *(*)(void *))dlsym(RTLD_NEXT, "swift_retain");
    count(__builtin_return_address(0), RETAIN);
    return real_retain(object);
}

void swift_release(void *object)
{
    if (!real_release) real_release = (void (*)(void *))dlsym(RTLD_NEXT, "swift_release");
    count(__builtin_return_address(0), RELEASE);
    real_release(object);
}

int pthread_mutex_lock(pthread_mutex_t *mutex)
{
    if (!real_lock) real_lock = (int (*)(pthread_mutex_t *))dlsym(RTLD_NEXT, "pthread_mutex_lock");
    count(__builtin_return_address(0), LOCK);
    return real_lock(mutex);
}

static void start(int signal)
{
    (void)signal;
    memset(sites, 0, sizeof sites);
    counting = 1;
}

static void stop(int signal)
{
    (void)signal;
    counting = 0;
    const char *path = getenv("CALL_COUNTER_OUT");
    FILE *out = fopen(path ? path : "call-counter.txt", "w");
    if (!out) return;
    for (unsigned i = 0; i < SITES; i++) {
        if (!sites[i].site) continue;
        Dl_info info;
        const char *object = "?";
        uintptr_t offset = (uintptr_t)sites[i].site;
        if (dladdr(sites[i].site, &info) && info.dli_fname) {
            object = info.dli_fname;
            offset -= (uintptr_t)info.dli_fbase;
        }
        fprintf(out, "%lu %lu %lu %s 0x%lx\n", sites[i].calls[RETAIN], sites[i].calls[RELEASE],
                sites[i].calls[LOCK], object, (unsigned long)offset);
    }
    fclose(out);
}

__attribute__((constructor)) static void install(void)
{
    signal(SIGUSR1, start);
    signal(SIGUSR2, stop);
}
