//! `runbook daemon --schedules FILE`: runs playbooks on cron schedules (with
//! time zones), as scheduled DR drills and backups need, and serves Prometheus
//! metrics.
//!
//! The loop (fires, overlap policy, metrics, webhooks, resuming what a
//! stopped daemon left, the graceful stop) is runbook-runner's `daemon`. This
//! file is its launcher: each run is `runbook run` in a child process with
//! `--output json` (the same journal, locks, approvals and resume as a run
//! from a terminal; a crash of one run cannot take the daemon down), or
//! `runbook run --submit --wait` for a `submit: true` schedule, whose run
//! executes on the queue's workers and outlives the daemon. It also serves
//! `/metrics`.

use crate::Exit;
use crate::fail::Failure;
use crate::session::{open_store, runtime};
use runbook_core::kind::Registry;
use runbook_core::library::Library;
use runbook_report::metrics::Metrics;
use runbook_runner::daemon::{Daemon, Launch, Launched, Launcher, Report};
use runbook_runner::schedule;
use runbook_state::{RunStatus, Store};
use serde_json::Value as Json;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio::io::AsyncBufReadExt;

/// Starts each run as a child `runbook` with the daemon's paths.
struct Children {
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
    let schedules = schedule::load(schedules, lib, registry).map_err(|errors| Failure::All {
        each: errors.into_iter().map(Failure::invalid).collect(),
        summary: "the schedules are invalid; the daemon did not start".into(),
    })?;
    let state = state.unwrap_or_else(runbook_state::default_path);
    let exe = std::env::current_exe()
        .map_err(|e| Failure::invalid(format!("cannot find the runbook binary to run playbooks with: {e}")))?;
    let children = Children {
        exe,
        state: state.clone(),
        playbooks,
        inventory,
    };
    runtime()?.block_on(async {
        let store = open_store(Some(state)).await?;
        let metrics_data = Arc::new(Mutex::new(Metrics::default()));
        if let Some(addr) = metrics {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| Failure::invalid(format!("cannot listen on {addr} for metrics: {e}")))?;
            let shown = listener.local_addr().map_or(addr.to_owned(), |a| a.to_string());
            eprintln!("daemon: metrics on http://{shown}/metrics");
            tokio::spawn(serve_metrics(listener, metrics_data.clone(), store.clone()));
        }
        let daemon = Daemon {
            schedules,
            store,
            metrics: metrics_data,
            watcher: Arc::new(crate::observe::JsonLines),
        };
        daemon.run(&children, shutdown_signal()).await;
        Ok(Exit::Ok)
    })
}

impl Children {
    fn args(what: Launch<'_>) -> Vec<String> {
        let s = match what {
            Launch::Resume(id) => return vec!["resume".to_owned(), id.to_owned()],
            Launch::Run(s) => s,
        };
        let mut args = vec!["run".to_owned(), s.playbook.clone()];
        for (k, v) in &s.inputs {
            let v = match v {
                Json::String(t) => t.clone(),
                other => other.to_string(),
            };
            args.extend(["--set".to_owned(), format!("{k}={v}")]);
        }
        if s.yes {
            args.push("--yes".to_owned());
        }
        if s.submit {
            args.extend(["--submit".to_owned(), "--wait".to_owned()]);
        }
        args
    }
}

impl Launcher for Children {
    fn launch(&self, what: Launch<'_>, user: &str, mut report: Report) -> Result<Launched, String> {
        let args = Self::args(what);
        let mut cmd = tokio::process::Command::new(&self.exe);
        cmd.arg("--state")
            .arg(&self.state)
            .arg("--playbooks")
            .arg(&self.playbooks);
        if let Some(inv) = &self.inventory {
            cmd.arg("--inventory").arg(inv);
        }
        cmd.args(&args)
            .args(["--output", "json"])
            .env("RUNBOOK_USER", user)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(false);
        let mut child = cmd.spawn().map_err(|e| format!("cannot start runbook: {e}"))?;
        let pid = child.id().ok_or("the child exited at once")?;
        let stdout = child.stdout.take();
        tokio::spawn(async move {
            if let Some(out) = stdout {
                let mut lines = tokio::io::BufReader::new(out).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    report.line(&line);
                }
            }
            let code = child.wait().await.ok().and_then(|s| s.code()).unwrap_or(-1);
            report.exited(code, code == Exit::Locked as i32);
        });
        Ok(Launched {
            pid,
            command: args.join(" "),
        })
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
