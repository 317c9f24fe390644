//! The PostgreSQL backend: the same runs, journal, logs and leases as the
//! SQLite file, in a database many runners share (`--state postgres://...`).
//!
//! Appends to a run's journal take the run's row lock (`SELECT ... FOR
//! UPDATE`), so the sequence numbers of one run never race; every write is a
//! committed transaction before the call returns. Schema changes are the
//! versioned list in [`MIGRATIONS`], applied by sqlx's migrator under an
//! advisory lock so that two runners starting at once do not both migrate.

use crate::journal::{Event, LogLine, NewRun, Recorded, RunRecord, RunStatus};
use crate::migrate::{self, Changes};
use crate::pg_hosts::{self, Targets};
use crate::{
    Journal, Lease, Leases, Lock, LockHolder, Page, Queue, Result, StoreError, Token, Tokens, WorkerInfo, WorkerRow,
    now, rows, sql,
};
use async_trait::async_trait;
use indexmap::IndexMap;
use sqlx::PgPool;
use sqlx::migrate::Migrate;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

/// Versioned schema changes, applied in order, each once (see `migrate`).
const MIGRATIONS: Changes = &[
    (
        1,
        "runs, journal and logs",
        "CREATE TABLE runs (
            id TEXT PRIMARY KEY,
            playbook TEXT NOT NULL,
            version BIGINT NOT NULL,
            text TEXT NOT NULL,
            hash TEXT NOT NULL,
            inputs TEXT NOT NULL,
            status TEXT NOT NULL,
            run_user TEXT NOT NULL,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            pid BIGINT
        );
        CREATE INDEX runs_by_playbook ON runs (playbook, id);
        CREATE TABLE journal (
            run_id TEXT NOT NULL REFERENCES runs (id),
            seq BIGINT NOT NULL,
            at TEXT NOT NULL,
            event TEXT NOT NULL,
            PRIMARY KEY (run_id, seq)
        );
        CREATE TABLE logs (
            seq BIGSERIAL PRIMARY KEY,
            run_id TEXT NOT NULL REFERENCES runs (id),
            step TEXT NOT NULL,
            at TEXT NOT NULL,
            stream TEXT NOT NULL,
            line TEXT NOT NULL
        );
        CREATE INDEX logs_by_run ON logs (run_id, step, seq);",
    ),
    (
        2,
        "lock leases",
        "CREATE TABLE locks (
            key TEXT PRIMARY KEY,
            run_id TEXT NOT NULL,
            run_user TEXT NOT NULL,
            pid BIGINT,
            since TEXT NOT NULL,
            expires_unix_ms BIGINT NOT NULL
        );
        CREATE INDEX locks_by_run ON locks (run_id);",
    ),
    (
        3,
        "the queue: submitted runs and their leases",
        "ALTER TABLE runs ADD COLUMN submitted BOOLEAN NOT NULL DEFAULT FALSE;
        ALTER TABLE runs ADD COLUMN worker TEXT;
        ALTER TABLE runs ADD COLUMN lease_epoch BIGINT NOT NULL DEFAULT 0;
        ALTER TABLE runs ADD COLUMN lease_until BIGINT;
        ALTER TABLE runs ADD COLUMN cancel_requested BOOLEAN NOT NULL DEFAULT FALSE;
        ALTER TABLE journal ADD COLUMN lease_epoch BIGINT;
        CREATE INDEX runs_claimable ON runs (id)
            WHERE submitted AND status IN ('queued', 'running', 'interrupted');",
    ),
    (
        4,
        "workers",
        "CREATE TABLE workers (
            name TEXT PRIMARY KEY,
            host TEXT NOT NULL,
            pid BIGINT NOT NULL,
            concurrency BIGINT NOT NULL,
            ttl_ms BIGINT NOT NULL,
            started_at TEXT NOT NULL,
            seen_unix_ms BIGINT NOT NULL,
            stopped BOOLEAN NOT NULL DEFAULT FALSE
        );",
    ),
    (5, "API tokens", sql::TOKENS_TABLE),
    (6, "a run's log read from its end", sql::LOGS_BY_SEQ),
    (7, "the texts of the playbooks a run calls", sql::CALLS_COLUMN),
];

/// The database server's clock in milliseconds since the epoch: leases are
/// compared against one clock, whatever the workers' clocks say.
const NOW_MS: &str = "(EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT";

/// True while worker `$2` holds run `$1` at epoch `$3` (the fence, as a
/// condition of a statement on another table).
const HOLDS: &str = "SELECT 1 FROM runs WHERE id = $1 AND worker = $2 AND lease_epoch = $3";

/// A run's lease as the fence reads it: worker, epoch, expiry, the
/// database's now, and the run's status.
type LeaseRow = (Option<String>, i64, Option<i64>, i64, String);

/// The channel `run --submit` notifies and idle workers listen on.
const QUEUE_CHANNEL: &str = "runbook_queue";

/// An arbitrary, fixed key for the advisory lock taken while migrating.
const MIGRATION_LOCK: i64 = 0x0072_756e_626f_6f6b; // "runbook"

/// Runs in a PostgreSQL database.
#[derive(Debug, Clone)]
pub struct PgStore {
    /// The pool on the server in use; replaced when it is lost.
    pool: Arc<std::sync::RwLock<PgPool>>,
    /// The connection string's hosts, for finding the server again.
    targets: Arc<Targets>,
    /// A call lost the server: the next one looks for it again first.
    stale: Arc<AtomicBool>,
    /// Held while looking; when the last look failed.
    looked: Arc<tokio::sync::Mutex<Option<Instant>>>,
    shown: String,
    /// Notifications of submitted runs, opened by the first idle wait.
    listener: Arc<tokio::sync::Mutex<Option<sqlx::postgres::PgListener>>>,
}

impl PgStore {
    /// The schema version this runbook brings a database to.
    pub fn latest_version() -> i64 {
        migrate::latest(MIGRATIONS)
    }

    /// Connects to `url` (`postgres://user:pass@host:port/db`) and brings the
    /// schema up to date. The password never appears in errors.
    pub async fn open(url: &str) -> Result<PgStore> {
        let targets = Targets::parse(url).map_err(|e| StoreError::Db {
            path: shown(url),
            source: sqlx::Error::Configuration(e.into()),
        })?;
        let shown = targets.shown.clone();
        let pool = targets.connect().await.map_err(|e| StoreError::Db {
            path: shown.clone(),
            source: e,
        })?;
        let store = PgStore {
            pool: Arc::new(std::sync::RwLock::new(pool)),
            targets: Arc::new(targets),
            stale: Arc::default(),
            looked: Arc::default(),
            shown,
            listener: Arc::default(),
        };
        store.migrate().await?;
        Ok(store)
    }

    fn db(&self, source: sqlx::Error) -> StoreError {
        if pg_hosts::lost(&source) {
            self.stale.store(true, Ordering::SeqCst);
        }
        StoreError::Db {
            path: self.shown.clone(),
            source,
        }
    }

    /// The pool on the server in use. After a call lost its server, the
    /// hosts are tried again in order first (at most once a second while
    /// none answers): a promoted standby is found, a demoted primary left.
    async fn pool(&self) -> Result<PgPool> {
        if self.stale.load(Ordering::SeqCst) {
            let mut looked = self.looked.lock().await;
            if self.stale.load(Ordering::SeqCst) {
                if let Some(at) = *looked {
                    let wait = Duration::from_secs(1).saturating_sub(at.elapsed());
                    tokio::time::sleep(wait).await;
                }
                match self.targets.connect().await {
                    Ok(pool) => {
                        if let Ok(mut current) = self.pool.write() {
                            *current = pool;
                        }
                        *looked = None;
                        self.stale.store(false, Ordering::SeqCst);
                    }
                    Err(e) => {
                        *looked = Some(Instant::now());
                        return Err(self.db(e));
                    }
                }
            }
        }
        self.pool
            .read()
            .map(|p| p.clone())
            .map_err(|_| StoreError::Unsupported("the state database's pool is poisoned".into()))
    }

    /// Appends in one transaction under the run's row lock, first checking
    /// `lease` when one is given (the worker's fence).
    async fn append_checked(&self, run: &str, events: &[Event], lease: Option<&Lease>) -> Result<i64> {
        let at = now();
        let mut tx = self.pool().await?.begin().await.map_err(|e| self.db(e))?;
        // The run's row lock orders appends to one run, and holds the lease
        // still while the fence is checked and the events are written.
        match lease {
            Some(lease) => {
                if let Err(e) = self.fence(&mut tx, lease, true).await {
                    // At once: the row lock must not outlive the refusal.
                    let _ = tx.rollback().await;
                    return Err(e);
                }
            }
            None => {
                let exists: Option<String> = sqlx::query_scalar("SELECT id FROM runs WHERE id = $1 FOR UPDATE")
                    .bind(run)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(|e| self.db(e))?;
                if exists.is_none() {
                    return Err(StoreError::NoRun(run.to_owned()));
                }
            }
        }
        let mut seq: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) FROM journal WHERE run_id = $1")
            .bind(run)
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| self.db(e))?;
        for event in events {
            seq += 1;
            // Which lease wrote it: an audit that no two workers interleaved.
            sqlx::query("INSERT INTO journal (run_id, seq, at, event, lease_epoch) VALUES ($1, $2, $3, $4, $5)")
                .bind(run)
                .bind(seq)
                .bind(&at)
                .bind(serde_json::to_string(event).unwrap_or_default())
                .bind(lease.map(|l| l.epoch))
                .execute(&mut *tx)
                .await
                .map_err(|e| self.db(e))?;
        }
        if let Some(status) = events.iter().rev().find_map(Event::status) {
            sqlx::query(sql::SET_STATUS)
                .bind(status.as_str())
                .bind(&at)
                .bind(run)
                .execute(&mut *tx)
                .await
                .map_err(|e| self.db(e))?;
            if status == RunStatus::Queued {
                self.notify(&mut tx, run).await?;
            }
        }
        tx.commit().await.map_err(|e| self.db(e))?;
        Ok(seq)
    }

    /// Wakes idle workers when the transaction commits.
    async fn notify(&self, tx: &mut sqlx::PgConnection, run: &str) -> Result<()> {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(QUEUE_CHANNEL)
            .bind(run)
            .execute(&mut *tx)
            .await
            .map_err(|e| self.db(e))?;
        Ok(())
    }

    /// Fails with [`StoreError::Fenced`] unless `lease` is the run's current,
    /// unexpired lease, and locks the run's row until the transaction ends.
    /// For a `journal` write, the run must also still be open to a worker
    /// (queued, running or interrupted): an operator who cancelled it, or a
    /// run already over, is never written past. Log lines, which can trail the
    /// run's end, only need the lease.
    async fn fence(&self, tx: &mut sqlx::PgConnection, lease: &Lease, journal: bool) -> Result<()> {
        let lock = if journal { "FOR UPDATE" } else { "FOR SHARE" };
        let row: Option<LeaseRow> = sqlx::query_as(&format!(
            "SELECT worker, lease_epoch, lease_until, {NOW_MS}, status FROM runs WHERE id = $1 {lock}"
        ))
        .bind(&lease.run_id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(|e| self.db(e))?;
        let Some((worker, epoch, until, now, status)) = row else {
            return Err(StoreError::NoRun(lease.run_id.clone()));
        };
        let ours = worker.as_deref() == Some(lease.worker.as_str()) && epoch == lease.epoch;
        let live = until.is_some_and(|u| u >= now);
        let open = !journal || matches!(status.as_str(), "queued" | "running" | "interrupted");
        if ours && live && open {
            return Ok(());
        }
        Err(StoreError::Fenced {
            run: lease.run_id.clone(),
            worker: lease.worker.clone(),
            epoch: lease.epoch,
            now: if !ours {
                format!(
                    "worker `{}` holds it now (epoch {epoch})",
                    worker.as_deref().unwrap_or("?")
                )
            } else if !live {
                "the lease expired".to_owned()
            } else {
                format!("the run is {status}")
            },
        })
    }

    async fn migrate(&self) -> Result<()> {
        let migrator = migrate::migrator(MIGRATIONS).await.map_err(|e| self.db(e.into()))?;
        let mut tx = self.pool().await?.begin().await.map_err(|e| self.db(e))?;
        // Runners starting at once: one migrates, the others wait, then find it done.
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(MIGRATION_LOCK)
            .execute(&mut *tx)
            .await
            .map_err(|e| self.db(e))?;
        let legacy: bool = sqlx::query_scalar("SELECT to_regclass('schema_migrations') IS NOT NULL")
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| self.db(e))?;
        if legacy {
            let applied: Vec<i64> = sqlx::query_scalar(sql::LEGACY_VERSIONS)
                .fetch_all(&mut *tx)
                .await
                .map_err(|e| self.db(e))?;
            tx.ensure_migrations_table().await.map_err(|e| self.db(e.into()))?;
            for m in migrate::migrations(MIGRATIONS)
                .iter()
                .filter(|m| applied.contains(&m.version))
            {
                sqlx::query(
                    "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
                     VALUES ($1, $2, TRUE, $3, 0) ON CONFLICT (version) DO NOTHING",
                )
                .bind(m.version)
                .bind(&*m.description)
                .bind(&*m.checksum)
                .execute(&mut *tx)
                .await
                .map_err(|e| self.db(e))?;
            }
            sqlx::query(sql::DROP_LEGACY)
                .execute(&mut *tx)
                .await
                .map_err(|e| self.db(e))?;
        }
        migrator.run_direct(&mut *tx).await.map_err(|e| self.db(e.into()))?;
        tx.commit().await.map_err(|e| self.db(e))
    }
}

/// A connection string without its password, for messages.
fn shown(url: &str) -> String {
    match url.split_once('@') {
        Some((_, rest)) => format!("postgres://***@{rest}"),
        None => url.to_owned(),
    }
}

async fn insert_logs(
    tx: &mut sqlx::PgConnection,
    run: &str,
    lines: &[LogLine],
) -> std::result::Result<(), sqlx::Error> {
    for l in lines {
        let stream = l.stream.as_str();
        sqlx::query(sql::INSERT_LOG)
            .bind(run)
            .bind(&l.step)
            .bind(&l.at)
            .bind(stream)
            .bind(&l.line)
            .execute(&mut *tx)
            .await?;
    }
    Ok(())
}

#[async_trait]
impl Journal for PgStore {
    async fn create_run(&self, run: &NewRun, first: &Event) -> Result<()> {
        let at = now();
        // A run submitted to the queue is executed by the workers.
        let submitted = matches!(first, Event::RunQueued { .. });
        let mut tx = self.pool().await?.begin().await.map_err(|e| self.db(e))?;
        sqlx::query(
            "INSERT INTO runs (id, playbook, version, text, hash, inputs, status, run_user, created_at, updated_at, submitted, calls)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9, $10, $11)",
        )
        .bind(&run.id)
        .bind(&run.playbook)
        .bind(i64::from(run.version))
        .bind(&run.text)
        .bind(&run.hash)
        .bind(run.inputs.to_string())
        .bind(first.status().unwrap_or(RunStatus::Running).as_str())
        .bind(&run.user)
        .bind(&at)
        .bind(submitted)
        .bind(sql::calls_json(&run.calls))
        .execute(&mut *tx)
        .await
        .map_err(|e| self.db(e))?;
        sqlx::query(sql::FIRST_EVENT)
            .bind(&run.id)
            .bind(&at)
            .bind(serde_json::to_string(first).unwrap_or_default())
            .execute(&mut *tx)
            .await
            .map_err(|e| self.db(e))?;
        if submitted {
            self.notify(&mut tx, &run.id).await?;
        }
        tx.commit().await.map_err(|e| self.db(e))
    }

    async fn append(&self, run: &str, event: &Event) -> Result<i64> {
        self.append_all(run, std::slice::from_ref(event)).await
    }

    async fn append_all(&self, run: &str, events: &[Event]) -> Result<i64> {
        self.append_checked(run, events, None).await
    }

    async fn events(&self, run: &str) -> Result<Vec<Recorded>> {
        self.events_after(run, 0).await
    }

    async fn events_after(&self, run: &str, after: i64) -> Result<Vec<Recorded>> {
        let rows = sqlx::query(sql::EVENTS_AFTER)
            .bind(run)
            .bind(after)
            .fetch_all(&self.pool().await?)
            .await
            .map_err(|e| self.db(e))?;
        rows.iter()
            .map(|row| rows::recorded(run, row, |e| self.db(e)))
            .collect()
    }

    async fn run(&self, id: &str) -> Result<RunRecord> {
        let pattern = rows::id_prefix(id)?;
        let rows = sqlx::query(sql::RUN_BY_PREFIX)
            .bind(pattern)
            .fetch_all(&self.pool().await?)
            .await
            .map_err(|e| self.db(e))?;
        match rows.as_slice() {
            [] => Err(StoreError::NoRun(id.to_owned())),
            [one] => rows::record(one).map_err(|e| self.db(e)),
            _ => Err(StoreError::Ambiguous(id.to_owned())),
        }
    }

    async fn runs(&self, playbook: Option<&str>, limit: u32) -> Result<Vec<RunRecord>> {
        let rows = sqlx::query(sql::RUNS)
            .bind(playbook)
            .bind(i64::from(limit))
            .fetch_all(&self.pool().await?)
            .await
            .map_err(|e| self.db(e))?;
        rows.iter().map(|r| rows::record(r).map_err(|e| self.db(e))).collect()
    }

    async fn count_runs(&self, status: RunStatus) -> Result<u64> {
        let n: i64 = sqlx::query_scalar(sql::COUNT_RUNS)
            .bind(status.as_str())
            .fetch_one(&self.pool().await?)
            .await
            .map_err(|e| self.db(e))?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn set_runner(&self, run: &str, pid: Option<u32>) -> Result<()> {
        sqlx::query(sql::SET_RUNNER)
            .bind(pid.map(i64::from))
            .bind(run)
            .execute(&self.pool().await?)
            .await
            .map_err(|e| self.db(e))?;
        Ok(())
    }

    async fn replace_text(&self, run: &str, text: &str, hash: &str, calls: &IndexMap<String, String>) -> Result<()> {
        sqlx::query(sql::REPLACE_TEXT)
            .bind(text)
            .bind(hash)
            .bind(run)
            .bind(sql::calls_json(calls))
            .execute(&self.pool().await?)
            .await
            .map_err(|e| self.db(e))?;
        Ok(())
    }

    async fn claim_runner(&self, run: &str, pid: u32, previous: Option<u32>) -> Result<bool> {
        let done = sqlx::query(sql::CLAIM_RUNNER)
            .bind(i64::from(pid))
            .bind(run)
            .bind(previous.map(i64::from))
            .execute(&self.pool().await?)
            .await
            .map_err(|e| self.db(e))?;
        Ok(done.rows_affected() == 1)
    }

    async fn append_logs(&self, run: &str, lines: &[LogLine]) -> Result<()> {
        if lines.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool().await?.begin().await.map_err(|e| self.db(e))?;
        insert_logs(&mut tx, run, lines).await.map_err(|e| self.db(e))?;
        tx.commit().await.map_err(|e| self.db(e))
    }

    async fn logs(&self, run: &str, step: Option<&str>, after: i64) -> Result<Vec<(i64, LogLine)>> {
        let rows = sql::logs(sql::LOGS, run, step, after)
            .fetch_all(&self.pool().await?)
            .await
            .map_err(|e| self.db(e))?;
        rows.iter().map(|r| rows::log_line(r).map_err(|e| self.db(e))).collect()
    }

    async fn log_page(&self, run: &str, step: Option<&str>, page: Page, limit: u32) -> Result<Vec<(i64, LogLine)>> {
        let (text, from) = sql::page(page);
        let rows = sql::logs(text, run, step, from)
            .bind(i64::from(limit))
            .fetch_all(&self.pool().await?)
            .await
            .map_err(|e| self.db(e))?;
        rows.iter().map(|r| rows::log_line(r).map_err(|e| self.db(e))).collect()
    }

    async fn schema_version(&self) -> Result<i64> {
        sqlx::query_scalar(sql::SCHEMA_VERSION)
            .fetch_one(&self.pool().await?)
            .await
            .map_err(|e| self.db(e))
    }
}

#[async_trait]
impl Leases for PgStore {
    async fn detached(&self) -> Result<Option<std::sync::Arc<dyn crate::Store>>> {
        let pool = self.targets.connect().await.map_err(|e| self.db(e))?;
        Ok(Some(Arc::new(PgStore {
            pool: Arc::new(std::sync::RwLock::new(pool)),
            targets: self.targets.clone(),
            stale: Arc::default(),
            looked: Arc::default(),
            shown: self.shown.clone(),
            listener: Arc::default(),
        })))
    }

    async fn acquire_lock(&self, key: &str, holder: &LockHolder, ttl: Duration) -> Result<Option<Lock>> {
        let now = rows::unix_ms(SystemTime::now());
        let until = rows::expiry(ttl);
        let mut tx = self.pool().await?.begin().await.map_err(|e| self.db(e))?;
        sqlx::query(sql::DROP_EXPIRED_LOCK)
            .bind(key)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(|e| self.db(e))?;
        // Atomic across runners: the primary key decides who inserted first.
        let taken = sqlx::query(&format!("{} ON CONFLICT (key) DO NOTHING", sql::INSERT_LOCK))
            .bind(key)
            .bind(&holder.run_id)
            .bind(&holder.user)
            .bind(holder.pid.map(i64::from))
            .bind(crate::now())
            .bind(until)
            .execute(&mut *tx)
            .await
            .map_err(|e| self.db(e))?
            .rows_affected()
            == 1;
        let result = if taken {
            None
        } else {
            let row = sqlx::query(&format!(
                "SELECT {} FROM locks WHERE key = $1 FOR UPDATE",
                sql::LOCK_COLUMNS
            ))
            .bind(key)
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| self.db(e))?;
            let other = rows::lock(&row, now).map_err(|e| self.db(e))?;
            if other.run_id == holder.run_id {
                sqlx::query(sql::RENEW_OWN_LOCK)
                    .bind(until)
                    .bind(holder.pid.map(i64::from))
                    .bind(key)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| self.db(e))?;
                None
            } else {
                Some(other)
            }
        };
        tx.commit().await.map_err(|e| self.db(e))?;
        Ok(result)
    }

    async fn renew_locks(&self, run: &str, ttl: Duration) -> Result<()> {
        let until = rows::expiry(ttl);
        sqlx::query(sql::RENEW_LOCKS)
            .bind(until)
            .bind(run)
            .execute(&self.pool().await?)
            .await
            .map_err(|e| self.db(e))?;
        Ok(())
    }

    async fn release_locks(&self, run: &str) -> Result<()> {
        sqlx::query(sql::RELEASE_LOCKS)
            .bind(run)
            .execute(&self.pool().await?)
            .await
            .map_err(|e| self.db(e))?;
        Ok(())
    }

    async fn locks(&self) -> Result<Vec<Lock>> {
        let now = rows::unix_ms(SystemTime::now());
        let rows = sqlx::query(sql::LOCKS)
            .fetch_all(&self.pool().await?)
            .await
            .map_err(|e| self.db(e))?;
        rows.iter()
            .map(|r| rows::lock(r, now).map_err(|e| self.db(e)))
            .collect()
    }

    async fn remove_lock(&self, key: &str) -> Result<Option<Lock>> {
        let now = rows::unix_ms(SystemTime::now());
        let row = sqlx::query(sql::REMOVE_LOCK)
            .bind(key)
            .fetch_optional(&self.pool().await?)
            .await
            .map_err(|e| self.db(e))?;
        row.map(|r| rows::lock(&r, now)).transpose().map_err(|e| self.db(e))
    }
}

#[async_trait]
impl Queue for PgStore {
    async fn claim(&self, worker: &str, ttl: Duration) -> Result<Option<Lease>> {
        let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX / 2);
        // SKIP LOCKED: workers claiming at once each get a different run, and
        // none waits for another's transaction.
        let row: Option<(String, i64)> = sqlx::query_as(&format!(
            "WITH next AS (
                SELECT id FROM runs
                WHERE submitted AND status IN ('queued', 'running', 'interrupted')
                  AND (lease_until IS NULL OR lease_until < {NOW_MS})
                ORDER BY id LIMIT 1
                FOR UPDATE SKIP LOCKED)
             UPDATE runs SET worker = $1, lease_epoch = runs.lease_epoch + 1,
                 lease_until = {NOW_MS} + $2, cancel_requested = FALSE
             FROM next WHERE runs.id = next.id
             RETURNING runs.id, runs.lease_epoch"
        ))
        .bind(worker)
        .bind(ttl_ms)
        .fetch_optional(&self.pool().await?)
        .await
        .map_err(|e| self.db(e))?;
        Ok(row.map(|(run_id, epoch)| Lease {
            run_id,
            worker: worker.to_owned(),
            epoch,
        }))
    }

    async fn renew_lease(&self, lease: &Lease, ttl: Duration) -> Result<Option<bool>> {
        let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX / 2);
        // An expired lease stays lost, even if nobody has taken the run yet.
        sqlx::query_scalar(&format!(
            "UPDATE runs SET lease_until = {NOW_MS} + $4
             WHERE id = $1 AND worker = $2 AND lease_epoch = $3 AND lease_until >= {NOW_MS}
             RETURNING cancel_requested"
        ))
        .bind(&lease.run_id)
        .bind(&lease.worker)
        .bind(lease.epoch)
        .bind(ttl_ms)
        .fetch_optional(&self.pool().await?)
        .await
        .map_err(|e| self.db(e))
    }

    async fn release_lease(&self, lease: &Lease) -> Result<()> {
        sqlx::query("UPDATE runs SET lease_until = NULL WHERE id = $1 AND worker = $2 AND lease_epoch = $3")
            .bind(&lease.run_id)
            .bind(&lease.worker)
            .bind(lease.epoch)
            .execute(&self.pool().await?)
            .await
            .map_err(|e| self.db(e))?;
        Ok(())
    }

    async fn append_leased(&self, lease: &Lease, events: &[Event]) -> Result<i64> {
        self.append_checked(&lease.run_id, events, Some(lease)).await
    }

    async fn append_logs_leased(&self, lease: &Lease, lines: &[LogLine]) -> Result<()> {
        let mut tx = self.pool().await?.begin().await.map_err(|e| self.db(e))?;
        if let Err(e) = self.fence(&mut tx, lease, false).await {
            let _ = tx.rollback().await;
            return Err(e);
        }
        insert_logs(&mut tx, &lease.run_id, lines)
            .await
            .map_err(|e| self.db(e))?;
        tx.commit().await.map_err(|e| self.db(e))
    }

    async fn renew_locks_leased(&self, lease: &Lease, ttl: Duration) -> Result<()> {
        sqlx::query(&format!(
            "UPDATE locks SET expires_unix_ms = $4 WHERE run_id = $1 AND EXISTS ({HOLDS})"
        ))
        .bind(&lease.run_id)
        .bind(&lease.worker)
        .bind(lease.epoch)
        .bind(rows::expiry(ttl))
        .execute(&self.pool().await?)
        .await
        .map_err(|e| self.db(e))?;
        Ok(())
    }

    async fn release_locks_leased(&self, lease: &Lease) -> Result<()> {
        sqlx::query(&format!("DELETE FROM locks WHERE run_id = $1 AND EXISTS ({HOLDS})"))
            .bind(&lease.run_id)
            .bind(&lease.worker)
            .bind(lease.epoch)
            .execute(&self.pool().await?)
            .await
            .map_err(|e| self.db(e))?;
        Ok(())
    }

    async fn worker_seen(&self, w: &WorkerInfo, stopped: bool) -> Result<()> {
        // A new worker (or one seen again) takes the name unless another live
        // process has it: same name, other host or process, not stopped, heard
        // of within its lease time.
        let recorded = sqlx::query(&format!(
            "INSERT INTO workers (name, host, pid, concurrency, ttl_ms, started_at, seen_unix_ms, stopped)
             VALUES ($1, $2, $3, $4, $5, $6, {NOW_MS}, $7)
             ON CONFLICT (name) DO UPDATE SET host = $2, pid = $3, concurrency = $4, ttl_ms = $5,
                 started_at = CASE WHEN workers.pid = $3 AND workers.host = $2 THEN workers.started_at ELSE $6 END,
                 seen_unix_ms = {NOW_MS}, stopped = $7
             WHERE (workers.pid = $3 AND workers.host = $2) OR workers.stopped
                OR workers.seen_unix_ms + workers.ttl_ms < {NOW_MS}"
        ))
        .bind(&w.name)
        .bind(&w.host)
        .bind(i64::from(w.pid))
        .bind(i64::from(w.concurrency))
        .bind(w.ttl_ms)
        .bind(now())
        .bind(stopped)
        .execute(&self.pool().await?)
        .await
        .map_err(|e| self.db(e))?
        .rows_affected();
        if recorded == 1 {
            return Ok(());
        }
        let (host, pid): (String, i64) = sqlx::query_as("SELECT host, pid FROM workers WHERE name = $1")
            .bind(&w.name)
            .fetch_one(&self.pool().await?)
            .await
            .map_err(|e| self.db(e))?;
        Err(StoreError::Taken(format!(
            "a live worker is already named `{}` (process {pid} on {host}); give this one another --name",
            w.name
        )))
    }

    async fn workers(&self) -> Result<Vec<WorkerRow>> {
        let rows: Vec<(String, String, i64, i64, i64, String, i64, bool, i64, i64)> = sqlx::query_as(&format!(
            "SELECT w.name, w.host, w.pid, w.concurrency, w.ttl_ms, w.started_at, w.seen_unix_ms, w.stopped,
                    (SELECT count(*) FROM runs r WHERE r.worker = w.name AND r.lease_until >= {NOW_MS}),
                    {NOW_MS}
             FROM workers w ORDER BY w.name"
        ))
        .fetch_all(&self.pool().await?)
        .await
        .map_err(|e| self.db(e))?;
        Ok(rows
            .into_iter()
            .map(
                |(name, host, pid, concurrency, ttl, started_at, seen, stopped, running, now)| WorkerRow {
                    name,
                    host,
                    pid: u32::try_from(pid).unwrap_or(0),
                    concurrency: u32::try_from(concurrency).unwrap_or(0),
                    started_at,
                    seen_at: rows::rfc3339_ms(seen),
                    state: if stopped {
                        "stopped"
                    } else if seen + ttl < now {
                        "gone"
                    } else {
                        "alive"
                    }
                    .to_owned(),
                    running: u32::try_from(running).unwrap_or(0),
                },
            )
            .collect())
    }

    async fn request_cancel(&self, run: &str) -> Result<()> {
        sqlx::query("UPDATE runs SET cancel_requested = TRUE WHERE id = $1")
            .bind(run)
            .execute(&self.pool().await?)
            .await
            .map_err(|e| self.db(e))?;
        Ok(())
    }

    async fn wait_for_work(&self, timeout: Duration) {
        let mut slot = self.listener.lock().await;
        if slot.is_none() {
            if let Ok(pool) = self.pool().await {
                if let Ok(mut l) = sqlx::postgres::PgListener::connect_with(&pool).await {
                    if l.listen(QUEUE_CHANNEL).await.is_ok() {
                        *slot = Some(l);
                    }
                }
            }
        }
        match slot.as_mut() {
            Some(l) => {
                if let Ok(Err(_)) = tokio::time::timeout(timeout, l.recv()).await {
                    // The connection broke: listen again next time.
                    *slot = None;
                }
            }
            None => tokio::time::sleep(timeout).await,
        }
    }
}

#[async_trait]
impl Tokens for PgStore {
    async fn add_token(&self, token: &Token, expires_unix_ms: Option<i64>, now_ms: i64) -> Result<bool> {
        let done = sqlx::query(sql::ADD_TOKEN)
            .bind(&token.name)
            .bind(&token.hash)
            .bind(&token.role)
            .bind(&token.created_by)
            .bind(&token.created_at)
            .bind(&token.expires_at)
            .bind(expires_unix_ms)
            .bind(now_ms)
            .execute(&self.pool().await?)
            .await
            .map_err(|e| self.db(e))?;
        Ok(done.rows_affected() == 1)
    }

    async fn token_by_hash(&self, hash: &str) -> Result<Option<Token>> {
        let row = sqlx::query(sql::TOKEN_BY_HASH)
            .bind(hash)
            .fetch_optional(&self.pool().await?)
            .await
            .map_err(|e| self.db(e))?;
        row.map(|r| rows::token(&r)).transpose().map_err(|e| self.db(e))
    }

    async fn tokens(&self) -> Result<Vec<Token>> {
        let rows = sqlx::query(sql::TOKENS)
            .fetch_all(&self.pool().await?)
            .await
            .map_err(|e| self.db(e))?;
        rows.iter().map(|r| rows::token(r).map_err(|e| self.db(e))).collect()
    }

    async fn revoke_token(&self, name: &str, at: &str) -> Result<bool> {
        let done = sqlx::query(sql::REVOKE_TOKEN)
            .bind(at)
            .bind(name)
            .execute(&self.pool().await?)
            .await
            .map_err(|e| self.db(e))?;
        Ok(done.rows_affected() == 1)
    }
}
