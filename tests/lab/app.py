#!/usr/bin/env python3
"""The lab's app: a small, real HTTP service with the surface of the production
Django service (/health/, /health/ready/, /version/) plus endpoints that tests use
to make it slow, fail or flap.

    python3 tests/lab/app.py --bind 127.0.0.1 --port 0 [--version v1] [--root /srv/app --name web1]

With `--root`, the release served is read from ROOT/current/VERSION on every
request (a deploy switches the `current` link), and /health/ready/ answers 503
while ROOT/MAINTENANCE exists. Prints `listening <port>` once it accepts
connections. Standard library only.
"""
import argparse
import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

STATE = {"version": "v0", "flaky": 0, "root": None, "name": None}
LOCK = threading.Lock()


def version():
    """The release served: the `current` link's VERSION under --root, else --version."""
    root = STATE["root"]
    if root:
        try:
            with open(os.path.join(root, "current", "VERSION")) as f:
                return f.read().strip()
        except OSError:
            return "unknown"
    return STATE["version"]


def in_maintenance():
    root = STATE["root"]
    return bool(root) and os.path.exists(os.path.join(root, "MAINTENANCE"))


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # quiet: tests read stdout
        pass

    def send(self, code, payload, extra=None):
        body = json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Release", version())
        if STATE["name"]:
            self.send_header("X-Host", STATE["name"])
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_HEAD(self):
        self.do_GET()

    def do_GET(self):
        path = self.path.split("?", 1)[0]
        if path == "/health/":
            return self.send(200, {"status": "healthy"})
        if path == "/health/ready/":
            if in_maintenance():
                return self.send(503, {"status": "maintenance"})
            return self.send(200, {"status": "ready", "checks": {"database": "ok", "cache": "ok"}})
        if path == "/version/":
            return self.send(200, {"version": version(), "host": STATE["name"]})
        if path.startswith("/status/"):
            code = int(path.rsplit("/", 1)[1] or 500)
            return self.send(code, {"status": code})
        if path.startswith("/slow/"):
            time.sleep(int(path.rsplit("/", 1)[1]) / 1000.0)
            return self.send(200, {"status": "slow"})
        if path == "/flaky/":
            with LOCK:
                STATE["flaky"] += 1
                n = STATE["flaky"]
            return self.send(500 if n % 2 == 0 else 200, {"n": n})
        return self.send(404, {"error": "not found", "path": path})

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        data = self.rfile.read(length).decode() if length else ""
        return self.send(200, {"method": "POST", "body": data, "content_type": self.headers.get("Content-Type")})


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bind", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--version", default="v0")
    ap.add_argument("--root", default=None)
    ap.add_argument("--name", default=None)
    a = ap.parse_args()
    STATE.update(version=a.version, root=a.root, name=a.name)
    srv = ThreadingHTTPServer((a.bind, a.port), Handler)
    srv.daemon_threads = True
    print(f"listening {srv.server_address[1]}", flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
