#!/usr/bin/env python3
"""A prefix subscription under write load, for bench/prefix.sh. One process: a writer SETs
random keys at a fixed rate, half of them among KEYS keys under `w/` and half under `x/` (not
watched), each SET awaited (its round trip timed); a subscriber watches `w/` and times each
change from its SET's send to its arrival (per key in order: the store keeps a key's changes in
order). IDLE more prefixes (`z<i>/`) are watched by another connection and never match: the
cost every write pays for prefixes it does not fall under.

Usage: bench/prefix.py kv SOCKET RATE SECONDS KEYS IDLE      kv-stored: PSUBSCRIBE w/*
       bench/prefix.py redis SOCKET RATE SECONDS KEYS IDLE   redis-server: keyspace events
                                                             (notify-keyspace-events K$), PSUBSCRIBE __keyspace@0__:w/*
       bench/prefix.py ws SOCKET RATE SECONDS KEYS IDLE URL  kv-ws through nginx: {"type":"subscribe","payload":{"prefix":"w/"}}
Prints one markdown table row: deliveries/s, delivery p50/p99/max, lost, write p99/max."""
import asyncio, collections, json, random, sys, time
import uvloop


def pct(values, p):
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p / 100))]


def command(*words):
    parts = [b"*%d\r\n" % len(words)]
    for word in words:
        word = word if isinstance(word, bytes) else str(word).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(word), word))
    return b"".join(parts)


class RESPReader:
    """Reads RESP2 replies and pushes from a stream."""

    def __init__(self, reader):
        self.reader = reader

    async def value(self):
        line = (await self.reader.readuntil(b"\r\n"))[:-2]
        kind, rest = line[:1], line[1:]
        if kind in (b"+", b"-"):
            return rest
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            return (await self.reader.readexactly(n + 2))[:-2]
        if kind == b"*":
            return [await self.value() for _ in range(int(rest))]
        raise RuntimeError(f"unexpected RESP: {line!r}")


async def resp(path):
    reader, writer = await asyncio.open_unix_connection(path, limit=1 << 24)
    return RESPReader(reader), writer


async def main(kind, path, rate, seconds, keys, idle, url=None):
    sent = collections.defaultdict(collections.deque)  # key -> send times (ns), oldest first
    lags, write_times = [], []
    received = 0
    done = asyncio.Event()
    total_watched = 0

    def arrived(key):
        nonlocal received
        queue = sent.get(key)
        if queue:
            lags.append(time.monotonic_ns() - queue.popleft())
            received += 1
            if received == total_watched and finished_writing:
                done.set()

    # Idle prefixes, on their own connection.
    if idle:
        idle_reader, idle_writer = await resp(path)
        patterns = [f"z{i}/*" if kind != "redis" else f"__keyspace@0__:z{i}/*" for i in range(idle)]
        idle_writer.write(command("PSUBSCRIBE", *patterns))
        for _ in patterns:
            await idle_reader.value()

    # The subscriber.
    if kind == "ws":
        from picows import ws_connect, WSListener, WSMsgType

        class Listener(WSListener):
            def on_ws_connected(self, transport):
                self.transport = transport

            def on_ws_frame(self, transport, frame):
                if frame.msg_type != WSMsgType.TEXT:
                    return
                message = json.loads(frame.get_payload_as_bytes())
                if message.get("type") == "ok":
                    subscribed.set()
                elif message.get("type") in ("value", "no-value"):
                    arrived(message["payload"]["key"].encode())

        subscribed = asyncio.Event()
        _, listener = await ws_connect(Listener, url, max_frame_size=64 << 20)
        listener.transport.send(WSMsgType.TEXT, b'{"type":"subscribe","id":1,"payload":{"prefix":"w/"}}')
        await subscribed.wait()
    else:
        sub_reader, sub_writer = await resp(path)
        pattern = "w/*" if kind == "kv" else "__keyspace@0__:w/*"
        sub_writer.write(command("PSUBSCRIBE", pattern))
        await sub_reader.value()
        strip = len("__keyspace@0__:") if kind == "redis" else 0

        async def listen():
            try:
                while True:
                    push = await sub_reader.value()
                    if push[0] == b"pmessage":
                        arrived(push[2][strip:])
            except (asyncio.IncompleteReadError, ConnectionError):
                pass  # the run is over



        asyncio.get_running_loop().create_task(listen())

    # The writer: paced, each SET awaited.
    w_reader, w_writer = await resp(path)
    value = b'{"pad":"' + b"x" * 22 + b'"}'  # 32 bytes of JSON
    count = int(rate * seconds)
    finished_writing = False
    start = time.monotonic()
    for n in range(count):
        delay = start + n / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        watched = n % 2 == 0
        key = (b"w/%d" if watched else b"x/%d") % random.randrange(keys)
        t0 = time.monotonic_ns()
        if watched:
            sent[key].append(t0)
            total_watched += 1
        w_writer.write(command("SET", key, value))
        await w_reader.value()
        write_times.append(time.monotonic_ns() - t0)
    elapsed = time.monotonic() - start
    finished_writing = True
    if received == total_watched:
        done.set()
    try:
        await asyncio.wait_for(done.wait(), 10)
    except asyncio.TimeoutError:
        pass
    lost = total_watched - received
    ms = lambda ns: f"{ns / 1e6:.2f}"
    print(f"{rate * seconds / elapsed:.0f} | {received / elapsed:.0f} | {ms(pct(lags, 50))} | {ms(pct(lags, 99))} | {ms(max(lags) if lags else 0)} | "
          f"{lost} | {ms(pct(write_times, 99))} | {ms(max(write_times))} |", flush=True)


if __name__ == "__main__":
    kind, path = sys.argv[1], sys.argv[2]
    rate, seconds, keys, idle = float(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
    url = sys.argv[7] if len(sys.argv) > 7 else None
    uvloop.run(main(kind, path, rate, seconds, keys, idle, url))
