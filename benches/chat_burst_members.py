#!/usr/bin/env python3
"""A burst through a JSON chat room (the Go article's protocol), counted per member.

Three members join a running chat server: `reader` reads as messages come,
`late` reads nothing until the burst is over, and `sender` writes N
messages in one write. Then each member reads until 1 s of quiet, and the
script prints how many of the N each received, one run per line.

    python3 benches/chat_burst_members.py 127.0.0.1:9000 [--messages 100] [--runs 5]

Works against `cargo run --example chat_server` and the article's Go chat
(tcp-examples/tcp-chat-application, port 9000). Every socket operation has
a timeout; the script stops by itself.
"""
import argparse
import json
import socket
import time


def join(addr, name):
    s = socket.create_connection(addr, timeout=5)
    prompt = b""
    while not prompt.endswith(b": "):
        chunk = s.recv(64)
        if not chunk:
            raise SystemExit(f"{name}: closed before the prompt")
        prompt += chunk
    s.sendall(name.encode() + b"\n")
    return s


def count_from(s, sender, quiet=1.0, limit=30.0):
    """Messages from `sender` read until `quiet` seconds pass with none."""
    s.settimeout(quiet)
    data, end = b"", time.monotonic() + limit
    while time.monotonic() < end:
        try:
            chunk = s.recv(65536)
        except socket.timeout:
            break
        if not chunk:
            break
        data += chunk
    got = 0
    for line in data.split(b"\n"):
        try:
            if json.loads(line).get("from") == sender:
                got += 1
        except ValueError:
            pass
    return got


def run(addr, n, tag):
    reader = join(addr, f"reader{tag}")
    late = join(addr, f"late{tag}")
    sender = join(addr, f"sender{tag}")
    time.sleep(0.3)  # joins and welcomes settle
    burst = b"".join(json.dumps({"content": f"message {i}"}).encode() + b"\n" for i in range(n))
    sender.sendall(burst)
    got_reader = count_from(reader, f"sender{tag}")
    got_late = count_from(late, f"sender{tag}")
    for s in (reader, late, sender):
        s.close()
    return got_reader, got_late


def main():
    p = argparse.ArgumentParser()
    p.add_argument("addr")
    p.add_argument("--messages", type=int, default=100)
    p.add_argument("--runs", type=int, default=5)
    a = p.parse_args()
    host, port = a.addr.rsplit(":", 1)
    for r in range(a.runs):
        got_reader, got_late = run((host, int(port)), a.messages, r)
        print(f"run {r}: reader got {got_reader} of {a.messages}, late reader got {got_late} of {a.messages}")
        time.sleep(0.3)


if __name__ == "__main__":
    main()
