#!/usr/bin/env python3
"""A join storm in the chat lobby (issue 12, item 3): server CPU, output,
and a neighbour's latency.

Starts `sockloop serve --shards 2 --tcp 127.0.0.1:0=chat --trusted none`
(so the default per-address limits apply, as to an attacker), puts two
neighbours in a room of their own, one sending a timestamped message every
10 ms to the other, then joins N members to the lobby from 15 loopback
addresses (N/15 each, within the 256-per-address cap and the 100-burst
connect rate) and leaves them connected, reading everything. Prints the
server's CPU time (utime + stime of the process, from /proc) over the
storm, the bytes the lobby members received, and the neighbour's
round-trip percentiles during it.

    cargo build --release
    python3 benches/chat_storm.py [--bin target/release/sockloop] [--n 1500]

A measurement, not a test: run nothing else heavy meanwhile.
"""

import argparse
import json
import os
import selectors
import socket
import subprocess
import threading
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def join(addr, name, source=None):
    s = socket.socket()
    if source:
        s.bind((source, 0))
    s.connect(addr)
    s.sendall(name.encode() + b"\n")
    return s


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="target/release/sockloop")
    ap.add_argument("--n", type=int, default=1500)
    args = ap.parse_args()

    server = subprocess.Popen(
        [args.bin, "serve", "--shards", "2", "--tcp", "127.0.0.1:0=chat", "--trusted", "none",
         "--idle-timeout", "0", "--log-level", "warn"],
        stdout=subprocess.PIPE, text=True)
    line = server.stdout.readline().split()
    host, port = line[2].rsplit(":", 1)
    addr = (host, int(port))

    # Two neighbours in their own room.
    sender = join(addr, "sender", "127.0.0.200")
    receiver = join(addr, "receiver", "127.0.0.201")
    for s in (sender, receiver):
        s.sendall(b'{"content":"/join side"}\n')
    time.sleep(0.5)
    receiver.setblocking(False)
    try:
        while receiver.recv(65536):
            pass
    except BlockingIOError:
        pass
    receiver.setblocking(True)

    rtts, stop = [], threading.Event()

    def neighbour():
        pending = b""
        receiver.settimeout(0.01)
        next_send = time.monotonic()
        while not stop.is_set():
            now = time.monotonic()
            if now >= next_send:
                sender.sendall(json.dumps({"content": f"t={now!r}"}).encode() + b"\n")
                next_send = now + 0.01
            try:
                pending += receiver.recv(65536)
            except socket.timeout:
                continue
            *lines, pending = pending.split(b"\n")
            for raw in lines:
                content = json.loads(raw).get("content", "")
                if content.startswith("t="):
                    rtts.append(time.monotonic() - float(content[2:]))

    # Everything the lobby members receive is read, and counted.
    sel = selectors.DefaultSelector()
    received, closed = [0], [0]

    def drain():
        while not stop.is_set():
            for key, _ in sel.select(timeout=0.05):
                try:
                    data = key.fileobj.recv(1 << 16)
                except OSError:
                    data = b""
                if not data:
                    sel.unregister(key.fileobj)
                    closed[0] += 1
                received[0] += len(data)

    threads = [threading.Thread(target=neighbour), threading.Thread(target=drain)]
    for t in threads:
        t.start()
    time.sleep(1.0)
    baseline = len(rtts)
    cpu0, t0 = cpu_seconds(server.pid), time.monotonic()
    members = []
    for i in range(args.n):
        s = join(addr, f"m{i}", f"127.0.1.{i % 15 + 1}")
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
        members.append(s)
    joined = time.monotonic() - t0
    time.sleep(3.0)  # batched notices go out once a second
    cpu = cpu_seconds(server.pid) - cpu0
    stop.set()
    for t in threads:
        t.join()
    during = sorted(rtts[baseline:])
    pct = lambda p: during[min(len(during) - 1, int(p * len(during)))] * 1000
    print(f"{args.n} members joined in {joined:.2f} s; server CPU over the storm "
          f"(+3 s): {cpu:.2f} s; lobby output received: {received[0] / 1e6:.1f} MB; "
          f"closed by the server: {closed[0]}")
    print(f"neighbour round trips during it: {len(during)}, p50 {pct(0.5):.1f} ms, "
          f"p99 {pct(0.99):.1f} ms, max {during[-1] * 1000:.1f} ms")
    server.terminate()
    server.wait(timeout=10)


if __name__ == "__main__":
    main()
