//! Reports of a run, from its journal: JSON and JUnit XML for pipelines
//! (`--report json=PATH`, `--report junit=PATH`), Markdown and HTML for people
//! (`runbook report RUN --format ...`): the timeline, each step's state and
//! duration, operator actions and approvals, and the measured recovery time and
//! point against the playbook's `objectives`, with a verdict.
//!
//! Measured values come from step outputs named `rto_seconds` and
//! `rpo_seconds` (directly or inside a `json` output); the last one recorded
//! wins. The library's DR playbooks produce them.

use crate::Exit;
use crate::args::ReportFormat;
use crate::history::{StepRow, steps};
use crate::runs::{open_run, runtime};
use runbook_core::kind::Registry;
use runbook_state::{Event, LogLine, Recorded, RunRecord, Store};
use serde::Serialize;
use serde_json::{Value as Json, json};
use std::path::PathBuf;

/// Everything a report says.
#[derive(Debug, Serialize)]
pub(crate) struct Report {
    run: String,
    playbook: String,
    version: u32,
    status: String,
    user: String,
    started: String,
    finished: String,
    duration_seconds: Option<f64>,
    plan_hash: String,
    inputs: Json,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    steps: Vec<StepRow>,
    /// The last log lines of each step that did not succeed.
    log_tails: std::collections::BTreeMap<String, Vec<String>>,
    operator_actions: Vec<Action>,
    objectives: Vec<Objective>,
    timeline: Vec<Moment>,
}

/// How many log lines of a step that did not succeed a report keeps.
const LOG_TAIL: usize = 20;

/// A person's action on the run.
#[derive(Debug, Serialize)]
struct Action {
    at: String,
    who: String,
    action: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    step: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    comment: Option<String>,
}

/// One objective, measured.
#[derive(Debug, Serialize)]
struct Objective {
    name: &'static str,
    target: String,
    target_seconds: Option<f64>,
    measured_seconds: Option<f64>,
    /// `met`, `missed`, or `not measured`.
    verdict: &'static str,
}

/// One line of the timeline.
#[derive(Debug, Serialize)]
struct Moment {
    at: String,
    what: String,
}

pub(crate) fn seconds_between(a: &str, b: &str) -> Option<f64> {
    let (a, b) = (humantime::parse_rfc3339(a).ok()?, humantime::parse_rfc3339(b).ok()?);
    b.duration_since(a).ok().map(|d| d.as_secs_f64())
}

/// Why the run last stopped, if it was not a success; an earlier stop's error
/// is history.
pub(crate) fn last_error(events: &[Recorded]) -> Option<String> {
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
pub(crate) fn measured(events: &[Recorded], key: &str) -> Option<f64> {
    events.iter().rev().find_map(|r| match &r.event {
        Event::StepSucceeded { outputs, .. } => outputs
            .get(key)
            .or_else(|| outputs.get("json").and_then(|j| j.get(key)))
            .and_then(Json::as_f64),
        _ => None,
    })
}

/// " on worker W" when a worker ran it.
fn on(runner: Option<&str>) -> String {
    runner.map(|r| format!(" on worker {r}")).unwrap_or_default()
}

fn moment(event: &Event) -> Option<String> {
    Some(match event {
        Event::RunQueued { user } => format!("run submitted by {user}"),
        Event::RunStarted { user, runner } => format!("run started by {user}{}", on(runner.as_deref())),
        Event::RunResumed { user, runner } => format!("run resumed by {user}{}", on(runner.as_deref())),
        Event::StepStarted { step, attempt } if *attempt > 1 => format!("{step} started (attempt {attempt})"),
        Event::StepStarted { step, .. } => format!("{step} started"),
        Event::StepSucceeded { step, .. } => format!("{step} succeeded"),
        Event::StepFailed { step, error, .. } => format!("{step} failed: {error}"),
        Event::StepSkipped { step, reason } => format!("{step} skipped: {reason}"),
        Event::StepInterrupted { step, .. } => format!("{step} interrupted"),
        Event::StepUndone { step } => format!("{step} undone"),
        Event::StepWaiting { step, message, .. } => format!("{step} waits for an approval: {message}"),
        Event::OperatorAction {
            action,
            step,
            who,
            comment,
            ..
        } => format!(
            "{who}: {action}{}{}",
            step.as_deref().map(|s| format!(" {s}")).unwrap_or_default(),
            comment.as_deref().map(|c| format!(" ({c})")).unwrap_or_default()
        ),
        Event::RunFinished { status, error } => format!(
            "run {}{}",
            status.as_str(),
            error.as_deref().map(|e| format!(": {e}")).unwrap_or_default()
        ),
        Event::ItemsResolved { .. } => return None,
    })
}

impl Report {
    pub(crate) fn build(record: &RunRecord, events: &[Recorded], logs: &[LogLine], registry: &Registry) -> Report {
        let steps = steps(events);
        let mut log_tails = std::collections::BTreeMap::new();
        for s in steps.iter().filter(|s| s.state != "succeeded" && s.state != "skipped") {
            let lines: Vec<&LogLine> = logs.iter().filter(|l| l.step == s.step).collect();
            let tail: Vec<String> = lines[lines.len().saturating_sub(LOG_TAIL)..]
                .iter()
                .map(|l| l.line.clone())
                .collect();
            if !tail.is_empty() {
                log_tails.insert(s.step.clone(), tail);
            }
        }
        let finished = events
            .last()
            .map(|r| r.at.clone())
            .unwrap_or_else(|| record.updated_at.clone());
        let error = last_error(events);
        let operator_actions = events
            .iter()
            .filter_map(|r| match &r.event {
                Event::OperatorAction {
                    action,
                    step,
                    who,
                    comment,
                    ..
                } => Some(Action {
                    at: r.at.clone(),
                    who: who.clone(),
                    action: action.clone(),
                    step: step.clone(),
                    comment: comment.clone(),
                }),
                _ => None,
            })
            .collect();
        Report {
            run: record.id.clone(),
            playbook: record.playbook.clone(),
            version: record.version,
            status: record.status.as_str().to_owned(),
            user: record.user.clone(),
            started: record.created_at.clone(),
            duration_seconds: seconds_between(&record.created_at, &finished),
            finished,
            plan_hash: crate::runs::plan_hash(record),
            inputs: record.inputs.clone(),
            error,
            steps,
            log_tails,
            operator_actions,
            objectives: objectives(record, events, registry),
            timeline: events
                .iter()
                .filter_map(|r| moment(&r.event).map(|what| Moment { at: r.at.clone(), what }))
                .collect(),
        }
    }

    pub(crate) fn render(&self, format: ReportFormat) -> String {
        match format {
            ReportFormat::Json => serde_json::to_string_pretty(self).unwrap_or_default(),
            ReportFormat::Junit => self.junit(),
            ReportFormat::Markdown => self.markdown(),
            ReportFormat::Html => self.html(),
        }
    }

    /// One test case per step call (and per skipped step); failures carry the
    /// error and the last log lines.
    fn junit(&self) -> String {
        use quick_junit::{NonSuccessKind, Property, Report, TestCase, TestCaseStatus, TestSuite};
        let seconds = |s: f64| std::time::Duration::from_secs_f64(s.max(0.0));
        let mut suite = TestSuite::new(format!("{} v{}", self.playbook, self.version));
        if let Ok(at) = chrono::DateTime::parse_from_rfc3339(&self.started) {
            suite.set_timestamp(at);
        }
        suite.set_time(seconds(self.duration_seconds.unwrap_or(0.0)));
        suite.add_properties([
            Property::new("run", self.run.as_str()),
            Property::new("status", self.status.as_str()),
            Property::new("plan_hash", self.plan_hash.as_str()),
        ]);
        for s in self.steps.iter().filter(|s| s.attempts > 0 || s.state == "skipped") {
            let error = s.error.clone().unwrap_or_default();
            let body = match self.log_tails.get(&s.step) {
                Some(tail) => format!("{error}\n--- last log lines ---\n{}", tail.join("\n")),
                None => error.clone(),
            };
            let status = match s.state.as_str() {
                "succeeded" => TestCaseStatus::success(),
                "skipped" => {
                    let mut st = TestCaseStatus::skipped();
                    st.set_message(error.as_str());
                    st
                }
                "failed" | "refused" => {
                    let mut st = TestCaseStatus::non_success(NonSuccessKind::Failure);
                    st.set_message(error.as_str())
                        .set_type("step failed")
                        .set_description(body);
                    st
                }
                other => {
                    let mut st = TestCaseStatus::non_success(NonSuccessKind::Error);
                    st.set_message(format!("the step is {other}: {error}"))
                        .set_type(other)
                        .set_description(body);
                    st
                }
            };
            let mut case = TestCase::new(s.step.as_str(), status);
            case.set_classname(self.playbook.as_str())
                .set_time(seconds(s.duration_ms.map_or(0.0, |m| m as f64 / 1000.0)));
            suite.add_test_case(case);
        }
        let mut report = Report::new("runbook");
        report.set_time(seconds(self.duration_seconds.unwrap_or(0.0)));
        report.add_test_suite(suite);
        report
            .to_string()
            .unwrap_or_else(|e| format!("<!-- cannot write the JUnit report: {e} -->\n"))
    }

    /// What the Markdown and HTML templates show: the report, with its
    /// durations and measurements in words.
    fn view(&self) -> Json {
        let steps: Vec<Json> = self
            .steps
            .iter()
            .map(|s| {
                json!({
                    "step": s.step,
                    "state": s.state,
                    "attempts": s.attempts,
                    "took": took(s.duration_ms.map(|ms| ms as f64 / 1000.0)),
                    "error": s.error.clone().unwrap_or_default(),
                })
            })
            .collect();
        let objectives: Vec<Json> = self
            .objectives
            .iter()
            .map(|o| {
                json!({
                    "name": o.name,
                    "target": o.target,
                    "measured": o.measured_seconds.map_or("-".to_owned(), |s| format!("{s:.1} s")),
                    "verdict": o.verdict,
                    "verdict_class": o.verdict.replace(' ', "-"),
                })
            })
            .collect();
        let tails: Vec<Json> = self
            .log_tails
            .iter()
            .map(|(step, tail)| json!({ "step": step, "text": tail.join("\n") }))
            .collect();
        let actions: Vec<Json> = self
            .operator_actions
            .iter()
            .map(|a| {
                json!({
                    "at": a.at,
                    "who": a.who,
                    "action": a.action,
                    "step": a.step.clone().unwrap_or_default(),
                    "comment": a.comment.clone().unwrap_or_default(),
                })
            })
            .collect();
        json!({
            "playbook": self.playbook,
            "version": self.version,
            "run": self.run,
            "status": self.status,
            "started": self.started,
            "finished": self.finished,
            "user": self.user,
            "plan_hash": self.plan_hash,
            "took": took(self.duration_seconds),
            "error": self.error,
            "objectives": objectives,
            "steps": steps,
            "tails": tails,
            "operator_actions": actions,
            "timeline": self.timeline,
        })
    }

    /// Renders a report template (handlebars), each value escaped by `escape`.
    fn fill(&self, template: &str, escape: fn(&str) -> String) -> String {
        let mut hb = handlebars::Handlebars::new();
        hb.set_strict_mode(true);
        hb.register_escape_fn(escape);
        hb.render_template(template, &self.view())
            .unwrap_or_else(|e| format!("cannot render the report: {e}\n"))
    }

    fn markdown(&self) -> String {
        self.fill(include_str!("report.md.hbs"), md)
    }

    fn html(&self) -> String {
        self.fill(include_str!("report.html.hbs"), xml)
    }
}

/// The playbook's RTO and RPO objectives against what the run measured.
fn objectives(record: &RunRecord, events: &[Recorded], registry: &Registry) -> Vec<Objective> {
    let source = runbook_core::diag::Source::new(format!("run {}", record.id), record.text.clone());
    let Ok(loaded) = runbook_core::validate::load(source, &runbook_core::validate::Expected::default(), registry)
    else {
        return Vec::new();
    };
    let Some(obj) = &loaded.playbook.objectives else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (name, target, key) in [("RTO", &obj.rto, "rto_seconds"), ("RPO", &obj.rpo, "rpo_seconds")] {
        let Some(target) = target else { continue };
        let target_seconds = runbook_core::inputs::parse_duration(target)
            .ok()
            .map(|d| d.as_secs_f64());
        let measured_seconds = measured(events, key);
        let verdict = match (measured_seconds, target_seconds) {
            (Some(m), Some(t)) if m <= t => "met",
            (Some(_), Some(_)) => "missed",
            _ => "not measured",
        };
        out.push(Objective {
            name,
            target: target.clone(),
            target_seconds,
            measured_seconds,
            verdict,
        });
    }
    out
}

fn took(s: Option<f64>) -> String {
    s.map(|s| crate::observe::short(std::time::Duration::from_secs_f64(s.max(0.0))))
        .unwrap_or_default()
}

/// Text escaped for XML and HTML.
fn xml(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&apos;"),
            c if (c as u32) < 0x20 && c != '\n' && c != '\t' => o.push(' '),
            c => o.push(c),
        }
    }
    o
}

/// Text for a Markdown table cell: one line, pipes escaped.
fn md(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

/// `runbook report RUN --format ...`: prints the report.
pub(crate) fn report(state: Option<PathBuf>, registry: &Registry, id: &str, format: ReportFormat) -> Exit {
    let Some(rt) = runtime() else { return Exit::Invalid };
    rt.block_on(async {
        let Some((store, record)) = open_run(state, id).await else {
            return Exit::Invalid;
        };
        match (store.events(&record.id).await, store.logs(&record.id, None, 0).await) {
            (Ok(events), Ok(logs)) => {
                let logs: Vec<LogLine> = logs.into_iter().map(|(_, l)| l).collect();
                print!("{}", Report::build(&record, &events, &logs, registry).render(format));
                Exit::Ok
            }
            (Err(e), _) | (_, Err(e)) => {
                eprintln!("error: {e}");
                Exit::Invalid
            }
        }
    })
}

/// `--report FORMAT=PATH`: writes the reports once the run stops.
pub(crate) async fn write_all(
    store: &dyn Store,
    registry: &Registry,
    run_id: &str,
    wanted: &[(ReportFormat, PathBuf)],
) {
    if wanted.is_empty() {
        return;
    }
    let (record, events, logs) = match (
        store.run(run_id).await,
        store.events(run_id).await,
        store.logs(run_id, None, 0).await,
    ) {
        (Ok(r), Ok(e), Ok(l)) => (r, e, l),
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
            eprintln!("warning: no report: {e}");
            return;
        }
    };
    let logs: Vec<LogLine> = logs.into_iter().map(|(_, l)| l).collect();
    let report = Report::build(&record, &events, &logs, registry);
    for (format, path) in wanted {
        if let Err(e) = std::fs::write(path, report.render(*format)) {
            eprintln!("warning: cannot write the report {}: {e}", path.display());
        }
    }
}

/// Parses `--report FORMAT=PATH`.
pub(crate) fn parse_spec(spec: &str) -> Result<(ReportFormat, PathBuf), String> {
    let (format, path) = spec
        .split_once('=')
        .ok_or_else(|| format!("--report {spec}: write FORMAT=PATH, e.g. junit=report.xml"))?;
    let format = match format {
        "junit" => ReportFormat::Junit,
        "json" => ReportFormat::Json,
        "markdown" => ReportFormat::Markdown,
        "html" => ReportFormat::Html,
        other => {
            return Err(format!(
                "--report {spec}: unknown format `{other}` (junit, json, markdown, html)"
            ));
        }
    };
    Ok((format, PathBuf::from(path)))
}
