#!/usr/bin/env python3
"""The lab: N app hosts on loopback, each with its own sshd, its own /srv/app and
a real HTTP app, and HAProxy in front of them. For the tests (which start it
through the Rust harness) and for you:

    sudo python3 tests/lab/lab.py up --dir /tmp/lab --hosts 3

prints where everything is, writes DIR/lab.json and DIR/inventory.yaml, and stays
in the foreground until Ctrl-C, SIGTERM or (with --watch-stdin) the end of its
standard input; then it stops everything it started, by PID.

Each host `webN`:
- listens on its own loopback address 127.0.<B>.<N> (all of 127/8 reaches `lo`);
- runs sshd in a mount namespace of its own, where /srv/app is the host's folder
  DIR/hosts/webN/app (releases/<version>/, a `current` link, bin/deploy), so
  `ssh webN ls /srv/app` differs per host as on real machines;
- runs tests/lab/app.py in that namespace, serving the release that
  /srv/app/current points to.
HAProxy listens on 127.0.0.1:<lb_port> with backend `app` (one server per host,
health-checked on /health/), on 127.0.0.1:<bluegreen_port> with backends `blue`
(the first half of the hosts) and `green` (the rest) chosen by the `active` key
of DIR/bluegreen.map (and `ramp`, both colours' servers, whose weights split
users during a blue-green ramp), and its runtime API on DIR/haproxy.sock and on
127.0.0.1:<admin_port>. A server-state-file is configured (DIR/haproxy.state).

With `--postgres`, a PostgreSQL 15 primary and a streaming standby
(pg_basebackup -R) on loopback ports, run as the `postgres` user from
/usr/lib/postgresql/15/bin (or $PG_BIN), with a seeded `finance` database
(accounts, transactions) owned by role `app`, TLS on with a certificate from
the lab's own CA (DIR/pg/tls/ca.crt); their DSNs are in lab.json.

`--flavor alt` is another world of the same stack, for the tests that the
playbook library is portable (FLAVOURS below): hosts ledger-N in group
`frontends` (Celery in `queue`), reached over ssh as the system user `labops`
(made on first use), with /srv/ledger and scripts bin/install-release, svc,
jobs and admin; the app serves https only (a certificate from the lab's CA,
DIR/tls/ca.crt) and says its release at /api/build as `build.release`; the
database is `ledger` owned by `ledger_svc`; HAProxy's backend is `django_pool`
and blue-green's map DIR/colours.map has `live green`; its Prometheus
(--prometheus) wants TLS and a password, which clients read from
DIR/prometheus-client.yml (Prometheus's HTTP client format). lab.json's `inputs`
has the values that point the library at whichever flavour is up.

`--bare` is for benchmarks: sshd only (several addresses per sshd, --per-sshd),
no app or HAProxy. In every mode, root's dotfiles are hidden on the hosts. Needs root (namespaces, sshd), python3,
openssh-server and haproxy: scripts/setup installs them.
"""
import argparse
import base64
import json
import os
import random
import secrets
import shutil
import shlex
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
VENV = os.path.join(HERE, ".venv")
# Inside each host, the lab's code (this folder, with its venv) is bind-mounted
# here: a host's user other than root reaches it even when the clone lies
# under a folder only root may enter (/root).
HOST_CODE = "/srv/lab"
HOST_VENV = f"{HOST_CODE}/.venv"
SSHD = "/usr/sbin/sshd"
DEPLOY = """#!/bin/sh
# deploy RELEASE: unpack a release and point `current` at it (the lab's stand-in
# for the real deploy script of the reference runbook). A release is copied
# afresh from the lab's artifact store ({artifacts}/RELEASE) when it is there,
# else made with just its VERSION. Remembers the release it replaced in
# PREVIOUS (what a rollback goes back to) and logs each deploy in deploys.log.
set -eu
release="$1"
root={root}
previous=$(basename "$(readlink "$root/current" 2>/dev/null || echo none)")
rm -rf "$root/releases/$release.new"
if [ -d "{artifacts}/$release" ]; then
  cp -a "{artifacts}/$release" "$root/releases/$release.new"
else
  mkdir -p "$root/releases/$release.new"
fi
printf '%s\\n' "$release" > "$root/releases/$release.new/VERSION"
rm -rf "$root/releases/$release"
mv -T "$root/releases/$release.new" "$root/releases/$release"
ln -sfn "releases/$release" "$root/current.new"
mv -T "$root/current.new" "$root/current"
echo "$previous" > "$root/PREVIOUS"
echo "$release" >> "$root/deploys.log"
echo "deployed $release on $(cat "$root/NAME") (was $previous)"
"""


# app start|stop|restart|status, on each host: the lab's stand-in for
# `systemctl ... django-finance`. A process is alive when /proc says so and it
# is not a zombie (some sandboxes' PID 1 never reaps).
APP_CTL = """#!/bin/sh
# app start|stop|restart|kill|status: the app server (Daphne in production).
# stop lets requests in flight finish (SIGTERM), then waits up to 30 s.
set -eu
root={root}
pidfile=$root/run/app.pid
alive() {{ [ -f "$pidfile" ] && p=$(cat "$pidfile") && [ -e "/proc/$p" ] && [ "$(sed 's/.*) //' "/proc/$p/stat" | cut -c1)" != Z ]; }}
case "${{1:-status}}" in
start)
  if alive; then echo "app is already running (pid $(cat "$pidfile"))"; exit 0; fi
  mkdir -p "$root/run"
  setsid {py} {here}/app.py --bind {addr} --port {port} --root "$root" --name {name} --pidfile "$pidfile" {app_args} >>"$root/run/app.log" 2>&1 </dev/null &
  i=0
  while ! curl -s -o /dev/null --max-time 10 {curl_args} {scheme}://{addr}:{port}/health/; do
    i=$((i+1)); [ $i -lt 150 ] || {{ echo "app did not start; see $root/run/app.log" >&2; exit 1; }}
    sleep 0.1
  done
  echo "app started (pid $(cat "$pidfile")) on {addr}:{port}";;
stop)
  if ! alive; then echo "app is not running"; exit 0; fi
  p=$(cat "$pidfile"); kill -TERM "$p"
  i=0
  while alive; do
    i=$((i+1)); [ $i -lt 300 ] || {{ kill -KILL "$p"; echo "app killed after 30 s" >&2; break; }}
    sleep 0.1
  done
  rm -f "$pidfile"; echo "app stopped";;
restart) "$0" stop; "$0" start;;
kill) if alive; then kill -KILL "$(cat "$pidfile")"; fi; rm -f "$pidfile"; echo "app killed";;
status) if alive; then echo "app is running (pid $(cat "$pidfile"))"; else echo "app is stopped"; exit 3; fi;;
*) echo "usage: app start|stop|restart|kill|status" >&2; exit 2;;
esac
"""

# celery start|stop-beat|stop-workers|status, on hosts of a --stack lab: the
# Celery worker and beat on the lab's Redis (tests/lab/tasks.py).
CELERY_CTL = """#!/bin/sh
# celery start|start-worker|start-beat|stop-beat|stop-workers [TIMEOUT]|status: this host's Celery worker
# and beat. stop-workers is a warm shutdown through the broker (`celery control
# shutdown`): the worker finishes the tasks it runs, then exits.
set -eu
root={root}
run=$root/run/celery
set -a; . "$root/config/env"; set +a
export LAB_CELERY_DIR=$run PYTHONPATH={here}
cd {here}
celery="{venv}/bin/python -m celery"
alive() {{ [ -f "$1" ] && p=$(cat "$1") && [ -e "/proc/$p" ] && [ "$(sed 's/.*) //' "/proc/$p/stat" | cut -c1)" != Z ]; }}
wait_gone() {{
  i=0
  while alive "$1"; do
    i=$((i+1)); [ $i -lt $(($2 * 10)) ] || {{ echo "$3 still running after $2 s" >&2; exit 1; }}
    sleep 0.1
  done
  rm -f "$1"
}}
start_worker() {{
  if alive "$run/worker.pid"; then echo "worker already running"; return 0; fi
  : > "$run/worker.log"
  setsid $celery -A tasks worker -l INFO --concurrency=2 -n worker@{name} --pidfile="$run/worker.pid" >>"$run/worker.log" 2>&1 </dev/null &
  i=0
  until grep -q "ready" "$run/worker.log" 2>/dev/null; do
    i=$((i+1)); [ $i -lt 300 ] || {{ echo "the worker did not start; see $run/worker.log" >&2; exit 1; }}
    sleep 0.1
  done
  echo "worker running"
}}
start_beat() {{
  if alive "$run/beat.pid"; then echo "beat already running"; return 0; fi
  setsid $celery -A tasks beat -l INFO -s "$run/beat-schedule" --pidfile="$run/beat.pid" >>"$run/beat.log" 2>&1 </dev/null &
  i=0
  until alive "$run/beat.pid"; do
    i=$((i+1)); [ $i -lt 300 ] || {{ echo "beat did not start; see $run/beat.log" >&2; exit 1; }}
    sleep 0.1
  done
  echo "beat running"
}}
mkdir -p "$run"
case "${{1:-status}}" in
start) start_worker; start_beat;;
start-worker) start_worker;;
start-beat) start_beat;;
stop-beat)
  if alive "$run/beat.pid"; then kill -TERM "$(cat "$run/beat.pid")"; wait_gone "$run/beat.pid" 30 beat; fi
  echo "beat stopped";;
stop-workers)
  if alive "$run/worker.pid"; then
    $celery -A tasks control shutdown -d worker@{name} --timeout 2 >/dev/null 2>&1 || true  # it does not reply
    wait_gone "$run/worker.pid" "${{2:-60}}" worker
  fi
  echo "workers stopped";;
kill)
  for w in worker beat; do
    if alive "$run/$w.pid"; then kill -KILL "$(cat "$run/$w.pid")"; fi
    rm -f "$run/$w.pid"
  done
  echo "worker and beat killed";;
ping) $celery -A tasks inspect ping -d worker@{name} --timeout 3;;
inspect) $celery -A tasks inspect active -d worker@{name} --timeout 3 && $celery -A tasks inspect reserved -d worker@{name} --timeout 3;;
status)
  for w in worker beat; do if alive "$run/$w.pid"; then echo "$w running"; else echo "$w stopped"; fi; done;;
*) echo "usage: celery start|start-worker|start-beat|stop-beat|stop-workers [TIMEOUT]|status" >&2; exit 2;;
esac
"""

# ctl stop|start|rebuild NODE [FROM], on the runner: the lab's two database
# hosts, `primary` and `standby`, for DR drills.
PG_CTL = """#!/bin/sh
# ctl stop NODE | start NODE | rebuild NODE FROM | basebackup FROM | pitr NODE
# TIME: the lab's database hosts (primary, standby). rebuild wipes NODE and
# makes it a streaming standby of FROM (pg_basebackup -R), then starts it.
# basebackup takes a base backup of FROM into DIR/pg/base; pitr (the lab's
# stand-in for `pgbackrest restore --type=time`) stops NODE, replaces its data
# with that base backup and sets it to replay the WAL archive (DIR/pg/wal) up
# to TIME and then promote; starting it does the recovery.
set -eu
d={d}
bin={bin}
port() {{ case "$1" in primary) echo {primary};; standby) echo {standby};; *) echo "no database host $1 (primary, standby)" >&2; exit 2;; esac; }}
as_pg() {{ setpriv --reuid=postgres --regid=postgres --init-groups -- env PGPASSFILE=$d/pgpass "$@"; }}
running() {{ as_pg $bin/pg_ctl -D "$d/$1" status >/dev/null 2>&1; }}
stop() {{ if running "$1"; then as_pg $bin/pg_ctl -D "$d/$1" -m fast -w stop >/dev/null; fi; echo "$1 stopped"; }}
start() {{
  if ! running "$1"; then as_pg $bin/pg_ctl -D "$d/$1" -w -t 60 -l "$d/$1.ctl.log" start >/dev/null; fi
  echo "$1 running on port $(port "$1")"
}}
case "${{1:-}}" in
stop) port "$2" >/dev/null; stop "$2";;
start) port "$2" >/dev/null; start "$2";;
rebuild)
  port "$2" >/dev/null; from=$(port "$3")
  stop "$2"
  rm -rf "$d/$2"
  as_pg $bin/pg_basebackup -D "$d/$2" -R -h 127.0.0.1 -p "$from" -U postgres -X stream -c fast
  # What the copy carried over from FROM that is not this node's: a fence, FROM's settings.
  sed -i '/default_transaction_read_only/d' "$d/$2/postgresql.auto.conf"
  cat "$d/settings-$2" >> "$d/$2/postgresql.conf"
  start "$2"
  echo "$2 rebuilt as a standby of $3";;
basebackup)
  from=$(port "$2")
  rm -rf "$d/base"
  as_pg $bin/pg_basebackup -D "$d/base" -h 127.0.0.1 -p "$from" -U postgres -X stream -c fast
  echo "base backup of $2 in $d/base";;
pitr)
  port "$2" >/dev/null
  [ -d "$d/base" ] || {{ echo "no base backup in $d/base: ctl basebackup FROM first" >&2; exit 1; }}
  [ -n "${{3:-}}" ] || {{ echo "usage: ctl pitr NODE TIME" >&2; exit 2; }}
  stop "$2"
  rm -rf "$d/$2"
  as_pg cp -a "$d/base" "$d/$2"
  rm -f "$d/$2/standby.signal"
  sed -i '/default_transaction_read_only/d; /primary_conninfo/d' "$d/$2/postgresql.auto.conf"
  cat "$d/settings-$2" >> "$d/$2/postgresql.conf"
  {{ echo "restore_command = 'cp $d/wal/%f %p'"; echo "recovery_target_time = '$3'"; echo "recovery_target_action = 'promote'"; }} >> "$d/$2/postgresql.auto.conf"
  as_pg touch "$d/$2/recovery.signal"
  echo "$2 restored from the base backup; it replays the WAL archive up to $3 when started";;
*) echo "usage: ctl stop|start NODE | rebuild NODE FROM | basebackup FROM | pitr NODE TIME" >&2; exit 2;;
esac
"""

# config.py in the host's folder (/app in its namespace): the Celery app that
# `cd /app && celery -A config ...` (the library's defaults) finds, on the
# broker of the host's config/env.
CELERY_CONFIG = """import os
import sys

sys.path.insert(0, {here!r})
import stack  # noqa: E402

os.environ.setdefault("REDIS_URL", stack.read_env(os.path.dirname(os.path.abspath(__file__))).get("REDIS_URL", ""))
from tasks import app  # noqa: E402,F401
"""

# manage: the app's manage.py (tests/lab/manage.py) on this host.
MANAGE = """#!/bin/sh
exec {py} {here}/manage.py --root {root} "$@"
"""


# Lab hosts are clean machines: in each host's namespace, the dotfiles of this
# machine's root (a pyenv init in ~/.bashrc costs 100 ms per command, as bash
# sources it under sshd) are hidden.
CLEAN = 'for f in /root/.bashrc /root/.profile /root/.bash_profile; do [ -f "$f" ] && mount --bind /dev/null "$f"; done; '


# What differs between the lab's flavours: what a real deployment of the same
# stack chooses for itself. `default` is the lab the library was written with;
# `alt` is another world, for the tests that the library is portable: its own
# host and group names, ssh user, folder and script names, a version endpoint
# of another path and shape (no /version/), database and role names, HAProxy
# backend and map names, green live, and TLS on the app with its own CA.
FLAVOURS = {
    "default": dict(
        root="/srv/app", host="web{}", group="web", workers="workers", user="root",
        deploy="deploy", app="app", celery="celery", manage="manage",
        version_path="/version/", version_field="version",
        database="finance", role="app", backend="app", map="bluegreen.map", key="active", live="blue", tls=False,
        ramp="ramp",
    ),
    "alt": dict(
        root="/srv/ledger", host="ledger-{}", group="frontends", workers="queue", user="labops",
        deploy="install-release", app="svc", celery="jobs", manage="admin",
        version_path="/api/build", version_field="build.release",
        database="ledger", role="ledger_svc", backend="django_pool", map="colours.map", key="live", live="green", tls=True,
        ramp="colours_ramp",
    ),
}


def die(msg):
    print(f"lab: {msg}", file=sys.stderr)
    sys.exit(1)


def ephemeral_low():
    """The lowest port the kernel hands out to outgoing connections."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port(addresses):
    """A TCP port free on every address, below the ephemeral range: a port
    from that range can be taken by any outgoing connection (the tests' own
    load) between choosing it and binding it."""
    high = max(ephemeral_low() - 1, 20100)
    for _ in range(200):
        port = random.randint(20000, high)
        socks = []
        try:
            for a in addresses:
                s = socket.socket()
                s.bind((a, port))
                socks.append(s)
            return port
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    die("no free port")


def wait_listening(address, port, proc, what, timeout=15.0):
    end = time.time() + timeout
    while time.time() < end:
        if proc.poll() is not None:
            die(f"{what} exited with {proc.returncode} before listening on {address}:{port}")
        try:
            socket.create_connection((address, port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.03)
    die(f"{what} did not listen on {address}:{port} within {timeout}s")


def keygen(path):
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "runbook-lab", "-f", path], check=True)


class Lab:
    def __init__(self, a):
        self.a = a
        self.dir = os.path.abspath(a.dir)
        self.procs = []  # (what, Popen), stopped in reverse order
        self.hosts = []
        self.app_ca = None
        self.info = {}
        self.f = FLAVOURS[a.flavor]

    def spawn(self, what, argv, log):
        out = open(log, "ab")
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
        self.procs.append((what, p))
        return p

    def sshd_config(self, name, addresses, port, host_key):
        d = self.dir
        path = f"{d}/hosts/{name}/sshd_config"
        listen = "".join(f"ListenAddress {a}\n" for a in addresses)
        with open(path, "w") as f:
            f.write(
                f"Port {port}\n{listen}HostKey {host_key}\nPidFile none\n"
                f"AuthorizedKeysFile {d}/authorized_keys\n"
                "PasswordAuthentication no\nKbdInteractiveAuthentication no\nPubkeyAuthentication yes\n"
                "PermitRootLogin prohibit-password\nStrictModes no\nUsePAM no\nLogLevel INFO\n"
                # The host's tools (the real `celery`) on the PATH of every session.
                f"SetEnv PATH={self.f['root']}/tools:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n"
                # The benchmark opens 20 connections at once against one sshd.
                "MaxSessions 16\nMaxStartups 200\nAllowAgentForwarding yes\nAllowTcpForwarding yes\n"
            )
        return path

    def up(self):
        a = self.a
        if os.geteuid() != 0:
            die("the lab needs root (mount namespaces, sshd on many addresses); run it with sudo")
        for tool, pkg in [(SSHD, "openssh-server"), ("ssh-keygen", "openssh-client"), ("unshare", "util-linux")]:
            if not shutil.which(tool):
                die(f"{tool} is missing: apt-get install {pkg} (scripts/setup does it)")
        if not a.bare and not a.no_haproxy and not shutil.which("haproxy"):
            die("haproxy is missing: apt-get install haproxy (scripts/setup does it)")
        if a.prometheus and not shutil.which("prometheus"):
            die("prometheus is missing: apt-get install --no-install-recommends prometheus (scripts/setup does it)")
        os.makedirs(f"{self.dir}/hosts", exist_ok=True)
        os.makedirs("/run/sshd", exist_ok=True)  # sshd's privilege separation folder
        os.makedirs("/srv", exist_ok=True)  # mount point for each host's private /srv
        os.makedirs("/app", exist_ok=True)  # and for its /app, where production keeps the code
        os.chmod(self.dir, 0o755)  # the ssh user reads the artifacts
        self.ssh_user()
        keygen(f"{self.dir}/client_key")
        shutil.copy(f"{self.dir}/client_key.pub", f"{self.dir}/authorized_keys")
        block = a.block if a.block is not None else random.randint(16, 250)
        names = [self.f["host"].format(i) for i in range(1, a.hosts + 1)]
        addrs = [f"127.0.{block + (i - 1) // 250}.{(i - 1) % 250 + 1}" for i in range(1, a.hosts + 1)]
        ssh_port = free_port(addrs)
        app_port = free_port(addrs)
        known = []
        groups = [list(range(i, min(i + a.per_sshd, a.hosts))) for i in range(0, a.hosts, a.per_sshd)] if a.bare else [[i] for i in range(a.hosts)]
        for members in groups:
            lead = names[members[0]]
            hd = f"{self.dir}/hosts/{lead}"
            os.makedirs(hd, exist_ok=True)
            keygen(f"{hd}/host_key")
            host_pub = open(f"{hd}/host_key.pub").read().strip()
            for m in members:
                known.append(f"[{addrs[m]}]:{ssh_port} {host_pub}")
            cfg = self.sshd_config(lead, [addrs[m] for m in members], ssh_port, f"{hd}/host_key")
            sshd = [SSHD, "-D", "-e", "-f", cfg]
            if a.bare:
                sshd = ["unshare", "-m", "--propagation", "private", "sh", "-c", CLEAN + 'exec "$@"', "sh"] + sshd
                self.spawn(f"sshd {lead}", sshd, f"{hd}/sshd.log")
            else:
                app = f"{hd}/app"
                os.makedirs(f"{app}/bin", exist_ok=True)
                with open(f"{app}/NAME", "w") as f:
                    f.write(lead + "\n")
                self.script(f"{app}/bin/{self.f['deploy']}", DEPLOY.format(artifacts=f"{self.dir}/artifacts", root=self.f["root"]))
                os.makedirs(f"{app}/releases/{a.release}", exist_ok=True)
                with open(f"{app}/releases/{a.release}/VERSION", "w") as f:
                    f.write(a.release + "\n")
                if not os.path.lexists(f"{app}/current"):
                    os.symlink(f"releases/{a.release}", f"{app}/current")
                # A private mount namespace: a tmpfs on /srv, the host's folder on /srv/app.
                root = self.f["root"]
                wrap = CLEAN + (f'mount -t tmpfs lab /srv && mkdir {root} && mount --bind "$1" {root} && '
                                f'mount --bind "$1" /app && mkdir {HOST_CODE} && mount --bind {shlex.quote(HERE)} {HOST_CODE} && '
                                'shift && exec "$@"')
                sshd = ["unshare", "-m", "--propagation", "private", "sh", "-c", wrap, "sh", app] + sshd
                p = self.spawn(f"sshd {lead}", sshd, f"{hd}/sshd.log")
            for m in members:
                self.hosts.append({"name": names[m], "address": addrs[m], "ssh_port": ssh_port, "dir": hd, "sshd_log": f"{hd}/sshd.log"})
        with open(f"{self.dir}/known_hosts", "w") as f:
            f.write("\n".join(known) + "\n")
        for (what, p), h in zip([x for x in self.procs if x[0].startswith("sshd")], [self.hosts[g[0]] for g in groups]):
            wait_listening(h["address"], ssh_port, p, what)
        if a.postgres:
            self.postgres()
        if a.stack:
            self.redis()
        if not a.bare:
            os.makedirs(f"{self.dir}/artifacts", exist_ok=True)
            for (what, p), h in zip([x for x in self.procs if x[0].startswith("sshd")], self.hosts):
                h["app_port"] = app_port
                h["sshd_pid"] = p.pid
                self.host_scripts(h, app_port)
            # Each host's app (and, in a --stack lab, web1's Celery worker and
            # beat) is started the way an operator would: by its script, inside
            # the host. They are stopped by their pidfiles.
            for h in self.hosts:
                self.in_host(h, f"{self.f['root']}/bin/{self.f['app']}", "start")
                h["app_pidfile"] = f"{h['dir']}/app/run/app.pid"
            if a.stack and self.hosts:
                h = self.hosts[0]
                self.in_host(h, f"{self.f['root']}/bin/{self.f['celery']}", "start")
                self.info["celery"] = {"host": h["name"], "dir": f"{h['dir']}/app/run/celery", "venv": VENV}
            if not a.no_haproxy and self.hosts:
                self.haproxy()
                if a.prometheus:
                    self.prometheus()
        self.write_info(ssh_port)

    def script(self, path, text):
        with open(path, "w") as f:
            f.write(text)
        os.chmod(path, 0o755)

    def host_scripts(self, h, port):
        """The host's scripts (the flavour names them; by default bin/app,
        bin/manage, and bin/celery and config/env in a --stack lab), all of
        its folder owned by the flavour's ssh user."""
        fl = self.f
        app = f"{h['dir']}/app"
        py = f"{HOST_VENV}/bin/python" if os.path.exists(f"{VENV}/bin/python") else sys.executable
        if self.a.stack and py == sys.executable:
            die(f"the lab's venv ({VENV}) is missing: scripts/setup makes it (psycopg, celery)")
        app_args, curl_args, scheme = [], "", "http"
        if fl["version_path"] != "/version/":
            app_args.append("--no-version-endpoint")
        if fl["tls"]:
            tls = f"{app}/tls"
            self.app_ca = self.certificate(tls, "app", [h["address"]], fl["user"])
            inside = f"{fl['root']}/tls"
            app_args += ["--tls-cert", f"{inside}/app.crt", "--tls-key", f"{inside}/app.key"]
            curl_args, scheme = f"--cacert {self.app_ca}", "https"
        fill = dict(py=py, here=HOST_CODE, addr=h["address"], port=port, name=h["name"], venv=HOST_VENV, root=fl["root"],
                    app_args=" ".join(app_args), curl_args=curl_args, scheme=scheme)
        self.script(f"{app}/bin/{fl['app']}", APP_CTL.format(**fill))
        self.script(f"{app}/bin/{fl['manage']}", MANAGE.format(**fill))
        if self.a.stack:
            self.script(f"{app}/bin/{fl['celery']}", CELERY_CTL.format(**fill))
            # What the library's default commands expect of a production host:
            # `celery` on the PATH and the Celery app as `cd /app && celery -A config`.
            os.makedirs(f"{app}/tools", exist_ok=True)
            self.script(f"{app}/tools/celery", f'#!/bin/sh\nexec {HOST_VENV}/bin/python -m celery "$@"\n')
            with open(f"{app}/config.py", "w") as f:
                f.write(CELERY_CONFIG.format(here=HOST_CODE))
            os.makedirs(f"{app}/config", exist_ok=True)
            with open(f"{app}/config/env", "w") as f:
                f.write(f"DATABASE_URL={self.info['postgres']['primary']['app_dsn']}\n"
                        f"REDIS_URL={self.info['redis']['url']}\n")
            with open(f"{app}/releases/{self.a.release}/MIGRATION", "w") as f:
                f.write("0005_seed\n")
        if fl["user"] != "root":
            subprocess.run(["chown", "-R", f"{fl['user']}:{fl['user']}", app], check=True)

    def ssh_user(self):
        """The flavour's ssh user: root, or a system user of the lab's, made
        on first use (a shell, a password that is not locked, as sshd without
        PAM wants it, and the host's folder as its home)."""
        user = self.f["user"]
        if user == "root":
            return
        import pwd
        # Labs start in parallel: another may be making the user right now
        # (useradd then says it exists, or that /etc/passwd is locked).
        for _ in range(50):
            try:
                pwd.getpwnam(user)
                break
            except KeyError:
                subprocess.run(["useradd", "--system", "--shell", "/bin/sh", "--home-dir", self.f["root"], "--no-create-home",
                                user], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                time.sleep(0.1)
        else:
            die(f"cannot make the lab's ssh user `{user}` (useradd, from the passwd package)")
        for _ in range(50):
            if subprocess.run(["usermod", "--password", "*", user], stderr=subprocess.DEVNULL).returncode == 0:
                break
            time.sleep(0.1)
        else:
            die(f"cannot unlock the lab's ssh user `{user}` (usermod)")

    def in_host(self, h, *argv):
        """Runs a command inside host h's mount namespace, as its sshd sees it,
        as the flavour's ssh user."""
        user = self.f["user"]
        if user != "root":
            argv = ("setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups", "--", "env", f"HOME={self.f['root']}", *argv)
        r = subprocess.run(["nsenter", "-t", str(h["sshd_pid"]), "-m", *argv], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
        if r.returncode != 0:
            die(f"{' '.join(argv)} failed on {h['name']}: {r.stdout.strip()}")

    def redis(self):
        if not shutil.which("redis-server"):
            die("redis-server is missing: apt-get install redis-server (scripts/setup does it)")
        port = free_port(["127.0.0.1"])
        d = f"{self.dir}/redis"
        os.makedirs(d, exist_ok=True)
        p = self.spawn("redis", ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                 "--appendonly", "no", "--dir", d, "--protected-mode", "no"], f"{d}/redis.log")
        wait_listening("127.0.0.1", port, p, "redis")
        self.info["redis"] = {"port": port, "url": f"redis://127.0.0.1:{port}/0", "pid": p.pid}

    def haproxy(self):
        d = self.dir
        lb_port = free_port(["127.0.0.1"])
        admin_port = free_port(["127.0.0.1"])
        fl = self.f
        # With TLS on the app, HAProxy speaks TLS to it (and checks it) and
        # verifies it against the lab's CA.
        ssl = f" ssl verify required ca-file {self.app_ca}" if fl["tls"] else ""

        def servers_of(hosts):
            return "".join(f"    server {h['name']} {h['address']}:{h['app_port']} check{ssl}\n" for h in hosts)

        servers = servers_of(self.hosts)
        # Blue-green: the first half of the hosts is blue, the rest green; the
        # map's `active` key picks the backend of the `bluegreen` frontend.
        half = max(1, len(self.hosts) // 2)
        blue, green = self.hosts[:half], self.hosts[half:] or self.hosts[:half]
        # A blue-green ramp: a backend with the servers of both colours, each
        # following its colour's health check, their weights splitting users.
        seen = set()
        ramp = ""
        for colour, hosts in (("blue", blue), ("green", green)):
            for h in hosts:
                if h["name"] not in seen:
                    seen.add(h["name"])
                    ramp += f"    server {h['name']} {h['address']}:{h['app_port']} track {colour}/{h['name']}{ssl}\n"
        bg_port = free_port(["127.0.0.1"])
        metrics_port = free_port(["127.0.0.1"])
        bg_map = f"{d}/{fl['map']}"
        with open(bg_map, "w") as f:
            f.write(f"{fl['key']} {fl['live']}\n")
        cfg = f"""global
    stats socket {d}/haproxy.sock mode 600 level admin
    stats socket ipv4@127.0.0.1:{admin_port} level admin
    server-state-file {d}/haproxy.state
    maxconn 2000

defaults
    mode http
    load-server-state-from-file global
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    # A health check may take as long as a slow release answers (without it
    # HAProxy allows only `inter`, 300 ms, and a release 300 ms slower flaps
    # DOWN and takes no traffic).
    timeout check 2s
    option redispatch
    retries 2

frontend web
    bind 127.0.0.1:{lb_port}
    default_backend {fl['backend']}

frontend metrics
    bind 127.0.0.1:{metrics_port}
    http-request use-service prometheus-exporter if {{ path /metrics }}

frontend bluegreen
    bind 127.0.0.1:{bg_port}
    use_backend %[str({fl['key']}),map({bg_map},{fl['live']})]

backend {fl['backend']}
    balance roundrobin
    option httpchk GET /health/
    default-server inter 300ms fall 2 rise 2
{servers}
backend blue
    option httpchk GET /health/
    default-server inter 300ms fall 2 rise 2
{servers_of(blue)}
backend green
    option httpchk GET /health/
    default-server inter 300ms fall 2 rise 2
{servers_of(green)}
backend {fl['ramp']}
    balance roundrobin
{ramp}"""
        with open(f"{d}/haproxy.cfg", "w") as f:
            f.write(cfg)
        p = self.spawn("haproxy", ["haproxy", "-db", "-f", f"{d}/haproxy.cfg"], f"{d}/haproxy.log")
        wait_listening("127.0.0.1", lb_port, p, "haproxy")
        self.info["haproxy"] = {
            "port": lb_port,
            "admin_port": admin_port,
            "socket": f"{d}/haproxy.sock",
            "config": f"{d}/haproxy.cfg",
            "state_file": f"{d}/haproxy.state",
            "backend": fl["backend"],
            "bluegreen_port": bg_port,
            "metrics_port": metrics_port,
            "map": bg_map,
            "map_key": fl["key"],
            "live": fl["live"],
            "ramp": fl["ramp"],
            "blue": [h["name"] for h in blue],
            "green": [h["name"] for h in green],
            "pid": p.pid,
        }

    def prometheus(self):
        """Prometheus on 127.0.0.1:<port>, scraping HAProxy's exporter (per
        backend and per server: responses by code, response times) and each
        host's app (its latency histogram, label `host`) every second, its
        data in DIR/prometheus."""
        d = self.dir
        port = free_port(["127.0.0.1"])
        metrics = self.info["haproxy"]["metrics_port"]
        # Each host's app too (its latency histogram), labelled with its name.
        scheme = "https" if self.app_ca else "http"
        tls = f"    tls_config:\n      ca_file: {self.app_ca}\n" if self.app_ca else ""
        apps = "".join(f"      - targets: ['{h['address']}:{h['app_port']}']\n        labels: {{host: {h['name']}}}\n"
                       for h in self.hosts)
        with open(f"{d}/prometheus.yml", "w") as f:
            f.write("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
                    "scrape_configs:\n  - job_name: haproxy\n"
                    f"    static_configs:\n      - targets: ['127.0.0.1:{metrics}']\n"
                    f"  - job_name: app\n    scheme: {scheme}\n{tls}    static_configs:\n{apps}")
        argv = ["prometheus", f"--config.file={d}/prometheus.yml", f"--storage.tsdb.path={d}/prometheus",
                f"--web.listen-address=127.0.0.1:{port}", "--storage.tsdb.retention.time=1d", "--log.level=warn"]
        # The other world's Prometheus wants TLS (the lab's CA) and a
        # password, as one run by a platform team does; its clients read both
        # from DIR/prometheus-client.yml (Prometheus's HTTP client format).
        scheme, context, headers, client_config = "http", None, {}, None
        if self.f["tls"]:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                import crypt
            password = secrets.token_hex(12)
            with open(f"{d}/prometheus.password", "w") as f:
                f.write(password + "\n")
            ca = self.certificate(f"{d}/tls", "prometheus", ["127.0.0.1"], "root")
            with open(f"{d}/prometheus-web.yml", "w") as f:
                f.write(f"tls_server_config:\n  cert_file: {d}/tls/prometheus.crt\n  key_file: {d}/tls/prometheus.key\n"
                        f"basic_auth_users:\n  runbook: '{crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH))}'\n")
            client_config = f"{d}/prometheus-client.yml"
            with open(client_config, "w") as f:
                # Relative paths, read from this file's folder.
                f.write("basic_auth:\n  username: runbook\n  password_file: prometheus.password\n"
                        "tls_config:\n  ca_file: tls/ca.crt\n")
            argv.append(f"--web.config.file={d}/prometheus-web.yml")
            scheme, context = "https", ssl.create_default_context(cafile=ca)
            token = base64.b64encode(f"runbook:{password}".encode()).decode()
            headers = {"Authorization": f"Basic {token}"}
        p = self.spawn("prometheus", argv, f"{d}/prometheus.log")
        wait_listening("127.0.0.1", port, p, "prometheus")
        # Up once it has scraped HAProxy twice (a rate needs two points).
        deadline = time.time() + 30
        query = urllib.parse.quote("count_over_time(haproxy_process_uptime_seconds[1m])")
        while True:
            try:
                ask = urllib.request.Request(f"{scheme}://127.0.0.1:{port}/api/v1/query?query={query}", headers=headers)
                with urllib.request.urlopen(ask, timeout=2, context=context) as r:
                    result = json.load(r)["data"]["result"]
                if result and float(result[0]["value"][1]) >= 2:
                    break
            except (OSError, ValueError, KeyError):
                pass
            if time.time() > deadline or p.poll() is not None:
                die(f"prometheus did not scrape HAProxy within 30 s (see {d}/prometheus.log)")
            time.sleep(0.2)
        self.info["prometheus"] = {"port": port, "url": f"{scheme}://127.0.0.1:{port}", "pid": p.pid,
                                   "config": f"{d}/prometheus.yml", "log": f"{d}/prometheus.log",
                                   "http_config": client_config or ""}

    def certificate(self, folder, name, addresses, owner):
        """FOLDER/NAME.crt and NAME.key (owned by `owner`, 0600) for `addresses`,
        signed by the lab's CA (DIR/tls/ca.crt, made on first use)."""
        ossl = lambda *argv: subprocess.run(["openssl", *argv], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        ca = f"{self.dir}/tls"
        if not os.path.exists(f"{ca}/ca.crt"):
            if not shutil.which("openssl"):
                die("openssl is missing (the lab's certificates): apt-get install openssl (scripts/setup does it)")
            os.makedirs(ca, exist_ok=True)
            ossl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=runbook lab CA",
                 "-keyout", f"{ca}/ca.key", "-out", f"{ca}/ca.crt")
        os.makedirs(folder, exist_ok=True)
        base = f"{folder}/{name}"
        ossl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={addresses[0]}", "-keyout", f"{base}.key", "-out", f"{base}.csr")
        with open(f"{base}.ext", "w") as f:
            f.write("subjectAltName=" + ",".join(f"IP:{a}" for a in addresses) + "\nbasicConstraints=CA:FALSE\n")
        ossl("x509", "-req", "-in", f"{base}.csr", "-CA", f"{ca}/ca.crt", "-CAkey", f"{ca}/ca.key", "-CAcreateserial",
             "-days", "2", "-extfile", f"{base}.ext", "-out", f"{base}.crt")
        for f in (f"{base}.key", f"{base}.crt"):
            shutil.chown(f, owner, owner)
            os.chmod(f, 0o600)
        return f"{ca}/ca.crt"

    def as_postgres(self, argv):
        return ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--"] + argv

    def pg_wait(self, port, proc, what):
        """True once the node accepts connections; False if it exited (its
        log says why); dies after 30 s."""
        end = time.time() + 30
        while time.time() < end:
            if proc.poll() is not None:
                return False
            # Asked on its own socket directory: a server of another lab that
            # took the same port first answers on 127.0.0.1, never there.
            tcp = subprocess.run([f"{self.pg_bin}/pg_isready", "-q", "-h", "127.0.0.1", "-p", str(port)])
            own = subprocess.run([f"{self.pg_bin}/pg_isready", "-q", "-h", f"{self.dir}/pg", "-p", str(port)])
            if tcp.returncode == 0 and own.returncode == 0:
                return True
            time.sleep(0.1)
        die(f"{what} not ready on port {port} after 30s; see {self.dir}/pg/{what}.log")

    def postgres(self):
        self.pg_bin = os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin")
        if not shutil.which("openssl"):
            die("openssl is missing (the lab's PostgreSQL certificates): apt-get install openssl (scripts/setup does it)")
        if not os.path.exists(f"{self.pg_bin}/postgres"):
            die(f"PostgreSQL server binaries are not in {self.pg_bin}: apt-get install postgresql-15 (or set PG_BIN)")
        try:
            import pwd
            pwd.getpwnam("postgres")
        except KeyError:
            die("there is no `postgres` user to run PostgreSQL as: apt-get install postgresql-15 creates it")
        d = f"{self.dir}/pg"
        os.chmod(self.dir, 0o755)
        os.makedirs(d, exist_ok=True)
        shutil.chown(d, "postgres", "postgres")
        password = secrets.token_hex(12)
        app_password = secrets.token_hex(12)
        pwfile = f"{d}/pw"
        with open(pwfile, "w") as f:
            f.write(password + "\n")
        shutil.chown(pwfile, "postgres", "postgres")
        os.chmod(pwfile, 0o600)
        primary, standby = free_port(["127.0.0.1"]), free_port(["127.0.0.1"])
        # TLS: a certificate for 127.0.0.1 signed by the lab's CA.
        tls = f"{d}/tls"
        self.certificate(tls, "server", ["127.0.0.1"], "postgres")
        run = lambda argv, **kw: subprocess.run(self.as_postgres(argv), check=True, stdout=subprocess.DEVNULL, **kw)
        run([f"{self.pg_bin}/initdb", "--no-sync", "-D", f"{d}/primary", "-U", "postgres", "--pwfile", pwfile,
             "--auth-local=trust", "--auth-host=scram-sha-256"])
        os.unlink(pwfile)
        with open(f"{d}/primary/pg_hba.conf", "a") as f:
            f.write("host replication all 127.0.0.1/32 scram-sha-256\n")

        # Each node's settings live in its own postgresql.conf (appended last, so
        # they win over what pg_basebackup copied from the other node): `ctl`
        # can then stop, start and rebuild nodes with plain pg_ctl.
        ports = {"primary": primary, "standby": standby}
        settings = lambda name: (
            f"\n# lab settings of {name}\nport = {ports[name]}\nunix_socket_directories = '{d}'\n"
            "listen_addresses = '127.0.0.1'\nwal_level = replica\nmax_wal_senders = 5\nhot_standby = on\n"
            "wal_keep_size = 128MB\nfsync = off\nshared_buffers = 32MB\nmax_connections = 50\n"
            f"cluster_name = 'lab-{name}'\nssl = on\nssl_cert_file = '{tls}/server.crt'\nssl_key_file = '{tls}/server.key'\n"
            # Continuous WAL archiving (what point-in-time recovery replays).
            f"archive_mode = on\narchive_command = 'test ! -f {d}/wal/%f && cp %p {d}/wal/%f'\n"
        )
        os.makedirs(f"{d}/wal", exist_ok=True)
        shutil.chown(f"{d}/wal", "postgres", "postgres")

        def server(name):
            # A free port can be taken by another lab between choosing it and
            # binding it (tests run labs in parallel): then try another one.
            for attempt in range(3):
                with open(f"{d}/{name}/postgresql.conf", "a") as f:
                    f.write(settings(name))
                argv = [f"{self.pg_bin}/postgres", "-D", f"{d}/{name}"]
                p = self.spawn(f"postgres {name}", self.as_postgres(argv), f"{d}/{name}.log")
                if self.pg_wait(ports[name], p, name):
                    return p
                log = open(f"{d}/{name}.log", errors="replace").read()
                if "could not bind" not in log and "already in use" not in log or attempt == 2:
                    tail = "\n".join(log.strip().splitlines()[-5:])
                    die(f"{name} exited with {p.returncode}: {tail}")
                ports[name] = free_port(["127.0.0.1"])

        p1 = server("primary")
        primary = ports["primary"]
        db, role = self.f["database"], self.f["role"]
        seed = f"""
CREATE ROLE {role} LOGIN PASSWORD '{app_password}';
CREATE DATABASE {db} OWNER {role};
\\c {db}
SET ROLE {role};
CREATE TABLE accounts (id serial PRIMARY KEY, name text NOT NULL, balance numeric(12,2) NOT NULL DEFAULT 0);
CREATE TABLE transactions (id bigserial PRIMARY KEY, account_id int REFERENCES accounts, amount numeric(12,2), at timestamptz DEFAULT now());
INSERT INTO accounts (name, balance) SELECT 'account ' || g, g * 10 FROM generate_series(1, 200) g;
INSERT INTO transactions (account_id, amount) SELECT 1 + g % 200, g FROM generate_series(1, 5000) g;
CREATE TABLE django_migrations (id serial PRIMARY KEY, app text NOT NULL, name text NOT NULL, applied timestamptz NOT NULL DEFAULT now());
INSERT INTO django_migrations (app, name) VALUES ('finance', '0001_initial'), ('finance', '0002_accounts_balance'),
  ('finance', '0003_transactions'), ('finance', '0004_transactions_at'), ('finance', '0005_seed');
"""
        run([f"{self.pg_bin}/psql", "-q", "-v", "ON_ERROR_STOP=1", "-h", d, "-p", str(primary), "-U", "postgres", "-d", "postgres"],
            input=seed.encode())
        env = dict(os.environ, PGPASSWORD=password)
        run([f"{self.pg_bin}/pg_basebackup", "-D", f"{d}/standby", "-R", "-h", "127.0.0.1", "-p", str(primary),
             "-U", "postgres", "-X", "stream", "-c", "fast"], env=env)
        p2 = server("standby")
        standby = ports["standby"]
        # The database hosts' controls for DR drills: stop a node (the failure),
        # start it, or rebuild it as a streaming standby of the other.
        pgpass = f"{d}/pgpass"
        with open(pgpass, "w") as f:
            f.write(f"127.0.0.1:*:*:postgres:{password}\n")
        shutil.chown(pgpass, "postgres", "postgres")
        os.chmod(pgpass, 0o600)
        with open(f"{d}/settings-primary", "w") as f:
            f.write(settings("primary"))
        with open(f"{d}/settings-standby", "w") as f:
            f.write(settings("standby"))
        self.script(f"{d}/ctl", PG_CTL.format(d=d, bin=self.pg_bin, primary=primary, standby=standby))
        # Plain DSNs say sslmode=disable: runbook verifies certificates whenever
        # it uses TLS, and the lab's CA is not in the system store (tests that
        # want TLS use ca_file).
        dsn = lambda user, pw, port, db: f"postgres://{user}:{pw}@127.0.0.1:{port}/{db}?sslmode=disable"
        self.info["postgres"] = {
            "bin": self.pg_bin,
            "socket_dir": d,
            "ca_file": f"{self.dir}/tls/ca.crt",
            "password": password,
            "app_password": app_password,
            "database": db,
            "role": role,
            "primary": {"port": primary, "pid": p1.pid, "data": f"{d}/primary",
                        "dsn": dsn("postgres", password, primary, db),
                        "app_dsn": dsn(role, app_password, primary, db)},
            "standby": {"port": standby, "pid": p2.pid, "data": f"{d}/standby",
                        "dsn": dsn("postgres", password, standby, db),
                        "app_dsn": dsn(role, app_password, standby, db)},
        }

    def write_info(self, ssh_port):
        d = self.dir
        self.info.update(flavor=self.a.flavor, dir=d, hosts=self.hosts, ssh_port=ssh_port, key=f"{d}/client_key", known_hosts=f"{d}/known_hosts", pid=os.getpid())
        fl = self.f
        lines = ["# The lab's hosts (written by tests/lab/lab.py).", "defaults:", f"  user: {fl['user']}", f"  port: {ssh_port}",
                 f'  key: "{d}/client_key"', f'  known_hosts: "{d}/known_hosts"', "hosts:" if self.hosts else "hosts: {}"]
        for h in self.hosts:
            lines.append(f"  {h['name']}:")
            lines.append(f'    address: "{h["address"]}"')
            if "app_port" in h:
                lines.append(f"    vars: {{ app_port: {h['app_port']} }}")
        names = lambda hs: "[" + ", ".join(h["name"] for h in hs) + "]"
        lines += ["groups:", f"  {fl['group']}: " + names(self.hosts)]
        if "haproxy" in self.info:
            # The blue-green halves, as HAProxy's backends `blue` and `green` have them.
            for colour in ("blue", "green"):
                lines.append(f"  {colour}: [" + ", ".join(self.info["haproxy"][colour]) + "]")
        if "celery" in self.info:
            lines.append(f"  {fl['workers']}: [{self.info['celery']['host']}]")
        lines.append("")
        with open(f"{d}/inventory.yaml", "w") as f:
            f.write("\n".join(lines))
        self.info["inventory"] = f"{d}/inventory.yaml"
        self.info["inputs"] = self.playbook_inputs()
        with open(f"{d}/lab.json", "w") as f:
            json.dump(self.info, f, indent=2)

    def playbook_inputs(self):
        """The values of the library playbooks' inputs that point them at this
        lab: its HAProxy, its app port, and the hosts' scripts where production
        uses systemctl, git, manage.py and celery."""
        fl = self.f
        root = fl["root"]
        bin = f"{root}/bin"
        app, celery, manage = f"{bin}/{fl['app']}", f"{bin}/{fl['celery']}", f"{bin}/{fl['manage']}"
        out = {
            "deploy_cmd": f'{bin}/{fl["deploy"]} "$RELEASE"',
            "rollback_cmd": f'{bin}/{fl["deploy"]} "$(cat {root}/PREVIOUS)"',
            "restart_cmd": f"{app} restart",
            "start_app_cmd": f"{app} start",
            "stop_app_cmd": f"{app} stop",
            "start_worker_cmd": f"{celery} start-worker",
            "start_beat_cmd": f"{celery} start-beat",
            "stop_beat_cmd": f"{celery} stop-beat",
            "stop_workers_cmd": f"{celery} stop-workers 60",
            "worker_check_cmd": f"{celery} ping",
            "worker_inspect_cmd": f"{celery} inspect",
            "db_check_cmd": f"{manage} check-db",
            "cache_check_cmd": f"{manage} check-redis",
            "clear_cache_cmd": f"{manage} clear-cache",
            "kill_app_cmd": f"{app} kill",
            "kill_workers_cmd": f"{celery} kill",
            "migrate_check_cmd": f"{manage} migrate --check",
            "migrate_cmd": f"{manage} migrate",
            "collectstatic_cmd": f"{manage} collectstatic",
            "showmigrations_cmd": f"{manage} showmigrations",
            "migrate_to_cmd": f'{manage} migrate "$APP" "$MIGRATION"',
            "log_file": f"{root}/run/app.log",
            "repoint_cmd": f'f={root}/config/env; {{ grep -v "^DATABASE_URL=" "$f"; echo "DATABASE_URL=$DATABASE_URL"; }} > "$f.new" && mv "$f.new" "$f"',
            # Names the flavour chooses (the library's defaults are the default flavour's).
            "group": fl["group"],
            "worker_group": fl["workers"],
            "version_path": fl["version_path"],
            "version_field": fl["version_field"],
            "app_scheme": "https" if fl["tls"] else "http",
            "ca_file": self.app_ca if fl["tls"] and self.hosts else "",
        }
        if self.hosts and "app_port" in self.hosts[0]:
            out["app_port"] = self.hosts[0]["app_port"]
        if "haproxy" in self.info:
            out["lb_socket"] = self.info["haproxy"]["socket"]
            out["bluegreen_map"] = self.info["haproxy"]["map"]
            out["bluegreen_key"] = self.info["haproxy"]["map_key"]
            out["ramp_backend"] = self.info["haproxy"]["ramp"]
            out["backend"] = self.info["haproxy"]["backend"]
            out["bluegreen_url"] = f"http://127.0.0.1:{self.info['haproxy']['bluegreen_port']}"
            out["lb_url"] = f"http://127.0.0.1:{self.info['haproxy']['port']}"
        if "prometheus" in self.info:
            out["prometheus_url"] = self.info["prometheus"]["url"]
            out["prometheus_http_config"] = self.info["prometheus"]["http_config"]
        if "redis" in self.info:
            out["redis_url"] = self.info["redis"]["url"]
        if "postgres" in self.info:
            db = out["database"] = self.info["postgres"]["database"]
            # Off the host: a folder of the lab's (S3 in production).
            out["backup_dir"] = f"{self.dir}/backups"
            off = f"{self.dir}/offsite"
            os.makedirs(off, exist_ok=True)
            out["copy_cmd"] = f'cp "$FILE" {off}/'
            out["verify_cmd"] = f'sha256sum {off}/"$(basename "$FILE")" | cut -d" " -f1'
            out["fetch_cmd"] = (f'f=$(ls -1 {off} | grep -E "^{db}-.*[.]dump$" | sort | tail -n 1) && '
                                f'cp {off}/"$f" {off}/"$f.counts.json" "$DEST"/')
            out["owner"] = self.info["postgres"]["role"]
            ctl = f"{self.dir}/pg/ctl"
            out["fail_primary_cmd"] = f"{ctl} stop primary"
            out["start_primary_cmd"] = f"{ctl} start primary"
            out["rebuild_primary_cmd"] = f"{ctl} rebuild primary standby"
            out["rebuild_standby_cmd"] = f"{ctl} rebuild standby primary"
            # The lab's DNS: a zone file of `NAME TARGET` lines (Route 53 in production).
            zone = f"{self.dir}/dns.zone"
            out["dns_cmd"] = (f'{{ awk -v n="$NAME" \'$1 != n\' {zone} 2>/dev/null; echo "$NAME $TARGET"; }} > {zone}.new '
                              f'&& mv {zone}.new {zone}')
            out["resolve_cmd"] = f'awk -v n="$NAME" \'$1 == n {{print $2}}\' {zone}'
            out["stop_db_cmd"] = f"{ctl} stop primary"
            out["start_db_cmd"] = f"{ctl} start primary"
            out["restore_cmd"] = f'{ctl} pitr primary "$TARGET_TIME"'

        return out

    def down(self):
        # Database nodes that `ctl` started are not the lab's children: stop
        # every node that has a postmaster (immediate shutdown).
        for node in ("primary", "standby"):
            try:
                pid = int(open(f"{self.dir}/pg/{node}/postmaster.pid").readline().strip())
                os.kill(pid, signal.SIGQUIT)
            except (OSError, ValueError):
                pass
        # What the hosts' scripts started (apps, Celery), by their pidfiles; a
        # Celery worker's pool processes go with it (SIGKILL to its group).
        for h in self.hosts:
            run = f"{h['dir']}/app/run"
            for pidfile in (f"{run}/app.pid", f"{run}/celery/beat.pid", f"{run}/celery/worker.pid"):
                try:
                    pid = int(open(pidfile).read().strip())
                    os.killpg(pid, signal.SIGKILL)
                except (OSError, ValueError):
                    pass
        for what, p in reversed(self.procs):
            if p.poll() is None:
                p.terminate()
        end = time.time() + 3
        for what, p in reversed(self.procs):
            try:
                p.wait(timeout=max(0.05, end - time.time()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up", help="bring the lab up and keep it up until stopped")
    up.add_argument("--dir", required=True, help="folder for keys, configs, logs, inventory.yaml and lab.json")
    up.add_argument("--hosts", type=int, default=3)
    up.add_argument("--release", default="v1", help="the release each host starts with")
    up.add_argument("--block", type=int, default=None, help="third octet of the hosts' addresses (random by default)")
    up.add_argument("--bare", action="store_true", help="sshd only, for benchmarks")
    up.add_argument("--per-sshd", type=int, default=16, help="addresses per sshd with --bare")
    up.add_argument("--no-haproxy", action="store_true")
    up.add_argument("--postgres", action="store_true", help="a PostgreSQL primary and streaming standby")
    up.add_argument("--stack", action="store_true",
                    help="the whole service: --postgres, Redis, each host configured for both, Celery on web1")
    up.add_argument("--flavor", choices=sorted(FLAVOURS), default="default",
                    help="which world: `alt` differs from the default wherever a real deployment could (see FLAVOURS)")
    up.add_argument("--prometheus", action="store_true",
                    help="a Prometheus scraping HAProxy's built-in exporter every second (apt-get install prometheus)")
    up.add_argument("--watch-stdin", action="store_true", help="stop when standard input closes (for test harnesses)")
    a = ap.parse_args()
    a.postgres = a.postgres or a.stack
    lab = Lab(a)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        lab.up()
        print(json.dumps(lab.info), flush=True)
        if sys.stderr.isatty():
            print(f"lab up: {len(lab.hosts)} hosts; inventory {lab.info['inventory']}; Ctrl-C stops it", file=sys.stderr)
        if a.watch_stdin:
            threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
        while not stop.wait(0.5):
            pass
    finally:
        lab.down()


if __name__ == "__main__":
    main()
