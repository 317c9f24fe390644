//! [`RunnerError`]: why the lifecycle did not do what was asked. All its
//! wording lives here, with a hint where a next step exists; a front end
//! decides only how to show it and which exit code it means
//! ([`RunnerError::class`]).

use runbook_core::validate::Invalid;
use runbook_state::{Lock, RunStatus, StoreError};

/// What kind of refusal or failure an error is; a front end maps each to one
/// exit code (the CLI: 2, 4, 5, 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Bad input, or a run that cannot do what was asked: nothing ran, nothing
    /// changed.
    Invalid,
    /// Someone else holds the run or its lock.
    Locked,
    /// The run started and stopped before its end (the journal failed, or
    /// another worker took it over): resume it.
    Interrupted,
    /// What was asked was tried and failed (a signal could not be sent).
    Failed,
}

/// Who is executing a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Holder {
    /// A process on this machine.
    Process(u32),
    /// A worker of the shared queue.
    Worker(String),
    /// Someone whose process id the store did not keep.
    Unknown,
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Holder::Process(pid) => write!(f, "process {pid}"),
            Holder::Worker(name) => write!(f, "worker {name}"),
            Holder::Unknown => f.write_str("another process"),
        }
    }
}

fn list(paths: &[String]) -> String {
    if paths.is_empty() {
        "none".to_owned()
    } else {
        paths.join(", ")
    }
}

/// Step paths as `a`, `b`.
fn quoted(paths: &[String]) -> String {
    if paths.is_empty() {
        return "none".to_owned();
    }
    paths.iter().map(|p| format!("`{p}`")).collect::<Vec<_>>().join(", ")
}

fn outputs(names: &[String]) -> String {
    names
        .iter()
        .map(|n| {
            if n == "*" {
                "all outputs".to_owned()
            } else {
                format!("output `{n}`")
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Why the lifecycle could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    /// A `lock:` key did not render from the inputs.
    #[error("lock `{template}`: {message}")]
    LockKey {
        /// The key as written in the playbook.
        template: String,
        /// Why it did not render.
        message: String,
    },
    /// Another run holds a key (after waiting, if asked to).
    #[error("lock `{key}` is held by {}", describe(holder))]
    Locked {
        /// The key.
        key: String,
        /// Who holds it.
        holder: Box<Lock>,
    },
    /// The inputs do not fit the playbook's declarations.
    #[error("{}", .0.join("; "))]
    Inputs(Vec<String>),
    /// A secret the playbook declares is not set.
    #[error("{}; {} missing for `{playbook}`", messages.join("; "), plural(messages.len(), "secret"))]
    MissingSecrets {
        /// The playbook.
        playbook: String,
        /// One line per missing secret.
        messages: Vec<String>,
    },
    /// Templates known at start do not render (secrets masked).
    #[error("{}; {} cannot render with these inputs, secrets and inventory", refused.join("; "), plural(refused.len(), "template"))]
    Refused {
        /// One line per template.
        refused: Vec<String>,
    },
    /// The text a run started with no longer validates with this runbook.
    #[error("the stored playbook no longer validates with this runbook")]
    StoredInvalid(Box<Invalid>),
    /// The playbook file's current text (`--to-current`) does not validate.
    #[error("the current text of {path} does not validate")]
    CurrentInvalid {
        /// The file.
        path: String,
        /// Its diagnostics.
        invalid: Box<Invalid>,
    },
    /// The current text cannot take over the run.
    #[error("{0}")]
    NotUpgradable(String),
    /// Values the run's steps registered as secret cannot be opened with this
    /// runner's mask key: resumed, they would be shown in clear.
    #[error("{0}")]
    MaskKey(String),
    /// The run ended; it cannot continue.
    #[error("run {id} finished as {}; it cannot be resumed", status.as_str())]
    Finished {
        /// The run.
        id: String,
        /// How it ended.
        status: RunStatus,
        /// Its playbook (for the hint).
        playbook: String,
    },
    /// The run ended; there is nothing to cancel.
    #[error("run {id} already finished as {}", status.as_str())]
    AlreadyFinished {
        /// The run.
        id: String,
        /// How it ended.
        status: RunStatus,
    },
    /// Someone else is executing the run.
    #[error("run {id} is being executed by {holder}")]
    Busy {
        /// The run.
        id: String,
        /// Who.
        holder: Holder,
    },
    /// `--mark-done` names a step that was not in flight.
    #[error("step `{step}` was not in flight (steps in flight: {})", list(in_flight))]
    NotInFlight {
        /// The step path.
        step: String,
        /// The steps that were.
        in_flight: Vec<String>,
    },
    /// `--rerun` names a step that was neither in flight nor marked done.
    #[error(
        "step `{step}` was not in flight nor marked done (in flight: {}; marked done: {})",
        list(in_flight),
        list(marked)
    )]
    NotRerunnable {
        /// The step path.
        step: String,
        /// The steps in flight.
        in_flight: Vec<String>,
        /// The steps marked done.
        marked: Vec<String>,
    },
    /// A `--set-output` flag is not `STEP.NAME=VALUE`.
    #[error("`--set-output {0}` is not STEP.NAME=VALUE (e.g. `--set-output deploy.stdout=v42`)")]
    SetOutputSyntax(String),
    /// `--set-output` for a step not marked done.
    #[error("`--set-output` names `{0}`, which is not marked done here")]
    SetOutputNotMarked(String),
    /// A step marked done would lack outputs later steps read.
    #[error(
        "later steps read {} of `{step}`, which it would not have once marked done",
        outputs(missing)
    )]
    MissingOutputs {
        /// The step path.
        step: String,
        /// The outputs (`*`: all of them).
        missing: Vec<String>,
    },
    /// `approve`/`reject` of a run that waits for nothing.
    #[error("run {id} is not waiting for an approval (it is {})", status.as_str())]
    NotWaiting {
        /// The run.
        id: String,
        /// Its status.
        status: RunStatus,
    },
    /// `approve`/`reject` that names no question, of a run that waits at
    /// several.
    #[error(
        "run {id} waits at {} questions ({}); name the one you {verb}",
        waiting.len(),
        quoted(waiting)
    )]
    WhichQuestion {
        /// The run.
        id: String,
        /// `approve` or `reject`.
        verb: &'static str,
        /// The questions it waits at, by step path.
        waiting: Vec<String>,
    },
    /// `approve`/`reject` names a step the run does not wait at.
    #[error("run {id} does not wait at `{step}` (it waits at {})", quoted(waiting))]
    NotAsked {
        /// The run.
        id: String,
        /// The step named.
        step: String,
        /// The questions it waits at, by step path.
        waiting: Vec<String>,
    },
    /// The answerer reviewed another plan than the run runs.
    #[error("you reviewed plan {reviewed}, but run {id} runs plan {bound}")]
    OtherPlan {
        /// The run.
        id: String,
        /// The plan reviewed.
        reviewed: String,
        /// The run's plan.
        bound: String,
    },
    /// `cancel` could not signal the process executing the run.
    #[error("cannot signal process {pid}: {message}")]
    Signal {
        /// The process.
        pid: u32,
        /// Why.
        message: String,
    },
    /// The journal failed while the run executed: it stopped.
    #[error("{source}")]
    Journal {
        /// The run.
        run: String,
        /// What failed.
        source: StoreError,
    },
    /// Another worker took the run over; this one wrote nothing more.
    #[error("stopped: {0}")]
    TakenOver(StoreError),
    /// The run's lock leases were lost before it started.
    #[error("run {run} did not start: {why}")]
    LeaseLost {
        /// The run.
        run: String,
        /// Why.
        why: String,
    },
    /// What an earlier runner of the run left running would not stop;
    /// nothing ran.
    #[error("{0}")]
    Previous(String),
    /// A worker's options make no sense.
    #[error("{0}")]
    Options(String),
    /// The store failed before anything ran.
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub(crate) fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}

/// `run R (user, process P) since T, lease until U`.
pub fn describe(l: &Lock) -> String {
    let pid = l.pid.map(|p| format!(", process {p}")).unwrap_or_default();
    format!(
        "run {} ({}{pid}) since {}, lease until {}",
        l.run_id, l.user, l.since, l.expires_at
    )
}

impl RunnerError {
    /// Which exit code it means.
    pub fn class(&self) -> ErrorClass {
        match self {
            RunnerError::Locked { .. } | RunnerError::Busy { .. } => ErrorClass::Locked,
            RunnerError::Journal { .. }
            | RunnerError::TakenOver(_)
            | RunnerError::Previous(_)
            | RunnerError::LeaseLost { .. } => ErrorClass::Interrupted,
            RunnerError::Signal { .. } => ErrorClass::Failed,
            _ => ErrorClass::Invalid,
        }
    }

    /// The next step for the person who saw it, if there is one.
    pub fn hint(&self) -> Option<String> {
        Some(match self {
            RunnerError::Locked { key, .. } => format!(
                "`--wait-lock 10m` waits for it; `runbook locks` lists locks; if its holder is gone, the lease \
                 expires by itself, or `runbook unlock {key} --force`"
            ),
            RunnerError::Finished { playbook, .. } => format!("start a new run with `runbook run {playbook}`"),
            RunnerError::Busy { id, .. } => format!("`runbook cancel {id}` stops it"),
            RunnerError::SetOutputNotMarked(step) => format!("add `--mark-done {step}`"),
            RunnerError::MissingOutputs { step, missing } => {
                let example = missing.iter().find(|n| *n != "*").map_or("NAME", String::as_str);
                format!("give each with `--set-output {step}.{example}=VALUE`")
            }
            RunnerError::OtherPlan { id, .. } => format!("`runbook status {id}` shows what it runs"),
            RunnerError::WhichQuestion { id, verb, waiting } => {
                let first = waiting
                    .first()
                    .map_or_else(|| "STEP".to_owned(), |s| runbook_core::shell::quote(s));
                format!(
                    "`runbook {verb} {id} {first}` answers `{}` alone; `runbook {verb} {id} --all` answers every one",
                    waiting.first().map_or("STEP", String::as_str)
                )
            }
            RunnerError::NotAsked { id, .. } => format!("`runbook status {id}` shows its questions"),
            RunnerError::Journal { run, .. } => format!("fix the state location, then `runbook resume {run}`"),
            RunnerError::Previous(_) => "a process that ignores SIGKILL is in uninterruptible sleep (a hung NFS \
                                         mount, a device): find it in the cgroup named, then resume again"
                .to_owned(),
            RunnerError::MaskKey(_) => "resume where the run started, or point RUNBOOK_MASK_KEY_FILE at the key it \
                                         started with; give runners started by cron or systemd a HOME or \
                                         RUNBOOK_MASK_KEY_FILE so that their values are kept"
                .to_owned(),
            _ => return None,
        })
    }

    /// The diagnostics behind it, if a playbook text did not validate.
    pub fn invalid(&self) -> Option<&Invalid> {
        match self {
            RunnerError::StoredInvalid(inv) => Some(inv),
            RunnerError::CurrentInvalid { invalid, .. } => Some(invalid),
            _ => None,
        }
    }
}
