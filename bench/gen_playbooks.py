#!/usr/bin/env python3
"""Generates the benchmark inputs: a 10,000-step playbook and a library of 20.

    gen_playbooks.py OUT_DIR

OUT_DIR/big/big/v1.yaml      10,000 steps: 100 groups of 99 steps plus 100 chained
                             top-level steps; templates read inputs and earlier outputs,
                             some steps use needs/when/retry, one group fans out.
OUT_DIR/library/<name>/v1.yaml  20 playbooks of about 40 steps each.
"""
import os
import sys

out = sys.argv[1]

HEAD = """apiVersion: runbook/v1
name: {name}
version: 1
description: generated for the benchmark
inputs:
  release: {{ type: string, default: v42, pattern: '^v[0-9]+$' }}
  hosts: {{ type: list, default: [web1, web2, web3] }}
  batch: {{ type: integer, default: 1, min: 1 }}
  env: {{ type: enum, values: [staging, prod], default: staging }}
defaults: {{ timeout: 10m }}
steps:
"""


def big(groups, per_group):
    lines = [HEAD.format(name="big")]
    for g in range(groups):
        lines.append(f"  - id: top{g}\n    uses: shell\n    with: {{ run: \"echo {{{{inputs.release}}}} {g}\" }}\n")
        fan = g == 0
        lines.append(f"  - id: g{g}\n")
        if fan:
            lines.append("    for_each: \"{{inputs.hosts}}\"\n    as: host\n    concurrency: \"{{inputs.batch}}\"\n")
        lines.append("    steps:\n")
        for s in range(per_group):
            sid = f"g{g}s{s}"
            extra = ""
            if s % 10 == 3:
                extra += f"        retry: {{ attempts: 3, delay: 1s }}\n"
            if s % 10 == 7:
                extra += "        when: '{{eq inputs.env \"prod\"}}'\n"
            ref = f" {{{{steps.g{g}s{s-1}.outputs.stdout}}}}" if s > 0 else f" {{{{steps.top{g}.outputs.exit_code}}}}"
            who = " {{host}}" if fan else ""
            lines.append(f"      - id: {sid}\n        uses: shell\n{extra}        with: {{ run: \"step {sid}{who}{ref}\" }}\n")
    return "".join(lines)


def small(name, n):
    lines = [HEAD.format(name=name)]
    for s in range(n):
        needs = "        needs: []\n" if s % 8 == 0 else ""
        lines.append(f"  - id: s{s}\n    uses: shell\n{needs.replace('        ', '    ')}    with: {{ run: \"echo {{{{inputs.release}}}} {s}\" }}\n")
    lines.append("  - id: roll\n    for_each: \"{{inputs.hosts}}\"\n    as: host\n    steps:\n")
    for s in range(6):
        lines.append(f"      - {{ id: r{s}, uses: shell, with: {{ run: \"deploy {{{{host}}}} {{{{inputs.release}}}}\" }} }}\n")
    return "".join(lines)


os.makedirs(f"{out}/big/big", exist_ok=True)
with open(f"{out}/big/big/v1.yaml", "w") as f:
    f.write(big(100, 99))
for i in range(20):
    name = f"pb{i:02d}"
    os.makedirs(f"{out}/library/{name}", exist_ok=True)
    with open(f"{out}/library/{name}/v1.yaml", "w") as f:
        f.write(small(name, 34))
