//! The daemon's schedules: the schedules file read and checked (every cron,
//! time zone and playbook, each schedule's inputs against its playbook), when
//! each fires next, what a fire does while the previous run still runs (the
//! overlap policy), which run a stopped daemon left to resume, and the
//! webhook a schedule's ended run posts. The daemon (a front end) starts the
//! runs and serves the metrics.
//!
//! Policies: overlap `skip` (default) drops a fire while the schedule's
//! previous run still runs; `queue` runs it after (at most [`MAX_QUEUED`]
//! waiting). Fires missed while the daemon was down are not run: at start,
//! each schedule waits for its next fire.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use indexmap::IndexMap;
use runbook_core::kind::Registry;
use runbook_core::library::{self, Library, LoadError};
use runbook_state::{RunStatus, Store};
use serde::Deserialize;
use serde_json::{Value as Json, json};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// The most fires a `queue` schedule keeps waiting.
pub const MAX_QUEUED: u32 = 5;

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
pub struct ScheduleSpec {
    /// Its name (unique in the file).
    pub name: String,
    /// The playbook it runs (`NAME` or `NAME@VERSION`).
    pub playbook: String,
    /// Cron: 5 fields, or 6 with seconds first.
    pub cron: String,
    /// Its time zone (IANA name), if not the file's.
    #[serde(default)]
    pub timezone: Option<String>,
    /// The run's inputs.
    #[serde(default)]
    pub inputs: IndexMap<String, Json>,
    /// What a fire does while the previous run still runs.
    #[serde(default)]
    pub overlap: Overlap,
    /// POSTed a JSON summary when a run ends (Slack-compatible `text`).
    #[serde(default)]
    pub webhook: Option<String>,
    /// Approve `approve` steps as the daemon (`--yes`).
    #[serde(default)]
    pub yes: bool,
    /// Queue each fire for the `runbook worker`s (PostgreSQL state) and follow
    /// it (`run --submit --wait`), instead of running it in a child here.
    #[serde(default)]
    pub submit: bool,
}

/// What a fire does while the schedule's previous run still runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Overlap {
    /// Drop the fire.
    #[default]
    Skip,
    /// Run it after the running one (at most [`MAX_QUEUED`] waiting).
    Queue,
}

/// A schedule, checked.
pub struct Schedule {
    /// As written.
    pub spec: ScheduleSpec,
    cron: croner::Cron,
    /// Its time zone.
    pub tz: Tz,
    /// When it fires next.
    pub next: DateTime<Utc>,
    /// The process of its running run, if one runs.
    pub running: Option<u32>,
    /// Fires waiting for the running run (overlap `queue`).
    pub queued: u32,
}

impl Schedule {
    /// Moves `next` to the first fire after now.
    pub fn advance(&mut self) {
        let now = Utc::now().with_timezone(&self.tz);
        if let Ok(next) = self.cron.find_next_occurrence(&now, false) {
            self.next = next.with_timezone(&Utc);
        }
    }

    /// Who its runs are journalled as: `daemon/NAME`.
    pub fn user(&self) -> String {
        format!("daemon/{}", self.spec.name)
    }
}

/// Reads and checks the schedules file: every cron, time zone and playbook,
/// and each schedule's inputs against its playbook. Errors say which schedule.
pub fn load(path: &Path, lib: &Library, registry: &Registry) -> Result<Vec<Schedule>, Vec<String>> {
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
        match load_playbook(lib, registry, &spec.playbook) {
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

/// The last run of this schedule, if a stopped daemon left it interrupted.
pub async fn interrupted_run(store: &Arc<dyn Store>, s: &Schedule) -> Option<String> {
    // A run on the workers was not stopped with the daemon: they continue it.
    if s.spec.submit {
        return None;
    }
    let runs = store.runs(Some(&s.spec.playbook), 20).await.ok()?;
    let last = runs.into_iter().find(|r| r.user == s.user())?;
    let dead = last.pid.is_none_or(|p| !crate::alive(p));
    (matches!(last.status, RunStatus::Interrupted) || (last.status == RunStatus::Running && dead)).then_some(last.id)
}

/// What a fire of a schedule does now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fire {
    /// Start a run.
    Start,
    /// Dropped: the previous run (this process) still runs.
    Skipped(u32),
    /// Waits behind the running run.
    Queued,
    /// Dropped: too many fires wait already.
    Dropped,
}

impl Schedule {
    /// The schedule fired: what to do, by its overlap policy (and `next`
    /// moves on).
    pub fn fire(&mut self) -> Fire {
        self.advance();
        match (self.running, self.spec.overlap) {
            (None, _) => Fire::Start,
            (Some(pid), Overlap::Skip) => Fire::Skipped(pid),
            (Some(_), Overlap::Queue) if self.queued < MAX_QUEUED => {
                self.queued += 1;
                Fire::Queued
            }
            (Some(_), Overlap::Queue) => Fire::Dropped,
        }
    }

    /// Its run ended: true if a queued fire should start now.
    pub fn ended(&mut self) -> bool {
        self.running = None;
        if self.queued > 0 {
            self.queued -= 1;
            return true;
        }
        false
    }
}

/// Loads a playbook for a check that reports its own errors.
fn load_playbook(lib: &Library, registry: &Registry, spec: &str) -> Result<runbook_core::model::Playbook, String> {
    let located = lib.locate_entry(spec).map_err(|e| e.to_string())?;
    match library::load(lib, &located, registry) {
        Ok(loaded) => Ok(loaded.playbook),
        Err(LoadError::Library(e)) => Err(e.to_string()),
        Err(LoadError::Invalid(inv)) => Err(format!(
            "playbook `{spec}` is invalid ({}; `runbook validate {spec}` shows them)",
            crate::error::plural(inv.error_count(), "error")
        )),
    }
}

/// How a schedule's run ended, as its webhook says it.
#[derive(Debug, Clone)]
pub struct Ended<'a> {
    /// The schedule.
    pub schedule: &'a ScheduleSpec,
    /// The run, if it got an id.
    pub run: Option<&'a str>,
    /// Its status (or `exit N`, `locked` without a run).
    pub status: &'a str,
    /// The child's exit code.
    pub exit_code: i32,
    /// How long it took.
    pub took: Option<f64>,
    /// The recovery time it measured.
    pub rto: Option<f64>,
}

impl Ended<'_> {
    /// The JSON body: a Slack-compatible `text` and the figures.
    pub fn body(&self) -> Json {
        let s = self.schedule;
        let text = format!(
            "runbook: {} ({}) run {} {}{}{}",
            s.name,
            s.playbook,
            self.run.unwrap_or("-"),
            self.status,
            self.took.map(|t| format!(" in {t:.1} s")).unwrap_or_default(),
            self.rto.map(|r| format!("; measured RTO {r:.1} s")).unwrap_or_default()
        );
        json!({
            "text": text,
            "schedule": s.name,
            "playbook": s.playbook,
            "run": self.run,
            "status": self.status,
            "exit_code": self.exit_code,
            "duration_seconds": self.took,
            "rto_seconds": self.rto,
        })
    }

    /// POSTs the body to the schedule's webhook, if it has one.
    pub async fn post(&self) -> Result<(), String> {
        let Some(url) = &self.schedule.webhook else {
            return Ok(());
        };
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| e.to_string())?;
        client
            .post(url)
            .header("content-type", "application/json")
            .body(self.body().to_string())
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn schedule(overlap: Overlap, cron: &str) -> Schedule {
        let spec: ScheduleSpec = serde_json::from_value(json!({
            "name": "drill", "playbook": "failover", "cron": cron,
        }))
        .unwrap();
        let mut s = Schedule {
            spec: ScheduleSpec { overlap, ..spec },
            cron: croner::Cron::new(cron).with_seconds_optional().parse().unwrap(),
            tz: "Europe/Paris".parse().unwrap(),
            next: Utc::now(),
            running: None,
            queued: 0,
        };
        s.advance();
        s
    }

    #[test]
    fn a_fire_while_the_last_run_runs_is_skipped_or_queued_by_policy() {
        let mut skip = schedule(Overlap::Skip, "0 3 * * *");
        assert_eq!(skip.fire(), Fire::Start);
        skip.running = Some(42);
        assert_eq!(skip.fire(), Fire::Skipped(42));
        assert!(!skip.ended(), "nothing waits behind it");
        let mut queue = schedule(Overlap::Queue, "0 3 * * *");
        queue.running = Some(42);
        for _ in 0..MAX_QUEUED {
            assert_eq!(queue.fire(), Fire::Queued);
        }
        assert_eq!(queue.fire(), Fire::Dropped, "at most {MAX_QUEUED} wait");
        assert!(queue.ended(), "the next queued fire starts when the run ends");
        assert_eq!(queue.queued, MAX_QUEUED - 1);
    }

    #[test]
    fn a_schedule_names_a_playbook_of_the_library_never_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("evil.yaml");
        std::fs::write(&file, "apiVersion: runbook/v1\nname: evil\nversion: 1\nsteps: []\n").unwrap();
        let schedules = dir.path().join("schedules.yaml");
        let text = format!(
            "schedules:\n  - {{ name: x, playbook: \"{}\", cron: \"* * * * *\" }}\n",
            file.display()
        );
        std::fs::write(&schedules, text).unwrap();
        let lib = Library::new(dir.path().join("playbooks"));
        let refused = load(&schedules, &lib, &Registry::new()).err().unwrap_or_default();
        assert!(
            refused.iter().any(|e| e.contains("is a path, not a playbook name")),
            "{refused:?}"
        );
    }

    #[test]
    fn the_next_fire_is_in_the_schedules_time_zone() {
        let s = schedule(Overlap::Skip, "30 3 * * *");
        let local = s.next.with_timezone(&s.tz);
        assert_eq!(local.format("%H:%M").to_string(), "03:30");
        assert!(s.next > Utc::now());
        assert_eq!(s.user(), "daemon/drill");
    }

    #[test]
    fn a_webhook_body_says_what_happened_in_one_line_and_in_fields() {
        let s = schedule(Overlap::Skip, "0 3 * * *");
        let ended = Ended {
            schedule: &s.spec,
            run: Some("r1"),
            status: "succeeded",
            exit_code: 0,
            took: Some(12.34),
            rto: Some(8.0),
        };
        let body = ended.body();
        assert_eq!(
            body["text"],
            "runbook: drill (failover) run r1 succeeded in 12.3 s; measured RTO 8.0 s"
        );
        assert_eq!(body["rto_seconds"], 8.0);
        assert_eq!(body["exit_code"], 0);
    }
}
