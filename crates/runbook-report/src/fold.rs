//! The journal, step by step: each step's last state, attempts and duration,
//! and the numbers and errors a run recorded.

use runbook_state::{Event, Recorded, RunRecord};
use serde_json::Value as Json;
use std::time::{Duration, SystemTime};

fn parse_time(s: &str) -> Option<SystemTime> {
    humantime::parse_rfc3339(s).ok()
}

fn between(a: &str, b: &str) -> Option<Duration> {
    parse_time(b)?.duration_since(parse_time(a)?).ok()
}

/// Seconds from one RFC 3339 time to a later one.
pub fn seconds_between(a: &str, b: &str) -> Option<f64> {
    between(a, b).map(|d| d.as_secs_f64())
}

/// The workers that ran a run, in the order they took it.
pub fn runners(events: &[Recorded]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for rec in events {
        if let Event::RunStarted { runner: Some(r), .. } | Event::RunResumed { runner: Some(r), .. } = &rec.event {
            if out.last() != Some(r) {
                out.push(r.clone());
            }
        }
    }
    out
}

/// Why the run last stopped, if it was not a success; an earlier stop's error
/// is history.
pub fn last_error(events: &[Recorded]) -> Option<String> {
    events
        .iter()
        .rev()
        .find_map(|r| match &r.event {
            Event::RunFinished { error, .. } => Some(error.clone()),
            _ => None,
        })
        .flatten()
}

/// The last number recorded under `key` in a step's outputs (or their `json`).
pub fn measured(events: &[Recorded], key: &str) -> Option<f64> {
    events.iter().rev().find_map(|r| match &r.event {
        Event::StepSucceeded { outputs, .. } => outputs
            .get(key)
            .or_else(|| outputs.get("json").and_then(|j| j.get(key)))
            .and_then(Json::as_f64),
        _ => None,
    })
}

/// The SHA-256 of a text, in hex.
pub fn sha256_hex(text: &str) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// What a run executes, and what an approval is bound to: its playbook text
/// (its hash) and inputs, hashed together (shown by `plan` before, and by
/// `status` and the reports after).
pub fn plan_hash(record: &RunRecord) -> String {
    sha256_hex(&format!("{}\n{}", record.hash, record.inputs))
}

/// A duration as people read it in a table: `850ms`, `4.2s`, `3m05s`.
pub fn short(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{:.1}s", d.as_secs_f64())
    } else {
        format!("{}m{:02}s", ms / 60_000, (ms / 1000) % 60)
    }
}

/// One step's story, from its events.
#[derive(Debug, Clone, serde::Serialize, schemars::JsonSchema)]
pub struct StepRow {
    /// The step path (`roll[web1].deploy`).
    pub step: String,
    /// Its last state: succeeded, failed, refused (failed before its action
    /// began), retrying, skipped, interrupted, waiting, undone, running.
    pub state: String,
    /// Attempts started.
    pub attempts: u32,
    /// From its first start to its last end, in milliseconds.
    pub duration_ms: Option<u64>,
    /// Why it failed, was skipped, or waits.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The worker that last started it (runs of the queue).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runner: Option<String>,
    /// What a gate measured when it passed (`p95 120 ms · errors 0.5%`),
    /// from its outputs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub measured: Option<String>,
}

/// The outputs that are a gate's measurements, and how each reads.
const MEASURES: &[(&str, &str, f64, &str)] = &[
    ("p50_ms", "p50", 1.0, " ms"),
    ("p95_ms", "p95", 1.0, " ms"),
    ("p99_ms", "p99", 1.0, " ms"),
    ("error_rate", "errors", 100.0, "%"),
    ("latency_ms", "latency", 1.0, " ms"),
    ("lag_bytes", "lag", 1.0, " B"),
    ("rto_seconds", "RTO", 1.0, " s"),
    ("rpo_seconds", "RPO", 1.0, " s"),
];

/// A step's measurements in a few words, if its outputs (or their `json`)
/// have any.
fn measured_text(outputs: &Json) -> Option<String> {
    let parts: Vec<String> = MEASURES
        .iter()
        .filter_map(|(key, name, scale, unit)| {
            let found = outputs
                .get(*key)
                .or_else(|| outputs.get("json").and_then(|j| j.get(*key)));
            let v = found.and_then(Json::as_f64)?;
            let v = v * scale;
            let shown = if v.fract() == 0.0 {
                format!("{v:.0}")
            } else {
                format!("{v:.1}")
            };
            Some(format!("{name} {shown}{unit}"))
        })
        .collect();
    (!parts.is_empty()).then(|| parts.join(" · "))
}

/// Every step path in the order it first appeared, with its last state (the
/// rows of the journal's one fold, [`crate::replay::Replay`]).
pub fn steps(events: &[Recorded]) -> Vec<StepRow> {
    crate::replay::Replay::new(events).rows
}

/// The step rows, built event by event as the journal is folded.
#[derive(Default)]
pub(crate) struct Rows {
    rows: Vec<StepRow>,
    index: std::collections::HashMap<String, usize>,
    first_start: Vec<Option<String>>,
    runner: Option<String>,
}

impl Rows {
    fn row(&mut self, step: &str) -> usize {
        if let Some(i) = self.index.get(step) {
            return *i;
        }
        self.rows.push(StepRow {
            step: step.to_owned(),
            state: String::new(),
            attempts: 0,
            duration_ms: None,
            error: None,
            runner: None,
            measured: None,
        });
        self.first_start.push(None);
        self.index.insert(step.to_owned(), self.rows.len() - 1);
        self.rows.len() - 1
    }

    /// From the step's first start to `at`, in milliseconds.
    fn took(&self, i: usize, at: &str) -> Option<u64> {
        self.first_start[i]
            .as_deref()
            .and_then(|s| between(s, at))
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub(crate) fn apply(&mut self, rec: &Recorded) {
        let at = &rec.at;
        match &rec.event {
            Event::RunStarted { runner: r, .. } | Event::RunResumed { runner: r, .. } => self.runner = r.clone(),
            Event::StepStarted { step, attempt } => {
                let i = self.row(step);
                self.rows[i].runner = self.runner.clone();
                self.rows[i].state = "running".into();
                self.rows[i].attempts = self.rows[i].attempts.max(*attempt);
                self.first_start[i].get_or_insert_with(|| at.clone());
            }
            Event::StepSucceeded { step, outputs, .. } => {
                let i = self.row(step);
                self.rows[i].state = "succeeded".into();
                self.rows[i].error = None;
                self.rows[i].measured = measured_text(outputs);
                self.rows[i].duration_ms = self.took(i, at);
            }
            Event::StepFailed {
                step,
                error,
                will_retry,
                attempt,
            } => {
                let i = self.row(step);
                self.rows[i].state = if *will_retry {
                    "retrying".into()
                } else if *attempt == 0 {
                    // It failed before its action began (its parameters did
                    // not render, its condition did not decide): it never acted.
                    "refused".into()
                } else {
                    "failed".into()
                };
                self.rows[i].error = Some(error.clone());
                self.rows[i].duration_ms = self.took(i, at);
            }
            Event::StepSkipped { step, reason } => {
                let i = self.row(step);
                self.rows[i].state = "skipped".into();
                self.rows[i].error = Some(reason.clone());
            }
            Event::StepInterrupted { step, .. } => {
                let i = self.row(step);
                self.rows[i].state = "interrupted".into();
            }
            Event::StepUndone { step } => {
                let i = self.row(step);
                self.rows[i].state = "undone".into();
            }
            Event::StepWaiting { step, message, .. } => {
                let i = self.row(step);
                self.rows[i].state = "waiting".into();
                self.rows[i].error = Some(message.clone());
            }
            _ => {}
        }
    }

    pub(crate) fn finish(self) -> Vec<StepRow> {
        self.rows
    }
}
