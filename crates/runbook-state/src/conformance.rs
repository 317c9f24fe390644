//! The behaviour every [`Store`] backend must have, as one suite run against
//! SQLite (unit tests) and PostgreSQL (the CLI's tests, against a real server).

use crate::{Event, Lease, LockHolder, LogLine, NewRun, Page, RunStatus, Store, StoreError, Stream, new_run_id};
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
        calls: [("failover".to_owned(), "name: failover".to_owned())]
            .into_iter()
            .collect(),
        inputs: serde_json::json!({"release": "v42"}),
        user: "alice".into(),
    }
}

/// Runs every check; the first failure says what broke.
pub async fn check(store: &dyn Store) -> Result<(), String> {
    let e = |x: StoreError| x.to_string();
    let version = store.schema_version().await.map_err(e)?;
    ensure!(version >= 2, "schema version 2 or later after open, got {version}");
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
    let tail = store.events_after(&a.id, 2).await.map_err(e)?;
    ensure!(
        tail.iter().map(|r| r.seq).collect::<Vec<_>>() == [3, 4],
        "events after seq 2 are 3 and 4, got {:?}",
        tail.iter().map(|r| r.seq).collect::<Vec<_>>()
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
    // A run's text can be replaced (resume --to-current).
    ensure!(
        store
            .run(&b.id)
            .await
            .map_err(e)?
            .calls
            .get("failover")
            .map(String::as_str)
            == Some("name: failover"),
        "the texts of the playbooks a run calls are kept"
    );
    let calls = [("failover@2".to_owned(), "v2".to_owned())].into_iter().collect();
    store.replace_text(&b.id, "new text", "h2", &calls).await.map_err(e)?;
    let replaced = store.run(&b.id).await.map_err(e)?;
    ensure!(
        replaced.text == "new text" && replaced.hash == "h2" && replaced.calls == calls,
        "the text is replaced, with the texts it calls"
    );
    // Claiming a run is a compare-and-set: the second of two claims from the
    // same previous runner loses; a claim over a (dead) runner names it.
    ensure!(
        store.claim_runner(&b.id, 7, None).await.map_err(e)?,
        "the first claim wins"
    );
    ensure!(
        !store.claim_runner(&b.id, 8, None).await.map_err(e)?,
        "the second claim loses"
    );
    ensure!(store.run(&b.id).await.map_err(e)?.pid == Some(7), "the winner runs it");
    ensure!(
        store.claim_runner(&b.id, 8, Some(7)).await.map_err(e)?,
        "a claim over a dead runner"
    );
    store.set_runner(&b.id, None).await.map_err(e)?;
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
    // Pages: from the end first, oldest first within a page.
    let text = |page: &[(i64, LogLine)]| page.iter().map(|(_, l)| l.line.clone()).collect::<Vec<_>>();
    let tail = store
        .log_page(&b.id, None, Page::Before(i64::MAX), 2)
        .await
        .map_err(e)?;
    ensure!(text(&tail) == ["two", "three"], "the tail, oldest first: {tail:?}");
    let earlier = store
        .log_page(&b.id, None, Page::Before(tail[0].0), 2)
        .await
        .map_err(e)?;
    ensure!(text(&earlier) == ["one"], "the page before it: {earlier:?}");
    let next = store
        .log_page(&b.id, None, Page::After(earlier[0].0), 1)
        .await
        .map_err(e)?;
    ensure!(text(&next) == ["two"], "a page after a position: {next:?}");
    let roll_tail = store
        .log_page(&b.id, Some("roll"), Page::Before(i64::MAX), 5)
        .await
        .map_err(e)?;
    ensure!(text(&roll_tail) == ["one", "two"], "a step's page: {roll_tail:?}");
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
    check_tokens(store).await
}

/// API tokens: found by hash, one live token per name, revoked once, and a
/// revoked or expired name given out again.
async fn check_tokens(store: &dyn Store) -> Result<(), String> {
    let e = |x: StoreError| x.to_string();
    let token = |hash: &str| crate::Token {
        name: "ci-deploy".into(),
        hash: hash.into(),
        role: "operator".into(),
        created_by: "alice".into(),
        created_at: "2026-11-28T10:00:00Z".into(),
        expires_at: Some("2026-12-28T10:00:00Z".into()),
        revoked_at: None,
    };
    let (now, later) = (1_000, 2_000);
    ensure!(
        store.add_token(&token("h1"), Some(later), now).await.map_err(e)?,
        "a new token is added"
    );
    ensure!(
        !store.add_token(&token("h2"), Some(later), now).await.map_err(e)?,
        "a live token's name is not given out again"
    );
    let found = store.token_by_hash("h1").await.map_err(e)?;
    ensure!(found == Some(token("h1")), "found by its hash: {found:?}");
    ensure!(
        store.token_by_hash("h2").await.map_err(e)?.is_none(),
        "the refused one is not stored"
    );
    ensure!(
        store.add_token(&token("h3"), None, later + 1).await.map_err(e)?,
        "an expired token's name is given out again"
    );
    ensure!(
        store.token_by_hash("h1").await.map_err(e)?.is_none(),
        "the old secret is gone"
    );
    ensure!(
        store
            .revoke_token("ci-deploy", "2026-11-29T00:00:00Z")
            .await
            .map_err(e)?,
        "revoked"
    );
    ensure!(
        !store
            .revoke_token("ci-deploy", "2026-11-30T00:00:00Z")
            .await
            .map_err(e)?,
        "revoked once"
    );
    let listed = store.tokens().await.map_err(e)?;
    ensure!(
        listed.len() == 1 && listed[0].revoked_at.as_deref() == Some("2026-11-29T00:00:00Z"),
        "listed with its revocation: {listed:?}"
    );
    ensure!(
        store.add_token(&token("h4"), None, now).await.map_err(e)?,
        "a revoked token's name is given out again"
    );
    Ok(())
}

/// The work queue's behaviour, for a backend that has one (PostgreSQL):
/// claims, heartbeats, fencing, takeover and cancellation.
pub async fn check_queue(store: &dyn Store) -> Result<(), String> {
    let e = |x: StoreError| x.to_string();
    let queued = |who: &str| Event::RunQueued { user: who.into() };
    let step = |n: u32| Event::StepStarted {
        step: "s".into(),
        attempt: n,
    };
    let fenced = |r: Result<i64, StoreError>| matches!(r, Err(StoreError::Fenced { .. }));
    // Nothing to claim yet: a claim finds nothing (other tests' runs aside,
    // every run here is made by this check).
    let a = new_run("queued");
    store.create_run(&a, &queued("alice")).await.map_err(e)?;
    let rec = store.run(&a.id).await.map_err(e)?;
    ensure!(
        rec.status == RunStatus::Queued && rec.submitted,
        "a submitted run is queued, got {:?} (submitted: {})",
        rec.status,
        rec.submitted
    );
    ensure!(
        store.count_runs(RunStatus::Queued).await.map_err(e)? >= 1,
        "queued runs are counted"
    );
    let w1 = store.claim("w1", Duration::from_secs(30)).await.map_err(e)?;
    let Some(w1) = w1 else {
        return Err("a queued run is claimed".into());
    };
    ensure!(
        w1.run_id == a.id && w1.epoch == 1,
        "the first claim is epoch 1 of the run: {w1:?}"
    );
    ensure!(
        store.claim("w2", Duration::from_secs(30)).await.map_err(e)?.is_none(),
        "a held run is not claimed again"
    );
    let rec = store.run(&a.id).await.map_err(e)?;
    ensure!(
        rec.worker.as_deref() == Some("w1") && rec.lease_until.is_some(),
        "the run shows its worker and lease: {:?} {:?}",
        rec.worker,
        rec.lease_until
    );
    // Writes under the lease go through; a wrong epoch or worker is refused.
    let started = Event::RunStarted {
        user: "w".into(),
        runner: Some("w1".into()),
    };
    store.append_leased(&w1, &[started, step(1)]).await.map_err(e)?;
    let stale = Lease { epoch: 0, ..w1.clone() };
    ensure!(
        fenced(store.append_leased(&stale, &[step(2)]).await),
        "an old epoch is fenced"
    );
    let other = Lease {
        worker: "w9".into(),
        ..w1.clone()
    };
    ensure!(
        fenced(store.append_leased(&other, &[step(2)]).await),
        "another worker is fenced"
    );
    // The heartbeat, and a cancel request seen through it.
    ensure!(
        store.renew_lease(&w1, Duration::from_secs(30)).await.map_err(e)? == Some(false),
        "a held lease renews"
    );
    store.request_cancel(&a.id).await.map_err(e)?;
    // The last renewal is short, so that the lease expires soon.
    ensure!(
        store.renew_lease(&w1, Duration::from_millis(500)).await.map_err(e)? == Some(true),
        "the heartbeat reports a cancel request"
    );
    // The lease expires: its holder can neither renew nor write, even before
    // anyone takes the run over; then another worker claims the next epoch.
    tokio::time::sleep(Duration::from_millis(700)).await;
    ensure!(
        store
            .renew_lease(&w1, Duration::from_secs(1))
            .await
            .map_err(e)?
            .is_none(),
        "an expired lease does not renew"
    );
    ensure!(
        fenced(store.append_leased(&w1, &[step(2)]).await),
        "an expired lease is fenced"
    );
    let logs = [LogLine {
        step: "s".into(),
        at: crate::now(),
        stream: Stream::Stdout,
        line: "late".into(),
    }];
    ensure!(
        matches!(
            store.append_logs_leased(&w1, &logs).await,
            Err(StoreError::Fenced { .. })
        ),
        "an expired lease writes no logs"
    );
    let Some(w2) = store.claim("w2", Duration::from_secs(30)).await.map_err(e)? else {
        return Err("a run whose lease expired is taken over".into());
    };
    ensure!(w2.run_id == a.id && w2.epoch == 2, "takeover is epoch 2: {w2:?}");
    store.append_logs_leased(&w2, &logs).await.map_err(e)?;
    // The run's `lock:` leases: the new worker's, which the old one can
    // neither renew nor free.
    let holder = LockHolder {
        run_id: a.id.clone(),
        user: "w2".into(),
        pid: None,
    };
    let key = format!("queue/{}", a.id);
    ensure!(
        store
            .acquire_lock(&key, &holder, Duration::from_secs(30))
            .await
            .map_err(e)?
            .is_none(),
        "the new worker takes the run's lock"
    );
    store.release_locks_leased(&w1).await.map_err(e)?;
    store
        .renew_locks_leased(&w1, Duration::from_millis(1))
        .await
        .map_err(e)?;
    let held = store.locks().await.map_err(e)?;
    ensure!(
        held.iter().any(|l| l.key == key && !l.expired),
        "a worker that lost the run freed or shortened its new worker's lock: {held:?}"
    );
    store.release_locks_leased(&w2).await.map_err(e)?;
    let held = store.locks().await.map_err(e)?;
    ensure!(!held.iter().any(|l| l.key == key), "the holder frees the run's lock");
    // Given back while not over (a worker shutting down): claimable at once.
    store.release_lease(&w2).await.map_err(e)?;
    ensure!(
        fenced(store.append_leased(&w2, &[step(2)]).await),
        "a released lease is fenced"
    );
    let Some(w3) = store.claim("w3", Duration::from_secs(30)).await.map_err(e)? else {
        return Err("a released run is claimed again".into());
    };
    ensure!(w3.epoch == 3, "the third claim is epoch 3: {w3:?}");
    // A finished run is never claimed again.
    let done = Event::RunFinished {
        status: RunStatus::Succeeded,
        error: None,
    };
    store.append_leased(&w3, &[done]).await.map_err(e)?;
    store.release_lease(&w3).await.map_err(e)?;
    ensure!(
        store.claim("w4", Duration::from_secs(30)).await.map_err(e)?.is_none(),
        "a finished run is not claimed"
    );
    // Workers claiming at once get different runs.
    let (b, c) = (new_run("queued"), new_run("queued"));
    store.create_run(&b, &queued("bob")).await.map_err(e)?;
    store.create_run(&c, &queued("bob")).await.map_err(e)?;
    let (x, y) = tokio::join!(
        store.claim("wx", Duration::from_secs(30)),
        store.claim("wy", Duration::from_secs(30))
    );
    let (Some(x), Some(y)) = (x.map_err(e)?, y.map_err(e)?) else {
        return Err("two workers each claim one of two queued runs".into());
    };
    ensure!(x.run_id != y.run_id, "two workers never claim the same run");
    // An operator cancels a run its worker holds: the worker's journal writes
    // are refused from then on (its last log lines are still kept).
    let cancelled = Event::RunFinished {
        status: RunStatus::Cancelled,
        error: None,
    };
    store.append(&x.run_id, &cancelled).await.map_err(e)?;
    ensure!(
        fenced(store.append_leased(&x, &[step(1)]).await),
        "a worker never writes past a cancelled run's end"
    );
    store.append_logs_leased(&x, &logs).await.map_err(e)?;
    // Runs not submitted to the queue are never claimed.
    let local = new_run("local");
    let started = Event::RunStarted {
        user: "carol".into(),
        runner: None,
    };
    store.create_run(&local, &started).await.map_err(e)?;
    ensure!(
        store.claim("wz", Duration::from_secs(30)).await.map_err(e)?.is_none(),
        "a run started in its own process is not the queue's"
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

    #[tokio::test]
    async fn sqlite_has_no_queue_and_says_so() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let store = crate::SqliteStore::open(&dir.path().join("s.db"))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let queued = crate::Event::RunQueued { user: "a".into() };
        let err = crate::Journal::create_run(&store, &super::new_run("q"), &queued).await;
        let Err(err) = err else {
            panic!("SQLite accepted a submitted run");
        };
        assert!(err.to_string().contains("PostgreSQL"), "{err}");
        let claim = crate::Queue::claim(&store, "w", std::time::Duration::from_secs(1)).await;
        assert!(matches!(claim, Err(crate::StoreError::Unsupported(_))), "{claim:?}");
    }
}
