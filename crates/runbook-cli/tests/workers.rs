//! The work queue against a real PostgreSQL (the lab's): `run --submit`,
//! `runbook worker` processes sharing the runs, a worker killed with SIGKILL
//! mid-run (twice), a worker paused with SIGSTOP past its lease, and the resume
//! path for a submitted run (approvals, uncertain steps, cancel).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Child;
use std::time::{Duration, Instant};
use support::{Lab, Run, exits_within};

/// A step that leaves a marker line `RUN STEP` when it finishes.
fn marker_step(id: &str, needs: Option<&str>, work: &str) -> String {
    let needs = needs.map(|n| format!("    needs: [{n}]\n")).unwrap_or_default();
    format!(
        "  - id: {id}\n    uses: shell\n    idempotent: true\n{needs}    with:\n      run: '{work}; echo \"$RUN {id}\" >> \"$DIR/markers\"'\n      env: {{ RUN: \"{{{{ run.id }}}}\", DIR: \"{{{{ inputs.dir }}}}\" }}\n"
    )
}

fn playbook(name: &str, steps: &[String]) -> String {
    format!(
        "apiVersion: runbook/v1\nname: {name}\nversion: 1\ninputs:\n  dir: {{ type: string }}\nsteps:\n{}",
        steps.concat()
    )
}

/// Worker processes, killed (SIGKILL) when the test ends, even on a panic.
struct Workers {
    logs: PathBuf,
    running: HashMap<String, Child>,
}

impl Workers {
    fn new(run: &Run) -> Workers {
        Workers {
            logs: run.path().to_owned(),
            running: HashMap::new(),
        }
    }

    fn start(&mut self, run: &Run, name: &str, lease: &str) {
        self.start_with(run, name, lease, "2");
    }

    fn start_with(&mut self, run: &Run, name: &str, lease: &str, concurrency: &str) {
        let args = [
            "worker",
            "--name",
            name,
            "--lease-ttl",
            lease,
            "--poll",
            "200ms",
            "--concurrency",
            concurrency,
        ];
        let child = run.spawn_logged(args, &self.logs.join(format!("{name}.log")));
        self.running.insert(name.to_owned(), child);
    }

    fn pid(&self, name: &str) -> nix::unistd::Pid {
        nix::unistd::Pid::from_raw(i32::try_from(self.running[name].id()).unwrap())
    }

    fn signal(&self, name: &str, signal: nix::sys::signal::Signal) {
        nix::sys::signal::kill(self.pid(name), signal).unwrap();
    }

    fn kill(&mut self, name: &str) {
        let mut child = self.running.remove(name).expect("a running worker");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.logs.join(format!("{name}.log"))).unwrap_or_default()
    }

    fn logs(&self) -> String {
        let mut names: Vec<&String> = self.running.keys().collect();
        names.sort();
        names
            .iter()
            .map(|n| format!("--- {n}\n{}", self.log(n)))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        for child in self.running.values_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// One submitted run (`work`, then `after`) whose first step a worker (lease
/// 2 s) has started.
struct Scene {
    workers: Workers,
    run: Run,
    id: String,
    lab: Lab,
}

impl Scene {
    fn slow_run_started(db: &str, work: &str, worker: &str) -> Scene {
        let lab = Lab::postgres();
        let url = lab.state_db(db);
        let steps = [
            marker_step("work", None, work),
            marker_step("after", Some("work"), "true"),
        ];
        let run = Run::new()
            .env("RUNBOOK_STATE", &url)
            .playbook("slow", &playbook("slow", &steps));
        let dir = run.path().display().to_string();
        let id = run
            .exec(["run", "slow", "--submit", "--set", &format!("dir={dir}")])
            .exit(0)
            .stdout
            .trim()
            .to_owned();
        let mut workers = Workers::new(&run);
        workers.start(&run, worker, "2s");
        let started = "SELECT count(*) FROM journal WHERE event::json->>'event' = 'step_started'";
        wait_count(&lab, db, started, 1, Duration::from_secs(60), &workers);
        Scene { workers, run, id, lab }
    }
}

/// Waits until `sql` (a count in the state database) reaches `n`.
fn wait_count(lab: &Lab, db: &str, sql: &str, n: usize, limit: Duration, workers: &Workers) -> usize {
    wait_count_on(lab, "primary", db, sql, n, limit, workers)
}

/// [`wait_count`] on the lab's `server` (`standby` once it is promoted).
fn wait_count_on(lab: &Lab, server: &str, db: &str, sql: &str, n: usize, limit: Duration, workers: &Workers) -> usize {
    let until = Instant::now() + limit;
    loop {
        let got: usize = lab.psql_in(server, db, sql).parse().unwrap();
        if got >= n {
            return got;
        }
        assert!(
            Instant::now() < until,
            "{sql}: {got}, waited for {n}\n{}",
            workers.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Every run's journal, written under lease epochs that never go back: no
/// worker wrote after another took the run over. Also, every entry after the
/// submission was written under a lease.
fn assert_fenced_journals(lab: &Lab, db: &str) {
    assert_fenced_journals_on(lab, "primary", db);
}

fn assert_fenced_journals_on(lab: &Lab, server: &str, db: &str) {
    let rows = lab.psql_in(
        server,
        db,
        "SELECT run_id, string_agg(COALESCE(lease_epoch::text, '-'), ',' ORDER BY seq) FROM journal GROUP BY run_id",
    );
    for row in rows.lines() {
        let (run, epochs) = row.split_once('|').unwrap();
        let epochs: Vec<&str> = epochs.split(',').collect();
        assert_eq!(epochs[0], "-", "run {run}: the submission is not a worker's write");
        let numbers: Vec<i64> = epochs[1..]
            .iter()
            .map(|e| {
                e.parse()
                    .unwrap_or_else(|_| panic!("run {run}: an unfenced write: {epochs:?}"))
            })
            .collect();
        assert!(
            numbers.windows(2).all(|w| w[0] <= w[1]),
            "run {run}: a worker wrote after its run was taken over: epochs {numbers:?}"
        );
    }
}

/// The steps of `markers`: a chain, each leaving its marker.
const CHAIN: [&str; 3] = ["one", "two", "three"];

/// `markers` (the [`CHAIN`], 0.2 s a step) over the state at `url`.
fn markers(url: &str) -> Run {
    let steps = [
        marker_step("one", None, "sleep 0.2"),
        marker_step("two", Some("one"), "sleep 0.2"),
        marker_step("three", Some("two"), "sleep 0.2"),
    ];
    Run::new()
        .env("RUNBOOK_STATE", url)
        .playbook("markers", &playbook("markers", &steps))
}

/// Submits `n` runs of `markers` to the queue; their ids.
fn submit(run: &Run, n: usize) -> Vec<String> {
    let dir = format!("dir={}", run.path().display());
    (0..n)
        .map(|_| {
            let out = run.exec(["run", "markers", "--submit", "--set", &dir]).exit(0);
            out.stdout.trim().to_owned()
        })
        .collect()
}

/// The markers the runs' steps left: every step of the [`CHAIN`] ran at least
/// once, and more only where a lease ended while it could be in flight; how
/// many ran again.
fn assert_markers(lab: &Lab, server: &str, db: &str, run: &Run, ids: &[String]) -> usize {
    // Markers. A lease that ended before its run did (its worker was killed)
    // can have left at most one step in flight: the first step of the chain
    // not recorded as done under that lease (an idempotent step may start
    // before its start is durable, so the journal need not show it). That step
    // may leave one more marker per such lease; every other step exactly one.
    let markers = std::fs::read_to_string(run.path().join("markers")).unwrap();
    let mut seen: HashMap<(String, String), usize> = HashMap::new();
    for line in markers.lines() {
        let (id, step) = line.split_once(' ').unwrap();
        *seen.entry((id.to_owned(), step.to_owned())).or_default() += 1;
    }
    let journal = lab.psql_in(
        server,
        db,
        "SELECT run_id, event::json->>'event', COALESCE(event::json->>'step', ''), COALESCE(lease_epoch, 0) \
         FROM journal ORDER BY run_id, seq",
    );
    let mut done_at: HashMap<(String, String), i64> = HashMap::new();
    let mut epochs: HashMap<String, Vec<i64>> = HashMap::new();
    for row in journal.lines() {
        let f: Vec<&str> = row.split('|').collect();
        let epoch: i64 = f[3].parse().unwrap();
        let list = epochs.entry(f[0].to_owned()).or_default();
        if epoch > 0 && list.last() != Some(&epoch) {
            list.push(epoch);
        }
        if f[1] == "step_succeeded" {
            done_at.insert((f[0].to_owned(), f[2].to_owned()), epoch);
        }
    }
    let mut allowed: HashMap<(String, String), usize> = HashMap::new();
    for (id, list) in &epochs {
        for lost in &list[..list.len().saturating_sub(1)] {
            let in_flight = CHAIN
                .iter()
                .find(|step| done_at.get(&(id.clone(), (**step).to_owned())).is_none_or(|e| e > lost));
            if let Some(step) = in_flight {
                *allowed.entry((id.clone(), (*step).to_owned())).or_default() += 1;
            }
        }
    }
    let mut again = 0;
    for id in ids {
        for step in CHAIN {
            let key = (id.clone(), step.to_owned());
            let n = seen.get(&key).copied().unwrap_or(0);
            let extra = allowed.get(&key).copied().unwrap_or(0);
            assert!(
                n >= 1 && n <= 1 + extra,
                "run {id} step {step}: {n} markers ({extra} leases lost while it could be in flight)"
            );
            again += n - 1;
        }
    }
    again
}

#[test]
fn three_workers_share_sixty_runs_and_survive_two_sigkills() {
    let lab = Lab::postgres();
    let db = "runbook_chaos";
    let url = lab.state_db(db);
    let run = markers(&url);
    let total = 60;
    let ids = submit(&run, total);
    let count = |status: &str| format!("SELECT count(*) FROM runs WHERE status = '{status}'");
    assert_eq!(lab.psql_in("primary", db, &count("queued")), total.to_string());
    let mut workers = Workers::new(&run);
    for name in ["w1", "w2", "w3"] {
        workers.start(&run, name, "3s");
    }
    // Twice: once some runs are done, SIGKILL a worker that holds a run mid-way,
    // and start a fresh one in its place.
    let mut orphaned = Vec::new();
    for (done, fresh) in [(12, "w4"), (30, "w5")] {
        wait_count(&lab, db, &count("succeeded"), done, Duration::from_secs(120), &workers);
        let live: Vec<String> = workers.running.keys().map(|n| format!("'{n}'")).collect();
        let victim = lab.psql_in(
            "primary",
            db,
            &format!(
                "SELECT worker FROM runs WHERE status = 'running' AND lease_until IS NOT NULL \
                 AND worker IN ({}) ORDER BY id LIMIT 1",
                live.join(", ")
            ),
        );
        assert!(!victim.is_empty(), "no worker had a run in hand\n{}", workers.logs());
        workers.kill(&victim);
        // The runs it had started (its name in their journal): a run it had
        // claimed but not yet started carries no trace of it.
        let held = lab.psql_in(
            "primary",
            db,
            &format!(
                "SELECT id FROM runs WHERE worker = '{victim}' AND status = 'running' AND EXISTS \
                 (SELECT 1 FROM journal j WHERE j.run_id = runs.id AND j.event::json->>'runner' = '{victim}')"
            ),
        );
        orphaned.extend(held.lines().map(|id| (id.to_owned(), victim.clone())));
        workers.start(&run, fresh, "3s");
    }
    // Every run finishes.
    wait_count(&lab, db, &count("succeeded"), total, Duration::from_secs(180), &workers);
    assert!(!orphaned.is_empty(), "the kills hit no run mid-way");
    // The runs the dead workers held were taken over by others.
    for (id, victim) in &orphaned {
        let status = run.exec(["status", id]).exit(0);
        assert!(
            status.stdout.contains("succeeded") && status.stdout.contains(victim.as_str()),
            "{}",
            status.stdout
        );
        let took_over = lab.psql_in(
            "primary",
            db,
            &format!(
                "SELECT count(*) FROM journal WHERE run_id = '{id}' AND event::json->>'event' = 'run_resumed' \
                 AND event::json->>'runner' <> '{victim}'"
            ),
        );
        assert_ne!(took_over, "0", "run {id} of {victim} was not taken over");
    }
    let history = run.exec(["history", "markers", "--limit", "100"]).exit(0);
    assert!(history.stdout.contains(" → "), "{}", history.stdout);
    let again = assert_markers(&lab, "primary", db, &run, &ids);
    eprintln!(
        "{} runs taken over; {again} steps in flight at a kill ran again",
        orphaned.len()
    );
    assert_fenced_journals(&lab, db);
    // The first worker killed is gone from `runbook workers` (silent past its lease).
    let listed = run.exec(["workers", "--output", "json"]).exit(0);
    let listed: serde_json::Value = serde_json::from_str(&listed.stdout).unwrap();
    let first = &orphaned[0].1;
    let row = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["name"] == first.as_str())
        .unwrap();
    assert_eq!(row["state"], "gone", "{listed}");
    // No run is left with a live lease, and nothing is queued.
    assert_eq!(
        lab.psql_in("primary", db, "SELECT count(*) FROM runs WHERE status <> 'succeeded'"),
        "0"
    );
}

#[test]
fn a_worker_paused_past_its_lease_never_writes_again() {
    // Bound in this order so that the workers are dropped (killed) first.
    let Scene {
        lab,
        id,
        run,
        mut workers,
    } = Scene::slow_run_started("runbook_stall", "sleep 3", "stalled");
    let db = "runbook_stall";
    // Paused mid-step, past its lease; a healthy worker takes the run over.
    workers.signal("stalled", nix::sys::signal::Signal::SIGSTOP);
    workers.start(&run, "healthy", "2s");
    let taken = format!("SELECT count(*) FROM runs WHERE id = '{id}' AND worker = 'healthy'");
    wait_count(&lab, db, &taken, 1, Duration::from_secs(60), &workers);
    let epoch_one = "SELECT count(*) FROM journal WHERE lease_epoch = 1";
    let before = lab.psql_in("primary", db, epoch_one);
    // Continued while the healthy worker executes the run: the stalled one's
    // step has ended meanwhile, and it tries to record that.
    workers.signal("stalled", nix::sys::signal::Signal::SIGCONT);
    let done = format!("SELECT count(*) FROM runs WHERE id = '{id}' AND status = 'succeeded'");
    wait_count(&lab, db, &done, 1, Duration::from_secs(60), &workers);
    let until = Instant::now() + Duration::from_secs(20);
    while !workers.log("stalled").contains("lease") {
        assert!(Instant::now() < until, "{}", workers.logs());
        std::thread::sleep(Duration::from_millis(100));
    }
    let stalled = workers.log("stalled");
    assert!(
        stalled.contains("lost its lease") || stalled.contains("no longer holds its lease"),
        "{stalled}"
    );
    assert_eq!(
        lab.psql_in("primary", db, epoch_one),
        before,
        "the paused worker wrote to the journal after losing its lease\n{stalled}"
    );
    // The step's success is recorded once, by the worker that holds the run.
    let succeeded = lab.psql_in(
        "primary",
        db,
        "SELECT lease_epoch FROM journal WHERE event::json->>'event' = 'step_succeeded' AND event::json->>'step' = 'work'",
    );
    assert_eq!(succeeded, "2");
    assert_fenced_journals(&lab, db);
    let status = run.exec(["status", &id]).exit(0);
    assert!(
        status.stdout.contains("stalled") && status.stdout.contains("healthy"),
        "{}",
        status.stdout
    );
}

#[test]
fn submitted_runs_are_approved_resumed_and_cancelled_through_the_queue() {
    let lab = Lab::postgres();
    let db = "runbook_resume";
    let url = lab.state_db(db);
    let run = Run::new()
        .env("RUNBOOK_STATE", &url)
        .playbook(
            "gated",
            "apiVersion: runbook/v1\nname: gated\nversion: 1\nsteps:\n  - { id: ok, uses: approve, with: { message: \"go?\" } }\n  - { id: b, uses: shell, needs: [ok], with: { run: \"echo approved-and-done\" } }\n",
        )
        .playbook(
            "hello",
            "apiVersion: runbook/v1\nname: hello\nversion: 1\nsteps:\n  - { id: a, uses: shell, with: { run: \"echo hello-from-a-worker\" } }\n",
        )
        .playbook(
            "broken",
            "apiVersion: runbook/v1\nname: broken\nversion: 1\nsteps:\n  - { id: a, uses: shell, with: { run: \"exit 7\" } }\n",
        )
        .playbook(
            "once",
            "apiVersion: runbook/v1\nname: once\nversion: 1\nsteps:\n  - { id: charge, uses: shell, with: { run: \"sleep 20\" } }\n  - { id: after, uses: shell, needs: [charge], with: { run: \"echo after\" } }\n",
        );
    // Submitting needs shared state: SQLite says so, and queues nothing.
    Run::new()
        .playbook("once", "apiVersion: runbook/v1\nname: once\nversion: 1\nsteps:\n  - { id: a, uses: shell, with: { run: \"true\" } }\n")
        .exec(["run", "once", "--submit"])
        .exit(2)
        .stderr_has("PostgreSQL");
    let mut workers = Workers::new(&run);
    workers.start(&run, "first", "2s");
    // An approval answered from another machine goes back to the queue.
    // `--wait` follows the run on its worker and exits with its code: 3 while
    // it waits for a person.
    let waited = run
        .exec(["run", "gated", "--submit", "--wait"])
        .exit(3)
        .stdout_has("waits for an approval: go?");
    let gated = waited.stdout.lines().next().unwrap().to_owned();
    let status = |id: &str, s: &str| format!("SELECT count(*) FROM runs WHERE id = '{id}' AND status = '{s}'");
    assert_eq!(lab.psql_in("primary", db, &status(&gated, "waiting")), "1");
    run.exec(["approve", &gated, "--as", "alice"])
        .exit(0)
        .stderr_has("queued again");
    wait_count(
        &lab,
        db,
        &status(&gated, "succeeded"),
        1,
        Duration::from_secs(60),
        &workers,
    );
    run.exec(["status", &gated]).exit(0).stdout_has("alice: approve ok");
    run.exec(["logs", &gated]).exit(0).stdout_has("approved-and-done");
    // Success is 0 with the steps' output; a failure is 1 with the error.
    run.exec(["run", "hello", "--submit", "--wait"])
        .exit(0)
        .stdout_has("hello-from-a-worker")
        .stdout_has("succeeded");
    run.exec(["run", "broken", "--submit", "--wait"])
        .exit(1)
        .stdout_has("exited with status 7");
    // A non-idempotent step in flight when its worker dies: the worker that
    // takes over stops the run as uncertain, for an operator.
    let once = run.exec(["run", "once", "--submit"]).exit(0).stdout.trim().to_owned();
    let charging =
        format!("SELECT count(*) FROM journal WHERE run_id = '{once}' AND event::json->>'event' = 'step_started'");
    wait_count(&lab, db, &charging, 1, Duration::from_secs(60), &workers);
    run.exec(["resume", &once])
        .exit(4)
        .stderr_has("being executed by worker first");
    workers.kill("first");
    workers.start(&run, "second", "2s");
    wait_count(
        &lab,
        db,
        &status(&once, "uncertain"),
        1,
        Duration::from_secs(60),
        &workers,
    );
    run.exec(["status", &once]).exit(0).stdout_has("--mark-done charge");
    run.exec(["resume", &once, "--mark-done", "charge"])
        .exit(0)
        .stderr_has("queued again");
    wait_count(
        &lab,
        db,
        &status(&once, "succeeded"),
        1,
        Duration::from_secs(60),
        &workers,
    );
    run.exec(["logs", &once, "after"]).exit(0).stdout_has("after");
    // Cancel reaches the worker through its heartbeat.
    let long = run.exec(["run", "once", "--submit"]).exit(0).stdout.trim().to_owned();
    let charging = charging.replace(&once, &long);
    wait_count(&lab, db, &charging, 1, Duration::from_secs(60), &workers);
    run.exec(["cancel", &long])
        .exit(0)
        .stdout_has("cancel requested: worker second");
    wait_count(
        &lab,
        db,
        &status(&long, "cancelled"),
        1,
        Duration::from_secs(30),
        &workers,
    );
    // A queued run nobody holds is cancelled at once.
    workers.kill("second");
    let queued = run.exec(["run", "once", "--submit"]).exit(0).stdout.trim().to_owned();
    run.exec(["cancel", &queued]).exit(0).stdout_has("cancelled");
    run.exec(["status", &queued]).exit(0).stdout_has("cancelled");
}

#[test]
fn a_playbook_lock_holds_across_workers() {
    let lab = Lab::postgres();
    let db = "runbook_queue_locks";
    let url = lab.state_db(db);
    let run = Run::new().env("RUNBOOK_STATE", &url).playbook(
        "locked",
        "apiVersion: runbook/v1\nname: locked\nversion: 1\nlock: db/primary\ninputs:\n  dir: { type: string }\nsteps:\n  - id: work\n    uses: shell\n    with:\n      run: 'echo \"start $RUN\" >> \"$DIR/markers\"; sleep 1; echo \"end $RUN\" >> \"$DIR/markers\"'\n      env: { RUN: \"{{ run.id }}\", DIR: \"{{ inputs.dir }}\" }\n",
    );
    let dir = run.path().display().to_string();
    for _ in 0..3 {
        run.exec(["run", "locked", "--submit", "--set", &format!("dir={dir}")])
            .exit(0);
    }
    let mut workers = Workers::new(&run);
    // One run at a time each: both workers hold a run from the start.
    workers.start_with(&run, "left", "3s", "1");
    workers.start_with(&run, "right", "3s", "1");
    let done = "SELECT count(*) FROM runs WHERE status = 'succeeded'";
    wait_count(&lab, db, done, 3, Duration::from_secs(60), &workers);
    // Both workers had runs, yet the runs never overlapped: each ended before
    // the next one started.
    let markers = std::fs::read_to_string(run.path().join("markers")).unwrap();
    let lines: Vec<&str> = markers.lines().collect();
    assert_eq!(lines.len(), 6, "{markers}");
    for pair in lines.chunks(2) {
        let (start, end) = (pair[0], pair[1]);
        assert!(
            start.starts_with("start ") && end == start.replacen("start", "end", 1),
            "runs overlapped under one lock:\n{markers}"
        );
    }
    let both = lab.psql_in(
        "primary",
        db,
        "SELECT count(DISTINCT event::json->>'runner') FROM journal WHERE event::json->>'event' = 'run_started'",
    );
    let log = workers.logs();
    assert!(log.contains("waiting for lock `db/primary`"), "{log}");
    assert_eq!(both, "2", "{log}");
}

#[test]
fn a_stopped_worker_hands_its_runs_back_at_once() {
    let lab = Lab::postgres();
    let db = "runbook_queue_stop";
    let url = lab.state_db(db);
    let steps = [marker_step("work", None, "sleep 2")];
    let run = Run::new()
        .env("RUNBOOK_STATE", &url)
        .playbook("slow", &playbook("slow", &steps));
    // Without PostgreSQL there is no queue to serve.
    Run::new()
        .exec(["worker", "--exit-when-idle"])
        .exit(2)
        .stderr_has("PostgreSQL");
    let dir = run.path().display().to_string();
    let id = run
        .exec(["run", "slow", "--submit", "--set", &format!("dir={dir}")])
        .exit(0)
        .stdout
        .trim()
        .to_owned();
    let mut workers = Workers::new(&run);
    // Long leases: only a lease given back lets another worker in quickly.
    workers.start(&run, "polite", "60s");
    let started = "SELECT count(*) FROM journal WHERE event::json->>'event' = 'step_started'";
    wait_count(&lab, db, started, 1, Duration::from_secs(60), &workers);
    workers.signal("polite", nix::sys::signal::Signal::SIGTERM);
    let mut polite = workers.running.remove("polite").unwrap();
    let stopped = exits_within("the polite worker after SIGTERM", &mut polite, Duration::from_secs(60));
    assert!(stopped.success(), "{}", workers.log("polite"));
    let row = lab.psql_in(
        "primary",
        db,
        &format!("SELECT status, lease_until IS NULL FROM runs WHERE id = '{id}'"),
    );
    assert_eq!(row, "interrupted|t", "{}", workers.log("polite"));
    run.exec(["workers"]).exit(0).stdout_has("polite");
    let listed = run.exec(["workers", "--output", "json"]).exit(0);
    let listed: serde_json::Value = serde_json::from_str(&listed.stdout).unwrap();
    assert_eq!(listed[0]["state"], "stopped", "{listed}");
    let asked = Instant::now();
    workers.start(&run, "next", "60s");
    let done = format!("SELECT count(*) FROM runs WHERE id = '{id}' AND status = 'succeeded'");
    wait_count(&lab, db, &done, 1, Duration::from_secs(30), &workers);
    // Well before the 60 s lease would have expired.
    assert!(asked.elapsed() < Duration::from_secs(30));
    // A second live worker cannot take the name (fencing and the list would mix them up).
    run.exec(["worker", "--name", "next", "--exit-when-idle"])
        .exit(2)
        .stderr_has("a live worker is already named `next`");
    let listed = run.exec(["workers", "--output", "json"]).exit(0);
    let listed: serde_json::Value = serde_json::from_str(&listed.stdout).unwrap();
    let next = listed.as_array().unwrap().iter().find(|w| w["name"] == "next").unwrap();
    assert_eq!(next["state"], "alive", "{listed}");
    run.exec(["status", &id]).exit(0).stdout_has("workers: polite → next");
}

#[test]
fn the_daemon_submits_its_schedules_to_the_workers() {
    let lab = Lab::postgres();
    let db = "runbook_queue_daemon";
    let url = lab.state_db(db);
    let steps = [marker_step("drill", None, "true")];
    let run = Run::new()
        .env("RUNBOOK_STATE", &url)
        .playbook("drill", &playbook("drill", &steps));
    let dir = run.path().display().to_string();
    // `yes` cannot answer for a worker: refused before anything runs.
    let refused = run.file(
        "bad.yaml",
        &format!(
            "schedules:\n  - {{ name: d, playbook: drill, cron: \"* * * * * *\", inputs: {{ dir: \"{dir}\" }}, submit: true, yes: true }}\n"
        ),
    );
    refused
        .exec(["daemon", "--schedules", "bad.yaml"])
        .exit(2)
        .stderr_has("cannot approve runs executed by workers");
    let run = refused.file(
        "schedules.yaml",
        &format!(
            "schedules:\n  - {{ name: every-second, playbook: drill, cron: \"* * * * * *\", inputs: {{ dir: \"{dir}\" }}, submit: true }}\n"
        ),
    );
    run.exec(["state", "migrate"]).exit(0);
    let mut workers = Workers::new(&run);
    workers.start(&run, "drill-runner", "3s");
    let daemon = run.spawn(["daemon", "--schedules", "schedules.yaml"]);
    let by_worker = "SELECT count(*) FROM runs r WHERE status = 'succeeded' AND submitted \
                     AND worker = 'drill-runner' AND run_user = 'daemon/every-second'";
    let waited = std::panic::catch_unwind(|| {
        wait_count(&lab, db, by_worker, 2, Duration::from_secs(60), &workers);
    });
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(daemon.id()).unwrap()),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let out = daemon.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(waited.is_ok(), "{stderr}");
    assert!(stderr.contains("--submit --wait"), "{stderr}");
    let markers = std::fs::read_to_string(run.path().join("markers")).unwrap();
    assert!(markers.lines().count() >= 2, "{markers}");
}

#[test]
fn a_worker_rides_out_a_database_outage() {
    // Bound in this order so that the workers are dropped (killed) first.
    let Scene {
        lab,
        id,
        run,
        mut workers,
    } = Scene::slow_run_started("runbook_queue_outage", "sleep 2", "steady");
    let db = "runbook_queue_outage";
    // The state database goes away mid-step, for longer than the lease.
    let ctl = format!("{}/pg/ctl", lab.info["dir"].as_str().unwrap());
    let sh = |what: &str| {
        let out = std::process::Command::new(&ctl)
            .args([what, "primary"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "ctl {what}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    sh("stop");
    std::thread::sleep(Duration::from_secs(4));
    sh("start");
    // The worker lived through it, took the run up again and finished it.
    let done = format!("SELECT count(*) FROM runs WHERE id = '{id}' AND status = 'succeeded'");
    wait_count(&lab, db, &done, 1, Duration::from_secs(60), &workers);
    let steady = workers.running.get_mut("steady").unwrap();
    assert!(steady.try_wait().unwrap().is_none(), "{}", workers.log("steady"));
    let log = workers.log("steady");
    // Its heartbeat could not renew the lease, so it stopped the run's steps;
    // once the database was back, the run was claimed again (a new epoch).
    assert!(log.contains("cannot renew the lease"), "{log}");
    assert!(log.contains("lost its lease"), "{log}");
    assert_fenced_journals(&lab, db);
    let markers = std::fs::read_to_string(run.path().join("markers")).unwrap();
    assert_eq!(
        markers.lines().filter(|l| l.ends_with(" after")).count(),
        1,
        "{markers}\n{log}"
    );
}

#[test]
fn secrets_come_from_the_worker_and_never_reach_the_database() {
    let lab = Lab::postgres();
    let db = "runbook_queue_secrets";
    let url = lab.state_db(db);
    let secret = "s3cr3t-v4lue-of-the-worker";
    let run = Run::new().env("RUNBOOK_STATE", &url).playbook(
        "secretive",
        "apiVersion: runbook/v1\nname: secretive\nversion: 1\nsecrets: [QUEUE_TOKEN]\nsteps:\n  - id: use\n    uses: shell\n    with:\n      run: 'echo \"token=$T\"'\n      env: { T: \"{{ secrets.QUEUE_TOKEN }}\" }\n",
    );
    // The submitter needs no secret; a worker without it fails the run, saying which.
    let mut workers = Workers::new(&run);
    workers.start(&run, "bare", "3s");
    run.exec(["run", "secretive", "--submit", "--wait"])
        .exit(1)
        .stdout_has("QUEUE_TOKEN")
        .stdout_has("on worker bare");
    workers.kill("bare");
    // A worker that has it runs the step; the value is masked in what it
    // prints and never written to the shared database.
    let keyed = Run::new().env("RUNBOOK_STATE", &url).env("QUEUE_TOKEN", secret);
    workers.start(&keyed, "keyed", "3s");
    let out = run
        .exec(["run", "secretive", "--submit", "--wait"])
        .exit(0)
        .stdout_has("token=");
    assert!(!out.stdout.contains(secret), "{}", out.stdout);
    assert!(!workers.log("keyed").contains(secret), "{}", workers.log("keyed"));
    let leaked = lab.psql_in(
        "primary",
        db,
        &format!(
            "SELECT (SELECT count(*) FROM journal WHERE event LIKE '%{secret}%') + \
             (SELECT count(*) FROM logs WHERE line LIKE '%{secret}%') + \
             (SELECT count(*) FROM runs WHERE inputs LIKE '%{secret}%' OR text LIKE '%{secret}%')"
        ),
    );
    assert_eq!(leaked, "0");
}

/// A worker dies right after each durable write it makes in turn (claim,
/// lease renewal, journal, logs, lock, heartbeat, finish: the debug build's
/// `RUNBOOK_CRASH_AT`); a second worker takes the run over once the lease
/// expires. Each time: the run ends succeeded, every step recorded; each
/// (idempotent) step ran at most twice; and no write came from a worker
/// after its run was taken over.
#[test]
fn a_worker_dying_at_any_crash_point_is_taken_over_and_nothing_is_lost() {
    let lab = Lab::postgres();
    let steps = [
        marker_step("one", None, "true"),
        marker_step("two", Some("one"), "true"),
    ];
    let text = playbook("points", &steps).replace("steps:\n", "lock: queue/points\nsteps:\n");
    let scene = |db: &str| {
        let url = lab.state_db(db);
        let run = Run::new().env("RUNBOOK_STATE", &url).playbook("points", &text);
        let dir = run.path().display().to_string();
        let id = run
            .exec(["run", "points", "--submit", "--set", &format!("dir={dir}")])
            .exit(0)
            .stdout
            .trim()
            .to_owned();
        (run, id)
    };
    let worker = [
        "worker",
        "--name",
        "dies",
        "--lease-ttl",
        "2s",
        "--poll",
        "200ms",
        "--exit-when-idle",
    ];
    // The points of one worker that takes the run and finishes it alone.
    let (probe, _) = scene("runbook_points_probe");
    let log = probe.path().join("points.log");
    let log_text = log.display().to_string();
    let mut alone = probe.spawn_logged_env(&[("RUNBOOK_CRASH_LOG", &log_text)], worker, &probe.path().join("w.log"));
    assert!(exits_within("the lone worker", &mut alone, Duration::from_secs(120)).success());
    let points = std::fs::read_to_string(&log).unwrap().lines().count();
    assert!(points >= 5, "{}", std::fs::read_to_string(&log).unwrap());
    let mut aborted = 0;
    for k in 1..=points {
        let db = format!("runbook_points_{k}");
        let (run, id) = scene(&db);
        let k_text = k.to_string();
        let mut dying = run.spawn_logged_env(&[("RUNBOOK_CRASH_AT", &k_text)], worker, &run.path().join("dies.log"));
        // Aborted at the point (its heartbeats are timed: a run may also
        // end a point or two early).
        if exits_within("the dying worker", &mut dying, Duration::from_secs(120))
            .code()
            .is_none()
        {
            aborted += 1;
        }
        let mut workers = Workers::new(&run);
        workers.start(&run, "takes-over", "2s");
        let done = "SELECT count(*) FROM runs WHERE status = 'succeeded'";
        wait_count(&lab, &db, done, 1, Duration::from_secs(60), &workers);
        drop(workers);
        let markers = std::fs::read_to_string(run.path().join("markers")).unwrap_or_default();
        for step in ["one", "two"] {
            let n = markers.lines().filter(|l| *l == format!("{id} {step}")).count();
            assert!((1..=2).contains(&n), "point {k}: `{step}` ran {n} times\n{markers}");
        }
        let status = run.exec(["status", &id]).exit(0);
        for step in ["one", "two"] {
            let line = status.stdout.lines().find(|l| l.starts_with(step)).unwrap_or_default();
            assert!(line.contains("succeeded"), "point {k}: {}", status.stdout);
        }
        assert_fenced_journals(&lab, &db);
    }
    assert!(
        aborted + 2 >= points,
        "only {aborted} of {points} points crashed the worker"
    );
    eprintln!("{points} crash points of a worker ({aborted} crashed it), each taken over, violations 0");
}

/// The state database fails over in the middle of a batch of queued runs:
/// the workers and a `run --submit --wait` know both servers (libpq's
/// multi-host form with `target_session_attrs=read-write`), the primary is
/// stopped and the standby promoted. With synchronous replication, every
/// journal entry the primary had acknowledged is on the new primary; the
/// same worker processes reconnect to it and finish every run; steps run
/// again only where a lease ended while they could be in flight; fencing
/// holds across the failover.
#[test]
fn the_state_database_fails_over_to_its_standby_mid_batch() {
    let lab = Lab::postgres();
    let db = "runbook_failover";
    let url = lab.state_db(db);
    // Synchronous replication: a commit returns once the standby has it.
    lab.psql("primary", "ALTER SYSTEM SET synchronous_standby_names = '*'");
    lab.psql("primary", "SELECT pg_reload_conf()");
    let sync = || lab.psql("primary", "SELECT string_agg(sync_state, ',') FROM pg_stat_replication");
    let until = Instant::now() + Duration::from_secs(30);
    while sync() != "sync" {
        assert!(
            Instant::now() < until,
            "the standby never became synchronous: {}",
            sync()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let port = |server: &str| lab.info["postgres"][server]["port"].as_u64().unwrap();
    let (primary, standby) = (port("primary"), port("standby"));
    let both = url.replace(
        &format!("127.0.0.1:{primary}"),
        &format!("127.0.0.1:{primary},127.0.0.1:{standby}"),
    );
    let both = format!(
        "{both}{}target_session_attrs=read-write",
        if both.contains('?') { '&' } else { '?' }
    );
    let run = markers(&both);
    let set_dir = format!("dir={}", run.path().display());
    let total = 24;
    let mut ids = submit(&run, total);
    let mut workers = Workers::new(&run);
    for name in ["w1", "w2"] {
        workers.start(&run, name, "3s");
    }
    let count = |status: &str| format!("SELECT count(*) FROM runs WHERE status = '{status}'");
    wait_count(&lab, db, &count("succeeded"), 6, Duration::from_secs(120), &workers);
    // One more, followed from a terminal across the failover.
    let waiting_log = run.path().join("waiting.log");
    let mut waiting = support::Killed(run.spawn_logged(
        ["run", "markers", "--submit", "--wait", "--set", &set_dir],
        &waiting_log,
    ));
    let queued = total + 1;
    wait_count(
        &lab,
        db,
        "SELECT count(*) FROM runs",
        queued,
        Duration::from_secs(30),
        &workers,
    );
    // What the primary has acknowledged, just before it goes.
    let acknowledged = lab.psql_in("primary", db, "SELECT run_id || ':' || seq FROM journal ORDER BY 1");
    let done_before: usize = lab.psql_in("primary", db, &count("succeeded")).parse().unwrap();
    lab.pg_ctl(&["stop", "primary"]);
    assert_eq!(lab.psql("standby", "SELECT pg_promote()"), "t");

    // The same workers finish every run on the new primary.
    wait_count_on(
        &lab,
        "standby",
        db,
        &count("succeeded"),
        queued,
        Duration::from_secs(180),
        &workers,
    );
    assert!(done_before < queued, "the failover came after the batch");
    let died: Vec<String> = workers
        .running
        .iter_mut()
        .filter_map(|(name, child)| child.try_wait().unwrap().map(|_| name.clone()))
        .collect();
    assert!(died.is_empty(), "{died:?} died\n{}", workers.logs());
    let status = support::exits_within("the follower", &mut waiting.0, Duration::from_secs(120));
    let followed = std::fs::read_to_string(&waiting_log).unwrap_or_default();
    assert!(status.success(), "{followed}");
    ids.push(lab.psql_in(
        "standby",
        db,
        &format!("SELECT id FROM runs WHERE id NOT IN ('{}')", ids.join("','")),
    ));
    // No acknowledged journal entry was lost.
    let after: std::collections::HashSet<String> = lab
        .psql_in("standby", db, "SELECT run_id || ':' || seq FROM journal")
        .lines()
        .map(str::to_owned)
        .collect();
    let lost: Vec<&str> = acknowledged.lines().filter(|e| !after.contains(*e)).collect();
    assert!(lost.is_empty(), "acknowledged entries lost: {lost:?}");
    let again = assert_markers(&lab, "standby", db, &run, &ids);
    assert_fenced_journals_on(&lab, "standby", db);
    eprintln!(
        "{} entries acknowledged before the failover, none lost; {done_before} of {queued} runs done before it; \
         {again} steps in flight ran again",
        acknowledged.lines().count()
    );
}
