"""Driven by bench/progressive.sh, with the lab up in $OUT/lab.

Load: 4 threads of back-to-back GET /api/accounts through HAProxy, each
request's end time and status kept. Each deploy starts from every host on
a good release; the bad release (ERROR_RATE 0.2) is deployed with and
without the analysis. Reported per deploy: requests, failed requests, the
time from the first failed request to the deploy's end, and the deploy's
exit code; then the fleet's releases."""
import json
import os
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
BAKE = os.environ.get("BAKE", "3s")
# How long users are watched after each deploy ends.
AFTER = 10


class Load:
    def __init__(self, threads=4):
        self.stop = False
        self.seen = []  # (end time, ok)
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.worker) for _ in range(threads)]
        for t in self.threads:
            t.start()

    def worker(self):
        while not self.stop:
            try:
                c = http.client.HTTPConnection("127.0.0.1", LB, timeout=5)
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
    cmd = [BIN, "--inventory", f"{OUT}/lab/inventory.yaml", *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True)


def deploy(release, analysis):
    sets = [f"release={release}", "batches=[1, 100%]", "roll_back=all"]
    if analysis:
        sets += [f"bake={BAKE}", "analysis_window=5s", "analysis_count=2", "analysis_interval=1s"]
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


def measure(label, release, analysis, good):
    # Every host on the good release first, no errors in the window after.
    r = deploy(good, False)
    assert r.returncode == 0, r.stdout + r.stderr
    time.sleep(6)
    load = Load()
    time.sleep(2)
    start = time.time()
    r = deploy(release, analysis)
    end = time.time()
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
        "fleet_after": fleet(),
    }
    print(json.dumps(row), flush=True)
    return row


os.makedirs(f"{OUT}/lab/artifacts/bad", exist_ok=True)
with open(f"{OUT}/lab/artifacts/bad/ERROR_RATE", "w") as f:
    f.write("0.2\n")
rows = [
    measure("with analysis", "bad", True, "good1"),
    measure("without analysis", "bad", False, "good2"),
]
with open(f"{OUT}/results.json", "w") as f:
    json.dump(rows, f, indent=2)
print(f"{len(HOSTS)} hosts, bake {BAKE}; results in {OUT}/results.json")
