#!/usr/bin/env bash
# count-calls.sh — retains, releases and locks per echoed message, by call site.
#
#   Benchmarks/harness/count-calls.sh [--connections C] [--size BYTES] [--duration SEC] -- SERVER...
#
# Starts SERVER (which must print "listening on PORT"; pass --port 0) with call-counter.so
# preloaded, counts from just before the ping-pong client starts until it ends, and prints the
# totals per message (the client's request count) and the busiest call sites, demangled.
# Counting is deterministic where timing on a shared machine is not: a change that removes a
# retain shows as one fewer per message. Needs gcc, addr2line and swift (for demangling).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
connections=64 size=4096 duration=3
while [[ $# -gt 0 ]]; do
    case "$1" in
        --connections) connections=$2; shift 2 ;;
        --size) size=$2; shift 2 ;;
        --duration) duration=$2; shift 2 ;;
        --) shift; break ;;
        *) echo "count-calls: unknown option $1" >&2; exit 2 ;;
    esac
done
[[ $# -gt 0 ]] || { sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
make -s -C "$HERE" build/call-counter.so build/pingpong-client
work=$(mktemp -d)
trap 'kill "$server" 2>/dev/null || true; rm -rf "$work"' EXIT
CALL_COUNTER_OUT="$work/counts.txt" LD_PRELOAD="$HERE/build/call-counter.so" "$@" >"$work/server.log" 2>&1 &
server=$!
for _ in $(seq 100); do
    port=$(grep -o 'listening on [0-9]*' "$work/server.log" | grep -o '[0-9]*$' || true)
    [[ -n "$port" ]] && break
    sleep 0.1
done
[[ -n "${port:-}" ]] || { echo "count-calls: the server did not print 'listening on PORT'" >&2; exit 1; }
kill -USR1 "$server"
"$HERE/build/pingpong-client" --host 127.0.0.1 --port "$port" --connections "$connections" \
    --size "$size" --duration "$duration" --warmup 0 >"$work/client.json"
kill -USR2 "$server"
sleep 0.5
requests=$(grep -o '"requests":[0-9]*' "$work/client.json" | grep -o '[0-9]*$')
python3 - "$work/counts.txt" "$requests" <<'PY'
import subprocess, sys
rows = [line.split() for line in open(sys.argv[1])]
requests = int(sys.argv[2])
totals = [sum(int(r[k]) for r in rows) for k in range(3)]
print(f"{requests} messages; per message: {totals[0] / requests:.2f} retains, "
      f"{totals[1] / requests:.2f} releases, {totals[2] / requests:.2f} locks")
print("retains releases locks  site")
rows.sort(key=lambda r: -sum(int(r[k]) for k in range(3)))
for r in rows:
    if sum(int(r[k]) for k in range(3)) < requests * 0.2:
        break
    symbol = subprocess.run(["addr2line", "-f", "-e", r[3], r[4]], capture_output=True, text=True).stdout
    symbol = symbol.split("\n")[0]
    name = subprocess.run(["swift", "demangle", "--simplified", "--compact", symbol],
                          capture_output=True, text=True).stdout.strip() or symbol
    counts = "  ".join(f"{int(r[k]) / requests:5.2f}" for k in range(3))
    print(f"{counts}     {name[:110]}")
PY
