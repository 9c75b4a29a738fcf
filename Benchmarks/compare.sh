#!/usr/bin/env bash
# Side-by-side ping-pong comparison of every echo server of the harness, interleaved per round:
# C liburing (the hardware's practical limit), C epoll, UringStreams, SwiftNIO (one event loop),
# Python asyncio on uvloop and on its default loop, all driven by the same C load generator.
#   Benchmarks/compare.sh [--rounds N] [--duration SEC] [--pin split|same] [scenario ...]
# A scenario is CONNECTIONSxSIZE (default: 1x64 64x128 64x4096). Needs network access to
# nothing: uvloop comes from PyPI into Benchmarks/.venv (ignored) on first use.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

rounds=3 duration=3 pin=split scenarios=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        --rounds) rounds=$2; shift 2 ;;
        --duration) duration=$2; shift 2 ;;
        --pin) pin=$2; shift 2 ;;
        *) scenarios+=("$1"); shift ;;
    esac
done
[[ ${#scenarios[@]} -gt 0 ]] || scenarios=(1x64 64x128 64x4096)

bash scripts/setup-deps test
make -s -C Benchmarks/harness
(cd Benchmarks && swift build -c release --product echo-bench-server)
(cd Benchmarks && swift build -c release --product nio-echo-server)
if [[ ! -x Benchmarks/.venv/bin/python ]]; then
    echo "compare: creating Benchmarks/.venv with uvloop from PyPI"
    python3 -m venv Benchmarks/.venv
    Benchmarks/.venv/bin/pip install -q uvloop
fi
bin=Benchmarks/.build/release
python=Benchmarks/.venv/bin/python
servers=(
    --server "c-liburing=Benchmarks/harness/build/uring-echo-server --host 127.0.0.1 --port {port}"
    --server "c-epoll=Benchmarks/harness/build/epoll-echo-server --host 127.0.0.1 --port {port}"
    --server "uringstreams=$bin/echo-bench-server --host 127.0.0.1 --port {port}"
    --server "swiftnio=Benchmarks/.build/release/nio-echo-server --host 127.0.0.1 --port {port}"
    --server "uvloop=$python Benchmarks/harness/asyncio-echo-server.py --uvloop --host 127.0.0.1 --port {port}"
    --server "asyncio=$python Benchmarks/harness/asyncio-echo-server.py --host 127.0.0.1 --port {port}"
)
for scenario in "${scenarios[@]}"; do
    Benchmarks/harness/run-pingpong.sh --rounds "$rounds" --duration "$duration" --pin "$pin" \
        --connections "${scenario%x*}" --size "${scenario#*x}" "${servers[@]}"
done
