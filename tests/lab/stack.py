"""What the lab's app, its manage.py and its Celery tasks share: the host's
configuration and real checks of PostgreSQL and Redis.

A host's configuration is ROOT/config/env (ROOT is /srv/app on a lab host), one
KEY=VALUE per line, as a systemd EnvironmentFile: DATABASE_URL, REDIS_URL.
dr-failover repoints a host by rewriting DATABASE_URL there and restarting it.
"""
import os
import socket
import urllib.parse


def read_env(root):
    """The host's configuration, {} when it has none."""
    env = {}
    try:
        with open(os.path.join(root, "config", "env")) as f:
            for line in f:
                line = line.strip()
                if line and not line.startswith("#") and "=" in line:
                    k, v = line.split("=", 1)
                    env[k.strip()] = v.strip()
    except OSError:
        pass
    return env


def connect(url, timeout=2):
    """A psycopg connection to DATABASE_URL (psycopg is in the lab's venv)."""
    import psycopg

    return psycopg.connect(url, connect_timeout=timeout, autocommit=True)


def check_db(url):
    """(ok, detail): the database answers and accepts writes (not a standby)."""
    if not url:
        return False, "DATABASE_URL is not set"
    try:
        with connect(url) as c:
            (recovery,) = c.execute("SELECT pg_is_in_recovery()").fetchone()
    except Exception as e:  # any failure to talk to it is "not ok"
        return False, f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
    if recovery:
        return False, "read-only: the database is a standby"
    return True, "ok"


def check_redis(url):
    """(ok, detail): Redis answers PING."""
    if not url:
        return False, "REDIS_URL is not set"
    u = urllib.parse.urlparse(url)
    try:
        with socket.create_connection((u.hostname or "127.0.0.1", u.port or 6379), timeout=2) as s:
            s.sendall(b"*1\r\n$4\r\nPING\r\n")
            reply = s.recv(64)
    except OSError as e:
        return False, f"{type(e).__name__}: {e}"
    if not reply.startswith(b"+PONG"):
        return False, f"unexpected reply {reply!r}"
    return True, "ok"


def redis_command(url, *args):
    """(ok, reply): one command to the Redis of `url`, on the database its path names."""
    if not url:
        return False, "REDIS_URL is not set"
    u = urllib.parse.urlparse(url)
    db = (u.path or "/0").lstrip("/") or "0"

    def resp(*parts):
        out = f"*{len(parts)}\r\n".encode()
        for p in parts:
            b = str(p).encode()
            out += f"${len(b)}\r\n".encode() + b + b"\r\n"
        return out

    try:
        with socket.create_connection((u.hostname or "127.0.0.1", u.port or 6379), timeout=5) as s:
            s.sendall(resp("SELECT", db) + resp(*args))
            reply = b""
            while reply.count(b"\r\n") < 2:
                chunk = s.recv(256)
                if not chunk:
                    break
                reply += chunk
    except OSError as e:
        return False, f"{type(e).__name__}: {e}"
    second = reply.split(b"\r\n")[1] if reply.count(b"\r\n") >= 2 else reply
    if second.startswith(b"-"):
        return False, second.decode(errors="replace")
    return True, second.decode(errors="replace")
