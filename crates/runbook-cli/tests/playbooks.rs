//! The playbook library in `playbooks/`: every playbook validates, the plan of
//! each is a snapshot (against a production-shaped inventory, with the
//! production defaults), and `hello-service` runs here for real (the others run
//! against the lab in deploys.rs, operations.rs, dr.rs and incidents.rs).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;
use support::{Run, workspace};

#[test]
fn the_library_validates() {
    let out = Run::new().cwd(workspace()).args(["validate"]).run().exit(0);
    assert!(out.stdout.contains("0 invalid"), "{}", out.stdout);
}

#[test]
fn hello_service_runs_for_real() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let work = tempfile::Builder::new()
        .prefix("rb-hello")
        .tempdir_in("/tmp")
        .expect("tempdir");
    let run = Run::new();
    let state = run.path().join("state.db");
    let out = Run::new()
        .cwd(workspace())
        .env("RUNBOOK_STATE", &state.display().to_string())
        .args([
            "run",
            "hello-service",
            "--set",
            &format!("port={port}"),
            "--set",
            &format!("workdir={}", work.path().display()),
            "--set",
            "releases=[a1, a2]",
        ])
        .run();
    let out = out
        .exit(0)
        .stdout_has("deploy[a1].gate │ serving a1")
        .stdout_has("deploy[a2].gate │ serving a2");
    assert!(out.stdout.contains("OK: the service is healthy"), "{}", out.stdout);
    // The service is stopped by `finally`: nothing listens on the port any more.
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "the service is still running"
    );
    assert_eq!(
        std::fs::read_to_string(work.path().join("version"))
            .expect("version")
            .trim(),
        "a2"
    );
}

/// Every playbook of the library, with the inputs it requires.
const LIBRARY: &[(&str, &[&str])] = &[
    ("app-rollback", &["to=v41"]),
    ("backup", &[]),
    ("blue-green", &["release=v42"]),
    ("cache-clear", &[]),
    ("db-connections-exhausted", &[]),
    ("db-rollback", &["migration=0005"]),
    ("deploy-host", &["host=web1", "release=v42"]),
    ("dr-drill", &[]),
    ("dr-failover", &[]),
    ("emergency-shutdown", &[]),
    (
        "full-restore",
        &[
            "file=/var/backups/django-finance/finance-20261126T020000Z.dump",
            "release=v41",
        ],
    ),
    ("graceful-shutdown", &[]),
    ("health-check", &[]),
    ("hello-service", &[]),
    ("high-error-rate", &[]),
    ("high-latency", &[]),
    ("pitr", &["target_time=2026-11-28 07:15:00+00"]),
    ("preflight", &[]),
    (
        "region-failover",
        &[
            "dr_lb_url=https://dr-lb.example.com",
            "dns_name=finance.example.com",
            "dns_target=dr-lb.example.com",
            "dns_cmd=./move-dns",
        ],
    ),
    ("restore-test", &[]),
    ("rolling-deploy", &["release=v42"]),
    ("startup", &[]),
    ("verify-startup", &[]),
];

#[test]
fn every_playbook_is_in_the_snapshot_list() {
    let mut on_disk: Vec<String> = std::fs::read_dir(workspace().join("playbooks"))
        .expect("playbooks/")
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    on_disk.sort();
    let listed: Vec<&str> = LIBRARY.iter().map(|(n, _)| *n).collect();
    assert_eq!(on_disk, listed, "add new playbooks to LIBRARY");
}

#[test]
fn the_plan_of_every_playbook() {
    for (name, sets) in LIBRARY {
        let mut args = vec![
            "--inventory".to_owned(),
            "tests/fixtures/production-inventory.yaml".to_owned(),
            "plan".to_owned(),
            (*name).to_owned(),
        ];
        for s in *sets {
            args.push("--set".to_owned());
            args.push((*s).to_owned());
        }
        let out = Run::new().cwd(workspace()).args(args).run().exit(0);
        // A plan that could not render a step says so; none of the library's may.
        assert!(!out.stdout.contains("note: cannot render"), "{name}:\n{}", out.stdout);
        insta::assert_snapshot!(format!("plan-{name}"), out.stdout);
    }
}
