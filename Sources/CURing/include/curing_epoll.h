// System calls of the epoll backend (the fallback where io_uring is blocked), each returning a
// negative errno on failure so Swift never reads errno after another call could change it.
#ifndef CURING_EPOLL_H
#define CURING_EPOLL_H

#include <stdint.h>
#include <sys/types.h>
#include <sys/socket.h>

/// One ready descriptor, unpacked: x86-64's `struct epoll_event` is packed, which Swift should not
/// have to lay out.
typedef struct curing_epoll_ready {
    uint32_t events;
    int32_t fd;
} curing_epoll_ready;

/// The EPOLL* bits the backend uses (enum-typed in the system header).
enum {
    CURING_EPOLLIN = 0x001,
    CURING_EPOLLOUT = 0x004,
    CURING_EPOLLERR = 0x008,
    CURING_EPOLLHUP = 0x010,
    CURING_EPOLLRDHUP = 0x2000,
    CURING_EPOLLET = (int)(1U << 31),
};

/// epoll_create1(EPOLL_CLOEXEC), or -errno.
int curing_epoll_create(void);
/// epoll_ctl(ADD/MOD/DEL) with `events` and the descriptor as the event's data; 0 or -errno.
int curing_epoll_add(int epfd, int fd, uint32_t events);
int curing_epoll_modify(int epfd, int fd, uint32_t events);
int curing_epoll_delete(int epfd, int fd);
/// epoll_wait for up to `max` (at most 256) descriptors, `timeout_ms` as epoll_wait's; the count
/// or -errno.
int curing_epoll_wait(int epfd, curing_epoll_ready *out, int max, int timeout_ms);

/// recv/send/sendmsg with MSG_DONTWAIT added (the socket itself may be blocking: its loop could
/// use io_uring too); the byte count or -errno.
ssize_t curing_recv_nowait(int fd, void *buffer, size_t length);
ssize_t curing_send_nowait(int fd, const void *buffer, size_t length, int flags);
ssize_t curing_sendmsg_nowait(int fd, const struct msghdr *message, int flags);
/// read(2); the byte count or -errno.
ssize_t curing_read(int fd, void *buffer, size_t length);
/// Makes `fd` non-blocking (O_NONBLOCK); 0 or -errno.
int curing_set_nonblocking(int fd);
/// accept4(fd, SOCK_CLOEXEC) on a non-blocking listener; the new descriptor or -errno.
int curing_accept_nowait(int fd);
/// Starts a non-blocking connect: 0 when connected, -EINPROGRESS while it goes on, or -errno. The
/// socket is non-blocking afterwards; `curing_connect_finish` restores it.
int curing_connect_start(int fd, const void *address, uint32_t length);
/// The outcome of a connect that was in progress (SO_ERROR) as 0 or -errno, with the socket made
/// blocking again as io_uring hands sockets over.
int curing_connect_finish(int fd);
/// The monotonic clock in nanoseconds.
uint64_t curing_monotonic_ns(void);

#endif
