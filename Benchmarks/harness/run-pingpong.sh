#!/usr/bin/env bash
# run-pingpong.sh — interleaved ping-pong rounds against one or more echo servers.
#
#   Benchmarks/harness/run-pingpong.sh \
#       --server "c=Benchmarks/harness/build/uring-echo-server --host 127.0.0.1 --port {port}" \
#       --server "swift=/path/to/echo-bench-server --host 127.0.0.1 --port {port}" \
#       --rounds 5 --duration 3
#
# Each --server is NAME=COMMAND. If COMMAND contains {port}, a free loopback
# port is substituted; otherwise the server must print "listening on PORT".
# Either way we wait until the port accepts connections. Rounds run A B A B …
# so slow drifts on a shared machine hit every server alike. Each run: start
# the server (pinned to CPU 1 when there are 2+ CPUs), run the client pinned
# to CPU 0, stop the server. The client samples the server's utime+stime
# from /proc/PID/stat at the edges of its measured window.
#
# Output: one JSON line per run on stdout (also to --out FILE if given), then
# a markdown table of medians (min–max) per server. Exit status 1 if any run
# failed. Needs: bash, make+gcc+liburing-dev (to build), taskset, timeout;
# ss (iproute2) is used, if present, to find the PID that really listens.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
BUILD="$HERE/build"
CLIENT="$BUILD/pingpong-client"

rounds=5 duration=3 warmup=1 connections=1 size=64
startup_timeout=15 stop_timeout=5 out="" pin=auto keep_logs=0
servers=()

usage() {
    sed -n '2,22p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
    cat <<EOF
Options:
  --server NAME=COMMAND   server to measure (repeatable; default: the C server)
  --rounds N              interleaved rounds (default $rounds)
  --duration SEC          measured seconds per run (default $duration)
  --warmup SEC            unmeasured seconds before that (default $warmup)
  --connections C         client connections (default $connections)
  --size BYTES            message size (default $size)
  --startup-timeout SEC   how long a server may take to listen (default $startup_timeout)
  --out FILE              also append the per-run JSON lines to FILE
  --pin MODE              split: server CPU 1, client CPU 0 (default when 2+ CPUs)
                          same:  both on CPU 0 (no cross-CPU wakeups, see README.md)
                          none:  no taskset
  --no-pin                same as --pin none
  --keep-logs             keep server logs (path printed at the end)
EOF
}

die() { echo "run-pingpong: $*" >&2; exit 2; }

while [[ $# -gt 0 ]]; do
    case "$1" in
        --server) [[ $# -ge 2 ]] || die "--server needs a value"; servers+=("$2"); shift 2 ;;
        --rounds) rounds=${2:?}; shift 2 ;;
        --duration) duration=${2:?}; shift 2 ;;
        --warmup) warmup=${2:?}; shift 2 ;;
        --connections) connections=${2:?}; shift 2 ;;
        --size) size=${2:?}; shift 2 ;;
        --startup-timeout) startup_timeout=${2:?}; shift 2 ;;
        --out) out=${2:?}; shift 2 ;;
        --pin) pin=${2:?}; shift 2 ;;
        --no-pin) pin=none; shift ;;
        --keep-logs) keep_logs=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown argument: $1" ;;
    esac
done
[[ "$rounds" =~ ^[1-9][0-9]*$ ]] || die "--rounds must be a positive integer"
for v in "$duration" "$warmup" "$startup_timeout"; do
    [[ "$v" =~ ^[0-9]+([.][0-9]+)?$ ]] || die "not a number of seconds: $v"
done

# Always (re)build: make only recompiles what changed.
make -s -C "$HERE" >&2 || die "build failed"

if [[ ${#servers[@]} -eq 0 ]]; then
    servers=("c-uring=$BUILD/uring-echo-server --host 127.0.0.1 --port {port}")
fi
names=() cmds=()
for spec in "${servers[@]}"; do
    [[ "$spec" == *=* ]] || die "--server wants NAME=COMMAND, got: $spec"
    name=${spec%%=*} cmd=${spec#*=}
    [[ "$name" =~ ^[A-Za-z0-9._-]+$ ]] || die "bad server name: $name"
    for n in "${names[@]:-}"; do [[ "$n" != "$name" ]] || die "duplicate server name: $name"; done
    names+=("$name") cmds+=("$cmd")
done

# Pin server and client to different CPUs when we can, so they do not
# fight over one core (and results do not depend on scheduler placement).
server_pin=() client_pin=()
case "$pin" in
    auto|split)
        if command -v taskset >/dev/null && [[ $(nproc) -ge 2 ]]; then
            server_pin=(taskset -c 1) client_pin=(taskset -c 0) pin=split
        else
            pin=none
        fi ;;
    same) command -v taskset >/dev/null || die "--pin same needs taskset"
        server_pin=(taskset -c 0) client_pin=(taskset -c 0) ;;
    none) ;;
    *) die "--pin wants split, same or none" ;;
esac

logdir=$(mktemp -d "${TMPDIR:-/tmp}/pingpong.XXXXXX")
server_pid="" client_pid=""

stop_server() {
    # The server runs in its own session (setsid), so its PID is also its
    # process group: SIGTERM the server, then SIGKILL the whole group.
    local pid=$1 i
    [[ -n "$pid" ]] || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < stop_timeout * 10; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        echo "run-pingpong: server $pid ignored SIGTERM for ${stop_timeout}s, killing" >&2
        kill -KILL -- "-$pid" 2>/dev/null || true
    fi
    kill -KILL -- "-$pid" 2>/dev/null || true # leftovers of a wrapper
    wait "$pid" 2>/dev/null || true
}

cleanup() {
    local rc=$?
    if [[ -n "$client_pid" ]]; then kill -TERM "$client_pid" 2>/dev/null || true; fi
    stop_server "$server_pid"
    server_pid=""
    if [[ $keep_logs == 1 ]]; then echo "run-pingpong: logs in $logdir" >&2; else rm -rf "$logdir"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# The PID that owns the listening socket (the real server even if COMMAND is
# a wrapper); falls back to the PID we started.
listening_pid() {
    local port=$1 fallback=$2 p=""
    if command -v ss >/dev/null; then
        p=$(ss -Hltnp "sport = :$port" 2>/dev/null | grep -oE 'pid=[0-9]+' | head -n1 | cut -d= -f2 || true)
    fi
    echo "${p:-$fallback}"
}

# start_server NAME COMMAND LOG -> sets server_pid and server_port
start_server() {
    local name=$1 cmd=$2 log=$3 port="" deadline
    if [[ "$cmd" == *"{port}"* ]]; then
        port=$("$CLIENT" --print-free-port)
        cmd=${cmd//\{port\}/$port}
    fi
    echo "run-pingpong: [$name] $cmd" >>"$log"
    # setsid: own process group for cleanup. bash -c runs a simple command
    # with exec, so $! is normally the server itself.
    setsid "${server_pin[@]}" bash -c "$cmd" </dev/null >>"$log" 2>&1 &
    server_pid=$!
    deadline=$((SECONDS + ${startup_timeout%.*} + 1))
    while :; do
        if ! kill -0 "$server_pid" 2>/dev/null; then
            echo "run-pingpong: [$name] server exited during startup; log:" >&2
            tail -n 20 "$log" >&2
            server_pid=""
            return 1
        fi
        if [[ -z "$port" ]]; then
            port=$(grep -m1 -oE 'listening on [0-9]+' "$log" | awk '{print $3}' || true)
        fi
        if [[ -n "$port" ]] && port_open "$port"; then break; fi
        if ((SECONDS >= deadline)); then
            echo "run-pingpong: [$name] not accepting within ${startup_timeout}s; log:" >&2
            tail -n 20 "$log" >&2
            return 1
        fi
        sleep 0.05
    done
    server_port=$port
}

results="$logdir/results.jsonl"
: >"$results"
failures=0
client_deadline=$(awk -v w="$warmup" -v d="$duration" 'BEGIN { printf "%d", w + d + 30 }')

for ((round = 1; round <= rounds; round++)); do
    for i in "${!names[@]}"; do
        name=${names[$i]} log="$logdir/${names[$i]}.r$round.log"
        server_port=""
        if ! start_server "$name" "${cmds[$i]}" "$log"; then
            failures=$((failures + 1))
            stop_server "$server_pid"; server_pid=""
            continue
        fi
        cpu_pid=$(listening_pid "$server_port" "$server_pid")
        # In the background + wait, so a signal to this script is handled
        # at once (bash defers traps while a foreground child runs).
        timeout -k 5 "$client_deadline" "${client_pin[@]}" "$CLIENT" \
            --host 127.0.0.1 --port "$server_port" --connections "$connections" \
            --size "$size" --duration "$duration" --warmup "$warmup" \
            --server-pid "$cpu_pid" >"$logdir/client.out" 2>"$logdir/client.err" &
        client_pid=$!
        if wait "$client_pid" && json=$(<"$logdir/client.out") && [[ "$json" == "{"* ]]; then
            client_pid=""
            line="{\"server\":\"$name\",\"round\":$round,\"pin\":\"$pin\",${json#\{}"
            echo "$line"
            echo "$line" >>"$results"
            [[ -z "$out" ]] || echo "$line" >>"$out"
        else
            client_pid=""
            echo "run-pingpong: [$name] round $round: client failed:" >&2
            cat "$logdir/client.err" >&2
            failures=$((failures + 1))
        fi
        stop_server "$server_pid"
        server_pid=""
    done
done

# ---- summary ---------------------------------------------------------------
# field LINE KEY: numeric value of KEY in one of our flat JSON lines.
field() { sed -nE "s/.*\"$2\":(-?[0-9.eE+-]+|null).*/\1/p" <<<"$1"; }

# stats KEY NAME -> "median min max" over that server's runs (or "-").
stats() {
    local key=$1 name=$2
    { grep -F "\"server\":\"$name\"," "$results" || true; } |
        while IFS= read -r l; do field "$l" "$key"; done |
        { grep -vx null || true; } | sort -g |
        awk '{ v[NR] = $1 } END {
                 if (NR == 0) { print "- - -"; exit }
                 m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
                 print m, v[1], v[NR] }'
}
fmt() { # fmt "median min max" DECIMALS -> "m (lo–hi)"
    awk -v d="$2" '{ if ($1 == "-") print "-"; else printf "%.*f (%.*f–%.*f)\n", d, $1, d, $2, d, $3 }' <<<"$1"
}

echo
echo "### ping-pong: $connections connection(s), $size B, ${duration}s x $rounds rounds, pin=$pin (medians, min–max)"
echo
echo "| server | runs | req/s | req/s per server CPU-s | server CPU-s | p50 µs | p99 µs | p99.9 µs | req/s vs ${names[0]} |"
echo "|---|---|---|---|---|---|---|---|---|"
base_rps=$(stats rps "${names[0]}" | awk '{print $1}')
for name in "${names[@]}"; do
    runs=$(grep -cF "\"server\":\"$name\"," "$results" || true)
    rps=$(stats rps "$name")
    ratio=$(awk -v a="${rps%% *}" -v b="$base_rps" 'BEGIN { if (a == "-" || b == "-" || b == 0) print "-"; else printf "%.2fx", a / b }')
    printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$name" "$runs" \
        "$(fmt "$rps" 0)" "$(fmt "$(stats rps_per_server_cpu_s "$name")" 0)" \
        "$(fmt "$(stats server_cpu_s "$name")" 2)" "$(fmt "$(stats p50_us "$name")" 1)" \
        "$(fmt "$(stats p99_us "$name")" 1)" "$(fmt "$(stats p999_us "$name")" 1)" "$ratio"
done
if ((failures > 0)); then
    echo
    echo "run-pingpong: $failures run(s) failed" >&2
    exit 1
fi
