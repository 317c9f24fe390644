//! The playbook library in `playbooks/`: every playbook validates, and each
//! runs for real (here: `hello-service`, whose effect is a service that answered
//! and is gone afterwards).
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
