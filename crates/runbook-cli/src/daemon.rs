//! `runbook daemon --schedules FILE`: runs playbooks on cron schedules (with
//! time zones), as scheduled DR drills and backups need, and serves Prometheus
//! metrics.
//!
//! Each fire runs `runbook run` as a child process with `--output json`: the
//! same journal, locks, approvals and resume as a run from a terminal, and a
//! crash of one run cannot take the daemon down. With `submit: true` the child
//! is `runbook run --submit --wait`: the run executes on the queue's workers and
//! outlives the daemon, and the child only follows it. The daemon reads the
//! child's events for its metrics.
//!
//! The schedules (cron, time zones, the overlap policy, the webhook) are
//! runbook-runner's `schedule`; the metrics' text is runbook-report's. This
//! file starts the children, reads them, and serves `/metrics`. Runs a
//! stopped daemon left interrupted are resumed at start. SIGINT/SIGTERM: no
//! new fires; running runs get SIGINT (they stop gracefully and stay
//! resumable); the daemon exits when they have.

use crate::Exit;
use crate::fail::Failure;
use crate::session::{open_store, runtime};
use chrono::Utc;
use runbook_core::kind::Registry;
use runbook_core::library::Library;
use runbook_report::metrics::Metrics;
use runbook_runner::schedule::{self, Ended, Fire, Schedule, interrupted_run};
use runbook_state::{RunStatus, Store};
use serde_json::Value as Json;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncBufReadExt;
use tokio::sync::mpsc;

/// A schedule's run ended: which schedule, the run (if it got an id), the exit code.
struct Done {
    schedule: usize,
    run: Option<String>,
    code: i32,
}

/// Paths and flags the children are started with.
struct Setup {
    exe: PathBuf,
    state: PathBuf,
    playbooks: PathBuf,
    inventory: Option<PathBuf>,
}

pub(crate) fn daemon(
    state: Option<PathBuf>,
    lib: &Library,
    playbooks: PathBuf,
    inventory: Option<PathBuf>,
    registry: &Registry,
    schedules: &Path,
    metrics: Option<&str>,
) -> crate::fail::Done {
    let mut scheds = schedule::load(schedules, lib, registry).map_err(|errors| Failure::All {
        each: errors.into_iter().map(Failure::invalid).collect(),
        summary: "the schedules are invalid; the daemon did not start".into(),
    })?;
    let state = state.unwrap_or_else(runbook_state::default_path);
    let exe = std::env::current_exe()
        .map_err(|e| Failure::invalid(format!("cannot find the runbook binary to run playbooks with: {e}")))?;
    let setup = Setup {
        exe,
        state: state.clone(),
        playbooks,
        inventory,
    };
    runtime()?.block_on(async {
        let store = open_store(Some(state)).await?;
        let metrics_data = Arc::new(Mutex::new(Metrics::default()));
        if let Some(addr) = metrics {
            match tokio::net::TcpListener::bind(addr).await {
                Ok(l) => {
                    eprintln!("daemon: metrics on http://{}/metrics", l.local_addr().map_or(addr.to_owned(), |a| a.to_string()));
                    tokio::spawn(serve_metrics(l, metrics_data.clone(), store.clone()));
                }
                Err(e) => return Err(Failure::invalid(format!("cannot listen on {addr} for metrics: {e}"))),
            }
        }
        let (tx, mut rx) = mpsc::unbounded_channel::<Done>();
        // Runs a previous daemon left interrupted are resumed.
        for (i, s) in scheds.iter_mut().enumerate() {
            if let Some(id) = interrupted_run(&store, s).await {
                eprintln!("daemon: {}: resuming run {id}, interrupted when the daemon stopped", s.spec.name);
                let args = vec!["resume".to_owned(), id];
                s.running = start(&setup, s, i, args, &tx, &metrics_data);
            }
        }
        for s in &scheds {
            eprintln!("daemon: {} ({}): next run at {}", s.spec.name, s.spec.playbook, s.next.with_timezone(&s.tz));
        }
        let stop = shutdown_signal();
        tokio::pin!(stop);
        loop {
            let next = scheds.iter().map(|s| s.next).min();
            let wait = next
                .and_then(|n| (n - Utc::now()).to_std().ok())
                .unwrap_or(Duration::from_secs(3600));
            tokio::select! {
                () = &mut stop => break,
                Some(Done { schedule, run, code }) = rx.recv() => {
                    finished(&store, &scheds[schedule], run, code, &metrics_data).await;
                    let s = &mut scheds[schedule];
                    if s.ended() {
                        let args = run_args(s);
                        s.running = start(&setup, s, schedule, args, &tx, &metrics_data);
                    }
                }
                () = tokio::time::sleep(wait) => {
                    let now = Utc::now();
                    for (i, s) in scheds.iter_mut().enumerate() {
                        if s.next > now {
                            continue;
                        }
                        match s.fire() {
                            Fire::Start => {
                                let args = run_args(s);
                                s.running = start(&setup, s, i, args, &tx, &metrics_data);
                            }
                            Fire::Skipped(pid) => {
                                eprintln!("daemon: {}: skipped: the previous run (process {pid}) still runs", s.spec.name);
                                if let Ok(mut m) = metrics_data.lock() {
                                    m.skipped(&s.spec.name);
                                }
                            }
                            Fire::Queued => eprintln!("daemon: {}: queued behind the running run", s.spec.name),
                            Fire::Dropped => {
                                if let Ok(mut m) = metrics_data.lock() {
                                    m.skipped(&s.spec.name);
                                }
                            }
                        }
                    }
                }
            }
        }
        // Graceful: running runs stop at their own pace and stay resumable.
        let running: Vec<u32> = scheds.iter().filter_map(|s| s.running).collect();
        eprintln!("daemon: stopping; {} run(s) asked to stop", running.len());
        for pid in &running {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(i32::try_from(*pid).unwrap_or(0)),
                nix::sys::signal::Signal::SIGINT,
            );
        }
        let mut left = running.len();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while left > 0 {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(Done { schedule, run, code })) => {
                    finished(&store, &scheds[schedule], run, code, &metrics_data).await;
                    left -= 1;
                }
                _ => break,
            }
        }
        Ok(Exit::Ok)
    })
}

fn run_args(s: &Schedule) -> Vec<String> {
    let mut args = vec!["run".to_owned(), s.spec.playbook.clone()];
    for (k, v) in &s.spec.inputs {
        args.push("--set".to_owned());
        let v = match v {
            Json::String(t) => t.clone(),
            other => other.to_string(),
        };
        args.push(format!("{k}={v}"));
    }
    if s.spec.yes {
        args.push("--yes".to_owned());
    }
    if s.spec.submit {
        args.extend(["--submit".to_owned(), "--wait".to_owned()]);
    }
    args
}

/// Starts a child `runbook` for a schedule; its process id.
fn start(
    setup: &Setup,
    s: &Schedule,
    index: usize,
    args: Vec<String>,
    tx: &mpsc::UnboundedSender<Done>,
    metrics: &Arc<Mutex<Metrics>>,
) -> Option<u32> {
    let mut cmd = tokio::process::Command::new(&setup.exe);
    cmd.arg("--state")
        .arg(&setup.state)
        .arg("--playbooks")
        .arg(&setup.playbooks);
    if let Some(inv) = &setup.inventory {
        cmd.arg("--inventory").arg(inv);
    }
    cmd.args(&args)
        .args(["--output", "json"])
        .env("RUNBOOK_USER", s.user())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(false);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("daemon: {}: cannot start runbook: {e}", s.spec.name);
            return None;
        }
    };
    let pid = child.id();
    eprintln!(
        "daemon: {}: {} (process {})",
        s.spec.name,
        args.join(" "),
        pid.unwrap_or(0)
    );
    let stdout = child.stdout.take();
    let (tx, metrics, playbook) = (tx.clone(), metrics.clone(), s.spec.playbook.clone());
    tokio::spawn(async move {
        let mut run = None;
        if let Some(out) = stdout {
            let mut lines = tokio::io::BufReader::new(out).lines();
            let mut started: BTreeMap<String, String> = BTreeMap::new();
            while let Ok(Some(line)) = lines.next_line().await {
                let Ok(v) = serde_json::from_str::<Json>(&line) else {
                    continue;
                };
                if run.is_none() {
                    run = v["run"].as_str().map(str::to_owned);
                }
                let (Some(event), Some(step), Some(at)) = (v["event"].as_str(), v["step"].as_str(), v["at"].as_str())
                else {
                    continue;
                };
                match event {
                    "step_started" => {
                        started.insert(step.to_owned(), at.to_owned());
                    }
                    "step_succeeded" | "step_failed" => {
                        if let Some(t0) = started.remove(step) {
                            if let (Ok(a), Ok(b)) = (humantime::parse_rfc3339(&t0), humantime::parse_rfc3339(at)) {
                                if let (Ok(d), Ok(mut m)) = (b.duration_since(a), metrics.lock()) {
                                    m.observe_step(&playbook, d.as_secs_f64());
                                }
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
        let code = child.wait().await.ok().and_then(|s| s.code()).unwrap_or(-1);
        let _ = tx.send(Done {
            schedule: index,
            run,
            code,
        });
    });
    pid
}

/// Records how a schedule's run ended: metrics, and the webhook.
async fn finished(store: &Arc<dyn Store>, s: &Schedule, run: Option<String>, code: i32, metrics: &Arc<Mutex<Metrics>>) {
    let record = match &run {
        Some(id) => store.run(id).await.ok(),
        None => None,
    };
    let status = record.as_ref().map_or_else(
        || {
            if code == crate::Exit::Locked as i32 {
                "locked".to_owned()
            } else {
                format!("exit {code}")
            }
        },
        |r| r.status.as_str().to_owned(),
    );
    let rto = match &run {
        Some(id) => store
            .events(id)
            .await
            .ok()
            .and_then(|e| runbook_report::measured(&e, "rto_seconds")),
        None => None,
    };
    if let Ok(mut m) = metrics.lock() {
        m.run_ended(&s.spec.playbook, &s.spec.name, &status);
        if code == crate::Exit::Locked as i32 {
            m.lock_wait(&s.spec.name);
        }
        if let Some(r) = rto {
            m.rto(&s.spec.playbook, r);
        }
    }
    let took = record
        .as_ref()
        .and_then(|r| runbook_report::seconds_between(&r.created_at, &r.updated_at));
    eprintln!(
        "daemon: {}: run {} {status}{}",
        s.spec.name,
        run.as_deref().unwrap_or("-"),
        rto.map(|r| format!(", RTO {r:.1} s")).unwrap_or_default()
    );
    let ended = Ended {
        schedule: &s.spec,
        run: run.as_deref(),
        status: &status,
        exit_code: code,
        took,
        rto,
    };
    if let Err(e) = ended.post().await {
        eprintln!("daemon: {}: webhook failed: {e}", s.spec.name);
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
    }
}

/// `GET /metrics` in the OpenMetrics text format, served by axum; anything
/// else is a 404 that names the path to use.
async fn serve_metrics(listener: tokio::net::TcpListener, metrics: Arc<Mutex<Metrics>>, store: Arc<dyn Store>) {
    use axum::http::{StatusCode, header};
    let scrape = move || {
        let (metrics, store) = (metrics.clone(), store.clone());
        async move {
            let waiting = store.count_runs(RunStatus::Waiting).await.unwrap_or(0);
            let queued = store.count_runs(RunStatus::Queued).await.unwrap_or(0);
            let text = metrics.lock().map(|m| m.render(waiting, queued)).unwrap_or_default();
            (
                [(
                    header::CONTENT_TYPE,
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                )],
                text,
            )
        }
    };
    let app = axum::Router::new()
        .route("/metrics", axum::routing::get(scrape))
        .fallback(|| async { (StatusCode::NOT_FOUND, "try /metrics\n") });
    if let Err(e) = axum::serve(listener, app).await {
        eprintln!("daemon: the metrics server stopped: {e}");
    }
}
