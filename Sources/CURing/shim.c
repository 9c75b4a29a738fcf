// pthread_setname_np is a GNU extension.
#define _GNU_SOURCE
#include "CURing.h"

#include <errno.h>
#include <stddef.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/eventfd.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <unistd.h>

unsigned curing_reap(struct io_uring *ring, curing_cqe *out, unsigned max) {
    unsigned head;
    unsigned count = 0;
    struct io_uring_cqe *cqe;
    io_uring_for_each_cqe(ring, head, cqe) {
        if (count == max) break;
        out[count].user_data = cqe->user_data;
        out[count].res = cqe->res;
        out[count].flags = cqe->flags;
        count++;
    }
    if (count) io_uring_cq_advance(ring, count);
    return count;
}

struct io_uring_buf_ring *curing_setup_buf_ring(struct io_uring *ring, unsigned entries, int bgid,
                                                unsigned flags, int *err) {
    size_t size = (size_t)entries * sizeof(struct io_uring_buf);
    // mmap gives page alignment, which the kernel requires for the ring.
    void *mem = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
    if (mem == MAP_FAILED) {
        *err = -errno;
        return NULL;
    }
    struct io_uring_buf_ring *br = mem;
    io_uring_buf_ring_init(br);

    struct io_uring_buf_reg reg;
    memset(&reg, 0, sizeof(reg));
    reg.ring_addr = (uint64_t)(uintptr_t)mem;
    reg.ring_entries = entries;
    reg.bgid = (uint16_t)bgid;
    // liburing 2.3's io_uring_register_buf_ring passes flags through unchanged; the field is `flags`
    // in the kernel's struct (u16 after bgid). Older headers call it pad; write it by offset.
    uint16_t *flags_field = (uint16_t *)((char *)&reg + offsetof(struct io_uring_buf_reg, bgid) + 2);
    *flags_field = (uint16_t)flags;
    int ret = io_uring_register_buf_ring(ring, &reg, 0);
    if (ret) {
        munmap(mem, size);
        *err = ret;
        return NULL;
    }
    *err = 0;
    return br;
}

int curing_free_buf_ring(struct io_uring *ring, struct io_uring_buf_ring *br, unsigned entries, int bgid) {
    int ret = io_uring_unregister_buf_ring(ring, bgid);
    munmap(br, (size_t)entries * sizeof(struct io_uring_buf));
    return ret;
}

unsigned curing_features(const struct io_uring *ring) { return ring->features; }

unsigned curing_sq_flags(const struct io_uring *ring) {
    return IO_URING_READ_ONCE(*ring->sq.kflags);
}

static __thread void *current_loop;

void *curing_current_loop(void) { return current_loop; }
void curing_set_current_loop(void *loop) { current_loop = loop; }

int curing_eventfd(void) { return eventfd(0, EFD_CLOEXEC); }

int curing_dup3_cloexec(int from, int to) { return dup3(from, to, O_CLOEXEC); }

void curing_set_thread_name(const char *name) { pthread_setname_np(pthread_self(), name); }

int curing_errno(void) { return errno; }

// The concurrency runtime's stable entry points (withUnsafeCurrentTask and Task.isCancelled call
// them too). Their arguments and results are pointers and booleans, which the Swift and C
// conventions pass alike; clang is told the convention anyway.
#if __has_attribute(swiftcall)
#define CURING_SWIFTCALL __attribute__((swiftcall))
#else
#define CURING_SWIFTCALL
#endif
extern const void *swift_task_getCurrent(void) CURING_SWIFTCALL;
extern bool swift_task_isCancelled(const void *task) CURING_SWIFTCALL;

const void *curing_current_task(void) { return swift_task_getCurrent(); }

bool curing_current_task_is_cancelled(void) {
    const void *task = swift_task_getCurrent();
    return task != NULL && swift_task_isCancelled(task);
}

int curing_affinity_cpu_count(void) {
    // Start at 1024 CPUs (glibc's cpu_set_t) and grow on EINVAL: machines with more exist.
    for (size_t cpus = 1024; cpus <= 1u << 20; cpus *= 2) {
        size_t size = CPU_ALLOC_SIZE(cpus);
        cpu_set_t *set = CPU_ALLOC(cpus);
        if (set == NULL) return -1;
        if (sched_getaffinity(0, size, set) == 0) {
            int count = CPU_COUNT_S(size, set);
            CPU_FREE(set);
            return count;
        }
        int saved = errno;
        CPU_FREE(set);
        if (saved != EINVAL) {
            errno = saved;
            return -1;
        }
    }
    errno = EINVAL;
    return -1;
}
