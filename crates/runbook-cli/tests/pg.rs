//! The `pg` kind against a real PostgreSQL 15 primary and streaming standby
//! (the lab's): dump, verify and restore with row counts compared; promotion;
//! the replication-lag gate; idle sessions; a timed-out query cancelled on the
//! server; and a password that never reaches the output or the journal.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;
use support::{Lab, Run};

fn with_dsns(lab: &Lab) -> Run {
    Run::new()
        .env("PRIMARY_DSN", &lab.dsn("primary"))
        .env("STANDBY_DSN", &lab.dsn("standby"))
}

const HEAD: &str = "apiVersion: runbook/v1\nversion: 1\nsecrets: [PRIMARY_DSN, STANDBY_DSN]\n";

#[test]
fn dump_verify_restore_into_a_scratch_database_and_compare() {
    let lab = Lab::postgres();
    let run = with_dsns(&lab);
    let yaml = format!(
        r#"name: restore
{HEAD}steps:
  - {{ id: dump, uses: pg, with: {{ action: dump, dsn: "{{{{secrets.PRIMARY_DSN}}}}", file: "{dir}/finance.dump" }} }}
  - {{ id: verify, uses: pg, needs: [dump], with: {{ action: verify-dump, dsn: "{{{{secrets.PRIMARY_DSN}}}}", file: "{dir}/finance.dump" }} }}
  - {{ id: scratch, uses: pg, needs: [verify], with: {{ action: create-db, dsn: "{{{{secrets.PRIMARY_DSN}}}}", database: restore_test }} }}
  - {{ id: restore, uses: pg, needs: [scratch], with: {{ action: restore, dsn: "{{{{secrets.PRIMARY_DSN}}}}", database: restore_test, file: "{dir}/finance.dump", jobs: 2 }} }}
  - id: accounts
    uses: pg
    needs: [restore]
    with:
      action: assert
      dsn: "{{{{secrets.PRIMARY_DSN}}}}"
      database: restore_test
      sql: "SELECT count(*) FROM accounts"
      expect: {{ value: "{{{{steps.source.outputs.value}}}}" }}
  - {{ id: source, uses: pg, needs: [restore], with: {{ action: query, dsn: "{{{{secrets.PRIMARY_DSN}}}}", sql: "SELECT count(*) AS n FROM accounts" }} }}
  - id: transactions
    uses: pg
    needs: [restore]
    with: {{ action: assert, dsn: "{{{{secrets.PRIMARY_DSN}}}}", database: restore_test, sql: "SELECT count(*) FROM transactions", expect: {{ value: 5000 }} }}
  - {{ id: drop, uses: pg, needs: [accounts, transactions], with: {{ action: drop-db, dsn: "{{{{secrets.PRIMARY_DSN}}}}", database: restore_test }} }}
"#,
        dir = run.path().display()
    );
    // `accounts` reads `source`: declare it.
    let yaml = yaml.replace(
        "needs: [restore]\n    with:\n      action: assert",
        "needs: [restore, source]\n    with:\n      action: assert",
    );
    let run = run.playbook("restore", &yaml);
    let out = run.exec(["run", "restore"]).exit(0);
    assert!(out.stdout.contains("tables with data"), "{}", out.stdout);
    assert!(out.stdout.contains("database restore_test: created"), "{}", out.stdout);
    assert!(out.stdout.contains("database restore_test: dropped"), "{}", out.stdout);
    assert_eq!(
        lab.psql(
            "primary",
            "SELECT count(*) FROM pg_database WHERE datname = 'restore_test'"
        ),
        "0"
    );
    // The password is in no output, no log and not in the journal.
    let password = lab.info["postgres"]["password"].as_str().unwrap();
    assert!(!out.stdout.contains(password) && !out.stderr.contains(password));
    let logs = run.exec(["logs", &out.run_id()]);
    assert!(!logs.stdout.contains(password));
    let journal = std::fs::read(run.path().join("state.db")).unwrap();
    assert!(
        !journal.windows(password.len()).any(|w| w == password.as_bytes()),
        "the password reached the journal"
    );
    // Running it again works (create and drop are idempotent, restore --clean).
    run.exec(["run", "restore"]).exit(0);
}

#[test]
fn a_failed_verification_still_leaves_no_scratch_database() {
    let lab = Lab::postgres();
    let run = with_dsns(&lab);
    let yaml = format!(
        r#"name: rt
{HEAD}steps:
  - {{ id: scratch, uses: pg, with: {{ action: create-db, dsn: "{{{{secrets.PRIMARY_DSN}}}}", database: scratch }} }}
  - id: check
    uses: pg
    needs: [scratch]
    with: {{ action: assert, dsn: "{{{{secrets.PRIMARY_DSN}}}}", database: scratch, sql: "SELECT 1 WHERE false", expect: {{ min_rows: 1 }} }}
finally:
  - {{ id: drop, uses: pg, with: {{ action: drop-db, dsn: "{{{{secrets.PRIMARY_DSN}}}}", database: scratch }} }}
"#
    );
    run.playbook("rt", &yaml)
        .exec(["run", "rt"])
        .exit(1)
        .stdout_has("assertion failed: expected at least 1 rows, got 0");
    assert_eq!(
        lab.psql("primary", "SELECT count(*) FROM pg_database WHERE datname = 'scratch'"),
        "0"
    );
}

#[test]
fn promote_the_standby_and_write_to_it() {
    let lab = Lab::postgres();
    let run = with_dsns(&lab);
    let yaml = format!(
        r#"name: failover
{HEAD}steps:
  - {{ id: lag, uses: pg, with: {{ action: replication, dsn: "{{{{secrets.PRIMARY_DSN}}}}", max_lag_bytes: 16MB, max_lag: 30s }} }}
  - {{ id: promote, uses: pg, needs: [lag], with: {{ action: promote, dsn: "{{{{secrets.STANDBY_DSN}}}}", timeout: 30s }} }}
  - {{ id: write, uses: pg, needs: [promote], with: {{ action: exec, dsn: "{{{{secrets.STANDBY_DSN}}}}", sql: "INSERT INTO accounts (name) VALUES ('after failover')" }} }}
"#
    );
    let run = run.playbook("failover", &yaml);
    let out = run.exec(["run", "failover", "--output", "json"]).exit(0);
    let promote = out.outputs_of("promote");
    assert_eq!(promote["changed"], true);
    assert_eq!(promote["timeline"], 2, "{promote}");
    assert_eq!(lab.psql("standby", "SELECT pg_is_in_recovery()"), "f");
    assert_eq!(
        lab.psql("standby", "SELECT count(*) FROM accounts WHERE name = 'after failover'"),
        "1"
    );
    // Promoting a primary is a no-op that says so.
    let again = format!(
        "name: again\n{HEAD}steps:\n  - {{ id: promote, uses: pg, with: {{ action: promote, dsn: \"{{{{secrets.STANDBY_DSN}}}}\" }} }}\n"
    );
    run.playbook("again", &again)
        .exec(["run", "again"])
        .exit(0)
        .stdout_has("already a primary (timeline 2");
}

#[test]
fn the_lag_gate_refuses_a_failover_when_the_standby_is_behind() {
    let lab = Lab::postgres();
    lab.psql("standby", "SELECT pg_wal_replay_pause()");
    lab.psql(
        "primary",
        "INSERT INTO transactions (account_id, amount) SELECT 1, g FROM generate_series(1, 20000) g",
    );
    let run = with_dsns(&lab);
    let yaml = format!(
        r#"name: gate
{HEAD}steps:
  - {{ id: lag, uses: pg, with: {{ action: replication, dsn: "{{{{secrets.PRIMARY_DSN}}}}", max_lag_bytes: 64kB }} }}
  - {{ id: promote, uses: pg, needs: [lag], with: {{ action: promote, dsn: "{{{{secrets.STANDBY_DSN}}}}" }} }}
"#
    );
    let run = run.playbook("gate", &yaml).playbook("s", &on_standby_playbook());
    let out = run.exec(["run", "gate"]).exit(1);
    assert!(
        out.stdout.contains("replication lag too high") && out.stdout.contains("> max_lag_bytes 65536"),
        "{}",
        out.stdout
    );
    assert_eq!(lab.psql("standby", "SELECT pg_is_in_recovery()"), "t", "not promoted");
    // Measured on the standby itself, the gate says the same, and that replay is paused.
    let out = run.exec(["run", "s"]).exit(1);
    assert!(out.stdout.contains("(replay paused)"), "{}", out.stdout);
    // Once replay catches up, the gate opens.
    lab.psql("standby", "SELECT pg_wal_replay_resume()");
    for _ in 0..50 {
        if run.exec(["run", "gate"]).code == 0 {
            assert_eq!(lab.psql("standby", "SELECT pg_is_in_recovery()"), "f");
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    panic!("the gate stayed shut after replay resumed");
}

fn on_standby_playbook() -> String {
    format!(
        "name: s\n{HEAD}steps:\n  - {{ id: lag, uses: pg, with: {{ action: replication, dsn: \"{{{{secrets.STANDBY_DSN}}}}\", max_lag_bytes: 64kB }} }}\n"
    )
}

#[test]
fn terminate_idle_lists_then_ends_only_idle_sessions() {
    let lab = Lab::postgres();
    // An idle session: psql that ran a query and waits for more.
    let mut idle = std::process::Command::new(format!("{}/psql", lab.info["postgres"]["bin"].as_str().unwrap()))
        .args([
            "-X",
            "-q",
            "-d",
            lab.info["postgres"]["primary"]["app_dsn"].as_str().unwrap(),
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let stdin = idle.stdin.as_mut().unwrap();
        writeln!(stdin, "SELECT 'idle session';").unwrap();
        stdin.flush().unwrap();
    }
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let idle_count = || {
        lab.psql(
            "primary",
            "SELECT count(*) FROM pg_stat_activity WHERE usename = 'app' AND state = 'idle'",
        )
    };
    assert_eq!(idle_count(), "1");
    let run = with_dsns(&lab);
    let yaml = format!(
        "name: idle\n{HEAD}inputs:\n  dry: {{ type: boolean, default: true }}\nsteps:\n  - {{ id: t, uses: pg, with: {{ action: terminate-idle, dsn: \"{{{{secrets.PRIMARY_DSN}}}}\", older_than: 1s, user: app, dry_run: \"{{{{inputs.dry}}}}\" }} }}\n"
    );
    let run = run.playbook("idle", &yaml);
    run.exec(["plan", "idle"])
        .exit(0)
        .stdout_has("(dry run: list only)")
        .stdout_lacks("live:");
    // plan --live names the session a real run would end, and ends nothing.
    let pid = lab.psql(
        "primary",
        "SELECT pid FROM pg_stat_activity WHERE usename = 'app' AND state = 'idle'",
    );
    let password = lab.info["postgres"]["password"].as_str().unwrap();
    run.exec(["plan", "idle", "--live", "--set", "dry=false"])
        .exit(0)
        .stdout_has(&format!("live: would terminate pid {pid} app@finance"))
        .stdout_lacks(password);
    assert_eq!(idle_count(), "1", "plan --live ends nothing");
    // Without the secret it cannot look, and says which one is missing.
    Run::new()
        .playbook("idle", &yaml)
        .exec(["plan", "idle", "--live"])
        .exit(2)
        .stderr_has("secret `PRIMARY_DSN` is not set");
    run.exec(["run", "idle"])
        .exit(0)
        .stdout_has("would terminate pid")
        .stdout_has("app@finance");
    assert_eq!(idle_count(), "1", "a dry run ends nothing");
    run.exec(["run", "idle", "--set", "dry=false"])
        .exit(0)
        .stdout_has("terminated pid");
    assert_eq!(idle_count(), "0");
    let _ = idle.kill();
    let _ = idle.wait();
}

#[test]
fn a_query_that_times_out_is_cancelled_on_the_server() {
    let lab = Lab::postgres();
    let run = with_dsns(&lab);
    let yaml = format!(
        "name: slow\n{HEAD}steps:\n  - {{ id: q, uses: pg, with: {{ action: query, dsn: \"{{{{secrets.PRIMARY_DSN}}}}\", sql: \"SELECT pg_sleep(60)\", timeout: 1s }} }}\n"
    );
    let started = std::time::Instant::now();
    run.playbook("slow", &yaml)
        .exec(["run", "slow"])
        .exit(1)
        .stdout_has("timed out after 1s; the query was cancelled on the server");
    assert!(started.elapsed().as_secs() < 30);
    assert_eq!(
        lab.psql(
            "primary",
            "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%pg_sleep(60)%' AND pid <> pg_backend_pid()"
        ),
        "0",
        "the query is gone from pg_stat_activity"
    );
}

#[test]
fn queries_give_typed_rows_and_a_cap() {
    let lab = Lab::postgres();
    let run = with_dsns(&lab);
    let yaml = format!(
        "name: q\n{HEAD}steps:\n  - {{ id: q, uses: pg, with: {{ action: query, dsn: \"{{{{secrets.PRIMARY_DSN}}}}\", sql: \"SELECT id, name, balance, id % 2 = 0 AS even FROM accounts ORDER BY id\", max_rows: 3 }} }}\n"
    );
    let out = run.playbook("q", &yaml).exec(["run", "q", "--output", "json"]).exit(0);
    let o = out.outputs_of("q");
    assert_eq!(o["row_count"], 200);
    assert_eq!(o["truncated"], true);
    assert_eq!(o["rows"].as_array().unwrap().len(), 3);
    assert_eq!(
        o["rows"][1],
        serde_json::json!({"id": 2, "name": "account 2", "balance": 20.00, "even": true})
    );
    assert_eq!(o["value"], 1);
}

#[test]
fn tls_is_verified_against_the_ca() {
    let lab = Lab::postgres();
    let dsn = lab.dsn("primary").replace("sslmode=disable", "sslmode=require");
    let ca = lab.info["postgres"]["ca_file"].as_str().unwrap().to_owned();
    let yaml = |ca: &str| {
        format!(
            "name: tls\nversion: 1\napiVersion: runbook/v1\nsecrets: [DSN]\nsteps:\n  - {{ id: q, uses: pg, with: {{ action: query, dsn: \"{{{{secrets.DSN}}}}\", sql: \"SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()\"{ca} }} }}\n"
        )
    };
    let run = Run::new().env("DSN", &dsn);
    // The lab's CA is not in the system store: without `ca_file` the server is not trusted.
    let run = run.playbook("tls", &yaml(""));
    let out = run.exec(["run", "tls"]).exit(1);
    assert!(
        out.stdout.contains("invalid peer certificate: UnknownIssuer") && out.stdout.contains("pass `ca_file`"),
        "{}",
        out.stdout
    );
    let out = run
        .playbook("tls", &yaml(&format!(", ca_file: \"{ca}\"")))
        .exec(["run", "tls", "--output", "json"])
        .exit(0);
    assert_eq!(out.outputs_of("q")["value"], true, "the session is encrypted");
}

/// The conventions every PostgreSQL operator relies on, as libpq applies them:
/// a DSN without a password finds it in `PGPASSFILE` or `PGPASSWORD`; a
/// `service=` comes from `PGSERVICEFILE`; a unix-socket DSN connects without
/// TLS and without `sslmode=disable`.
#[test]
fn libpq_conventions_password_file_environment_service_and_unix_socket() {
    let lab = Lab::postgres();
    let pg = &lab.info["postgres"];
    let port = pg["primary"]["port"].as_u64().unwrap();
    let app_pw = pg["app_password"].as_str().unwrap();
    let socket = pg["socket_dir"].as_str().unwrap();
    let yaml = "name: q\napiVersion: runbook/v1\nversion: 1\nsecrets: [DSN]\nsteps:\n  - { id: q, uses: pg, with: { action: query, dsn: \"{{secrets.DSN}}\", sql: \"SELECT current_user::text AS who\" } }\n";
    let no_password = format!("host=127.0.0.1 port={port} user=app dbname=finance sslmode=disable");
    let who = |run: Run| -> serde_json::Value {
        let out = run.playbook("q", yaml).exec(["run", "q", "--output", "json"]);
        assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
        out.outputs_of("q")["value"].clone()
    };
    // Without any password the server refuses (it asks for one).
    let out = Run::new()
        .env("DSN", &no_password)
        .env("PGPASSFILE", "/nonexistent")
        .playbook("q", yaml)
        .exec(["run", "q"]);
    assert_eq!(out.code, 1, "{}", out.stdout);
    // The password file (0600, as libpq requires).
    let run = Run::new();
    let passfile = run.path().join("pgpass");
    std::fs::write(&passfile, format!("# lab\n127.0.0.1:{port}:finance:app:{app_pw}\n")).unwrap();
    std::fs::set_permissions(&passfile, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let run = run
        .env("DSN", &no_password)
        .env("PGPASSFILE", passfile.to_str().unwrap());
    assert_eq!(who(run), "app");
    // PGPASSWORD.
    let run = Run::new()
        .env("DSN", &no_password)
        .env("PGPASSFILE", "/nonexistent")
        .env("PGPASSWORD", app_pw);
    assert_eq!(who(run), "app");
    // A connection service.
    let run = Run::new();
    let services = run.path().join("pg_service.conf");
    std::fs::write(
        &services,
        format!("[lab]\nhost=127.0.0.1\nport={port}\nuser=app\ndbname=finance\npassword={app_pw}\nsslmode=disable\n"),
    )
    .unwrap();
    let run = run
        .env("DSN", "service=lab")
        .env("PGSERVICEFILE", services.to_str().unwrap());
    assert_eq!(who(run), "app");
    // The unix socket (the lab trusts local connections), no sslmode needed.
    let run = Run::new().env(
        "DSN",
        &format!("host={socket} port={port} user=postgres dbname=finance"),
    );
    assert_eq!(who(run), "postgres");
}
