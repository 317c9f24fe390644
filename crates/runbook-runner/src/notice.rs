//! What a front end is told while the lifecycle works: the journal's events
//! and the steps' log lines (the engine's [`Observer`]), and [`Notice`]s,
//! the things worth a line that are not in the journal (waiting for a lock, a
//! changed playbook file, a worker's lease). Their wording lives here; a
//! notice about one of a worker's runs goes to that run's watcher, which
//! says which run it is.

use runbook_engine::exec::Observer;
use runbook_state::{Lock, StoreError};
use std::path::PathBuf;
use std::time::Duration;

/// Watches runs: the engine's events and logs, plus the lifecycle's notices.
pub trait Watcher: Observer {
    /// Something worth telling that is not in the journal.
    fn notice(&self, notice: &Notice);
}

/// Something worth telling that is not in the journal.
#[derive(Debug)]
pub enum Notice {
    /// The run waits for a lock another run holds.
    WaitingForLock {
        /// The key.
        key: String,
        /// Who holds it.
        holder: Lock,
    },
    /// The playbook file changed since the run started; it continues on the
    /// text it started with.
    TextChanged {
        /// The run.
        run: String,
        /// The file.
        path: PathBuf,
    },
    /// The run continues on the file's current text (`--to-current`).
    OnCurrentText {
        /// The run.
        run: String,
        /// The file.
        path: PathBuf,
    },
    /// A submitted run went back to the queue.
    Requeued {
        /// The run.
        run: String,
    },
    /// The run's lock could not be kept or given back at the end.
    LockNotReturned {
        /// What failed.
        error: StoreError,
    },
    /// A worker started claiming runs.
    WorkerStarted {
        /// The worker.
        name: String,
        /// Runs at once.
        concurrency: usize,
        /// The lease's time to live.
        ttl: Duration,
    },
    /// A worker could not claim (the database may come back).
    ClaimFailed {
        /// The worker.
        name: String,
        /// What failed.
        error: StoreError,
    },
    /// A worker stopped.
    WorkerStopped {
        /// The worker.
        name: String,
    },
    /// A lease renewal failed; the lease still holds.
    RenewFailed {
        /// The run.
        run: String,
        /// What failed.
        error: StoreError,
    },
    /// A worker lost its lease: the run is someone else's.
    LeaseLost {
        /// The run.
        run: String,
        /// The worker.
        worker: String,
        /// The lease's epoch.
        epoch: i64,
    },
    /// A worker could not give its lease back.
    LeaseNotReturned {
        /// The run.
        run: String,
        /// What failed.
        error: StoreError,
    },
    /// A `notify:` webhook could not be told.
    NotifyFailed {
        /// The URL.
        url: String,
        /// Why.
        why: String,
    },
    /// What the daemon did about one of its schedules.
    Schedule {
        /// The schedule.
        name: String,
        /// What happened.
        what: String,
    },
    /// A first SIGINT or SIGTERM: the runs stop gracefully.
    Stopping,
    /// A second one: running steps are killed.
    Killing,
    /// When a schedule fires next.
    NextFire {
        /// The schedule.
        name: String,
        /// Its playbook.
        playbook: String,
        /// When, in the schedule's time zone.
        at: String,
    },
    /// The daemon stops: its running runs were asked to stop.
    DaemonStopping {
        /// How many.
        runs: usize,
    },
    /// A claimed run was not executed (why, also in its journal if it ended).
    NotExecuted {
        /// The run.
        run: String,
        /// Why.
        why: String,
    },
}

/// The last 8 characters of a run id: enough to tell interleaved runs apart.
pub fn short_id(run: &str) -> &str {
    run.get(run.len().saturating_sub(8)..).unwrap_or(run)
}

impl std::fmt::Display for Notice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Notice::WaitingForLock { key, holder } => {
                write!(
                    f,
                    "waiting for lock `{key}`: held by {}",
                    crate::error::describe(holder)
                )
            }
            Notice::TextChanged { run, path } => write!(
                f,
                "note: {} changed since run {run} started; the run continues on the text it started with \
                 (hint: `--to-current` continues on the new text, once it agrees with what already ran)",
                path.display()
            ),
            Notice::OnCurrentText { run, path } => write!(
                f,
                "run {run} continues on the current text of {} (checked against the steps already done)",
                path.display()
            ),
            Notice::Requeued { run } => write!(
                f,
                "run {run} is queued again: a `runbook worker` continues it (hint: `runbook status {run}`)"
            ),
            Notice::LockNotReturned { error } => {
                write!(f, "warning: the run's lock: {error} (it expires by itself)")
            }
            Notice::WorkerStarted { name, concurrency, ttl } => write!(
                f,
                "worker {name}: claiming runs ({concurrency} at once, lease {})",
                runbook_report::short(*ttl)
            ),
            Notice::ClaimFailed { name, error } => write!(f, "worker {name}: cannot claim: {error}; trying again"),
            Notice::WorkerStopped { name } => write!(f, "worker {name}: stopped"),
            Notice::RenewFailed { error, .. } => write!(f, "cannot renew the lease: {error}"),
            Notice::LeaseLost { run, worker, epoch } => write!(
                f,
                "worker {worker} lost its lease on run {run} (epoch {epoch}); stopping its steps"
            ),
            Notice::LeaseNotReturned { error, .. } => {
                write!(f, "cannot give the lease back ({error}); it expires by itself")
            }
            Notice::NotExecuted { why, .. } => f.write_str(why),
            Notice::Schedule { name, what } => write!(f, "daemon: {name}: {what}"),
            Notice::Stopping => f.write_str(
                "stopping: no new steps start; running steps are being stopped (interrupt again to kill now)",
            ),
            Notice::Killing => f.write_str("killing running steps now"),
            Notice::NextFire { name, playbook, at } => write!(f, "daemon: {name} ({playbook}): next run at {at}"),
            Notice::DaemonStopping { runs } => write!(
                f,
                "daemon: stopping; {} asked to stop",
                crate::error::plural(*runs, "run")
            ),
            Notice::NotifyFailed { url, why } => write!(f, "warning: notify {url}: {why}"),
        }
    }
}
