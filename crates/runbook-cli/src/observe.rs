//! What a person or a pipeline sees while a run executes.
//!
//! Text: one line per step transition and per log line, prefixed with the step
//! path, flushed as it happens (fine on a terminal and in CI logs). JSON
//! (`--output json`): one object per line, the journal event plus `run` and
//! `at`, or `{"event":"log",...}` for a log line; the schema is in the book.

use runbook_engine::exec::Observer;
use runbook_report::short;
use runbook_runner::{Notice, Watcher, text};
use runbook_state::{Event, LogLine, RunStatus, Stream};
use std::collections::HashMap;
use std::io::Write;
use std::sync::Mutex;
use std::time::SystemTime;

/// Progress lines for people: on a terminal, live bars for running steps and
/// fan-outs above the lines; elsewhere, the lines alone.
#[derive(Default)]
pub(crate) struct Text {
    started: Mutex<HashMap<String, SystemTime>>,
    /// When the event being shown happened, if not now (a followed run).
    clock: Mutex<Option<SystemTime>>,
    live: Option<Live>,
    /// Put before every line (a worker's runs interleave: the run's id).
    prefix: String,
}

/// The live part: one spinner per running step, one n/m bar per fan-out.
struct Live {
    multi: indicatif::MultiProgress,
    bars: Mutex<HashMap<String, indicatif::ProgressBar>>,
}

impl Text {
    /// Live bars when stdout is a terminal and `--no-progress` was not given.
    pub(crate) fn new(progress: bool) -> Text {
        use std::io::IsTerminal;
        let live = (progress && std::io::stdout().is_terminal() && !in_ci()).then(|| Live {
            multi: indicatif::MultiProgress::new(),
            bars: Mutex::new(HashMap::new()),
        });
        Text {
            started: Mutex::default(),
            clock: Mutex::default(),
            live,
            prefix: String::new(),
        }
    }

    /// Every line starts with `prefix` (no live bars).
    pub(crate) fn prefixed(prefix: String) -> Text {
        Text {
            started: Mutex::default(),
            clock: Mutex::default(),
            live: None,
            prefix,
        }
    }

    /// The time the event being shown happened.
    fn now(&self) -> SystemTime {
        self.clock.lock().ok().and_then(|c| *c).unwrap_or_else(SystemTime::now)
    }

    /// Shows an event recorded earlier (a run followed from the journal), with
    /// durations from the recorded times.
    pub(crate) fn recorded(&self, run: &str, rec: &runbook_state::Recorded) {
        let at = humantime::parse_rfc3339(&rec.at).ok();
        if let Ok(mut c) = self.clock.lock() {
            *c = at;
        }
        self.event(run, &rec.event);
        if let Ok(mut c) = self.clock.lock() {
            *c = None;
        }
    }

    fn out(&self, line: &str) {
        match &self.live {
            Some(live) => {
                let _ = live.multi.println(line);
            }
            None if self.prefix.is_empty() => out(line),
            None => out(&format!("{}{line}", self.prefix)),
        }
    }

    fn bar_start(&self, step: &str, total: Option<u64>) {
        let Some(live) = &self.live else { return };
        let bar = match total {
            Some(n) => {
                let b = live.multi.add(indicatif::ProgressBar::new(n));
                b.set_style(
                    indicatif::ProgressStyle::with_template("  {prefix} {bar:20} {pos}/{len} {elapsed}")
                        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
                );
                b
            }
            None => {
                let b = live.multi.add(indicatif::ProgressBar::new_spinner());
                b.set_style(
                    indicatif::ProgressStyle::with_template("  {spinner} {prefix} {elapsed}")
                        .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
                );
                b.enable_steady_tick(std::time::Duration::from_millis(120));
                b
            }
        };
        bar.set_prefix(step.to_owned());
        if let Ok(mut bars) = live.bars.lock() {
            bars.insert(step.to_owned(), bar);
        }
    }

    fn bar_end(&self, step: &str) {
        let Some(live) = &self.live else { return };
        let Ok(mut bars) = live.bars.lock() else { return };
        if let Some(b) = bars.remove(step) {
            b.finish_and_clear();
            live.multi.remove(&b);
        }
        // A finished item moves its fan-out's bar: `roll[web2]` belongs to `roll`.
        if let Some(parent) = step.strip_suffix(']').and_then(|s| s.rsplit_once('[')).map(|(p, _)| p) {
            if let Some(b) = bars.get(parent) {
                b.inc(1);
            }
        }
    }
}

fn out(line: &str) {
    let mut o = std::io::stdout().lock();
    let _ = writeln!(o, "{line}");
    let _ = o.flush();
}

/// A followed run's events and lines, as text or JSON lines.
pub(crate) enum Shown {
    /// For people.
    Text(Text),
    /// For programs.
    Json,
}

impl Shown {
    pub(crate) fn new(output: crate::args::Output) -> Shown {
        match output {
            crate::args::Output::Text => Shown::Text(Text::new(false)),
            crate::args::Output::Json => Shown::Json,
        }
    }
}

impl runbook_runner::follow::Follower for Shown {
    fn recorded(&self, run: &str, rec: &runbook_state::Recorded) {
        match self {
            Shown::Text(t) => t.recorded(run, rec),
            Shown::Json => JsonLines::recorded(run, rec),
        }
    }
    fn log(&self, _: i64, line: &LogLine) {
        match self {
            Shown::Text(t) => t.log(line),
            Shown::Json => JsonLines.log(line),
        }
    }
    fn unreachable(&self, error: &runbook_state::StoreError) {
        // On stderr in both forms: the run goes on, this follower retries.
        eprintln!("warning: {error}; trying again (the run goes on in its worker)");
    }
}

/// Shows nothing (what the caller prints itself).
pub(crate) struct Quiet;

impl Observer for Quiet {
    fn event(&self, _: &str, _: &Event) {}
    fn log(&self, _: &LogLine) {}
}

impl Watcher for Quiet {
    fn notice(&self, _: &Notice) {}
}

/// Notices go to stderr, after the run's prefix.
impl Watcher for Text {
    fn notice(&self, notice: &Notice) {
        eprintln!("{}{notice}", self.prefix);
    }
}

impl Observer for Text {
    fn event(&self, run: &str, event: &Event) {
        let took = |step: &str| {
            self.started
                .lock()
                .ok()
                .and_then(|m| {
                    let took = self.now().duration_since(*m.get(step)?).unwrap_or_default();
                    Some(format!(" ({})", short(took)))
                })
                .unwrap_or_default()
        };
        match event {
            Event::RunQueued { .. } => self.out(&format!("run {run} queued")),
            Event::RunStarted { runner: None, .. } => self.out(&format!("run {run} started")),
            Event::RunResumed { runner: None, .. } => self.out(&format!("run {run} resumed")),
            Event::RunStarted { runner: Some(w), .. } => self.out(&format!("run {run} started on worker {w}")),
            Event::RunResumed { runner: Some(w), .. } => self.out(&format!("run {run} taken up by worker {w}")),
            Event::StepStarted { step, attempt } => {
                if let Ok(mut m) = self.started.lock() {
                    m.insert(step.clone(), self.now());
                }
                let again = if *attempt > 1 {
                    format!(" (attempt {attempt})")
                } else {
                    String::new()
                };
                self.out(&format!("▶ {step}{again}"));
            }
            Event::StepSucceeded { step, .. } => {
                self.bar_end(step);
                self.out(&format!("✓ {step}{}", took(step)));
            }
            Event::StepFailed {
                step,
                error,
                will_retry,
                ..
            } => {
                let retry = if *will_retry { ", will retry" } else { "" };
                self.out(&format!("✗ {step}{}: {error}{retry}", took(step)));
            }
            Event::StepSkipped { step, reason } => {
                self.bar_end(step);
                self.out(&format!("↷ {step} skipped: {reason}"));
            }
            Event::StepInterrupted { step, .. } => {
                self.bar_end(step);
                self.out(&format!("■ {step} interrupted{}", took(step)));
            }
            Event::StepUndone { step } => self.out(&format!("↺ {step} undone (it runs again on resume)")),
            Event::ItemsResolved { step, items } => {
                self.bar_start(step, Some(items.len() as u64));
                self.out(&format!("  {step}: {} items", items.len()));
            }
            Event::Contained { stopped, .. } => stopped.iter().for_each(|c| self.out(&text::stopped_earlier(c))),
            // Bookkeeping for resume, nothing a person follows.
            Event::Sealed { .. } | Event::MaskRegistered { .. } => {}
            Event::StepWaiting { step, message, .. } => {
                self.bar_end(step);
                self.out(&format!("⏸ {step} waits for an approval: {message}"));
            }
            Event::OperatorAction {
                action,
                step,
                who,
                comment,
                ..
            } => {
                self.out(&format!(
                    "  {who}: {action}{}{}",
                    step.as_deref().map(|s| format!(" {s}")).unwrap_or_default(),
                    comment.as_deref().map(|c| format!(" ({c})")).unwrap_or_default()
                ));
            }
            Event::RunFinished { status, error } => {
                if let Some(live) = &self.live {
                    if let Ok(mut bars) = live.bars.lock() {
                        for (_, b) in bars.drain() {
                            b.finish_and_clear();
                        }
                    }
                }
                let why = error.as_deref().map(|e| format!(": {e}")).unwrap_or_default();
                let mark = match status {
                    RunStatus::Succeeded => "✓",
                    RunStatus::Waiting => "⏸",
                    _ => "✗",
                };
                self.out(&format!("{mark} run {run} {}{why}", status.as_str()));
            }
        }
    }

    fn log(&self, line: &LogLine) {
        let mark = match line.stream {
            Stream::Stdout => "│",
            Stream::Stderr => "┃",
        };
        self.out(&format!("  {} {mark} {}", line.step, line.line));
    }
}

/// True in a CI pipeline (`CI` set, as GitHub Actions, GitLab CI, Buildkite and
/// Jenkins' plugins set it): plain lines, no live progress bars.
pub(crate) fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// One JSON object per line.
#[derive(Default)]
pub(crate) struct JsonLines;

impl JsonLines {
    /// An event recorded earlier (a run followed from the journal), with the
    /// time it was recorded.
    pub(crate) fn recorded(run: &str, rec: &runbook_state::Recorded) {
        Self::print(run, &rec.event, &rec.at);
    }

    fn print(run: &str, event: &Event, at: &str) {
        out(&runbook_runner::catalog::event_line(run, event, at));
    }
}

/// Notices are for people: stderr, so stdout stays one JSON object per line.
impl Watcher for JsonLines {
    fn notice(&self, notice: &Notice) {
        eprintln!("{notice}");
    }
}

impl Observer for JsonLines {
    fn event(&self, run: &str, event: &Event) {
        Self::print(run, event, &runbook_state::now());
    }

    fn log(&self, line: &LogLine) {
        out(&runbook_runner::catalog::log_line(line));
    }
}
