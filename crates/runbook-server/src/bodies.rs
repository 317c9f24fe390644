//! The JSON bodies the API answers with that are its own (the library's,
//! a run's and a plan's documents are runbook-runner's and the engine's).

use runbook_state::LogLine;
use schemars::JsonSchema;
use serde::Serialize;

/// `GET /api/v1/health`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Health {
    /// Always true when it answers.
    pub ok: bool,
    /// runbook's version.
    pub version: String,
}

/// A plan, and its text as `runbook plan` prints it.
#[derive(Debug, Serialize, JsonSchema)]
pub struct PlanDoc {
    /// The plan.
    pub plan: runbook_engine::plan::Plan,
    /// The same, one line per step.
    pub text: String,
}

/// A run was recorded.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Started {
    /// Its id.
    pub run: String,
}

/// What continuing a run did.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Continued {
    /// The run.
    pub run: String,
    /// How it stopped, or `running` while it goes on (202).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// What was done, when it is not a status (a cancel requested).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// One log line with its place in the run's log.
#[derive(Debug, Serialize, JsonSchema)]
pub struct LogEntry {
    /// Its sequence number (`after` continues from it).
    pub seq: i64,
    /// The line.
    #[serde(flatten)]
    pub line: LogLine,
}

/// A page of a run's log.
#[derive(Debug, Serialize, JsonSchema)]
pub struct LogsPage {
    /// The run.
    pub run: String,
    /// The lines, oldest first.
    pub lines: Vec<LogEntry>,
    /// The `after` that reads what comes next.
    pub next: i64,
    /// The `before` that reads the page before this one, when there may be
    /// one (a page read from the end that came back full).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub before: Option<i64>,
}

/// A run as `GET /api/v1/runs/{id}` shows it: its status document and
/// what the caller may do with it.
#[derive(Debug, Serialize, JsonSchema)]
pub struct RunView {
    /// The run and each of its steps (as `runbook status RUN --output json`).
    #[serde(flatten)]
    pub status: runbook_runner::catalog::Status,
    /// What the caller may do with it, by its role on the run's playbook.
    pub may: May,
    /// The objectives of the playbook it runs (its text as stored with the
    /// run), which its elapsed time and measurements are judged against.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub objectives: Option<runbook_core::model::Objectives>,
    /// The recovery time it measured (`rto_seconds`), if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rto_seconds: Option<f64>,
}

/// What a caller may do with a run.
#[derive(Debug, Serialize, JsonSchema)]
pub struct May {
    /// Approve or reject its approvals (role `approver`).
    pub answer: bool,
    /// Resume or cancel it (role `operator`).
    pub operate: bool,
}

/// A refused request.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ErrorBody {
    /// What went wrong (the words the command line uses).
    pub error: String,
    /// What to do about it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    /// Located diagnostics (a playbook) or one entry per input.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<serde_json::Value>,
}
