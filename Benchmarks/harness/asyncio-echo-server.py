"""The asyncio streams echo server of the comparison: asyncio's documented echo handler,
reading 64 KiB at a time. --uvloop runs it on uvloop; --tls-cert and --tls-key serve TLS through
Python's ssl module (start_server(ssl=...)). Prints "listening on PORT"."""
import argparse
import asyncio
import signal
import ssl


async def handle(reader, writer):
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, ssl.SSLError):
        # A peer that resets, or breaks the TLS protocol, ends its connection only.
        pass
    writer.close()


async def main(host, port, tls):
    server = await asyncio.start_server(handle, host, port, ssl=tls)
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
    parser.add_argument("--tls-cert", help="serve TLS with this certificate chain (PEM)")
    parser.add_argument("--tls-key", help="and this private key (PEM)")
    args = parser.parse_args()
    tls = None
    if args.tls_cert or args.tls_key:
        if not (args.tls_cert and args.tls_key):
            parser.error("--tls-cert and --tls-key go together")
        # Python's server-side defaults (what asyncio users get), with our certificate.
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.load_cert_chain(args.tls_cert, args.tls_key)
    if args.uvloop:
        import uvloop
        uvloop.run(main(args.host, args.port, tls))
    else:
        asyncio.run(main(args.host, args.port, tls))
