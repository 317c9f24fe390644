//! The store as a worker sees it while it holds a run's lease: every journal
//! and log write to that run is checked against the lease in the write's own
//! transaction, so a worker that stalled past its lease (or was taken over)
//! can never write to the run again, nor renew or free the run's `lock:`
//! leases (its new worker holds them under the same run). Reads pass through.

use crate::journal::{Event, LogLine, NewRun, Recorded, RunRecord, RunStatus};
use crate::{Journal, Lease, Leases, Lock, LockHolder, Page, Queue, Result, Store, StoreError};
use async_trait::async_trait;
use indexmap::IndexMap;
use std::sync::Arc;
use std::time::Duration;

/// A store whose writes to one run are fenced by a worker's lease.
pub struct Fenced {
    inner: Arc<dyn Store>,
    lease: Lease,
}

impl Fenced {
    /// Fences writes to `lease.run_id` with `lease`.
    pub fn new(inner: Arc<dyn Store>, lease: Lease) -> Fenced {
        Fenced { inner, lease }
    }

    fn check(&self, run: &str) -> Result<()> {
        if run == self.lease.run_id {
            Ok(())
        } else {
            Err(StoreError::Fenced {
                run: run.to_owned(),
                worker: self.lease.worker.clone(),
                epoch: self.lease.epoch,
                now: format!("its lease is on run `{}` only", self.lease.run_id),
            })
        }
    }
}

#[async_trait]
impl Journal for Fenced {
    /// A worker continues runs; it never creates one.
    async fn create_run(&self, _run: &NewRun, _first: &Event) -> Result<()> {
        Err(StoreError::Unsupported("a worker does not create runs".into()))
    }

    async fn append(&self, run: &str, event: &Event) -> Result<i64> {
        self.append_all(run, std::slice::from_ref(event)).await
    }

    async fn append_all(&self, run: &str, events: &[Event]) -> Result<i64> {
        self.check(run)?;
        self.inner.append_leased(&self.lease, events).await
    }

    async fn events(&self, run: &str) -> Result<Vec<Recorded>> {
        self.inner.events(run).await
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

    /// The run's worker is its lease holder: no process id is recorded.
    async fn set_runner(&self, run: &str, _pid: Option<u32>) -> Result<()> {
        self.check(run)
    }

    async fn replace_text(&self, run: &str, text: &str, hash: &str, calls: &IndexMap<String, String>) -> Result<()> {
        self.check(run)?;
        self.inner.replace_text(run, text, hash, calls).await
    }

    /// The lease is the claim: only its holder gets here.
    async fn claim_runner(&self, run: &str, _pid: u32, _previous: Option<u32>) -> Result<bool> {
        self.check(run).map(|()| true)
    }

    async fn append_logs(&self, run: &str, lines: &[LogLine]) -> Result<()> {
        self.check(run)?;
        self.inner.append_logs_leased(&self.lease, lines).await
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
impl Leases for Fenced {
    async fn detached(&self) -> Result<Option<Arc<dyn Store>>> {
        let inner = self.inner.detached().await?;
        Ok(inner.map(|d| Arc::new(Fenced::new(d, self.lease.clone())) as Arc<dyn Store>))
    }

    async fn acquire_lock(&self, key: &str, holder: &LockHolder, ttl: Duration) -> Result<Option<Lock>> {
        self.inner.acquire_lock(key, holder, ttl).await
    }

    async fn renew_locks(&self, run: &str, ttl: Duration) -> Result<()> {
        self.check(run)?;
        self.inner.renew_locks_leased(&self.lease, ttl).await
    }

    async fn release_locks(&self, run: &str) -> Result<()> {
        self.check(run)?;
        self.inner.release_locks_leased(&self.lease).await
    }

    async fn locks(&self) -> Result<Vec<Lock>> {
        self.inner.locks().await
    }

    async fn remove_lock(&self, key: &str) -> Result<Option<Lock>> {
        self.inner.remove_lock(key).await
    }
}

#[async_trait]
impl Queue for Fenced {
    async fn renew_lease(&self, lease: &Lease, ttl: Duration) -> Result<Option<bool>> {
        self.inner.renew_lease(lease, ttl).await
    }

    async fn release_lease(&self, lease: &Lease) -> Result<()> {
        self.inner.release_lease(lease).await
    }

    async fn request_cancel(&self, run: &str) -> Result<()> {
        self.inner.request_cancel(run).await
    }
}

// A worker's run never reads or writes tokens; they pass through.
crate::tokens_pass_through!(Fenced);
