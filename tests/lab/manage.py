#!/usr/bin/env python3
"""The lab app's manage.py: the subset of Django's management commands that the
reference runbook uses, against the host's real PostgreSQL and Redis.

    manage.py check-db | check-redis | clear-cache
    manage.py showmigrations
    manage.py migrate [--check] [APP [MIGRATION]]
    manage.py collectstatic

ROOT (--root, default /srv/app) holds config/env and `current`, the release. A
release's MIGRATION file names the newest migration its code needs; `migrate`
with no target applies up to it, `migrate --check` exits 1 while some of those
are not applied (Django's behaviour), `migrate finance 0005` moves the schema
to that migration, forwards or backwards. Migrations change the schema for real
(0006 adds accounts.note, 0007 transactions.memo).
"""
import argparse
import os
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import stack  # noqa: E402

APP = "finance"
# (name, forwards, backwards); the first five are the lab's seeded schema.
MIGRATIONS = [
    ("0001_initial", None, None),
    ("0002_accounts_balance", None, None),
    ("0003_transactions", None, None),
    ("0004_transactions_at", None, None),
    ("0005_seed", None, None),
    ("0006_account_note", "ALTER TABLE accounts ADD COLUMN note text", "ALTER TABLE accounts DROP COLUMN note"),
    ("0007_transaction_memo", "ALTER TABLE transactions ADD COLUMN memo text", "ALTER TABLE transactions DROP COLUMN memo"),
]
NAMES = [m[0] for m in MIGRATIONS]


def die(msg, code=1):
    print(msg, file=sys.stderr)
    sys.exit(code)


def find(name):
    """The index of a migration by full name or number prefix (`0005`)."""
    hits = [i for i, n in enumerate(NAMES) if n == name or n.split("_")[0] == name]
    if not hits:
        die(f"unknown migration `{name}` of {APP} (known: {', '.join(NAMES)})", 2)
    return hits[0]


def target_of_release(root):
    try:
        with open(os.path.join(root, "current", "MIGRATION")) as f:
            return find(f.read().strip())
    except OSError:
        return find("0005")  # no file: the seeded schema


def applied(c):
    rows = c.execute("SELECT name FROM django_migrations WHERE app = %s", (APP,)).fetchall()
    return {r[0] for r in rows}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", default="/srv/app")
    ap.add_argument("command")
    ap.add_argument("args", nargs="*")
    ap.add_argument("--check", action="store_true")
    a = ap.parse_args()
    env = stack.read_env(a.root)
    if a.command == "check-db":
        ok, detail = stack.check_db(env.get("DATABASE_URL"))
        print(f"database: {detail}")
        return 0 if ok else 1
    if a.command == "check-redis":
        ok, detail = stack.check_redis(env.get("REDIS_URL"))
        print(f"redis: {detail}")
        return 0 if ok else 1
    if a.command == "clear-cache":
        # Django's cache.clear() on its Redis cache: FLUSHDB of the cache's database.
        ok, detail = stack.redis_command(env.get("REDIS_URL"), "FLUSHDB")
        print(f"cache: {'cleared' if ok else detail}")
        return 0 if ok else 1
    if a.command == "collectstatic":
        src = os.path.join(a.root, "current", "static")
        dst = os.path.join(a.root, "static")
        os.makedirs(dst, exist_ok=True)
        n = 0
        if os.path.isdir(src):
            for name in sorted(os.listdir(src)):
                shutil.copy2(os.path.join(src, name), os.path.join(dst, name))
                n += 1
        print(f"{n} static files copied to {dst}")
        return 0
    if a.command not in ("showmigrations", "migrate"):
        die(f"unknown command `{a.command}`", 2)
    with stack.connect(env.get("DATABASE_URL", "")) as c:
        done = applied(c)
        if a.command == "showmigrations":
            print(APP)
            for n in NAMES:
                print(f" [{'X' if n in done else ' '}] {n}")
            return 0
        if a.args and a.args[0] != APP:
            die(f"no app `{a.args[0]}` (the lab has `{APP}`)", 2)
        target = find(a.args[1]) if len(a.args) > 1 else target_of_release(a.root)
        missing = [n for n in NAMES[: target + 1] if n not in done]
        if a.check:
            if missing:
                print(f"unapplied migrations: {', '.join(missing)}")
                return 1
            print("no unapplied migrations")
            return 0
        for i, (name, fwd, _) in enumerate(MIGRATIONS[: target + 1]):
            if name not in done:
                with c.transaction():
                    if fwd:
                        c.execute(fwd)
                    c.execute("INSERT INTO django_migrations (app, name) VALUES (%s, %s)", (APP, name))
                print(f"  Applying {APP}.{name}... OK")
        for name, _, back in reversed(MIGRATIONS[target + 1 :]):
            if name in done:
                with c.transaction():
                    if back:
                        c.execute(back)
                    c.execute("DELETE FROM django_migrations WHERE app = %s AND name = %s", (APP, name))
                print(f"  Unapplying {APP}.{name}... OK")
        print(f"{APP} is at {NAMES[target]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
