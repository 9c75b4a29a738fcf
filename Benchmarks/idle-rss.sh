#!/usr/bin/env bash
# Idle memory per connection: start each echo server, hold N idle connections to it (default
# 1,000) from a Python client, and report the server's added resident memory (VmRSS) per
# connection. Servers are the ones of compare.sh; build them first (compare.sh does).
#   Benchmarks/idle-rss.sh [N]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
count=${1:-1000}
bin=Benchmarks/.build/release
python=Benchmarks/.venv/bin/python
[[ -x $python ]] || python=python3
ulimit -n 65536 2>/dev/null || true

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

measure() { # name command...
    local name=$1; shift
    local log; log=$(mktemp)
    "$@" --host 127.0.0.1 --port 0 >"$log" 2>&1 &
    local pid=$!
    local port=""
    for _ in $(seq 100); do
        port=$(sed -n 's/^listening on \([0-9]*\).*/\1/p' "$log" | head -1)
        [[ -n $port ]] && break
        sleep 0.1
    done
    [[ -n $port ]] || { echo "$name: never listened" >&2; kill "$pid"; return 1; }
    sleep 0.5
    local before after
    before=$(rss_kib "$pid")
    # Hold the connections open, each having echoed one byte (so the server really serves it),
    # then idle; report once all are established.
    after=$(timeout 60 "$python" - "$port" "$count" "$pid" <<'PY'
import socket, sys, time
port, count, pid = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
conns = []
for _ in range(count):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"x")
    conns.append(s)
for s in conns:
    assert s.recv(1) == b"x"
time.sleep(1.0)
with open(f"/proc/{pid}/status") as f:
    print(next(l.split()[1] for l in f if l.startswith("VmRSS:")))
for s in conns:
    s.close()
PY
)
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    rm -f "$log"
    awk -v n="$name" -v b="$before" -v a="$after" -v c="$count" \
        'BEGIN { printf "| %s | %d | %d | %.2f |\n", n, b, a, (a - b) / c }'
}

echo "| server | RSS before (KiB) | RSS with $count idle connections (KiB) | KiB per connection |"
echo "|---|---|---|---|"
measure c-liburing Benchmarks/harness/build/uring-echo-server
measure c-epoll Benchmarks/harness/build/epoll-echo-server
measure uringstreams "$bin/echo-bench-server"
measure swiftnio Benchmarks/.build/release/nio-echo-server
measure uvloop "$python" Benchmarks/harness/asyncio-echo-server.py --uvloop
measure asyncio "$python" Benchmarks/harness/asyncio-echo-server.py
