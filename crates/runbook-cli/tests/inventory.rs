//! The inventory: listed, checked with located errors, expanded by `plan`, and
//! read by runs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;
use support::Run;

const INVENTORY: &str = "defaults: { user: deploy, port: 2222 }\nhosts:\n  web1: { address: 127.0.1.1, vars: { role: web } }\n  web2: { address: 127.0.1.2 }\n  db1: { address: 127.0.2.1, user: postgres, jump: web1 }\ngroups:\n  web: [web1, web2]\n";

const PLAYBOOK: &str = "apiVersion: runbook/v1\nname: t\nversion: 1\nsteps:\n  - id: roll\n    for_each: \"{{inventory.groups.web}}\"\n    as: host\n    steps:\n      - { id: show, uses: shell, with: { run: \"echo {{host}} at {{lookup (lookup inventory.hosts host) 'address'}} as {{inventory.hosts.web1.user}}\" } }\n";

#[test]
fn listed_with_defaults_and_groups() {
    Run::new()
        .file("inventory.yaml", INVENTORY)
        .args(["inventory"])
        .run()
        .exit(0)
        .stdout_has("web1  127.0.1.1")
        .stdout_has("deploy")
        .stdout_has("2222")
        .stdout_has("db1   127.0.2.1  postgres  2222  web1")
        .stdout_has("web: web1, web2");
}

#[test]
fn plan_expands_groups_and_run_reads_hosts() {
    let run = Run::new().file("inventory.yaml", INVENTORY).playbook("t", PLAYBOOK);
    run.exec(["plan", "t"])
        .exit(0)
        .stdout_has("for each host in [web1, web2]")
        .stdout_has("env: {RUNBOOK_HOST: web2, RUNBOOK_V2: 127.0.1.2, RUNBOOK_INVENTORY_HOSTS_WEB1_USER: deploy}");
    run.exec(["run", "t"])
        .exit(0)
        .stdout_has("roll[web1].show │ web1 at 127.0.1.1 as deploy");
}

#[test]
fn mistakes_are_located_and_nothing_runs() {
    let bad = INVENTORY.replace("web: [web1, web2]", "web: [web1, wbe2]");
    let run = Run::new().file("inv.yaml", &bad).playbook("t", PLAYBOOK);
    run.exec(["--inventory", "inv.yaml", "run", "t"])
        .exit(2)
        .stderr_has("group `web` names an unknown host `wbe2`")
        .stderr_has("╭─[inv.yaml:7:15]")
        .stderr_has("did you mean `web2`?")
        .stderr_has("nothing was run");
    run.exec(["--inventory", "nope.yaml", "plan", "t"])
        .exit(2)
        .stderr_has("cannot read inventory `nope.yaml`");
}

/// An operator's Ansible inventory works as it is (INI here: groups, ranges,
/// group vars, `ansible_host`), and `--limit` narrows a run to some hosts.
#[test]
fn an_ansible_inventory_and_limit() {
    let ini = "[web]\nweb[1:3] ansible_host=127.0.0.1 ansible_user=deploy\n\n[web:vars]\nrole=front\n\n[prod:children]\nweb\n";
    let yaml = "apiVersion: runbook/v1\nname: t\nversion: 1\nsteps:\n  - id: each\n    for_each: \"{{inventory.groups.prod}}\"\n    uses: shell\n    with: { run: \"echo {{item}} {{lookup (lookup inventory.hosts item) 'address'}} {{lookup (lookup (lookup inventory.hosts item) 'vars') 'role'}}\" }\n";
    let run = Run::new().file("hosts.ini", ini).playbook("t", yaml);
    let inv = run.path().join("hosts.ini");
    let inv = inv.to_str().unwrap();
    run.exec(["--inventory", inv, "inventory"])
        .exit(0)
        .stdout_has("web2")
        .stdout_has("deploy");
    let out = run
        .exec([
            "--inventory",
            inv,
            "run",
            "t",
            "--limit",
            "prod:!web2",
            "--output",
            "json",
        ])
        .exit(0);
    let mut said: Vec<String> = out
        .stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["event"] == "step_succeeded" && e["step"].as_str().is_some_and(|s| s.starts_with("each[")))
        .map(|e| e["outputs"]["stdout"].as_str().unwrap_or_default().to_owned())
        .collect();
    // The items run at once: in whatever order they finish.
    said.sort();
    assert_eq!(said, ["web1 127.0.0.1 front", "web3 127.0.0.1 front"], "{}", out.stdout);
    run.exec(["--inventory", inv, "plan", "t", "--limit", "dbs"])
        .exit(2)
        .stderr_has("no host or group `dbs`");
}
