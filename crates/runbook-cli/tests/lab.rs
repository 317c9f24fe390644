//! Playbooks against the multi-host lab (`tests/lab/lab.py`): hosts with their
//! own /srv/app, a deploy over ssh checked through each host's app and through
//! HAProxy, a bastion from the inventory, and keys from an agent.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;
use support::{Lab, Run};

const DEPLOY: &str = r#"apiVersion: runbook/v1
name: deploy
version: 1
inputs:
  release: { type: string }
steps:
  - id: hosts
    for_each: "{{inventory.groups.web}}"
    as: host
    concurrency: 3
    steps:
      - id: own-folder
        uses: ssh
        with:
          host: "{{host}}"
          run: 'test "$(cat /srv/app/NAME)" = {{host}} && ls /srv/app/releases'
      - id: deploy
        uses: ssh
        needs: [own-folder]
        with: { host: "{{host}}", run: "/srv/app/bin/deploy {{inputs.release}}" }
      - id: serves
        uses: http-check
        needs: [deploy]
        with:
          url: "http://{{lookup (lookup inventory.hosts host) 'address'}}:{{lookup (lookup (lookup inventory.hosts host) 'vars') 'app_port'}}/version/"
          expect: { json: { version: "{{inputs.release}}", host: "{{host}}" } }
"#;

#[test]
fn a_deploy_reaches_every_host_and_only_its_own_folder() {
    let lab = Lab::start(3);
    let run = Run::new()
        .file("inventory.yaml", &lab.inventory())
        .playbook("deploy", DEPLOY);
    run.exec(["run", "deploy", "--set", "release=v2"]).exit(0);
    for i in 0..3 {
        let name = format!("web{}", i + 1);
        let body = lab.get(i, "/version/");
        assert!(body.contains("\"v2\"") && body.contains(&name), "{name}: {body}");
        // Only that host's folder changed: the other hosts' releases are their own.
        let releases = std::fs::read_dir(format!("{}/app/releases", lab.host(i)["dir"].as_str().unwrap()))
            .unwrap()
            .count();
        assert_eq!(releases, 2, "{name} has v1 and v2");
        assert_eq!(lab.logins(i), 1, "{name}: one login for two ssh steps");
    }
    // HAProxy spreads requests over the hosts, all on the new release.
    let seen: std::collections::BTreeSet<String> = (0..6)
        .map(|_| {
            let body = lab.get_via_lb("/version/");
            assert!(body.contains("\"v2\""), "{body}");
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            v["host"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(seen.len(), 3, "round robin over the 3 hosts: {seen:?}");
}

#[test]
fn a_host_one_deploys_to_does_not_change_the_others() {
    let lab = Lab::start(2);
    let yaml = "apiVersion: runbook/v1\nname: one\nversion: 1\nsteps:\n  - { id: d, uses: ssh, with: { host: web2, run: \"/srv/app/bin/deploy v9\" } }\n";
    Run::new()
        .file("inventory.yaml", &lab.inventory())
        .playbook("one", yaml)
        .exec(["run", "one"])
        .exit(0)
        .stdout_has("deployed v9 on web2");
    assert!(lab.get(1, "/version/").contains("\"v9\""));
    assert!(lab.get(0, "/version/").contains("\"v1\""), "web1 untouched");
}

#[test]
fn a_bastion_from_the_inventory_carries_the_connection() {
    let lab = Lab::start(2);
    // web2 is reached through web1; web1's own key and known_hosts come from
    // the inventory (ssh -J alone would not pass them on).
    let inv = lab.inventory().replace(
        &format!(
            "  web2:\n    address: \"{}\"\n",
            lab.host(1)["address"].as_str().unwrap()
        ),
        &format!(
            "  web2:\n    address: \"{}\"\n    jump: web1\n",
            lab.host(1)["address"].as_str().unwrap()
        ),
    );
    assert!(inv.contains("jump: web1"), "{inv}");
    let yaml = "apiVersion: runbook/v1\nname: j\nversion: 1\nsteps:\n  - { id: d, uses: ssh, with: { host: web2, run: \"cat /srv/app/NAME\" } }\n";
    Run::new()
        .file("inventory.yaml", &inv)
        .playbook("j", yaml)
        .exec(["run", "j"])
        .exit(0)
        .stdout_has("d │ web2");
    // No step targets web1, yet it authenticated us: the connection went through it.
    assert_eq!(lab.logins(0), 1, "the bastion saw one login");
    assert_eq!(lab.logins(1), 1);
}

#[test]
fn keys_from_the_agent_are_used() {
    let lab = Lab::start(1);
    // An inventory without `key:`: the only way in is the agent.
    let inv: String = lab
        .inventory()
        .lines()
        .filter(|l| !l.contains("key:"))
        .map(|l| format!("{l}\n"))
        .collect();
    let yaml = "apiVersion: runbook/v1\nname: a\nversion: 1\nsteps:\n  - { id: d, uses: ssh, with: { host: web1, run: \"echo via agent\" } }\n";
    let run = Run::new()
        .file("inventory.yaml", &inv)
        .playbook("a", yaml)
        .env("SSH_AUTH_SOCK", "/nonexistent/agent.sock");
    // Without an agent holding the lab's key, authentication is refused.
    run.exec(["run", "a"]).exit(1).stdout_has("authentication refused");
    let sock = run.path().join("agent.sock");
    let mut agent = std::process::Command::new("ssh-agent")
        .args(["-D", "-a"])
        .arg(&sock)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("ssh-agent (openssh-client)");
    for _ in 0..100 {
        if sock.exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let added = std::process::Command::new("ssh-add")
        .arg(lab.dir.path().join("client_key"))
        .env("SSH_AUTH_SOCK", &sock)
        .output()
        .expect("ssh-add");
    let out = run.env("SSH_AUTH_SOCK", sock.to_str().unwrap()).exec(["run", "a"]);
    let _ = agent.kill();
    let _ = agent.wait();
    assert!(added.status.success(), "{}", String::from_utf8_lossy(&added.stderr));
    out.exit(0).stdout_has("d │ via agent");
}
