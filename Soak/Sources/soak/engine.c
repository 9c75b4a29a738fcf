// The echo engine: many nonblocking connections over a few threads, one epoll each. Every byte
// sent is pattern bytes at the connection's stream offset, and every byte that comes back is
// compared with the pattern at the offset it should have, so a lost, repeated, reordered or
// misdirected byte is caught where it happens.
#include "soak.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

typedef struct {
    engine_t *e;
    sconn_t *conns;
    long n;
    int ep;
    int sending;
    uint64_t now;
    uint8_t *buf;
    hist_t rtt;
    uint64_t messages, bytes_sent, bytes_verified, mismatches, failures, stalls;
    uint64_t longest_silence;
    char first_error[256];
} worker_t;

enum { BUF = 65536 };

static void fail(worker_t *w, sconn_t *c, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void fail(worker_t *w, sconn_t *c, const char *fmt, ...) {
    if (c->failed) return;
    c->failed = 1;
    w->failures++;
    epoll_ctl(w->ep, EPOLL_CTL_DEL, c->fd, NULL);
    if (!w->first_error[0]) {
        va_list ap;
        va_start(ap, fmt);
        int n = snprintf(w->first_error, sizeof w->first_error, "connection %u: ", c->id);
        vsnprintf(w->first_error + n, sizeof w->first_error - (size_t)n, fmt, ap);
        va_end(ap);
    }
}

static void arm_out(worker_t *w, sconn_t *c, int on) {
    if (c->out_armed == on) return;
    c->out_armed = (uint8_t)on;
    struct epoll_event ev = {.events = EPOLLIN | (on ? EPOLLOUT : 0), .data.ptr = c};
    epoll_ctl(w->ep, EPOLL_CTL_MOD, c->fd, &ev);
}

// How far this connection may have sent by now.
static uint64_t send_target(worker_t *w, sconn_t *c) {
    engine_t *e = w->e;
    if (e->window == 0) {
        // Ping-pong: the next message only once the last one is all back; a message that went out
        // in part is finished even after the duration.
        if (c->sent == c->verified && w->sending) c->target = c->sent + e->message;
        return c->target;
    }
    return w->sending ? c->verified + e->window : c->sent;
}

static void do_send(worker_t *w, sconn_t *c) {
    if (c->failed) return;
    uint64_t target = send_target(w, c);
    while (c->sent < target) {
        size_t len = target - c->sent;
        if (w->e->window && len > w->e->message) len = w->e->message;
        if (len > BUF) len = BUF;
        pattern_fill(c->id, c->sent, w->buf, len);
        ssize_t k = send(c->fd, w->buf, len, MSG_NOSIGNAL);
        if (k < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                arm_out(w, c, 1);
                return;
            }
            if (errno == EINTR) continue;
            fail(w, c, "send: %s", strerror(errno));
            return;
        }
        if (w->e->window == 0 && c->sent == c->verified) {
            c->t_send = w->now;
            c->last_progress = w->now;  // silence counts from the request, not the last reply
        }
        c->sent += (uint64_t)k;
        w->bytes_sent += (uint64_t)k;
    }
    arm_out(w, c, 0);
}

static void do_recv(worker_t *w, sconn_t *c) {
    for (int round = 0; round < 4 && !c->failed; round++) {
        ssize_t k = recv(c->fd, w->buf, BUF, 0);
        if (k < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) return;
            if (errno == EINTR) continue;
            fail(w, c, "recv: %s after %llu verified bytes", strerror(errno), (unsigned long long)c->verified);
            return;
        }
        if (k == 0) {
            fail(w, c, "unexpected EOF after %llu of %llu bytes", (unsigned long long)c->verified,
                 (unsigned long long)c->sent);
            return;
        }
        if (c->verified + (uint64_t)k > c->sent) {
            w->mismatches++;
            fail(w, c, "%zd bytes back with only %llu outstanding", k, (unsigned long long)(c->sent - c->verified));
            return;
        }
        size_t bad = pattern_mismatch(c->id, c->verified, w->buf, (size_t)k);
        if (bad != (size_t)k) {
            w->mismatches++;
            fail(w, c, "byte %llu of the echo differs from what was sent", (unsigned long long)(c->verified + bad));
            return;
        }
        c->verified += (uint64_t)k;
        w->bytes_verified += (uint64_t)k;
        if (w->now - c->last_progress > w->longest_silence) w->longest_silence = w->now - c->last_progress;
        c->last_progress = w->now;
        if (w->e->window == 0 && c->verified == c->sent) {
            c->messages++;
            w->messages++;
            hist_add(&w->rtt, w->now - c->t_send);
        }
        do_send(w, c);
        if ((size_t)k < BUF) return;
    }
}

static void *worker_main(void *arg) {
    worker_t *w = arg;
    engine_t *e = w->e;
    w->now = now_ns();
    uint64_t start = w->now;
    uint64_t stop_sending = start + (uint64_t)(e->duration_s * 1e9);
    uint64_t give_up = stop_sending + (uint64_t)(e->drain_timeout_s * 1e9);
    uint64_t stall_ns = (uint64_t)(e->stall_timeout_s * 1e9);
    uint64_t next_scan = start + 1000000000ull;
    w->sending = 1;
    w->ep = epoll_create1(EPOLL_CLOEXEC);
    for (long i = 0; i < w->n; i++) {
        sconn_t *c = &w->conns[i];
        c->last_progress = start;
        if (c->fd < 0) {
            c->failed = 1;
            continue;
        }
        set_nonblocking(c->fd, 1);
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        epoll_ctl(w->ep, EPOLL_CTL_ADD, c->fd, &ev);
    }
    for (long i = 0; i < w->n; i++) do_send(w, &w->conns[i]);
    struct epoll_event events[512];
    for (;;) {
        int k = epoll_wait(w->ep, events, 512, 50);
        w->now = now_ns();
        for (int j = 0; j < k; j++) {
            sconn_t *c = events[j].data.ptr;
            if (events[j].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) do_recv(w, c);
            if (!c->failed && (events[j].events & EPOLLOUT)) do_send(w, c);
        }
        if (w->sending && w->now >= stop_sending) w->sending = 0;
        if (w->now >= next_scan || !w->sending) {
            next_scan = w->now + 1000000000ull;
            int outstanding = 0;
            for (long i = 0; i < w->n; i++) {
                sconn_t *c = &w->conns[i];
                if (c->failed || c->sent == c->verified) continue;
                outstanding = 1;
                if (w->now - c->last_progress > w->longest_silence) w->longest_silence = w->now - c->last_progress;
                if (w->now - c->last_progress > stall_ns) {
                    w->stalls++;
                    fail(w, c, "stalled: %llu bytes out, none back for %.1f s",
                         (unsigned long long)(c->sent - c->verified), (double)(w->now - c->last_progress) / 1e9);
                }
            }
            if (!w->sending && !outstanding) break;
        }
        if (w->now >= give_up) {
            for (long i = 0; i < w->n; i++) {
                sconn_t *c = &w->conns[i];
                if (!c->failed && c->sent != c->verified) {
                    w->stalls++;
                    fail(w, c, "%llu bytes never came back", (unsigned long long)(c->sent - c->verified));
                }
            }
            break;
        }
    }
    close(w->ep);
    return NULL;
}

void engine_run(engine_t *e, sconn_t *conns, long n) {
    int threads = e->threads > 0 ? e->threads : 1;
    if (threads > n) threads = (int)(n > 0 ? n : 1);
    if (e->drain_timeout_s <= 0) e->drain_timeout_s = 15;
    if (e->stall_timeout_s <= 0) e->stall_timeout_s = 10;
    // SOAK_STALL_SECONDS: how long a connection may get nothing back before it counts as stalled
    // (to tell a starved connection from a slow one).
    const char *stall = getenv("SOAK_STALL_SECONDS");
    if (stall && atof(stall) > 0) e->stall_timeout_s = atof(stall);
    if (e->drain_timeout_s < e->stall_timeout_s + 5) e->drain_timeout_s = e->stall_timeout_s + 5;
    worker_t *workers = calloc((size_t)threads, sizeof *workers);
    pthread_t *ids = calloc((size_t)threads, sizeof *ids);
    long per = n / threads, extra = n % threads, at = 0;
    uint64_t start = now_ns();
    for (int t = 0; t < threads; t++) {
        long count = per + (t < extra ? 1 : 0);
        workers[t].e = e;
        workers[t].conns = conns + at;
        workers[t].n = count;
        workers[t].buf = malloc(BUF);
        at += count;
        pthread_create(&ids[t], NULL, worker_main, &workers[t]);
    }
    memset(&e->rtt, 0, sizeof e->rtt);
    e->messages = e->bytes_sent = e->bytes_verified = e->mismatches = e->failures = e->stalls = 0;
    e->longest_silence_ns = 0;
    e->first_error[0] = 0;
    for (int t = 0; t < threads; t++) {
        pthread_join(ids[t], NULL);
        worker_t *w = &workers[t];
        hist_merge(&e->rtt, &w->rtt);
        e->messages += w->messages;
        e->bytes_sent += w->bytes_sent;
        e->bytes_verified += w->bytes_verified;
        e->mismatches += w->mismatches;
        e->failures += w->failures;
        e->stalls += w->stalls;
        if (w->longest_silence > e->longest_silence_ns) e->longest_silence_ns = w->longest_silence;
        if (!e->first_error[0] && w->first_error[0]) snprintf(e->first_error, sizeof e->first_error, "%s", w->first_error);
        free(w->buf);
    }
    e->elapsed_s = (double)(now_ns() - start) / 1e9;
    e->min_verified = UINT64_MAX;
    e->min_messages = UINT64_MAX;
    for (long i = 0; i < n; i++) {
        if (conns[i].verified < e->min_verified) e->min_verified = conns[i].verified;
        if (conns[i].messages < e->min_messages) e->min_messages = conns[i].messages;
    }
    if (n == 0) e->min_verified = e->min_messages = 0;
    free(workers);
    free(ids);
}
