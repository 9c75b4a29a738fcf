#!/usr/bin/env bash
# ctest echo-round-trip: start the built tcp-echo-server on a free port (port
# 0; it prints the one it got), run tcp-echo-client against it, check both
# print the asyncio documentation's lines, and that SIGTERM ends the server
# with status 0.
# Usage: echo-round-trip.sh TCP_ECHO_SERVER TCP_ECHO_CLIENT
set -euo pipefail
server="$1"
client="$2"

work="$(mktemp -d)"
server_pid=""
cleanup() {
    if [[ -n "$server_pid" ]]; then
        kill "$server_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

: >"$work/server.out"
timeout 20 "$server" 127.0.0.1 0 >"$work/server.out" 2>&1 &
server_pid=$!

deadline=$((SECONDS + 20))
until grep -q '^Serving on' "$work/server.out"; do
    if ! kill -0 "$server_pid" 2>/dev/null || ((SECONDS >= deadline)); then
        echo "tcp-echo-server did not print 'Serving on':" >&2
        cat "$work/server.out" >&2
        exit 1
    fi
    sleep 0.05
done
port="$(sed -n "s/^Serving on ('127\.0\.0\.1', \([0-9][0-9]*\))\$/\1/p" "$work/server.out")"
if [[ -z "$port" ]]; then
    echo "unexpected first line from tcp-echo-server:" >&2
    cat "$work/server.out" >&2
    exit 1
fi

timeout 20 "$client" 127.0.0.1 "$port" >"$work/client.out" 2>&1 || {
    echo "tcp-echo-client failed:" >&2
    cat "$work/client.out" >&2
    exit 1
}
printf '%s\n' "Send: 'Hello World!'" "Received: 'Hello World!'" "Close the connection" >"$work/client.expected"
diff -u --label expected --label tcp-echo-client "$work/client.expected" "$work/client.out"

# The server prints its last line around the time the client finishes.
until [[ "$(wc -l <"$work/server.out")" -ge 4 ]]; do
    if ((SECONDS >= deadline)); then
        break
    fi
    sleep 0.05
done
# The client's port is the kernel's choice, so line 2 is matched, not compared.
received_pattern="^Received 'Hello World!' from \\('127\\.0\\.0\\.1', [0-9]+\\)\$"
sed -E "2s/$received_pattern/Received 'Hello World!' from ('127.0.0.1', CLIENT_PORT)/" "$work/server.out" >"$work/server.masked"
printf '%s\n' "Serving on ('127.0.0.1', $port)" "Received 'Hello World!' from ('127.0.0.1', CLIENT_PORT)" \
    "Send: 'Hello World!'" "Close the connection" >"$work/server.expected"
diff -u --label expected --label tcp-echo-server "$work/server.expected" "$work/server.masked"

status=0
kill -TERM "$server_pid"
wait "$server_pid" || status=$?
server_pid=""
if [[ "$status" -ne 0 ]]; then
    echo "tcp-echo-server exited with status $status on SIGTERM, not 0" >&2
    exit 1
fi
echo "echo round trip OK on port $port"
