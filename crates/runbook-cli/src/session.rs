//! What every command that touches runs shares: who is running it, the
//! runtime, the store (opened and migrated) and a run in it.

use crate::fail::Failure;
use runbook_state::Store;
use std::path::PathBuf;
use std::sync::Arc;

/// Who runs this command (`runbook_runner::os_user`).
pub(crate) fn user() -> String {
    runbook_runner::os_user()
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
    runbook_state::open(state.as_deref()).await.map_err(|e| {
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
