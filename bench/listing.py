#!/usr/bin/env python3
"""Lists every key of a store in pages while another connection writes, for bench/listing.sh.

Usage: bench/listing.py SOCKET kvlist|scan PAGE
kvlist: kv-stored's KVLIST "" AFTER <next> LIMIT PAGE until next is null.
scan:   Redis's SCAN <cursor> COUNT PAGE until the cursor is 0 (unordered).
Meanwhile a second connection SETs one key in a loop and times each round trip.
Prints: keys listed, pages, seconds, and the writes' count, p50, p99 and max in ms."""
import socket, sys, threading, time


class RESP:
    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)
        self.buffer = b""

    def send(self, *words):
        parts = [b"*%d\r\n" % len(words)]
        for word in words:
            word = word if isinstance(word, bytes) else str(word).encode()
            parts.append(b"$%d\r\n%s\r\n" % (len(word), word))
        self.sock.sendall(b"".join(parts))
        return self.reply()

    def line(self):
        while b"\r\n" not in self.buffer:
            self.fill()
        line, self.buffer = self.buffer.split(b"\r\n", 1)
        return line

    def fill(self):
        chunk = self.sock.recv(1 << 20)
        if not chunk:
            raise EOFError("the store closed the connection")
        self.buffer += chunk

    def reply(self):
        line = self.line()
        kind, rest = line[:1], line[1:]
        if kind in (b"+", b":"):
            return int(rest) if kind == b":" else rest
        if kind == b"-":
            raise RuntimeError(rest.decode())
        if kind == b"$":
            length = int(rest)
            if length < 0:
                return None
            while len(self.buffer) < length + 2:
                self.fill()
            value, self.buffer = self.buffer[:length], self.buffer[length + 2:]
            return value
        if kind == b"*":
            count = int(rest)
            return None if count < 0 else [self.reply() for _ in range(count)]
        raise RuntimeError("unexpected reply %r" % line)


def main():
    path, mode, page = sys.argv[1], sys.argv[2], int(sys.argv[3])
    lister, writer = RESP(path), RESP(path)
    latencies, listing = [], [True]

    def write():
        while listing[0]:
            started = time.perf_counter()
            writer.send("SET", "listing-probe", "x" * 32)
            latencies.append(time.perf_counter() - started)

    thread = threading.Thread(target=write)
    thread.start()
    listed = pages = 0
    started = time.perf_counter()
    if mode == "kvlist":
        after = None
        while True:
            words = ["KVLIST", ""] + (["AFTER", after] if after is not None else []) + ["LIMIT", page]
            revision, after, keys = lister.send(*words)
            listed += len(keys)
            pages += 1
            if after is None:
                break
    else:
        cursor = b"0"
        while True:
            cursor, keys = lister.send("SCAN", cursor, "COUNT", page)
            listed += len(keys)
            pages += 1
            if cursor == b"0":
                break
    seconds = time.perf_counter() - started
    listing[0] = False
    thread.join()
    ms = sorted(x * 1000 for x in latencies)
    pick = lambda q: ms[min(len(ms) - 1, int(q * len(ms)))]
    print(f"{listed} {pages} {seconds:.3f} {len(ms)} {pick(0.5):.3f} {pick(0.99):.3f} {ms[-1]:.3f}")


main()
