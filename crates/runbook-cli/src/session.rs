//! What every command that touches runs shares: who is running it, the
//! runtime, the store (opened and migrated) and a run in it.

use crate::fail::Failure;
use runbook_state::{SqliteStore, Store};
use std::path::PathBuf;
use std::sync::Arc;

/// The user recorded as running a run or taking an operator action:
/// `$RUNBOOK_USER`, else `$USER`, else the operating system's name for this
/// process's user (containers, cron and systemd set no `$USER`).
pub(crate) fn user() -> String {
    std::env::var("RUNBOOK_USER")
        .or_else(|_| std::env::var("USER"))
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| {
            let uid = nix::unistd::getuid();
            nix::unistd::User::from_uid(uid)
                .ok()
                .flatten()
                .map_or_else(|| format!("uid {uid}"), |u| u.name)
        })
}

pub(crate) fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::invalid(format!("cannot start the async runtime: {e}")))
}

/// Opens the state store named by `--state`/`RUNBOOK_STATE`, else the default:
/// a SQLite file, or PostgreSQL for a `postgres://` URL.
pub(crate) async fn open_store(state: Option<PathBuf>) -> Result<Arc<dyn Store>, Failure> {
    let path = state.unwrap_or_else(runbook_state::default_path);
    let text = path.to_string_lossy();
    let opened: Result<Arc<dyn Store>, runbook_state::StoreError> =
        if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            runbook_state::PgStore::open(&text)
                .await
                .map(|s| Arc::new(s) as Arc<dyn Store>)
        } else {
            SqliteStore::open(&path).await.map(|s| Arc::new(s) as Arc<dyn Store>)
        };
    opened.map_err(|e| {
        Failure::invalid(e.to_string()).hint("pass `--state PATH` or `--state postgres://...`, or set RUNBOOK_STATE")
    })
}

/// Opens the store and finds a run by id or prefix.
pub(crate) async fn open_run(
    state: Option<PathBuf>,
    id: &str,
) -> Result<(Arc<dyn Store>, runbook_state::RunRecord), Failure> {
    let store = open_store(state).await?;
    let record = store.run(id).await?;
    Ok((store, record))
}
