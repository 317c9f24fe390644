//! The incident playbooks of the library against the lab's whole service: they
//! find what is wrong (errors in logs, a slow query, idle connections) and
//! change nothing unless told to.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;
use support::{Lab, Run};

fn with_redis(lab: &Lab) -> Run {
    lab.runbook()
        .env("REDIS_URL", lab.info["redis"]["url"].as_str().unwrap())
}

#[test]
fn high_error_rate_shows_the_errors_the_rate_the_connections_and_redis() {
    let lab = Lab::stack(2);
    // web2 answered three requests with a 500.
    for _ in 0..3 {
        lab.get(1, "/status/500");
    }
    let run = with_redis(&lab);
    let out = lab
        .play(&run, "high-error-rate", &["log_file", "lb_url"], &["samples=20"])
        .exit(0);
    out.stdout_has("logs[web2].errors │ 3 ERROR lines in the last 1000 lines")
        .stdout_has("logs[web1].errors │ 0 ERROR lines")
        .stdout_has("ERROR GET /status/500 -> 500")
        .stdout_has("20 requests")
        .stdout_has("PONG")
        .stdout_has("used_memory_human:");
}

#[test]
fn high_latency_finds_the_slow_query_and_the_celery_queue() {
    let lab = Lab::stack(1);
    // A slow query holds the database.
    let pg = &lab.info["postgres"];
    let mut slow = std::process::Command::new(format!("{}/psql", pg["bin"].as_str().unwrap()))
        .args([
            "-X",
            "-q",
            "-d",
            pg["primary"]["app_dsn"].as_str().unwrap(),
            "-c",
            "SELECT pg_sleep(30)",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(800));
    let run = with_redis(&lab);
    // worker_inspect_cmd is the library's default (`cd /app && celery -A config
    // inspect ...`), on the real celery of the lab's host.
    let out = lab.play(&run, "high-latency", &["lb_url"], &["samples=10"]);
    let _ = slow.kill();
    let _ = slow.wait();
    out.exit(0)
        .stdout_has("SELECT pg_sleep(30)")
        .stdout_has("tasks waiting in the celery queue")
        .stdout_has("p95")
        .stdout_has("worker@web1")
        .stdout_has("load[web1].top │");
}

#[test]
fn db_connections_exhausted_lists_idle_sessions_and_ends_them_only_after_an_approval() {
    let lab = Lab::postgres();
    let pg = &lab.info["postgres"];
    let idle: Vec<std::process::Child> = (0..2)
        .map(|_| {
            let mut c = std::process::Command::new(format!("{}/psql", pg["bin"].as_str().unwrap()))
                .args(["-X", "-q", "-d", pg["primary"]["app_dsn"].as_str().unwrap()])
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap();
            use std::io::Write;
            writeln!(c.stdin.as_mut().unwrap(), "SELECT 1;").unwrap();
            c
        })
        .collect();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let idle_app = || {
        lab.psql(
            "primary",
            "SELECT count(*) FROM pg_stat_activity WHERE usename = 'app' AND state = 'idle'",
        )
    };
    assert_eq!(idle_app(), "2");
    let run = lab.runbook();
    let set = ["older_than=1s", "user=app"];
    let out = lab.play(&run, "db-connections-exhausted", &[], &set).exit(0);
    let out = out.stdout_has("would terminate pid").stdout_has("skipped");
    assert_eq!(out.stdout.matches("would terminate pid").count(), 2, "{}", out.stdout);
    assert_eq!(idle_app(), "2", "listed, not ended");
    let id = lab
        .play(
            &run,
            "db-connections-exhausted",
            &[],
            &["older_than=1s", "user=app", "terminate=true"],
        )
        .exit(3)
        .stdout_has("waits for an approval: end the sessions idle for longer than 1s")
        .run_id();
    assert_eq!(idle_app(), "2", "nothing ended before the approval");
    run.exec(["approve", &id, "--as", "dba"])
        .exit(0)
        .stdout_has("terminated pid");
    assert_eq!(idle_app(), "0");
    for mut c in idle {
        let _ = c.kill();
        let _ = c.wait();
    }
}
