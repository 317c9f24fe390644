//! The reports: one `Report` built from the journal, rendered as JSON, JUnit
//! XML, or (through the handlebars templates next to this file) Markdown and
//! HTML, each value escaped for its format.

use crate::fold::{StepRow, last_error, measured, plan_hash, seconds_between, short, steps};
use runbook_core::model::Objectives;
use runbook_state::{Event, LogLine, Recorded, RunRecord};
use serde::Serialize;
use serde_json::{Value as Json, json};

/// A report's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Everything, as JSON (for tools).
    Json,
    /// JUnit XML: a test case per step (for CI).
    Junit,
    /// Markdown (for a ticket or a post-mortem).
    Markdown,
    /// A standalone HTML page.
    Html,
}

impl std::str::FromStr for Format {
    type Err = String;

    fn from_str(s: &str) -> Result<Format, String> {
        Ok(match s {
            "json" => Format::Json,
            "junit" => Format::Junit,
            "markdown" => Format::Markdown,
            "html" => Format::Html,
            other => return Err(format!("unknown format `{other}` (junit, json, markdown, html)")),
        })
    }
}

/// Everything a report says.
#[derive(Debug, Serialize)]
pub struct Report {
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
    /// The timeline as a Gantt chart (SVG), for the HTML report.
    #[serde(skip)]
    chart: String,
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
        Event::ItemsResolved { .. } | Event::Sealed { .. } | Event::MaskRegistered { .. } | Event::Contained { .. } => {
            return None;
        }
    })
}

impl Report {
    /// The report of a run from its record, journal and log, against the
    /// playbook's `objectives` (None: it has none).
    pub fn build(record: &RunRecord, events: &[Recorded], logs: &[LogLine], objectives: Option<&Objectives>) -> Report {
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
            plan_hash: plan_hash(record),
            inputs: record.inputs.clone(),
            error,
            steps,
            log_tails,
            operator_actions,
            objectives: measure(objectives, events),
            timeline: events
                .iter()
                .filter_map(|r| moment(&r.event).map(|what| Moment { at: r.at.clone(), what }))
                .collect(),
            chart: crate::timeline::svg(events, crate::timeline::Against::of(events, objectives), None),
        }
    }

    /// The report in `format`.
    pub fn render(&self, format: Format) -> String {
        match format {
            Format::Json => serde_json::to_string_pretty(self).unwrap_or_default(),
            Format::Junit => self.junit(),
            Format::Markdown => self.markdown(),
            Format::Html => self.html(),
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
            "chart": self.chart,
            "timeline_count": self.timeline.len(),
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
fn measure(objectives: Option<&Objectives>, events: &[Recorded]) -> Vec<Objective> {
    let Some(obj) = objectives else {
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
    s.map(|s| short(std::time::Duration::from_secs_f64(s.max(0.0))))
        .unwrap_or_default()
}

/// Text escaped for XML and HTML (and SVG).
pub fn xml(s: &str) -> String {
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
