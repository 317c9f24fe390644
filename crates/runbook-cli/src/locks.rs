//! The playbook `lock:` at the command line: `--lock-ttl` and `--wait-lock`
//! turned into lease options for runbook-runner (which takes, renews and
//! gives back the leases), what the operator is told while waiting or when a
//! key is held, and the `locks` / `unlock` commands.

use crate::Exit;
use crate::args::{ExecArgs, Output};
use crate::session::{open_store, runtime, user};
use indexmap::IndexMap;
use runbook_core::model::Playbook;
use runbook_runner::RunnerError;
use runbook_runner::leases::{self, LeaseOptions};
use runbook_state::{Event, Lock, LockHolder, Store};
use serde_json::Value as Json;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub(crate) use runbook_runner::leases::{WAITING_TTL, heartbeat};

/// The playbook's lock keys (see `runbook_runner::leases::keys`).
pub(crate) fn keys(
    pb: &Playbook,
    inputs: &IndexMap<String, Json>,
    env: &IndexMap<String, String>,
) -> Result<Vec<String>, String> {
    leases::keys(pb, inputs, env).map_err(|e| e.to_string())
}

/// The lease's time to live, from `--lock-ttl`.
pub(crate) fn ttl(exec: &ExecArgs) -> Result<Duration, String> {
    runbook_core::inputs::parse_duration(&exec.lock_ttl).map_err(|e| format!("--lock-ttl: {e}"))
}

fn describe(l: &Lock) -> String {
    let pid = l.pid.map(|p| format!(", process {p}")).unwrap_or_default();
    format!(
        "run {} ({}{pid}) since {}, lease until {}",
        l.run_id, l.user, l.since, l.expires_at
    )
}

/// Takes every key for `run_id`, all or none, each waiting up to
/// `--wait-lock`; says who holds a key it waits for or cannot take, and
/// returns the exit code (4, or 2 for a bad flag).
pub(crate) async fn acquire_all(
    store: &Arc<dyn Store>,
    keys: &[String],
    run_id: &str,
    exec: &ExecArgs,
) -> Result<(), Exit> {
    let bad = |e: String| {
        eprintln!("error: {e}");
        Exit::Invalid
    };
    let ttl = ttl(exec).map_err(bad)?;
    let wait = match &exec.wait_lock {
        Some(w) => runbook_core::inputs::parse_duration(w).map_err(|e| bad(format!("--wait-lock: {e}")))?,
        None => Duration::ZERO,
    };
    let holder = LockHolder {
        run_id: run_id.to_owned(),
        user: user(),
        pid: Some(std::process::id()),
    };
    let waiting = |key: &str, other: &Lock| eprintln!("waiting for lock `{key}`: held by {}", describe(other));
    let Err(e) = leases::acquire_all(store, keys, &holder, LeaseOptions { ttl, wait }, &waiting).await else {
        return Ok(());
    };
    match &e {
        RunnerError::Locked { key, .. } => {
            eprintln!("error: {e}; nothing was run");
            eprintln!(
                "hint: `--wait-lock 10m` waits for it; `runbook locks` lists locks; if its holder is gone, the \
                 lease expires by itself, or `runbook unlock {key} --force`"
            );
            Err(Exit::Locked)
        }
        _ => Err(bad(e.to_string())),
    }
}

pub(crate) fn list(state: Option<PathBuf>, output: Output) -> Exit {
    let Some(rt) = runtime() else { return Exit::Invalid };
    rt.block_on(async {
        let Some(store) = open_store(state).await else {
            return Exit::Invalid;
        };
        let locks = match store.locks().await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("error: {e}");
                return Exit::Invalid;
            }
        };
        if output == Output::Json {
            println!("{}", serde_json::to_string_pretty(&locks).unwrap_or_default());
            return Exit::Ok;
        }
        if locks.is_empty() {
            println!("no locks held");
            return Exit::Ok;
        }
        use crate::table::Column;
        let rows = locks
            .iter()
            .map(|l| {
                vec![
                    l.key.clone(),
                    l.run_id.clone(),
                    l.user.clone(),
                    l.pid.map(|p| p.to_string()).unwrap_or_default(),
                    l.since.clone(),
                    format!("{}{}", l.expires_at, if l.expired { " (expired: free)" } else { "" }),
                ]
            })
            .collect();
        crate::table::print(
            &[
                Column("KEY", false),
                Column("RUN", false),
                Column("USER", false),
                Column("PID", true),
                Column("SINCE", false),
                Column("LEASE UNTIL", false),
            ],
            rows,
        );
        Exit::Ok
    })
}

pub(crate) fn unlock(state: Option<PathBuf>, key: &str, force: bool) -> Exit {
    if !force {
        eprintln!(
            "error: `runbook unlock {key}` needs --force: another run may start while the holder is still changing \
             things; check `runbook locks` and `runbook status RUN` first"
        );
        return Exit::Invalid;
    }
    let Some(rt) = runtime() else { return Exit::Invalid };
    rt.block_on(async {
        let Some(store) = open_store(state).await else {
            return Exit::Invalid;
        };
        match store.remove_lock(key).await {
            Ok(Some(l)) => {
                let action = Event::OperatorAction {
                    action: "unlock".into(),
                    step: None,
                    who: user(),
                    comment: Some(format!("lock `{key}` freed with --force")),
                    plan_hash: None,
                };
                if let Err(e) = store.append(&l.run_id, &action).await {
                    eprintln!("warning: lock freed, but not journalled on run {}: {e}", l.run_id);
                }
                println!("freed lock `{key}` (was held by {})", describe(&l));
                Exit::Ok
            }
            Ok(None) => {
                eprintln!("error: no lock `{key}` (hint: `runbook locks` lists them)");
                Exit::Invalid
            }
            Err(e) => {
                eprintln!("error: {e}");
                Exit::Invalid
            }
        }
    })
}
