"""The asyncio streams echo server of the comparison: asyncio's documented echo handler,
reading 64 KiB at a time. --uvloop runs it on uvloop. Prints "listening on PORT"."""
import argparse
import asyncio
import signal


async def handle(reader, writer):
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    writer.close()


async def main(host, port):
    server = await asyncio.start_server(handle, host, port)
    print(f"listening on {server.sockets[0].getsockname()[1]}", flush=True)
    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set_result, None)
    async with server:
        await stop


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--uvloop", action="store_true")
    args = parser.parse_args()
    if args.uvloop:
        import uvloop
        uvloop.run(main(args.host, args.port))
    else:
        asyncio.run(main(args.host, args.port))
