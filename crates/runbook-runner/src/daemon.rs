//! The daemon's loop: it fires the [`schedule`](crate::schedule)s and starts
//! each run through a [`Launcher`], in a process of its own, so that a crash
//! of one run cannot take the daemon down and `runbook cancel` stops that run,
//! not the daemon. It keeps the Prometheus metrics (runbook-report's
//! [`Metrics`]) from the events the processes report and from the journal,
//! posts each schedule's webhook, and at start resumes the runs a stopped
//! daemon left interrupted.
//!
//! A stop: no new fires; each running run is asked to stop (SIGINT: it stops
//! between steps and stays resumable); [`Daemon::run`] returns when they have,
//! or after [`STOP_GRACE`].

use crate::notice::{Notice, Watcher};
use crate::schedule::{Ended, Fire, Schedule, ScheduleSpec, interrupted_run};
use chrono::Utc;
use runbook_report::metrics::Metrics;
use runbook_state::Store;
use serde_json::Value as Json;
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

/// How long a stopping daemon waits for its runs to stop.
pub const STOP_GRACE: Duration = Duration::from_secs(60);

/// What the daemon asks a [`Launcher`] to start.
#[derive(Debug, Clone, Copy)]
pub enum Launch<'a> {
    /// A new run of the schedule's playbook, with its inputs.
    Run(&'a ScheduleSpec),
    /// The run a stopped daemon left interrupted.
    Resume(&'a str),
}

/// A process a [`Launcher`] started.
#[derive(Debug, Clone)]
pub struct Launched {
    /// Its process id (the daemon signals it to stop).
    pub pid: u32,
    /// What it runs, for the daemon's log (a command line).
    pub command: String,
}

/// Starts a schedule's runs, each in a process of its own.
pub trait Launcher: Sync {
    /// Starts `what`, journalled as `user`. The process's JSON event lines
    /// (`--output json`) go to [`Report::line`]; when it exits, its exit
    /// code goes to [`Report::exited`].
    fn launch(&self, what: Launch<'_>, user: &str, report: Report) -> Result<Launched, String>;
}

/// A launched run's process, as the daemon hears of it.
pub struct Report {
    schedule: usize,
    playbook: String,
    metrics: Arc<Mutex<Metrics>>,
    done: mpsc::UnboundedSender<Exited>,
    run: Option<String>,
    started: BTreeMap<String, String>,
}

/// A launched process exited.
struct Exited {
    schedule: usize,
    run: Option<String>,
    code: i32,
    locked: bool,
}

impl Report {
    /// One line the process printed: a JSON event names the run, and a
    /// step's end is timed for the metrics. Other lines are ignored.
    pub fn line(&mut self, line: &str) {
        let Ok(v) = serde_json::from_str::<Json>(line) else {
            return;
        };
        if self.run.is_none() {
            self.run = v["run"].as_str().map(str::to_owned);
        }
        let (Some(event), Some(step), Some(at)) = (v["event"].as_str(), v["step"].as_str(), v["at"].as_str()) else {
            return;
        };
        match event {
            "step_started" => {
                self.started.insert(step.to_owned(), at.to_owned());
            }
            "step_succeeded" | "step_failed" => {
                let took = self
                    .started
                    .remove(step)
                    .and_then(|t0| runbook_report::seconds_between(&t0, at));
                if let (Some(took), Ok(mut m)) = (took, self.metrics.lock()) {
                    m.observe_step(&self.playbook, took);
                }
            }
            _ => {}
        }
    }

    /// The process exited with `code`; `locked` if that code means a lock
    /// another run held kept it from starting.
    pub fn exited(self, code: i32, locked: bool) {
        let _ = self.done.send(Exited {
            schedule: self.schedule,
            run: self.run,
            code,
            locked,
        });
    }
}

/// The daemon: its schedules, the state their runs are journalled in, the
/// metrics it keeps, and who hears what it does.
pub struct Daemon {
    /// The checked schedules.
    pub schedules: Vec<Schedule>,
    /// The state (the runs' records, for the metrics and webhooks).
    pub store: Arc<dyn Store>,
    /// The metrics (a front end serves them).
    pub metrics: Arc<Mutex<Metrics>>,
    /// Told each fire, start, end and skip.
    pub watcher: Arc<dyn Watcher>,
}

impl Daemon {
    /// Fires the schedules until `stop` completes, then stops the running
    /// runs gracefully; how many were still running when it returned.
    pub async fn run(mut self, launcher: &dyn Launcher, stop: impl Future<Output = ()>) -> usize {
        let (tx, mut rx) = mpsc::unbounded_channel::<Exited>();
        for i in 0..self.schedules.len() {
            if let Some(id) = interrupted_run(&self.store, &self.schedules[i]).await {
                self.say(i, format!("resuming run {id}, interrupted when the daemon stopped"));
                self.schedules[i].running = self.launch(launcher, i, Launch::Resume(&id), &tx);
            }
        }
        for s in &self.schedules {
            self.watcher.notice(&Notice::NextFire {
                name: s.spec.name.clone(),
                playbook: s.spec.playbook.clone(),
                at: s.next.with_timezone(&s.tz).to_string(),
            });
        }
        tokio::pin!(stop);
        loop {
            let next = self.schedules.iter().map(|s| s.next).min();
            let wait = next
                .and_then(|n| (n - Utc::now()).to_std().ok())
                .unwrap_or(Duration::from_secs(3600));
            tokio::select! {
                () = &mut stop => break,
                Some(exited) = rx.recv() => {
                    let i = exited.schedule;
                    self.finished(exited).await;
                    if self.schedules[i].ended() {
                        self.start(launcher, i, &tx);
                    }
                }
                () = tokio::time::sleep(wait) => self.fire_due(launcher, &tx),
            }
        }
        self.stop(&mut rx).await
    }

    /// Fires every schedule whose time came.
    fn fire_due(&mut self, launcher: &dyn Launcher, tx: &mpsc::UnboundedSender<Exited>) {
        let now = Utc::now();
        for i in 0..self.schedules.len() {
            if self.schedules[i].next > now {
                continue;
            }
            match self.schedules[i].fire() {
                Fire::Start => self.start(launcher, i, tx),
                Fire::Skipped(pid) => {
                    self.say(i, format!("skipped: the previous run (process {pid}) still runs"));
                    self.skipped(i);
                }
                Fire::Queued => self.say(i, "queued behind the running run".to_owned()),
                Fire::Dropped => self.skipped(i),
            }
        }
    }

    fn start(&mut self, launcher: &dyn Launcher, i: usize, tx: &mpsc::UnboundedSender<Exited>) {
        self.schedules[i].running = self.launch(launcher, i, Launch::Run(&self.schedules[i].spec), tx);
    }

    /// Starts a run of schedule `i`; its process.
    fn launch(
        &self,
        launcher: &dyn Launcher,
        i: usize,
        what: Launch<'_>,
        tx: &mpsc::UnboundedSender<Exited>,
    ) -> Option<u32> {
        let s = &self.schedules[i];
        let report = Report {
            schedule: i,
            playbook: s.spec.playbook.clone(),
            metrics: self.metrics.clone(),
            done: tx.clone(),
            run: None,
            started: BTreeMap::new(),
        };
        match launcher.launch(what, &s.user(), report) {
            Ok(Launched { pid, command }) => {
                self.say(i, format!("{command} (process {pid})"));
                Some(pid)
            }
            Err(e) => {
                self.say(i, format!("cannot start the run: {e}"));
                None
            }
        }
    }

    fn skipped(&self, i: usize) {
        if let Ok(mut m) = self.metrics.lock() {
            m.skipped(&self.schedules[i].spec.name);
        }
    }

    fn say(&self, i: usize, what: String) {
        self.watcher.notice(&Notice::Schedule {
            name: self.schedules[i].spec.name.clone(),
            what,
        });
    }

    /// Records how a schedule's run ended: metrics, log, webhook.
    async fn finished(&self, exited: Exited) {
        let s = &self.schedules[exited.schedule];
        let record = match &exited.run {
            Some(id) => self.store.run(id).await.ok(),
            None => None,
        };
        let status = match (&record, exited.locked) {
            (Some(r), _) => r.status.as_str().to_owned(),
            (None, true) => "locked".to_owned(),
            (None, false) => format!("exit {}", exited.code),
        };
        let rto = match &exited.run {
            Some(id) => self
                .store
                .events(id)
                .await
                .ok()
                .and_then(|e| runbook_report::measured(&e, "rto_seconds")),
            None => None,
        };
        if let Ok(mut m) = self.metrics.lock() {
            m.run_ended(&s.spec.playbook, &s.spec.name, &status);
            if exited.locked {
                m.lock_wait(&s.spec.name);
            }
            if let Some(r) = rto {
                m.rto(&s.spec.playbook, r);
            }
        }
        let took = record
            .as_ref()
            .and_then(|r| runbook_report::seconds_between(&r.created_at, &r.updated_at));
        let rto_text = rto.map(|r| format!(", RTO {r:.1} s")).unwrap_or_default();
        let run = exited.run.as_deref();
        self.say(
            exited.schedule,
            format!("run {} {status}{rto_text}", run.unwrap_or("-")),
        );
        let ended = Ended {
            schedule: &s.spec,
            run,
            status: &status,
            exit_code: exited.code,
            took,
            rto,
        };
        if let Err(e) = ended.post().await {
            self.say(exited.schedule, format!("webhook failed: {e}"));
        }
    }

    /// Asks the running runs to stop and waits for them (at most
    /// [`STOP_GRACE`]); how many did not stop in time.
    async fn stop(&self, rx: &mut mpsc::UnboundedReceiver<Exited>) -> usize {
        let running: Vec<u32> = self.schedules.iter().filter_map(|s| s.running).collect();
        self.watcher.notice(&Notice::DaemonStopping { runs: running.len() });
        // A process id that does not fit is skipped, never sent as 0 (the
        // daemon's own process group).
        for pid in running.iter().filter_map(|p| i32::try_from(*p).ok()) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGINT);
        }
        let mut left = running.len();
        let deadline = tokio::time::Instant::now() + STOP_GRACE;
        while left > 0 {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(exited)) => {
                    self.finished(exited).await;
                    left -= 1;
                }
                _ => break,
            }
        }
        left
    }
}
