#!/usr/bin/env python3
"""Writes cli/symbol-order/kolokol.txt: the functions a running kolokol executes, hottest first.

The release link places these functions first and together (cli/build.rs passes the list to the
linker as `--symbol-ordering-file`). Linux maps a binary's code 64 KiB around every page a
process touches (fault-around), so a daemon whose few thousand functions are spread across the
whole 14 MB of code has nearly all of it resident; laid out together they take about 5 MB
(docs/BENCHMARKS.md, "Code laid out by use").

What it runs, each `kolokol` process under valgrind's callgrind, which records every function
executed however rarely: `kolokol-bench-daemons` (a relay and user daemons driven over their
control sockets: direct and relayed texts, mailboxes, cold starts) and `kolokol demo`. With
`perf` present it also samples one normal run of the bench, for the code paths a CPU feature
hidden by valgrind (AVX-512) selects. Run it after a toolchain or dependency upgrade, or when
the daemon's code moves a lot (the list names mangled symbols, whose hashes change then):

    cargo build --release -p kolokol-cli      # alone: what users build, whose symbols the list names
    cargo build --release -p kolokol-tests --bin kolokol-bench-daemons
    python3 cli/symbol-order/collect.py            # about 5 minutes on two cores

Needs valgrind (apt-get install valgrind) and binutils' nm; uses only 127.0.0.1.
"""
import argparse
import collections
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
# callgrind marks a recursive call's cycle with 'N after the name; the symbol has none.
RECURSION = re.compile(r"'\d+$")
NAME = re.compile(r"^c?fn=\((\d+)\)(?: (.*))?$")


def callgrind_costs(path, costs):
    """Adds each function's own instruction count in one callgrind file to `costs`."""
    names = {}
    current = None
    skip_next_cost = False
    with open(path, errors="replace") as f:
        for line in f:
            if line.startswith("fn=") or line.startswith("cfn="):
                m = NAME.match(line.rstrip("\n"))
                if not m:
                    continue
                if m.group(2):
                    names[m.group(1)] = RECURSION.sub("", m.group(2))
                name = names.get(m.group(1))
                if line.startswith("fn="):
                    current = name
                    costs[current] += 0
                elif name is not None:
                    # A function that was called was executed, even if it was inlined nowhere
                    # and its own lines were dumped in another file.
                    costs[name] += 0
            elif line.startswith("calls="):
                skip_next_cost = True
            elif line[:1].isdigit() or line[:1] in "+-*":
                if skip_next_cost:
                    skip_next_cost = False
                elif current is not None:
                    fields = line.split()
                    if len(fields) >= 2 and fields[-1].isdigit():
                        costs[current] += int(fields[-1])


def dump_periodically(stop):
    """Asks every running callgrind to write its counts every two seconds: the bench ends its
    daemons with SIGKILL, which leaves no final dump."""
    while not stop.wait(2):
        subprocess.run(["callgrind_control", "-d"], capture_output=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bin-dir", default=os.path.join(ROOT, "target", "release"),
                        help="where kolokol and kolokol-bench-daemons are (default target/release)")
    parser.add_argument("--messages", type=int, default=30,
                        help="messages per latency run of the bench under callgrind (default 30)")
    parser.add_argument("--out", default=os.path.join(HERE, "kolokol.txt"))
    args = parser.parse_args()

    kolokol = os.path.join(args.bin_dir, "kolokol")
    bench = os.path.join(args.bin_dir, "kolokol-bench-daemons")
    for tool in ("valgrind", "callgrind_control", "nm"):
        if shutil.which(tool) is None:
            sys.exit(f"collect.py: {tool} is not installed (apt-get install valgrind binutils)")
    for binary in (kolokol, bench):
        if not os.access(binary, os.X_OK):
            sys.exit(f"collect.py: no {binary}; build them: cargo build --release -p kolokol-cli, "
                     "then cargo build --release -p kolokol-tests --bin kolokol-bench-daemons")

    work = tempfile.mkdtemp(prefix="kolokol-symbol-order-")
    out_dir = os.path.join(work, "callgrind")
    os.mkdir(out_dir)
    valgrind = ["valgrind", "--tool=callgrind", "--demangle=no", "--dump-instr=no",
                "--collect-jumps=no", "-q", f"--callgrind-out-file={out_dir}/%p.cg"]
    wrapper = os.path.join(work, "kolokol")
    with open(wrapper, "w") as f:
        f.write("#!/bin/sh\nexec " + " ".join(valgrind) + f" {kolokol} \"$@\"\n")
    os.chmod(wrapper, 0o755)
    env = dict(os.environ, KOLOKOL_BIN=wrapper, RUST_LOG="error")

    stop = threading.Event()
    dumper = threading.Thread(target=dump_periodically, args=(stop,), daemon=True)
    dumper.start()
    started = time.time()
    print(f"collect.py: the bench under callgrind ({args.messages} messages per run)", flush=True)
    bench_run = subprocess.run([bench, str(args.messages)], env=env, cwd=work,
                               capture_output=True, text=True)
    print(f"collect.py: the demo under callgrind", flush=True)
    demo_run = subprocess.run(valgrind + [kolokol, "demo"], cwd=work, env=env,
                              capture_output=True, text=True)
    stop.set()
    dumper.join()
    if bench_run.returncode != 0 or demo_run.returncode != 0:
        sys.stderr.write(bench_run.stdout[-2000:] + bench_run.stderr[-2000:] + demo_run.stderr[-2000:])
        sys.exit("collect.py: the bench or the demo failed under callgrind; nothing written")

    costs = collections.Counter()
    for name in os.listdir(out_dir):
        callgrind_costs(os.path.join(out_dir, name), costs)

    sampled = collections.Counter()
    if shutil.which("perf"):
        print("collect.py: one normal run of the bench under perf", flush=True)
        data = os.path.join(work, "perf.data")
        normal = dict(os.environ, KOLOKOL_BIN=kolokol, RUST_LOG="error")
        recorded = subprocess.run(["perf", "record", "-q", "-F", "999", "-o", data, bench, "300"],
                                  env=normal, cwd=work, capture_output=True)
        if recorded.returncode == 0:
            script = subprocess.run(["perf", "script", "-i", data, "--no-demangle", "-F", "comm,sym"],
                                    capture_output=True, text=True)
            for line in script.stdout.splitlines():
                fields = line.split()
                if len(fields) >= 2 and fields[0] == "kolokol":
                    sampled[fields[-1]] += 1

    # Only functions the binary defines can be ordered: libc, the loader and the vDSO are not
    # in it. A name defined twice (two local C functions) is ordered wherever it is.
    nm = subprocess.run(["nm", "--defined-only", kolokol], capture_output=True, text=True, check=True)
    defined = set()
    for line in nm.stdout.splitlines():
        fields = line.split()
        if len(fields) == 3 and fields[1] in "tTwW":
            defined.add(fields[2])
    for name, count in sampled.items():
        # Sampled functions come right after the ones callgrind counted most.
        costs[name] = max(costs[name], count * 1_000_000)
    ordered = [name for name, _ in sorted(costs.items(), key=lambda kv: (-kv[1], kv[0]))
               if name in defined]
    with open(args.out, "w") as f:
        f.write("\n".join(ordered) + "\n")
    print(f"collect.py: {len(ordered)} functions written to {os.path.relpath(args.out, ROOT)} "
          f"({len(costs) - len(ordered)} executed outside the binary), "
          f"{int(time.time() - started)} s")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
