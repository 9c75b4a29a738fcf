// A C epoll echo server for the comparison: one thread, edge-triggered epoll, non-blocking
// sockets, TCP_NODELAY, a per-connection buffer for what the peer is not ready to take yet.
// Usage: epoll-echo-server --host 127.0.0.1 --port N  (port 0: prints "listening on PORT").
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

enum { BUFFER = 64 * 1024, EVENTS = 256 };

struct conn {
    int fd;
    size_t pending_off, pending_len; // bytes received but not yet sent back
    char buf[BUFFER];
};

static volatile sig_atomic_t stopping;
static void on_signal(int sig) { (void)sig; stopping = 1; }

static void close_conn(int ep, struct conn *c) {
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    free(c);
}

// Sends what is pending; returns 0 when all went out, 1 when the socket is full, -1 on error.
static int flush_pending(struct conn *c) {
    while (c->pending_len > 0) {
        ssize_t n = send(c->fd, c->buf + c->pending_off, c->pending_len, MSG_NOSIGNAL);
        if (n < 0) return (errno == EAGAIN || errno == EWOULDBLOCK) ? 1 : -1;
        c->pending_off += (size_t)n;
        c->pending_len -= (size_t)n;
    }
    c->pending_off = 0;
    return 0;
}

// Reads and echoes until the socket is drained or the peer stops taking data.
static int serve(struct conn *c) {
    for (;;) {
        if (c->pending_len > 0) {
            int r = flush_pending(c);
            if (r != 0) return r < 0 ? -1 : 0; // wait for EPOLLOUT before reading more
        }
        ssize_t n = recv(c->fd, c->buf, BUFFER, 0);
        if (n == 0) return -1;
        if (n < 0) return (errno == EAGAIN || errno == EWOULDBLOCK) ? 0 : -1;
        c->pending_off = 0;
        c->pending_len = (size_t)n;
    }
}

int main(int argc, char **argv) {
    const char *host = "127.0.0.1";
    int port = 0;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--host")) host = argv[i + 1];
        else if (!strcmp(argv[i], "--port")) port = atoi(argv[i + 1]);
    }
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);

    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, host, &addr.sin_addr) != 1 || bind(lfd, (struct sockaddr *)&addr, sizeof addr) ||
        listen(lfd, 1024)) {
        perror("epoll-echo-server: bind/listen");
        return 1;
    }
    socklen_t len = sizeof addr;
    getsockname(lfd, (struct sockaddr *)&addr, &len);
    printf("listening on %d\n", ntohs(addr.sin_port));
    fflush(stdout);

    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
    struct epoll_event events[EVENTS];
    while (!stopping) {
        int n = epoll_wait(ep, events, EVENTS, 500);
        for (int i = 0; i < n; i++) {
            if (events[i].data.ptr == NULL) {
                int fd;
                while ((fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0) {
                    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    struct conn *c = calloc(1, sizeof *c);
                    c->fd = fd;
                    struct epoll_event cev = {.events = EPOLLIN | EPOLLOUT | EPOLLET | EPOLLRDHUP, .data.ptr = c};
                    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &cev);
                }
                continue;
            }
            struct conn *c = events[i].data.ptr;
            if ((events[i].events & (EPOLLERR | EPOLLHUP)) || serve(c) < 0) close_conn(ep, c);
        }
    }
    close(lfd);
    return 0;
}
