// C shim over liburing: only what Swift cannot import directly.
//
// liburing's static inline helpers (io_uring_get_sqe, io_uring_prep_*, io_uring_buf_ring_*) import into
// Swift as they are. What does not: function-like macros (io_uring_for_each_cqe), flag macros built from
// enum bits (IOSQE_BUFFER_SELECT), thread-local storage, and helpers newer than Debian's liburing 2.3.
#ifndef CURING_H
#define CURING_H

// The one message a build on another platform (macOS) gets, before any missing Linux header.
#if !defined(__linux__)
#error "UringStreams needs Linux (io_uring); on other platforms depend on it with condition: .when(platforms: [.linux]) - see the README"
#endif

// liburing.h defines _XOPEN_SOURCE and _GNU_SOURCE before including system headers, which would
// give this module its own copy of e.g. fd_set that clashes with Swift's Glibc module on a clean
// build. Including those headers first makes them resolve to the Glibc module's copies.
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <inttypes.h>
#include <time.h>
#include <fcntl.h>
#include <sched.h>
#include <stdint.h>
#include <liburing.h>
#include "curing_epoll.h"

// Flag values whose liburing definitions are expressions Swift does not import.
enum {
    CURING_IOSQE_FIXED_FILE = (1U << IOSQE_FIXED_FILE_BIT),
    CURING_IOSQE_IO_LINK = (1U << IOSQE_IO_LINK_BIT),
    CURING_IOSQE_ASYNC = (1U << IOSQE_ASYNC_BIT),
    CURING_IOSQE_BUFFER_SELECT = (1U << IOSQE_BUFFER_SELECT_BIT),
    CURING_IOSQE_CQE_SKIP_SUCCESS = (1U << IOSQE_CQE_SKIP_SUCCESS_BIT),
};

// Kernel ABI values newer than liburing 2.3's headers. Guarded so a newer liburing's own wins.
#ifndef IORING_RECVSEND_BUNDLE
#define IORING_RECVSEND_BUNDLE (1U << 4)
#endif
#ifndef IOU_PBUF_RING_INC
#define IOU_PBUF_RING_INC 2
#endif
#ifndef IORING_CQE_F_BUF_MORE
#define IORING_CQE_F_BUF_MORE (1U << 4)
#endif
#ifndef IORING_FEAT_RECVSEND_BUNDLE
#define IORING_FEAT_RECVSEND_BUNDLE (1U << 14)
#endif
#ifndef IORING_SEND_ZC_REPORT_USAGE
#define IORING_SEND_ZC_REPORT_USAGE (1U << 3)
#endif
#ifndef IORING_NOTIF_USAGE_ZC_COPIED
#define IORING_NOTIF_USAGE_ZC_COPIED (1U << 31)
#endif
#ifndef IORING_SETUP_NO_SQARRAY
#define IORING_SETUP_NO_SQARRAY (1U << 16)
#endif

/// One completion, copied out of the CQ ring so Swift never touches ring memory directly.
typedef struct curing_cqe {
    uint64_t user_data;
    int32_t res;
    uint32_t flags;
} curing_cqe;

/// Copies up to `max` ready completions into `out` and advances the CQ head past them.
unsigned curing_reap(struct io_uring *ring, curing_cqe *out, unsigned max);

/// Sets up and registers a provided-buffer ring for `bgid` with `entries` slots (a power of two).
/// liburing 2.3 lacks io_uring_setup_buf_ring; this is the same against the kernel ABI.
/// Returns the ring memory or NULL with *err set to a negative errno.
struct io_uring_buf_ring *curing_setup_buf_ring(struct io_uring *ring, unsigned entries, int bgid,
                                                unsigned flags, int *err);
/// Unregisters and unmaps a ring made by curing_setup_buf_ring.
int curing_free_buf_ring(struct io_uring *ring, struct io_uring_buf_ring *br, unsigned entries, int bgid);

/// The IORING_FEAT_* bits the kernel reported when the ring was set up.
unsigned curing_features(const struct io_uring *ring);

/// The ring's SQ-ring flags (IORING_SQ_*), read with acquire ordering.
unsigned curing_sq_flags(const struct io_uring *ring);

/// The event loop that owns the calling thread, or NULL. Thread-local storage Swift cannot declare.
void *curing_current_loop(void);
void curing_set_current_loop(void *loop);

/// An eventfd for waking a loop (sys/eventfd.h is not part of Swift's Glibc module).
int curing_eventfd(void);
/* dup3(from, to, O_CLOEXEC): Swift's Glibc module lacks dup3. */
int curing_dup3_cloexec(int from, int to);
/// Names the calling thread (a GNU extension Swift's Glibc module does not expose).
void curing_set_thread_name(const char *name);

/// errno as a plain function: Swift's Glibc errno accessor is not usable from every context.
int curing_errno(void);

// The running Swift task's address, unretained (NULL outside a task), for identity comparisons
// only, and whether that task is cancelled; without the retain and release Swift's
// withUnsafeCurrentTask costs. Swift code may not name the runtime's entry points, so C calls them.
const void *curing_current_task(void);
bool curing_current_task_is_cancelled(void);

/// CPUs in the calling thread's affinity mask (sched_getaffinity), or -1 with errno set. A C
/// helper because CPU_COUNT is a macro over a mask whose size the kernel may exceed.
int curing_affinity_cpu_count(void);

#endif
