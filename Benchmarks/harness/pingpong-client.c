/*
 * pingpong-client: load generator for TCP echo servers, in four modes.
 *
 * pingpong (default): each connection keeps exactly one SIZE-byte message in
 * flight: send it, wait for the whole echo, check it byte for byte, send the
 * next. The latency of every request (first send attempt -> last echoed
 * byte) goes into a fixed log-linear histogram, so the hot path never
 * allocates.
 *
 * stream: each connection writes SIZE-byte chunks of a deterministic byte
 * stream, keeping at most a window (1 MiB or 4 chunks) not yet echoed,
 * while reading the echo back and checking every byte against the same
 * stream; reports echoed Gbit/s (and, with --server-pid, the server's
 * memory as in flood mode).
 *
 * flood: like stream, but a connection's writes never wait for the echo:
 * each writes SIZE-byte chunks whenever its socket is writable and reads
 * whatever echo is readable (what an upload or a pipelining client does).
 * Only the server's flow control bounds what is in flight, so besides
 * echoed Gbit/s it reports bytes sent and echoed in the window and, with
 * --server-pid, the server's VmRSS at the window's start and end and its
 * VmHWM (peak) at the end.
 *
 * idle: opens CONNECTIONS connections one after another, echoes one byte on
 * each (so the server really serves it), then holds them all idle for
 * DURATION seconds and reports the server's added VmRSS per connection
 * (overall, and past the first tenth of the connections).
 *
 * Single thread, level-triggered epoll, loopback only (this is a benchmark,
 * not a traffic generator). Prints one JSON line on stdout; any protocol
 * error (mismatch, EOF, stall) is fatal with exit status 1.
 *
 * --tls speaks TLS 1.3 (OpenSSL) on every connection: the handshake is done,
 * blocking, right after connect, before the clock starts, so the modes
 * measure the encrypted data path, not handshakes. The peer's certificate is
 * not verified (benchmark servers use a throwaway self-signed one). The
 * client offers a single cipher suite, so every server encrypts with the
 * same algorithm and the comparison stays about the servers.
 *
 *   pingpong-client --host 127.0.0.1 --port N [--mode M] [--connections C] [--size S]
 *                   [--duration SEC] [--warmup SEC] [--server-pid PID] [--tls]
 *   pingpong-client --print-free-port     (helper for run-pingpong.sh)
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define NS_PER_S 1000000000ull

static _Noreturn void fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static _Noreturn void fatal(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("pingpong-client: FATAL: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(1);
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * NS_PER_S + (uint64_t)ts.tv_nsec;
}

static uint64_t process_cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (uint64_t)ts.tv_sec * NS_PER_S + (uint64_t)ts.tv_nsec;
}

/* ---- histogram ------------------------------------------------------------ */

/*
 * Log-linear buckets over nanoseconds: values below 2^SUB_BITS get their own
 * bucket; above that every power of two is split into 2^SUB_BITS equal
 * buckets, so the relative bucket width is at most 1/64 (~1.6%).
 */
#define SUB_BITS 6
#define SUB_COUNT (1u << SUB_BITS)
#define GROUPS (64 - SUB_BITS + 1)
#define NBUCKETS (GROUPS * SUB_COUNT)

struct histogram {
    uint64_t count[NBUCKETS];
    uint64_t n, min, max;
    long double sum;
};

static unsigned bucket_of(uint64_t v)
{
    if (v < SUB_COUNT)
        return (unsigned)v;
    unsigned msb = 63u - (unsigned)__builtin_clzll(v);
    unsigned shift = msb - SUB_BITS;
    unsigned group = shift + 1;
    return (group << SUB_BITS) | (unsigned)((v >> shift) & (SUB_COUNT - 1));
}

/* Midpoint of a bucket's [low, low + width) range. */
static double bucket_mid(unsigned idx)
{
    if (idx < SUB_COUNT)
        return (double)idx;
    unsigned group = idx >> SUB_BITS, sub = idx & (SUB_COUNT - 1);
    unsigned shift = group - 1;
    double low = (double)((uint64_t)(SUB_COUNT + sub) << shift);
    return low + (double)(1ull << shift) / 2.0;
}

static void hist_reset(struct histogram *h)
{
    memset(h, 0, sizeof *h);
    h->min = UINT64_MAX;
}

static inline void hist_record(struct histogram *h, uint64_t v)
{
    h->count[bucket_of(v)]++;
    h->n++;
    h->sum += (long double)v;
    if (v < h->min)
        h->min = v;
    if (v > h->max)
        h->max = v;
}

/* Value at quantile q in ns (bucket midpoint, clamped to the exact min/max). */
static double hist_quantile(const struct histogram *h, double q)
{
    if (h->n == 0)
        return 0.0;
    uint64_t rank = (uint64_t)(q * (double)h->n + 0.999999999);
    if (rank < 1)
        rank = 1;
    if (rank > h->n)
        rank = h->n;
    uint64_t seen = 0;
    for (unsigned i = 0; i < NBUCKETS; i++) {
        seen += h->count[i];
        if (seen >= rank) {
            double v = bucket_mid(i);
            if (v < (double)h->min)
                v = (double)h->min;
            if (v > (double)h->max)
                v = (double)h->max;
            return v;
        }
    }
    return (double)h->max;
}

/* ---- options -------------------------------------------------------------- */

enum mode { MODE_PINGPONG, MODE_STREAM, MODE_FLOOD, MODE_IDLE };

struct options {
    enum mode mode;
    const char *host;
    const char *port;
    unsigned connections;
    size_t size;
    double duration, warmup, stall_timeout;
    long server_pid;
    bool tls;
    const char *tls_ciphersuites;
};

static void usage(FILE *out)
{
    fputs("usage: pingpong-client --host 127.0.0.1 --port N [options]\n"
          "  --mode M           pingpong (default), stream, flood or idle\n"
          "  --connections C    concurrent connections (default 1)\n"
          "  --size S           message size, or stream/flood chunk size, in bytes (default 64)\n"
          "  --duration SEC     measured seconds; idle mode: seconds to hold (default 3)\n"
          "  --warmup SEC       unmeasured seconds first (default 1)\n"
          "  --server-pid PID   also report that process's CPU time in the window\n"
          "                     (idle mode: required, its VmRSS is reported;\n"
          "                     stream and flood: its VmRSS and VmHWM too)\n"
          "  --stall-timeout S  fail if an echo takes longer (default 5)\n"
          "  --tls              TLS 1.3 on every connection (certificate not verified)\n"
          "  --tls-ciphersuites L  TLS 1.3 suites offered, OpenSSL syntax\n"
          "                     (default TLS_AES_128_GCM_SHA256, the one every stack has)\n"
          "  --print-free-port  print a currently free loopback port and exit\n",
          out);
}

static double parse_double(const char *name, const char *s, double lo, double hi)
{
    char *end = NULL;
    errno = 0;
    double v = strtod(s, &end);
    if (errno != 0 || end == s || *end != '\0' || !(v >= lo && v <= hi)) {
        fprintf(stderr, "invalid %s '%s'\n", name, s);
        exit(2);
    }
    return v;
}

static int print_free_port(void)
{
    /* The kernel hands out an unused ephemeral port; we release it at once,
     * so this is only a hint (fine for a benchmark script). */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t len = sizeof a;
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) != 0)
        fatal("free port: %s", strerror(errno));
    printf("%d\n", ntohs(a.sin_port));
    close(fd);
    return 0;
}

static void parse_args(int argc, char **argv, struct options *o)
{
    *o = (struct options){ .host = "127.0.0.1", .connections = 1, .size = 64,
                           .duration = 3.0, .warmup = 1.0, .stall_timeout = 5.0,
                           .server_pid = -1, .tls_ciphersuites = "TLS_AES_128_GCM_SHA256" };
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            exit(0);
        }
        if (strcmp(a, "--print-free-port") == 0)
            exit(print_free_port());
        if (strcmp(a, "--tls") == 0) {
            o->tls = true;
            continue;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "missing value for %s\n", a);
            usage(stderr);
            exit(2);
        }
        const char *v = argv[++i];
        if (strcmp(a, "--mode") == 0) {
            if (strcmp(v, "pingpong") == 0)
                o->mode = MODE_PINGPONG;
            else if (strcmp(v, "stream") == 0)
                o->mode = MODE_STREAM;
            else if (strcmp(v, "flood") == 0)
                o->mode = MODE_FLOOD;
            else if (strcmp(v, "idle") == 0)
                o->mode = MODE_IDLE;
            else {
                fprintf(stderr, "invalid mode '%s'\n", v);
                exit(2);
            }
        } else if (strcmp(a, "--host") == 0)
            o->host = v;
        else if (strcmp(a, "--port") == 0)
            o->port = v, (void)parse_double("port", v, 1, 65535);
        else if (strcmp(a, "--connections") == 0)
            o->connections = (unsigned)parse_double("connections", v, 1, 100000);
        else if (strcmp(a, "--size") == 0)
            o->size = (size_t)parse_double("size", v, 1, 64.0 * 1024 * 1024);
        else if (strcmp(a, "--duration") == 0)
            o->duration = parse_double("duration", v, 0.01, 86400);
        else if (strcmp(a, "--warmup") == 0)
            o->warmup = parse_double("warmup", v, 0, 86400);
        else if (strcmp(a, "--stall-timeout") == 0)
            o->stall_timeout = parse_double("stall-timeout", v, 0.01, 3600);
        else if (strcmp(a, "--server-pid") == 0)
            o->server_pid = (long)parse_double("server-pid", v, 1, 1e9);
        else if (strcmp(a, "--tls-ciphersuites") == 0)
            o->tls_ciphersuites = v;
        else {
            fprintf(stderr, "unknown option %s\n", a);
            usage(stderr);
            exit(2);
        }
    }
    if (o->port == NULL || (o->mode == MODE_IDLE && o->server_pid < 0)) {
        usage(stderr);
        exit(2);
    }
}

/* ---- server CPU accounting ------------------------------------------------ */

/* utime+stime of the whole process (all threads, io_uring workers
 * included) in clock ticks, from /proc/PID/stat fields 14 and 15. */
static long long proc_cpu_ticks(long pid)
{
    char path[64], buf[4096];
    snprintf(path, sizeof path, "/proc/%ld/stat", pid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        fatal("open %s: %s", path, strerror(errno));
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    /* comm (field 2) may contain spaces and ')', so parse from the last ')'. */
    char *p = strrchr(buf, ')');
    if (p == NULL)
        fatal("cannot parse %s", path);
    unsigned long long utime = 0, stime = 0;
    if (sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &utime, &stime) != 2)
        fatal("cannot parse %s", path);
    return (long long)(utime + stime);
}

/* A client that got no CPU for most of the run (a busy machine) would see
 * warm-up and window end in one step; such a window measures nothing. */
static void check_window(double secs, double wanted)
{
    if (secs < wanted / 2)
        fatal("measured window %.3f s of %.3f s: this client was starved of CPU", secs, wanted);
}

/* ---- connections ---------------------------------------------------------- */

struct conn {
    int fd;
    SSL *ssl;             /* NULL without --tls */
    uint32_t id;
    uint64_t seq;         /* requests issued on this connection */
    const uint8_t *tx;    /* current message (a window into the pattern) */
    uint8_t *rx;          /* echo lands here */
    size_t sent, rcvd;
    uint64_t t_start;
    bool busy;            /* a request is in flight */
    bool want_out;        /* EPOLLOUT armed */
    bool send_wants_out;  /* the send in flight waits for writability */
    bool recv_wants_out;  /* TLS: a read waits for writability */
};

enum phase { WARMUP, MEASURE, DRAIN };

struct client {
    struct options o;
    int ep;
    struct conn *conns;
    uint8_t *pattern;     /* size + 256 pseudo-random bytes */
    enum phase phase;
    uint64_t t_measure_start, t_measure_end;
    struct histogram hist;
    unsigned busy;
};

static bool is_loopback(const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        return (ntohl(in->sin_addr.s_addr) >> 24) == 127;
    }
    if (sa->sa_family == AF_INET6) {
        const struct in6_addr *a = &((const struct sockaddr_in6 *)sa)->sin6_addr;
        if (IN6_IS_ADDR_LOOPBACK(a))
            return true;
        return IN6_IS_ADDR_V4MAPPED(a) && a->s6_addr[12] == 127;
    }
    return false;
}

/* ---- TLS ------------------------------------------------------------------ */

/* NULL without --tls: connections are then plain TCP. */
static SSL_CTX *tls_ctx;

/* The reason of the oldest OpenSSL error queued, or of errno when there is
 * none (a system call failed, or the peer closed without a TLS alert). */
static const char *tls_reason(char *buf, size_t size)
{
    unsigned long e = ERR_get_error();
    if (e != 0)
        ERR_error_string_n(e, buf, size);
    else
        snprintf(buf, size, "%s", errno != 0 ? strerror(errno) : "connection closed");
    return buf;
}

static void tls_setup(const struct options *o)
{
    char reason[256];
    tls_ctx = SSL_CTX_new(TLS_client_method());
    if (tls_ctx == NULL)
        fatal("SSL_CTX_new: %s", tls_reason(reason, sizeof reason));
    /* TLS 1.3 only, with the suites of --tls-ciphersuites: every server
     * then runs the same record protocol and cipher. */
    if (SSL_CTX_set_min_proto_version(tls_ctx, TLS1_3_VERSION) != 1)
        fatal("TLS 1.3: %s", tls_reason(reason, sizeof reason));
    if (SSL_CTX_set_ciphersuites(tls_ctx, o->tls_ciphersuites) != 1)
        fatal("--tls-ciphersuites '%s': %s", o->tls_ciphersuites, tls_reason(reason, sizeof reason));
    SSL_CTX_set_verify(tls_ctx, SSL_VERIFY_NONE, NULL);
    /* Partial writes: SSL_write reports each record written, as send()
     * reports bytes, so a short write is counted exactly. A moving buffer:
     * a write retried after WANT_WRITE may pass the same bytes from another
     * address (the stream pattern repeats its start at its end). */
    SSL_CTX_set_mode(tls_ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
}

/* What became of an SSL_read or SSL_write that returned n: bytes moved
 * (> 0), 0 when it must wait for the socket (*wants_out: for writability;
 * TLS may have to write to read, or read to write), -1 for the peer's
 * close_notify. Anything else is fatal. */
static ssize_t tls_outcome(SSL *ssl, int n, bool *wants_out, uint32_t id, const char *call)
{
    if (n > 0)
        return n;
    char reason[256];
    switch (SSL_get_error(ssl, n)) {
    case SSL_ERROR_WANT_READ:
        return 0;
    case SSL_ERROR_WANT_WRITE:
        *wants_out = true;
        return 0;
    case SSL_ERROR_ZERO_RETURN:
        return -1;
    default:
        fatal("conn %u: %s: %s", id, call, tls_reason(reason, sizeof reason));
    }
}

static int clamp_int(size_t len)
{
    return len > INT_MAX ? INT_MAX : (int)len;
}

/* One receive on a non-blocking connection, plain or TLS: bytes (> 0), 0
 * when it would block (*wants_out as in tls_outcome), -1 at end of stream. */
static ssize_t conn_recv(int fd, SSL *ssl, void *buf, size_t len, bool *wants_out, uint32_t id)
{
    *wants_out = false;
    if (ssl != NULL) {
        /* SSL_get_error needs an empty error queue to tell what happened. */
        ERR_clear_error();
        errno = 0;
        return tls_outcome(ssl, SSL_read(ssl, buf, clamp_int(len)), wants_out, id, "SSL_read");
    }
    for (;;) {
        ssize_t n = recv(fd, buf, len, 0);
        if (n > 0)
            return n;
        if (n == 0)
            return -1;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return 0;
        if (errno != EINTR)
            fatal("conn %u: recv: %s", id, strerror(errno));
    }
}

/* One send, plain or TLS: bytes (> 0), or 0 when it would block. */
static ssize_t conn_send(int fd, SSL *ssl, const void *buf, size_t len, bool *wants_out, uint32_t id)
{
    *wants_out = false;
    if (ssl != NULL) {
        ERR_clear_error();
        errno = 0;
        ssize_t n = tls_outcome(ssl, SSL_write(ssl, buf, clamp_int(len)), wants_out, id, "SSL_write");
        if (n < 0)
            fatal("conn %u: server closed the connection", id);
        return n;
    }
    for (;;) {
        ssize_t n = send(fd, buf, len, MSG_NOSIGNAL);
        if (n > 0)
            return n;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            *wants_out = true;
            return 0;
        }
        if (n == 0 || errno != EINTR)
            fatal("conn %u: send: %s", id, n == 0 ? "returned 0" : strerror(errno));
    }
}

/* Ends a connection; a TLS one says close_notify first (one attempt, not
 * waited for), so servers see an orderly end rather than a truncation. */
static void conn_close(int fd, SSL *ssl)
{
    if (ssl != NULL) {
        SSL_shutdown(ssl);
        SSL_free(ssl);
    }
    close(fd);
}

/* ,"tls_version":…,"tls_cipher":… of a connection, for the JSON line. */
static void print_tls(SSL *ssl)
{
    if (ssl != NULL)
        printf(",\"tls_version\":\"%s\",\"tls_cipher\":\"%s\"", SSL_get_version(ssl), SSL_get_cipher_name(ssl));
}

/* Connects (blocking, bounded) and returns a non-blocking socket. With
 * --tls, *ssl gets the connection's TLS session, handshake done. */
static int connect_one(const struct addrinfo *ai, SSL **ssl)
{
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        fatal("socket: %s", strerror(errno));
    /* A bounded blocking connect: SO_SNDTIMEO also limits connect(). */
    struct timeval tv = { .tv_sec = 5 };
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) != 0)
        fatal("connect: %s", strerror(errno));
    int one = 1;
    /* Without NODELAY a small message could sit behind Nagle. */
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    *ssl = NULL;
    if (tls_ctx != NULL) {
        /* Blocking too, and bounded the same way: a server that never
         * answers the ClientHello fails the run instead of hanging it. */
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        char reason[256];
        *ssl = SSL_new(tls_ctx);
        if (*ssl == NULL || SSL_set_fd(*ssl, fd) != 1)
            fatal("SSL_new: %s", tls_reason(reason, sizeof reason));
        ERR_clear_error();
        errno = 0;
        if (SSL_connect(*ssl) != 1)
            fatal("TLS handshake: %s", tls_reason(reason, sizeof reason));
    }
    if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) != 0)
        fatal("fcntl: %s", strerror(errno));
    return fd;
}

static void set_events(struct client *cl, struct conn *c, bool want_out)
{
    if (c->want_out == want_out)
        return;
    struct epoll_event ev = { .events = EPOLLIN | (want_out ? EPOLLOUT : 0), .data.u32 = c->id };
    if (epoll_ctl(cl->ep, EPOLL_CTL_MOD, c->fd, &ev) != 0)
        fatal("epoll_ctl: %s", strerror(errno));
    c->want_out = want_out;
}

/* EPOLLOUT only while a send or read waits for it: a writable socket with
 * EPOLLOUT armed would wake us up for nothing on every epoll_wait. */
static void update_events(struct client *cl, struct conn *c)
{
    set_events(cl, c, c->send_wants_out || c->recv_wants_out);
}

static void flush_send(struct client *cl, struct conn *c)
{
    bool wants_out = false;
    while (c->sent < cl->o.size) {
        ssize_t n = conn_send(c->fd, c->ssl, c->tx + c->sent, cl->o.size - c->sent, &wants_out, c->id);
        if (n == 0)
            break;
        c->sent += (size_t)n;
    }
    c->send_wants_out = wants_out;
    update_events(cl, c);
}

static void start_request(struct client *cl, struct conn *c)
{
    /* Each request uses a different window into the pattern, so a stale,
     * duplicated or cross-connection echo does not compare equal. */
    size_t shift = (size_t)((c->seq * 37u + c->id * 101u) % 251u);
    c->tx = cl->pattern + shift;
    c->seq++;
    c->sent = c->rcvd = 0;
    c->busy = true;
    cl->busy++;
    c->t_start = now_ns();
    flush_send(cl, c);
}

static void report_mismatch(const struct client *cl, const struct conn *c)
{
    size_t i = 0;
    while (i < cl->o.size && c->rx[i] == c->tx[i])
        i++;
    fatal("conn %u request %llu: echo mismatch at byte %zu of %zu: got 0x%02x, want 0x%02x",
          c->id, (unsigned long long)c->seq, i, cl->o.size, c->rx[i], c->tx[i]);
}

static void on_readable(struct client *cl, struct conn *c)
{
    for (;;) {
        bool wants_out = false;
        if (!c->busy) {
            /* Bytes with nothing in flight: the server sent too much. */
            uint8_t extra;
            ssize_t n = conn_recv(c->fd, c->ssl, &extra, 1, &wants_out, c->id);
            if (n > 0)
                fatal("conn %u: unexpected extra byte from server", c->id);
            if (n < 0)
                fatal("conn %u: server closed the connection", c->id);
            c->recv_wants_out = wants_out;
            update_events(cl, c);
            return;
        }
        /* Never read past this message: extra bytes surface above. */
        ssize_t n = conn_recv(c->fd, c->ssl, c->rx + c->rcvd, cl->o.size - c->rcvd, &wants_out, c->id);
        if (n < 0)
            fatal("conn %u: server closed the connection mid-request", c->id);
        if (n == 0) {
            c->recv_wants_out = wants_out;
            update_events(cl, c);
            return;
        }
        c->recv_wants_out = false;
        c->rcvd += (size_t)n;
        if (c->rcvd > c->sent)
            fatal("conn %u: echo arrived before it was sent", c->id);
        if (c->rcvd < cl->o.size)
            continue;

        uint64_t t = now_ns();
        if (memcmp(c->rx, c->tx, cl->o.size) != 0)
            report_mismatch(cl, c);
        c->busy = false;
        cl->busy--;
        /* Count only requests wholly inside the window. */
        if (cl->phase == MEASURE && c->t_start >= cl->t_measure_start)
            hist_record(&cl->hist, t - c->t_start);
        if (cl->phase != DRAIN)
            start_request(cl, c);
        /* Level-triggered epoll brings us back for bytes still in the
         * socket, but knows nothing of what OpenSSL holds already read. */
        if (c->ssl == NULL || !SSL_has_pending(c->ssl))
            return;
    }
}

/* ---- server memory -------------------------------------------------------- */

/* A `Name:  N kB` line of /proc/PID/status (VmRSS: resident now; VmHWM: the
 * most it ever was), in KiB. */
static long proc_status_kib(long pid, const char *field)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%ld/status", pid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        fatal("open %s: %s", path, strerror(errno));
    size_t len = strlen(field);
    long kib = -1;
    while (fgets(line, sizeof line, f) != NULL)
        if (strncmp(line, field, len) == 0 && line[len] == ':') {
            kib = strtol(line + len + 1, NULL, 10);
            break;
        }
    fclose(f);
    if (kib < 0)
        fatal("no %s in %s", field, path);
    return kib;
}

static long vm_rss_kib(long pid)
{
    return proc_status_kib(pid, "VmRSS");
}

/* ---- stream and flood modes ----------------------------------------------- */

/*
 * Connection i sends the byte stream pattern[(k + shift_i) % PERIOD] for
 * k = 0, 1, 2, …; the pattern array is PERIOD + the largest read or write
 * long, so any of them starting below PERIOD is one contiguous window. PERIOD is prime, so
 * it never lines up with chunk or buffer sizes and a reordered, duplicated
 * or lost stretch of echo cannot compare equal.
 */
#define PERIOD 65521u
#define STREAM_READ (256u * 1024)
#define FLOOD_READS 16u

struct stream_conn {
    int fd;
    SSL *ssl;            /* NULL without --tls */
    uint64_t sent, rcvd; /* stream offsets */
    size_t shift;
    bool want_out;
    bool recv_wants_out; /* TLS: a read waits for writability */
};

/* Stream mode: bytes a connection may have sent but not yet seen echoed:
 * enough to keep the server busy, bounded so the final drain is quick. Flood
 * mode has no such bound: what the server does not take stays in the socket
 * buffers (the kernel's backpressure) or in the server's memory. */
static uint64_t stream_window(size_t chunk)
{
    uint64_t w = 4 * (uint64_t)chunk;
    return w < (1u << 20) ? (1u << 20) : w;
}

static void stream_set_out(int ep, struct stream_conn *c, uint32_t id, bool want_out)
{
    if (c->want_out == want_out)
        return;
    struct epoll_event ev = { .events = EPOLLIN | (want_out ? EPOLLOUT : 0), .data.u32 = id };
    if (epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev) != 0)
        fatal("epoll_ctl: %s", strerror(errno));
    c->want_out = want_out;
}

static int run_stream(const struct options *o, const struct addrinfo *ai)
{
    const size_t chunk = o->size;
    const bool flood = o->mode == MODE_FLOOD;
    const uint64_t window = flood ? UINT64_MAX : stream_window(chunk);
    /* Receive in large reads whatever the chunk size, so the load generator
     * spends few system calls per byte and the server saturates first. */
    const size_t rx_size = chunk > STREAM_READ ? chunk : STREAM_READ;
    uint8_t *pattern = malloc(PERIOD + rx_size);
    uint8_t *rx = malloc(rx_size);
    struct stream_conn *conns = calloc(o->connections, sizeof *conns);
    if (pattern == NULL || rx == NULL || conns == NULL)
        fatal("out of memory");
    uint64_t x = 0x9E3779B97F4A7C15ull;
    for (size_t i = 0; i < PERIOD; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        pattern[i] = (uint8_t)(x >> 32);
    }
    /* The tail repeats the start, so windows crossing PERIOD stay contiguous
     * (in order, so it also works for chunks longer than PERIOD). */
    for (size_t j = 0; j < rx_size; j++)
        pattern[PERIOD + j] = pattern[j];

    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0)
        fatal("epoll_create1: %s", strerror(errno));
    for (uint32_t i = 0; i < o->connections; i++) {
        struct stream_conn *c = &conns[i];
        c->fd = connect_one(ai, &c->ssl);
        c->shift = (i * 7919u) % PERIOD;
        c->want_out = true;
        struct epoll_event ev = { .events = EPOLLIN | EPOLLOUT, .data.u32 = i };
        if (epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev) != 0)
            fatal("epoll_ctl: %s", strerror(errno));
    }

    const uint64_t t0 = now_ns();
    const uint64_t t_warm_end = t0 + (uint64_t)(o->warmup * 1e9);
    const uint64_t t_end = t_warm_end + (uint64_t)(o->duration * 1e9);
    const uint64_t stall_ns = (uint64_t)(o->stall_timeout * 1e9);
    enum phase phase = WARMUP;
    /* measured: bytes echoed in the window; measured_sent: bytes sent in it. */
    uint64_t t_start = 0, t_stop = 0, t_drained = 0, t_last_progress = t0, measured = 0, measured_sent = 0;
    uint64_t client_cpu0 = 0, client_cpu1 = 0, inflight_end = 0;
    long long ticks0 = 0, ticks1 = 0;
    long rss_start = 0, rss_end = 0, hwm_end = 0;

    enum { MAX_EVENTS = 64 };
    struct epoll_event events[MAX_EVENTS];
    for (;;) {
        uint64_t t = now_ns();
        if (phase == WARMUP && t >= t_warm_end) {
            phase = MEASURE;
            if (o->server_pid > 0) {
                /* RSS first: reading /proc is outside the CPU window. */
                rss_start = vm_rss_kib(o->server_pid);
                ticks0 = proc_cpu_ticks(o->server_pid);
            }
            client_cpu0 = process_cpu_ns();
            t_start = now_ns();
        }
        if (phase == MEASURE && t >= t_end) {
            t_stop = now_ns();
            client_cpu1 = process_cpu_ns();
            if (o->server_pid > 0) {
                ticks1 = proc_cpu_ticks(o->server_pid);
                rss_end = vm_rss_kib(o->server_pid);
                hwm_end = proc_status_kib(o->server_pid, "VmHWM");
            }
            phase = DRAIN;
            for (uint32_t i = 0; i < o->connections; i++) {
                inflight_end += conns[i].sent - conns[i].rcvd;
                stream_set_out(ep, &conns[i], i, false);
            }
        }
        if (phase == DRAIN) {
            bool pending = false;
            for (uint32_t i = 0; i < o->connections; i++)
                pending |= conns[i].rcvd < conns[i].sent;
            if (!pending) {
                t_drained = now_ns();
                break;
            }
        }
        if (t - t_last_progress > stall_ns)
            fatal("no echoed byte for %.1f s", o->stall_timeout);

        int n = epoll_wait(ep, events, MAX_EVENTS, 10);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            fatal("epoll_wait: %s", strerror(errno));
        }
        for (int e = 0; e < n; e++) {
            uint32_t id = events[e].data.u32;
            struct stream_conn *c = &conns[id];
            /* Plain stream: one large recv per event. Plain flood: read
             * whatever is there (until a read comes back short, at most
             * FLOOD_READS reads, so one busy connection cannot starve the
             * others). TLS: SSL_read returns one record (16 KiB at most), and
             * epoll cannot see plaintext that OpenSSL holds, so read until
             * OpenSSL needs the socket again (the window, or in flood mode
             * the socket buffers, bound how long that takes). */
            bool readable = (events[e].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) || c->recv_wants_out;
            unsigned reads = 0;
            while (readable) {
                bool wants_out = false;
                ssize_t r = conn_recv(c->fd, c->ssl, rx, rx_size, &wants_out, id);
                if (r < 0)
                    fatal("conn %u: server closed the connection", id);
                c->recv_wants_out = wants_out;
                if (r == 0)
                    break;
                if (c->rcvd + (uint64_t)r > c->sent)
                    fatal("conn %u: echo arrived before it was sent", id);
                size_t at = (size_t)((c->rcvd + c->shift) % PERIOD);
                if (memcmp(rx, pattern + at, (size_t)r) != 0) {
                    size_t k = 0;
                    while (rx[k] == pattern[at + k])
                        k++;
                    fatal("conn %u: echo mismatch at stream byte %llu", id,
                          (unsigned long long)(c->rcvd + k));
                }
                c->rcvd += (uint64_t)r;
                t_last_progress = now_ns();
                if (phase == MEASURE)
                    measured += (uint64_t)r;
                readable = c->ssl != NULL || (flood && (size_t)r == rx_size && ++reads < FLOOD_READS);
            }
            /* Stream: write while the window allows, on any event. Flood:
             * write whenever the socket is writable (plain: on EPOLLOUT;
             * TLS: on any event, as OpenSSL may have waited for a read). */
            bool may_write = flood ? (events[e].events & EPOLLOUT) || c->ssl != NULL : c->sent - c->rcvd < window;
            if (phase != DRAIN && may_write) {
                /* Chunks start at multiples of the chunk size, each one send
                 * (TLS: SSL_write calls, one per record, up to the chunk's
                 * end). A TLS write retried after WANT_WRITE is at least as
                 * long as before: the window only grows while it waits. */
                size_t len = chunk - (size_t)(c->sent % chunk);
                if (c->sent - c->rcvd + len > window)
                    len = (size_t)(window - (c->sent - c->rcvd));
                size_t at = (size_t)((c->sent + c->shift) % PERIOD);
                while (len > 0) {
                    bool wants_out = false;
                    ssize_t w = conn_send(c->fd, c->ssl, pattern + at, len, &wants_out, id);
                    if (w == 0)
                        break;
                    c->sent += (uint64_t)w;
                    if (phase == MEASURE)
                        measured_sent += (uint64_t)w;
                    at += (size_t)w;
                    len -= (size_t)w;
                    if (c->ssl == NULL)
                        break;
                }
            }
            stream_set_out(ep, c, id, (phase != DRAIN && c->sent - c->rcvd < window) || c->recv_wants_out);
        }
    }

    double secs = (double)(t_stop - t_start) / 1e9;
    check_window(secs, o->duration);
    double gbits = (double)measured * 8 / 1e9;
    printf("{\"mode\":\"%s\",\"connections\":%u,\"size\":%zu,\"bytes\":%llu,\"seconds\":%.3f,"
           "\"gbps\":%.3f,\"client_cpu_s\":%.3f",
           flood ? "flood" : "stream", o->connections, chunk, (unsigned long long)measured, secs, gbits / secs,
           (double)(client_cpu1 - client_cpu0) / 1e9);
    /* What went out and came back in the window (bytes = echoed_bytes), what
     * was still on its way at the window's end (socket buffers and whatever
     * the server holds), and how long its echo took to come back after. */
    printf(",\"sent_bytes\":%llu,\"echoed_bytes\":%llu,\"echoed_per_sent\":",
           (unsigned long long)measured_sent, (unsigned long long)measured);
    if (measured_sent > 0)
        printf("%.4f", (double)measured / (double)measured_sent);
    else
        printf("null");
    printf(",\"sent_gbps\":%.3f,\"inflight_end_bytes\":%llu,\"drain_s\":%.3f",
           (double)measured_sent * 8 / 1e9 / secs, (unsigned long long)inflight_end,
           (double)(t_drained - t_stop) / 1e9);
    print_tls(conns[0].ssl);
    if (o->server_pid > 0)
        printf(",\"rss_start_kib\":%ld,\"rss_end_kib\":%ld,\"hwm_end_kib\":%ld", rss_start, rss_end, hwm_end);
    if (o->server_pid > 0) {
        double cpu = (double)(ticks1 - ticks0) / (double)sysconf(_SC_CLK_TCK);
        printf(",\"server_cpu_s\":%.3f,\"gbps_per_server_cpu_s\":", cpu);
        if (cpu > 0)
            printf("%.3f", gbits / cpu);
        else
            printf("null");
    }
    printf("}\n");
    fflush(stdout);
    for (uint32_t i = 0; i < o->connections; i++)
        conn_close(conns[i].fd, conns[i].ssl);
    close(ep);
    free(conns);
    free(rx);
    free(pattern);
    return 0;
}

/* ---- idle mode ------------------------------------------------------------ */

/* Room for every connection plus stdio and epoll: raise the soft limit up
 * to the hard one, and the hard one too when privileged. */
static void raise_fd_limit(rlim_t want)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur >= want)
        return;
    if (rl.rlim_max < want) {
        struct rlimit up = { want, want };
        if (setrlimit(RLIMIT_NOFILE, &up) == 0)
            return;
    }
    rl.rlim_cur = rl.rlim_max < want ? rl.rlim_max : want;
    setrlimit(RLIMIT_NOFILE, &rl);
}

static int run_idle(const struct options *o, const struct addrinfo *ai)
{
    raise_fd_limit((rlim_t)o->connections + 64);
    int *fds = calloc(o->connections, sizeof *fds);
    SSL **ssls = calloc(o->connections, sizeof *ssls);
    if (fds == NULL || ssls == NULL)
        fatal("out of memory");
    long before = vm_rss_kib(o->server_pid), at_tenth = before;
    /* RSS after the first tenth too: growth past it leaves out one-time
     * costs of a server's first connections (thread stacks, pools). */
    unsigned tenth = o->connections / 10;
    for (unsigned i = 0; i < o->connections; i++) {
        if (i == tenth && tenth > 0)
            at_tenth = vm_rss_kib(o->server_pid);
        fds[i] = connect_one(ai, &ssls[i]);
        /* Blocking again, with a bounded wait for the one-byte echo. */
        fcntl(fds[i], F_SETFL, fcntl(fds[i], F_GETFL) & ~O_NONBLOCK);
        struct timeval tv = { .tv_sec = (time_t)o->stall_timeout, .tv_usec = 0 };
        setsockopt(fds[i], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        uint8_t out = (uint8_t)('a' + i % 26), in = 0;
        char reason[256];
        ERR_clear_error();
        errno = 0;
        if ((ssls[i] ? SSL_write(ssls[i], &out, 1) : send(fds[i], &out, 1, MSG_NOSIGNAL)) != 1)
            fatal("conn %u: send: %s", i, tls_reason(reason, sizeof reason));
        /* A blocking SSL_read goes past the server's post-handshake
         * messages (session tickets) to the echoed byte. */
        if ((ssls[i] ? SSL_read(ssls[i], &in, 1) : recv(fds[i], &in, 1, 0)) != 1)
            fatal("conn %u: no echo: %s", i, tls_reason(reason, sizeof reason));
        if (in != out)
            fatal("conn %u: echo mismatch", i);
    }
    /* Let the server finish whatever it does per connection (task start-up,
     * deferred frees) before reading its memory. */
    struct timespec hold = { .tv_sec = (time_t)o->duration,
                             .tv_nsec = (long)((o->duration - (double)(time_t)o->duration) * 1e9) };
    nanosleep(&hold, NULL);
    long after = vm_rss_kib(o->server_pid);
    printf("{\"mode\":\"idle\",\"connections\":%u,\"rss_before_kib\":%ld,\"rss_after_kib\":%ld,"
           "\"kib_per_conn\":%.3f,\"rss_at_tenth_kib\":%ld,\"marginal_kib_per_conn\":%.3f",
           o->connections, before, after, (double)(after - before) / o->connections, at_tenth,
           (double)(after - at_tenth) / (o->connections - tenth));
    print_tls(ssls[0]);
    printf("}\n");
    fflush(stdout);
    for (unsigned i = 0; i < o->connections; i++)
        conn_close(fds[i], ssls[i]);
    free(fds);
    free(ssls);
    return 0;
}

int main(int argc, char **argv)
{
    static struct client client;
    struct client *cl = &client;
    parse_args(argc, argv, &cl->o);
    signal(SIGPIPE, SIG_IGN);
    if (cl->o.tls)
        tls_setup(&cl->o);

    struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                              .ai_flags = AI_NUMERICSERV };
    struct addrinfo *res = NULL;
    int gai = getaddrinfo(cl->o.host, cl->o.port, &hints, &res);
    if (gai != 0)
        fatal("%s: %s", cl->o.host, gai_strerror(gai));
    /* Refuse anything that is not loopback: this tool must never load a
     * remote machine. */
    for (struct addrinfo *ai = res; ai != NULL; ai = ai->ai_next)
        if (!is_loopback(ai->ai_addr))
            fatal("refusing non-loopback host '%s'", cl->o.host);
    if (cl->o.mode == MODE_STREAM || cl->o.mode == MODE_FLOOD)
        return run_stream(&cl->o, res);
    if (cl->o.mode == MODE_IDLE)
        return run_idle(&cl->o, res);

    size_t size = cl->o.size;
    cl->pattern = malloc(size + 256);
    cl->conns = calloc(cl->o.connections, sizeof *cl->conns);
    if (cl->pattern == NULL || cl->conns == NULL)
        fatal("out of memory");
    uint64_t x = 0x9E3779B97F4A7C15ull; /* xorshift64: cheap, non-repeating */
    for (size_t i = 0; i < size + 256; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        cl->pattern[i] = (uint8_t)(x >> 32);
    }

    cl->ep = epoll_create1(EPOLL_CLOEXEC);
    if (cl->ep < 0)
        fatal("epoll_create1: %s", strerror(errno));
    for (unsigned i = 0; i < cl->o.connections; i++) {
        struct conn *c = &cl->conns[i];
        c->id = i;
        c->fd = connect_one(res, &c->ssl);
        c->rx = malloc(size);
        if (c->rx == NULL)
            fatal("out of memory");
        struct epoll_event ev = { .events = EPOLLIN, .data.u32 = i };
        if (epoll_ctl(cl->ep, EPOLL_CTL_ADD, c->fd, &ev) != 0)
            fatal("epoll_ctl: %s", strerror(errno));
    }
    freeaddrinfo(res);

    hist_reset(&cl->hist);
    const uint64_t t0 = now_ns();
    const uint64_t t_warm_end = t0 + (uint64_t)(cl->o.warmup * 1e9);
    const uint64_t t_end = t_warm_end + (uint64_t)(cl->o.duration * 1e9);
    const uint64_t stall_ns = (uint64_t)(cl->o.stall_timeout * 1e9);
    long long cpu_ticks0 = 0, cpu_ticks1 = 0;
    uint64_t client_cpu0 = 0, client_cpu1 = 0;
    cl->phase = WARMUP;

    for (unsigned i = 0; i < cl->o.connections; i++)
        start_request(cl, &cl->conns[i]);

    enum { MAX_EVENTS = 256 };
    struct epoll_event events[MAX_EVENTS];
    uint64_t t_drain_deadline = 0;
    for (;;) {
        uint64_t t = now_ns();
        /* Phase changes happen here, between event batches. */
        if (cl->phase == WARMUP && t >= t_warm_end) {
            cl->phase = MEASURE;
            if (cl->o.server_pid > 0)
                cpu_ticks0 = proc_cpu_ticks(cl->o.server_pid);
            client_cpu0 = process_cpu_ns();
            cl->t_measure_start = now_ns();
        }
        if (cl->phase == MEASURE && t >= t_end) {
            cl->t_measure_end = now_ns();
            client_cpu1 = process_cpu_ns();
            if (cl->o.server_pid > 0)
                cpu_ticks1 = proc_cpu_ticks(cl->o.server_pid);
            cl->phase = DRAIN;
            t_drain_deadline = t + stall_ns;
        }
        if (cl->phase == DRAIN && cl->busy == 0)
            break;
        if (cl->phase == DRAIN && t >= t_drain_deadline)
            fatal("%u request(s) still unanswered %.1f s after the end", cl->busy,
                  cl->o.stall_timeout);

        uint64_t next = cl->phase == WARMUP ? t_warm_end
                      : cl->phase == MEASURE ? t_end : t_drain_deadline;
        int timeout_ms = (int)((next - t) / 1000000u) + 1;
        int n = epoll_wait(cl->ep, events, MAX_EVENTS, timeout_ms);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            fatal("epoll_wait: %s", strerror(errno));
        }
        for (int i = 0; i < n; i++) {
            struct conn *c = &cl->conns[events[i].data.u32];
            uint32_t ev = events[i].events;
            /* TLS may have to read to go on writing, or write to go on
             * reading: a TLS connection retries a pending send on any event,
             * and a read that waits for writability on EPOLLOUT. */
            if ((ev & EPOLLOUT) || (c->ssl != NULL && c->busy && c->sent < size))
                flush_send(cl, c);
            if ((ev & (EPOLLIN | EPOLLERR | EPOLLHUP)) || c->recv_wants_out)
                on_readable(cl, c);
        }
        if (n == 0) {
            /* Quiet interval: make sure nobody is stuck. */
            uint64_t tn = now_ns();
            for (unsigned i = 0; i < cl->o.connections; i++) {
                const struct conn *c = &cl->conns[i];
                if (c->busy && tn - c->t_start > stall_ns)
                    fatal("conn %u: no complete echo after %.1f s (%zu/%zu bytes back)",
                          c->id, cl->o.stall_timeout, c->rcvd, size);
            }
        }
    }

    double secs = (double)(cl->t_measure_end - cl->t_measure_start) / 1e9;
    check_window(secs, cl->o.duration);
    const struct histogram *h = &cl->hist;
    if (h->n == 0)
        fatal("no request completed in the measured window");
    double rps = (double)h->n / secs;
    printf("{\"mode\":\"pingpong\",\"connections\":%u,\"size\":%zu,\"requests\":%llu,\"seconds\":%.3f,\"rps\":%.1f,"
           "\"p50_us\":%.2f,\"p99_us\":%.2f,\"p999_us\":%.2f,\"max_us\":%.2f,"
           "\"min_us\":%.2f,\"mean_us\":%.2f,\"client_cpu_s\":%.3f",
           cl->o.connections, size, (unsigned long long)h->n, secs, rps,
           hist_quantile(h, 0.50) / 1e3, hist_quantile(h, 0.99) / 1e3,
           hist_quantile(h, 0.999) / 1e3, (double)h->max / 1e3, (double)h->min / 1e3,
           (double)(h->sum / (long double)h->n) / 1e3,
           (double)(client_cpu1 - client_cpu0) / 1e9);
    print_tls(cl->conns[0].ssl);
    if (cl->o.server_pid > 0) {
        double cpu = (double)(cpu_ticks1 - cpu_ticks0) / (double)sysconf(_SC_CLK_TCK);
        printf(",\"server_cpu_s\":%.3f,\"rps_per_server_cpu_s\":", cpu);
        if (cpu > 0)
            printf("%.1f", (double)h->n / cpu);
        else
            printf("null");
    }
    printf("}\n");
    fflush(stdout);

    for (unsigned i = 0; i < cl->o.connections; i++) {
        conn_close(cl->conns[i].fd, cl->conns[i].ssl);
        free(cl->conns[i].rx);
    }
    free(cl->conns);
    free(cl->pattern);
    close(cl->ep);
    SSL_CTX_free(tls_ctx);
    return 0;
}
