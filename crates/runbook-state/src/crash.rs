//! Deterministic crash points, for tests: every durable write of this
//! process is a numbered point, and the process can be made to die right
//! after a chosen one, as a power cut or `kill -9` would leave it.
//!
//! - `RUNBOOK_CRASH_LOG=FILE`: each point's name is appended to FILE as it
//!   passes (how many points an uninterrupted run has, and which);
//! - `RUNBOOK_CRASH_AT=K`: the process aborts right after its K-th point.
//!
//! Only debug builds read them ([`wrap`] is the identity in release builds),
//! so a release binary cannot be made to crash this way.

use crate::journal::{Event, LogLine, NewRun, Recorded, RunRecord, RunStatus};
use crate::{Journal, Lease, Leases, Lock, LockHolder, Page, Queue, Result, Store, WorkerInfo, WorkerRow};
use async_trait::async_trait;
use indexmap::IndexMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The store with its writes counted (and the process stopped at one), when
/// the environment asks for it in a debug build.
pub(crate) fn wrap(inner: Arc<dyn Store>) -> Arc<dyn Store> {
    if !cfg!(debug_assertions) {
        return inner;
    }
    let at = std::env::var("RUNBOOK_CRASH_AT").ok().and_then(|k| k.parse().ok());
    let log = std::env::var_os("RUNBOOK_CRASH_LOG").map(std::path::PathBuf::from);
    if at.is_none() && log.is_none() {
        return inner;
    }
    Arc::new(CrashPoints {
        inner,
        at,
        log,
        passed: AtomicU64::new(0),
    })
}

struct CrashPoints {
    inner: Arc<dyn Store>,
    at: Option<u64>,
    log: Option<std::path::PathBuf>,
    passed: AtomicU64,
}

impl CrashPoints {
    /// A durable write named `what` just committed: note it, and die here if
    /// this is the chosen point.
    fn point<T>(&self, what: &str, done: Result<T>) -> Result<T> {
        let done = done?;
        let k = self.passed.fetch_add(1, Ordering::SeqCst) + 1;
        if let Some(file) = &self.log {
            use std::io::Write;
            if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(file) {
                let _ = writeln!(f, "{k} {what}");
            }
        }
        if self.at == Some(k) {
            eprintln!("runbook: crash point {k} ({what}): aborting");
            std::process::abort();
        }
        Ok(done)
    }
}

#[async_trait]
impl Journal for CrashPoints {
    async fn create_run(&self, run: &NewRun, first: &Event) -> Result<()> {
        self.point("create run", self.inner.create_run(run, first).await)
    }

    async fn append(&self, run: &str, event: &Event) -> Result<i64> {
        let what = format!("journal {}", event.name());
        self.point(&what, self.inner.append(run, event).await)
    }

    async fn append_all(&self, run: &str, events: &[Event]) -> Result<i64> {
        let kinds: Vec<&str> = events.iter().map(Event::name).collect();
        let what = format!("journal {}", kinds.join("+"));
        self.point(&what, self.inner.append_all(run, events).await)
    }

    async fn events(&self, run: &str) -> Result<Vec<Recorded>> {
        self.inner.events(run).await
    }

    async fn events_after(&self, run: &str, after: i64) -> Result<Vec<Recorded>> {
        self.inner.events_after(run, after).await
    }

    async fn run(&self, id: &str) -> Result<RunRecord> {
        self.inner.run(id).await
    }

    async fn runs(&self, playbook: Option<&str>, limit: u32) -> Result<Vec<RunRecord>> {
        self.inner.runs(playbook, limit).await
    }

    async fn count_runs(&self, status: RunStatus) -> Result<u64> {
        self.inner.count_runs(status).await
    }

    async fn set_runner(&self, run: &str, pid: Option<u32>) -> Result<()> {
        self.point("set runner", self.inner.set_runner(run, pid).await)
    }

    async fn replace_text(&self, run: &str, text: &str, hash: &str, calls: &IndexMap<String, String>) -> Result<()> {
        self.point("replace text", self.inner.replace_text(run, text, hash, calls).await)
    }

    async fn claim_runner(&self, run: &str, pid: u32, previous: Option<u32>) -> Result<bool> {
        self.point("claim runner", self.inner.claim_runner(run, pid, previous).await)
    }

    async fn append_logs(&self, run: &str, lines: &[LogLine]) -> Result<()> {
        self.point("log lines", self.inner.append_logs(run, lines).await)
    }

    async fn logs(&self, run: &str, step: Option<&str>, after: i64) -> Result<Vec<(i64, LogLine)>> {
        self.inner.logs(run, step, after).await
    }

    async fn log_page(&self, run: &str, step: Option<&str>, page: Page, limit: u32) -> Result<Vec<(i64, LogLine)>> {
        self.inner.log_page(run, step, page, limit).await
    }

    async fn schema_version(&self) -> Result<i64> {
        self.inner.schema_version().await
    }
}

#[async_trait]
impl Leases for CrashPoints {
    async fn acquire_lock(&self, key: &str, holder: &LockHolder, ttl: Duration) -> Result<Option<Lock>> {
        self.point("lock take", self.inner.acquire_lock(key, holder, ttl).await)
    }

    async fn renew_locks(&self, run: &str, ttl: Duration) -> Result<()> {
        self.point("lock renewal", self.inner.renew_locks(run, ttl).await)
    }

    async fn release_locks(&self, run: &str) -> Result<()> {
        self.point("lock free", self.inner.release_locks(run).await)
    }

    async fn locks(&self) -> Result<Vec<Lock>> {
        self.inner.locks().await
    }

    async fn remove_lock(&self, key: &str) -> Result<Option<Lock>> {
        self.point("lock removal", self.inner.remove_lock(key).await)
    }
}

#[async_trait]
impl Queue for CrashPoints {
    async fn claim(&self, worker: &str, ttl: Duration) -> Result<Option<Lease>> {
        self.point("claim", self.inner.claim(worker, ttl).await)
    }

    async fn renew_lease(&self, lease: &Lease, ttl: Duration) -> Result<Option<bool>> {
        self.point("lease renewal", self.inner.renew_lease(lease, ttl).await)
    }

    async fn release_lease(&self, lease: &Lease) -> Result<()> {
        self.point("lease release", self.inner.release_lease(lease).await)
    }

    async fn append_leased(&self, lease: &Lease, events: &[Event]) -> Result<i64> {
        let kinds: Vec<&str> = events.iter().map(Event::name).collect();
        let what = format!("journal {} (leased)", kinds.join("+"));
        self.point(&what, self.inner.append_leased(lease, events).await)
    }

    async fn append_logs_leased(&self, lease: &Lease, lines: &[LogLine]) -> Result<()> {
        self.point("log lines (leased)", self.inner.append_logs_leased(lease, lines).await)
    }

    async fn renew_locks_leased(&self, lease: &Lease, ttl: Duration) -> Result<()> {
        self.point("lock renewal (leased)", self.inner.renew_locks_leased(lease, ttl).await)
    }

    async fn release_locks_leased(&self, lease: &Lease) -> Result<()> {
        self.point("lock free (leased)", self.inner.release_locks_leased(lease).await)
    }

    async fn request_cancel(&self, run: &str) -> Result<()> {
        self.point("cancel request", self.inner.request_cancel(run).await)
    }

    async fn worker_seen(&self, worker: &WorkerInfo, stopped: bool) -> Result<()> {
        self.point("worker heartbeat", self.inner.worker_seen(worker, stopped).await)
    }

    async fn workers(&self) -> Result<Vec<WorkerRow>> {
        self.inner.workers().await
    }

    async fn wait_for_work(&self, timeout: Duration) {
        self.inner.wait_for_work(timeout).await;
    }
}

crate::tokens_pass_through!(CrashPoints);
