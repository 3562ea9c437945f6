#!/usr/bin/env python3
"""CPU (or syscalls) per round trip of `sockloop bench` beside the echo
server's, for one or more generator binaries in alternating rounds
against one server.

    python3 benches/generator_cpu.py SERVER ROUNDS cpu|strace NAME=BIN [NAME=BIN ...]

e.g. `python3 benches/generator_cpu.py target/release/sockloop 6 cpu
before=/tmp/sockloop-main after=target/release/sockloop`.

The server (`SERVER serve --shards 1 --udp-rate 0`, TCP and UDP echo on
127.0.0.1:0) runs once for the whole bench; each round runs every
generator once per shape (`bench tcp|udp --size 64`, 3 s after a 1 s
warm-up, `--json`), in the opposite order on odd rounds. Round trips are
the report's `received` scaled by (warm-up + window) / window (the
warm-up runs at the same rate), so the generator's whole CPU (its
`wait4` user + system time) and the server's over the same span
(`schedstat` of all its threads) divide by every round trip made.

`strace` instead counts the syscalls of both (`strace -c -f`, the
server attached for the generator's run) with no warm-up; strace slows
both ends unevenly, so where either batches (epoll events, `recvmmsg`)
the counts move with it. `SHAPES="TCP 50x1,UDP 32x4"` picks shapes.
"""
import json
import os
import re
import signal
import subprocess
import sys
import time

SHAPES = [
    # name, protocol, connections, depth, size
    ("TCP 50x1", "tcp", 50, 1, 64),
    ("TCP 50x8", "tcp", 50, 8, 64),
    ("UDP 32x4", "udp", 32, 4, 64),
    ("TCP 1x64KiB d4", "tcp", 1, 4, 65536),
]
WARMUP, DURATION = 1.0, 3.0
TRACE = f"/tmp/sockloop-generator-cpu-{os.getpid()}"


def start_server(server):
    proc = subprocess.Popen(
        [server, "serve", "--tcp", "127.0.0.1:0=echo", "--udp", "127.0.0.1:0=echo",
         "--shards", "1", "--udp-rate", "0", "--log-level", "warn"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    ports = {}
    while len(ports) < 2:
        line = proc.stdout.readline()
        if not line:
            sys.exit("the server exited before listening")
        m = re.match(r"listening (tcp|udp) (\S+) echo", line)
        if m:
            ports[m.group(1)] = m.group(2)
    return proc, ports


def server_ns(pid):
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        except OSError:
            pass  # a thread that just ended
    return total


def syscalls(path):
    """{name: calls} from an `strace -c` summary."""
    calls = {}
    with open(path) as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 5 and parts[0][0].isdigit() and parts[-1] != "total":
                calls[parts[-1]] = int(parts[3])
    return calls


def one(server, ports, gen, shape, mode):
    _, proto, conns, depth, size = shape
    warmup = 0.0 if mode == "strace" else WARMUP
    args = [gen, "bench", proto, ports[proto], "--conns", str(conns), "--depth", str(depth),
            "--size", str(size), "--duration", f"{int(DURATION * 1000)}ms",
            "--warmup", f"{int(warmup * 1000)}ms", "--json"]
    tracer = None
    if mode == "strace":
        tracer = subprocess.Popen(
            ["strace", "-c", "-f", "-o", TRACE + ".server", "-p", str(server.pid)],
            stderr=subprocess.DEVNULL)
        time.sleep(0.5)
        args = ["strace", "-c", "-f", "-o", TRACE + ".gen"] + args
    before = server_ns(server.pid)
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    out = proc.stdout.read()
    _, _, usage = os.wait4(proc.pid, 0)
    after = server_ns(server.pid)
    report = json.loads(out)
    # Under strace a UDP echo may come later than the 1 s loss timeout.
    if mode != "strace" and not (report["corrupted"] == report["lost"] == report["conn_errors"] == 0):
        sys.exit(f"not clean: {report}")
    round_trips = report["received"] * (warmup + DURATION) / DURATION
    row = {"rt/s": report["msgs_per_s"], "p50": report["rtt_us"]["p50"],
           "p99": report["rtt_us"]["p99"]}
    if mode == "cpu":
        row["gen_us"] = (usage.ru_utime + usage.ru_stime) * 1e6 / round_trips
        row["server_us"] = (after - before) / 1e3 / round_trips
        row["ratio"] = row["gen_us"] / row["server_us"]
    else:
        tracer.send_signal(signal.SIGINT)
        tracer.wait()
        for who in ("gen", "server"):
            calls = syscalls(f"{TRACE}.{who}")
            os.remove(f"{TRACE}.{who}")
            row[f"{who}_sys"] = sum(calls.values()) / round_trips
            top = sorted(calls.items(), key=lambda kv: -kv[1])[:4]
            row[f"{who}_top"] = {k: round(v / round_trips, 3) for k, v in top}
    return row


def main():
    if len(sys.argv) < 5 or sys.argv[3] not in ("cpu", "strace"):
        sys.exit(__doc__)
    server, rounds, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    gens = [a.split("=", 1) for a in sys.argv[4:]]
    only = os.environ.get("SHAPES")
    shapes = [s for s in SHAPES if not only or s[0] in only.split(",")]
    proc, ports = start_server(server)
    try:
        for shape in shapes:
            for r in range(rounds):
                for name, gen in (gens if r % 2 == 0 else gens[::-1]):
                    row = one(proc, ports, gen, shape, mode)
                    cells = " ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}"
                                     for k, v in row.items())
                    print(f"{shape[0]:<15} {name:<8} round {r} {cells}", flush=True)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait()


main()
