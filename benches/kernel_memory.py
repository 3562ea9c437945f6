#!/usr/bin/env python3
"""Kernel memory held by chat members that never read (issue 12, item 2).

Starts `sockloop serve --shards 1 --tcp 127.0.0.1:0=chat`, joins N members
that never read (a 4 KiB receive buffer each, as an attacker keeps its own
cost low), and one talker that pushes 1 KiB messages into the room until the
server has closed every non-reader for its output limits (or a time cap).
Prints TCP memory from /proc/net/sockstat ("TCP: ... mem N", in pages)
before the members join, its peak while they are pushed to, at the moment
the last one is closed, and 1 s and 5 s after -- the non-readers' sockets
still open, not reading, as an attacker's would be.

    cargo build
    python3 benches/kernel_memory.py [--bin target/debug/sockloop] [--n 20] [-- SERVE FLAGS]

A measurement, not a test: the numbers depend on the machine (on loopback
they include the clients' own sockets). Run nothing else heavy meanwhile.
"""

import argparse
import re
import socket
import subprocess
import threading
import time
import urllib.request

PAGE = 4096


def tcp_mem_pages():
    with open("/proc/net/sockstat") as f:
        for line in f:
            if line.startswith("TCP:"):
                return int(re.search(r"\bmem (\d+)", line).group(1))
    raise RuntimeError("no TCP line in /proc/net/sockstat")


def server_side_bytes(port):
    """Receive + send queue memory of the server's sockets (ss -tm skmem r, w)."""
    out = subprocess.run(["ss", "-tmnH", "state", "all", f"sport = :{port}"],
                         capture_output=True, text=True).stdout
    return sum(int(r) + int(w) for r, w in
               re.findall(r"skmem:\(r(\d+),rb\d+,t\d+,tb\d+,f\d+,w(\d+)", out))


def closed_for_output(metrics):
    text = urllib.request.urlopen(f"http://{metrics}/metrics", timeout=5).read().decode()
    total = 0
    for name in ("closed_output_hard", "closed_output_soft", "closed_write_timeout"):
        for m in re.finditer(rf"^sockloop_{name}_total\{{[^}}]*\}} (\d+)", text, re.M):
            total += int(m.group(1))
    return total


def member(addr, name, rcvbuf=None):
    s = socket.socket()
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.connect(addr)
    s.sendall(name.encode() + b"\n")
    return s


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="target/debug/sockloop")
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--cap", type=float, default=60.0, help="seconds to push at most")
    ap.add_argument("serve", nargs="*", help="extra flags for sockloop serve")
    args = ap.parse_args()

    server = subprocess.Popen(
        [args.bin, "serve", "--shards", "1", "--tcp", "127.0.0.1:0=chat",
         "--metrics", "127.0.0.1:0", *args.serve],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    chat = metrics = None
    while chat is None or metrics is None:
        words = server.stdout.readline().split()
        if words[-1] == "chat":
            host, port = words[2].rsplit(":", 1)
            chat = (host, int(port))
        elif words[-1] == "metrics":
            metrics = words[2]
    time.sleep(0.5)
    before = tcp_mem_pages()

    quiet = [member(chat, f"quiet{i}", rcvbuf=4096) for i in range(args.n)]
    talker = member(chat, "talker")
    stop = threading.Event()

    def drain():  # the talker reads what it is sent (join notices)
        talker.settimeout(0.2)
        while not stop.is_set():
            try:
                if not talker.recv(65536):
                    return
            except OSError:
                pass

    threading.Thread(target=drain, daemon=True).start()
    line = b"{\"content\": \"" + b"x" * 1000 + b"\"}\n"
    peak, pushed, start = before, 0, time.monotonic()
    while closed_for_output(metrics) < args.n and time.monotonic() - start < args.cap:
        for _ in range(64):
            talker.sendall(line)
        pushed += 64 * len(line)
        peak = max(peak, tcp_mem_pages())
        time.sleep(0.005)
    closed = closed_for_output(metrics)
    at_close = tcp_mem_pages()
    took = time.monotonic() - start
    time.sleep(1)
    after_1s = tcp_mem_pages()
    time.sleep(4)
    after_5s = tcp_mem_pages()
    stop.set()

    server_5s = server_side_bytes(chat[1])
    for s in quiet:
        s.close()
    time.sleep(0.5)
    clients_closed = tcp_mem_pages()

    mib = lambda pages: f"{pages:6d} pages {pages * PAGE / 2**20:7.1f} MiB"
    print(f"serve flags: {' '.join(args.serve) or '(defaults)'}; {args.bin}")
    print(f"{args.n} non-readers, {pushed / 2**20:.1f} MiB pushed in {took:.1f} s, "
          f"{closed} closed for output limits or the write timeout")
    print(f"before        {mib(before)}")
    print(f"peak          {mib(peak)}")
    print(f"at last close {mib(at_close)}")
    print(f"1 s after     {mib(after_1s)}")
    print(f"5 s after     {mib(after_5s)} (server's own sockets: {server_5s} bytes, ss -tm)")
    print(f"clients gone  {mib(clients_closed)}")
    talker.close()
    server.terminate()
    server.wait()


if __name__ == "__main__":
    main()
