//! What a person or a pipeline sees while a run executes.
//!
//! Text: one line per step transition and per log line, prefixed with the step
//! path, flushed as it happens (fine on a terminal and in CI logs). JSON
//! (`--output json`): one object per line, the journal event plus `run` and
//! `at`, or `{"event":"log",...}` for a log line; the schema is in the book.

use runbook_engine::exec::Observer;
use runbook_state::{Event, LogLine, RunStatus, Stream};
use std::collections::HashMap;
use std::io::Write;
use std::sync::Mutex;
use std::time::Instant;

/// Progress lines for people.
#[derive(Default)]
pub(crate) struct Text {
    started: Mutex<HashMap<String, Instant>>,
}

fn out(line: &str) {
    let mut o = std::io::stdout().lock();
    let _ = writeln!(o, "{line}");
    let _ = o.flush();
}

impl Observer for Text {
    fn event(&self, run: &str, event: &Event) {
        let took = |step: &str| {
            self.started
                .lock()
                .ok()
                .and_then(|m| m.get(step).map(|t| format!(" ({})", short(t.elapsed()))))
                .unwrap_or_default()
        };
        match event {
            Event::RunStarted { .. } => out(&format!("run {run} started")),
            Event::RunResumed { .. } => out(&format!("run {run} resumed")),
            Event::StepStarted { step, attempt } => {
                if let Ok(mut m) = self.started.lock() {
                    m.insert(step.clone(), Instant::now());
                }
                let again = if *attempt > 1 {
                    format!(" (attempt {attempt})")
                } else {
                    String::new()
                };
                out(&format!("▶ {step}{again}"));
            }
            Event::StepSucceeded { step, .. } => out(&format!("✓ {step}{}", took(step))),
            Event::StepFailed {
                step,
                error,
                will_retry,
                ..
            } => {
                let retry = if *will_retry { ", will retry" } else { "" };
                out(&format!("✗ {step}{}: {error}{retry}", took(step)));
            }
            Event::StepSkipped { step, reason } => out(&format!("↷ {step} skipped: {reason}")),
            Event::StepInterrupted { step, .. } => out(&format!("■ {step} interrupted{}", took(step))),
            Event::ItemsResolved { step, items } => out(&format!("  {step}: {} items", items.len())),
            Event::OperatorAction { action, step, who } => {
                out(&format!(
                    "  {who}: {action}{}",
                    step.as_deref().map(|s| format!(" {s}")).unwrap_or_default()
                ));
            }
            Event::RunFinished { status, error } => {
                let why = error.as_deref().map(|e| format!(": {e}")).unwrap_or_default();
                let mark = if *status == RunStatus::Succeeded { "✓" } else { "✗" };
                out(&format!("{mark} run {run} {}{why}", status.as_str()));
            }
        }
    }

    fn log(&self, line: &LogLine) {
        let mark = match line.stream {
            Stream::Stdout => "│",
            Stream::Stderr => "┃",
        };
        out(&format!("  {} {mark} {}", line.step, line.line));
    }
}

/// `12ms`, `1.4s`, `2m03s`.
pub(crate) fn short(d: std::time::Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{:.1}s", d.as_secs_f64())
    } else {
        format!("{}m{:02}s", ms / 60_000, (ms / 1000) % 60)
    }
}

/// One JSON object per line.
#[derive(Default)]
pub(crate) struct JsonLines;

impl Observer for JsonLines {
    fn event(&self, run: &str, event: &Event) {
        let mut v = serde_json::to_value(event).unwrap_or_default();
        if let Some(m) = v.as_object_mut() {
            m.insert("run".into(), run.into());
            m.insert("at".into(), runbook_state::now().into());
        }
        out(&v.to_string());
    }

    fn log(&self, line: &LogLine) {
        let mut v = serde_json::to_value(line).unwrap_or_default();
        if let Some(m) = v.as_object_mut() {
            m.insert("event".into(), "log".into());
        }
        out(&v.to_string());
    }
}
