//! The `pg` step kind: PostgreSQL as an operator drives it during deploys,
//! backups, restore tests and failovers.
//!
//! Queries go through tokio-postgres; a cancelled or timed-out step cancels its
//! query on the server (a cancel request, as psql's Ctrl-C), so nothing keeps
//! running in `pg_stat_activity`. Dumps and restores run the real `pg_dump` and
//! `pg_restore`, with the connection passed in `PG*` variables so the password
//! never appears in a command line, a log or the journal. Every action that
//! changes something says whether it did (`changed`), so re-runs are safe.
//! A DSN is read the way libpq reads one ([`libpq`]): a `service=`, the `PG*`
//! environment, the password file, and no TLS over a unix socket.
//!
//! This crate depends only on `runbook-core`, never on the engine.

mod conn;
mod libpq;
mod tools;

use conn::Db;
use runbook_core::kind::{
    CancellationToken, Effect, LogStream, OutputDecl, OutputType, Outputs, StepContext, StepError, StepKind,
    UNKNOWN_YET, duration_param, one_line, params, plan_params, require_by_action, schema_for,
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value as Json, json};
use std::time::{Duration, Instant};

/// Talks to PostgreSQL.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PgParams {
    /// What to do.
    pub action: Action,
    /// The connection, `postgres://user:pass@host:port/db` or `host=... dbname=...`.
    /// Take it from a secret (`{{secrets.db}}`): it is masked everywhere.
    pub dsn: String,
    /// query, assert, exec: the SQL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sql: Option<String>,
    /// query and assert: the most rows kept as output (default 1000); more are dropped and `truncated` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_rows: Option<u64>,
    /// assert: what must hold of the result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect: Option<Expect>,
    /// dump, verify-dump, restore: the dump file (a folder when `jobs` is set on dump).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// dump: also write the row count of every table, counted in the dump's
    /// own snapshot, to this JSON file (what a restore must hold). verify-counts:
    /// the file to compare `database` with. verify-dump: the counts must be of
    /// this dump and its database, and count exactly the tables it holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counts_file: Option<String>,
    /// dump and restore: parallel jobs (dump then writes the directory format).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jobs: Option<u32>,
    /// create-db, drop-db: the database to create or drop; terminate-idle: only
    /// sessions on it; verify-dump: the database the dump must have been taken
    /// of; every other action: connect to it instead of the dsn's (restore:
    /// the target).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    /// create-db: the template database (default template1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    /// restore: the role that owns what is restored (pg_restore `--role`:
    /// objects are created after `SET ROLE`); without it, the DSN's user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// replication: refuse (fail) when the standby is behind by more bytes than this, e.g. `16MB`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "size"))]
    pub max_lag_bytes: Option<String>,
    /// replication: refuse (fail) when the standby is behind by more time than this, e.g. `30s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "duration"))]
    pub max_lag: Option<String>,
    /// terminate-idle: only sessions idle for longer than this, e.g. `10m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "duration"))]
    pub older_than: Option<String>,
    /// terminate-idle: only sessions of this user (empty: every user).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// terminate-idle: list who would be terminated, terminate nobody.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dry_run: bool,
    /// The longest the action may take: the query is cancelled on the server
    /// after it (default: none for queries, 60s for promote and wait-ready).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "duration"))]
    pub timeout: Option<String>,
    /// Where pg_dump and pg_restore are (default: PATH, then the newest /usr/lib/postgresql/*/bin).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bin_dir: Option<String>,
    /// A CA certificate (PEM) to trust for TLS, besides the system's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
}

/// A `pg` action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// Run a query; its rows become the `rows` output (typed JSON).
    Query,
    /// Run a query and fail unless `expect` holds.
    Assert,
    /// Run statements (no rows); `affected` counts changed rows.
    Exec,
    /// pg_dump the database of `dsn` into `file` (custom format; directory with `jobs`).
    Dump,
    /// Check that `file` is a readable dump (pg_restore --list).
    VerifyDump,
    /// Compare the row count of every table of the database with
    /// `counts_file` (written by `dump`); fail on any difference.
    VerifyCounts,
    /// pg_restore `file` into the database of `dsn` (--clean --if-exists --no-owner).
    Restore,
    /// Create `database` unless it exists.
    CreateDb,
    /// Drop `database` if it exists, ending its sessions.
    DropDb,
    /// Promote the standby of `dsn` and wait until it accepts writes.
    Promote,
    /// Measure replication lag; fail beyond `max_lag_bytes` / `max_lag`.
    Replication,
    /// Terminate sessions idle for longer than `older_than`.
    TerminateIdle,
    /// Wait until the server accepts connections and queries.
    WaitReady,
}

impl Action {
    fn as_str(self) -> &'static str {
        match self {
            Action::Query => "query",
            Action::Assert => "assert",
            Action::Exec => "exec",
            Action::Dump => "dump",
            Action::VerifyDump => "verify-dump",
            Action::VerifyCounts => "verify-counts",
            Action::Restore => "restore",
            Action::CreateDb => "create-db",
            Action::DropDb => "drop-db",
            Action::Promote => "promote",
            Action::Replication => "replication",
            Action::TerminateIdle => "terminate-idle",
            Action::WaitReady => "wait-ready",
        }
    }
}

/// What `assert` checks; every field given must hold.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// The exact number of rows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<u64>,
    /// At least this many rows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_rows: Option<u64>,
    /// At most this many rows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_rows: Option<u64>,
    /// The first column of the first row equals this value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<Json>,
}

const OUTPUTS: &[OutputDecl] = &[
    OutputDecl::new("rows", OutputType::List, "query, assert: the rows, as JSON objects"),
    OutputDecl::new(
        "row_count",
        OutputType::Integer,
        "query, assert: how many rows the query returned",
    ),
    OutputDecl::new(
        "value",
        OutputType::Any,
        "query, assert: the first column of the first row",
    ),
    OutputDecl::new(
        "truncated",
        OutputType::Boolean,
        "query, assert: more rows than max_rows were returned",
    ),
    OutputDecl::new("affected", OutputType::Integer, "exec: rows changed"),
    OutputDecl::new("file", OutputType::String, "dump: the file written"),
    OutputDecl::new("size_bytes", OutputType::Integer, "dump, verify-dump: the dump's size"),
    OutputDecl::new(
        "entries",
        OutputType::Integer,
        "verify-dump: entries in the dump's table of contents",
    ),
    OutputDecl::new(
        "tables",
        OutputType::Integer,
        "verify-dump: tables with data in the dump; verify-counts: tables in the database",
    ),
    OutputDecl::new(
        "counts",
        OutputType::Any,
        "dump with counts_file, verify-counts: rows per table (`schema.table`)",
    ),
    OutputDecl::new(
        "total_rows",
        OutputType::Integer,
        "dump with counts_file, verify-counts: rows in all tables",
    ),
    OutputDecl::new("counts_file", OutputType::String, "dump: the counts file written"),
    OutputDecl::new(
        "dump_database",
        OutputType::String,
        "verify-dump: the database the dump was taken of (its header's dbname)",
    ),
    OutputDecl::new(
        "changed",
        OutputType::Boolean,
        "create-db, drop-db, promote: false when it was already so",
    ),
    OutputDecl::new("timeline", OutputType::Integer, "promote: the new timeline"),
    OutputDecl::new(
        "lsn",
        OutputType::String,
        "promote, replication: the current WAL position",
    ),
    OutputDecl::new(
        "lag_bytes",
        OutputType::Integer,
        "replication: how far the standby's replay is behind, in bytes",
    ),
    OutputDecl::new(
        "lag_seconds",
        OutputType::Number,
        "replication: how far the standby's replay is behind, in seconds",
    ),
    OutputDecl::new(
        "standbys",
        OutputType::List,
        "replication: each standby (from a primary) or this standby",
    ),
    OutputDecl::new(
        "terminated",
        OutputType::List,
        "terminate-idle: the sessions ended (or that would be, with dry_run)",
    ),
    OutputDecl::new(
        "in_recovery",
        OutputType::Boolean,
        "wait-ready, replication: whether the server is a standby",
    ),
    OutputDecl::new("waited_ms", OutputType::Integer, "wait-ready: how long it took"),
];

/// The `pg` kind.
#[derive(Debug, Default)]
pub struct Pg;

use runbook_core::inputs::parse_size as parse_bytes;

fn needs<'a>(p: &'a PgParams, field: &str, v: &'a Option<String>) -> Result<&'a str, StepError> {
    v.as_deref()
        .ok_or_else(|| StepError::new(format!("`{}` needs `{field}`", p.action.as_str())))
}

#[async_trait::async_trait]
impl StepKind for Pg {
    fn name(&self) -> &'static str {
        "pg"
    }

    fn summary(&self) -> &'static str {
        "PostgreSQL: queries and gates, dump/verify/restore, create/drop, promote, replication lag, idle sessions"
    }

    fn params_schema(&self) -> Json {
        require_by_action(
            schema_for::<PgParams>(),
            &[
                (&["query", "assert", "exec"][..], &["sql"][..]),
                (&["assert"], &["expect"]),
                (&["dump", "verify-dump", "restore"], &["file"]),
                (&["create-db", "drop-db"], &["database"]),
                (&["terminate-idle"], &["older_than"]),
            ],
        )
    }

    fn effect(&self, with: &Json) -> Effect {
        let Some(p) = plan_params::<PgParams>(with) else {
            return Effect::Unknown;
        };
        match p.action {
            Action::Query
            | Action::Assert
            | Action::VerifyDump
            | Action::VerifyCounts
            | Action::Replication
            | Action::WaitReady => Effect::Read,
            Action::TerminateIdle if p.dry_run => Effect::Read,
            Action::Exec => Effect::Unknown,
            _ => Effect::Write,
        }
    }

    fn idempotence(&self) -> String {
        "yes, except `exec` (resume may run it again)".to_owned()
    }

    fn idempotent(&self, with: &Json) -> bool {
        // Statements of `exec` may not be; every other action is.
        plan_params::<PgParams>(with).is_some_and(|p| p.action != Action::Exec)
    }

    fn outputs(&self) -> &[OutputDecl] {
        OUTPUTS
    }

    fn describe(&self, with: &Json) -> String {
        let Some(p) = plan_params::<PgParams>(with) else {
            return format!("a PostgreSQL action {UNKNOWN_YET}");
        };
        let s = |v: &Option<String>| v.clone().unwrap_or_else(|| "?".to_owned());
        let action = p.action.as_str();
        match p.action {
            Action::Query | Action::Assert | Action::Exec => format!("{action}: {}", one_line(&s(&p.sql), 100)),
            Action::Dump => format!("pg_dump to {}", s(&p.file)),
            Action::VerifyDump => format!("pg_restore --list {}", s(&p.file)),
            Action::VerifyCounts => format!("row counts of every table against {}", s(&p.counts_file)),
            Action::Restore => format!("pg_restore {} (--clean --if-exists --no-owner)", s(&p.file)),
            Action::CreateDb | Action::DropDb => format!("{action} {}", s(&p.database)),
            Action::TerminateIdle => format!(
                "terminate sessions idle longer than {}{}",
                s(&p.older_than),
                if p.dry_run { " (dry run: list only)" } else { "" }
            ),
            Action::Replication => {
                let limits = [&p.max_lag_bytes, &p.max_lag].into_iter().flatten();
                let mut d = String::from("replication lag");
                for limit in limits {
                    d.push_str(&format!(", refuse beyond {limit}"));
                }
                d
            }
            Action::Promote | Action::WaitReady => action.to_owned(),
        }
    }

    fn can_preview(&self, with: &Json) -> bool {
        plan_params::<PgParams>(with).is_some_and(|p| matches!(p.action, Action::TerminateIdle | Action::Replication))
    }

    async fn preview(&self, with: Json, cancel: &CancellationToken) -> Result<Option<Vec<String>>, StepError> {
        preview(params(with)?, cancel).await
    }

    async fn run(&self, ctx: &StepContext, with: Json) -> Result<Outputs, StepError> {
        let p: PgParams = params(with)?;
        let say = |text: String| ctx.log.line(LogStream::Stdout, &text);
        match p.action {
            Action::Dump | Action::VerifyDump | Action::Restore => tools::run(ctx, &p).await,
            Action::WaitReady => wait_ready(ctx, &p).await,
            _ => {
                let db = Db::connect(&p.dsn, connect_to(&p), p.ca_file.as_deref(), &ctx.cancel).await?;
                // promote's `timeout` is pg_promote's own wait, which returns false when it passes.
                let limit = match p.action {
                    Action::Promote => None,
                    _ => duration_param("timeout", p.timeout.as_deref())?,
                };
                let work = act(&db, &p, &say);
                db.guard(work, limit, &ctx.cancel).await
            }
        }
    }
}

/// How many rows of a query the log shows (the outputs keep up to `max_rows`).
const SHOWN_ROWS: usize = 20;

/// A value as one cell of a logged row: text unquoted, on one line.
fn cell(v: &Json) -> String {
    match v {
        Json::String(s) => one_line(s, 120),
        Json::Null => "null".to_owned(),
        other => other.to_string(),
    }
}

/// How long a `plan --live` look may take when the step sets no timeout.
const PREVIEW_LIMIT: Duration = Duration::from_secs(10);

/// `plan --live`: what terminate-idle would end and how far replication lags,
/// looked up read-only (terminate-idle as a dry run).
async fn preview(p: PgParams, cancel: &CancellationToken) -> Result<Option<Vec<String>>, StepError> {
    let mut p = match p.action {
        Action::TerminateIdle | Action::Replication => p,
        _ => return Ok(None),
    };
    p.dry_run = true;
    let db = Db::connect(&p.dsn, connect_to(&p), p.ca_file.as_deref(), cancel).await?;
    let limit = duration_param("timeout", p.timeout.as_deref())?.unwrap_or(PREVIEW_LIMIT);
    let lines = std::sync::Mutex::new(Vec::new());
    let say = |text: String| {
        if let Ok(mut l) = lines.lock() {
            l.push(text);
        }
    };
    let result = db.guard(act(&db, &p, &say), Some(limit), cancel).await;
    let mut lines = lines.into_inner().unwrap_or_default();
    if let Err(e) = result {
        lines.push(format!("would fail now: {e}"));
    }
    Ok(Some(lines))
}

/// The database to connect to instead of the dsn's, if any: `database` names
/// the object of create-db, drop-db and terminate-idle, not where to connect.
pub(crate) fn connect_to(p: &PgParams) -> Option<&str> {
    match p.action {
        Action::CreateDb | Action::DropDb | Action::TerminateIdle => None,
        _ => p.database.as_deref(),
    }
}

async fn act(db: &Db, p: &PgParams, say: &(dyn Fn(String) + Sync)) -> Result<Outputs, StepError> {
    let mut out = Outputs::new();
    match p.action {
        Action::Query | Action::Assert => {
            let sql = needs(p, "sql", &p.sql)?;
            let cap = p.max_rows.unwrap_or(1000);
            let (rows, total) = db.rows(sql, cap).await?;
            let value = rows
                .first()
                .and_then(|r| r.as_object())
                .and_then(|o| o.values().next())
                .cloned()
                .unwrap_or(Json::Null);
            // The first rows, one line each, as a person at the console would
            // read them in psql.
            for row in rows.iter().take(SHOWN_ROWS) {
                if let Some(o) = row.as_object() {
                    let cells: Vec<String> = o.iter().map(|(k, v)| format!("{k}={}", cell(v))).collect();
                    say(cells.join("  "));
                }
            }
            out.insert("row_count".into(), json!(total));
            out.insert("truncated".into(), json!(total > cap));
            out.insert("value".into(), value.clone());
            out.insert("rows".into(), Json::Array(rows));
            if total > cap {
                say(format!("{total} rows; kept the first {cap} (max_rows)"));
            } else {
                say(format!("{total} rows"));
            }
            if p.action == Action::Assert {
                let e = p.expect.clone().unwrap_or_default();
                let mut fails = Vec::new();
                if let Some(n) = e.rows.filter(|n| *n != total) {
                    fails.push(format!("expected {n} rows, got {total}"));
                }
                if let Some(n) = e.min_rows.filter(|n| total < *n) {
                    fails.push(format!("expected at least {n} rows, got {total}"));
                }
                if let Some(n) = e.max_rows.filter(|n| total > *n) {
                    fails.push(format!("expected at most {n} rows, got {total}"));
                }
                if let Some(v) = e.value.as_ref().filter(|v| !same_value(v, &value)) {
                    fails.push(format!("expected the value {v}, got {value}"));
                }
                if !fails.is_empty() {
                    return Err(StepError::new(format!("assertion failed: {}", fails.join("; "))).with_outputs(out));
                }
            }
        }
        Action::VerifyCounts => {
            let file = needs(p, "counts_file", &p.counts_file)?;
            let want = read_counts(file)?;
            let got = db.table_counts().await?;
            let mut differ = Vec::new();
            for (table, n) in &want {
                match got.get(table) {
                    Some(m) if m == n => {}
                    Some(m) => differ.push(format!("{table}: {m} rows, {n} in the source")),
                    None => differ.push(format!("{table}: missing ({n} rows in the source)")),
                }
            }
            let rows: i64 = got.values().sum();
            say(format!(
                "{} of {} tables hold the rows of the source ({rows} rows)",
                want.len() - differ.len(),
                want.len()
            ));
            out.insert("tables".into(), json!(got.len()));
            out.insert("total_rows".into(), json!(rows));
            out.insert("counts".into(), json!(got));
            if !differ.is_empty() {
                return Err(
                    StepError::new(format!("the restore differs from its source: {}", differ.join("; ")))
                        .with_outputs(out),
                );
            }
        }
        Action::Exec => {
            let affected = db.exec(needs(p, "sql", &p.sql)?).await?;
            say(format!("{affected} rows affected"));
            out.insert("affected".into(), json!(affected));
        }
        Action::CreateDb | Action::DropDb => {
            let name = needs(p, "database", &p.database)?;
            let exists = db.database_exists(name).await?;
            let create = p.action == Action::CreateDb;
            let changed = exists != create;
            if changed && create {
                let template = p.template.as_deref().unwrap_or("template1");
                db.exec(&format!(
                    "CREATE DATABASE {} TEMPLATE {}",
                    conn::ident(name),
                    conn::ident(template)
                ))
                .await?;
            } else if changed {
                db.exec(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", conn::ident(name)))
                    .await?;
            }
            say(format!(
                "database {name}: {}",
                match (create, changed) {
                    (true, true) => "created",
                    (true, false) => "already there",
                    (false, true) => "dropped",
                    (false, false) => "already gone",
                }
            ));
            out.insert("changed".into(), json!(changed));
        }
        Action::Promote => {
            let wait = duration_param("timeout", p.timeout.as_deref())?.unwrap_or(Duration::from_secs(60));
            let (changed, timeline, lsn) = db.promote(wait).await?;
            say(format!(
                "{} (timeline {timeline}, at {lsn})",
                if changed {
                    "promoted: now accepts writes"
                } else {
                    "already a primary"
                }
            ));
            out.insert("changed".into(), json!(changed));
            out.insert("timeline".into(), json!(timeline));
            out.insert("lsn".into(), json!(lsn));
        }
        Action::Replication => {
            let lag = db.replication().await?;
            for s in &lag.standbys {
                // Where the position comes from: the standby's WAL receiver
                // (none: it receives nothing, and "0 bytes behind" is only
                // what it has), or the primary's walsender and its state.
                let source = match (s.get("receiver"), s.get("state")) {
                    (Some(Json::String(r)), _) => format!(", WAL receiver {r}"),
                    (Some(_), _) => ", no WAL receiver: nothing is being received".to_owned(),
                    (None, Some(Json::String(st))) => format!(", {st}"),
                    _ => String::new(),
                };
                say(format!(
                    "{}: {} bytes behind, {:.1}s{}{source}",
                    s["name"].as_str().unwrap_or("standby"),
                    s["lag_bytes"],
                    s["lag_seconds"].as_f64().unwrap_or(0.0),
                    if s["replay_paused"] == json!(true) {
                        " (replay paused)"
                    } else {
                        ""
                    }
                ));
            }
            out.insert("in_recovery".into(), json!(lag.in_recovery));
            out.insert("lsn".into(), json!(lag.lsn));
            out.insert("lag_bytes".into(), json!(lag.bytes));
            out.insert("lag_seconds".into(), json!(lag.seconds));
            out.insert("standbys".into(), Json::Array(lag.standbys.clone()));
            let mut refuse = Vec::new();
            if let Some(max) = p.max_lag_bytes.as_deref() {
                let max = parse_bytes(max).map_err(|e| StepError::new(format!("`max_lag_bytes`: {e}")))?;
                if lag.bytes > max {
                    refuse.push(format!("{} bytes behind > max_lag_bytes {}", lag.bytes, max));
                }
            }
            if let Some(max) = duration_param("max_lag", p.max_lag.as_deref())? {
                if lag.seconds > max.as_secs_f64() {
                    refuse.push(format!(
                        "{:.1}s behind > max_lag {}",
                        lag.seconds,
                        p.max_lag.as_deref().unwrap_or("")
                    ));
                }
            }
            if !refuse.is_empty() {
                return Err(StepError::new(format!(
                    "replication lag too high: {}; failing over now would lose the writes it has not replayed",
                    refuse.join(", ")
                ))
                .with_outputs(out));
            }
        }
        Action::TerminateIdle => {
            let older = duration_param("older_than", p.older_than.as_deref())?
                .ok_or_else(|| StepError::new("`terminate-idle` needs `older_than`"))?;
            let sessions = db
                .terminate_idle(
                    older,
                    p.database.as_deref().filter(|d| !d.is_empty()),
                    p.user.as_deref().filter(|u| !u.is_empty()),
                    p.dry_run,
                )
                .await?;
            for s in &sessions {
                say(format!(
                    "{} pid {} {}@{} idle {:.0}s from {}",
                    if p.dry_run { "would terminate" } else { "terminated" },
                    s["pid"],
                    s["user"].as_str().unwrap_or("?"),
                    s["database"].as_str().unwrap_or("?"),
                    s["idle_seconds"].as_f64().unwrap_or(0.0),
                    s["client"].as_str().unwrap_or("local"),
                ));
            }
            if sessions.is_empty() {
                say("no session idle that long".to_owned());
            }
            out.insert("terminated".into(), Json::Array(sessions));
        }
        Action::Dump | Action::VerifyDump | Action::Restore | Action::WaitReady => {
            return Err(StepError::new("internal: action dispatched to the wrong place"));
        }
    }
    Ok(out)
}

/// The `tables` of a counts file written by `dump`.
fn read_counts(file: &str) -> Result<std::collections::BTreeMap<String, i64>, StepError> {
    let text = std::fs::read_to_string(file).map_err(|e| StepError::new(format!("`counts_file` {file}: {e}")))?;
    let v: Json =
        serde_json::from_str(&text).map_err(|e| StepError::new(format!("`counts_file` {file} is not JSON: {e}")))?;
    serde_json::from_value(v.get("tables").cloned().unwrap_or(Json::Null)).map_err(|_| {
        StepError::new(format!(
            "`counts_file` {file} has no `tables` (a map of table to rows, as `dump` writes it)"
        ))
    })
}

/// `expect.value` against a value from PostgreSQL: equal as JSON, or as text
/// (`value: 42` matches a bigint, `value: "t"` a boolean shown as text, etc.).
fn same_value(want: &Json, got: &Json) -> bool {
    let text = |v: &Json| match v {
        Json::String(s) => s.clone(),
        other => other.to_string(),
    };
    want == got || text(want) == text(got)
}

async fn wait_ready(ctx: &StepContext, p: &PgParams) -> Result<Outputs, StepError> {
    let limit = duration_param("timeout", p.timeout.as_deref())?.unwrap_or(Duration::from_secs(60));
    let start = Instant::now();
    loop {
        let last = match Db::connect(&p.dsn, connect_to(p), p.ca_file.as_deref(), &ctx.cancel).await {
            Ok(db) => match db.in_recovery().await {
                Ok(rec) => {
                    let mut out = Outputs::new();
                    out.insert("in_recovery".into(), json!(rec));
                    out.insert(
                        "waited_ms".into(),
                        json!(u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX)),
                    );
                    ctx.log.line(
                        LogStream::Stdout,
                        &format!(
                            "ready after {:.1}s ({})",
                            start.elapsed().as_secs_f64(),
                            if rec { "standby" } else { "primary" }
                        ),
                    );
                    return Ok(out);
                }
                Err(e) => e.message,
            },
            Err(e) if e.cancelled => return Err(e),
            Err(e) => e.message,
        };
        if start.elapsed() >= limit {
            return Err(StepError::new(format!(
                "not ready after {}: {last}",
                p.timeout.as_deref().unwrap_or("60s")
            )));
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(250)) => {}
            () = ctx.cancel.cancelled() => return Err(StepError::cancelled()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_compare_as_json_or_text() {
        assert!(same_value(&json!(42), &json!(42)));
        assert!(same_value(&json!("42"), &json!(42)));
        assert!(same_value(&json!(true), &json!(true)));
        assert!(!same_value(&json!(41), &json!(42)));
    }

    #[test]
    fn plan_reads_typed_params_and_guesses_nothing_it_cannot_read() {
        let dry = json!({ "action": "terminate-idle", "dsn": "x", "older_than": "10m", "dry_run": true });
        assert_eq!(Pg.effect(&dry), Effect::Read);
        assert!(Pg.idempotent(&dry));
        assert_eq!(
            Pg.describe(&dry),
            "terminate sessions idle longer than 10m (dry run: list only)"
        );
        assert!(Pg.can_preview(&dry));
        let exec = json!({ "action": "exec", "dsn": "x", "sql": "DELETE FROM t" });
        assert!(!Pg.idempotent(&exec));
        // `dry_run` is known only when the run renders it: no read-only claim.
        let later = json!({ "action": "terminate-idle", "dsn": "x", "dry_run": "{{ steps.ask.outputs.dry }}" });
        assert_eq!(Pg.effect(&later), Effect::Unknown);
        assert!(!Pg.idempotent(&later));
        assert_eq!(
            Pg.describe(&later),
            "a PostgreSQL action (its parameters are known when it runs)"
        );
    }
}
