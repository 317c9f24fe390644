//! `runbook locks` and `runbook unlock`: the leases of playbooks' `lock:` keys
//! (taken, renewed and given back by runbook-runner), listed and, by force,
//! freed.

use crate::Exit;
use crate::args::Output;
use crate::session::{open_store, runtime, user};
use runbook_state::Event;
use std::path::PathBuf;

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
                println!("freed lock `{key}` (was held by {})", runbook_runner::describe(&l));
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
