#!/usr/bin/env python3
"""Benchmark of the work queue (issue 8); run through bench/queue.sh.

Against one PostgreSQL (the lab's primary, with fsync turned back on, so every
commit is durable): RUNS short runs (one `shell: true` step) are submitted,
then 1, 2 and 4 `runbook worker` processes (concurrency 4 each) drain the
queue; then the same with runs that wait 200 ms (a `sleep` step), where the
work is waiting rather than CPU. Throughput is runs finished per second, measured in the journal from the
first run's start to the last run's end (worker start-up excluded), and by the
wall clock from starting the workers to their exit (`--exit-when-idle`).
For reference, the same runs executed one after another by `runbook run`
against the same database.

Claim latency: one idle worker; a run is submitted every 300 ms, LATENCY
times; the latency is the time from the submission's commit to the worker's
`run_started` (both stamped by this machine's clock).
"""
import json
import os
import statistics
import subprocess
import sys
import time
from datetime import datetime

BIN = os.environ["BIN"]
OUT = os.environ["OUT"]
RUNS = int(os.environ.get("RUNS", "200"))
LATENCY = int(os.environ.get("LATENCY", "30"))
lab = json.load(open(f"{OUT}/lab/lab.json"))
pg = lab["postgres"]
PSQL = f"{pg['bin']}/psql"
ADMIN = pg["primary"]["dsn"]


def psql(sql, dsn=ADMIN):
    out = subprocess.run([PSQL, "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", dsn, "-c", sql],
                         check=True, capture_output=True, text=True)
    return out.stdout.strip()


def fresh_db(name):
    psql(f"DROP DATABASE IF EXISTS {name}")
    psql(f"CREATE DATABASE {name}")
    return ADMIN.replace("/finance?", f"/{name}?")


def runbook(url, *args, **kw):
    env = dict(os.environ, RUNBOOK_STATE=url, RUNBOOK_PLAYBOOKS=f"{OUT}/playbooks")
    return subprocess.run([BIN, *args], env=env, check=True, **kw)


def stamp(s):
    return datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()


def journal_span(url, first_event, last_event):
    """Seconds from the first `first_event` to the last `last_event`."""
    lo = psql(f"SELECT min(at) FROM journal WHERE event::json->>'event' = '{first_event}'", url)
    hi = psql(f"SELECT max(at) FROM journal WHERE event::json->>'event' = '{last_event}'", url)
    return stamp(hi) - stamp(lo)


def submit(url, n, playbook):
    for _ in range(n):
        runbook(url, "run", playbook, "--submit", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def drain(workers, playbook):
    url = fresh_db(f"bench_queue_{playbook}_{workers}")
    runbook(url, "state", "migrate", stdout=subprocess.DEVNULL)
    submit(url, RUNS, playbook)
    start = time.monotonic()
    procs = [subprocess.Popen([BIN, "worker", "--name", f"w{i}", "--concurrency", "4", "--exit-when-idle"],
                              env=dict(os.environ, RUNBOOK_STATE=url, RUNBOOK_PLAYBOOKS=f"{OUT}/playbooks"),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for i in range(workers)]
    for p in procs:
        p.wait()
    wall = time.monotonic() - start
    done = int(psql("SELECT count(*) FROM runs WHERE status = 'succeeded'", url))
    assert done == RUNS, f"{workers} workers: {done} of {RUNS} runs succeeded"
    span = journal_span(url, "run_started", "run_finished")
    return span, wall


def local():
    url = fresh_db("bench_queue_local")
    runbook(url, "state", "migrate", stdout=subprocess.DEVNULL)
    n = min(RUNS, 100)
    start = time.monotonic()
    for _ in range(n):
        runbook(url, "run", "short", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return n, time.monotonic() - start


def latency():
    url = fresh_db("bench_queue_latency")
    runbook(url, "state", "migrate", stdout=subprocess.DEVNULL)
    env = dict(os.environ, RUNBOOK_STATE=url, RUNBOOK_PLAYBOOKS=f"{OUT}/playbooks")
    worker = subprocess.Popen([BIN, "worker", "--name", "idle", "--poll", "1s"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(1)
        for _ in range(LATENCY):
            runbook(url, "run", "short", "--submit", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(0.3)
        deadline = time.time() + 30
        while int(psql("SELECT count(*) FROM runs WHERE status = 'succeeded'", url)) < LATENCY:
            assert time.time() < deadline, "the idle worker did not finish the runs"
            time.sleep(0.1)
    finally:
        worker.terminate()
        worker.wait()
    rows = psql("SELECT q.at, s.at FROM journal q JOIN journal s ON s.run_id = q.run_id "
                "WHERE q.event::json->>'event' = 'run_queued' AND s.event::json->>'event' = 'run_started'", url)
    ms = sorted((stamp(s) - stamp(q)) * 1000 for q, s in (r.split("|") for r in rows.splitlines()))
    return ms


def main():
    os.makedirs(f"{OUT}/playbooks/short", exist_ok=True)
    with open(f"{OUT}/playbooks/short/v1.yaml", "w") as f:
        f.write("apiVersion: runbook/v1\nname: short\nversion: 1\nsteps:\n"
                "  - { id: one, uses: shell, with: { run: \"true\" } }\n")
    os.makedirs(f"{OUT}/playbooks/waits", exist_ok=True)
    with open(f"{OUT}/playbooks/waits/v1.yaml", "w") as f:
        f.write("apiVersion: runbook/v1\nname: waits\nversion: 1\nsteps:\n"
                "  - { id: one, uses: sleep, with: { duration: 200ms } }\n")
    # The lab runs PostgreSQL without fsync (it is for tests): durable commits here.
    psql("ALTER SYSTEM SET fsync = on")
    psql("SELECT pg_reload_conf()")
    time.sleep(0.5)
    assert psql("SHOW fsync") == "on"
    lines = [f"runs per round: {RUNS}; each worker runs 4 runs at once", ""]
    lines.append("| runs | workers | runs/s (journal) | vs 1 worker | runs/s (wall, incl. start-up) |")
    lines.append("|:---|---:|---:|---:|---:|")
    for playbook, what in (("short", "`shell: true`"), ("waits", "`sleep 200ms`")):
        base = None
        for w in (1, 2, 4):
            span, wall = drain(w, playbook)
            rate = RUNS / span
            base = base or rate
            lines.append(f"| {what} | {w} | {rate:.1f} | {rate / base:.2f} | {RUNS / wall:.1f} |")
            print(lines[-1], flush=True)
        if playbook == "short":
            n, took = local()
            lines.append(f"| {what}, `runbook run` one after another | - | {n / took:.1f} (wall) | "
                         f"{n / took / base:.2f} | |")
    ms = latency()
    q = statistics.quantiles(ms, n=20, method="inclusive")
    lines += ["", f"claim latency, idle worker, {len(ms)} submissions 300 ms apart: "
              f"p50 {statistics.median(ms):.1f} ms, p95 {q[18]:.1f} ms, max {max(ms):.1f} ms"]
    text = "\n".join(lines)
    print(text)
    with open(f"{OUT}/results.md", "w") as f:
        f.write(text + "\n")


if __name__ == "__main__":
    sys.exit(main())
