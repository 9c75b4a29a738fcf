// soak: runs the reliability scenarios of issue 9 §5 against soak-server and prints what each
// measured and whether it passed. `soak --help` lists the options; docs/reliability.md has the
// figures of a full run.
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include "scenarios.h"

options_t opt = {.log_dir = "/tmp", .loops = 2};

typedef struct {
    const char *name;
    const char *title;
    void (*run)(result_t *);
} scenario_t;

static const scenario_t scenarios[] = {
    {"connections", "10,000 concurrent connections echoing", scenario_connections},
    {"cycles", "100,000 connect/echo/close cycles, a third reset, a third half-closed", scenario_cycles},
    {"emfile", "EMFILE on accept", scenario_emfile},
    {"slowloris", "a slow-loris crowd beside a ping-pong client", scenario_slowloris},
    {"lineflood", "a line flood without separator", scenario_lineflood},
    {"cqoverflow", "completion queue overflow on a small ring", scenario_cqoverflow},
    {"enobufs", "ENOBUFS with slow consumers", scenario_enobufs},
};
enum { SCENARIOS = sizeof scenarios / sizeof scenarios[0] };

static void usage(FILE *out) {
    fprintf(out,
            "usage: soak [options]\n"
            "Runs soak-server through the reliability scenarios and prints figures and pass/fail.\n\n"
            "  --scenarios LIST   comma-separated, in the order to run (default: all):\n");
    for (int i = 0; i < SCENARIOS; i++) fprintf(out, "                       %-12s %s\n", scenarios[i].name, scenarios[i].title);
    fprintf(out,
            "  --quick            the short variant of each scenario (fewer connections, seconds);\n"
            "                     latency ratios are reported, not checked\n"
            "  --connections N    override each scenario's connection count\n"
            "  --duration S       override each scenario's duration in seconds\n"
            "  --cycles N         override the number of connect/echo/close cycles\n"
            "  --loops N          server event loops where a scenario does not fix them (default 2)\n"
            "  --server PATH      the soak-server executable (default: next to this one)\n"
            "  --server-env N=V   set an environment variable for every server (repeatable), e.g.\n"
            "                     URINGSTREAMS_RECEIVE_BUFFER_COUNT=4; flags a scenario passes win\n"
            "  --log-dir DIR      where each scenario's server log goes (default /tmp)\n"
            "  --markdown         print the results as Markdown (docs/reliability.md)\n"
            "  --verbose          print figures as they are measured\n"
            "Exit status: 0 when every scenario passed, 1 otherwise.\n");
}

static void machine(char *out, size_t cap) {
    struct utsname u;
    uname(&u);
    char model[256] = "unknown CPU", line[512];
    long mem_kb = 0;
    FILE *f = fopen("/proc/cpuinfo", "r");
    while (f && fgets(line, sizeof line, f)) {
        if (strncmp(line, "model name", 10) == 0) {
            char *v = strchr(line, ':');
            if (v) {
                snprintf(model, sizeof model, "%s", v + 2);
                model[strcspn(model, "\n")] = 0;
            }
            break;
        }
    }
    if (f) fclose(f);
    f = fopen("/proc/meminfo", "r");
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "MemTotal: %ld kB", &mem_kb) == 1) break;
    if (f) fclose(f);
    snprintf(out, cap, "Linux %s, %ld CPUs (%s), %.0f GiB", u.release, sysconf(_SC_NPROCESSORS_ONLN), model,
             (double)mem_kb / 1048576.0);
}

static void print_text(const result_t *r) {
    printf("\n== %s: %s\n", r->name, r->title);
    const char *p = r->figures;
    while (*p) {
        const char *tab = strchr(p, '\t'), *nl = strchr(p, '\n');
        if (!tab || !nl) break;
        printf("  %-44.*s %.*s\n", (int)(tab - p), p, (int)(nl - tab - 1), tab + 1);
        p = nl + 1;
    }
    p = r->checks;
    while (*p) {
        const char *nl = strchr(p, '\n');
        if (!nl) break;
        printf("  [%s] %.*s\n", p[0] == '1' ? "pass" : "FAIL", (int)(nl - p - 2), p + 2);
        p = nl + 1;
    }
    printf("  => %s (%.0f s)\n", r->pass ? "PASS" : "FAIL", r->seconds);
    fflush(stdout);
}

static void print_markdown(const result_t *r) {
    printf("\n### %s: %s (%s)\n\n", r->name, r->title, r->pass ? "pass" : "FAIL");
    printf("| Figure | Value |\n|---|---|\n");
    const char *p = r->figures;
    while (*p) {
        const char *tab = strchr(p, '\t'), *nl = strchr(p, '\n');
        if (!tab || !nl) break;
        printf("| %.*s | %.*s |\n", (int)(tab - p), p, (int)(nl - tab - 1), tab + 1);
        p = nl + 1;
    }
    printf("\n");
    p = r->checks;
    while (*p) {
        const char *nl = strchr(p, '\n');
        if (!nl) break;
        printf("- %s: %.*s\n", p[0] == '1' ? "pass" : "**FAIL**", (int)(nl - p - 2), p + 2);
        p = nl + 1;
    }
    printf("\nServer log: `%s/soak-%s.log`; %.0f s.\n", opt.log_dir, r->name, r->seconds);
}

int main(int argc, char **argv) {
    static const struct option options[] = {
        {"scenarios", required_argument, 0, 's'}, {"quick", no_argument, 0, 'q'},
        {"connections", required_argument, 0, 'c'}, {"duration", required_argument, 0, 'd'},
        {"cycles", required_argument, 0, 'n'},   {"loops", required_argument, 0, 'l'},
        {"server", required_argument, 0, 'S'},   {"log-dir", required_argument, 0, 'L'},
        {"markdown", no_argument, 0, 'm'},       {"verbose", no_argument, 0, 'v'},
        {"server-env", required_argument, 0, 'E'}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0},
    };
    const char *list = NULL;
    int c;
    while ((c = getopt_long(argc, argv, "", options, NULL)) != -1) {
        switch (c) {
        case 's': list = optarg; break;
        case 'q': opt.quick = 1; break;
        case 'c': opt.connections = atol(optarg); break;
        case 'd': opt.duration = atof(optarg); break;
        case 'n': opt.cycles = atol(optarg); break;
        case 'l': opt.loops = atoi(optarg); break;
        case 'S': opt.server_path = optarg; break;
        case 'L': opt.log_dir = optarg; break;
        case 'm': opt.markdown = 1; break;
        case 'v': opt.verbose = 1; break;
        case 'E': {
            int k = 0;
            while (opt.server_env[k]) k++;
            if (k < 15) opt.server_env[k] = optarg;
            break;
        }
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    static char server[PATH_MAX];
    if (!opt.server_path) {
        ssize_t len = readlink("/proc/self/exe", server, sizeof server - 32);
        if (len <= 0) return 2;
        server[len] = 0;
        char *slash = strrchr(server, '/');
        strcpy(slash ? slash + 1 : server, "soak-server");
        opt.server_path = server;
    }
    if (access(opt.server_path, X_OK) != 0) {
        fprintf(stderr, "soak: no executable soak-server at %s (--server PATH)\n", opt.server_path);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    // 10,000 connections need 10,000 descriptors here and as many in the server, which inherits
    // this limit.
    long wanted = (opt.connections > 10000 ? opt.connections : 10000) + 1000;
    raise_descriptor_limit(wanted);

    int chosen[SCENARIOS * 4], chosen_count = 0;
    if (!list) {
        for (int i = 0; i < SCENARIOS; i++) chosen[chosen_count++] = i;
    } else {
        char *copy = strdup(list), *save = NULL;
        for (char *name = strtok_r(copy, ",", &save); name; name = strtok_r(NULL, ",", &save)) {
            int found = -1;
            for (int i = 0; i < SCENARIOS; i++)
                if (strcmp(scenarios[i].name, name) == 0) found = i;
            if (found < 0) {
                fprintf(stderr, "soak: unknown scenario '%s'\n", name);
                usage(stderr);
                return 2;
            }
            if (chosen_count < SCENARIOS * 4) chosen[chosen_count++] = found;
        }
        free(copy);
    }

    char host[512], date[64];
    machine(host, sizeof host);
    time_t now = time(NULL);
    strftime(date, sizeof date, "%Y-%m-%d %H:%M UTC", gmtime(&now));
    printf("soak %s: %s\n", opt.quick ? "--quick" : "(full)", date);
    printf("machine: %s\nserver: %s\n", host, opt.server_path);
    fflush(stdout);

    result_t *results = calloc((size_t)chosen_count, sizeof *results);
    int failed = 0;
    for (int k = 0; k < chosen_count; k++) {
        const scenario_t *s = &scenarios[chosen[k]];
        result_t *r = &results[k];
        r->name = s->name;
        r->title = s->title;
        r->pass = 1;
        r->ran = 1;
        fprintf(stderr, "-- %s: %s ...\n", s->name, s->title);
        uint64_t t0 = now_ns();
        s->run(r);
        r->seconds = (double)(now_ns() - t0) / 1e9;
        failed += !r->pass;
        if (opt.markdown)
            print_markdown(r);
        else
            print_text(r);
    }
    printf("\n%-12s %-6s %6s  %s\n", "scenario", "result", "secs", "summary");
    for (int k = 0; k < chosen_count; k++)
        printf("%-12s %-6s %6.0f  %s\n", results[k].name, results[k].pass ? "pass" : "FAIL", results[k].seconds,
               results[k].summary);
    printf("%s: %d of %d scenarios passed\n", failed ? "FAIL" : "PASS", chosen_count - failed, chosen_count);
    free(results);
    return failed ? 1 : 0;
}
