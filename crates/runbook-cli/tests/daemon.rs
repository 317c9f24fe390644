//! `runbook daemon`: cron schedules at seconds resolution fire playbooks, an
//! overlapping fire is skipped, a webhook hears about each run, the metrics
//! endpoint is scraped and parsed as Prometheus text, and a restart resumes the
//! run the previous daemon had to stop.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;
use std::io::{BufRead, Read, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::{Run, exits_within, free_port, until};

const QUICK: &str = "apiVersion: runbook/v1\nname: quick\nversion: 1\nsteps:\n  - { id: hello, uses: shell, with: { json: true, run: \"echo '{\\\"rto_seconds\\\": 2.5}'\" } }\n";
const SLOW: &str = "apiVersion: runbook/v1\nname: slow\nversion: 1\ninputs:\n  seconds: { type: duration, default: 3s }\nsteps:\n  - { id: work, uses: sleep, with: { duration: \"{{inputs.seconds}}\" } }\n  - { id: done, uses: shell, with: { run: \"echo done\" } }\n";

/// What a webhook received: the signature header, if any, and the body.
type Heard = Arc<Mutex<Vec<(Option<String>, serde_json::Value)>>>;

/// A webhook receiver on loopback: what was POSTed to it.
fn webhook() -> (String, Heard) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let got = Arc::new(Mutex::new(Vec::new()));
    let g = got.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut reader = std::io::BufReader::new(conn.try_clone().unwrap());
            let (mut length, mut signature) = (0, None);
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                let lower = line.to_ascii_lowercase();
                if let Some(v) = lower.strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
                if let Some(v) = lower.strip_prefix("x-runbook-signature:") {
                    signature = Some(v.trim().to_owned());
                }
            }
            let mut body = vec![0; length];
            let _ = reader.read_exact(&mut body);
            if let Ok(v) = serde_json::from_slice(&body) {
                g.lock().unwrap().push((signature, v));
            }
            let _ = conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
        }
    });
    (url, got)
}

/// The daemon's metrics, parsed as Prometheus text; `None` until it listens.
fn try_scrape(port: u16) -> Option<prometheus_parse::Scrape> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    write!(s, "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let body = text.split_once("\r\n\r\n")?.1;
    Some(prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_owned()))).expect("Prometheus text format"))
}

fn scrape(port: u16) -> prometheus_parse::Scrape {
    try_scrape(port).expect("the metrics endpoint answers")
}

fn value(scrape: &prometheus_parse::Scrape, name: &str, label: (&str, &str)) -> f64 {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name && s.labels.get(label.0) == Some(label.1))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => 0.0,
        })
        .sum()
}

fn sigterm(child: &std::process::Child) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
}

#[test]
fn schedules_fire_skip_overlaps_report_and_survive_a_restart() {
    let (hook, got) = webhook();
    let port = free_port();
    let run = Run::new()
        .playbook("quick", QUICK)
        .playbook("slow", SLOW)
        .playbook("steady", &SLOW.replace("name: slow", "name: steady"));
    let schedules = format!(
        "timezone: Europe/Paris\nschedules:\n  - {{ name: every-second, playbook: quick, cron: \"* * * * * *\", webhook: \"{hook}\" }}\n  - {{ name: slow-drill, playbook: slow, cron: \"* * * * * *\", overlap: skip, inputs: {{ seconds: 4s }} }}\n  - {{ name: queued, playbook: steady, cron: \"* * * * * *\", overlap: queue, inputs: {{ seconds: 1500ms }} }}\n"
    );
    let run = run.file("schedules.yaml", &schedules);
    let mut daemon = run.spawn([
        "daemon",
        "--schedules",
        "schedules.yaml",
        "--metrics",
        &format!("127.0.0.1:{port}"),
    ]);
    // It fires `quick` again and again, and skips `slow` while it runs.
    until("two runs of quick and a skipped slow", Duration::from_secs(90), || {
        let Some(s) = try_scrape(port) else { return false };
        value(&s, "runbook_runs_total", ("schedule", "every-second")) >= 2.0
            && value(&s, "runbook_schedule_skipped_total", ("schedule", "slow-drill")) >= 1.0
            && value(&s, "runbook_runs_total", ("schedule", "queued")) >= 2.0
    });
    let s = scrape(port);
    assert!(value(&s, "runbook_runs_total", ("status", "succeeded")) >= 2.0);
    assert!(value(&s, "runbook_step_duration_seconds_count", ("playbook", "quick")) >= 2.0);
    // Gauges of the whole state: present, and nothing waits or is queued here.
    for gauge in ["runbook_runs_waiting_for_approval", "runbook_runs_queued"] {
        assert!(s.samples.iter().any(|x| x.metric == gauge), "no {gauge}");
        assert_eq!(value(&s, gauge, ("", "")), 0.0);
    }
    assert_eq!(value(&s, "runbook_last_rto_seconds", ("playbook", "quick")), 2.5);
    // A `queue` schedule runs its fires one after the other; none is dropped.
    assert_eq!(value(&s, "runbook_schedule_skipped_total", ("schedule", "queued")), 0.0);
    // The webhook heard about each quick run, Slack-style.
    until("a webhook call", Duration::from_secs(10), || {
        !got.lock().unwrap().is_empty()
    });
    let first = got.lock().unwrap()[0].1.clone();
    assert_eq!(first["schedule"], "every-second");
    assert_eq!(first["status"], "succeeded");
    assert!(first["text"].as_str().unwrap().contains("quick"), "{first}");

    // Stop the daemon while `slow` runs: the run is left interrupted...
    until("slow running", Duration::from_secs(20), || {
        run.exec(["history", "slow"]).stdout.contains("running")
    });
    sigterm(&daemon);
    let status = exits_within("the daemon after SIGTERM", &mut daemon, Duration::from_secs(60));
    assert!(status.success(), "the daemon stops cleanly");
    let history = run.exec(["history", "slow"]).stdout;
    let stopped = history
        .lines()
        .find(|l| l.contains("interrupted"))
        .unwrap_or_else(|| panic!("no interrupted run: {history}"))
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();

    // ... and the next daemon resumes it to the end.
    let schedules =
        "schedules:\n  - { name: slow-drill, playbook: slow, cron: \"0 0 1 1 *\", inputs: { seconds: 4s } }\n";
    let run = run.file("schedules.yaml", schedules);
    let mut daemon = run.spawn(["daemon", "--schedules", "schedules.yaml"]);
    until("the interrupted run finished", Duration::from_secs(40), || {
        let h = run.exec(["history", "slow"]).stdout;
        !h.contains("interrupted") && !h.contains("running")
    });
    sigterm(&daemon);
    assert!(exits_within("the daemon after SIGTERM", &mut daemon, Duration::from_secs(60)).success());
    // The very run that was stopped finished: resumed, its last step done.
    let status = run.exec(["status", &stopped]).exit(0);
    let status = status.stdout_has("slow v1  succeeded").stdout_lacks("interrupted;");
    let work = status.stdout.lines().find(|l| l.starts_with("work ")).unwrap();
    assert!(
        work.split_whitespace().nth(2) == Some("2"),
        "the sleep ran again after the restart: {work}"
    );
    assert!(
        status
            .stdout
            .lines()
            .any(|l| l.starts_with("done ") && l.contains("succeeded"))
    );
}

#[test]
fn an_invalid_schedule_is_refused_before_anything_runs() {
    let run = Run::new().playbook("quick", QUICK).file(
        "schedules.yaml",
        "schedules:\n  - { name: a, playbook: quick, cron: \"61 * * * *\" }\n  - { name: b, playbook: nope, cron: \"* * * * *\" }\n  - { name: c, playbook: quick, cron: \"* * * * *\", timezone: Mars/Olympus }\n  - { name: d, playbook: quick, cron: \"* * * * *\", inputs: { x: 1 } }\n",
    );
    let out = run.exec(["daemon", "--schedules", "schedules.yaml"]).exit(2);
    out.stderr_has("schedule `a`: cron `61 * * * *`")
        .stderr_has("schedule `b`:")
        .stderr_has("schedule `c`: unknown time zone `Mars/Olympus`")
        .stderr_has("schedule `d`: input `x`")
        .stderr_has("the daemon did not start");
}

/// `runbook.toml`'s `[[notify]]`: a hook told about every run this runner
/// executes, though the playbook names none, signed under a key from the
/// runner's environment; the playbook's own hooks still hear theirs.
#[test]
fn the_configuration_files_hooks_hear_of_every_run() {
    let (all, heard) = webhook();
    let (failures, failed) = webhook();
    let config = format!(
        "[[notify]]\nwebhook = \"{all}\"\nsecret = \"HOOK_KEY\"\n\n[[notify]]\nwebhook = \"{failures}\"\non = [\"failed\"]\n"
    );
    let run = Run::new()
        .env("HOOK_KEY", "k3y")
        .file("runbook.toml", &config)
        .playbook("quick", QUICK);
    run.exec(["run", "quick"]).exit(0);
    let got = heard.lock().unwrap().clone();
    let events: Vec<&str> = got.iter().map(|(_, b)| b["event"].as_str().unwrap_or("")).collect();
    assert_eq!(events, ["started", "succeeded"], "{got:?}");
    for (signature, body) in &got {
        assert_eq!(body["playbook"], "quick");
        let key = hmac_sha256("k3y", body.to_string().as_bytes());
        assert_eq!(signature.as_deref(), Some(key.as_str()), "signed under HOOK_KEY");
    }
    assert!(
        failed.lock().unwrap().is_empty(),
        "a hook for failures hears nothing of a success"
    );
    // `runbook config` names them, and where they come from.
    run.exec(["config"])
        .exit(0)
        .stdout_has(&format!("notify     {all}, {failures}  (file "));
    // A broken file is refused before anything runs.
    run.file("runbook.toml", "[[notify]]\nwebhok = \"x\"\n")
        .exec(["run", "quick"])
        .exit(2)
        .stderr_has("runbook.toml");
}

#[test]
fn emails_go_over_smtp_when_a_run_waits_and_when_it_fails() {
    let smtp = support::SmtpSink::start();
    let playbook = r#"apiVersion: runbook/v1
name: mailed
version: 1
notify:
  - email: { to: [oncall@example.com, lead@example.com], from: runbook@ops.example.com }
    on: [waiting, failed]
steps:
  - { id: ask, uses: approve, with: { message: "restart the primary?" } }
  - { id: boom, uses: shell, with: { run: "echo the disk is full >&2; exit 3" } }
"#;
    let run = Run::new()
        .env("RUNBOOK_SMTP_URL", &smtp.url())
        .playbook("mailed", playbook);
    let id = run.exec(["run", "mailed"]).exit(3).run_id();
    let wait_for = |n: usize| {
        let until = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while smtp.messages().len() < n && std::time::Instant::now() < until {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        smtp.messages()
    };
    let got = wait_for(1);
    assert_eq!(got.len(), 1, "{got:?}");
    let waiting = &got[0];
    for text in [
        "To: oncall@example.com, lead@example.com",
        "From: runbook@ops.example.com",
        &format!("Subject: runbook: mailed run {id} waits for an approval at `ask`"),
        &format!("To answer: runbook approve {id} ask (or runbook reject {id} ask)"),
    ] {
        assert!(
            waiting.contains(text),
            "no {text:?} in
{waiting}"
        );
    }
    run.exec(["approve", &id]).exit(1);
    let got = wait_for(2);
    assert_eq!(got.len(), 2, "one email for the wait, one for the failure: {got:?}");
    assert!(
        got[1].contains(&format!("Subject: runbook: mailed run {id} failed")),
        "{}",
        got[1]
    );
    assert!(got[1].contains(&format!("runbook logs {id}")), "{}", got[1]);
    // A server that is not there: the run is not held up, a warning says why.
    let down = Run::new()
        .env(
            "RUNBOOK_SMTP_URL",
            &format!("smtp://127.0.0.1:{}", support::free_port()),
        )
        .playbook("mailed", playbook);
    down.exec(["run", "mailed"])
        .exit(3)
        .stderr_has("warning: notify mailto:oncall@example.com,lead@example.com:");
    // An email and a webhook in one notification is refused.
    Run::new()
        .playbook(
            "mailed",
            &playbook.replace("  - email:", "  - webhook: \"http://127.0.0.1:9/\"\n    email:"),
        )
        .args(["validate", "mailed"])
        .run()
        .exit(2)
        .stderr_has("names both a webhook and an email");
}

/// `sha256=HEX`, as the runner signs (checked with an implementation of
/// the test's own: HMAC by its definition, over SHA-256).
fn hmac_sha256(key: &str, body: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    let mut k = [0u8; 64];
    k[..key.len()].copy_from_slice(key.as_bytes());
    let pad = |b: u8| k.iter().map(|x| x ^ b).collect::<Vec<u8>>();
    let inner = Sha256::new().chain_update(pad(0x36)).chain_update(body).finalize();
    let outer = Sha256::new().chain_update(pad(0x5c)).chain_update(inner).finalize();
    format!(
        "sha256={}",
        outer.iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
}
