//! The SQLite backend: one file, WAL mode, `synchronous=FULL`, created with
//! owner-only permissions.

use crate::journal::{Event, LogLine, NewRun, Recorded, RunRecord, RunStatus};
use crate::migrate::{self, Changes};
use crate::{Journal, Leases, Lock, LockHolder, Page, Queue, Result, StoreError, Token, Tokens, now, rows, sql};
use async_trait::async_trait;
use indexmap::IndexMap;
use sqlx::migrate::Migrate;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Connection, SqlitePool};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// Versioned schema changes, applied in order, each once (see `migrate`).
const MIGRATIONS: Changes = &[
    (
        1,
        "runs, journal and logs",
        "CREATE TABLE runs (
        id TEXT PRIMARY KEY,
        playbook TEXT NOT NULL,
        version INTEGER NOT NULL,
        text TEXT NOT NULL,
        hash TEXT NOT NULL,
        inputs TEXT NOT NULL,
        status TEXT NOT NULL,
        user TEXT NOT NULL,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        pid INTEGER
    );
    CREATE INDEX runs_by_playbook ON runs (playbook, id);
    CREATE TABLE journal (
        run_id TEXT NOT NULL REFERENCES runs (id),
        seq INTEGER NOT NULL,
        at TEXT NOT NULL,
        event TEXT NOT NULL,
        PRIMARY KEY (run_id, seq)
    );
    CREATE TABLE logs (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
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
        user TEXT NOT NULL,
        pid INTEGER,
        since TEXT NOT NULL,
        expires_unix_ms INTEGER NOT NULL
    );
    CREATE INDEX locks_by_run ON locks (run_id);",
    ),
    (
        3,
        "one column vocabulary with PostgreSQL: run_user",
        "ALTER TABLE runs RENAME COLUMN user TO run_user;
    ALTER TABLE locks RENAME COLUMN user TO run_user;",
    ),
    (4, "API tokens", sql::TOKENS_TABLE),
    (5, "a run's log read from its end", sql::LOGS_BY_SEQ),
    (6, "the texts of the playbooks a run calls", sql::CALLS_COLUMN),
];

/// SQLITE_BUSY: another connection holds the lock.
fn is_locked(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.code().as_deref() == Some("5"))
}

/// Runs in one SQLite file.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    path: String,
}

impl SqliteStore {
    /// Opens (creating with 0700/0600 permissions if needed) the store at `path`,
    /// and brings its schema up to date. Two processes opening a new file at
    /// once can find it locked while the other sets it up (WAL mode is set
    /// without waiting): that is retried for up to 10 s.
    pub async fn open(path: &Path) -> Result<SqliteStore> {
        let mut tries = 0;
        loop {
            match Self::open_once(path).await {
                Err(StoreError::Db { source, .. }) if tries < 100 && is_locked(&source) => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                other => return other,
            }
        }
    }

    async fn open_once(path: &Path) -> Result<SqliteStore> {
        prepare_file(path)?;
        let shown = path.display().to_string();
        let db = |source| StoreError::Db {
            path: shown.clone(),
            source,
        };
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        // One connection: the runner writes from one task, and SQLite
        // serialises writers anyway.
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await
            .map_err(db)?;
        let store = SqliteStore { pool, path: shown };
        store.migrate().await?;
        Ok(store)
    }

    fn db(&self, source: sqlx::Error) -> StoreError {
        StoreError::Db {
            path: self.path.clone(),
            source,
        }
    }

    async fn migrate(&self) -> Result<()> {
        let mut conn = self.pool.acquire().await.map_err(|e| self.db(e))?;
        // Up to date (the usual case): no write lock at all, so read-only
        // commands never queue behind a runner, nor a runner behind them.
        let current: Option<i64> = sqlx::query_scalar(
            "SELECT MAX(version) FROM _sqlx_migrations WHERE success AND EXISTS \
             (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations')",
        )
        .fetch_optional(&mut *conn)
        .await
        .ok()
        .flatten();
        if current == Some(migrate::latest(MIGRATIONS)) {
            return Ok(());
        }
        let migrator = migrate::migrator(MIGRATIONS).await.map_err(|e| self.db(e.into()))?;
        // The file's write lock, held until every change is in: a second
        // runner opening a fresh file waits here, then finds it done.
        let mut tx = conn.begin_with("BEGIN IMMEDIATE").await.map_err(|e| self.db(e))?;
        // No such table (a fresh file, or one already adopted): nothing to adopt.
        let legacy: Vec<i64> = sqlx::query_scalar::<_, i64>(sql::LEGACY_VERSIONS)
            .fetch_all(&mut *tx)
            .await
            .unwrap_or_default();
        if !legacy.is_empty() {
            tx.ensure_migrations_table().await.map_err(|e| self.db(e.into()))?;
            for m in migrate::migrations(MIGRATIONS)
                .iter()
                .filter(|m| legacy.contains(&m.version))
            {
                sqlx::query(
                    "INSERT OR IGNORE INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
                     VALUES (?, ?, TRUE, ?, 0)",
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

    /// The file.
    pub fn path(&self) -> &str {
        &self.path
    }
}

/// Creates the folder (0700) and the file (0600) before SQLite opens it, so the
/// state is never readable by other users, not even for an instant.
fn prepare_file(path: &Path) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let io = |p: &Path, source| StoreError::Io {
        path: p.display().to_string(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| io(dir, e))?;
        }
    }
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| io(path, e))?;
    Ok(())
}

/// The default state file: `$XDG_STATE_HOME/runbook/state.db`, else
/// `~/.local/state/runbook/state.db`.
pub fn default_path() -> PathBuf {
    let base = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("runbook/state.db")
}

#[async_trait]
impl Journal for SqliteStore {
    async fn create_run(&self, run: &NewRun, first: &Event) -> Result<()> {
        if matches!(first, Event::RunQueued { .. }) {
            return Err(crate::queue_unsupported());
        }
        let mut conn = self.pool.acquire().await.map_err(|e| self.db(e))?;
        sqlx::query("BEGIN IMMEDIATE")
            .execute(&mut *conn)
            .await
            .map_err(|e| self.db(e))?;
        let at = now();
        let result = async {
            sqlx::query(sql::INSERT_RUN)
                .bind(&run.id)
                .bind(&run.playbook)
                .bind(i64::from(run.version))
                .bind(&run.text)
                .bind(&run.hash)
                .bind(run.inputs.to_string())
                .bind(RunStatus::Running.as_str())
                .bind(&run.user)
                .bind(&at)
                .bind(&at)
                .bind(sql::calls_json(&run.calls))
                .execute(&mut *conn)
                .await?;
            sqlx::query(sql::FIRST_EVENT)
                .bind(&run.id)
                .bind(&at)
                .bind(serde_json::to_string(first).unwrap_or_default())
                .execute(&mut *conn)
                .await?;
            sqlx::query("COMMIT").execute(&mut *conn).await
        };
        if let Err(e) = result.await {
            let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
            return Err(self.db(e));
        }
        Ok(())
    }

    async fn append(&self, run: &str, event: &Event) -> Result<i64> {
        self.append_all(run, std::slice::from_ref(event)).await
    }

    async fn append_all(&self, run: &str, events: &[Event]) -> Result<i64> {
        const INSERT: &str = "INSERT INTO journal (run_id, seq, at, event)
             VALUES (?1, (SELECT COALESCE(MAX(seq), 0) + 1 FROM journal WHERE run_id = ?1), ?2, ?3)
             RETURNING seq";
        let at = now();
        if let [event] = events {
            if event.status().is_none() {
                // One statement is one atomic, durable transaction: the common
                // case costs a single round trip and a single fsync.
                return sqlx::query_scalar(INSERT)
                    .bind(run)
                    .bind(&at)
                    .bind(serde_json::to_string(event).unwrap_or_default())
                    .fetch_one(&self.pool)
                    .await
                    .map_err(|e| self.db(e));
            }
        }
        // Several events, or one that changes the run's status: one transaction.
        let mut conn = self.pool.acquire().await.map_err(|e| self.db(e))?;
        sqlx::query("BEGIN IMMEDIATE")
            .execute(&mut *conn)
            .await
            .map_err(|e| self.db(e))?;
        let result = async {
            let mut seq = 0;
            for event in events {
                seq = sqlx::query_scalar(INSERT)
                    .bind(run)
                    .bind(&at)
                    .bind(serde_json::to_string(event).unwrap_or_default())
                    .fetch_one(&mut *conn)
                    .await?;
            }
            if let Some(status) = events.iter().rev().find_map(Event::status) {
                sqlx::query(sql::SET_STATUS)
                    .bind(status.as_str())
                    .bind(&at)
                    .bind(run)
                    .execute(&mut *conn)
                    .await?;
            }
            sqlx::query("COMMIT").execute(&mut *conn).await?;
            Ok::<i64, sqlx::Error>(seq)
        };
        match result.await {
            Ok(seq) => Ok(seq),
            Err(e) => {
                let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
                Err(self.db(e))
            }
        }
    }

    async fn events(&self, run: &str) -> Result<Vec<Recorded>> {
        self.events_after(run, 0).await
    }

    async fn events_after(&self, run: &str, after: i64) -> Result<Vec<Recorded>> {
        let rows = sqlx::query(sql::EVENTS_AFTER)
            .bind(run)
            .bind(after)
            .fetch_all(&self.pool)
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
            .fetch_all(&self.pool)
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
            .fetch_all(&self.pool)
            .await
            .map_err(|e| self.db(e))?;
        rows.iter().map(|r| rows::record(r).map_err(|e| self.db(e))).collect()
    }

    async fn count_runs(&self, status: RunStatus) -> Result<u64> {
        let n: i64 = sqlx::query_scalar(sql::COUNT_RUNS)
            .bind(status.as_str())
            .fetch_one(&self.pool)
            .await
            .map_err(|e| self.db(e))?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn set_runner(&self, run: &str, pid: Option<u32>) -> Result<()> {
        sqlx::query(sql::SET_RUNNER)
            .bind(pid.map(i64::from))
            .bind(run)
            .execute(&self.pool)
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
            .execute(&self.pool)
            .await
            .map_err(|e| self.db(e))?;
        Ok(())
    }

    async fn claim_runner(&self, run: &str, pid: u32, previous: Option<u32>) -> Result<bool> {
        let done = sqlx::query(sql::CLAIM_RUNNER)
            .bind(i64::from(pid))
            .bind(run)
            .bind(previous.map(i64::from))
            .execute(&self.pool)
            .await
            .map_err(|e| self.db(e))?;
        Ok(done.rows_affected() == 1)
    }

    async fn schema_version(&self) -> Result<i64> {
        sqlx::query_scalar(sql::SCHEMA_VERSION)
            .fetch_one(&self.pool)
            .await
            .map_err(|e| self.db(e))
    }

    async fn append_logs(&self, run: &str, lines: &[LogLine]) -> Result<()> {
        if lines.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await.map_err(|e| self.db(e))?;
        for l in lines {
            let stream = l.stream.as_str();
            sqlx::query(sql::INSERT_LOG)
                .bind(run)
                .bind(&l.step)
                .bind(&l.at)
                .bind(stream)
                .bind(&l.line)
                .execute(&mut *tx)
                .await
                .map_err(|e| self.db(e))?;
        }
        tx.commit().await.map_err(|e| self.db(e))
    }

    async fn logs(&self, run: &str, step: Option<&str>, after: i64) -> Result<Vec<(i64, LogLine)>> {
        let rows = sql::logs(sql::LOGS, run, step, after)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| self.db(e))?;
        rows.iter().map(|r| rows::log_line(r).map_err(|e| self.db(e))).collect()
    }

    async fn log_page(&self, run: &str, step: Option<&str>, page: Page, limit: u32) -> Result<Vec<(i64, LogLine)>> {
        let (text, from) = sql::page(page);
        let rows = sql::logs(text, run, step, from)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(|e| self.db(e))?;
        rows.iter().map(|r| rows::log_line(r).map_err(|e| self.db(e))).collect()
    }
}

#[async_trait]
impl Leases for SqliteStore {
    async fn acquire_lock(&self, key: &str, holder: &LockHolder, ttl: Duration) -> Result<Option<Lock>> {
        let now = rows::unix_ms(SystemTime::now());
        let until = rows::expiry(ttl);
        let mut conn = self.pool.acquire().await.map_err(|e| self.db(e))?;
        // IMMEDIATE: the write lock is taken at BEGIN, so two processes cannot
        // both see the key free.
        sqlx::query("BEGIN IMMEDIATE")
            .execute(&mut *conn)
            .await
            .map_err(|e| self.db(e))?;
        let work = async {
            sqlx::query(sql::DROP_EXPIRED_LOCK)
                .bind(key)
                .bind(now)
                .execute(&mut *conn)
                .await?;
            let held = sqlx::query(sql::LOCK).bind(key).fetch_optional(&mut *conn).await?;
            match held.map(|r| rows::lock(&r, now)).transpose()? {
                Some(other) if other.run_id != holder.run_id => Ok(Some(other)),
                Some(_) => {
                    sqlx::query(sql::RENEW_OWN_LOCK)
                        .bind(until)
                        .bind(holder.pid.map(i64::from))
                        .bind(key)
                        .execute(&mut *conn)
                        .await?;
                    Ok(None)
                }
                None => {
                    sqlx::query(sql::INSERT_LOCK)
                        .bind(key)
                        .bind(&holder.run_id)
                        .bind(&holder.user)
                        .bind(holder.pid.map(i64::from))
                        .bind(crate::now())
                        .bind(until)
                        .execute(&mut *conn)
                        .await?;
                    Ok(None)
                }
            }
        };
        let result: std::result::Result<Option<Lock>, sqlx::Error> = work.await;
        match result {
            Ok(r) => {
                sqlx::query("COMMIT")
                    .execute(&mut *conn)
                    .await
                    .map_err(|e| self.db(e))?;
                Ok(r)
            }
            Err(e) => {
                let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
                Err(self.db(e))
            }
        }
    }

    async fn detached(&self) -> Result<Option<std::sync::Arc<dyn crate::Store>>> {
        let options = (*self.pool.connect_options()).clone();
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await
            .map_err(|e| self.db(e))?;
        Ok(Some(std::sync::Arc::new(SqliteStore {
            pool,
            path: self.path.clone(),
        })))
    }

    async fn renew_locks(&self, run: &str, ttl: Duration) -> Result<()> {
        let until = rows::expiry(ttl);
        sqlx::query(sql::RENEW_LOCKS)
            .bind(until)
            .bind(run)
            .execute(&self.pool)
            .await
            .map_err(|e| self.db(e))?;
        Ok(())
    }

    async fn release_locks(&self, run: &str) -> Result<()> {
        sqlx::query(sql::RELEASE_LOCKS)
            .bind(run)
            .execute(&self.pool)
            .await
            .map_err(|e| self.db(e))?;
        Ok(())
    }

    async fn locks(&self) -> Result<Vec<Lock>> {
        let now = rows::unix_ms(SystemTime::now());
        let rows = sqlx::query(sql::LOCKS)
            .fetch_all(&self.pool)
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
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| self.db(e))?;
        row.map(|r| rows::lock(&r, now)).transpose().map_err(|e| self.db(e))
    }
}

#[async_trait]
impl Queue for SqliteStore {}

#[async_trait]
impl Tokens for SqliteStore {
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
            .execute(&self.pool)
            .await
            .map_err(|e| self.db(e))?;
        Ok(done.rows_affected() == 1)
    }

    async fn token_by_hash(&self, hash: &str) -> Result<Option<Token>> {
        let row = sqlx::query(sql::TOKEN_BY_HASH)
            .bind(hash)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| self.db(e))?;
        row.map(|r| rows::token(&r)).transpose().map_err(|e| self.db(e))
    }

    async fn tokens(&self) -> Result<Vec<Token>> {
        let rows = sqlx::query(sql::TOKENS)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| self.db(e))?;
        rows.iter().map(|r| rows::token(r).map_err(|e| self.db(e))).collect()
    }

    async fn revoke_token(&self, name: &str, at: &str) -> Result<bool> {
        let done = sqlx::query(sql::REVOKE_TOKEN)
            .bind(at)
            .bind(name)
            .execute(&self.pool)
            .await
            .map_err(|e| self.db(e))?;
        Ok(done.rows_affected() == 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Stream;
    use serde_json::json;

    #[tokio::test(flavor = "current_thread")]
    async fn sqlite_passes_the_store_conformance_suite() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(&dir.path().join("runbook.db")).await.expect("opens");
        if let Err(msg) = crate::conformance::check(&store).await {
            panic!("SQLite does not conform: {msg}");
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn journal_round_trip_and_permissions() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state/runbook.db");
        let store = SqliteStore::open(&path).await.expect("opens");
        let mode = std::fs::metadata(&path).expect("file").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let dmode = std::fs::metadata(path.parent().expect("dir"))
            .expect("dir")
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(dmode, 0o700);

        let id = crate::new_run_id();
        let run = NewRun {
            id: id.clone(),
            playbook: "p".into(),
            version: 1,
            text: "x".into(),
            hash: "h".into(),
            calls: Default::default(),
            inputs: json!({"a": 1}),
            user: "me".into(),
        };
        store
            .create_run(
                &run,
                &Event::RunStarted {
                    user: "me".into(),
                    runner: None,
                },
            )
            .await
            .expect("create");
        store
            .append(
                &id,
                &Event::StepStarted {
                    step: "a".into(),
                    attempt: 1,
                },
            )
            .await
            .expect("append");
        let seq = store
            .append(
                &id,
                &Event::RunFinished {
                    status: RunStatus::Succeeded,
                    error: None,
                },
            )
            .await
            .expect("append");
        assert_eq!(seq, 3);
        let events = store.events(&id).await.expect("events");
        assert_eq!(events.len(), 3);
        assert_eq!(
            events[1].event,
            Event::StepStarted {
                step: "a".into(),
                attempt: 1
            }
        );
        let rec = store.run(&id[..10]).await.expect("by prefix");
        assert_eq!(rec.status, RunStatus::Succeeded);
        assert!(matches!(store.run("zzz").await, Err(StoreError::NoRun(_))));
        assert!(matches!(store.run("a%").await, Err(StoreError::NoRun(_))));

        // Reopening keeps everything and does not re-apply migrations.
        drop(store);
        let store = SqliteStore::open(&path).await.expect("reopens");
        assert_eq!(store.events(&id).await.expect("events").len(), 3);
        store
            .append_logs(
                &id,
                &[LogLine {
                    step: "roll[a].x".into(),
                    at: now(),
                    stream: Stream::Stdout,
                    line: "hi".into(),
                }],
            )
            .await
            .expect("logs");
        assert_eq!(store.logs(&id, Some("roll[a]"), 0).await.expect("logs").len(), 1);
        // A for_each step includes its items, as a group includes its steps.
        assert_eq!(store.logs(&id, Some("roll"), 0).await.expect("logs").len(), 1);
        assert_eq!(store.logs(&id, Some("rol"), 0).await.expect("logs").len(), 0);
    }
    #[tokio::test]
    async fn a_lease_is_held_until_released_or_expired() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("s.db")).await.unwrap();
        let a = LockHolder {
            run_id: "a".into(),
            user: "alice".into(),
            pid: Some(1),
        };
        let b = LockHolder {
            run_id: "b".into(),
            user: "bob".into(),
            pid: Some(2),
        };
        let long = Duration::from_secs(60);
        assert_eq!(store.acquire_lock("deploy/prod", &a, long).await.unwrap(), None);
        let held = store.acquire_lock("deploy/prod", &b, long).await.unwrap().unwrap();
        assert_eq!(
            (held.run_id.as_str(), held.user.as_str(), held.expired),
            ("a", "alice", false)
        );
        // The same run takes it again (resume); another key is free.
        assert_eq!(store.acquire_lock("deploy/prod", &a, long).await.unwrap(), None);
        assert_eq!(store.acquire_lock("db/failover", &b, long).await.unwrap(), None);
        store.release_locks("a").await.unwrap();
        assert_eq!(store.acquire_lock("deploy/prod", &b, long).await.unwrap(), None);
        // An expired lease is free to take.
        store.renew_locks("b", Duration::from_millis(0)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert!(store.locks().await.unwrap().iter().all(|l| l.expired));
        assert_eq!(store.acquire_lock("deploy/prod", &a, long).await.unwrap(), None);
        let removed = store.remove_lock("deploy/prod").await.unwrap().unwrap();
        assert_eq!(removed.run_id, "a");
        assert_eq!(store.locks().await.unwrap().len(), 1, "db/failover is still held");
    }

    /// A state file written before runbook used sqlx's migrator: its versions
    /// are adopted, its runs kept, and it opens as any other.
    #[tokio::test(flavor = "current_thread")]
    async fn a_state_file_from_before_the_migrator_is_adopted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("old.db");
        let options = SqliteConnectOptions::new().filename(&path).create_if_missing(true);
        let mut conn = sqlx::SqliteConnection::connect_with(&options).await.unwrap();
        sqlx::query("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)")
            .execute(&mut conn)
            .await
            .unwrap();
        // The schema runbook had then: the first two changes.
        for (version, _, sql) in &MIGRATIONS[..2] {
            sqlx::raw_sql(sql).execute(&mut conn).await.unwrap();
            sqlx::query("INSERT INTO schema_migrations VALUES (?, 'then')")
                .bind(version)
                .execute(&mut conn)
                .await
                .unwrap();
        }
        sqlx::query(
            "INSERT INTO runs VALUES ('01oldrun', 'deploy', 1, 'name: deploy', 'h', '{}', 'succeeded', 'alice', 't', 't', NULL)",
        )
        .execute(&mut conn)
        .await
        .unwrap();
        drop(conn);
        let store = SqliteStore::open(&path).await.expect("opens");
        assert_eq!(store.schema_version().await.unwrap(), migrate::latest(MIGRATIONS));
        assert_eq!(
            store.run("01oldrun").await.unwrap().user,
            "alice",
            "the run is kept, its user in the renamed column"
        );
        let tables: Vec<String> =
            sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
                .fetch_all(&store.pool)
                .await
                .unwrap();
        assert!(!tables.contains(&"schema_migrations".to_owned()), "{tables:?}");
        let adopted: Vec<(i64, bool)> =
            sqlx::query_as("SELECT version, success FROM _sqlx_migrations ORDER BY version")
                .fetch_all(&store.pool)
                .await
                .unwrap();
        assert_eq!(
            adopted,
            [(1, true), (2, true), (3, true), (4, true), (5, true), (6, true)],
            "1 and 2 adopted, the later ones applied"
        );
        // Opened again: nothing to do, and the checksums still match the SQL.
        drop(store);
        SqliteStore::open(&path).await.expect("opens again");
    }

    /// Runners opening one fresh file at once: one migrates, the others wait.
    #[tokio::test(flavor = "current_thread")]
    async fn runners_opening_a_fresh_file_at_once_migrate_it_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("fresh.db");
        let opens: Vec<_> = (0..6)
            .map(|_| {
                let p = path.clone();
                tokio::spawn(async move { SqliteStore::open(&p).await.map(|_| ()) })
            })
            .collect();
        for o in opens {
            o.await.unwrap().expect("every runner opens it");
        }
        let store = SqliteStore::open(&path).await.unwrap();
        assert_eq!(store.schema_version().await.unwrap(), migrate::latest(MIGRATIONS));
    }
}
