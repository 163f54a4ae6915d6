#!/usr/bin/env python3
"""The soak's load (see scripts/soak): opens N SSE streams through the proxy on loopback, a few
at a time, and abandons each at a random point (before the request is complete, after the head,
part-way through the events, or at the end), half of them with a reset instead of a close.
Prints one JSON line with what happened. Standard library only."""
import asyncio
import json
import random
import socket
import struct
import sys


async def one(port, token, rng, counts):
    point = rng.choice(["head", "sent", "partial", "partial", "partial", "full"])
    n = rng.randint(1, 400)
    request = (
        f"GET /soak/events?n={n} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"X-Latchkey-Client: {token}\r\nAccept: text/event-stream\r\n"
        + ("Connection: close\r\n" if point == "full" else "") + "\r\n"
    ).encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        if point == "head":
            writer.write(request[: rng.randint(1, len(request) - 1)])
            await writer.drain()
        else:
            writer.write(request)
            await writer.drain()
            if point != "sent":
                want = rng.randint(1, 20000) if point == "partial" else 1 << 30
                got, head, tail = 0, b"", b""
                while got < want:
                    chunk = await asyncio.wait_for(reader.read(4096), 30)
                    if not chunk:
                        break
                    got += len(chunk)
                    head = head or chunk[:16]
                    tail = (tail + chunk)[-200:]
                    if tail.endswith(b"\r\n0\r\n\r\n"):
                        break  # the whole stream arrived; the connection stays open until we go
                counts["bytes"] += got
                if point == "full" and head.startswith(b"HTTP/1.1 200") and f"id: {n}\n".encode() in tail:
                    counts["full_ok"] += 1
    finally:
        if rng.random() < 0.5:
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            counts["reset"] += 1
        writer.close()
        counts[point] += 1


async def main():
    port, token, total, concurrency, seed = (
        int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
    rng = random.Random(seed)
    counts = {k: 0 for k in ["head", "sent", "partial", "full", "reset", "bytes", "full_ok", "errors"]}
    queue = iter(range(total))
    loop = asyncio.get_running_loop()
    started = loop.time()

    async def worker():
        for _ in queue:
            try:
                await one(port, token, rng, counts)
            except (OSError, asyncio.TimeoutError):
                counts["errors"] += 1

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    counts["seconds"] = round(loop.time() - started, 1)
    print(json.dumps(counts))


asyncio.run(main())
