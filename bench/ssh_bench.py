#!/usr/bin/env python3
"""Drives bench/ssh.sh: runbook and ansible-playbook doing the same work against
the same lab, alternately, in one run. For each run: wall time, the tool's own
peak RSS (from wait4), and the most ssh processes alive at once (sampled every
20 ms from /proc, counting only ssh processes that talk to the lab's port).

    bench/ssh_bench.py LAB_JSON RUNS RUNBOOK_CMD... -- [ANSIBLE_CMD...]
"""
import json
import os
import statistics
import subprocess
import sys
import threading
import time


def ssh_processes(port):
    n = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                args = f.read().split(b"\0")
            with open(f"/proc/{pid}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z" and args and os.path.basename(args[0]) == b"ssh" and port.encode() in b" ".join(args):
            n += 1
    return n


def measure(cmd, port):
    peak = [0]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], ssh_processes(port))
            time.sleep(0.02)

    t = threading.Thread(target=sample)
    t.start()
    start = time.monotonic()
    p = subprocess.Popen(cmd, shell=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(p.pid, 0)
    wall = time.monotonic() - start
    done.set()
    t.join()
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        sys.exit(f"failed ({code}): {cmd}\n{p.stderr.read().decode()[-2000:]}")
    # Leftover masters (ControlPersist) are counted above while alive; let them go.
    return wall, usage.ru_maxrss, peak[0]


def main():
    lab = json.load(open(sys.argv[1]))
    runs = int(sys.argv[2])
    rest = sys.argv[3:]
    split = rest.index("--")
    tools = {"runbook": " ".join(rest[:split])}
    if rest[split + 1:]:
        tools["ansible-playbook"] = " ".join(rest[split + 1:])
    port = str(lab["ssh_port"])
    results = {k: [] for k in tools}
    for i in range(runs):
        for name, cmd in tools.items():
            w, rss, ssh = measure(cmd, port)
            results[name].append((w, rss, ssh))
            print(f"run {i + 1} {name}: {w:.2f} s, peak RSS {rss / 1024:.1f} MB, ssh processes at once {ssh}", flush=True)
    med = {k: statistics.median(x[0] for x in v) for k, v in results.items()}
    print()
    print("| tool | median wall | min | max | peak RSS of the tool | ssh processes at once (max) |")
    print("|:---|---:|---:|---:|---:|---:|")
    for name, v in results.items():
        ws = [x[0] for x in v]
        print(f"| {name} | {med[name]:.2f} s | {min(ws):.2f} s | {max(ws):.2f} s | {max(x[1] for x in v) / 1024:.1f} MB | {max(x[2] for x in v)} |")
    if "ansible-playbook" in med:
        print(f"\nansible-playbook / runbook (medians): {med['ansible-playbook'] / med['runbook']:.1f}x")


if __name__ == "__main__":
    main()
