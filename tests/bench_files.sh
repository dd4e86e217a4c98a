#!/usr/bin/env bash
# Sends one file of SIZE_MB MiB (default 100) between two local daemons, as a user would:
# a relay for discovery on 127.0.0.1 and two user nodes listening on 127.0.0.1, each its own
# process, driven by the kolokol CLI. Prints the wall time of `send --file` (from the command to
# the recipient's confirmation, hashing included) and the peak RSS (VmHWM) of both daemons,
# and checks the received bytes. docs/BENCHMARKS.md, section "Files", has the figures.
# Usage: bash tests/bench_files.sh [path to the kolokol binary]
set -euo pipefail
K=${1:-target/debug/kolokol}
SIZE_MB=${SIZE_MB:-100}
D=$(mktemp -d /tmp/kolokol-bench-files.XXXX)
cleanup() { kill $(jobs -p) 2>/dev/null || true; rm -rf "$D"; }
trap cleanup EXIT
wait_for() { for _ in $(seq 150); do eval "$1" && return 0; sleep 0.2; done; echo "timed out: $1" >&2; exit 1; }
"$K" --data-dir "$D/relay" relay --no-mdns --listen /ip4/127.0.0.1/tcp/0 > "$D/relay.log" 2>&1 &
wait_for "grep -q 'kolokol node --bootstrap' '$D/relay.log'"
B=$(grep 'kolokol node --bootstrap' "$D/relay.log" | head -1 | awk '{print $4}')
"$K" --data-dir "$D/alice" node --no-mdns --bootstrap "$B" --listen /ip4/127.0.0.1/tcp/0 > "$D/alice.log" 2>&1 &
A_PID=$!
"$K" --data-dir "$D/bob" node --no-mdns --bootstrap "$B" --listen /ip4/127.0.0.1/tcp/0 > "$D/bob.log" 2>&1 &
B_PID=$!
wait_for "[ -S '$D/alice/control.sock' ] && [ -S '$D/bob/control.sock' ]"
"$K" --data-dir "$D/alice" contacts add bob "$("$K" --data-dir "$D/bob" invite)"
"$K" --data-dir "$D/bob" contacts add alice "$("$K" --data-dir "$D/alice" invite)"
"$K" --data-dir "$D/alice" send bob "a text first, so the conversation is open"
head -c $((SIZE_MB * 1024 * 1024)) /dev/urandom > "$D/big.bin"
/usr/bin/time -f "send --file: %e s wall, the CLI's peak RSS %M KiB" \
    "$K" --data-dir "$D/alice" send bob --file "$D/big.bin"
echo "sender daemon peak RSS:    $(awk '/VmHWM/ {print $2, $3}' /proc/$A_PID/status)"
echo "recipient daemon peak RSS: $(awk '/VmHWM/ {print $2, $3}' /proc/$B_PID/status)"
cmp "$D/big.bin" "$D/bob/downloads/big.bin" && echo "received bytes identical"
