#!/usr/bin/env bash
# Benchmark of the ssh kind (issue 4): HOSTS lab hosts on their own loopback
# addresses (bare lab: a few sshd processes, 16 addresses each), 5 commands on
# each, at most 20 hosts at once; the same work with ansible-playbook (forks 20,
# ControlPersist and pipelining on, facts off), alternately in one run.
#
#   sudo bench/ssh.sh            # HOSTS=100 RUNS=3 by default; writes bench/out/ssh/
#   sudo HOSTS=1000 RUNS=1 SHAPE=per-host bench/ssh.sh
#
# SHAPE=stages (default): 5 for_each steps, each over every host (as Ansible
# runs 5 tasks). SHAPE=per-host: one for_each over the hosts whose item is the
# 5 commands in a chain (a host's master is used for all 5, then makes room:
# runbook keeps at most 64 masters, RUNBOOK_SSH_MASTERS). Ansible runs the
# same 5 tasks either way.
#
# Both tools start cold every run: runbook opens its masters per run, and
# ansible gets a fresh ControlPath folder per run so no master survives from the
# previous one.
set -euo pipefail
cd "$(dirname "$0")/.."
HOSTS=${HOSTS:-100}
RUNS=${RUNS:-3}
VENV=${ANSIBLE_VENV:-$PWD/bench/out/venv}
cargo build -q --release -p runbook-cli
bin=$PWD/target/release/runbook
out=$PWD/bench/out/ssh
rm -rf "$out"; mkdir -p "$out/pb/fleet"
if [ ! -x "$VENV/bin/ansible-playbook" ]; then
  python3 -m venv "$VENV" && "$VENV/bin/pip" install -q ansible-core
fi

python3 tests/lab/lab.py up --bare --hosts "$HOSTS" --per-sshd 16 --dir "$out/lab" > "$out/lab.out" &
lab=$!
trap 'kill $lab 2>/dev/null; wait $lab 2>/dev/null' EXIT
for _ in $(seq 200); do [ -s "$out/lab.out" ] && break; sleep 0.1; done
[ -s "$out/lab.out" ] || { echo "the lab did not start" >&2; exit 1; }

SHAPE=${SHAPE:-stages}
{
  printf 'apiVersion: runbook/v1\nname: fleet\nversion: 1\nsteps:\n'
  if [ "$SHAPE" = per-host ]; then
    printf '  - id: hosts\n    for_each: "{{inventory.groups.web}}"\n    as: host\n    concurrency: 20\n    steps:\n'
    for i in 1 2 3 4 5; do
      needs=""; [ "$i" -gt 1 ] && needs=", needs: [r$((i - 1))]"
      printf '      - { id: r%d%s, uses: ssh, with: { host: "{{host}}", run: "echo step %d on $(hostname) > /dev/null; uptime" } }\n' "$i" "$needs" "$i"
    done
  else
    for i in 1 2 3 4 5; do
      printf '  - id: c%d\n' "$i"
      [ "$i" -gt 1 ] && printf '    needs: [c%d]\n' $((i - 1))
      printf '    for_each: "{{inventory.groups.web}}"\n    as: host\n    concurrency: 20\n'
      printf '    steps:\n      - { id: r%d, uses: ssh, with: { host: "{{host}}", run: "echo step %d on $(hostname) > /dev/null; uptime" } }\n' "$i" "$i"
    done
  fi
} > "$out/pb/fleet/v1.yaml"

python3 - "$out" <<'PY'
import json, sys
out = sys.argv[1]
lab = json.load(open(f"{out}/lab/lab.json"))
with open(f"{out}/hosts.ini", "w") as f:
    f.write("[web]\n")
    for h in lab["hosts"]:
        f.write(f"{h['name']} ansible_host={h['address']} ansible_port={h['ssh_port']}\n")
    f.write(f"\n[web:vars]\nansible_user=root\nansible_ssh_private_key_file={lab['key']}\n"
            f"ansible_ssh_common_args='-o UserKnownHostsFile={lab['known_hosts']} -o StrictHostKeyChecking=yes'\n"
            f"ansible_python_interpreter=/usr/bin/python3\n")
with open(f"{out}/fleet.yml", "w") as f:
    f.write("- hosts: web\n  gather_facts: false\n  tasks:\n")
    for i in range(1, 6):
        f.write(f"    - shell: echo step {i} on $(hostname) > /dev/null; uptime\n")
with open(f"{out}/ansible.cfg", "w") as f:
    f.write("[defaults]\nforks = 20\nhost_key_checking = True\n\n[ssh_connection]\npipelining = True\n"
            "ssh_args = -o ControlMaster=auto -o ControlPersist=60s\n")
PY

export RUNBOOK_PLAYBOOKS=$out/pb RUNBOOK_INVENTORY=$out/lab/inventory.yaml
export ANSIBLE_CONFIG=$out/ansible.cfg
ansible_cmd="d=\$(mktemp -d); ANSIBLE_SSH_CONTROL_PATH_DIR=\$d $VENV/bin/ansible-playbook -i $out/hosts.ini $out/fleet.yml > $out/ansible.log; rc=\$?; rm -rf \$d; exit \$rc"
# ANSIBLE=0: runbook alone (Ansible at 1,000 hosts takes about half an hour).
[ "${ANSIBLE:-1}" = 0 ] && ansible_cmd=""
python3 bench/ssh_bench.py "$out/lab/lab.json" "$RUNS" \
  "rm -f $out/state.db*; RUNBOOK_STATE=$out/state.db $bin run fleet --output json --no-progress > /dev/null" \
  -- $ansible_cmd \
  | tee "$out/results.md"
echo "sshd processes: $(python3 -c "import json;print(len({h['dir'] for h in json.load(open('$out/lab/lab.json'))['hosts']}))") for $HOSTS addresses"
