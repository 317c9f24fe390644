//! The playbook `lock:`: two runs of one key never overlap, a second run fails
//! with exit 4 or waits, a lease whose runner died expires by its TTL, and
//! `locks` / `unlock --force` show and free holders.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;
use std::time::{Duration, Instant};
use support::{Run, wait_for_lock};

/// A playbook that holds `deploy/<env>` while it records its start and end.
fn locked(run: &Run, seconds: f64) -> String {
    let log = run.path().join("log");
    format!(
        r#"apiVersion: runbook/v1
name: t
version: 1
inputs:
  env: {{ type: string, default: prod }}
  tag: {{ type: string, default: a }}
lock: "deploy/{{{{inputs.env}}}}"
steps:
  - {{ id: start, uses: shell, with: {{ run: "echo start-{{{{inputs.tag}}}} $(date +%s.%N) >> {log}" }} }}
  - {{ id: work, uses: sleep, with: {{ duration: {seconds}s }} }}
  - {{ id: end, uses: shell, with: {{ run: "echo end-{{{{inputs.tag}}}} $(date +%s.%N) >> {log}" }} }}
"#,
        log = log.display()
    )
}

fn log(run: &Run) -> Vec<(String, f64)> {
    std::fs::read_to_string(run.path().join("log"))
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let (what, at) = l.split_once(' ').unwrap();
            (what.to_owned(), at.parse().unwrap())
        })
        .collect()
}

#[test]
fn two_racing_runs_of_one_lock_never_overlap() {
    let run = Run::new();
    let yaml = locked(&run, 1.5);
    let run = run.playbook("t", &yaml);
    let a = run.spawn(["run", "t", "--set", "tag=a"]);
    let b = run.spawn(["run", "t", "--set", "tag=b"]);
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    let mut codes = [a.status.code().unwrap(), b.status.code().unwrap()];
    codes.sort();
    assert_eq!(codes, [0, 4], "exactly one ran");
    let loser = if a.status.code() == Some(4) { &a } else { &b };
    let said = String::from_utf8_lossy(&loser.stderr);
    assert!(said.contains("lock `deploy/prod` is held by run"), "{said}");
    assert!(said.contains("nothing was run"), "{said}");
    assert_eq!(log(&run).len(), 2, "one start and one end: {:?}", log(&run));
    // Another key is another lock: both run.
    let c = run.spawn(["run", "t", "--set", "env=staging", "--set", "tag=c"]);
    let d = run.spawn(["run", "t", "--set", "tag=d"]);
    assert!(c.wait_with_output().unwrap().status.success());
    assert!(d.wait_with_output().unwrap().status.success());
    run.exec(["locks"]).exit(0).stdout_has("no locks held");
}

#[test]
fn wait_lock_waits_for_the_holder_to_finish() {
    let run = Run::new();
    let yaml = locked(&run, 3.0);
    let run = run.playbook("t", &yaml);
    let mut a = run.spawn(["run", "t", "--set", "tag=a"]);
    wait_for_lock(&run, "deploy/prod", &mut a);
    run.exec(["run", "t", "--set", "tag=b", "--wait-lock", "30s"])
        .exit(0)
        .stderr_has("waiting for lock `deploy/prod`");
    assert!(a.wait_with_output().unwrap().status.success());
    let l = log(&run);
    let at = |w: &str| l.iter().find(|(x, _)| x == w).unwrap().1;
    assert!(at("start-b") >= at("end-a"), "b started after a ended: {l:?}");
}

#[test]
fn a_lock_whose_holder_died_expires_by_its_ttl_and_unlock_is_journalled() {
    let run = Run::new();
    let yaml = locked(&run, 60.0);
    let run = run.playbook("t", &yaml);
    let mut a = run.spawn(["run", "t", "--set", "tag=a", "--lock-ttl", "2s"]);
    wait_for_lock(&run, "deploy/prod", &mut a);
    let holder = run.exec(["locks"]).exit(0);
    let holder = holder.stdout_has("deploy/prod").stdout_has("tester");
    assert!(holder.stdout.contains(&a.id().to_string()), "{}", holder.stdout);
    a.kill().unwrap(); // SIGKILL: nobody gives the lock back
    let _ = a.wait();
    run.exec(["run", "t", "--set", "tag=b"]).exit(4);
    let started = Instant::now();
    let yaml2 = locked(&run, 0.1);
    let run = run.playbook("t", &yaml2);
    run.exec(["run", "t", "--set", "tag=b", "--wait-lock", "30s"]).exit(0);
    assert!(started.elapsed() < Duration::from_secs(25));

    // unlock --force frees a held lock and says so in the holder's journal.
    let run = Run::new();
    let yaml = locked(&run, 60.0);
    let run = run.playbook("t", &yaml);
    let mut a = run.spawn(["run", "t", "--set", "tag=a"]);
    wait_for_lock(&run, "deploy/prod", &mut a);
    run.exec(["unlock", "deploy/prod"]).exit(2).stderr_has("needs --force");
    run.exec(["unlock", "deploy/prod", "--force"])
        .exit(0)
        .stdout_has("freed lock `deploy/prod`");
    let _ = a.kill();
    let _ = a.wait();
    let id = run
        .exec(["history", "t"])
        .stdout
        .lines()
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    run.exec(["status", &id])
        .stdout_has("unlock (lock `deploy/prod` freed with --force)");
}

#[test]
fn a_lease_on_a_target_is_shared_across_playbooks() {
    // `deploy` holds its group and the database it migrates; `restore` needs
    // only the database: it cannot start while `deploy` runs.
    let run = Run::new()
        .playbook(
            "deploy",
            "apiVersion: runbook/v1\nname: deploy\nversion: 1\ninputs:\n  db: { type: string, default: finance }\nlock: [\"deploy/web\", \"db/{{inputs.db}}\", \"db/{{inputs.db}}\"]\nsteps:\n  - { id: work, uses: sleep, with: { duration: 30s } }\n",
        )
        .playbook(
            "restore",
            "apiVersion: runbook/v1\nname: restore\nversion: 1\nlock: db/finance\nsteps:\n  - { id: work, uses: shell, with: { run: \"echo restored\" } }\n",
        );
    run.exec(["plan", "deploy"])
        .exit(0)
        .stdout_has("lock: deploy/web, db/finance, db/finance");
    let mut deploy = run.spawn(["run", "deploy"]);
    wait_for_lock(&run, "deploy/web", &mut deploy);
    let locks = run.exec(["locks"]).exit(0);
    // Both keys, held by one run; the repeated key is taken once.
    assert!(locks.stdout.contains("deploy/web"), "{}", locks.stdout);
    assert_eq!(locks.stdout.matches("db/finance").count(), 1, "{}", locks.stdout);
    assert_eq!(locks.stdout.lines().count(), 3, "{}", locks.stdout);
    run.exec(["run", "restore"])
        .exit(4)
        .stderr_has("lock `db/finance` is held by run");
    let _ = deploy.kill();
    let _ = deploy.wait();
    run.exec(["unlock", "db/finance", "--force"]).exit(0);
    run.exec(["run", "restore"]).exit(0).stdout_has("restored");
}
