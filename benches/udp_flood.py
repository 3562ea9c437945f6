"""A UDP flood from one source against a paced neighbour (issue 12, item 8).

    python3 benches/udp_flood.py target/release/sockloop

Starts `BIN serve --udp 127.0.0.1:0 --shards 1 --trusted none` (so the
per-source rate applies to loopback), floods it with 64-byte datagrams from
127.0.0.2 in a separate process as fast as Python sends, and meanwhile sends
20,000 numbered datagrams from 127.0.0.3, 20 per millisecond, counting the
echoes that come back. Prints the flood's rate and the neighbour's losses.
The flooder's rate depends on the machine's load: compare binaries in
alternating runs.
"""

import multiprocessing
import re
import socket
import subprocess
import sys
import time

NEIGHBOUR_DATAGRAMS = 20_000


def flood(dst, stop, count):
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.2", 0))
    sock.setblocking(False)
    payload, sent = b"f" * 64, 0
    while not stop.is_set():
        for _ in range(1000):
            try:
                sock.sendto(payload, dst)
                sent += 1
            except BlockingIOError:
                pass
    count.value = sent


def main():
    server = subprocess.Popen(
        [sys.argv[1], "serve", "--udp", "127.0.0.1:0", "--shards", "1",
         "--trusted", "none", "--log-level", "error"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        port = int(re.search(r":(\d+)\s", server.stdout.readline()).group(1))
        dst = ("127.0.0.1", port)
        stop, count = multiprocessing.Event(), multiprocessing.Value("q", 0)
        flooder = multiprocessing.Process(target=flood, args=(dst, stop, count))
        flooder.start()
        time.sleep(0.5)
        neighbour = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        neighbour.bind(("127.0.0.3", 0))
        neighbour.setblocking(False)
        echoed, start = set(), time.time()

        def drain():
            while True:
                try:
                    echoed.add(int.from_bytes(neighbour.recv(2048)[:4], "big"))
                except BlockingIOError:
                    return

        for i in range(NEIGHBOUR_DATAGRAMS):
            neighbour.sendto(i.to_bytes(4, "big") + b"n" * 60, dst)
            if i % 20 == 0:
                time.sleep(0.001)
            drain()
        deadline = time.time() + 0.5
        while time.time() < deadline:
            drain()
            time.sleep(0.01)
        took = time.time() - start
        stop.set()
        flooder.join()
        lost = NEIGHBOUR_DATAGRAMS - len(echoed)
        print(f"flood {count.value / (took + 0.5):,.0f} datagrams/s from one source; "
              f"neighbour lost {lost} of {NEIGHBOUR_DATAGRAMS} "
              f"({100 * lost / NEIGHBOUR_DATAGRAMS:.2f}%) in {took:.1f} s")
    finally:
        server.terminate()
        server.wait(timeout=10)


if __name__ == "__main__":
    main()
