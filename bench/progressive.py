"""Driven by bench/progressive.sh, with the lab up in $OUT/lab.

Load: 4 threads of back-to-back GET /api/accounts through HAProxy, each
request's end time and status kept. Each deploy starts from every host on
a good release; the bad release (ERROR_RATE 0.2) is deployed with and
without the analysis: by rolling-deploy (batches), then by blue-green (a
ramp of shares judged by their metrics, against a switch at once). Reported
per deploy: requests, failed requests, the time from the first failed
request to the deploy's end, and the deploy's exit code; then the fleet's
releases (rolling) or the colour users are on (blue-green)."""
import json
import os
import socket
import subprocess
import threading
import time
import http.client

OUT = os.environ["OUT"]
BIN = os.environ["BIN"]
LAB = json.load(open(f"{OUT}/lab/lab.json"))
LB = LAB["haproxy"]["port"]
HOSTS = [h["name"] for h in LAB["hosts"]]
INPUTS = LAB["inputs"]
KEYS = ["lb_socket", "app_port", "deploy_cmd", "restart_cmd", "rollback_cmd", "prometheus_url"]
BAKE = os.environ.get("BAKE", "5s")
# How long users are watched after each deploy ends.
AFTER = 10


class Load:
    def __init__(self, port=LB, threads=4):
        self.port = port
        self.stop = False
        self.seen = []  # (end time, ok)
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.worker) for _ in range(threads)]
        for t in self.threads:
            t.start()

    def worker(self):
        while not self.stop:
            try:
                c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                c.request("GET", "/api/accounts")
                ok = 200 <= c.getresponse().status < 300
                c.close()
            except OSError:
                ok = False
            with self.lock:
                self.seen.append((time.time(), ok))

    def end(self):
        self.stop = True
        for t in self.threads:
            t.join()
        return self.seen


def runbook(*args):
    env = dict(os.environ, RUNBOOK_STATE=f"{OUT}/state.db")
    if "postgres" in LAB:
        # The backup blue-green needs reads the database.
        env.update(PRIMARY_DSN=LAB["postgres"]["primary"]["dsn"], STANDBY_DSN=LAB["postgres"]["standby"]["dsn"])
    cmd = [BIN, "--inventory", f"{OUT}/lab/inventory.yaml", *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True)


def deploy(release, analysis):
    sets = [f"release={release}", "batches=[1, 100%]", "roll_back=all"]
    if analysis:
        sets += [f"bake={BAKE}", "analysis_window=5s", "analysis_count=2", "analysis_interval=1s",
                 "analysis_min_requests=5"]
    for k in KEYS:
        if k == "prometheus_url" and not analysis:
            continue
        sets.append(f"{k}={INPUTS[k]}")
    args = ["run", "rolling-deploy"]
    for s in sets:
        args += ["--set", s]
    return runbook(*args)


def fleet():
    out = []
    for h in LAB["hosts"]:
        c = http.client.HTTPConnection(h["address"], h["app_port"], timeout=5)
        c.request("GET", "/version/")
        out.append(json.loads(c.getresponse().read())["version"])
    return out


def blue_green(release, ramp):
    """blue-green from blue to green: with a ramp of shares each judged by
    its metrics, or switched at once (its bake samples /version/, which a
    release failing /api/accounts passes)."""
    sets = [f"release={release}", "bake_samples=10", "bake_rate=20", "p95=1s"]
    keys = ["lb_socket", "app_port", "deploy_cmd", "restart_cmd", "migrate_cmd", "bluegreen_map", "bluegreen_url",
            "backup_dir"]
    if ramp:
        sets += ["ramp=[10, 50]", f"ramp_bake={BAKE}", "analysis_window=5s", "analysis_count=2",
                 "analysis_interval=1s", "analysis_min_requests=5"]
        keys += ["ramp_backend", "prometheus_url"]
    sets += [f"{k}={INPUTS[k]}" for k in keys]
    args = ["run", "blue-green", "--yes"]
    for s in sets:
        args += ["--set", s]
    return runbook(*args)


def haproxy(command):
    """One command to HAProxy's runtime API; its answer."""
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(LAB["haproxy"]["socket"])
        s.sendall(command.encode() + b"\n")
        return b"".join(iter(lambda: s.recv(4096), b"")).decode()


def colour():
    """The colour users are on: the blue-green map's value."""
    return haproxy(f"show map {LAB['haproxy']['map']}").split()[-1]


def measure(label, release, analysis, good):
    # Every host on the good release first, no errors in the window after.
    r = deploy(good, False)
    assert r.returncode == 0, r.stdout + r.stderr
    time.sleep(6)
    return watch(label, LB, lambda: deploy(release, analysis), fleet)


def measure_bg(label, release, ramp, good):
    # Every host on a good release, users on blue (green idle).
    r = deploy(good, False)
    assert r.returncode == 0, r.stdout + r.stderr
    r = runbook("run", "backup", "--set", f"dir={INPUTS['backup_dir']}", "--set", f"copy_cmd={INPUTS['copy_cmd']}",
                "--set", f"verify_cmd={INPUTS['verify_cmd']}")
    assert r.returncode == 0, r.stdout + r.stderr
    haproxy(f"set map {LAB['haproxy']['map']} active blue")
    time.sleep(6)
    return watch(label, LAB["haproxy"]["bluegreen_port"], lambda: blue_green(release, ramp), colour)


def watch(label, port, run, state):
    """Runs `run` under load through `port`; what users saw."""
    load = Load(port)
    time.sleep(2)
    start = time.time()
    r = run()
    end = time.time()
    if r.returncode not in (0, 1):
        print(f"{label}: exit {r.returncode}\n{r.stdout[-2000:]}{r.stderr[-2000:]}", flush=True)
    time.sleep(AFTER)
    seen = load.end()
    during = [s for s in seen if start <= s[0] <= end]
    after = [s for s in seen if end < s[0]]
    failed = [t for t, ok in during if not ok]
    first = min(failed) if failed else None
    row = {
        "deploy": label,
        "exit": r.returncode,
        "requests": len(during),
        "failed": len(failed),
        "failed_share": round(len(failed) / max(1, len(during)), 4),
        "first_5xx_to_end_s": round(end - first, 1) if first else None,
        "deploy_s": round(end - start, 1),
        f"failed_share_{AFTER}s_after": round(sum(1 for _, ok in after if not ok) / max(1, len(after)), 4),
        "after": state(),
    }
    print(json.dumps(row), flush=True)
    return row


os.makedirs(f"{OUT}/lab/artifacts/bad", exist_ok=True)
with open(f"{OUT}/lab/artifacts/bad/ERROR_RATE", "w") as f:
    f.write("0.2\n")
rows = [
    measure("rolling-deploy with analysis", "bad", True, "good1"),
    measure("rolling-deploy without analysis", "bad", False, "good2"),
    measure_bg("blue-green ramp [10, 50] with analysis", "bad", True, "good3"),
    measure_bg("blue-green switched at once", "bad", False, "good4"),
]
with open(f"{OUT}/results.json", "w") as f:
    json.dump(rows, f, indent=2)
print(f"{len(HOSTS)} hosts, bake {BAKE}; results in {OUT}/results.json")
