//! The statements both backends run, written once. Placeholders are `$1`,
//! `$2`, ...: PostgreSQL's own, and valid in SQLite too (a `$NNN` parameter
//! is numbered by its first appearance, so each text numbers them in order
//! and a repeated `$1` is the same value). One column vocabulary: the run's
//! user is `run_user` everywhere (`user` is reserved in PostgreSQL). What
//! differs stays in its backend: transactions and their locking (`BEGIN
//! IMMEDIATE` against `FOR UPDATE`), the journal's sequence, upserts, the
//! queue (PostgreSQL only) and the migrations' SQL types.

/// The columns of a lease, in the order `rows::lock` reads them.
pub(crate) const LOCK_COLUMNS: &str = "key, run_id, run_user, pid, since, expires_unix_ms";

pub(crate) const INSERT_RUN: &str = "INSERT INTO runs \
     (id, playbook, version, text, hash, inputs, status, run_user, created_at, updated_at, calls) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)";
pub(crate) const FIRST_EVENT: &str = "INSERT INTO journal (run_id, seq, at, event) VALUES ($1, 1, $2, $3)";
pub(crate) const SET_STATUS: &str = "UPDATE runs SET status = $1, updated_at = $2 WHERE id = $3";
pub(crate) const EVENTS_AFTER: &str = "SELECT seq, at, event FROM journal WHERE run_id = $1 AND seq > $2 ORDER BY seq";
pub(crate) const RUN_BY_PREFIX: &str = "SELECT * FROM runs WHERE id LIKE $1 ORDER BY id LIMIT 2";
/// The newest runs, of one playbook if `$1` is not null.
pub(crate) const RUNS: &str =
    "SELECT * FROM runs WHERE (CAST($1 AS TEXT) IS NULL OR playbook = $1) ORDER BY id DESC LIMIT $2";
pub(crate) const COUNT_RUNS: &str = "SELECT COUNT(*) FROM runs WHERE status = $1";
pub(crate) const SET_RUNNER: &str = "UPDATE runs SET pid = $1 WHERE id = $2";
/// Compare-and-set of the runner: only if it is still `$3` (null or not).
pub(crate) const CLAIM_RUNNER: &str = "UPDATE runs SET pid = $1 WHERE id = $2 AND pid IS NOT DISTINCT FROM $3";
pub(crate) const REPLACE_TEXT: &str = "UPDATE runs SET text = $1, hash = $2, calls = $4 WHERE id = $3";
/// The column that keeps the texts of the playbooks a run calls.
pub(crate) const CALLS_COLUMN: &str = "ALTER TABLE runs ADD COLUMN calls TEXT NOT NULL DEFAULT '{}'";
pub(crate) const SCHEMA_VERSION: &str = "SELECT COALESCE(MAX(version), 0) FROM _sqlx_migrations WHERE success";
pub(crate) const INSERT_LOG: &str = "INSERT INTO logs (run_id, step, at, stream, line) VALUES ($1, $2, $3, $4, $5)";
/// A run's log lines after `$2`, of step `$3` and the steps inside it (`$4`
/// and `$5`: its `.` and `[` prefixes as LIKE patterns), or all if `$3` is null.
pub(crate) const LOGS: &str = "SELECT seq, step, at, stream, line FROM logs \
     WHERE run_id = $1 AND seq > $2 \
     AND (CAST($3 AS TEXT) IS NULL OR step = $3 OR step LIKE $4 ESCAPE '\\' OR step LIKE $5 ESCAPE '\\') \
     ORDER BY seq";
/// A page of [`LOGS`]: at most `$6` lines after `$2`.
pub(crate) const LOGS_AFTER: &str = "SELECT seq, step, at, stream, line FROM logs \
     WHERE run_id = $1 AND seq > $2 \
     AND (CAST($3 AS TEXT) IS NULL OR step = $3 OR step LIKE $4 ESCAPE '\\' OR step LIKE $5 ESCAPE '\\') \
     ORDER BY seq LIMIT $6";
/// A page of [`LOGS`]: the last `$6` lines before `$2`, oldest first.
pub(crate) const LOGS_BEFORE: &str = "SELECT seq, step, at, stream, line FROM (SELECT seq, step, at, stream, line FROM logs \
     WHERE run_id = $1 AND seq < $2 \
     AND (CAST($3 AS TEXT) IS NULL OR step = $3 OR step LIKE $4 ESCAPE '\\' OR step LIKE $5 ESCAPE '\\') \
     ORDER BY seq DESC LIMIT $6) AS page ORDER BY seq";
/// Reading a run's log from its end needs its lines by sequence.
pub(crate) const LOGS_BY_SEQ: &str = "CREATE INDEX logs_by_run_seq ON logs (run_id, seq);";
pub(crate) const DROP_EXPIRED_LOCK: &str = "DELETE FROM locks WHERE key = $1 AND expires_unix_ms < $2";
pub(crate) const RENEW_OWN_LOCK: &str = "UPDATE locks SET expires_unix_ms = $1, pid = $2 WHERE key = $3";
pub(crate) const RENEW_LOCKS: &str = "UPDATE locks SET expires_unix_ms = $1 WHERE run_id = $2";
pub(crate) const RELEASE_LOCKS: &str = "DELETE FROM locks WHERE run_id = $1";
pub(crate) const INSERT_LOCK: &str =
    "INSERT INTO locks (key, run_id, run_user, pid, since, expires_unix_ms) VALUES ($1, $2, $3, $4, $5, $6)";
pub(crate) const LOCKS: &str = "SELECT key, run_id, run_user, pid, since, expires_unix_ms FROM locks ORDER BY key";
pub(crate) const LOCK: &str = "SELECT key, run_id, run_user, pid, since, expires_unix_ms FROM locks WHERE key = $1";
pub(crate) const REMOVE_LOCK: &str =
    "DELETE FROM locks WHERE key = $1 RETURNING key, run_id, run_user, pid, since, expires_unix_ms";
/// A token, replacing one of its name only if that one is revoked or
/// expired (`$8`: now, in ms); no row changes when a live one has the name.
pub(crate) const ADD_TOKEN: &str = "INSERT INTO tokens \
     (name, hash, role, created_by, created_at, expires_at, expires_unix_ms) \
     VALUES ($1, $2, $3, $4, $5, $6, $7) \
     ON CONFLICT (name) DO UPDATE SET hash = excluded.hash, role = excluded.role, \
     created_by = excluded.created_by, created_at = excluded.created_at, \
     expires_at = excluded.expires_at, expires_unix_ms = excluded.expires_unix_ms, revoked_at = NULL \
     WHERE tokens.revoked_at IS NOT NULL OR tokens.expires_unix_ms < $8";
pub(crate) const TOKEN_BY_HASH: &str =
    "SELECT name, hash, role, created_by, created_at, expires_at, revoked_at FROM tokens WHERE hash = $1";
pub(crate) const TOKENS: &str =
    "SELECT name, hash, role, created_by, created_at, expires_at, revoked_at FROM tokens ORDER BY name";
pub(crate) const REVOKE_TOKEN: &str = "UPDATE tokens SET revoked_at = $1 WHERE name = $2 AND revoked_at IS NULL";
/// The tokens table; the same SQL for both backends.
pub(crate) const TOKENS_TABLE: &str = "CREATE TABLE tokens (
        name TEXT PRIMARY KEY,
        hash TEXT NOT NULL UNIQUE,
        role TEXT NOT NULL,
        created_by TEXT NOT NULL,
        created_at TEXT NOT NULL,
        expires_at TEXT,
        expires_unix_ms BIGINT,
        revoked_at TEXT
    );";

/// State from before the migrator: the versions it recorded.
pub(crate) const LEGACY_VERSIONS: &str = "SELECT version FROM schema_migrations";
pub(crate) const DROP_LEGACY: &str = "DROP TABLE schema_migrations";

/// Where a page of the log starts: its query and position.
pub(crate) fn page(page: crate::Page) -> (&'static str, i64) {
    match page {
        crate::Page::After(seq) => (LOGS_AFTER, seq),
        crate::Page::Before(seq) => (LOGS_BEFORE, seq),
    }
}

/// A log query ([`LOGS`], or a page of it) with its first five values
/// bound, for either backend: the run, the position, and the step with its
/// children.
pub(crate) fn logs<'q, DB>(
    text: &'q str,
    run: &'q str,
    step: Option<&'q str>,
    from: i64,
) -> sqlx::query::Query<'q, DB, <DB as sqlx::Database>::Arguments<'q>>
where
    DB: sqlx::Database,
    &'q str: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    Option<&'q str>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    Option<String>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    i64: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
{
    // The step's own lines, and those of the steps inside it (`.` and `[`).
    let inside = |sep: &str| step.map(|s| format!("{}{sep}%", crate::like_escape(s)));
    sqlx::query(text)
        .bind(run)
        .bind(from)
        .bind(step)
        .bind(inside("."))
        .bind(inside("["))
}

/// The `calls` column's value: the texts as a JSON object.
pub(crate) fn calls_json(calls: &indexmap::IndexMap<String, String>) -> String {
    serde_json::to_string(calls).unwrap_or_else(|_| "{}".to_owned())
}
