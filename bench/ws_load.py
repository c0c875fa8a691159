#!/usr/bin/env python3
"""WebSocket load generator for kv-ws (bench/ws.sh runs it), on picows + uvloop.

Scenarios (each prints one markdown table row):
  rr URL CONNS SECONDS          50 connections doing set+get round trips: ops/s, p50, p99
  fanout URL SUBS RATE SECONDS  SUBS subscribers on one key, a writer at RATE sets/s:
                                deliveries/s, end-to-end latency p50/p99/max, lost, out of order
  manykeys URL SUBS RATE SECS   SUBS subscribers on distinct keys, RATE sets/s round-robin
  expiry URL KEYS CONNS         KEYS keys with TTLs spread over 1 s, a subscriber on each:
                                lag between deadline and no-value p50/p99/max (upper bound)
  serve-baseline PORT           the baseline: an echo/broadcast server (replies to get with the
                                message itself, sends a set to the key's subscribers as `value`)
  nchan-fanout URL SUBS RATE SECONDS, nchan-manykeys …
                                fanout and manykeys against nchan (pub/sub inside nginx, in C):
                                URL is the nchan root (ws://host:port/nchan); subscribers connect
                                to URL/sub/<key>, the writer POSTs each message to /pub/<key>
                                over one kept-alive HTTP connection, the same JSON kv-ws sends
"""
import asyncio, json, os, socket, sys, time
import uvloop
from picows import ws_connect, ws_create_server, WSListener, WSMsgType, WSUpgradeRequest

def now_ns(): return time.monotonic_ns()

PROCS = int(os.environ.get("PROCS", "2"))  # subscriber processes for fanout/manykeys
RUN = os.getpid()  # every run uses its own keys, so no value from an earlier run is seen

def pct(values, p):
    if not values: return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p / 100))]

def ms(ns): return f"{ns / 1e6:.2f}ms"

class Client(WSListener):
    def __init__(self):
        self.transport = None
        self.waiter = None
        self.on_message = None
    def on_ws_connected(self, transport): self.transport = transport
    def on_ws_frame(self, transport, frame):
        if frame.msg_type != WSMsgType.TEXT: return
        data = frame.get_payload_as_bytes()
        if self.on_message: self.on_message(data)
        if self.waiter and not self.waiter.done(): self.waiter.set_result(data)
    def send(self, obj): self.transport.send(WSMsgType.TEXT, json.dumps(obj, separators=(",", ":")).encode())
    async def request(self, obj):
        self.waiter = asyncio.get_running_loop().create_future()
        self.send(obj)
        return await self.waiter

async def connect(url):
    _, client = await ws_connect(Client, url, max_frame_size=64 << 20)
    return client

# The request/response mixes: a `get` per round trip, and a `set` (which has no reply) sent
# just before it in every Nth round trip; ops count both.
RR_MIXES = {"get": (0, "get only"), "sets10": (9, "10% sets"), "sets50": (1, "set+get round trips")}

async def rr(url, conns, seconds, mix="sets50"):
    set_every, label = RR_MIXES[mix]
    clients = [await connect(url) for _ in range(conns)]
    latencies, ops = [], 0
    deadline = time.monotonic() + seconds
    async def run(i, c):
        nonlocal ops
        n = 0
        key = f"rr{RUN}-{i}"
        c.send({"type": "set", "payload": {"key": key, "value": 0}})  # so every get finds a value
        while time.monotonic() < deadline:
            t = now_ns()
            if set_every and n % set_every == 0:
                c.send({"type": "set", "payload": {"key": key, "value": n}})
                ops += 1
            await c.request({"type": "get", "payload": {"key": key}})
            latencies.append(now_ns() - t)
            ops += 1
            n += 1
    start = time.monotonic()
    await asyncio.gather(*(run(i, c) for i, c in enumerate(clients)))
    elapsed = time.monotonic() - start
    print(f"| {label} | {conns} | {ops / elapsed:.0f} ops/s | {ms(pct(latencies, 50))} | {ms(pct(latencies, 99))} |", flush=True)

async def subscribe_all(clients, keys_of):
    for c in clients:
        for key in keys_of(c):
            c.send({"type": "subscribe", "payload": {"key": key}})
        await c.request({"type": "get", "payload": {"key": keys_of(c)[-1]}})  # in force once answered

async def fanout_subscribers(url, keys, expected, barrier, results, nchan=False):
    """One subscriber process: subscribes to `keys` (one connection each), then records every
    value's latency until `expected` values arrived or the run's time is up. With `nchan`, each
    connection's URL names its key and the subscription is in force once connected."""
    clients = [await connect(f"{url}/sub/{key}" if nchan else url) for key in keys]
    latencies, seen, disorder, last = [], 0, 0, {}
    for i, c in enumerate(clients):
        c.key = keys[i]
        def on_message(data, i=i):
            nonlocal seen, disorder
            msg = json.loads(data)
            if msg.get("type") != "value": return
            v = msg["payload"]["value"]
            latencies.append(now_ns() - v["t"])
            seen += 1
            if v["seq"] <= last.get(i, -1): disorder += 1
            last[i] = v["seq"]
        c.on_message = on_message
    if not nchan: await subscribe_all(clients, lambda c: [c.key])
    barrier.wait()  # every subscription is in force: the writer starts
    _, deadline = barrier_times.get()
    while seen < expected and time.monotonic() < deadline: await asyncio.sleep(0.05)
    results.put((latencies, seen, disorder))

class Publisher:
    """nchan's publisher side: one kept-alive HTTP/1.1 connection, each POST awaited."""
    def __init__(self, url):
        rest = url.split("://", 1)[1]
        self.hostport, self.root = rest.split("/", 1)
    async def open(self):
        host, port = self.hostport.split(":")
        self.reader, self.writer = await asyncio.open_connection(host, int(port))
        return self
    async def post(self, key, body):
        self.writer.write(f"POST /{self.root}/pub/{key} HTTP/1.1\r\nHost: {self.hostport}\r\nContent-Type: application/json\r\n"
                          f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.lower().split(b"\r\n")
        length = next((int(line.split(b":")[1]) for line in lines if line.startswith(b"content-length:")), 0)
        await self.reader.readexactly(length)
        # nginx closes a kept-alive connection after keepalive_requests (1000): open another.
        if b"connection: close" in lines:
            self.writer.close()
            await self.open()

async def fanout_writer(url, keys, rate, seconds, barrier, nchan=False):
    writer = await (Publisher(url).open() if nchan else connect(url))
    barrier.wait()
    total = int(rate * seconds)
    start = time.monotonic()
    for n in range(total):
        delay = start + n / rate - time.monotonic()
        if delay > 0: await asyncio.sleep(delay)
        key = keys[n % len(keys)]
        if nchan:
            # What kv-ws would deliver for the same set, so both subscribers parse the same.
            await writer.post(key, json.dumps({"type": "value", "payload": {"key": key, "value": {"t": now_ns(), "seq": n}}}, separators=(",", ":")).encode())
        else:
            writer.send({"type": "set", "payload": {"key": key, "value": {"t": now_ns(), "seq": n}}})

def collect(results, workers):
    """The next worker's results, or None once a worker has died without sending them."""
    import queue
    while True:
        try:
            return results.get(timeout=1)
        except queue.Empty:
            if any(w.exitcode not in (None, 0) for w in workers):
                for w in workers: w.kill()
                return None

def fanout(url, subs, rate, seconds, distinct=False, label="fan-out", procs=PROCS, nchan=False):
    """SUBS subscribers spread over `procs` processes (one Python process parses ~100k messages/s,
    far less than 1000 subscribers × 1000 sets/s), and a writer process at RATE sets/s."""
    import multiprocessing as mp
    ctx = mp.get_context("fork")
    keys = [f"fan{RUN}-{i}" if distinct else f"fan{RUN}" for i in range(subs)]
    total = int(rate * seconds)
    barrier, results = ctx.Barrier(procs + 2), ctx.Queue()
    global barrier_times
    barrier_times = ctx.Queue()
    workers = []
    for p in range(procs):
        mine = keys[p::procs]
        # Key n % subs goes to process (n % subs) % procs.
        expected = sum(1 for n in range(total) if (n % subs) % procs == p) if distinct else total * len(mine)
        workers.append(ctx.Process(target=lambda mine=mine, expected=expected: uvloop.run(fanout_subscribers(url, mine, expected, barrier, results, nchan))))
    workers.append(ctx.Process(target=lambda: uvloop.run(fanout_writer(url, keys, rate, seconds, barrier, nchan))))
    for w in workers: w.start()
    barrier.wait()
    start = time.monotonic()
    for _ in range(procs): barrier_times.put((start, start + seconds + 10))  # 10 s to drain after the last set
    latencies, seen, disorder = [], 0, 0
    for _ in range(procs):
        got = collect(results, workers)
        if got is None:
            print(f"| {label} | {subs} subscribers, {rate} sets/s, {seconds:g} s | failed: a client process died (see stderr) | | | | | |", flush=True)
            return
        l, s_, d = got
        latencies += l; seen += s_; disorder += d
    elapsed = time.monotonic() - start
    for w in workers: w.join()
    expected = total if distinct else total * subs
    print(f"| {label} | {subs} subscribers, {rate} sets/s, {seconds:g} s | {seen / elapsed:.0f} deliveries/s | "
          f"{ms(pct(latencies, 50))} | {ms(pct(latencies, 99))} | {ms(max(latencies) if latencies else 0)} | {expected - seen} | {disorder} |", flush=True)

async def expiry_worker(url, keys, conns, rate, base_ttl, barrier, results, tag):
    """One process's share: `keys` keys over `conns` subscriber connections, sets paced at
    `rate`/s, TTLs from `base_ttl` spread over 1 s. Puts the lags (ns) it saw."""
    clients = [await connect(url) for _ in range(conns)]
    per = keys // conns
    deadlines, lags = {}, []
    for ci, c in enumerate(clients):
        c.keys = [f"exp{RUN}-{tag}-{ci}-{k}" for k in range(per)]
        def on_message(data):
            msg = json.loads(data)
            key = msg.get("payload", {}).get("key") if isinstance(msg.get("payload"), dict) else None
            if msg.get("type") == "no-value" and key in deadlines:
                lags.append(now_ns() - deadlines[key])
        c.on_message = on_message
    await subscribe_all(clients, lambda c: c.keys)
    writers = [await connect(url) for _ in range(5)]
    barrier.wait()
    total = per * conns
    start = time.monotonic()
    n = 0
    for ci, c in enumerate(clients):
        for k, key in enumerate(c.keys):
            if n % 25 == 0:
                delay = start + n / rate - time.monotonic()
                if delay > 0: await asyncio.sleep(delay)
            ttl = base_ttl + (ci * per + k) * 1000 // total
            deadlines[key] = now_ns() + ttl * 1_000_000
            writers[n % len(writers)].send({"type": "set", "payload": {"key": key, "value": 1, "ttl": ttl}})
            n += 1
    end = time.monotonic() + base_ttl / 1000 + 30
    while len(lags) < total and time.monotonic() < end: await asyncio.sleep(0.05)
    results.put((lags, total))

def expiry(url, keys, conns, procs=PROCS, rate=int(os.environ.get("EXPIRY_SET_RATE", "10000"))):
    """The lag between a key's deadline and its no-value. The deadline is taken as the moment
    the client sent the key's set plus its TTL: kv-stored applies the set a little later, so the
    figure is an upper bound of the true lag (it includes the set's own trip to kv-stored).
    Sets are paced at `rate`/s (EXPIRY_SET_RATE) and every TTL ends after the last set, so the
    expiries are not measured through a queue of set traffic. At 50,000 sets/s the sets queued
    on their way to kv-stored, and the keys set last showed that queue as lag: p99 8–20 ms at
    10,000 keys, against 2.0–2.6 ms when paced at 10,000/s. The subscribers are spread over
    `procs` processes."""
    import multiprocessing as mp
    ctx = mp.get_context("fork")
    barrier, results = ctx.Barrier(procs), ctx.Queue()
    base_ttl = int(keys / rate * 1000) + 1000  # every deadline falls after the last set
    workers = [ctx.Process(target=lambda p=p: uvloop.run(expiry_worker(
        url, keys // procs, conns // procs, rate / procs, base_ttl, barrier, results, p))) for p in range(procs)]
    for w in workers: w.start()
    lags, total = [], 0
    for _ in range(procs):
        got = collect(results, workers)
        if got is None:
            print(f"| {keys} keys | failed: a client process died (see stderr) | | | | |", flush=True)
            return
        l, t = got
        lags += l; total += t
    for w in workers: w.join()
    print(f"| {total} keys, TTLs over 1 s, {conns} connections | {len(lags)} notified | "
          f"{ms(pct(lags, 50))} | {ms(pct(lags, 99))} | {ms(max(lags) if lags else 0)} | {total - len(lags)} |", flush=True)

class Baseline(WSListener):
    subscribers = {}
    def on_ws_connected(self, transport): self.transport = transport
    def on_ws_frame(self, transport, frame):
        if frame.msg_type != WSMsgType.TEXT: return
        data = frame.get_payload_as_bytes()
        msg = json.loads(data)
        kind, key = msg["type"], msg["payload"]["key"]
        if kind == "get": transport.send(WSMsgType.TEXT, data)
        elif kind == "subscribe": Baseline.subscribers.setdefault(key, []).append(transport)
        elif kind == "set":  # sent on as the `value` message kv-ws would send
            out = json.dumps({"type": "value", "payload": {"key": key, "value": msg["payload"]["value"]}}, separators=(",", ":")).encode()
            for t in Baseline.subscribers.get(key, []): t.send(WSMsgType.TEXT, out)
    def on_ws_disconnected(self, transport):
        for ts in Baseline.subscribers.values():
            if transport in ts: ts.remove(transport)

async def serve_baseline(where):
    """Listens on a TCP port on 127.0.0.1, or on a Unix-domain socket (a path), as kv-ws does."""
    if where.isdigit():
        server = await ws_create_server(lambda request: Baseline(), "127.0.0.1", int(where), max_frame_size=64 << 20)
    else:
        # picows sets and reads TCP options on every connection, which a Unix-domain socket refuses.
        import asyncio.trsock
        sock_class = asyncio.trsock.TransportSocket
        tcp_setsockopt, tcp_getsockopt = sock_class.setsockopt, sock_class.getsockopt
        def setsockopt(self, level, *args):
            if self.family != socket.AF_UNIX or level != socket.IPPROTO_TCP: tcp_setsockopt(self, level, *args)
        def getsockopt(self, level, *args):
            return 0 if self.family == socket.AF_UNIX and level == socket.IPPROTO_TCP else tcp_getsockopt(self, level, *args)
        sock_class.setsockopt, sock_class.getsockopt = setsockopt, getsockopt
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(where)
        os.chmod(where, 0o666)  # nginx's workers run as another user when the bench runs as root
        sock.listen(1024)
        server = await ws_create_server(lambda request: Baseline(), sock=sock, max_frame_size=64 << 20)
    await server.serve_forever()

def main():
    uvloop.install()
    mode, args = sys.argv[1], sys.argv[2:]
    if mode == "rr": asyncio.run(rr(args[0], int(args[1]), float(args[2]), *args[3:4]))
    elif mode == "fanout": fanout(args[0], int(args[1]), int(args[2]), float(args[3]))
    elif mode == "manykeys": fanout(args[0], int(args[1]), int(args[2]), float(args[3]), distinct=True, label="many keys")
    elif mode == "nchan-fanout": fanout(args[0], int(args[1]), int(args[2]), float(args[3]), nchan=True)
    elif mode == "nchan-manykeys": fanout(args[0], int(args[1]), int(args[2]), float(args[3]), distinct=True, label="many keys", nchan=True)
    elif mode == "expiry": expiry(args[0], int(args[1]), int(args[2]))
    elif mode == "serve-baseline": asyncio.run(serve_baseline(args[0]))
    else: sys.exit(f"unknown mode {mode}")

if __name__ == "__main__":
    main()
