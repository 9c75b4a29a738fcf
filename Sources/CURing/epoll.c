// The epoll backend's system calls (see curing_epoll.h).
#define _GNU_SOURCE
#include "curing_epoll.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

int curing_epoll_create(void) {
    int fd = epoll_create1(EPOLL_CLOEXEC);
    return fd < 0 ? -errno : fd;
}

static int control(int epfd, int op, int fd, uint32_t events) {
    struct epoll_event event = {.events = events, .data = {.u64 = 0}};
    event.data.fd = fd;
    return epoll_ctl(epfd, op, fd, &event) < 0 ? -errno : 0;
}

int curing_epoll_add(int epfd, int fd, uint32_t events) { return control(epfd, EPOLL_CTL_ADD, fd, events); }
int curing_epoll_modify(int epfd, int fd, uint32_t events) { return control(epfd, EPOLL_CTL_MOD, fd, events); }
int curing_epoll_delete(int epfd, int fd) { return control(epfd, EPOLL_CTL_DEL, fd, 0); }

int curing_epoll_wait(int epfd, curing_epoll_ready *out, int max, int timeout_ms) {
    struct epoll_event events[256];
    if (max > 256) max = 256;
    int count = epoll_wait(epfd, events, max, timeout_ms);
    if (count < 0) return -errno;
    for (int i = 0; i < count; i++) {
        out[i].events = events[i].events;
        out[i].fd = events[i].data.fd;
    }
    return count;
}

ssize_t curing_recv_nowait(int fd, void *buffer, size_t length) {
    ssize_t result = recv(fd, buffer, length, MSG_DONTWAIT);
    return result < 0 ? -errno : result;
}

ssize_t curing_send_nowait(int fd, const void *buffer, size_t length, int flags) {
    ssize_t result = send(fd, buffer, length, flags | MSG_DONTWAIT);
    return result < 0 ? -errno : result;
}

ssize_t curing_sendmsg_nowait(int fd, const struct msghdr *message, int flags) {
    ssize_t result = sendmsg(fd, message, flags | MSG_DONTWAIT);
    return result < 0 ? -errno : result;
}

ssize_t curing_read(int fd, void *buffer, size_t length) {
    ssize_t result = read(fd, buffer, length);
    return result < 0 ? -errno : result;
}

// Sets or clears O_NONBLOCK; 0 or -errno.
static int set_nonblocking(int fd, int on) {
    int flags = fcntl(fd, F_GETFL);
    if (flags < 0) return -errno;
    int wanted = on ? (flags | O_NONBLOCK) : (flags & ~O_NONBLOCK);
    if (wanted != flags && fcntl(fd, F_SETFL, wanted) < 0) return -errno;
    return 0;
}

int curing_set_nonblocking(int fd) { return set_nonblocking(fd, 1); }

int curing_accept_nowait(int fd) {
    int result = accept4(fd, NULL, NULL, SOCK_CLOEXEC);
    return result < 0 ? -errno : result;
}

int curing_connect_start(int fd, const void *address, uint32_t length) {
    int failure = set_nonblocking(fd, 1);
    if (failure < 0) return failure;
    if (connect(fd, (const struct sockaddr *)address, length) == 0) {
        set_nonblocking(fd, 0);
        return 0;
    }
    int error = errno;
    if (error != EINPROGRESS && error != EAGAIN) set_nonblocking(fd, 0);
    return -error;
}

int curing_connect_finish(int fd) {
    int error = 0;
    socklen_t length = sizeof(error);
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &length) < 0) error = errno;
    set_nonblocking(fd, 0);
    return -error;
}

uint64_t curing_monotonic_ns(void) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (uint64_t)now.tv_sec * 1000000000u + (uint64_t)now.tv_nsec;
}
