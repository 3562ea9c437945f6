#!/usr/bin/env python3
"""Holding a million idle TCP connections on one machine (issue 17).

Starts the server side, raises what can be raised, runs `sockloop bench hold`
over as many processes as the descriptor cap needs, holds the connections,
pings each at the start and after the hold, and reports: connected, alive %,
the connect rate, the servers' user-space memory per connection (VmRSS growth
summed over every server process / connections) and the kernel's (the change
of `Slab` in /proc/meminfo, and of /proc/net/sockstat, per connection: on
loopback that is both ends, the client's socket and the server's).

The server side, either
  --servers K   K separate `sockloop serve` processes on ports of their own,
                the connections spread over them with `bench hold --ports`; or
  --workers N   one `sockloop serve --workers N` (its supervisor and workers
                all counted), when the binary has it.
Every process is capped at the machine's descriptor limit (20,000 here), so
a server process takes at most that less a reserve.

    cargo build --release --bin sockloop
    python3 benches/million.py --conns 100000 --servers 6
    python3 benches/million.py --conns 1000000 --servers 56 --hold 60

Everything it starts is killed when it ends (or fails, or is interrupted):
the bench in its own process group, each server by pid, checked gone.
Sysctls it raised are put back. A measurement, not a test: run nothing else
heavy meanwhile.
"""

import argparse
import os
import re
import resource
import signal
import subprocess
import sys
import threading
import time

PER_PROCESS = 19_900  # connections one server process takes under a 20,000 cap


def read(path, default=None):
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return default


def meminfo_kib(field):
    m = re.search(rf"^{field}:\s+(\d+) kB", read("/proc/meminfo", ""), re.M)
    return int(m.group(1)) if m else 0


def sockstat():
    """TCP sockets in use, TCP memory (pages), and all sockets used."""
    text = read("/proc/net/sockstat", "")
    inuse = int(re.search(r"TCP: inuse (\d+)", text).group(1))
    mem = int(re.search(r"TCP: .* mem (\d+)", text).group(1))
    used = int(re.search(r"sockets: used (\d+)", text).group(1))
    return inuse, mem, used


def rss_kib(pid):
    m = re.search(r"^VmRSS:\s+(\d+) kB", read(f"/proc/{pid}/status", ""), re.M)
    return int(m.group(1)) if m else 0


def descendants(root):
    """Every live process under `root`, and `root`."""
    children = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            stat = read(f"/proc/{name}/stat", "")
            if ")" in stat:
                ppid = int(stat.rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def alive(pid):
    stat = read(f"/proc/{pid}/stat", "")
    return bool(stat) and stat.rsplit(")", 1)[1].split()[0] != "Z"


class Sysctls:
    """Raises kernel settings below what the run needs; puts them back."""

    def __init__(self):
        self.changed = {}

    def at_least(self, name, value):
        path = "/proc/sys/" + name.replace(".", "/")
        now = read(path)
        if now is None:
            print(f"  {name}: not readable here")
            return
        if int(now.split()[-1]) >= value:
            print(f"  {name} = {now} (enough)")
            return
        try:
            with open(path, "w") as f:
                f.write(str(value))
            self.changed[path] = now
            print(f"  {name} = {now} -> raised to {value}")
        except OSError as e:
            print(f"  {name} = {now}: could not raise to {value} ({e.strerror})")

    def restore(self):
        for path, value in self.changed.items():
            try:
                with open(path, "w") as f:
                    f.write(value)
            except OSError:
                pass


def limits(conns):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    print("limits:")
    print(f"  descriptors per process (ulimit -n): soft {soft}, hard {hard}")
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        print(f"  raised the soft limit to the hard {hard}")
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard * 2, hard * 2))
        print(f"  raised the hard limit to {hard * 2}")
    except (ValueError, OSError) as e:
        print(f"  the hard limit cannot be raised here ({e}): many processes it is")
    for name in ["fs.nr_open", "net.ipv4.ip_local_port_range", "net.ipv4.tcp_mem",
                 "net.ipv4.tcp_max_syn_backlog", "net.ipv4.tcp_max_tw_buckets",
                 "net.netfilter.nf_conntrack_count", "net.netfilter.nf_conntrack_max"]:
        print(f"  {name} = {read('/proc/sys/' + name.replace('.', '/'), 'n/a')}")
    print(f"  MemAvailable {meminfo_kib('MemAvailable') / 2**20:.1f} GiB, "
          f"cores {os.cpu_count()}")
    sysctls = Sysctls()
    # Both ends of every connection are descriptors on this machine.
    sysctls.at_least("fs.file-max", 2 * conns + 65_536)
    sysctls.at_least("net.core.somaxconn", 4096)
    return sysctls


class Run:
    """Everything started, killed on the way out."""

    def __init__(self, binary):
        self.binary = binary
        self.servers = []
        self.bench = None

    def serve(self, args):
        proc = subprocess.Popen([self.binary, "serve", *args], stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, text=True)
        self.servers.append(proc)
        ports = []
        for line in proc.stdout:
            words = line.split()
            if words[:2] == ["listening", "tcp"]:
                ports.append(int(words[2].rsplit(":", 1)[1]))
                break
        if not ports:
            raise SystemExit(f"serve {args} printed no listening line (exit {proc.wait()})")
        return ports[0]

    def server_pids(self):
        return [pid for s in self.servers for pid in descendants(s.pid)]

    def cleanup(self):
        if self.bench and self.bench.poll() is None:
            os.killpg(self.bench.pid, signal.SIGKILL)
            self.bench.wait()
        for s in self.servers:
            if s.poll() is None:
                s.terminate()
        deadline = time.monotonic() + 20
        for s in self.servers:
            try:
                s.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                s.kill()
                s.wait()
        left = [pid for pid in self.server_pids() if alive(pid)]
        if left:
            print(f"warning: still alive after cleanup: {left}")


def hold(run, ports, args, procs):
    """Runs bench hold; returns its report lines and the samples taken mid-hold."""
    cmd = [run.binary, "bench", "hold", "127.0.0.1", "--ports", ",".join(map(str, ports)),
           "--conns", str(args.conns), "--duration", f"{round(args.hold * 1000)}ms",
           "--per-source", str(args.per_source)]
    if procs:
        cmd += ["--procs", str(procs)]
    if args.connect_rate:
        cmd += ["--connect-rate", str(args.connect_rate)]
    print("$ " + " ".join(cmd))
    run.bench = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 stdin=subprocess.DEVNULL, text=True, start_new_session=True)
    samples = {}
    stderr_lines = []

    def watch():
        for line in run.bench.stderr:
            stderr_lines.append(line.rstrip())
            print("  bench: " + line.rstrip(), flush=True)
            if "holding them for" in line:
                # Let the servers' last accepts settle, then measure.
                time.sleep(min(3.0, args.hold / 4))
                samples["rss"] = sum(rss_kib(p) for p in run.server_pids())
                samples["slab"] = meminfo_kib("Slab")
                samples["sockstat"] = sockstat()
                gen = descendants(run.bench.pid)
                samples["generator_rss"] = sum(rss_kib(p) for p in gen)
                samples["generator_procs"] = len(gen)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    out = run.bench.stdout.read()
    code = run.bench.wait()
    watcher.join(timeout=5)
    return out, code, samples, stderr_lines


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin", default="target/release/sockloop")
    ap.add_argument("--conns", type=int, default=100_000)
    ap.add_argument("--servers", type=int, help="separate serve processes (default: as needed)")
    ap.add_argument("--workers", type=int, help="one `serve --workers N` instead")
    ap.add_argument("--hold", type=float, default=60.0, help="seconds between the pings")
    ap.add_argument("--procs", type=int, help="bench processes (default: as the cap needs)")
    ap.add_argument("--connect-rate", type=float, help="connections/s (default: a burst)")
    ap.add_argument("--per-source", type=int, default=4096)
    args = ap.parse_args()

    sysctls = limits(args.conns)
    run = Run(args.bin)
    try:
        # No idle timeout: the first connections wait idle for the last to
        # open, then for the hold.
        common = ["--shards", "1", "--backlog", "4096", "--idle-timeout", "0",
                  "--log-level", "warn"]
        if args.workers:
            ports = [run.serve([*common, "--workers", str(args.workers), "--tcp", "127.0.0.1:0"])]
            layout = f"one serve --workers {args.workers}"
        else:
            servers = args.servers or -(-args.conns // PER_PROCESS)
            if args.conns > servers * PER_PROCESS:
                raise SystemExit(f"{servers} servers take at most {servers * PER_PROCESS}")
            ports = [run.serve([*common, "--tcp", "127.0.0.1:0"]) for _ in range(servers)]
            layout = f"{servers} serve processes, 1 shard each"
        print(f"server side: {layout}, ports {ports[0]}..{ports[-1]}")

        # Warm-up: every server's slab, event arrays and buffer pool exist.
        warm = subprocess.run([args.bin, "bench", "hold", "127.0.0.1", "--ports",
                               ",".join(map(str, ports)), "--conns", str(64 * len(ports)),
                               "--duration", "0s", "--log-level", "warn"],
                              capture_output=True, text=True, timeout=120)
        if warm.returncode != 0:
            raise SystemExit(f"warm-up failed: {warm.stdout}{warm.stderr}")
        time.sleep(1)
        before = {"rss": sum(rss_kib(p) for p in run.server_pids()),
                  "slab": meminfo_kib("Slab"), "sockstat": sockstat()}

        started = time.monotonic()
        out, code, mid, _ = hold(run, ports, args, args.procs)
        took = time.monotonic() - started
        print(out.rstrip())
        if not mid:
            raise SystemExit(f"bench exited {code} before holding")

        m = re.search(r"connected (\d+) .* at (\d+)/s\nalive at start (\d+), alive at end (\d+)", out)
        connected, rate, start_alive, end_alive = map(int, m.groups()) if m else (0, 0, 0, 0)
        n = max(connected, 1)
        rss = (mid["rss"] - before["rss"]) * 1024
        slab = (mid["slab"] - before["slab"]) * 1024
        inuse0, mem0, used0 = before["sockstat"]
        inuse1, mem1, used1 = mid["sockstat"]
        print()
        print(f"result ({time.strftime('%Y-%m-%d')}, {layout}, bench exit {code}, {took:.0f} s in all):")
        print(f"  connected        {connected:,} of {args.conns:,}")
        print(f"  alive            {start_alive:,} at start, {end_alive:,} after {args.hold:.0f} s "
              f"({100 * end_alive / max(args.conns, 1):.2f} %)")
        print(f"  connect rate     {rate:,}/s")
        print(f"  server VmRSS     +{rss / 2**20:.1f} MiB over {len(run.server_pids())} processes "
              f"= {rss / n:.0f} B per connection")
        print(f"  generator VmRSS  {mid['generator_rss'] / 1024:.1f} MiB in "
              f"{mid['generator_procs']} processes")
        sockets = max(inuse1 - inuse0, 1)  # others' sockets come and go too
        print(f"  kernel Slab      +{slab / 2**20:.1f} MiB = {slab / n:.0f} B per connection "
              f"(both ends); {slab / sockets:.0f} B per TCP socket that came into use")
        print(f"  sockstat         TCP inuse {inuse0:,} -> {inuse1:,}, sockets used {used0:,} -> "
              f"{used1:,}, TCP mem {mem0} -> {mem1} pages")
    finally:
        run.cleanup()
        sysctls.restore()
    time.sleep(1)
    print(f"after cleanup: Slab {meminfo_kib('Slab') / 1024:.0f} MiB, "
          f"sockstat TCP inuse {sockstat()[0]:,}")
    return 0 if code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
