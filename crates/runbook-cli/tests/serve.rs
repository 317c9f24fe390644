//! `runbook serve` as an operator runs it: runs started over HTTP execute in
//! the server, `runbook cancel RUN` at a terminal (which signals the process
//! executing the run: the server) stops that run and nothing else, and a
//! SIGTERM stops the server, leaving its running runs interrupted and
//! resumable.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;
use std::io::{Read, Write};
use std::time::Duration;
use support::{Killed, Lab, Run, exits_within, free_port, until};

const SLOW: &str =
    "apiVersion: runbook/v1\nname: slow\nversion: 1\nsteps:\n  - { id: work, uses: sleep, with: { duration: 60s } }\n";

/// One HTTP/1.1 request on loopback; the status and the JSON body, or
/// `None` while nothing listens.
fn http(port: u16, method: &str, path: &str, body: &str) -> Option<(u16, serde_json::Value)> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(20))).ok()?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let json = serde_json::from_str(text.split_once("\r\n\r\n")?.1).unwrap_or_default();
    Some((status, json))
}

fn status_of(port: u16, run: &str) -> String {
    http(port, "GET", &format!("/api/v1/runs/{run}"), "")
        .and_then(|(_, s)| s["run"]["status"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

#[test]
fn a_terminal_cancel_stops_one_server_run_and_a_sigterm_leaves_the_rest_resumable() {
    let port = free_port();
    let run = Run::new().playbook("slow", SLOW);
    let log = run.path().join("serve.log");
    let mut server = Killed(run.spawn_logged(["serve", "--listen", &format!("127.0.0.1:{port}")], &log));
    let shown = || std::fs::read_to_string(&log).unwrap_or_default();
    until("the API answers", Duration::from_secs(30), || {
        http(port, "GET", "/api/v1/health", "").is_some()
    });
    let start = || {
        let (code, body) = http(port, "POST", "/api/v1/runs", r#"{"playbook":"slow"}"#).unwrap();
        assert_eq!(code, 201, "{body}");
        body["run"].as_str().unwrap().to_owned()
    };
    let (a, b) = (start(), start());
    until("both running", Duration::from_secs(30), || {
        status_of(port, &a) == "running" && status_of(port, &b) == "running"
    });

    // `runbook cancel` signals the server, which stops that run only.
    run.exec(["cancel", &a]).exit(0).stdout_has("cancel requested");
    until("a cancelled", Duration::from_secs(30), || {
        status_of(port, &a) == "cancelled"
    });
    assert_eq!(status_of(port, &b), "running", "{}", shown());
    assert!(http(port, "GET", "/api/v1/health", "").is_some(), "the server goes on");

    // A SIGTERM with no cancel behind it stops the server; its run stays
    // resumable.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(server.0.id()).unwrap()),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let stopped = exits_within("the server after SIGTERM", &mut server.0, Duration::from_secs(60));
    assert!(stopped.success(), "{}", shown());
    run.exec(["status", &b]).exit(0).stdout_has("interrupted");
    assert!(shown().contains("serve: stopping"), "{}", shown());
}

/// Tokens at the command line: the secret printed once (stdout, for a
/// secret store), refused names and roles, a list without secrets,
/// revocation; and a server that would listen beyond loopback with nobody
/// authenticated is refused before it listens.
#[test]
fn tokens_are_made_listed_and_revoked_and_an_open_server_is_refused() {
    let run = Run::new();
    let made = run
        .exec(["token", "create", "ci-deploy", "--role", "operator", "--expires", "30d"])
        .exit(0);
    let secret = made.stdout.trim().to_owned();
    assert!(secret.starts_with("rbk_") && !secret.contains('\n'), "{secret}");
    made.stderr_has("shown once");
    run.exec(["token", "create", "ci-deploy", "--role", "viewer"])
        .exit(2)
        .stderr_has("exists and is live");
    run.exec(["token", "create", "x", "--role", "root"])
        .exit(2)
        .stderr_has("unknown role `root`");
    let listed = run
        .exec(["token", "list"])
        .exit(0)
        .stdout_has("ci-deploy")
        .stdout_has("operator");
    assert!(!listed.stdout.contains(&secret), "the secret is never shown again");
    let json = run.exec(["token", "list", "--output", "json"]).exit(0);
    assert!(!json.stdout.contains(&secret) && json.stdout.contains("\"expires_at\""));
    run.exec(["token", "revoke", "ci-deploy"]).exit(0);
    run.exec(["token", "revoke", "ci-deploy"])
        .exit(2)
        .stderr_has("no live token");

    run.exec(["serve", "--listen", "0.0.0.0:8080"])
        .exit(2)
        .stderr_has("refusing to listen on 0.0.0.0:8080 without authentication")
        .stderr_has("--require-token");
    run.file("roles.yaml", "grants:\n  - { who: [alice], role: boss }\n")
        .exec(["serve", "--roles", "roles.yaml"])
        .exit(2)
        .stderr_has("roles.yaml");
}

/// `serve --submit` over PostgreSQL: the runs it starts go to the workers'
/// queue (a worker executes them, the server only records and answers), an
/// approval answered over HTTP puts the run back in the queue, and `yes`
/// cannot answer for a worker.
#[test]
fn a_server_over_postgres_hands_its_runs_to_the_workers() {
    let lab = Lab::postgres();
    let url = lab.state_db("runbook_serve_queue");
    let gated = "apiVersion: runbook/v1\nname: gated\nversion: 1\nsteps:\n  - { id: before, uses: shell, with: { run: \"echo before\" } }\n  - { id: ok, uses: approve, needs: [before], with: { message: \"go on?\" } }\n  - { id: after, uses: shell, needs: [ok], with: { run: \"echo after\" } }\n";
    let run = Run::new().env("RUNBOOK_STATE", &url).playbook("gated", gated);
    run.exec(["state", "migrate"]).exit(0);
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let log = run.path().join("serve.log");
    let _server = Killed(run.spawn_logged(["serve", "--submit", "--listen", &listen], &log));
    until("the API answers", Duration::from_secs(30), || {
        http(port, "GET", "/api/v1/health", "").is_some()
    });
    let (code, refused) = http(port, "POST", "/api/v1/runs", r#"{"playbook":"gated","yes":true}"#).unwrap();
    assert_eq!(code, 422, "{refused}");
    let (code, started) = http(port, "POST", "/api/v1/runs", r#"{"playbook":"gated"}"#).unwrap();
    assert_eq!(code, 201, "{started}");
    let id = started["run"].as_str().unwrap().to_owned();
    assert_eq!(status_of(port, &id), "queued", "nobody runs it until a worker takes it");

    let worker_log = run.path().join("worker.log");
    let worker = ["worker", "--name", "api-worker", "--poll", "200ms", "--lease-ttl", "3s"];
    let _worker = Killed(run.spawn_logged(worker, &worker_log));
    until("the worker reaches the approval", Duration::from_secs(60), || {
        status_of(port, &id) == "waiting"
    });
    // The journal says `waiting` a moment before the worker lets the run go;
    // meanwhile the server refuses the answer (409), and it is given again.
    let mut answer = (0, serde_json::Value::Null);
    let (_, view) = http(port, "GET", &format!("/api/v1/runs/{id}"), "").unwrap();
    let answered = serde_json::json!({ "plan_hash": view["plan_hash"] }).to_string();
    until("the approval is taken", Duration::from_secs(30), || {
        answer = http(port, "POST", &format!("/api/v1/runs/{id}/approve"), &answered).unwrap();
        answer.0 != 409
    });
    let (code, answered) = answer;
    assert!(code == 200 || code == 202, "{code} {answered}");
    until("the worker finishes it", Duration::from_secs(60), || {
        status_of(port, &id) == "succeeded"
    });
    let (_, status) = http(port, "GET", &format!("/api/v1/runs/{id}"), "").unwrap();
    let after = status["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["step"] == "after")
        .unwrap();
    assert_eq!(
        after["runner"], "api-worker",
        "a worker ran it, not the server: {status}"
    );
}
