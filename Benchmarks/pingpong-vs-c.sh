#!/usr/bin/env bash
# Reproduces the ping-pong table of docs/benchmarks.md: UringStreams' echo-bench-server against
# the C liburing echo server of Benchmarks/harness, same load generator, interleaved rounds, in
# both CPU layouts (server and client on different CPUs, and on the same CPU).
#   Benchmarks/pingpong-vs-c.sh [--rounds N] [--duration SEC] [--connections C] [--size BYTES]
# Extra arguments go to run-pingpong.sh.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/setup-deps
make -s -C Benchmarks/harness
(cd Benchmarks && swift build -c release --product echo-bench-server)
bin=Benchmarks/.build/release

defaults=(--rounds 5 --duration 3 --connections 1 --size 64)
for pin in split same; do
    echo "## layout: $pin"
    Benchmarks/harness/run-pingpong.sh "${defaults[@]}" --pin "$pin" "$@" \
        --server "c-liburing=Benchmarks/harness/build/uring-echo-server --host 127.0.0.1 --port {port}" \
        --server "uringstreams=$bin/echo-bench-server --host 127.0.0.1 --port {port}"
done
