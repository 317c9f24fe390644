//! The behaviour every [`Store`] backend must have, as one suite run against
//! SQLite (unit tests) and PostgreSQL (the CLI's tests, against a real server).

use crate::{Event, LockHolder, LogLine, NewRun, RunStatus, Store, StoreError, Stream, new_run_id};
use std::time::Duration;

macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(format!($($msg)+));
        }
    };
}

fn new_run(playbook: &str) -> NewRun {
    NewRun {
        id: new_run_id(),
        playbook: playbook.into(),
        version: 3,
        text: "name: x".into(),
        hash: "abc".into(),
        inputs: serde_json::json!({"release": "v42"}),
        user: "alice".into(),
    }
}

/// Runs every check; the first failure says what broke.
pub async fn check(store: &dyn Store) -> Result<(), String> {
    let e = |x: StoreError| x.to_string();
    let version = store.schema_version().await.map_err(e)?;
    ensure!(version == 2, "schema version 2 after open, got {version}");
    // Runs and their journal.
    let a = new_run("deploy");
    store
        .create_run(
            &a,
            &Event::RunStarted {
                user: "alice".into(),
                runner: None,
            },
        )
        .await
        .map_err(e)?;
    let seq = store
        .append(
            &a.id,
            &Event::StepStarted {
                step: "s".into(),
                attempt: 1,
            },
        )
        .await
        .map_err(e)?;
    ensure!(seq == 2, "the first append after run_started is seq 2, got {seq}");
    let last = store
        .append_all(
            &a.id,
            &[
                Event::StepSucceeded {
                    step: "s".into(),
                    attempt: 1,
                    outputs: serde_json::json!({"x": 1}),
                },
                Event::RunFinished {
                    status: RunStatus::Succeeded,
                    error: None,
                },
            ],
        )
        .await
        .map_err(e)?;
    ensure!(last == 4, "append_all returns the last seq, got {last}");
    let events = store.events(&a.id).await.map_err(e)?;
    ensure!(events.len() == 4, "4 events, got {}", events.len());
    ensure!(
        events.iter().map(|r| r.seq).collect::<Vec<_>>() == [1, 2, 3, 4],
        "sequence numbers in order"
    );
    ensure!(
        matches!(&events[2].event, Event::StepSucceeded { outputs, .. } if outputs["x"] == 1),
        "outputs come back as stored"
    );
    let done = store.count_runs(RunStatus::Succeeded).await.map_err(e)?;
    ensure!(done >= 1, "count_runs counts the succeeded run, got {done}");
    let rec = store.run(&a.id[..10]).await.map_err(e)?;
    ensure!(rec.status == RunStatus::Succeeded, "status follows run_finished");
    ensure!(
        rec.user == "alice" && rec.version == 3 && rec.inputs["release"] == "v42",
        "the run record: {rec:?}"
    );
    ensure!(
        matches!(store.run("zzzz").await, Err(StoreError::NoRun(_))),
        "an unknown id is NoRun"
    );
    ensure!(
        matches!(store.run("a%").await, Err(StoreError::NoRun(_))),
        "wildcards are not ids"
    );
    ensure!(
        store
            .append(
                "nope",
                &Event::RunResumed {
                    user: "x".into(),
                    runner: None
                }
            )
            .await
            .is_err(),
        "appending to an unknown run fails"
    );
    // Listing.
    let b = new_run("backup");
    store
        .create_run(
            &b,
            &Event::RunStarted {
                user: "bob".into(),
                runner: None,
            },
        )
        .await
        .map_err(e)?;
    let deploys = store.runs(Some("deploy"), 10).await.map_err(e)?;
    ensure!(deploys.iter().all(|r| r.playbook == "deploy"), "runs of one playbook");
    let all = store.runs(None, 1000).await.map_err(e)?;
    ensure!(
        all.iter().any(|r| r.id == a.id) && all.iter().any(|r| r.id == b.id),
        "all runs"
    );
    ensure!(all.first().map(|r| &r.id) >= all.last().map(|r| &r.id), "newest first");
    store.set_runner(&b.id, Some(4242)).await.map_err(e)?;
    ensure!(store.run(&b.id).await.map_err(e)?.pid == Some(4242), "the runner's pid");
    store.set_runner(&b.id, None).await.map_err(e)?;
    ensure!(store.run(&b.id).await.map_err(e)?.pid.is_none(), "no runner");
    // Logs, by step (and its children) and after a position.
    let line = |step: &str, text: &str| LogLine {
        step: step.into(),
        at: crate::now(),
        stream: Stream::Stdout,
        line: text.into(),
    };
    store
        .append_logs(
            &b.id,
            &[
                line("roll[web1].deploy", "one"),
                line("roll", "two"),
                line("other", "three"),
            ],
        )
        .await
        .map_err(e)?;
    let roll = store.logs(&b.id, Some("roll"), 0).await.map_err(e)?;
    ensure!(roll.len() == 2, "a step's logs include its children's: {roll:?}");
    let after = store.logs(&b.id, None, roll[0].0).await.map_err(e)?;
    ensure!(after.len() == 2, "logs after a position: {after:?}");
    // Leases.
    let holder = |run: &str| LockHolder {
        run_id: run.into(),
        user: "u".into(),
        pid: Some(1),
    };
    let key = format!("conformance/{}", a.id);
    let long = Duration::from_secs(60);
    ensure!(
        store
            .acquire_lock(&key, &holder(&a.id), long)
            .await
            .map_err(e)?
            .is_none(),
        "a free key is taken"
    );
    let other = store.acquire_lock(&key, &holder(&b.id), long).await.map_err(e)?;
    ensure!(
        other.as_ref().map(|l| l.run_id.as_str()) == Some(a.id.as_str()),
        "a held key names its holder"
    );
    ensure!(
        store
            .acquire_lock(&key, &holder(&a.id), long)
            .await
            .map_err(e)?
            .is_none(),
        "the holder renews"
    );
    store.renew_locks(&a.id, Duration::ZERO).await.map_err(e)?;
    tokio::time::sleep(Duration::from_millis(5)).await;
    ensure!(
        store
            .acquire_lock(&key, &holder(&b.id), long)
            .await
            .map_err(e)?
            .is_none(),
        "an expired lease is free"
    );
    ensure!(
        store
            .locks()
            .await
            .map_err(e)?
            .iter()
            .any(|l| l.key == key && l.run_id == b.id),
        "locks lists it"
    );
    store.release_locks(&b.id).await.map_err(e)?;
    ensure!(
        !store.locks().await.map_err(e)?.iter().any(|l| l.key == key),
        "released"
    );
    store.acquire_lock(&key, &holder(&a.id), long).await.map_err(e)?;
    let removed = store.remove_lock(&key).await.map_err(e)?;
    ensure!(
        removed.map(|l| l.run_id) == Some(a.id.clone()),
        "remove returns the lease"
    );
    ensure!(
        store.remove_lock(&key).await.map_err(e)?.is_none(),
        "nothing to remove twice"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn sqlite_conforms() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let store = crate::SqliteStore::open(&dir.path().join("s.db"))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        if let Err(msg) = super::check(&store).await {
            panic!("{msg}");
        }
    }
}
