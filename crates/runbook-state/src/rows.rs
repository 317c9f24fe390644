//! Reading rows back, the same for both backends: a run record, a journal
//! entry, a log line, a lease. Both backends name the run's user column
//! `run_user` (`user` is reserved in PostgreSQL).

use crate::journal::{LogLine, Recorded, RunRecord, RunStatus, Stream};
use crate::{Lock, StoreError, Token};
use sqlx::{ColumnIndex, Decode, Row, Type};
use std::time::{Duration, SystemTime};

/// Milliseconds since the epoch.
pub(crate) fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Milliseconds since the epoch, as RFC 3339.
pub(crate) fn rfc3339_ms(ms: i64) -> String {
    let t = SystemTime::UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    humantime::format_rfc3339_millis(t).to_string()
}

/// A lease's expiry `ttl` from now, in milliseconds since the epoch.
pub(crate) fn expiry(ttl: Duration) -> i64 {
    unix_ms(SystemTime::now()) + i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX / 2)
}

/// The `LIKE` pattern of a run id or unique prefix (as with git commits); ids
/// are alphanumeric, so `%` and `_` never reach the pattern.
pub(crate) fn id_prefix(id: &str) -> Result<String, StoreError> {
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(StoreError::NoRun(id.to_owned()));
    }
    Ok(format!("{}%", id.to_lowercase()))
}

/// A run record.
pub(crate) fn record<'r, R>(row: &'r R) -> Result<RunRecord, sqlx::Error>
where
    R: Row,
    &'static str: ColumnIndex<R>,
    String: Decode<'r, R::Database> + Type<R::Database>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
    bool: Decode<'r, R::Database> + Type<R::Database>,
{
    let status: String = row.try_get("status")?;
    // The queue's columns exist only where the queue does (PostgreSQL).
    let submitted: bool = row.try_get("submitted").unwrap_or(false);
    let worker: Option<String> = row.try_get("worker").unwrap_or(None);
    let lease_until: Option<i64> = row.try_get("lease_until").unwrap_or(None);
    let inputs: String = row.try_get("inputs")?;
    let calls: String = row.try_get("calls")?;
    let version: i64 = row.try_get("version")?;
    let pid: Option<i64> = row.try_get("pid")?;
    Ok(RunRecord {
        id: row.try_get("id")?,
        playbook: row.try_get("playbook")?,
        version: u32::try_from(version).unwrap_or(0),
        text: row.try_get("text")?,
        hash: row.try_get("hash")?,
        calls: serde_json::from_str(&calls).unwrap_or_default(),
        inputs: serde_json::from_str(&inputs).unwrap_or(serde_json::Value::Null),
        status: RunStatus::parse(&status).unwrap_or(RunStatus::Running),
        user: row.try_get("run_user")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        pid: pid.and_then(|p| u32::try_from(p).ok()),
        submitted,
        worker,
        lease_until: lease_until.map(rfc3339_ms),
    })
}

/// A journal entry (`seq`, `at`, `event`).
pub(crate) fn recorded<'r, R>(
    run: &str,
    row: &'r R,
    db: impl Fn(sqlx::Error) -> StoreError,
) -> Result<Recorded, StoreError>
where
    R: Row,
    &'static str: ColumnIndex<R>,
    String: Decode<'r, R::Database> + Type<R::Database>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
{
    let seq: i64 = row.try_get("seq").map_err(&db)?;
    let text: String = row.try_get("event").map_err(&db)?;
    let event = serde_json::from_str(&text).map_err(|e| StoreError::Corrupt {
        run: run.to_owned(),
        seq,
        message: e.to_string(),
    })?;
    Ok(Recorded {
        seq,
        at: row.try_get("at").map_err(&db)?,
        event,
    })
}

/// A log line with its position (`seq`, `step`, `at`, `stream`, `line`).
pub(crate) fn log_line<'r, R>(row: &'r R) -> Result<(i64, LogLine), sqlx::Error>
where
    R: Row,
    &'static str: ColumnIndex<R>,
    String: Decode<'r, R::Database> + Type<R::Database>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
{
    let stream: String = row.try_get("stream")?;
    Ok((
        row.try_get("seq")?,
        LogLine {
            step: row.try_get("step")?,
            at: row.try_get("at")?,
            stream: if stream == "stderr" {
                Stream::Stderr
            } else {
                Stream::Stdout
            },
            line: row.try_get("line")?,
        },
    ))
}

/// A lease (`sql::LOCK_COLUMNS`).
pub(crate) fn lock<'r, R>(row: &'r R, now_ms: i64) -> Result<Lock, sqlx::Error>
where
    R: Row,
    &'static str: ColumnIndex<R>,
    String: Decode<'r, R::Database> + Type<R::Database>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
{
    let until: i64 = row.try_get("expires_unix_ms")?;
    let expires = SystemTime::UNIX_EPOCH + Duration::from_millis(u64::try_from(until).unwrap_or(0));
    Ok(Lock {
        key: row.try_get("key")?,
        run_id: row.try_get("run_id")?,
        user: row.try_get("run_user")?,
        pid: row
            .try_get::<Option<i64>, _>("pid")?
            .and_then(|p| u32::try_from(p).ok()),
        since: row.try_get("since")?,
        expires_at: humantime::format_rfc3339_seconds(expires).to_string(),
        expired: until < now_ms,
    })
}

/// A token row.
pub(crate) fn token<'r, R>(row: &'r R) -> Result<Token, sqlx::Error>
where
    R: Row,
    &'static str: ColumnIndex<R>,
    String: Decode<'r, R::Database> + Type<R::Database>,
    Option<String>: Decode<'r, R::Database> + Type<R::Database>,
{
    Ok(Token {
        name: row.try_get("name")?,
        hash: row.try_get("hash")?,
        role: row.try_get("role")?,
        created_by: row.try_get("created_by")?,
        created_at: row.try_get("created_at")?,
        expires_at: row.try_get("expires_at")?,
        revoked_at: row.try_get("revoked_at")?,
    })
}
