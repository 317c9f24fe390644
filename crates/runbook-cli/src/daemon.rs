//! `runbook daemon --schedules FILE`: runs playbooks on cron schedules (with
//! time zones), as scheduled DR drills and backups need, and serves Prometheus
//! metrics.
//!
//! Each fire runs `runbook run` as a child process with `--output json`: the
//! same journal, locks, approvals and resume as a run from a terminal, and a
//! crash of one run cannot take the daemon down. With `submit: true` the child
//! is `runbook run --submit --wait`: the run executes on the queue's workers and
//! outlives the daemon, and the child only follows it. The daemon reads the
//! child's events for its metrics. Policies, as documented in the book:
//! - overlap: `skip` (default) drops a fire while the schedule's previous run
//!   is still running; `queue` runs it after (at most [`MAX_QUEUED`] waiting);
//! - missed fires while the daemon was down are not run: at start, each
//!   schedule waits for its next fire; runs it left interrupted are resumed;
//! - SIGINT/SIGTERM: no new fires; running runs get SIGINT (they stop
//!   gracefully and stay resumable); the daemon exits when they have.

use crate::Exit;
use crate::session::{open_store, runtime};
use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use indexmap::IndexMap;
use prometheus_client::metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram};
use runbook_core::kind::Registry;
use runbook_core::library::Library;
use runbook_state::{RunStatus, Store};
use serde::Deserialize;
use serde_json::{Value as Json, json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncBufReadExt;
use tokio::sync::mpsc;

/// The most fires a `queue` schedule keeps waiting.
const MAX_QUEUED: u32 = 5;

/// Buckets of the step duration histogram, in seconds.
const BUCKETS: &[f64] = &[0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0];

/// The schedules file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SchedulesFile {
    /// The default time zone (IANA name; default UTC).
    #[serde(default)]
    timezone: Option<String>,
    schedules: Vec<ScheduleSpec>,
}

/// One schedule.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScheduleSpec {
    name: String,
    playbook: String,
    /// Cron: 5 fields, or 6 with seconds first.
    cron: String,
    #[serde(default)]
    timezone: Option<String>,
    #[serde(default)]
    inputs: IndexMap<String, Json>,
    #[serde(default)]
    overlap: Overlap,
    /// POSTed a JSON summary when a run ends (Slack-compatible `text`).
    #[serde(default)]
    webhook: Option<String>,
    /// Approve `approve` steps as the daemon (`--yes`).
    #[serde(default)]
    yes: bool,
    /// Queue each fire for the `runbook worker`s (PostgreSQL state) and follow
    /// it (`run --submit --wait`), instead of running it in a child here.
    #[serde(default)]
    submit: bool,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Overlap {
    #[default]
    Skip,
    Queue,
}

/// A schedule, checked.
struct Schedule {
    spec: ScheduleSpec,
    cron: croner::Cron,
    tz: Tz,
    next: DateTime<Utc>,
    running: Option<u32>,
    queued: u32,
}

impl Schedule {
    fn advance(&mut self) {
        let now = Utc::now().with_timezone(&self.tz);
        if let Ok(next) = self.cron.find_next_occurrence(&now, false) {
            self.next = next.with_timezone(&Utc);
        }
    }

    fn user(&self) -> String {
        format!("daemon/{}", self.spec.name)
    }
}

/// Reads and checks the schedules file: every cron, time zone and playbook,
/// and each schedule's inputs against its playbook. Errors say which schedule.
fn load(path: &Path, lib: &Library, registry: &Registry) -> Result<Vec<Schedule>, Vec<String>> {
    let shown = path.display();
    let text = std::fs::read_to_string(path).map_err(|e| vec![format!("{shown}: {e}")])?;
    let node = runbook_core::parse::parse(&text).map_err(|diags| {
        diags
            .iter()
            .map(|d| format!("{shown}: {}", d.message))
            .collect::<Vec<_>>()
    })?;
    let file: SchedulesFile = serde_json::from_value(node.to_json()).map_err(|e| {
        vec![format!(
            "{shown}: {e} (hint: a schedule has name, playbook, cron, and optionally timezone, inputs, overlap: skip|queue, webhook, yes, submit)"
        )]
    })?;
    let mut errors = Vec::new();
    let mut out = Vec::new();
    let mut names = std::collections::HashSet::new();
    for spec in file.schedules {
        let what = format!("{shown}: schedule `{}`", spec.name);
        if !names.insert(spec.name.clone()) {
            errors.push(format!("{what}: the name is used twice"));
        }
        let tz_name = spec
            .timezone
            .clone()
            .or_else(|| file.timezone.clone())
            .unwrap_or_else(|| "UTC".into());
        let tz: Tz = match tz_name.parse() {
            Ok(tz) => tz,
            Err(_) => {
                errors.push(format!(
                    "{what}: unknown time zone `{tz_name}` (hint: an IANA name, e.g. Europe/Paris)"
                ));
                continue;
            }
        };
        if spec.submit && spec.yes {
            errors.push(format!(
                "{what}: `yes` cannot approve runs executed by workers (hint: answer them with `runbook approve`, \
                 or drop `submit`)"
            ));
        }
        let cron = match croner::Cron::new(&spec.cron).with_seconds_optional().parse() {
            Ok(c) => c,
            Err(e) => {
                errors.push(format!("{what}: cron `{}`: {e}", spec.cron));
                continue;
            }
        };
        match crate::loading::load_quiet(lib, registry, &spec.playbook) {
            Ok(pb) => {
                if let Err(errs) = runbook_core::inputs::resolve(&pb, &spec.inputs) {
                    for e in errs {
                        errors.push(format!("{what}: input `{}`: {}", e.name, e.message));
                    }
                }
            }
            Err(e) => errors.push(format!("{what}: {e}")),
        }
        let mut s = Schedule {
            spec,
            cron,
            tz,
            next: Utc::now(),
            running: None,
            queued: 0,
        };
        s.advance();
        out.push(s);
    }
    if errors.is_empty() { Ok(out) } else { Err(errors) }
}

/// A schedule's run, as `runbook_runs_total` labels it.
#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct RunLabels {
    playbook: String,
    schedule: String,
    status: String,
}

/// A schedule, as labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct ScheduleLabels {
    schedule: String,
}

/// A playbook, as labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct PlaybookLabels {
    playbook: String,
}

type StepHistograms = Family<PlaybookLabels, Histogram, fn() -> Histogram>;

/// What the daemon counts, for `/metrics` (prometheus-client's registry and
/// its OpenMetrics text encoding).
struct Metrics {
    registry: prometheus_client::registry::Registry,
    runs: Family<RunLabels, Counter>,
    skipped: Family<ScheduleLabels, Counter>,
    lock_waits: Family<ScheduleLabels, Counter>,
    steps: StepHistograms,
    last_rto: Family<PlaybookLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    waiting: Gauge,
    queued: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = prometheus_client::registry::Registry::default();
        let runs = Family::default();
        let skipped = Family::default();
        let lock_waits = Family::default();
        let steps: StepHistograms = Family::new_with_constructor(|| Histogram::new(BUCKETS.iter().copied()));
        let last_rto = Family::default();
        let (waiting, queued) = (Gauge::default(), Gauge::default());
        registry.register(
            "runbook_runs",
            "Runs the daemon started that ended, by playbook, schedule and status",
            runs.clone(),
        );
        registry.register(
            "runbook_schedule_skipped",
            "Fires dropped because the previous run still ran",
            skipped.clone(),
        );
        registry.register(
            "runbook_lock_waits",
            "Runs that found their lock held (exit 4)",
            lock_waits.clone(),
        );
        registry.register(
            "runbook_step_duration_seconds",
            "How long step calls took, by playbook",
            steps.clone(),
        );
        registry.register(
            "runbook_last_rto_seconds",
            "The recovery time the last run of a playbook measured",
            last_rto.clone(),
        );
        registry.register(
            "runbook_runs_waiting_for_approval",
            "Runs paused at an approval now",
            waiting.clone(),
        );
        registry.register(
            "runbook_runs_queued",
            "Runs submitted and not yet claimed by a worker (the queue's depth)",
            queued.clone(),
        );
        Metrics {
            registry,
            runs,
            skipped,
            lock_waits,
            steps,
            last_rto,
            waiting,
            queued,
        }
    }
}

impl Metrics {
    fn observe_step(&mut self, playbook: &str, seconds: f64) {
        self.steps
            .get_or_create(&PlaybookLabels {
                playbook: playbook.to_owned(),
            })
            .observe(seconds);
    }

    fn run_ended(&mut self, playbook: &str, schedule: &str, status: &str) {
        self.runs
            .get_or_create(&RunLabels {
                playbook: playbook.to_owned(),
                schedule: schedule.to_owned(),
                status: status.to_owned(),
            })
            .inc();
    }

    fn skipped(&mut self, schedule: &str) {
        self.skipped
            .get_or_create(&ScheduleLabels {
                schedule: schedule.to_owned(),
            })
            .inc();
    }

    fn lock_wait(&mut self, schedule: &str) {
        self.lock_waits
            .get_or_create(&ScheduleLabels {
                schedule: schedule.to_owned(),
            })
            .inc();
    }

    fn rto(&mut self, playbook: &str, seconds: f64) {
        self.last_rto
            .get_or_create(&PlaybookLabels {
                playbook: playbook.to_owned(),
            })
            .set(seconds);
    }

    fn render(&self, waiting: u64, queued: u64) -> String {
        self.waiting.set(i64::try_from(waiting).unwrap_or(i64::MAX));
        self.queued.set(i64::try_from(queued).unwrap_or(i64::MAX));
        let mut o = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut o, &self.registry) {
            o = format!("# cannot encode the metrics: {e}\n");
        }
        o
    }
}

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
) -> Exit {
    let mut scheds = match load(schedules, lib, registry) {
        Ok(s) => s,
        Err(errors) => {
            for e in &errors {
                eprintln!("error: {e}");
            }
            eprintln!("error: the schedules are invalid; the daemon did not start");
            return Exit::Invalid;
        }
    };
    let state = state.unwrap_or_else(runbook_state::default_path);
    let Ok(exe) = std::env::current_exe() else {
        eprintln!("error: cannot find the runbook binary to run playbooks with");
        return Exit::Invalid;
    };
    let setup = Setup {
        exe,
        state: state.clone(),
        playbooks,
        inventory,
    };
    let Some(rt) = runtime() else { return Exit::Invalid };
    rt.block_on(async {
        let Some(store) = open_store(Some(state)).await else {
            return Exit::Invalid;
        };
        let metrics_data = Arc::new(Mutex::new(Metrics::default()));
        if let Some(addr) = metrics {
            match tokio::net::TcpListener::bind(addr).await {
                Ok(l) => {
                    eprintln!("daemon: metrics on http://{}/metrics", l.local_addr().map_or(addr.to_owned(), |a| a.to_string()));
                    tokio::spawn(serve_metrics(l, metrics_data.clone(), store.clone()));
                }
                Err(e) => {
                    eprintln!("error: cannot listen on {addr} for metrics: {e}");
                    return Exit::Invalid;
                }
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
                    s.running = None;
                    if s.queued > 0 {
                        s.queued -= 1;
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
                        s.advance();
                        match (s.running, s.spec.overlap) {
                            (Some(pid), Overlap::Skip) => {
                                eprintln!("daemon: {}: skipped: the previous run (process {pid}) still runs", s.spec.name);
                                if let Ok(mut m) = metrics_data.lock() {
                                    m.skipped(&s.spec.name);
                                }
                            }
                            (Some(_), Overlap::Queue) => {
                                if s.queued < MAX_QUEUED {
                                    s.queued += 1;
                                    eprintln!("daemon: {}: queued behind the running run", s.spec.name);
                                } else if let Ok(mut m) = metrics_data.lock() {
                                    m.skipped(&s.spec.name);
                                }
                            }
                            (None, _) => {
                                let args = run_args(s);
                                s.running = start(&setup, s, i, args, &tx, &metrics_data);
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
        Exit::Ok
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

/// The last run of this schedule, if a stopped daemon left it interrupted.
async fn interrupted_run(store: &Arc<dyn Store>, s: &Schedule) -> Option<String> {
    // A run on the workers was not stopped with the daemon: they continue it.
    if s.spec.submit {
        return None;
    }
    let runs = store.runs(Some(&s.spec.playbook), 20).await.ok()?;
    let last = runs.into_iter().find(|r| r.user == s.user())?;
    let dead = last.pid.is_none_or(|p| !runbook_runner::alive(p));
    (matches!(last.status, RunStatus::Interrupted) || (last.status == RunStatus::Running && dead)).then_some(last.id)
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
    if let Some(url) = &s.spec.webhook {
        let text = format!(
            "runbook: {} ({}) run {} {status}{}{}",
            s.spec.name,
            s.spec.playbook,
            run.as_deref().unwrap_or("-"),
            took.map(|t| format!(" in {t:.1} s")).unwrap_or_default(),
            rto.map(|r| format!("; measured RTO {r:.1} s")).unwrap_or_default()
        );
        let body = json!({
            "text": text,
            "schedule": s.spec.name,
            "playbook": s.spec.playbook,
            "run": run,
            "status": status,
            "exit_code": code,
            "duration_seconds": took,
            "rto_seconds": rto,
        });
        let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build();
        match client {
            Ok(c) => {
                let sent = c
                    .post(url)
                    .header("content-type", "application/json")
                    .body(body.to_string())
                    .send()
                    .await
                    .and_then(|r| r.error_for_status());
                if let Err(e) = sent {
                    eprintln!("daemon: {}: webhook failed: {e}", s.spec.name);
                }
            }
            Err(e) => eprintln!("daemon: {}: webhook: {e}", s.spec.name),
        }
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
