#!/usr/bin/env python3
"""The lab's app: a small, real HTTP service with the surface of the production
Django service (/health/, /health/ready/, /version/) plus endpoints that tests use
to make it slow, fail or flap.

    python3 tests/lab/app.py --bind 127.0.0.1 --port 0 [--version v1] [--root /srv/app --name web1]
        [--tls-cert CRT --tls-key KEY] [--no-version-endpoint]

With `--root`, the release served is read from ROOT/current/VERSION on every
request (a deploy switches the `current` link); a release with a BROKEN file
(empty, or naming this host) fails /health/ (500) and /health/ready/, as a
release that does not start well would; a release with SLOW_MS answers that
much later (a release that breaks a latency objective); one with ERROR_RATE
(`0.2`, or `0.2 web3` for some hosts only) answers 500 to that fraction of
/api/accounts requests and passes its health checks (a release only its
metrics show bad); 5xx answers are logged
as ERROR lines; /health/ready/ answers 503 while ROOT/MAINTENANCE exists, and, when
ROOT/config/env names DATABASE_URL and REDIS_URL, checks both for real (the
database must accept writes) and answers 503 with the failed check otherwise.
With --tls-cert/--tls-key it serves https only; with --no-version-endpoint
the release is only at /api/build (as `build.release`), as some services have it.
GET /metrics gives the latency of /api/ requests as a Prometheus histogram
(`http_request_duration_seconds`).
SIGTERM stops accepting, lets requests in flight finish, then exits.
Prints `listening <port>` once it accepts connections. The readiness checks need
psycopg (the lab's venv); everything else is the standard library.
"""
import argparse
import json
import os
import signal
import ssl
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import stack  # noqa: E402

STATE = {"version": "v0", "flaky": 0, "api": 0, "root": None, "name": None, "version_endpoint": True}
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


def broken():
    """The release is broken here: current/BROKEN exists and is empty (broken
    everywhere) or names this host on a line of its own."""
    root = STATE["root"]
    if not root:
        return False
    try:
        with open(os.path.join(root, "current", "BROKEN")) as f:
            names = f.read().split()
    except OSError:
        return False
    return not names or STATE["name"] in names


def readiness():
    """(ok, checks): the database and the cache, when the host is configured."""
    root = STATE["root"]
    env = stack.read_env(root) if root else {}
    if "DATABASE_URL" not in env and "REDIS_URL" not in env:
        return True, {"database": "not configured", "cache": "not configured"}
    db_ok, db = stack.check_db(env.get("DATABASE_URL"))
    cache_ok, cache = stack.check_redis(env.get("REDIS_URL"))
    return db_ok and cache_ok, {"database": db, "cache": cache}


def slow_ms():
    """Milliseconds every answer is delayed by: the release's SLOW_MS file, for
    a release that is slower than its latency objective."""
    root = STATE["root"]
    if not root:
        return 0
    try:
        with open(os.path.join(root, "current", "SLOW_MS")) as f:
            return int(f.read().strip() or 0)
    except (OSError, ValueError):
        return 0


def error_rate():
    """The fraction of /api/ requests a release answers 500 to (its ERROR_RATE
    file: the rate, then the hosts it applies to if not all): a release that
    passes its health checks and still fails users."""
    root = STATE["root"]
    if not root:
        return 0.0
    try:
        with open(os.path.join(root, "current", "ERROR_RATE")) as f:
            words = f.read().split()
        rate = float(words[0]) if words else 0.0
    except (OSError, ValueError):
        return 0.0
    hosts = words[1:]
    return rate if not hosts or STATE["name"] in hosts else 0.0


# The latency of /api/ requests as a Prometheus histogram (GET /metrics).
BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5]
LATENCY = {"counts": [0] * (len(BUCKETS) + 1), "sum": 0.0}


def observe(seconds):
    with LOCK:
        i = next((k for k, b in enumerate(BUCKETS) if seconds <= b), len(BUCKETS))
        LATENCY["counts"][i] += 1
        LATENCY["sum"] += seconds


def metrics():
    """The histogram in Prometheus's text format (cumulative buckets)."""
    name = "http_request_duration_seconds"
    with LOCK:
        counts, total = list(LATENCY["counts"]), LATENCY["sum"]
    lines = [f"# HELP {name} Latency of /api/ requests.", f"# TYPE {name} histogram"]
    seen = 0
    for b, c in zip(BUCKETS + ["+Inf"], counts):
        seen += c
        lines.append(f'{name}_bucket{{le="{b}"}} {seen}')
    lines += [f"{name}_sum {total}", f"{name}_count {seen}"]
    return ("\n".join(lines) + "\n").encode()


def in_maintenance():
    root = STATE["root"]
    return bool(root) and os.path.exists(os.path.join(root, "MAINTENANCE"))


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # An idle keep-alive connection is closed after this, so that a SIGTERM
    # (which waits for the connections in flight) ends promptly.
    timeout = 2

    def log_message(self, *args):  # quiet: tests read stdout
        pass

    def send(self, code, payload, extra=None):
        delay = slow_ms()
        if delay:
            time.sleep(delay / 1000.0)
        if code >= 500:
            # Like the production app's log: one ERROR line per failed request.
            try:
                print(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} ERROR {self.command} {self.path} -> {code}",
                      file=sys.stderr, flush=True)
            except OSError:
                pass  # nobody reads the log: the answer matters more
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
        if self.path.startswith("/api/") and hasattr(self, "started"):
            observe(time.monotonic() - self.started)

    def do_HEAD(self):
        self.do_GET()

    def do_GET(self):
        self.started = time.monotonic()
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            body = metrics()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            # A scrape a second would keep a connection busy for ever, and a
            # stop waits for the connections in flight.
            self.send_header("Connection", "close")
            self.close_connection = True
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)
            return None
        if path == "/health/":
            if broken():
                return self.send(500, {"status": "unhealthy", "release": version()})
            return self.send(200, {"status": "healthy"})
        if path == "/health/ready/":
            if in_maintenance():
                return self.send(503, {"status": "maintenance"})
            if broken():
                return self.send(503, {"status": "unhealthy", "release": version()})
            ok, checks = readiness()
            return self.send(200 if ok else 503, {"status": "ready" if ok else "not ready", "checks": checks})
        if path == "/version/" and STATE["version_endpoint"]:
            return self.send(200, {"version": version(), "host": STATE["name"]})
        # Another shape of the same fact, as other services write it.
        if path == "/api/build":
            return self.send(200, {"build": {"release": version(), "host": STATE["name"]}})
        if path == "/api/accounts":
            # Deterministic: with ERROR_RATE 0.2, every fifth request fails.
            rate = error_rate()
            with LOCK:
                STATE["api"] += 1
                n = STATE["api"]
            if rate > 0 and int(n * rate) != int((n - 1) * rate):
                return self.send(500, {"error": "internal error", "release": version()})
            return self.send(200, {"accounts": 3, "release": version(), "host": STATE["name"]})
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


class Server(ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        # A client that hangs up (a health check, a test's load) is not an
        # error of the app: only real errors reach the log.
        # Nor is a TLS client that leaves before or during the handshake.
        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError, ssl.SSLError)):
            return
        super().handle_error(request, client_address)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bind", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--version", default="v0")
    ap.add_argument("--root", default=None)
    ap.add_argument("--name", default=None)
    ap.add_argument("--pidfile", default=None)
    ap.add_argument("--tls-cert", default=None)
    ap.add_argument("--tls-key", default=None)
    ap.add_argument("--no-version-endpoint", action="store_true")
    a = ap.parse_args()
    STATE.update(version=a.version, root=a.root, name=a.name, version_endpoint=not a.no_version_endpoint)
    srv = Server((a.bind, a.port), Handler)
    if a.tls_cert:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(a.tls_cert, a.tls_key)
        # The handshake happens in each request's thread, not in the accept loop.
        srv.socket = ctx.wrap_socket(srv.socket, server_side=True, do_handshake_on_connect=False)
    # Requests in flight are finished on SIGTERM: server_close joins them.
    srv.daemon_threads = False
    srv.block_on_close = True
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=srv.shutdown, daemon=True).start())
    if a.pidfile:
        with open(a.pidfile, "w") as f:
            f.write(f"{os.getpid()}\n")
    print(f"listening {srv.server_address[1]}", flush=True)
    srv.serve_forever()
    srv.server_close()
    if a.pidfile:
        try:
            os.unlink(a.pidfile)
        except OSError:
            pass


if __name__ == "__main__":
    sys.exit(main())
