#!/usr/bin/env python3
"""WebSocket load generator for kv-ws (bench/ws.sh runs it), on picows + uvloop.

Scenarios (each prints one markdown table row):
  rr URL CONNS SECONDS          50 connections doing set+get round trips: ops/s, p50, p99
  fanout URL SUBS RATE SECONDS  SUBS subscribers on one key, a writer at RATE sets/s:
                                deliveries/s, end-to-end latency p50/p99/max, lost, out of order
  manykeys URL SUBS RATE SECS   SUBS subscribers on distinct keys, RATE sets/s round-robin
  expiry URL KEYS CONNS         KEYS keys with TTLs spread over 1 s, a subscriber on each:
                                lag between deadline and no-value p50/p99/max
  serve-baseline PORT           the baseline: an echo/broadcast server (replies to get, ignores
                                set, broadcasts set to subscribers), same message shapes
"""
import asyncio, json, os, sys, time
import uvloop
from picows import ws_connect, ws_create_server, WSListener, WSMsgType, WSUpgradeRequest

def now_ns(): return time.monotonic_ns()

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

async def rr(url, conns, seconds):
    clients = [await connect(url) for _ in range(conns)]
    latencies, ops = [], 0
    deadline = time.monotonic() + seconds
    async def run(i, c):
        nonlocal ops
        n = 0
        while time.monotonic() < deadline:
            t = now_ns()
            c.send({"type": "set", "payload": {"key": f"rr{RUN}-{i}", "value": n}})
            await c.request({"type": "get", "payload": {"key": f"rr{RUN}-{i}"}})
            latencies.append(now_ns() - t)
            ops += 2
            n += 1
    start = time.monotonic()
    await asyncio.gather(*(run(i, c) for i, c in enumerate(clients)))
    elapsed = time.monotonic() - start
    print(f"| set+get round trips | {conns} | {ops / elapsed:.0f} ops/s | {ms(pct(latencies, 50))} | {ms(pct(latencies, 99))} |", flush=True)

async def subscribe_all(clients, keys_of):
    for c in clients:
        for key in keys_of(c):
            c.send({"type": "subscribe", "payload": {"key": key}})
        await c.request({"type": "get", "payload": {"key": keys_of(c)[-1]}})  # in force once answered

async def fanout(url, subs, rate, seconds, distinct=False, label="fan-out"):
    clients = [await connect(url) for _ in range(subs)]
    keys = [f"fan{RUN}-{i}" if distinct else f"fan{RUN}" for i in range(subs)]
    latencies, seen, lost, disorder = [], 0, 0, 0
    last = {}
    for i, c in enumerate(clients):
        c.key = keys[i]
        def on_message(data, c=c):
            nonlocal seen, disorder
            msg = json.loads(data)
            if msg.get("type") != "value": return
            v = msg["payload"]["value"]
            latencies.append(now_ns() - v["t"])
            seen += 1
            prev = last.get(id(c), -1)
            if v["seq"] <= prev: disorder += 1
            last[id(c)] = v["seq"]
        c.on_message = on_message
    await subscribe_all(clients, lambda c: [c.key])
    writer = await connect(url)
    total = int(rate * seconds)
    start = time.monotonic()
    for n in range(total):
        target = start + n / rate
        delay = target - time.monotonic()
        if delay > 0: await asyncio.sleep(delay)
        key = keys[n % subs]
        writer.send({"type": "set", "payload": {"key": key, "value": {"t": now_ns(), "seq": n}}})
    expected = total if distinct else total * subs
    drain_until = time.monotonic() + 10
    while seen < expected and time.monotonic() < drain_until: await asyncio.sleep(0.05)
    elapsed = time.monotonic() - start
    lost = expected - seen
    print(f"| {label} | {subs} subscribers, {rate} sets/s, {seconds} s | {seen / elapsed:.0f} deliveries/s | "
          f"{ms(pct(latencies, 50))} | {ms(pct(latencies, 99))} | {ms(max(latencies) if latencies else 0)} | {lost} | {disorder} |", flush=True)

async def expiry(url, keys, conns):
    """The lag between a key's deadline and its no-value. The deadline is anchored at the
    subscriber's receipt of the key's own `value` (the set, as applied by kv-stored) plus the
    TTL: both notifications travel the same path, so delivery latency cancels out."""
    clients = [await connect(url) for _ in range(conns)]
    per = keys // conns
    ttls, deadlines, lags = {}, {}, []
    for ci, c in enumerate(clients):
        c.keys = [f"exp{RUN}-{ci}-{k}" for k in range(per)]
        def on_message(data):
            msg = json.loads(data)
            key = msg.get("payload", {}).get("key") if isinstance(msg.get("payload"), dict) else None
            if msg.get("type") == "value" and key in ttls:
                deadlines[key] = now_ns() + ttls[key] * 1_000_000
            elif msg.get("type") == "no-value" and key in deadlines:
                lags.append(now_ns() - deadlines[key])
        c.on_message = on_message
    await subscribe_all(clients, lambda c: c.keys)
    writers = [await connect(url) for _ in range(10)]
    base_ttl = 2000
    n = 0
    for ci, c in enumerate(clients):
        for k, key in enumerate(c.keys):
            ttls[key] = base_ttl + (ci * per + k) * 1000 // keys
            writers[n % len(writers)].send({"type": "set", "payload": {"key": key, "value": 1, "ttl": ttls[key]}})
            n += 1
    end = time.monotonic() + 60
    while len(lags) < per * conns and time.monotonic() < end: await asyncio.sleep(0.05)
    print(f"| expiry lag | {per * conns} keys, TTLs over 1 s, {conns} connections | {len(lags)} notified | "
          f"{ms(pct(lags, 50))} | {ms(pct(lags, 99))} | {ms(max(lags) if lags else 0)} | {per * conns - len(lags)} |", flush=True)

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
        elif kind == "set":
            for t in Baseline.subscribers.get(key, []): t.send(WSMsgType.TEXT, data)
    def on_ws_disconnected(self, transport):
        for ts in Baseline.subscribers.values():
            if transport in ts: ts.remove(transport)

async def serve_baseline(port):
    server = await ws_create_server(lambda request: Baseline(), "127.0.0.1", port, max_frame_size=64 << 20)
    await server.serve_forever()

def main():
    uvloop.install()
    mode, args = sys.argv[1], sys.argv[2:]
    if mode == "rr": asyncio.run(rr(args[0], int(args[1]), float(args[2])))
    elif mode == "fanout": asyncio.run(fanout(args[0], int(args[1]), int(args[2]), float(args[3])))
    elif mode == "manykeys": asyncio.run(fanout(args[0], int(args[1]), int(args[2]), float(args[3]), distinct=True, label="many keys"))
    elif mode == "expiry": asyncio.run(expiry(args[0], int(args[1]), int(args[2])))
    elif mode == "serve-baseline": asyncio.run(serve_baseline(int(args[0])))
    else: sys.exit(f"unknown mode {mode}")

if __name__ == "__main__":
    main()
