//! The day-to-day playbooks of the library against the lab's whole service:
//! health-check, preflight, graceful-shutdown, startup and verify-startup.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;
use support::{Lab, workspace};

fn app_url(lab: &Lab, i: usize) -> String {
    let h = lab.host(i);
    format!("url=http://{}:{}", h["address"].as_str().unwrap(), h["app_port"])
}

#[test]
fn health_check_passes_on_a_ready_instance_and_fails_on_one_in_maintenance() {
    let lab = Lab::stack(1);
    let run = lab.runbook();
    lab.play(&run, "health-check", &[], &[&app_url(&lab, 0)])
        .exit(0)
        .stdout_has(r#"OK: healthy and ready; checks {"database":"ok","cache":"ok"}"#);
    // Through the load balancer too.
    lab.play(
        &run,
        "health-check",
        &[],
        &[&format!("url={}", lab.info["inputs"]["lb_url"].as_str().unwrap())],
    )
    .exit(0);
    lab.in_host(0, "touch /srv/app/MAINTENANCE");
    lab.play(&run, "health-check", &[], &[&app_url(&lab, 0)])
        .exit(1)
        .stdout_has("ready")
        .stdout_has("503");
}

const PREFLIGHT: &[&str] = &[
    "db_check_cmd",
    "cache_check_cmd",
    "migrate_check_cmd",
    "collectstatic_cmd",
];

#[test]
fn preflight_checks_database_cache_migrations_and_collects_static_files() {
    let lab = Lab::stack(2);
    // The release on the hosts has a static file to collect.
    for i in 0..2 {
        lab.in_host(
            i,
            "mkdir -p /srv/app/current/static && echo 'body{}' > /srv/app/current/static/app.css",
        );
    }
    let run = lab.runbook();
    lab.play(&run, "preflight", PREFLIGHT, &[])
        .exit(0)
        .stdout_has("database: ok")
        .stdout_has("redis: ok")
        .stdout_has("no unapplied migrations")
        .stdout_has("1 static files copied");
    assert_eq!(lab.host_file(1, "static/app.css").trim(), "body{}");
    // A release that needs a migration nobody applied fails the check, naming it.
    lab.in_host(1, "echo 0006_account_note > /srv/app/current/MIGRATION");
    lab.play(&run, "preflight", PREFLIGHT, &[])
        .exit(1)
        .stdout_has("unapplied migrations: 0006_account_note");
    // Redis down: the cache check fails on every host.
    let redis = lab.info["redis"]["pid"].to_string();
    std::process::Command::new("kill").arg(&redis).status().unwrap();
    lab.play(&run, "preflight", PREFLIGHT, &[])
        .exit(1)
        .stdout_has("redis: ConnectionRefusedError");
}

/// Sends a Celery task to the lab's broker: it sleeps `seconds`, then records `tag`.
fn celery_job(lab: &Lab, seconds: f64, tag: &str) {
    let lab_dir = workspace().join("tests/lab");
    let status = std::process::Command::new(lab_dir.join(".venv/bin/python"))
        .current_dir(&lab_dir)
        .env("REDIS_URL", lab.info["redis"]["url"].as_str().unwrap())
        .args(["-c", &format!("import tasks; tasks.work.delay({seconds}, '{tag}')")])
        .status()
        .expect("the lab's venv (scripts/setup makes it)");
    assert!(status.success());
}

fn celery_file(lab: &Lab, name: &str) -> String {
    let dir = lab.info["celery"]["dir"].as_str().unwrap();
    std::fs::read_to_string(format!("{dir}/{name}")).unwrap_or_default()
}

fn listening(lab: &Lab, i: usize) -> bool {
    let h = lab.host(i);
    std::net::TcpStream::connect((h["address"].as_str().unwrap(), h["app_port"].as_u64().unwrap() as u16)).is_ok()
}

const SHUTDOWN: &[&str] = &["lb_socket", "stop_beat_cmd", "stop_workers_cmd", "stop_app_cmd"];
const STARTUP: &[&str] = &[
    "lb_socket",
    "lb_url",
    "app_port",
    "start_app_cmd",
    "start_worker_cmd",
    "start_beat_cmd",
];
// worker_check_cmd is the library's default (`cd /app && celery -A config
// inspect ping`), on the real celery of the lab's host.
const VERIFY: &[&str] = &["app_port", "log_file"];

#[test]
fn graceful_shutdown_loses_no_work_and_startup_brings_everything_back() {
    let lab = Lab::stack(2);
    let run = lab.runbook();
    // Work in flight when the shutdown starts: a slow request through HAProxy
    // and a Celery job.
    let lb = lab.info["haproxy"]["port"].as_u64().unwrap() as u16;
    let slow = std::thread::spawn(move || support::http_get("127.0.0.1", lb, "/slow/1500"));
    celery_job(&lab, 3.0, "job-in-flight");
    std::thread::sleep(std::time::Duration::from_millis(300));
    lab.play(&run, "graceful-shutdown", SHUTDOWN, &[]).exit(0);
    assert!(
        slow.join().unwrap().contains("\"slow\""),
        "the request in flight was answered"
    );
    assert!(
        celery_file(&lab, "done").contains("job-in-flight"),
        "the running job finished before the worker stopped"
    );
    // Everything is stopped: beat no longer ticks, no app listens, HAProxy
    // sends nothing to the instances.
    let ticks = celery_file(&lab, "ticks").lines().count();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert_eq!(celery_file(&lab, "ticks").lines().count(), ticks, "beat is stopped");
    assert!(lab.in_host(0, "/srv/app/bin/celery status").contains("worker stopped"));
    for (i, host) in ["web1", "web2"].iter().enumerate() {
        assert!(!listening(&lab, i), "{host}'s app is stopped");
        assert_eq!(lab.server_state("app", host).0 & 8, 8, "{host} is drained");
    }

    // startup: apps first (each gated on its readiness), back in rotation, then Celery.
    lab.play(&run, "startup", STARTUP, &[]).exit(0);
    for (i, host) in ["web1", "web2"].iter().enumerate() {
        assert!(listening(&lab, i));
        assert_eq!(
            lab.server_state("app", host),
            (0, 2, lab.server_state("app", host).2),
            "{host} ready and UP"
        );
    }
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert!(celery_file(&lab, "ticks").lines().count() > ticks, "beat runs again");
    lab.play(&run, "verify-startup", VERIFY, &[])
        .exit(0)
        .stdout_has("no errors in the last 1000 lines")
        .stdout_has("pong");

    // An error in an instance's log fails verify-startup, showing the line.
    lab.in_host(
        1,
        "echo '2026-11-26 ERROR database connection lost' >> /srv/app/run/app.log",
    );
    lab.play(&run, "verify-startup", VERIFY, &[])
        .exit(1)
        .stdout_has("ERROR database connection lost");
}

#[test]
fn emergency_shutdown_waits_for_an_approval_then_stops_everything_at_once() {
    let lab = Lab::stack(2);
    let run = lab.runbook();
    let keys = &["lb_socket", "lb_url", "kill_app_cmd", "kill_workers_cmd"];
    // Without an answer, nothing is touched.
    let waiting = lab.play(&run, "emergency-shutdown", keys, &[]).exit(3);
    for (i, host) in ["web1", "web2"].iter().enumerate() {
        assert!(listening(&lab, i), "{host} still serves");
        assert_eq!(lab.server_state("app", host).0, 0, "{host} still in rotation");
    }
    run.exec(["approve", &waiting.run_id()]).exit(0);
    for (i, host) in ["web1", "web2"].iter().enumerate() {
        assert!(!listening(&lab, i), "{host}'s app is killed");
        assert_eq!(lab.server_state("app", host).0 & 1, 1, "{host} is in maintenance");
    }
    assert!(lab.in_host(0, "/srv/app/bin/celery status").contains("worker stopped"));
    assert!(lab.in_host(0, "/srv/app/bin/celery status").contains("beat stopped"));
    // Users are turned away at once, with a 503, not left to time out.
    let lb = lab.info["haproxy"]["port"].as_u64().unwrap() as u16;
    assert!(support::http_get("127.0.0.1", lb, "/health/").contains("503"));
    // startup brings it back.
    lab.play(&run, "startup", STARTUP, &[]).exit(0);
    assert!(lab.get_via_lb("/health/ready/").contains("\"ready\""));
}

#[test]
fn cache_clear_empties_the_cache_after_an_approval_and_users_are_served() {
    let lab = Lab::stack(2);
    let run = lab.runbook();
    let url = lab.info["redis"]["url"].as_str().unwrap().to_owned();
    let redis = |args: &[&str]| -> String {
        let out = std::process::Command::new("redis-cli")
            .arg("-u")
            .arg(&url)
            .args(args)
            .output()
            .expect("redis-cli (apt-get install redis-tools)");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    redis(&["SET", "views:home", "cached page"]);
    let keys = &["lb_url", "clear_cache_cmd", "cache_check_cmd"];
    let waiting = lab.play(&run, "cache-clear", keys, &[]).exit(3);
    assert_eq!(
        redis(&["GET", "views:home"]),
        "cached page",
        "nothing cleared without an answer"
    );
    run.exec(["cancel", &waiting.run_id()]).exit(0);
    lab.play(&run, "cache-clear", keys, &["--yes"])
        .exit(0)
        .stdout_has("cache: cleared");
    assert_eq!(redis(&["EXISTS", "views:home"]), "0", "the cache is empty");
    assert!(lab.get_via_lb("/health/ready/").contains("\"ready\""));
}
