// Clock, histogram, pattern, client sockets, the server child and /proc sampling.
#include "soak.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <linux/close_range.h>
#include <time.h>
#include <unistd.h>

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

// ---- results ----

static void append(char *buf, const char *fmt, va_list ap) {
    size_t used = strlen(buf);
    if (used + 1 >= FIGURES_CAP) return;
    vsnprintf(buf + used, FIGURES_CAP - used, fmt, ap);
}

static void appendf(char *buf, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    append(buf, fmt, ap);
    va_end(ap);
}

void fig(result_t *r, const char *label, const char *fmt, ...) {
    appendf(r->figures, "%s\t", label);
    va_list ap;
    va_start(ap, fmt);
    append(r->figures, fmt, ap);
    va_end(ap);
    appendf(r->figures, "\n");
    if (opt.verbose) {
        va_start(ap, fmt);
        fprintf(stderr, "    %-34s ", label);
        vfprintf(stderr, fmt, ap);
        fprintf(stderr, "\n");
        va_end(ap);
    }
}

int check(result_t *r, int ok, const char *fmt, ...) {
    appendf(r->checks, "%d\t", ok ? 1 : 0);
    va_list ap;
    va_start(ap, fmt);
    append(r->checks, fmt, ap);
    va_end(ap);
    appendf(r->checks, "\n");
    if (!ok) r->pass = 0;
    return ok;
}

void summary(result_t *r, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->summary, sizeof r->summary, fmt, ap);
    va_end(ap);
}

void note(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "  .. ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
}

// ---- time ----

uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

void sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

void sleep_until_ns(uint64_t deadline) {
    struct timespec ts = {(time_t)(deadline / 1000000000ull), (long)(deadline % 1000000000ull)};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {
    }
}

// ---- histogram ----

static int hist_index(uint64_t v) {
    if (v < 16) return (int)v;
    int e = 63 - __builtin_clzll(v);
    int m = (int)((v >> (e - 4)) & 15);
    int index = (e - 3) * 16 + m;
    return index < HIST_BUCKETS ? index : HIST_BUCKETS - 1;
}

static uint64_t hist_value(int index) {
    if (index < 16) return (uint64_t)index;
    int e = index / 16 + 3;
    uint64_t m = (uint64_t)(index % 16);
    uint64_t lower = (16 + m) << (e - 4);
    return lower + ((1ull << (e - 4)) >> 1);
}

void hist_add(hist_t *h, uint64_t value) {
    h->count[hist_index(value)]++;
    h->n++;
    if (value > h->max) h->max = value;
}

void hist_merge(hist_t *into, const hist_t *from) {
    for (int i = 0; i < HIST_BUCKETS; i++) into->count[i] += from->count[i];
    into->n += from->n;
    if (from->max > into->max) into->max = from->max;
}

uint64_t hist_percentile(const hist_t *h, double p) {
    if (h->n == 0) return 0;
    uint64_t rank = (uint64_t)(p / 100.0 * (double)h->n);
    if (rank >= h->n) rank = h->n - 1;
    uint64_t seen = 0;
    for (int i = 0; i < HIST_BUCKETS; i++) {
        seen += h->count[i];
        if (seen > rank) {
            uint64_t v = hist_value(i);
            return v > h->max ? h->max : v;
        }
    }
    return h->max;
}

// ---- pattern ----

static inline uint64_t mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

void pattern_fill(uint32_t conn, uint64_t offset, uint8_t *dst, size_t n) {
    uint64_t base = (uint64_t)conn << 40;
    size_t i = 0;
    while (i < n) {
        uint64_t k = offset + i;
        uint64_t word = mix64(base | (k >> 3));
        unsigned shift = (unsigned)(k & 7);
        if (shift == 0 && n - i >= 8) {
            memcpy(dst + i, &word, 8);  // little-endian: byte j of the word is byte k + j
            i += 8;
        } else {
            dst[i++] = (uint8_t)(word >> (8 * shift));
        }
    }
}

size_t pattern_mismatch(uint32_t conn, uint64_t offset, const uint8_t *src, size_t n) {
    uint8_t expected[4096];
    size_t done = 0;
    while (done < n) {
        size_t piece = n - done < sizeof expected ? n - done : sizeof expected;
        pattern_fill(conn, offset + done, expected, piece);
        if (memcmp(expected, src + done, piece) != 0) {
            for (size_t i = 0; i < piece; i++)
                if (expected[i] != src[done + i]) return done + i;
        }
        done += piece;
    }
    return n;
}

// ---- sockets ----

int tcp_connect(int port, uint32_t source, int nonblocking, int timeout_ms) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | (nonblocking ? SOCK_NONBLOCK : 0), 0);
    if (fd < 0) return -1;
    int one = 1;
    setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct sockaddr_in from = {.sin_family = AF_INET};
    from.sin_addr.s_addr = htonl(0x7f000002u + source % 32);
    if (bind(fd, (struct sockaddr *)&from, sizeof from) != 0) goto fail;
    if (!nonblocking && timeout_ms > 0) {
        // connect() honours the send timeout; reads and writes get both.
        struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    }
    struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&to, sizeof to) != 0 && !(nonblocking && errno == EINPROGRESS)) goto fail;
    return fd;
fail: {
    int saved = errno;
    close(fd);
    errno = saved;
    return -1;
}
}

int send_all(int fd, const void *buf, size_t n) {
    const uint8_t *p = buf;
    while (n > 0) {
        ssize_t k = send(fd, p, n, MSG_NOSIGNAL);
        if (k < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

int recv_all(int fd, void *buf, size_t n) {
    uint8_t *p = buf;
    while (n > 0) {
        ssize_t k = recv(fd, p, n, 0);
        if (k == 0) {
            errno = 0;
            return -1;
        }
        if (k < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

void set_linger_zero(int fd) {
    struct linger l = {1, 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
}

int set_nonblocking(int fd, int on) {
    int flags = fcntl(fd, F_GETFL);
    return fcntl(fd, F_SETFL, on ? flags | O_NONBLOCK : flags & ~O_NONBLOCK);
}

void raise_descriptor_limit(long wanted) {
    struct rlimit limit;
    getrlimit(RLIMIT_NOFILE, &limit);
    if ((long)limit.rlim_max < wanted) {
        // Root may raise the hard limit (up to fs.nr_open); others keep theirs.
        struct rlimit raised = {(rlim_t)wanted, (rlim_t)wanted};
        if (setrlimit(RLIMIT_NOFILE, &raised) == 0) return;
    }
    limit.rlim_cur = limit.rlim_max;
    setrlimit(RLIMIT_NOFILE, &limit);
}

long connect_many(int port, long n, int *fds, long in_flight, double timeout_s, char *error, size_t error_cap) {
    int ep = epoll_create1(EPOLL_CLOEXEC);
    long started = 0, finished = 0, connected = 0, pending = 0;
    uint64_t deadline = now_ns() + (uint64_t)(timeout_s * 1e9);
    struct epoll_event events[256];
    for (long i = 0; i < n; i++) fds[i] = -1;
    while (finished < n && now_ns() < deadline) {
        while (started < n && pending < in_flight) {
            long i = started++;
            int fd = tcp_connect(port, (uint32_t)i, 1, 0);
            if (fd < 0) {
                if (error && !error[0]) snprintf(error, error_cap, "socket/connect #%ld: %s", i, strerror(errno));
                finished++;
                continue;
            }
            fds[i] = fd;
            struct epoll_event ev = {.events = EPOLLOUT, .data.u64 = (uint64_t)i};
            epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
            pending++;
        }
        int k = epoll_wait(ep, events, 256, 100);
        for (int j = 0; j < k; j++) {
            long i = (long)events[j].data.u64;
            int fd = fds[i];
            int err = 0;
            socklen_t len = sizeof err;
            getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
            epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL);
            pending--;
            finished++;
            if (err == 0) {
                connected++;
            } else {
                if (error && !error[0]) snprintf(error, error_cap, "connect #%ld: %s", i, strerror(err));
                close(fd);
                fds[i] = -1;
            }
        }
    }
    // Whatever is still in progress at the deadline counts as failed.
    for (long i = 0; i < n && finished < n; i++) {
        if (fds[i] >= 0) {
            int err = 0;
            socklen_t len = sizeof err;
            getsockopt(fds[i], SOL_SOCKET, SO_ERROR, &err, &len);
            struct pollfd p = {fds[i], POLLOUT, 0};
            if (poll(&p, 1, 0) == 1 && err == 0) continue;
            if (error && !error[0]) snprintf(error, error_cap, "connect #%ld: timed out", i);
            close(fds[i]);
            fds[i] = -1;
            connected--;
        }
    }
    close(ep);
    long count = 0;
    for (long i = 0; i < n; i++) count += fds[i] >= 0;
    (void)connected;
    return count;
}

// ---- /proc ----

long proc_fds(pid_t pid) {
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/fd", (int)pid);
    DIR *d = opendir(path);
    if (!d) return -1;
    long n = 0;
    struct dirent *e;
    while ((e = readdir(d))) n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

long proc_status_kb(pid_t pid, const char *field) {
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    size_t len = strlen(field);
    long kb = -1;
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, field, len) == 0 && line[len] == ':') {
            kb = strtol(line + len + 1, NULL, 10);
            break;
        }
    }
    fclose(f);
    return kb;
}

long proc_mappings_rss_kb(pid_t pid, long size_kb) {
    char path[64], line[512];
    snprintf(path, sizeof path, "/proc/%d/smaps", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    long total = 0, value;
    int match = 0;
    while (fgets(line, sizeof line, f)) {
        // "Size:" starts each mapping's figures ("KernelPageSize:" does not match it).
        if (sscanf(line, "Size: %ld kB", &value) == 1) {
            match = value == size_kb;
        } else if (match && sscanf(line, "Rss: %ld kB", &value) == 1) {
            total += value;
            match = 0;
        }
    }
    fclose(f);
    return total;
}

double proc_cpu_seconds(pid_t pid) {
    char path[64], buf[2048];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    // Fields after the command name, which may hold spaces: state is field 3, utime 14, stime 15.
    char *p = strrchr(buf, ')');
    if (!p) return -1;
    unsigned long utime = 0, stime = 0;
    if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &utime, &stime) != 2) return -1;
    return (double)(utime + stime) / (double)sysconf(_SC_CLK_TCK);
}

void proc_reset_peak(pid_t pid) {
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/clear_refs", (int)pid);
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0) return;
    // "5" resets the peak resident set size (VmHWM) to the current one.
    if (write(fd, "5", 1) < 0) {
    }
    close(fd);
}

long wait_fds(pid_t pid, long target, double timeout_s) {
    uint64_t deadline = now_ns() + (uint64_t)(timeout_s * 1e9);
    long count = proc_fds(pid);
    while (count > target && now_ns() < deadline) {
        sleep_ms(50);
        count = proc_fds(pid);
    }
    return count;
}

// ---- the server child ----

// Reads one line from the server's standard output within timeout_ms; 0, or -1 on timeout/EOF.
static int server_line(server_t *s, char *line, size_t cap, int timeout_ms) {
    uint64_t deadline = now_ns() + (uint64_t)timeout_ms * 1000000ull;
    for (;;) {
        char *nl = memchr(s->buf, '\n', s->len);
        if (nl) {
            size_t n = (size_t)(nl - s->buf);
            size_t copy = n < cap - 1 ? n : cap - 1;
            memcpy(line, s->buf, copy);
            line[copy] = 0;
            memmove(s->buf, nl + 1, s->len - n - 1);
            s->len -= n + 1;
            return 0;
        }
        if (s->len == sizeof s->buf) s->len = 0;  // an absurd line: drop it
        uint64_t now = now_ns();
        if (now >= deadline) return -1;
        struct pollfd p = {s->out_fd, POLLIN, 0};
        int left = (int)((deadline - now) / 1000000ull) + 1;
        if (poll(&p, 1, left) <= 0) continue;
        ssize_t k = read(s->out_fd, s->buf + s->len, sizeof s->buf - s->len);
        if (k <= 0) return -1;
        s->len += (size_t)k;
    }
}

int server_start(server_t *s, const char *scenario, const char *const *args, const char *const *env, char *error,
                 size_t error_cap) {
    memset(s, 0, sizeof *s);
    snprintf(s->log_path, sizeof s->log_path, "%s/soak-%s.log", opt.log_dir, scenario);
    int out[2];
    if (pipe2(out, O_CLOEXEC) != 0) {
        snprintf(error, error_cap, "pipe: %s", strerror(errno));
        return -1;
    }
    const char *argv[64];
    int argc = 0;
    argv[argc++] = opt.server_path;
    for (int i = 0; args[i] && argc < 62; i++) argv[argc++] = args[i];
    argv[argc] = NULL;
    FILE *log = fopen(s->log_path, "w");
    if (log) {
        fprintf(log, "#");
        for (int i = 0; opt.server_env[i]; i++) fprintf(log, " %s", opt.server_env[i]);
        for (int i = 0; env && env[i]; i++) fprintf(log, " %s", env[i]);
        for (int i = 0; i < argc; i++) fprintf(log, " %s", argv[i]);
        fprintf(log, "\n");
        fclose(log);
    }
    pid_t pid = fork();
    if (pid < 0) {
        snprintf(error, error_cap, "fork: %s", strerror(errno));
        return -1;
    }
    if (pid == 0) {
        dup2(out[1], 1);
        int logfd = open(s->log_path, O_WRONLY | O_APPEND | O_CREAT, 0644);
        if (logfd >= 0) dup2(logfd, 2);
        // Nothing else of ours (or of whatever started us) goes to the server: its descriptor
        // count is part of what is measured.
        close_range(3, ~0u, 0);
        for (int i = 0; opt.server_env[i]; i++) putenv((char *)opt.server_env[i]);
        for (int i = 0; env && env[i]; i++) putenv((char *)env[i]);
        execv(argv[0], (char *const *)argv);
        fprintf(stderr, "exec %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    close(out[1]);
    s->pid = pid;
    s->out_fd = out[0];
    char line[512];
    if (server_line(s, line, sizeof line, 30000) != 0) {
        snprintf(error, error_cap, "no ready line from %s (see %s)", opt.server_path, s->log_path);
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        s->exited = 1;
        return -1;
    }
    char *port = strstr(line, "port=");
    s->port = port ? atoi(port + 5) : 0;
    char *nofile = strstr(line, "nofile=");
    s->nofile = nofile ? atol(nofile + 7) : 0;
    if (s->port <= 0) {
        snprintf(error, error_cap, "bad ready line: %s", line);
        return -1;
    }
    return 0;
}

static long field(const char *json, const char *name) {
    char key[64];
    snprintf(key, sizeof key, "\"%s\":", name);
    const char *p = strstr(json, key);
    return p ? strtol(p + strlen(key), NULL, 10) : -1;
}

int server_stats(server_t *s, stats_t *st) {
    if (s->exited || kill(s->pid, SIGUSR1) != 0) return -1;
    char line[4096];
    uint64_t deadline = now_ns() + 5000000000ull;
    while (now_ns() < deadline) {
        if (server_line(s, line, sizeof line, 5000) != 0) return -1;
        if (strncmp(line, "stats ", 6) != 0) continue;
        const char *j = line + 6;
        st->accepted = field(j, "accepted");
        st->open = field(j, "open");
        st->resets = field(j, "resets");
        st->limit_overruns = field(j, "limitOverruns");
        st->other_errors = field(j, "otherErrors");
        st->lines_echoed = field(j, "linesEchoed");
        st->bytes_echoed = field(j, "bytesEchoed");
        st->submissions = field(j, "submissions");
        st->enter_calls = field(j, "enterCalls");
        st->completions = field(j, "completions");
        st->bytes_received = field(j, "bytesReceived");
        st->bytes_sent = field(j, "bytesSent");
        st->copied_on_receive = field(j, "bytesCopiedOnReceive");
        st->copied_on_send = field(j, "bytesCopiedOnSend");
        st->buffer_exhaustions = field(j, "bufferExhaustions");
        st->receive_rearms = field(j, "receiveRearms");
        st->heap_in_use = field(j, "heapInUse");
        st->fds = field(j, "fds");
        return 0;
    }
    return -1;
}

int server_wait_open(server_t *s, long open, double timeout_s, stats_t *st) {
    uint64_t deadline = now_ns() + (uint64_t)(timeout_s * 1e9);
    for (;;) {
        if (server_stats(s, st) != 0) return -1;
        if (st->open == open) return 0;
        if (now_ns() >= deadline) return -1;
        sleep_ms(100);
    }
}

int server_alive(server_t *s) {
    if (s->exited) return 0;
    int status;
    pid_t r = waitpid(s->pid, &status, WNOHANG);
    if (r == s->pid) {
        s->exited = 1;
        s->status = status;
        return 0;
    }
    return 1;
}

int server_stop(server_t *s, double timeout_s, char *why, size_t cap) {
    why[0] = 0;
    if (!s->exited) {
        if (!server_alive(s)) {
            snprintf(why, cap, "the server had already exited");
        } else {
            kill(s->pid, SIGTERM);
            uint64_t deadline = now_ns() + (uint64_t)(timeout_s * 1e9);
            while (server_alive(s) && now_ns() < deadline) sleep_ms(20);
            if (!s->exited) {
                snprintf(why, cap, "no exit within %.0f s of SIGTERM: killed", timeout_s);
                kill(s->pid, SIGKILL);
                waitpid(s->pid, &s->status, 0);
                s->exited = 1;
            }
        }
    }
    if (s->out_fd > 0) close(s->out_fd);
    s->out_fd = -1;
    if (why[0]) return -1;
    if (WIFSIGNALED(s->status)) {
        snprintf(why, cap, "killed by signal %d (see %s)", WTERMSIG(s->status), s->log_path);
        return -1;
    }
    if (WEXITSTATUS(s->status) != 0) {
        snprintf(why, cap, "exit status %d (see %s)", WEXITSTATUS(s->status), s->log_path);
        return -1;
    }
    return 0;
}
