/*
 * uring-echo-server: reference TCP echo server for the ping-pong benchmark.
 *
 * It is meant to be the fastest reasonable single-threaded io_uring echo
 * server, so that the Swift implementation has an honest yardstick:
 *
 *   - one thread, ring created with SINGLE_ISSUER | DEFER_TASKRUN (completion
 *     work runs only when we wait, in our own context: no IPIs, batched);
 *     falls back to COOP_TASKRUN, then to plain flags, on EINVAL;
 *   - registered ring fd (skips the fdget on every io_uring_enter);
 *   - multishot accept straight into the fixed file table (direct
 *     descriptors: no fd table lookups/refcounts on every recv/send);
 *   - one multishot recv per connection, picking buffers from a provided
 *     buffer ring (no per-recv SQE, no buffer pinned by idle connections);
 *   - the received buffer itself is sent back (zero copies in user space) and
 *     returned to the ring only once the send has fully completed;
 *   - sends are serialised per connection (a FIFO of buffer ids) so data
 *     order is kept even when a send comes back short; with --send-batch N
 *     one sendmsg carries up to N queued buffers (bulk streams);
 *   - ENOBUFS (ring empty) parks the connection until buffers come back
 *     instead of busy re-arming;
 *   - SIGINT/SIGTERM arrive through a signalfd polled by the ring itself, so
 *     the loop never sleeps through a shutdown request.
 *
 * Usage: uring-echo-server --host 127.0.0.1 --port N [options]
 * Prints "listening on PORT" on stdout (flushed) once it accepts.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <liburing.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>

/* ---- configuration -------------------------------------------------------- */

struct config {
    const char *host;
    const char *port;
    unsigned buffers;     /* provided-buffer ring entries, power of two */
    unsigned buffer_size; /* bytes per provided buffer */
    unsigned entries;     /* SQ entries (CQ is 4x) */
    unsigned max_conns;   /* fixed file table size when using direct fds */
    unsigned send_batch;  /* queued buffers one send may carry */
    int backlog;
    bool fixed_files;
    bool defer_taskrun;
    bool verbose;
};

static void usage(FILE *out, const char *argv0)
{
    fprintf(out,
            "usage: %s --host ADDR --port N [options]\n"
            "  --host ADDR          address to bind (default 127.0.0.1)\n"
            "  --port N             port, 0 = pick one (default 0)\n"
            "  --buffers N          provided buffers, power of two <= 32768 (default 512)\n"
            "  --buffer-size BYTES  size of each provided buffer (default 16384)\n"
            "  --entries N          submission queue entries (default 1024)\n"
            "  --max-conns N        fixed file table size (default 4096)\n"
            "  --backlog N          listen backlog (default 4096)\n"
            "  --send-batch N       queued buffers per send, via sendmsg (default 1, max 64)\n"
            "  --no-fixed-files     use normal fds instead of direct descriptors\n"
            "  --no-defer-taskrun   do not ask for SINGLE_ISSUER|DEFER_TASKRUN\n"

            "  --verbose            log connection events to stderr\n"
            "Prints 'listening on PORT' when ready; exits on SIGINT/SIGTERM.\n",
            argv0);
}

static unsigned parse_uint(const char *name, const char *s, unsigned lo, unsigned hi)
{
    char *end = NULL;
    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < lo || v > hi) {
        fprintf(stderr, "invalid %s '%s' (want %u..%u)\n", name, s, lo, hi);
        exit(2);
    }
    return (unsigned)v;
}

static void parse_args(int argc, char **argv, struct config *cfg)
{
    *cfg = (struct config){
        .host = "127.0.0.1",
        .port = "0",
        .buffers = 512,
        .buffer_size = 16384,
        .entries = 1024,
        .max_conns = 4096,
        .backlog = 4096,
        .send_batch = 1,
        .fixed_files = true,
        .defer_taskrun = true,
    };
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = (i + 1 < argc) ? argv[i + 1] : NULL;
        bool takes_value = true;
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout, argv[0]);
            exit(0);
        } else if (strcmp(a, "--no-fixed-files") == 0) {
            cfg->fixed_files = false;
            takes_value = false;
        } else if (strcmp(a, "--no-defer-taskrun") == 0) {
            cfg->defer_taskrun = false;
            takes_value = false;
        } else if (strcmp(a, "--verbose") == 0) {
            cfg->verbose = true;
            takes_value = false;
        } else if (v == NULL) {
            fprintf(stderr, "missing value for %s\n", a);
            usage(stderr, argv[0]);
            exit(2);
        } else if (strcmp(a, "--host") == 0) {
            cfg->host = v;
        } else if (strcmp(a, "--port") == 0) {
            parse_uint("port", v, 0, 65535);
            cfg->port = v;
        } else if (strcmp(a, "--buffers") == 0) {
            cfg->buffers = parse_uint("buffers", v, 1, 32768);
        } else if (strcmp(a, "--buffer-size") == 0) {
            cfg->buffer_size = parse_uint("buffer-size", v, 1, 1u << 30);
        } else if (strcmp(a, "--entries") == 0) {
            cfg->entries = parse_uint("entries", v, 8, 32768);
        } else if (strcmp(a, "--max-conns") == 0) {
            cfg->max_conns = parse_uint("max-conns", v, 1, 1u << 20);
        } else if (strcmp(a, "--send-batch") == 0) {
            cfg->send_batch = parse_uint("send-batch", v, 1, 64);
        } else if (strcmp(a, "--backlog") == 0) {
            cfg->backlog = (int)parse_uint("backlog", v, 1, 1u << 20);
        } else {
            fprintf(stderr, "unknown option %s\n", a);
            usage(stderr, argv[0]);
            exit(2);
        }
        if (takes_value)
            i++;
    }
    /* The kernel indexes the ring with a mask, so the size must be 2^n. */
    if ((cfg->buffers & (cfg->buffers - 1)) != 0) {
        fprintf(stderr, "--buffers must be a power of two\n");
        exit(2);
    }
}

/* ---- state ---------------------------------------------------------------- */

enum op { OP_ACCEPT = 1, OP_RECV, OP_SEND, OP_CLOSE, OP_CANCEL, OP_SIGNAL };

/* user_data layout: op in bits 56..63, connection index in bits 0..31. */
static inline uint64_t make_ud(enum op op, uint32_t idx)
{
    return ((uint64_t)op << 56) | idx;
}
static inline enum op ud_op(uint64_t ud) { return (enum op)(ud >> 56); }
static inline uint32_t ud_idx(uint64_t ud) { return (uint32_t)ud; }

#define NIL (-1)
#define BGID 0

/* One provided buffer while it is out of the ring: queued or being sent. */
struct buf_state {
    uint32_t len;  /* bytes received into it */
    uint32_t off;  /* bytes already sent back */
    int32_t next;  /* next buffer id in the owning connection's send FIFO */
};

/* A batched send's message. Allocated per connection on first use and
 * never moved while the kernel may read it (the conns array is realloc'd). */
struct send_vec {
    struct msghdr msg;
    struct iovec iov[];
};

struct conn {
    bool in_use;
    bool recv_armed;      /* a multishot recv is outstanding */
    bool send_inflight;   /* the FIFO head is being sent */
    bool eof;             /* peer shut down its side */
    bool failed;          /* error: drop pending data, close when idle */
    bool cancel_sent;
    bool close_sent;
    bool parked;          /* waiting for buffers after ENOBUFS */
    int32_t q_head, q_tail;           /* FIFO of buffer ids to send back */
    int32_t park_prev, park_next;     /* intrusive list of parked conns */
    struct send_vec *sv;              /* sendmsg state for batched sends */
};

struct server {
    struct config cfg;
    struct io_uring ring;
    int listen_fd;
    int signal_fd;
    struct signalfd_siginfo siginfo;
    bool stop;

    /* connections are indexed by direct-descriptor slot or by fd */
    struct conn *conns;
    size_t nconns;

    /* provided buffer ring */
    struct io_uring_buf_ring *br;
    size_t br_bytes;
    unsigned char *buf_base;
    size_t buf_bytes;
    struct buf_state *bufs;
    unsigned free_bufs;      /* buffers currently owned by the kernel */
    unsigned pending_return; /* added to the ring but tail not yet published */

    int32_t parked_head;
    bool accept_paused; /* out of descriptors: resume when one closes */

    /* counters, printed at exit */
    unsigned long long accepted, closed, bytes, enobufs, short_sends, resubmits;
};

static void die(const char *what, int err)
{
    fprintf(stderr, "uring-echo-server: %s: %s\n", what, strerror(err));
    exit(1);
}

/* Get an SQE, flushing the SQ to the kernel if it is full. */
static struct io_uring_sqe *get_sqe(struct server *s)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(&s->ring);
    if (sqe == NULL) {
        int r = io_uring_submit(&s->ring);
        if (r < 0)
            die("io_uring_submit", -r);
        sqe = io_uring_get_sqe(&s->ring);
        if (sqe == NULL)
            die("io_uring_get_sqe", EBUSY);
    }
    return sqe;
}

/* Connection indices are direct-descriptor slots in fixed-file mode and
 * plain fds otherwise; the SQE flag tells the kernel which. */
static void set_target(struct server *s, struct io_uring_sqe *sqe)
{
    if (s->cfg.fixed_files)
        sqe->flags |= IOSQE_FIXED_FILE;
}

static void arm_accept(struct server *s)
{
    struct io_uring_sqe *sqe = get_sqe(s);
    if (s->cfg.fixed_files)
        io_uring_prep_multishot_accept_direct(sqe, s->listen_fd, NULL, NULL, 0);
    else
        io_uring_prep_multishot_accept(sqe, s->listen_fd, NULL, NULL, SOCK_CLOEXEC);
    io_uring_sqe_set_data64(sqe, make_ud(OP_ACCEPT, 0));
}

/* Poll (not read) the signalfd: the poll is driven by our own task, while a
 * blocking read could be punted to an io-wq worker thread. */
static void arm_signal_poll(struct server *s)
{
    struct io_uring_sqe *sqe = get_sqe(s);
    io_uring_prep_poll_add(sqe, s->signal_fd, POLLIN);
    io_uring_sqe_set_data64(sqe, make_ud(OP_SIGNAL, 0));
}

static void arm_recv(struct server *s, uint32_t idx)
{
    struct io_uring_sqe *sqe = get_sqe(s);
    /* len 0: the selected buffer's own length is used. */
    io_uring_prep_recv_multishot(sqe, (int)idx, NULL, 0, 0);
    set_target(s, sqe);
    sqe->flags |= IOSQE_BUFFER_SELECT;
    sqe->buf_group = BGID;
    io_uring_sqe_set_data64(sqe, make_ud(OP_RECV, idx));
    s->conns[idx].recv_armed = true;
}

static void submit_send(struct server *s, uint32_t idx)
{
    struct conn *c = &s->conns[idx];
    int32_t bid = c->q_head;
    struct buf_state *b = &s->bufs[bid];
    unsigned char *p = s->buf_base + (size_t)bid * s->cfg.buffer_size;
    struct io_uring_sqe *sqe = get_sqe(s);
    if (s->cfg.send_batch > 1 && b->next != NIL) {
        if (c->sv == NULL) {
            c->sv = malloc(sizeof *c->sv + s->cfg.send_batch * sizeof(struct iovec));
            if (c->sv == NULL)
                die("malloc", ENOMEM);
        }
        size_t n = 0;
        for (int32_t q = bid; q != NIL && n < s->cfg.send_batch; q = s->bufs[q].next, n++) {
            c->sv->iov[n].iov_base = s->buf_base + (size_t)q * s->cfg.buffer_size + s->bufs[q].off;
            c->sv->iov[n].iov_len = s->bufs[q].len - s->bufs[q].off;
        }
        c->sv->msg = (struct msghdr){ .msg_iov = c->sv->iov, .msg_iovlen = n };
        io_uring_prep_sendmsg(sqe, (int)idx, &c->sv->msg, MSG_NOSIGNAL);
    } else {
        /* MSG_NOSIGNAL: a peer that vanished must give EPIPE, not kill us. */
        io_uring_prep_send(sqe, (int)idx, p + b->off, b->len - b->off, MSG_NOSIGNAL);
    }
    set_target(s, sqe);
    io_uring_sqe_set_data64(sqe, make_ud(OP_SEND, idx));
    c->send_inflight = true;
}

/* Hand a buffer back to the kernel; the tail is published once per batch. */
static void recycle_buffer(struct server *s, int32_t bid)
{
    io_uring_buf_ring_add(s->br, s->buf_base + (size_t)bid * s->cfg.buffer_size,
                          s->cfg.buffer_size, (unsigned short)bid,
                          io_uring_buf_ring_mask(s->cfg.buffers), (int)s->pending_return);
    s->pending_return++;
}

static void publish_buffers(struct server *s)
{
    if (s->pending_return == 0)
        return;
    io_uring_buf_ring_advance(s->br, (int)s->pending_return);
    s->free_bufs += s->pending_return;
    s->pending_return = 0;
}

static void park(struct server *s, uint32_t idx)
{
    struct conn *c = &s->conns[idx];
    c->parked = true;
    c->park_prev = NIL;
    c->park_next = s->parked_head;
    if (s->parked_head != NIL)
        s->conns[s->parked_head].park_prev = (int32_t)idx;
    s->parked_head = (int32_t)idx;
}

static void unpark(struct server *s, uint32_t idx)
{
    struct conn *c = &s->conns[idx];
    if (!c->parked)
        return;
    if (c->park_prev != NIL)
        s->conns[c->park_prev].park_next = c->park_next;
    else
        s->parked_head = c->park_next;
    if (c->park_next != NIL)
        s->conns[c->park_next].park_prev = c->park_prev;
    c->parked = false;
}

/* Close once nothing references the connection any more, so that a CQE
 * can never land on a slot that was already reused by a new connection. */
static void maybe_close(struct server *s, uint32_t idx)
{
    struct conn *c = &s->conns[idx];
    if (c->close_sent || !(c->eof || c->failed))
        return;
    if (c->failed && c->recv_armed && !c->cancel_sent) {
        struct io_uring_sqe *sqe = get_sqe(s);
        io_uring_prep_cancel64(sqe, make_ud(OP_RECV, idx), 0);
        io_uring_sqe_set_data64(sqe, make_ud(OP_CANCEL, idx));
        c->cancel_sent = true;
    }
    if (c->recv_armed || c->send_inflight)
        return;
    if (!c->failed && c->q_head != NIL)
        return; /* EOF but echo data still queued: finish sending first */
    while (c->q_head != NIL) {
        int32_t bid = c->q_head;
        c->q_head = s->bufs[bid].next;
        recycle_buffer(s, bid);
    }
    c->q_tail = NIL;
    free(c->sv);
    c->sv = NULL;
    unpark(s, idx);
    struct io_uring_sqe *sqe = get_sqe(s);
    if (s->cfg.fixed_files)
        io_uring_prep_close_direct(sqe, idx);
    else
        io_uring_prep_close(sqe, (int)idx);
    io_uring_sqe_set_data64(sqe, make_ud(OP_CLOSE, idx));
    c->close_sent = true;
}

static void fail_conn(struct server *s, uint32_t idx, const char *what, int err)
{
    if (s->cfg.verbose)
        fprintf(stderr, "conn %u: %s: %s\n", idx, what, strerror(err));
    s->conns[idx].failed = true;
    maybe_close(s, idx);
}

/* Make sure conns[idx] exists (plain fds can be any size). */
static void ensure_conn_slot(struct server *s, size_t idx)
{
    if (idx < s->nconns)
        return;
    size_t n = s->nconns ? s->nconns : 1024;
    while (n <= idx)
        n *= 2;
    struct conn *p = realloc(s->conns, n * sizeof *p);
    if (p == NULL)
        die("realloc", ENOMEM);
    memset(p + s->nconns, 0, (n - s->nconns) * sizeof *p);
    s->conns = p;
    s->nconns = n;
}

/* ---- completion handlers -------------------------------------------------- */

static void on_accept(struct server *s, struct io_uring_cqe *cqe)
{
    bool more = (cqe->flags & IORING_CQE_F_MORE) != 0;
    if (cqe->res == -ENFILE || cqe->res == -EMFILE) {
        /* Fixed table (or fd limit) full. Re-arming now would fail again
         * at once and spin; wait until a connection closes. */
        if (!more) {
            fprintf(stderr, "uring-echo-server: accept: %s; pausing until a close\n",
                    strerror(-cqe->res));
            s->accept_paused = true;
        }
        return;
    }
    if (!more)
        arm_accept(s); /* multishot ended (transient error, overflow): re-arm */
    if (cqe->res < 0) {
        fprintf(stderr, "uring-echo-server: accept: %s\n", strerror(-cqe->res));
        return;
    }
    uint32_t idx = (uint32_t)cqe->res;
    ensure_conn_slot(s, idx);
    struct conn *c = &s->conns[idx];
    *c = (struct conn){
        .in_use = true, .q_head = NIL, .q_tail = NIL, .park_prev = NIL, .park_next = NIL,
    };
    s->accepted++;
    if (s->cfg.verbose)
        fprintf(stderr, "conn %u: accepted\n", idx);
    arm_recv(s, idx);
}

static void on_recv(struct server *s, struct io_uring_cqe *cqe, uint32_t idx)
{
    struct conn *c = &s->conns[idx];
    bool more = (cqe->flags & IORING_CQE_F_MORE) != 0;
    if (!more)
        c->recv_armed = false;

    if (cqe->res > 0) {
        if (!(cqe->flags & IORING_CQE_F_BUFFER))
            die("recv completed without a buffer", EINVAL);
        int32_t bid = (int32_t)(cqe->flags >> IORING_CQE_BUFFER_SHIFT);
        s->free_bufs--;
        if (c->failed) {
            recycle_buffer(s, bid);
        } else {
            s->bufs[bid] = (struct buf_state){ .len = (uint32_t)cqe->res, .off = 0, .next = NIL };
            if (c->q_tail != NIL)
                s->bufs[c->q_tail].next = bid;
            else
                c->q_head = bid;
            c->q_tail = bid;
            if (!c->send_inflight)
                submit_send(s, idx);
        }
        if (!more && !c->failed) {
            s->resubmits++;
            arm_recv(s, idx);
        }
        maybe_close(s, idx);
        return;
    }
    if (cqe->res == 0) {
        c->eof = true; /* orderly shutdown by the peer */
        maybe_close(s, idx);
        return;
    }
    switch (-cqe->res) {
    case ENOBUFS:
        /* Ring ran dry; the kernel ended the multishot. Re-arm now if some
         * buffers came back meanwhile, otherwise when they do. */
        s->enobufs++;
        if (c->failed)
            break;
        if (s->free_bufs + s->pending_return > 0)
            arm_recv(s, idx);
        else
            park(s, idx);
        break;
    case ECANCELED:
        break;
    default:
        fail_conn(s, idx, "recv", -cqe->res);
        return;
    }
    maybe_close(s, idx);
}

static void on_send(struct server *s, struct io_uring_cqe *cqe, uint32_t idx)
{
    struct conn *c = &s->conns[idx];
    c->send_inflight = false;
    if (cqe->res <= 0) {
        fail_conn(s, idx, "send", cqe->res == 0 ? EPIPE : -cqe->res);
        return;
    }
    s->bytes += (unsigned long long)cqe->res;
    /* A send may span several queued buffers (batched) and end inside one
     * (short send: socket buffer full); the rest goes first next time,
     * keeping the byte order. */
    uint32_t left = (uint32_t)cqe->res;
    while (left > 0) {
        int32_t bid = c->q_head;
        struct buf_state *b = &s->bufs[bid];
        uint32_t part = b->len - b->off;
        if (left < part) {
            b->off += left;
            s->short_sends++;
            break;
        }
        left -= part;
        c->q_head = b->next;
        recycle_buffer(s, bid);
    }
    if (c->q_head == NIL)
        c->q_tail = NIL;
    if (c->q_head != NIL)
        submit_send(s, idx);
    else
        maybe_close(s, idx);
}

static void on_close(struct server *s, struct io_uring_cqe *cqe, uint32_t idx)
{
    if (cqe->res < 0)
        fprintf(stderr, "uring-echo-server: close %u: %s\n", idx, strerror(-cqe->res));
    s->conns[idx].in_use = false;
    s->closed++;
    if (s->accept_paused) {
        s->accept_paused = false;
        arm_accept(s);
    }
    if (s->cfg.verbose)
        fprintf(stderr, "conn %u: closed\n", idx);
}

static void handle_cqe(struct server *s, struct io_uring_cqe *cqe)
{
    uint64_t ud = io_uring_cqe_get_data64(cqe);
    uint32_t idx = ud_idx(ud);
    switch (ud_op(ud)) {
    case OP_ACCEPT: on_accept(s, cqe); break;
    case OP_RECV: on_recv(s, cqe, idx); break;
    case OP_SEND: on_send(s, cqe, idx); break;
    case OP_CLOSE: on_close(s, cqe, idx); break;
    case OP_CANCEL: break; /* outcome shows up on the recv itself */
    case OP_SIGNAL:
        if (cqe->res < 0 && cqe->res != -EINTR)
            die("signalfd poll", -cqe->res);
        if (read(s->signal_fd, &s->siginfo, sizeof s->siginfo) == (ssize_t)sizeof s->siginfo) {
            fprintf(stderr, "uring-echo-server: got signal %u\n", s->siginfo.ssi_signo);
            s->stop = true;
        } else {
            arm_signal_poll(s);
        }
        break;
    default: die("unknown completion", EINVAL);
    }
}

/* ---- setup ---------------------------------------------------------------- */

static int open_listener(const struct config *cfg)
{
    struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                              .ai_flags = AI_PASSIVE | AI_NUMERICSERV };
    struct addrinfo *res = NULL;
    int gai = getaddrinfo(cfg->host, cfg->port, &hints, &res);
    if (gai != 0) {
        fprintf(stderr, "uring-echo-server: %s: %s\n", cfg->host, gai_strerror(gai));
        exit(1);
    }
    int fd = -1, err = 0;
    for (struct addrinfo *ai = res; ai != NULL; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd < 0) {
            err = errno;
            continue;
        }
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        /* Linux copies TCP_NODELAY to accepted sockets; direct descriptors
         * have no fd to setsockopt() on, so set it here once. Small echoes
         * must not wait for Nagle/delayed-ACK interplay. */
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, cfg->backlog) == 0)
            break;
        err = errno;
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd < 0)
        die("bind/listen", err);
    return fd;
}

static int listener_port(int fd)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    if (getsockname(fd, (struct sockaddr *)&ss, &len) != 0)
        die("getsockname", errno);
    if (ss.ss_family == AF_INET6)
        return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    return ntohs(((struct sockaddr_in *)&ss)->sin_port);
}

static void setup_ring(struct server *s)
{
    /* Try the best mode first and step down on EINVAL (older kernels). */
    const unsigned base = IORING_SETUP_CQSIZE | IORING_SETUP_SUBMIT_ALL;
    const unsigned modes[] = {
        base | IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN,
        base | IORING_SETUP_COOP_TASKRUN,
        base,
        0,
    };
    const char *names[] = { "single-issuer+defer-taskrun", "coop-taskrun", "plain", "minimal" };
    int r = -EINVAL;
    size_t first = s->cfg.defer_taskrun ? 0 : 1;
    for (size_t i = first; i < sizeof modes / sizeof modes[0]; i++) {
        struct io_uring_params p = { .flags = modes[i], .cq_entries = s->cfg.entries * 4 };
        r = io_uring_queue_init_params(s->cfg.entries, &s->ring, &p);
        if (r == 0) {
            fprintf(stderr, "uring-echo-server: ring mode %s\n", names[i]);
            break;
        }
        if (r != -EINVAL)
            break;
    }
    if (r < 0)
        die("io_uring_queue_init_params", -r);
    /* Optional: saves an fd lookup per io_uring_enter. */
    (void)io_uring_register_ring_fd(&s->ring);

    if (s->cfg.fixed_files) {
        r = io_uring_register_files_sparse(&s->ring, s->cfg.max_conns);
        if (r < 0) {
            fprintf(stderr, "uring-echo-server: no fixed files (%s), using plain fds\n",
                    strerror(-r));
            s->cfg.fixed_files = false;
        } else {
            ensure_conn_slot(s, s->cfg.max_conns - 1);
        }
    }
}

static void setup_buffers(struct server *s)
{
    /* liburing 2.3 has no io_uring_setup_buf_ring: map page-aligned memory
     * for the ring ourselves and register it. */
    s->br_bytes = (size_t)s->cfg.buffers * sizeof(struct io_uring_buf);
    void *ringmem = mmap(NULL, s->br_bytes, PROT_READ | PROT_WRITE,
                         MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (ringmem == MAP_FAILED)
        die("mmap buffer ring", errno);
    s->br = ringmem;
    io_uring_buf_ring_init(s->br);

    struct io_uring_buf_reg reg = { .ring_addr = (uint64_t)(uintptr_t)ringmem,
                                    .ring_entries = s->cfg.buffers, .bgid = BGID };
    int r = io_uring_register_buf_ring(&s->ring, &reg, 0);
    if (r < 0)
        die("io_uring_register_buf_ring", -r);

    s->buf_bytes = (size_t)s->cfg.buffers * s->cfg.buffer_size;
    void *mem = mmap(NULL, s->buf_bytes, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    if (mem == MAP_FAILED)
        die("mmap buffers", errno);
    s->buf_base = mem;
    s->bufs = calloc(s->cfg.buffers, sizeof *s->bufs);
    if (s->bufs == NULL)
        die("calloc", ENOMEM);
    for (unsigned i = 0; i < s->cfg.buffers; i++)
        recycle_buffer(s, (int32_t)i);
    publish_buffers(s);
}

static void setup_signals(struct server *s)
{
    /* Block the signals and read them through the ring: a flag set by a
     * handler could be missed while we sleep in io_uring_enter. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    if (sigprocmask(SIG_BLOCK, &set, NULL) != 0)
        die("sigprocmask", errno);
    s->signal_fd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
    if (s->signal_fd < 0)
        die("signalfd", errno);
    signal(SIGPIPE, SIG_IGN);
}

int main(int argc, char **argv)
{
    static struct server srv;
    struct server *s = &srv;
    parse_args(argc, argv, &s->cfg);
    s->parked_head = NIL;

    setup_signals(s);
    s->listen_fd = open_listener(&s->cfg);
    setup_ring(s);
    setup_buffers(s);

    arm_signal_poll(s);
    arm_accept(s);

    printf("listening on %d\n", listener_port(s->listen_fd));
    fflush(stdout);

    while (!s->stop) {
        /* Submit everything queued and wait, in one syscall. With
         * DEFER_TASKRUN this is also where completions get processed.
         *
         * A send into a socket with room completes during the submit, so
         * this returns at once with just that CQE and the next loop sleeps:
         * two io_uring_enter per echo. Waiting for "sends + 1" CQEs instead
         * needs a timeout for safety (a send may stall), and arming that
         * hrtimer on every wait measured ~2x slower on this VM (same-CPU
         * ping-pong), so we keep the plain wait for one CQE. */
        int r = io_uring_submit_and_wait(&s->ring, 1);
        if (r < 0 && r != -EINTR && r != -EAGAIN && r != -EBUSY && r != -ETIME)
            die("io_uring_submit_and_wait", -r);

        unsigned head, seen = 0;
        struct io_uring_cqe *cqe;
        io_uring_for_each_cqe(&s->ring, head, cqe) {
            handle_cqe(s, cqe);
            seen++;
        }
        io_uring_cq_advance(&s->ring, seen);

        /* Publish returned buffers once per batch (one release store), then
         * wake connections that starved on an empty ring. */
        publish_buffers(s);
        while (s->parked_head != NIL && s->free_bufs > 0) {
            uint32_t idx = (uint32_t)s->parked_head;
            unpark(s, idx);
            arm_recv(s, idx);
        }
    }

    fprintf(stderr,
            "uring-echo-server: shutting down: accepted=%llu closed=%llu bytes=%llu "
            "enobufs=%llu short_sends=%llu recv_rearms=%llu\n",
            s->accepted, s->closed, s->bytes, s->enobufs, s->short_sends, s->resubmits);
    /* Tearing the ring down cancels everything still in flight and closes
     * the direct descriptors. */
    io_uring_queue_exit(&s->ring);
    close(s->listen_fd);
    close(s->signal_fd);
    munmap(s->buf_base, s->buf_bytes);
    munmap(s->br, s->br_bytes);
    free(s->bufs);
    free(s->conns);
    return 0;
}
