//! The journal's vocabulary: what happened to a run, one event at a time.
//!
//! Step addresses are paths: `deploy`, `roll[web2].deploy`,
//! `roll[web2].on_failure.1`, `finally.1`, so that resume works per item.

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

/// Where a run stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Executing (or its runner died; see `runbook status`).
    Running,
    /// Every step succeeded (or was skipped, or failed with `continue_on_error`).
    Succeeded,
    /// A step failed; handlers ran.
    Failed,
    /// Stopped by a signal; resumable.
    Interrupted,
    /// Stopped because a non-idempotent step may or may not have taken effect;
    /// an operator answers with `resume --rerun STEP` or `--mark-done STEP`.
    Uncertain,
    /// Stopped by `runbook cancel`; not resumable.
    Cancelled,
    /// Paused at an approval: `runbook approve` (or `reject`) answers it.
    Waiting,
    /// Submitted with `run --submit`; a `runbook worker` will claim it.
    Queued,
}

impl RunStatus {
    /// The word used in tables and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::Interrupted => "interrupted",
            RunStatus::Uncertain => "uncertain",
            RunStatus::Cancelled => "cancelled",
            RunStatus::Waiting => "waiting",
            RunStatus::Queued => "queued",
        }
    }

    /// True if the run can continue with `resume`.
    pub fn resumable(self) -> bool {
        matches!(
            self,
            RunStatus::Running | RunStatus::Failed | RunStatus::Interrupted | RunStatus::Uncertain | RunStatus::Waiting
        )
    }

    /// Parses the stored word.
    pub fn parse(s: &str) -> Option<RunStatus> {
        Some(match s {
            "running" => RunStatus::Running,
            "succeeded" => RunStatus::Succeeded,
            "failed" => RunStatus::Failed,
            "interrupted" => RunStatus::Interrupted,
            "uncertain" => RunStatus::Uncertain,
            "cancelled" => RunStatus::Cancelled,
            "waiting" => RunStatus::Waiting,
            "queued" => RunStatus::Queued,
            _ => return None,
        })
    }
}

/// One thing that happened to a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// The run was submitted to the queue (`run --submit`); a worker starts it.
    RunQueued {
        /// Who submitted it.
        user: String,
    },
    /// The run began.
    RunStarted {
        /// Who started it.
        user: String,
        /// The worker executing it (`runbook worker --name`); absent when the
        /// run executes in the process that started it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        runner: Option<String>,
    },
    /// A later process took the run up again.
    RunResumed {
        /// Who resumed it.
        user: String,
        /// The worker that took it up, as in `run_started`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        runner: Option<String>,
    },
    /// A step (attempt) began; recorded before its side effect starts.
    StepStarted {
        /// The step path.
        step: String,
        /// 1-based attempt.
        attempt: u32,
    },
    /// A step succeeded; recorded before anything that depends on it starts.
    StepSucceeded {
        /// The step path.
        step: String,
        /// The attempt that succeeded.
        attempt: u32,
        /// Its outputs (secrets masked).
        outputs: Json,
    },
    /// An attempt failed.
    StepFailed {
        /// The step path.
        step: String,
        /// The attempt.
        attempt: u32,
        /// Why (secrets masked).
        error: String,
        /// Another attempt follows.
        will_retry: bool,
    },
    /// The step did not run.
    StepSkipped {
        /// The step path.
        step: String,
        /// Why.
        reason: String,
    },
    /// The step was running when the run was stopped: its effect is unknown.
    StepInterrupted {
        /// The step path.
        step: String,
        /// The attempt.
        attempt: u32,
    },
    /// A succeeded step's `undo` ran (the run failed): its effect was taken
    /// back, so a resume runs the step again.
    StepUndone {
        /// The step path.
        step: String,
    },
    /// The step needs a person's answer (an approval); the run pauses.
    StepWaiting {
        /// The step path.
        step: String,
        /// What the person is asked (secrets masked).
        message: String,
        /// When the question expires (RFC 3339), if it does.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        expires_at: Option<String>,
    },
    /// A `for_each` list as resolved when the fan-out started; resume reuses it.
    ItemsResolved {
        /// The step path of the `for_each` step.
        step: String,
        /// The items.
        items: Vec<Json>,
    },
    /// The run's inputs (no `step`) or a `for_each`'s items (its `step`) with
    /// each secret value they hold written as a reference to the secret's
    /// name, never the value: resume fetches the secrets again and gives
    /// the steps the values the first attempt had. Journalled only where a
    /// secret occurs (elsewhere the journal's copy is the value itself).
    Sealed {
        /// The step path of the `for_each` step; absent for the inputs.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        step: Option<String>,
        /// The value, secrets as references.
        value: Json,
    },
    /// A value a step registered as secret (`::add-mask::`, `secret_outputs`),
    /// sealed under the runner's mask key (never in clear): resume opens it
    /// and masks it again.
    MaskRegistered {
        /// Base64 of the nonce and the ciphertext (ChaCha20-Poly1305).
        sealed: String,
    },
    /// The runner holds the processes of its steps in this cgroup (on
    /// `host`): a later runner of the run on that host stops whatever is
    /// left in it before it decides anything.
    Contained {
        /// The host's name.
        host: String,
        /// The run's cgroup folder.
        cgroup: String,
        /// Folders of earlier runners of this run on this host in which
        /// processes were still running, and were stopped.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        stopped: Vec<String>,
    },
    /// A person decided something about the run.
    OperatorAction {
        /// `rerun`, `mark-done`, `cancel`, `approve`, `reject`, `unlock`,
        /// `to-current`, or `ask-again` (a question asked anew: it expired,
        /// was rejected, or its approval no longer covers the playbook's text;
        /// the comment says which).
        action: String,
        /// The step it concerns.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        step: Option<String>,
        /// Who.
        who: String,
        /// What they said (approvals).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        comment: Option<String>,
        /// The plan they answered for (approvals): the run's playbook hash and
        /// inputs, hashed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        plan_hash: Option<String>,
        /// What an approval approved (approvals): the SHA-256 of the
        /// question's step, the steps it guards (those that wait for it) and
        /// the run's inputs. A text where one of them differs asks again.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        covers: Option<String>,
    },
    /// The run stopped, for good or until resumed.
    RunFinished {
        /// How it ended.
        status: RunStatus,
        /// Why, when it did not succeed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
}

impl Event {
    /// The run status this event moves the run to, if any.
    pub fn status(&self) -> Option<RunStatus> {
        match self {
            Event::RunQueued { .. } => Some(RunStatus::Queued),
            Event::RunStarted { .. } | Event::RunResumed { .. } => Some(RunStatus::Running),
            Event::RunFinished { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The step path it is about, if any.
    pub fn step(&self) -> Option<&str> {
        match self {
            Event::StepStarted { step, .. }
            | Event::StepSucceeded { step, .. }
            | Event::StepFailed { step, .. }
            | Event::StepSkipped { step, .. }
            | Event::StepInterrupted { step, .. }
            | Event::StepUndone { step }
            | Event::StepWaiting { step, .. }
            | Event::ItemsResolved { step, .. } => Some(step),
            Event::OperatorAction { step, .. } | Event::Sealed { step, .. } => step.as_deref(),
            Event::RunQueued { .. }
            | Event::RunStarted { .. }
            | Event::RunResumed { .. }
            | Event::RunFinished { .. }
            | Event::MaskRegistered { .. }
            | Event::Contained { .. } => None,
        }
    }

    /// The event's name, as in its JSON `event` field.
    pub fn name(&self) -> &'static str {
        match self {
            Event::RunQueued { .. } => "run_queued",
            Event::RunStarted { .. } => "run_started",
            Event::RunResumed { .. } => "run_resumed",
            Event::StepStarted { .. } => "step_started",
            Event::StepSucceeded { .. } => "step_succeeded",
            Event::StepFailed { .. } => "step_failed",
            Event::StepSkipped { .. } => "step_skipped",
            Event::StepInterrupted { .. } => "step_interrupted",
            Event::StepUndone { .. } => "step_undone",
            Event::StepWaiting { .. } => "step_waiting",
            Event::ItemsResolved { .. } => "items_resolved",
            Event::Sealed { .. } => "sealed",
            Event::MaskRegistered { .. } => "mask_registered",
            Event::Contained { .. } => "contained",
            Event::OperatorAction { .. } => "operator_action",
            Event::RunFinished { .. } => "run_finished",
        }
    }
}

/// An event as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recorded {
    /// Its place in the journal (1, 2, ...).
    pub seq: i64,
    /// When it was recorded (RFC 3339).
    pub at: String,
    /// The event.
    #[serde(flatten)]
    pub event: Event,
}

/// What a new run starts with.
#[derive(Debug, Clone)]
pub struct NewRun {
    /// Its id.
    pub id: String,
    /// The playbook's name.
    pub playbook: String,
    /// Its version.
    pub version: u32,
    /// The exact playbook text the run executes.
    pub text: String,
    /// A hash of that text and of `calls`.
    pub hash: String,
    /// The exact texts of the playbooks it calls (`uses: playbook`),
    /// directly or not, by call key (`name` or `name@N`).
    pub calls: IndexMap<String, String>,
    /// The inputs (never secrets).
    pub inputs: Json,
    /// Who started it.
    pub user: String,
}

/// A stored run.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct RunRecord {
    /// Its id.
    pub id: String,
    /// The playbook's name.
    pub playbook: String,
    /// Its version.
    pub version: u32,
    /// The exact playbook text.
    #[serde(skip)]
    pub text: String,
    /// A hash of the text and of `calls`.
    pub hash: String,
    /// The exact texts of the playbooks it calls, by call key.
    #[serde(skip)]
    pub calls: IndexMap<String, String>,
    /// The inputs.
    pub inputs: Json,
    /// Where it stands.
    pub status: RunStatus,
    /// Who started it.
    pub user: String,
    /// When it was created.
    pub created_at: String,
    /// When its status last changed.
    pub updated_at: String,
    /// The process executing it, while one is.
    pub pid: Option<u32>,
    /// Submitted to the queue: workers execute it (PostgreSQL state only).
    pub submitted: bool,
    /// The worker holding (or that last held) its lease.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
    /// Until when that lease runs (RFC 3339) while a worker holds it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lease_until: Option<String>,
}

/// Which output stream a log line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

impl Stream {
    /// The stored word.
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// One line a step printed (secrets masked).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct LogLine {
    /// The step path.
    pub step: String,
    /// When.
    pub at: String,
    /// Which stream.
    pub stream: Stream,
    /// The text, without its newline.
    pub line: String,
}
