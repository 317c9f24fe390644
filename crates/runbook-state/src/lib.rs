//! Where runs live: runs, their append-only journal, step logs, operator
//! actions and the leases of `lock:` keys, behind the [`Store`] trait.
//!
//! A key design decision: the journal is the source of truth. Every state a run
//! can be in is derived by replaying its events; the `status` column of a run is
//! a cache updated in the same transaction as the event that changes it. An
//! append returns only once the event is durable (SQLite in WAL mode with
//! `synchronous=FULL`), which is what lets the engine promise that a finished
//! step is recorded before anything that depends on it starts.
//!
//! Two backends: a SQLite file (one machine; the default) and PostgreSQL
//! (shared by a team's runners), with one column vocabulary; the statements
//! both run are written once (`sql.rs`), and each backend keeps only what
//! really differs (transactions and locking, upserts, the queue). One
//! conformance suite checks both.
//!
//! PostgreSQL also holds the work queue: submitted runs, the leases workers
//! claim them with (an epoch raised by every claim), the workers' registry,
//! and the fence ([`Fenced`]) that checks a worker's lease inside every write
//! it makes to a run, so a worker that lost its lease never writes again.
//!
//! This crate knows nothing of playbooks or step kinds; it stores text and JSON.
//! It must never depend on the engine or on a step crate.

/// `impl Tokens` for a store that wraps another (`inner`): every call
/// passes through.
macro_rules! tokens_pass_through {
    ($store:ty) => {
        #[async_trait::async_trait]
        impl $crate::Tokens for $store {
            async fn add_token(
                &self,
                token: &$crate::Token,
                expires_unix_ms: Option<i64>,
                now_ms: i64,
            ) -> $crate::Result<bool> {
                self.inner.add_token(token, expires_unix_ms, now_ms).await
            }

            async fn token_by_hash(&self, hash: &str) -> $crate::Result<Option<$crate::Token>> {
                self.inner.token_by_hash(hash).await
            }

            async fn tokens(&self) -> $crate::Result<Vec<$crate::Token>> {
                self.inner.tokens().await
            }

            async fn revoke_token(&self, name: &str, at: &str) -> $crate::Result<bool> {
                self.inner.revoke_token(name, at).await
            }
        }
    };
}
pub(crate) use tokens_pass_through;

mod crash;
mod fenced;
mod journal;
mod migrate;
mod pg_hosts;
mod postgres;
mod rows;
mod sql;
mod sqlite;

#[cfg(any(test, feature = "conformance"))]
pub mod conformance;

pub use sqlite::default_path;

pub use journal::{Event, LogLine, NewRun, Recorded, RunRecord, RunStatus, Stream};
// `Lock` and `LockHolder` are defined below with the trait.
pub use fenced::Fenced;
pub use postgres::PgStore;
pub use sqlite::SqliteStore;

/// Opens the state at `location` (migrated to this version): PostgreSQL for
/// a `postgres://` or `postgresql://` URL (libpq's multi-host form too:
/// the first host that accepts writes, looked for again when it is lost;
/// see `pg_hosts`), else a SQLite file; the default file without one.
pub async fn open(location: Option<&std::path::Path>) -> Result<std::sync::Arc<dyn Store>> {
    let path = location.map_or_else(default_path, std::path::Path::to_path_buf);
    let text = path.to_string_lossy();
    let store: std::sync::Arc<dyn Store> = if text.starts_with("postgres://") || text.starts_with("postgresql://") {
        std::sync::Arc::new(PgStore::open(&text).await?)
    } else {
        std::sync::Arc::new(SqliteStore::open(&path).await?)
    };
    Ok(crash::wrap(store))
}

use async_trait::async_trait;
use indexmap::IndexMap;
use thiserror::Error;

/// A store failure.
#[derive(Debug, Error)]
pub enum StoreError {
    /// The database said no.
    #[error("state database `{path}`: {source}")]
    Db {
        /// Where the state lives.
        path: String,
        /// Why.
        #[source]
        source: sqlx::Error,
    },
    /// The state folder or file could not be prepared.
    #[error("state location `{path}`: {source}")]
    Io {
        /// The path.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A stored event could not be read back.
    #[error("run `{run}`, journal entry {seq}: {message}")]
    Corrupt {
        /// The run.
        run: String,
        /// The entry.
        seq: i64,
        /// What is wrong.
        message: String,
    },
    /// No such run.
    #[error("no run `{0}` (hint: `runbook status` lists runs)")]
    NoRun(String),
    /// A run id prefix matches several runs.
    #[error("`{0}` matches several runs; give more of the id")]
    Ambiguous(String),
    /// A worker's lease on a run is gone (expired, or another worker took the
    /// run over): it may not write to the run again.
    #[error("run `{run}`: worker `{worker}` no longer holds its lease (epoch {epoch}); {now}")]
    Fenced {
        /// The run.
        run: String,
        /// The worker that tried to write.
        worker: String,
        /// The lease epoch it held.
        epoch: i64,
        /// Who holds the run now, or that the lease expired.
        now: String,
    },
    /// This backend cannot do that.
    #[error("{0}")]
    Unsupported(String),
    /// Someone else already has it (a live worker's name).
    #[error("{0}")]
    Taken(String),
}

/// A result of the store.
pub type Result<T> = std::result::Result<T, StoreError>;

/// Runs, their journal and their logs.
#[async_trait]
pub trait Journal: Send + Sync {
    /// Records a new run (and its `run_started` event) durably.
    async fn create_run(&self, run: &NewRun, first: &Event) -> Result<()>;

    /// Appends an event to a run's journal, durably, updating the run's status
    /// when the event changes it. Returns the event's sequence number.
    async fn append(&self, run: &str, event: &Event) -> Result<i64>;

    /// Appends several events in one durable transaction (group commit), in
    /// order. Returns the sequence number of the last.
    async fn append_all(&self, run: &str, events: &[Event]) -> Result<i64> {
        let mut last = 0;
        for e in events {
            last = self.append(run, e).await?;
        }
        Ok(last)
    }

    /// Every event of a run, in order.
    async fn events(&self, run: &str) -> Result<Vec<Recorded>>;

    /// The events of a run after sequence number `after`, in order (for
    /// following a run without reading its whole journal each time).
    async fn events_after(&self, run: &str, after: i64) -> Result<Vec<Recorded>> {
        let mut all = self.events(run).await?;
        all.retain(|r| r.seq > after);
        Ok(all)
    }

    /// A run by id or unique id prefix.
    async fn run(&self, id: &str) -> Result<RunRecord>;

    /// The latest runs, newest first, optionally of one playbook.
    async fn runs(&self, playbook: Option<&str>, limit: u32) -> Result<Vec<RunRecord>>;

    /// How many runs are in `status` (for metrics; reads no run text).
    async fn count_runs(&self, status: RunStatus) -> Result<u64>;

    /// Records which process is executing a run (so `cancel` can reach it).
    async fn set_runner(&self, run: &str, pid: Option<u32>) -> Result<()>;

    /// Replaces the playbook text a run executes (`resume --to-current`, once
    /// the new text is known to agree with what already ran).
    async fn replace_text(&self, run: &str, text: &str, hash: &str, calls: &IndexMap<String, String>) -> Result<()>;

    /// Takes a run for process `pid` if its runner is still `previous` (none,
    /// or a process found dead), atomically: of two processes that resume the
    /// same run at once, exactly one gets `true`.
    async fn claim_runner(&self, run: &str, pid: u32, previous: Option<u32>) -> Result<bool>;

    /// Appends step log lines (batched; not fsynced one by one).
    async fn append_logs(&self, run: &str, lines: &[LogLine]) -> Result<()>;

    /// Log lines of a run, optionally of one step, after sequence `after`.
    async fn logs(&self, run: &str, step: Option<&str>, after: i64) -> Result<Vec<(i64, LogLine)>>;
    /// At most `limit` of those lines, from `page` on (oldest first either
    /// way): how a long log is read a page at a time, from its end first.
    async fn log_page(&self, run: &str, step: Option<&str>, page: Page, limit: u32) -> Result<Vec<(i64, LogLine)>>;

    /// The schema version in use (its migrations are applied on open).
    async fn schema_version(&self) -> Result<i64>;

    // The work queue (`run --submit`, `runbook worker`): PostgreSQL only.
}

/// The leases of `lock:` keys.
#[async_trait]
pub trait Leases: Send + Sync {
    /// Takes the lease on `key` for `holder` until `ttl` from now, atomically
    /// across processes. A lease past its expiry is free; a lease held by the
    /// same run is renewed. Returns the other holder when the key is taken.
    async fn acquire_lock(&self, key: &str, holder: &LockHolder, ttl: std::time::Duration) -> Result<Option<Lock>>;

    /// Extends every lease of a run to `ttl` from now (the heartbeat).
    async fn renew_locks(&self, run: &str, ttl: std::time::Duration) -> Result<()>;

    /// Gives back every lease of a run.
    async fn release_locks(&self, run: &str) -> Result<()>;

    /// Every lease, expired ones included (they are free to take).
    async fn locks(&self) -> Result<Vec<Lock>>;

    /// Removes the lease on `key`, whoever holds it; returns what it was.
    async fn remove_lock(&self, key: &str) -> Result<Option<Lock>>;

    /// The same store through connections of its own, opened in the calling
    /// runtime: what a heartbeat renews through, so that nothing the rest of
    /// the process does with its connections (a thread blocked while one is
    /// being given back to the pool) can hold a renewal up. `None` where
    /// there is no such thing; the renewal then shares the store.
    async fn detached(&self) -> Result<Option<std::sync::Arc<dyn Store>>> {
        Ok(None)
    }
}

/// The queue and its workers (PostgreSQL); SQLite answers that it has none.
#[async_trait]
pub trait Queue: Send + Sync {
    /// Claims one run for `worker`, skipping runs other workers are claiming:
    /// a queued run, or a submitted run whose worker's lease expired (its
    /// runner died). The lease's epoch goes up by one with every claim.
    async fn claim(&self, worker: &str, ttl: std::time::Duration) -> Result<Option<Lease>> {
        let _ = (worker, ttl);
        Err(queue_unsupported())
    }

    /// Extends a lease to `ttl` from now (the heartbeat). `None` when the
    /// lease is lost (expired or taken over): the worker must stop. Otherwise
    /// whether an operator asked for the run to be cancelled.
    async fn renew_lease(&self, lease: &Lease, ttl: std::time::Duration) -> Result<Option<bool>> {
        let _ = (lease, ttl);
        Err(queue_unsupported())
    }

    /// Gives a lease back (the run stopped, or its worker is shutting down):
    /// a run that is not over can be claimed again at once.
    async fn release_lease(&self, lease: &Lease) -> Result<()> {
        let _ = lease;
        Err(queue_unsupported())
    }

    /// Appends events like [`Journal::append_all`], in the same transaction as a
    /// check that `lease` is still held: fails with [`StoreError::Fenced`]
    /// otherwise, writing nothing.
    async fn append_leased(&self, lease: &Lease, events: &[Event]) -> Result<i64> {
        let _ = (lease, events);
        Err(queue_unsupported())
    }

    /// Appends log lines, fenced like [`Queue::append_leased`].
    async fn append_logs_leased(&self, lease: &Lease, lines: &[LogLine]) -> Result<()> {
        let _ = (lease, lines);
        Err(queue_unsupported())
    }

    /// Extends the run's `lock:` leases like [`Leases::renew_locks`], only while
    /// `lease` holds the run (a stalled worker cannot keep them).
    async fn renew_locks_leased(&self, lease: &Lease, ttl: std::time::Duration) -> Result<()> {
        let _ = (lease, ttl);
        Err(queue_unsupported())
    }

    /// Gives back the run's `lock:` leases like [`Leases::release_locks`], only
    /// while `lease` holds the run: a worker that lost the run cannot free the
    /// locks the run's new worker holds.
    async fn release_locks_leased(&self, lease: &Lease) -> Result<()> {
        let _ = lease;
        Err(queue_unsupported())
    }

    /// Asks the worker executing a submitted run to cancel it (it sees the
    /// request at its next heartbeat).
    async fn request_cancel(&self, run: &str) -> Result<()> {
        let _ = run;
        Err(queue_unsupported())
    }

    /// Records that a worker is alive (or, with `stopped`, that it stopped),
    /// for `runbook workers`. Fails when another live worker has the name.
    async fn worker_seen(&self, worker: &WorkerInfo, stopped: bool) -> Result<()> {
        let _ = (worker, stopped);
        Err(queue_unsupported())
    }

    /// The workers that ever served this state, with the runs each holds now.
    async fn workers(&self) -> Result<Vec<WorkerRow>> {
        Err(queue_unsupported())
    }

    /// Waits up to `timeout` for work to be submitted (or just sleeps).
    async fn wait_for_work(&self, timeout: std::time::Duration) {
        tokio::time::sleep(timeout).await;
    }
}

/// Where a page of a run's log starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Page {
    /// The lines after this sequence number.
    After(i64),
    /// The last lines before this sequence number (`i64::MAX`: the log's end).
    Before(i64),
}

/// The server's API tokens: stored by the SHA-256 of their secret, never
/// the secret itself. Both backends keep them; a store that wraps another
/// (a test's) has none unless it passes them through.
#[async_trait]
pub trait Tokens: Send + Sync {
    /// Records `token`, expiring at `expires_unix_ms` if set. A revoked or
    /// expired token of the same name (as of `now_ms`) is replaced; false
    /// when a live one has it.
    async fn add_token(&self, _token: &Token, _expires_unix_ms: Option<i64>, _now_ms: i64) -> Result<bool> {
        Err(tokens_unsupported())
    }
    /// The token whose secret hashes to `hash`, revoked or expired or not.
    async fn token_by_hash(&self, _hash: &str) -> Result<Option<Token>> {
        Err(tokens_unsupported())
    }
    /// Every token, by name.
    async fn tokens(&self) -> Result<Vec<Token>> {
        Err(tokens_unsupported())
    }
    /// Revokes the token `name` at `at` (RFC 3339); false when there is no
    /// such token not already revoked.
    async fn revoke_token(&self, _name: &str, _at: &str) -> Result<bool> {
        Err(tokens_unsupported())
    }
}

fn tokens_unsupported() -> StoreError {
    StoreError::Unsupported("this store keeps no API tokens".into())
}

/// An API token as stored.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, schemars::JsonSchema)]
pub struct Token {
    /// Its name: who a request with it acts as.
    pub name: String,
    /// The SHA-256 of its secret (hex); never shown.
    #[serde(skip)]
    pub hash: String,
    /// The most it may do: `viewer`, `operator`, `approver` or `admin`.
    pub role: String,
    /// Who created it.
    pub created_by: String,
    /// When (RFC 3339).
    pub created_at: String,
    /// When it stops working (RFC 3339), if ever.
    pub expires_at: Option<String>,
    /// When it was revoked (RFC 3339), if it was.
    pub revoked_at: Option<String>,
}

/// Where runs live: everything a runner, the CLI, a worker and the server
/// ask of it, by concern ([`Journal`], [`Leases`], [`Queue`], [`Tokens`]);
/// every backend is all four.
pub trait Store: Journal + Leases + Queue + Tokens {}

impl<T: Journal + Leases + Queue + Tokens + ?Sized> Store for T {}

pub(crate) fn queue_unsupported() -> StoreError {
    StoreError::Unsupported(
        "the work queue needs shared state: PostgreSQL (hint: `--state postgres://...` or RUNBOOK_STATE)".into(),
    )
}

/// A worker as it registers itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerInfo {
    /// Its name (`--name`), unique among live workers.
    pub name: String,
    /// The machine.
    pub host: String,
    /// Its process.
    pub pid: u32,
    /// Runs at once.
    pub concurrency: u32,
    /// Its lease time to live: silent for longer than that, it is gone.
    pub ttl_ms: i64,
}

/// A worker as `runbook workers` shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, schemars::JsonSchema)]
pub struct WorkerRow {
    /// Its name.
    pub name: String,
    /// The machine.
    pub host: String,
    /// Its process.
    pub pid: u32,
    /// Runs at once.
    pub concurrency: u32,
    /// When it started (RFC 3339).
    pub started_at: String,
    /// When it was last heard of (RFC 3339).
    pub seen_at: String,
    /// `alive`, `stopped` (said so) or `gone` (silent past its lease time).
    pub state: String,
    /// The runs it holds a live lease on.
    pub running: u32,
}

/// A worker's hold on a run: valid while unexpired and while the run's epoch
/// is still this one. Every write the worker makes is checked against it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The run.
    pub run_id: String,
    /// The worker.
    pub worker: String,
    /// Which claim of the run this is (1 for the first).
    pub epoch: i64,
}

/// Who takes a lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockHolder {
    /// The run.
    pub run_id: String,
    /// Who runs it.
    pub user: String,
    /// The process executing it.
    pub pid: Option<u32>,
}

/// A lease on a key (the playbook's `lock:`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, schemars::JsonSchema)]
pub struct Lock {
    /// The key.
    pub key: String,
    /// The run holding it.
    pub run_id: String,
    /// Who runs that run.
    pub user: String,
    /// The process executing it, if one does.
    pub pid: Option<u32>,
    /// Since when (RFC 3339).
    pub since: String,
    /// Until when, unless renewed (RFC 3339).
    pub expires_at: String,
    /// True when past its expiry: free to take.
    pub expired: bool,
}

/// Text matched literally by a SQL `LIKE ... ESCAPE '\'` pattern.
pub(crate) fn like_escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_")
}

/// A new sortable run id.
pub fn new_run_id() -> String {
    ulid::Ulid::new().to_string().to_lowercase()
}

/// Now, as RFC 3339 with milliseconds.
pub fn now() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}
