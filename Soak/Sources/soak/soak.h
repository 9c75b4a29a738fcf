// The soak driver's shared pieces: clock, histogram, the byte pattern every echo is checked
// against, client sockets, the server child process and what is sampled from /proc.
#ifndef SOAK_H
#define SOAK_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

// ---- options (main.c) ----

typedef struct {
    const char *server_path;  // soak-server; by default next to this executable
    const char *log_dir;      // where each scenario's server stderr goes
    int quick;                // the short variant of every scenario
    int markdown;             // print results as Markdown (for docs/reliability.md)
    int verbose;
    int loops;                // server event loops where the scenario does not fix them
    long connections;         // overrides a scenario's connection count when > 0
    double duration;          // overrides a scenario's duration (seconds) when > 0
    long cycles;              // overrides the cycle count when > 0
    const char *server_env[16];  // NAME=value for every server (--server-env), NULL-terminated
} options_t;

extern options_t opt;

// ---- results ----

#define FIGURES_CAP 8192
typedef struct {
    const char *name;
    const char *title;
    int ran;
    int pass;
    double seconds;
    char figures[FIGURES_CAP];  // "label\tvalue\n" lines
    char checks[FIGURES_CAP];   // "1\tdescription\n" (passed) or "0\t..." lines
    char summary[256];          // one line for the summary table
} result_t;

void fig(result_t *r, const char *label, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
int check(result_t *r, int ok, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
void summary(result_t *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

// ---- time ----

uint64_t now_ns(void);
void sleep_ms(long ms);
void sleep_until_ns(uint64_t deadline);

// ---- latency histogram: log-linear buckets, 16 per power of two (about 6 % resolution) ----

#define HIST_BUCKETS 1024
typedef struct {
    uint64_t count[HIST_BUCKETS];
    uint64_t n;
    uint64_t max;
} hist_t;

void hist_add(hist_t *h, uint64_t value);
void hist_merge(hist_t *into, const hist_t *from);
uint64_t hist_percentile(const hist_t *h, double p);  // the bucket's middle

// ---- the pattern: byte k of connection c's stream is byte (k % 8) of mix64(c << 40 | k / 8) ----
// Every word is distinct, so a lost, repeated or reordered piece, or another connection's bytes,
// never matches.

void pattern_fill(uint32_t conn, uint64_t offset, uint8_t *dst, size_t n);
// Index of the first byte of src that differs from the pattern, or n.
size_t pattern_mismatch(uint32_t conn, uint64_t offset, const uint8_t *src, size_t n);

// ---- client sockets ----

// A TCP socket to 127.0.0.1:port from source address 127.0.0.(2 + source % 32), the port chosen
// at connect time (IP_BIND_ADDRESS_NO_PORT), so 100,000 short connections do not run out of
// ephemeral ports. Nonblocking: the connect is in progress on return. Blocking: connected, with
// send and receive timeouts of timeout_ms. Returns -1 with errno on failure.
int tcp_connect(int port, uint32_t source, int nonblocking, int timeout_ms);
int send_all(int fd, const void *buf, size_t n);  // 0, or -1 with errno
// Receives exactly n bytes (0), or returns -1 with errno (0 at EOF).
int recv_all(int fd, void *buf, size_t n);
void set_linger_zero(int fd);
int set_nonblocking(int fd, int on);
void raise_descriptor_limit(long wanted);

// Opens n connections (nonblocking, at most in_flight connects at a time); fds[i] is -1 for those
// that failed. Returns how many connected.
long connect_many(int port, long n, int *fds, long in_flight, double timeout_s, char *error, size_t error_cap);

// ---- the server child ----

typedef struct {
    long accepted, open, resets, limit_overruns, other_errors, lines_echoed, bytes_echoed;
    long submissions, enter_calls, completions, bytes_received, bytes_sent;
    long copied_on_receive, copied_on_send, buffer_exhaustions, receive_rearms;
    long heap_in_use, fds;
} stats_t;

typedef struct {
    pid_t pid;
    int port;
    long nofile;  // the server's RLIMIT_NOFILE once serving (its ready line)
    int out_fd;
    char buf[16384];
    size_t len;
    char log_path[512];
    int exited;
    int status;
} server_t;

// Starts soak-server with args (NULL-terminated) and env ("NAME=value", NULL-terminated, may be
// NULL); waits for its ready line. Returns 0, or -1 with a message in error.
int server_start(server_t *s, const char *scenario, const char *const *args, const char *const *env, char *error,
                 size_t error_cap);
int server_stats(server_t *s, stats_t *st);  // 0, or -1 when the server did not answer
// Waits until the server's handler count reaches `open` (and returns 0), or timeout_s passes.
int server_wait_open(server_t *s, long open, double timeout_s, stats_t *st);
// SIGTERM, then waits up to timeout_s. Returns 0 when it exited with status 0; else describes it.
int server_stop(server_t *s, double timeout_s, char *why, size_t cap);
int server_alive(server_t *s);

long proc_fds(pid_t pid);
long proc_status_kb(pid_t pid, const char *field);  // VmRSS, VmHWM... in KiB
// Resident KiB of the process's mappings of exactly `size_kb` (a loop's receive buffers are one
// anonymous mapping of their whole size), from /proc/PID/smaps.
long proc_mappings_rss_kb(pid_t pid, long size_kb);
double proc_cpu_seconds(pid_t pid);
void proc_reset_peak(pid_t pid);
// Waits until the server's descriptor count is at most target; returns the last count seen.
long wait_fds(pid_t pid, long target, double timeout_s);

// ---- the echo engine (engine.c) ----

typedef struct {
    int fd;
    uint32_t id;
    uint8_t out_armed, failed, done;
    uint64_t sent, verified;
    uint64_t target;         // ping-pong: where the current message ends
    uint64_t t_send;         // ping-pong: when the current message's first byte went out
    uint64_t last_progress;  // when the last byte came back (or the connection started)
    uint64_t messages;
} sconn_t;

typedef struct {
    // Ping-pong: each connection sends message bytes and waits for all of them before the next.
    // Window: each keeps up to window bytes unanswered, sent message bytes at a time.
    size_t message;
    size_t window;  // 0 for ping-pong
    double duration_s;
    double drain_timeout_s;  // after the duration, how long to wait for what is still out
    double stall_timeout_s;  // a connection with bytes out and none back for this long has stalled
    int threads;
    // Out:
    hist_t rtt;  // ping-pong only (ns)
    uint64_t messages, bytes_sent, bytes_verified, mismatches, failures, stalls;
    uint64_t min_verified, min_messages;
    uint64_t longest_silence_ns;  // the longest a connection with bytes out waited for any back
    double elapsed_s;
    char first_error[256];
} engine_t;

void engine_run(engine_t *e, sconn_t *conns, long n);

#endif
