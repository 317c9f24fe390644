#!/usr/bin/env python3
"""What bench/serve.sh measures: the web UI against a real `runbook serve`.

1. A run with 1,000,000 log lines: how long the API takes to give its last
   500 lines (`/logs?tail=500`), side by side with reading the whole log
   (`runbook logs RUN`, what a client without paging must do), and how long
   a headless Chromium takes from navigating to the run's page until the last
   line is on screen.
2. A 1,000-item fan-out watched live: from the start until the page shows the
   run succeeded (against when the journal says it ended), and the page's
   long tasks (main-thread work over 50 ms, the browser's own measure of a
   page that stutters or freezes) while it followed the run.

Environment: BIN (the runbook binary), OUT (a scratch folder).
"""
import json
import os
import socket
import statistics
import subprocess
import time
import urllib.request

BIN = os.environ["BIN"]
OUT = os.environ["OUT"]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method, url, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("content-type", "application/json")
    with urllib.request.urlopen(req, timeout=120) as r:
        text = r.read()
    try:
        return json.loads(text)
    except ValueError:
        return text


class Browser:
    """Headless Chromium through a chromedriver of its own (W3C WebDriver)."""

    def __init__(self):
        self.port = free_port()
        self.driver = subprocess.Popen(
            ["chromedriver", f"--port={self.port}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        for _ in range(300):
            try:
                self.call("GET", "/status")
                break
            except OSError:
                time.sleep(0.1)
        caps = {"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": {
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1280,1000"]}}}}
        self.session = self.call("POST", "/session", caps)["sessionId"]

    def call(self, method, path, body=None):
        return http(method, f"http://127.0.0.1:{self.port}{path}", body)["value"]

    def go(self, url):
        self.call("POST", f"/session/{self.session}/url", {"url": url})

    def js(self, script, *args):
        return self.call("POST", f"/session/{self.session}/execute/sync", {"script": script, "args": list(args)})

    def until(self, script, limit=600):
        end = time.monotonic() + limit
        while time.monotonic() < end:
            if self.js(script):
                return
            time.sleep(0.02)
        raise SystemExit(f"timed out waiting for: {script}")

    def close(self):
        try:
            self.call("DELETE", f"/session/{self.session}")
        finally:
            os.killpg(self.driver.pid, 9)
            self.driver.wait()


def runbook(*args, **kw):
    return subprocess.run([BIN, "--state", f"{OUT}/state.db", "--playbooks", f"{OUT}/playbooks", *args],
                          check=True, capture_output=True, text=True, **kw)


def main():
    lines = int(os.environ.get("LINES", "1000000"))
    items = int(os.environ.get("ITEMS", "1000"))
    for name, text in {
        "million": f"apiVersion: runbook/v1\nname: million\nversion: 1\nsteps:\n"
                   f"  - {{ id: print, uses: shell, with: {{ run: \"seq 1 {lines}\" }} }}\n",
        "fanout": "apiVersion: runbook/v1\nname: fanout\nversion: 1\nsteps:\n"
                  f"  - id: each\n    for_each: [{', '.join(str(i) for i in range(1, items + 1))}]\n"
                  "    concurrency: 16\n    steps:\n"
                  "      - { id: work, uses: shell, with: { run: \"echo item {{item}}\" } }\n",
    }.items():
        os.makedirs(f"{OUT}/playbooks/{name}", exist_ok=True)
        with open(f"{OUT}/playbooks/{name}/v1.yaml", "w") as f:
            f.write(text)

    t = time.monotonic()
    runbook("run", "million", "--output", "json")
    wrote = time.monotonic() - t
    run = json.loads(runbook("status", "--output", "json").stdout)[0]["id"]
    print(f"a run printing {lines:,} lines: {wrote:.1f} s (journal and log written)")

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    serve = subprocess.Popen([BIN, "--state", f"{OUT}/state.db", "--playbooks", f"{OUT}/playbooks",
                              "serve", "--listen", f"127.0.0.1:{port}"],
                             stdout=subprocess.DEVNULL, stderr=open(f"{OUT}/serve.log", "w"))
    browser = None
    try:
        for _ in range(300):
            try:
                http("GET", f"{base}/api/v1/health")
                break
            except OSError:
                time.sleep(0.1)
        tails = []
        for _ in range(10):
            t = time.monotonic()
            page = http("GET", f"{base}/api/v1/runs/{run}/logs?tail=500")
            tails.append(time.monotonic() - t)
        # The last lines: the count's end, then the note that the step's
        # `stdout` output keeps only its first MiB (the log has it all).
        assert any(l["line"] == str(lines) for l in page["lines"]), page["lines"][-3:]
        fulls = []
        for _ in range(3):
            t = time.monotonic()
            whole = runbook("logs", run).stdout
            fulls.append(time.monotonic() - t)
        assert f" {lines}\n" in whole[-4096:], whole[-300:]
        tail_ms = statistics.median(tails) * 1000
        full_ms = statistics.median(fulls) * 1000
        print(f"last 500 lines over the API: median {tail_ms:.1f} ms of 10; the whole log (`runbook logs`): "
              f"median {full_ms:.0f} ms of 3; ratio {full_ms / tail_ms:.0f}x")

        browser = Browser()
        opens = []
        for _ in range(5):
            browser.go("about:blank")
            t = time.monotonic()
            browser.go(f"{base}/#/runs/{run}")
            browser.until(f"const l = document.getElementById('log'); return l && l.innerText.includes('  {lines}\\n')")
            opens.append(time.monotonic() - t)
        print(f"the run's page in Chromium, from navigation to its last line on screen: median "
              f"{statistics.median(opens) * 1000:.0f} ms of 5 (max {max(opens) * 1000:.0f} ms)")

        # The fan-out, watched live from its start.
        browser.go(f"{base}/")
        browser.until("return document.querySelector('#playbooks')")
        started = http("POST", f"{base}/api/v1/runs", {"playbook": "fanout"})
        fan = started["run"]
        t = time.monotonic()
        browser.go(f"{base}/#/runs/{fan}")
        browser.js("window.__long = []; new PerformanceObserver((l) => l.getEntries().forEach((e) => "
                   "window.__long.push(e.duration))).observe({ type: 'longtask', buffered: true });")
        while http("GET", f"{base}/api/v1/runs/{fan}")["run"]["status"] == "running":
            time.sleep(0.05)
        ended = time.monotonic() - t
        browser.until("return document.getElementById('run-status')?.innerText === 'succeeded' && "
                      f"document.querySelectorAll('#steps tr').length > {items}")
        shown = time.monotonic() - t
        long = browser.js("return window.__long")
        status = http("GET", f"{base}/api/v1/runs/{fan}")
        events = len(status["steps"])
        print(f"a {items:,}-item fan-out ({events:,} step rows) followed live: the run ended after {ended:.1f} s, "
              f"the page showed it all {(shown - ended) * 1000:.0f} ms later; long tasks while following: "
              f"{len(long)}, longest {max(long, default=0):.0f} ms, total {sum(long):.0f} ms")
    finally:
        if browser:
            browser.close()
        serve.terminate()
        serve.wait()


if __name__ == "__main__":
    main()
