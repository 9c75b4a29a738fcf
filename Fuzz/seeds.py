#!/usr/bin/env python3
"""Writes the hand-made seed inputs of the StreamReader fuzzer into Fuzz/Corpus/StreamReader.

Each seed is one small program in the encoding Program.swift decodes (first byte: the limit;
then steps). They start libFuzzer off with every kind of step and the interesting shapes: a read
that waits and is then fed, cancelled or failed, deferred runs, overruns, several separators.
Rerunning this rewrites the seed-* files only; the campaign's corpus entries are left alone.
"""
import pathlib

# Step codes (low four bits; the high four are flags: 1 = defer the run, 6 = pre-cancelled read).
FEED_RAW, FEED_ALPHA, FEED_RUN, FEED_SHAPED, EOF, EXCEPTION = 0, 1, 2, 3, 4, 5
READ, READLINE, READEXACTLY, READUNTIL, READUNTIL_ANY, CANCEL, RUN, NEXTLINE, READ_ALL = range(6, 15)
DEFER, PRECANCEL = 0x10, 0x60


def limit(n):
    """A first byte that gives limit n (1...32)."""
    assert 1 <= n <= 32
    return bytes([(n - 1) << 3])


def raw(data):
    return bytes([FEED_RAW, len(data)]) + data


def sep(text):
    """A raw separator (shape bit 4 set: bytes taken as they are)."""
    return bytes([4 | (len(text) - 1)]) + text


SEEDS = {
    "lines": limit(16) + raw(b"one\ntwo\nthr") + bytes([READLINE, READLINE, READLINE]) + raw(b"ee\n")
    + bytes([NEXTLINE, EOF, NEXTLINE]),
    "wait-then-feed": limit(8) + bytes([READEXACTLY, 5]) + raw(b"ab") + raw(b"cdefg") + bytes([READ, 10, EOF, READ_ALL]),
    "cancel-waiting": limit(8) + bytes([READLINE, CANCEL]) + raw(b"abc\n") + bytes([READLINE, READ_ALL, CANCEL, EOF]),
    "deferred": limit(8) + bytes([READLINE]) + bytes([FEED_RAW | DEFER, 2]) + b"x\n" + bytes([CANCEL | DEFER, RUN])
    + bytes([READLINE, FEED_RAW | DEFER, 1]) + b"y" + bytes([CANCEL | DEFER, RUN, READ, 4]),
    "exception-waiting": limit(8) + bytes([READ, 4, EXCEPTION, 7, READ, 0, READLINE]),
    "overrun": limit(4) + bytes([FEED_RUN, 7, 0x0A | 0x02]) + bytes([READLINE]) + raw(b"aaaaaaaa\nb\n")
    + bytes([READLINE, READLINE]),
    "until-any": limit(32) + raw(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nbody") + bytes([READUNTIL_ANY, 1]) + sep(b"\r\n")
    + sep(b"\n") + bytes([READUNTIL, 0x04 | 3]) + b"\r\n\r\n" + bytes([READUNTIL, 0x04]) + b"z" + bytes([EOF])
    + bytes([READUNTIL, 0x04]) + b"z",
    "until-overrun": limit(3) + raw(b"abcdefgh--") + bytes([READUNTIL, 0x04 | 1]) + b"--" + bytes([READ, 6])
    + bytes([READUNTIL, 0x04 | 1]) + b"--",
    "invalid": bytes([7]) + bytes([READEXACTLY, 254, READUNTIL_ANY, 0x70]) + sep(b"a") + bytes([READUNTIL_ANY, 0x31])
    + sep(b"a") + sep(b"b"),
    "precancelled": limit(8) + bytes([READLINE | PRECANCEL]) + raw(b"ab\n") + bytes([READLINE | PRECANCEL, READ_ALL | PRECANCEL]),
    "tiny-chunks": limit(32) + bytes([15, 3, 1, 2, 0]) * 40 + bytes([READEXACTLY, 100, READUNTIL, 0]) + b"\x00",
    "slices": limit(32) + bytes([FEED_SHAPED, 40, 0x1C]) + bytes(range(40)) + bytes([READEXACTLY, 30, READ_ALL, EOF]),
    "read-all-waits": limit(4) + bytes([READ_ALL]) + raw(b"0123456789") + bytes([FEED_RUN, 80, 0x32, EOF]),
    # 70 chunk records of 512 bytes, consumed 3 KiB at a time: the queue drops its consumed
    # records (head > 64), then searches across what is left.
    "many-chunks": bytes([5]) + bytes([FEED_RUN, 63, 0x02]) * 70 + raw(b"b") + bytes([READEXACTLY, 251]) * 11
    + bytes([READUNTIL, 0x04]) + b"b" + bytes([READ, 100, EOF, READ_ALL]),
    "big-limit": bytes([5]) + bytes([FEED_RUN, 100, 0x12, READLINE, READEXACTLY, 255, EOF]),
}


def main():
    corpus = pathlib.Path(__file__).resolve().parent / "Corpus" / "StreamReader"
    corpus.mkdir(parents=True, exist_ok=True)
    for name, data in SEEDS.items():
        (corpus / f"seed-{name}").write_bytes(data)
    print(f"wrote {len(SEEDS)} seeds to {corpus}")


if __name__ == "__main__":
    main()
