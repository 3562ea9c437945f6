#!/bin/bash
# The UDP echo's budget: user-space instructions and syscalls per datagram
# (issue 15), counted, not timed.
#
#   benches/udp_budget.sh BIN callgrind [SECS]   # instructions per datagram (valgrind)
#   benches/udp_budget.sh BIN strace [SECS]      # syscalls per datagram (strace -c -f)
#   benches/udp_budget.sh BIN perf [SECS]        # syscalls per datagram (perf tracepoint, no slowdown)
#
# BIN is a sockloop binary (target/release/sockloop). It serves UDP echo on
# one shard; `BIN bench udp --conns 32 --depth 4` drives it (1 s warm-up,
# then SECS, 3 by default). Datagrams are the server's `udp_in` counter.
# callgrind counts only the measured window (instrumentation switched on
# after the warm-up); strace and perf count the whole run, divided by every
# datagram received. Under valgrind or strace the server is slowed, so its
# batches are fuller than at full speed: compare binaries under the same tool.
set -eu
BIN=$1 MODE=$2 SECS=${3:-3}
DIR=$(mktemp -d)
trap 'rm -rf "$DIR"' EXIT
SERVE=("$BIN" serve --udp 127.0.0.1:0 --shards 1 --metrics 127.0.0.1:0 --log-level warn)
case $MODE in
  callgrind) valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$DIR/cg" \
               "${SERVE[@]}" >"$DIR/out" 2>"$DIR/err" & ;;
  strace) strace -c -f -o "$DIR/st" "${SERVE[@]}" >"$DIR/out" 2>"$DIR/err" & ;;
  perf) perf stat -e raw_syscalls:sys_enter -o "$DIR/perf" "${SERVE[@]}" >"$DIR/out" 2>"$DIR/err" & ;;
  *) echo "mode: callgrind, strace or perf" >&2; exit 2 ;;
esac
TOOL=$!
for _ in $(seq 150); do grep -q metrics "$DIR/out" 2>/dev/null && break; sleep 0.2; done
PORT=$(awk '/listening udp/{n=split($3,a,":"); print a[n]}' "$DIR/out")
MPORT=$(awk '/listening tcp .* metrics/{n=split($3,a,":"); print a[n]}' "$DIR/out")
received() { curl -s "127.0.0.1:$MPORT/metrics" | awk '/^sockloop_udp_in_total/{print $2}'; }
"$BIN" bench udp "127.0.0.1:$PORT" --conns 32 --depth 4 --duration 1s --warmup 0s >/dev/null
before=$(received)
[ "$MODE" = callgrind ] && callgrind_control -i on "$TOOL" >/dev/null
"$BIN" bench udp "127.0.0.1:$PORT" --conns 32 --depth 4 --duration "${SECS}s" --warmup 0s | head -1
[ "$MODE" = callgrind ] && callgrind_control -d "$TOOL" >/dev/null
after=$(received)
# Stop the server itself (under strace and perf it is the tool's child).
SERVER=$TOOL
[ "$MODE" != callgrind ] && SERVER=$(pgrep -P "$TOOL")
kill -TERM "$SERVER"
wait "$TOOL" || true
case $MODE in
  callgrind)
    N=$((after - before))
    IR=$(callgrind_annotate "$DIR/cg.1" 2>/dev/null | awk '/PROGRAM TOTALS/{gsub(",","",$1); print $1}')
    echo "datagrams $N, instructions $IR: $(echo "scale=1; $IR / $N" | bc) per datagram" ;;
  strace)
    grep -E "recvmmsg|sendmmsg|epoll_wait" "$DIR/st"
    TOTAL=$(awk '$NF=="total"{print $4}' "$DIR/st")
    echo "datagrams $after, syscalls $TOTAL: $(echo "scale=3; $TOTAL / $after" | bc) per datagram" ;;
  perf)
    TOTAL=$(awk '/raw_syscalls/{gsub(",","",$1); print $1}' "$DIR/perf")
    echo "datagrams $after, syscalls $TOTAL: $(echo "scale=3; $TOTAL / $after" | bc) per datagram" ;;
esac
