//! The PostgreSQL state backend against a real PostgreSQL (the lab's): the
//! same conformance suite as SQLite, `state migrate`, and runs, approvals and
//! locks of several processes through it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;
use support::{Lab, Run};

#[test]
fn postgres_passes_the_store_conformance_suite() {
    let lab = Lab::postgres();
    let url = lab.state_db("runbook_conformance");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let store = runbook_state::PgStore::open(&url).await.expect("opens and migrates");
        if let Err(msg) = runbook_state::conformance::check(&store).await {
            panic!("PostgreSQL does not conform: {msg}");
        }
        if let Err(msg) = runbook_state::conformance::check_queue(&store).await {
            panic!("PostgreSQL's work queue does not conform: {msg}");
        }
        // Opening again (another runner) finds the schema in place.
        let again = runbook_state::PgStore::open(&url).await.expect("opens twice");
        drop(again);
    });
}

#[test]
fn runs_approvals_and_locks_through_postgres() {
    let lab = Lab::postgres();
    let url = lab.state_db("runbook_state");
    let password = lab.info["postgres"]["password"].as_str().unwrap().to_owned();
    let run = Run::new()
        .env("RUNBOOK_STATE", &url)
        .playbook(
            "t",
            "apiVersion: runbook/v1\nname: t\nversion: 1\nlock: deploy/prod\nsteps:\n  - { id: a, uses: shell, with: { run: \"echo hello\" } }\n  - { id: ok, uses: approve, with: { message: \"go?\" } }\n  - { id: b, uses: sleep, with: { duration: 2s } }\n",
        );
    let latest = format!("version {}", runbook_state::PgStore::latest_version());
    run.exec(["state", "migrate"]).exit(0).stdout_has(&latest);
    // A run waits for its approval in PostgreSQL; another process answers.
    let id = run.exec(["run", "t"]).exit(3).stdout_has("hello").run_id();
    run.exec(["status", &id]).exit(0).stdout_has("waiting");
    let approving = run.spawn(["approve", &id, "--as", "alice"]);
    // While it runs, its lock is held in the shared store: a second run exits 4.
    let until = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !run.exec(["locks"]).stdout.contains("deploy/prod") {
        assert!(std::time::Instant::now() < until, "the lock was never taken");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    run.exec(["run", "t"])
        .exit(4)
        .stderr_has("lock `deploy/prod` is held by run");
    let out = approving.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    run.exec(["status", &id])
        .exit(0)
        .stdout_has("succeeded")
        .stdout_has("alice: approve ok");
    run.exec(["history", "t"]).exit(0).stdout_has(&id);
    // The database password shows nowhere.
    let status = run.exec(["status", &id]);
    assert!(!status.stdout.contains(&password) && !status.stderr.contains(&password));
    // A wrong URL is a clear error without the password.
    let bad = Run::new()
        .env("RUNBOOK_STATE", &url.replace("127.0.0.1", "127.0.0.1:1"))
        .exec(["state", "migrate"]);
    let bad = bad.exit(2);
    assert!(!bad.stderr.contains(&password), "{}", bad.stderr);
}

#[test]
fn the_state_database_is_reached_over_verified_tls() {
    let lab = Lab::postgres();
    let url = lab
        .state_db("runbook_tls")
        .replace("sslmode=disable", "sslmode=verify-full");
    let ca = lab.info["postgres"]["ca_file"].as_str().unwrap();
    let run = Run::new().playbook(
        "t",
        "apiVersion: runbook/v1\nname: t\nversion: 1\nsteps:\n  - { id: a, uses: shell, with: { run: \"echo over-tls\" } }\n",
    );
    // Trusting the lab's CA, the server's certificate verifies (verify-full
    // refuses a connection without TLS or with a wrong name).
    let trusted = format!("{url}&sslrootcert={ca}");
    run.exec(["--state", &trusted, "state", "migrate"]).exit(0);
    let id = run.exec(["--state", &trusted, "run", "t"]).exit(0).run_id();
    run.exec(["--state", &trusted, "status", &id])
        .exit(0)
        .stdout_has("succeeded");
    // Without the CA, the certificate is refused and nothing runs.
    run.exec(["--state", &url, "run", "t"])
        .exit(2)
        .stderr_has("certificate");
}
