#!/usr/bin/env bash
# Interop with peers nobody here wrote: the Python asyncio streams
# documentation's examples, run by the system python3, against our built
# examples, and each of our examples' output compared line for line with
# what the Python original prints.
#
# Binaries come from $BIN_DIR (default: `swift build --show-bin-path`).
# INTEROP_WRAPPER, when set, is a command prefix (split at white space) that
# every one of our examples is started under, never a Python peer: e.g.
# `INTEROP_WRAPPER="bash scripts/without-io-uring"` runs them with io_uring
# blocked (scripts/test-without-io-uring).
# Every process runs under `timeout 20`. Ends with "N passed, N failed"
# and exits non-zero when anything failed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

BIN_DIR="${BIN_DIR:-$(swift build --show-bin-path)}"
for program in tcp-echo-server service-echo-server tcp-echo-client socketpair-wait http-headers; do
    if [[ ! -x "$BIN_DIR/$program" ]]; then
        echo "interop: $BIN_DIR/$program is missing; build the examples first (swift build)" >&2
        exit 2
    fi
done

# Empty unless INTEROP_WRAPPER says otherwise, so by default our examples run as they always did.
wrapper=()
read -r -a wrapper <<<"${INTEROP_WRAPPER:-}"
if [[ ${#wrapper[@]} -gt 0 ]]; then
    if ! command -v "${wrapper[0]}" >/dev/null 2>&1; then
        echo "interop: INTEROP_WRAPPER names ${wrapper[0]}, which is not a command" >&2
        exit 2
    fi
    echo "interop: our examples run under: ${wrapper[*]}"
fi

work="$(mktemp -d)"
background_pids=()
cleanup() {
    local pid
    for pid in "${background_pids[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    rm -rf "$work"
}
trap cleanup EXIT

passed=0
failed=0
skipped=0
pass() {
    echo "PASS: $1"
    passed=$((passed + 1))
}
fail() {
    echo "FAIL: $1"
    failed=$((failed + 1))
}
skip() {
    echo "SKIP: $1"
    skipped=$((skipped + 1))
}

# check NAME EXPECTED_FILE ACTUAL_FILE: pass when the files are equal, else show the difference.
check() {
    if diff -u --label expected --label actual "$2" "$3"; then
        pass "$1"
    else
        fail "$1"
    fi
}

free_port() {
    timeout 20 python3 -c '
import socket, sys
with socket.socket(socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET) as s:
    s.bind((sys.argv[1], 0))
    print(s.getsockname()[1])
' "${1:-127.0.0.1}"
}

# wait_for_lines FILE COUNT PID: until FILE has COUNT lines; fails when PID
# exits first or after 20 s.
wait_for_lines() {
    local file="$1" count="$2" pid="$3" deadline=$((SECONDS + 20))
    while [[ "$(wc -l <"$file")" -lt "$count" ]]; do
        if ! kill -0 "$pid" 2>/dev/null || ((SECONDS >= deadline)); then
            echo "  waited in vain for $count lines in $(basename "$file"); it has:"
            sed 's/^/  | /' "$file"
            return 1
        fi
        sleep 0.05
    done
}

# wait_for_port HOST PORT PID: until something accepts connections there.
wait_for_port() {
    local deadline=$((SECONDS + 20))
    until timeout 5 python3 -c 'import socket, sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), 1).close()' \
        "$1" "$2" 2>/dev/null; do
        if ! kill -0 "$3" 2>/dev/null || ((SECONDS >= deadline)); then
            return 1
        fi
        sleep 0.1
    done
}

# stop_and_expect_zero NAME PID SIGNAL: the server must exit 0 soon after SIGNAL.
stop_and_expect_zero() {
    local status=0
    # A server that already died must be reported as a failure with its status, not end the
    # script here (set -e) without a summary.
    kill "-$3" "$2" 2>/dev/null || true
    wait "$2" || status=$?
    if [[ "$status" -eq 0 ]]; then
        pass "$1"
    else
        fail "$1 (exit status $status)"
    fi
}

python_repr() {
    python3 -c 'import sys; print(repr(sys.argv[1]))' "$1"
}

# ---------------------------------------------------------------------------
# The documentation's examples, as Python wrote them; the changes are marked.

cat >"$work/echo_client.py" <<'PYTHON'
import asyncio
import sys

# Changed: host, port and message come from the command line.
HOST, PORT, MESSAGE = sys.argv[1], int(sys.argv[2]), sys.argv[3]
# Added: what the documentation's echo server must print for this
# connection, written to this file (its peer name is our socket name).
EXPECTED_SERVER_LINES = sys.argv[4] if len(sys.argv) > 4 else None


async def tcp_echo_client(message):
    reader, writer = await asyncio.open_connection(
        HOST, PORT)

    if EXPECTED_SERVER_LINES:
        with open(EXPECTED_SERVER_LINES, 'a', encoding='utf-8') as expected:
            addr = writer.get_extra_info('sockname')
            print(f"Received {message!r} from {addr!r}", file=expected)
            print(f"Send: {message!r}", file=expected)
            print("Close the connection", file=expected)

    print(f'Send: {message!r}')
    writer.write(message.encode())
    await writer.drain()

    data = await reader.read(100)
    print(f'Received: {data.decode()!r}')

    print('Close the connection')
    writer.close()
    await writer.wait_closed()

asyncio.run(tcp_echo_client(MESSAGE))
PYTHON

cat >"$work/echo_server.py" <<'PYTHON'
import asyncio
import sys

# Changed: host and port come from the command line.
HOST, PORT = sys.argv[1], int(sys.argv[2])


async def handle_echo(reader, writer):
    data = await reader.read(100)
    message = data.decode()
    addr = writer.get_extra_info('peername')

    print(f"Received {message!r} from {addr!r}")

    print(f"Send: {message!r}")
    writer.write(data)
    await writer.drain()

    print("Close the connection")
    writer.close()
    await writer.wait_closed()

async def main():
    server = await asyncio.start_server(
        handle_echo, HOST, PORT)

    addrs = ', '.join(str(sock.getsockname()) for sock in server.sockets)
    print(f'Serving on {addrs}')

    async with server:
        await server.serve_forever()

asyncio.run(main())
PYTHON

cat >"$work/socketpair_wait.py" <<'PYTHON'
import asyncio
import socket

async def wait_for_data():
    # Get a reference to the current event loop because
    # we want to access low-level APIs.
    loop = asyncio.get_running_loop()

    # Create a pair of connected sockets.
    rsock, wsock = socket.socketpair()

    # Register the open socket to wait for data.
    reader, writer = await asyncio.open_connection(sock=rsock)

    # Simulate the reception of data from the network
    loop.call_soon(wsock.send, 'abc'.encode())

    # Wait for data
    data = await reader.read(100)

    # Got data, we are done: close the socket
    print("Received:", data.decode())
    writer.close()
    await writer.wait_closed()

    # Close the second socket
    wsock.close()

asyncio.run(wait_for_data())
PYTHON

cat >"$work/http_headers.py" <<'PYTHON'
import asyncio
import urllib.parse
import sys

async def print_http_headers(url):
    url = urllib.parse.urlsplit(url)
    if url.scheme == 'https':
        # Changed: an explicit port in the URL is honoured, as ours does.
        reader, writer = await asyncio.open_connection(
            url.hostname, url.port or 443, ssl=True)
    else:
        # Changed: an explicit port in the URL is honoured, as ours does.
        reader, writer = await asyncio.open_connection(
            url.hostname, url.port or 80)

    query = (
        f"HEAD {url.path or '/'} HTTP/1.0\r\n"
        f"Host: {url.hostname}\r\n"
        f"\r\n"
    )

    writer.write(query.encode('latin-1'))
    while True:
        line = await reader.readline()
        if not line:
            break

        line = line.decode('latin1').rstrip()
        if line:
            print(f'HTTP header> {line}')

    # Ignore the body, close the socket
    writer.close()
    await writer.wait_closed()

url = sys.argv[1]
asyncio.run(print_http_headers(url))
PYTHON

# Exercises every branch of Python's repr: a quote of each kind (so repr
# escapes one), backslash, tab, non-ASCII (e-acute, a snowman) and a format
# character (zero width space). Spelled as UTF-8 bytes, which bash passes on
# as they are whatever the locale.
tricky_message=$'It\'s a "test" \\ \t caf\xc3\xa9 \xe2\x80\x8b \xe2\x98\x83'

# ---------------------------------------------------------------------------
# Python's echo client against our echo servers: tcp-echo-server (signal handling by hand) and
# service-echo-server (a ServiceLifecycle service in a ServiceGroup); both must print what the
# Python server prints and exit 0 on SIGINT and SIGTERM.

# run_server_against_python_clients SERVER LABEL HOST SIGNAL
run_server_against_python_clients() {
    local server="$1" label="$2" host="$3" signal="$4" port server_pid message
    local out="$work/server-$1-$2.out" expected="$work/server-$1-$2.expected"
    port="$(free_port "$host")"
    : >"$out"
    timeout 20 "${wrapper[@]}" "$BIN_DIR/$server" "$host" "$port" >"$out" 2>"$work/server-$1-$2.err" &
    server_pid=$!
    background_pids+=("$server_pid")

    if [[ "$host" == *:* ]]; then
        echo "Serving on ('$host', $port, 0, 0)" >"$expected"
    else
        echo "Serving on ('$host', $port)" >"$expected"
    fi
    if ! wait_for_lines "$out" 1 "$server_pid"; then
        fail "[$label] $server starts and prints 'Serving on'"
        cat "$work/server-$1-$2.err"
        return
    fi
    check "[$label] $server prints Serving on like Python" <(head -n 1 "$expected") <(head -n 1 "$out")

    for message in "Hello World!" "$tricky_message"; do
        local client_out="$work/python-client-$1-$2.out"
        {
            echo "Send: $(python_repr "$message")"
            echo "Received: $(python_repr "$message")"
            echo "Close the connection"
        } >"$work/python-client.expected"
        if timeout 20 python3 -u "$work/echo_client.py" "$host" "$port" "$message" "$expected" >"$client_out" 2>&1; then
            check "[$label] Python client gets its echo of $(python_repr "$message")" \
                "$work/python-client.expected" "$client_out"
        else
            fail "[$label] Python client against $server ($(python_repr "$message"))"
            cat "$client_out"
        fi
    done

    if wait_for_lines "$out" "$(wc -l <"$expected")" "$server_pid"; then
        check "[$label] $server output matches the Python server's, line for line" "$expected" "$out"
    else
        fail "[$label] $server prints a line per step"
    fi
    stop_and_expect_zero "[$label] $server exits 0 on SIG$signal" "$server_pid" "$signal"
}

# A client that connects and says nothing must not keep the server from
# stopping: asyncio.run would cancel its handler too.
# stop_with_idle_client SERVER
stop_with_idle_client() {
    local server="$1" port server_pid idle_client_pid stop_started
    port="$(free_port)"
    : >"$work/server-idle-$server.out"
    # Standard error apart: a log line there (the epoll fallback's notice) must not pass for
    # "Serving on" before the server listens.
    timeout 20 "${wrapper[@]}" "$BIN_DIR/$server" 127.0.0.1 "$port" >"$work/server-idle-$server.out" \
        2>"$work/server-idle-$server.err" &
    server_pid=$!
    background_pids+=("$server_pid")
    if wait_for_lines "$work/server-idle-$server.out" 1 "$server_pid"; then
        timeout 20 python3 -c '
import socket, sys, time
with socket.create_connection(("127.0.0.1", int(sys.argv[1]))):
    time.sleep(15)
' "$port" &
        idle_client_pid=$!
        background_pids+=("$idle_client_pid")
        sleep 0.5
        stop_started=$SECONDS
        stop_and_expect_zero "$server exits 0 on SIGTERM with an idle client connected" "$server_pid" TERM
        if ((SECONDS - stop_started > 5)); then
            fail "$server stops within 5 s with an idle client connected (took $((SECONDS - stop_started)) s)"
        else
            pass "$server stops within 5 s with an idle client connected"
        fi
        kill "$idle_client_pid" 2>/dev/null || true
        wait "$idle_client_pid" 2>/dev/null || true
    else
        fail "$server starts (idle client test)"
        cat "$work/server-idle-$server.err"
    fi
}

for server in tcp-echo-server service-echo-server; do
    echo "== Python asyncio echo client -> our $server"
    run_server_against_python_clients "$server" ipv4 127.0.0.1 INT
    if timeout 20 python3 -c 'import socket; socket.socket(socket.AF_INET6).bind(("::1", 0))' 2>/dev/null; then
        run_server_against_python_clients "$server" ipv6 ::1 TERM
    else
        skip "IPv6 loopback (::1) is not available here"
    fi
    stop_with_idle_client "$server"
done

# ---------------------------------------------------------------------------
echo "== our tcp-echo-client -> Python asyncio echo server"

port="$(free_port)"
: >"$work/python-server.out"
timeout 20 python3 -u "$work/echo_server.py" 127.0.0.1 "$port" >"$work/python-server.out" 2>&1 &
python_server_pid=$!
background_pids+=("$python_server_pid")
if wait_for_lines "$work/python-server.out" 1 "$python_server_pid"; then
    printf 'Send: %s\nReceived: %s\nClose the connection\n' "'Hello World!'" "'Hello World!'" \
        >"$work/client-default.expected"
    if timeout 20 "${wrapper[@]}" "$BIN_DIR/tcp-echo-client" 127.0.0.1 "$port" >"$work/client-default.out" 2>&1; then
        check "tcp-echo-client prints the documented lines" "$work/client-default.expected" "$work/client-default.out"
    else
        fail "tcp-echo-client against the Python server"
        cat "$work/client-default.out"
    fi

    timeout 20 python3 -u "$work/echo_client.py" 127.0.0.1 "$port" "$tricky_message" \
        >"$work/python-client-tricky.out" 2>&1 || true
    if timeout 20 "${wrapper[@]}" "$BIN_DIR/tcp-echo-client" 127.0.0.1 "$port" "$tricky_message" \
        >"$work/client-tricky.out" 2>&1; then
        check "tcp-echo-client output equals the Python client's for $(python_repr "$tricky_message")" \
            "$work/python-client-tricky.out" "$work/client-tricky.out"
    else
        fail "tcp-echo-client with $(python_repr "$tricky_message")"
        cat "$work/client-tricky.out"
    fi
else
    fail "the Python echo server starts"
fi
kill "$python_server_pid" 2>/dev/null || true
wait "$python_server_pid" 2>/dev/null || true

# ---------------------------------------------------------------------------
echo "== socketpair-wait"

timeout 20 python3 -u "$work/socketpair_wait.py" >"$work/socketpair.expected" 2>&1 || true
if timeout 20 "${wrapper[@]}" "$BIN_DIR/socketpair-wait" >"$work/socketpair.out" 2>&1; then
    check "socketpair-wait prints what the Python original prints" "$work/socketpair.expected" "$work/socketpair.out"
else
    fail "socketpair-wait runs"
    cat "$work/socketpair.out"
fi

# ---------------------------------------------------------------------------
echo "== http-headers -> python3 -m http.server"

mkdir "$work/www"
echo "hello" >"$work/www/index.html"
port="$(free_port)"
timeout 20 python3 -m http.server --bind 127.0.0.1 --directory "$work/www" "$port" \
    >"$work/http-server.out" 2>&1 &
http_server_pid=$!
background_pids+=("$http_server_pid")
if wait_for_port 127.0.0.1 "$port" "$http_server_pid"; then
    url="http://127.0.0.1:$port/"
    if timeout 20 "${wrapper[@]}" "$BIN_DIR/http-headers" "$url" >"$work/http.out" 2>&1; then
        if head -n 1 "$work/http.out" | grep -Eq '^HTTP header> HTTP/1\.[01] 200 OK$'; then
            pass "http-headers prints the status line as 'HTTP header> HTTP/1.0 200 OK'"
        else
            fail "http-headers prints the status line first"
            cat "$work/http.out"
        fi
        # The Date header may tick over between the two requests.
        timeout 20 python3 -u "$work/http_headers.py" "$url" 2>&1 | sed 's/^HTTP header> Date: .*/HTTP header> Date: -/' \
            >"$work/http.expected" || true
        check "http-headers prints what the Python original prints" "$work/http.expected" \
            <(sed 's/^HTTP header> Date: .*/HTTP header> Date: -/' "$work/http.out")
    else
        fail "http-headers $url"
        cat "$work/http.out"
    fi
else
    fail "python3 -m http.server starts"
fi
kill "$http_server_pid" 2>/dev/null || true
wait "$http_server_pid" 2>/dev/null || true

# ---------------------------------------------------------------------------
echo "== http-headers -> an HTTPS server (python3 http.server over ssl)"

# A CA and a certificate for localhost, made here; both clients trust the CA
# through SSL_CERT_FILE, which OpenSSL's (and so Python's) default store honours.
if command -v openssl >/dev/null 2>&1; then
    tls="$work/tls"
    mkdir "$tls"
    (
        cd "$tls"
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout ca.key -out ca.pem \
            -days 2 -subj "/CN=interop CA"
        openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout server.key -out server.csr \
            -subj "/CN=localhost"
        printf 'subjectAltName=DNS:localhost\n' >server.ext
        openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -extfile server.ext \
            -out server.pem
    ) >"$work/tls.out" 2>&1
    port="$(free_port)"
    timeout 20 python3 -c '
import http.server, ssl, sys
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(sys.argv[2], sys.argv[3])
server = http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), http.server.SimpleHTTPRequestHandler)
server.socket = context.wrap_socket(server.socket, server_side=True)
server.serve_forever()
' "$port" "$tls/server.pem" "$tls/server.key" >"$work/https-server.out" 2>&1 &
    https_server_pid=$!
    background_pids+=("$https_server_pid")
    if wait_for_port 127.0.0.1 "$port" "$https_server_pid"; then
        url="https://localhost:$port/"
        if SSL_CERT_FILE="$tls/ca.pem" timeout 20 "${wrapper[@]}" "$BIN_DIR/http-headers" "$url" >"$work/https.out" 2>&1; then
            if head -n 1 "$work/https.out" | grep -Eq '^HTTP header> HTTP/1\.[01] 200 OK$'; then
                pass "http-headers prints the status line of an https:// URL"
            else
                fail "http-headers prints the status line of an https:// URL first"
                cat "$work/https.out"
            fi
            SSL_CERT_FILE="$tls/ca.pem" timeout 20 python3 -u "$work/http_headers.py" "$url" 2>&1 |
                sed 's/^HTTP header> Date: .*/HTTP header> Date: -/' >"$work/https.expected" || true
            check "http-headers over TLS prints what the Python original prints" "$work/https.expected" \
                <(sed 's/^HTTP header> Date: .*/HTTP header> Date: -/' "$work/https.out")
        else
            fail "http-headers $url"
            cat "$work/https.out"
        fi
        # Without the CA the certificate must be refused, as Python's ssl=True refuses it.
        if SSL_CERT_FILE=/dev/null SSL_CERT_DIR=/nonexistent timeout 20 "${wrapper[@]}" "$BIN_DIR/http-headers" "$url" \
            >"$work/https-untrusted.out" 2>&1; then
            fail "http-headers refuses a server whose CA it does not trust (it exited 0)"
        elif grep -q 'certificate' "$work/https-untrusted.out"; then
            pass "http-headers refuses a server whose CA it does not trust"
        else
            fail "http-headers names the certificate when it refuses a server"
            cat "$work/https-untrusted.out"
        fi
    else
        fail "python3 https server starts"
        cat "$work/https-server.out" "$work/tls.out"
    fi
    kill "$https_server_pid" 2>/dev/null || true
    wait "$https_server_pid" 2>/dev/null || true
else
    skip "http-headers over TLS: the openssl command is missing (scripts/setup-deps test installs it)"
fi

# ---------------------------------------------------------------------------
summary="$passed passed, $failed failed"
if [[ "$skipped" -gt 0 ]]; then
    summary+=", $skipped skipped"
fi
echo "$summary"
[[ "$failed" -eq 0 ]]
