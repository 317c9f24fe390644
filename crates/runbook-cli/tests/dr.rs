//! The backup, restore and disaster-recovery playbooks of the library against
//! the lab's PostgreSQL primary and standby (and, for the ones that touch the
//! app, its hosts and HAProxy).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;
use support::Lab;

fn dumps(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// The name `backup` gives a dump of `finance` made `ago` before now (as
/// `date -d` reads it, e.g. `40 days ago 00:00`).
fn dump_name(ago: &str) -> String {
    let out = std::process::Command::new("date")
        .args(["-u", "-d", ago, "+finance-%Y%m%dT%H%M%SZ.dump"])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// The inputs that point backup and restore-test at the lab's off-site
/// folder, DIR/offsite.
const OFFSITE: &[&str] = &["copy_cmd", "verify_cmd", "fetch_cmd"];

#[test]
fn backup_dumps_verifies_the_offsite_copy_reports_rpo_and_keeps_the_retention_tiers() {
    let lab = Lab::postgres();
    let backups = lab.dir.path().join("backups");
    let offsite = lab.dir.path().join("offsite");
    std::fs::create_dir_all(&backups).unwrap();
    // Earlier dumps: daily ones within 30 days are kept; past that, the first
    // of a week within 90 days and the first of a month within a year.
    let keep = [
        dump_name("6 days ago"),
        dump_name("40 days ago 00:00"),
        dump_name("200 days ago 00:00"),
    ];
    let drop = [
        dump_name("40 days ago 12:00"),
        dump_name("200 days ago 12:00"),
        dump_name("400 days ago"),
    ];
    for f in keep.iter().chain(&drop) {
        std::fs::write(backups.join(f), "old").unwrap();
        std::fs::write(backups.join(format!("{f}.counts.json")), "{}").unwrap();
    }
    let run = lab.runbook();
    let dir = format!("dir={}", backups.display());
    let out = lab
        .play(&run, "backup", &OFFSITE[..2], &[&dir])
        .exit(0)
        .stdout_has("off-site copy verified: sha256")
        .stdout_has("3 tables, 5205 rows, counted in the dump's snapshot")
        .stdout_has("kept 4 dumps")
        .stdout_has("as the weekly copy")
        .stdout_has("as the monthly copy")
        .stdout_has("RPO: the newest verified off-site copy");
    for f in &keep {
        assert!(backups.join(f).exists(), "{f} kept\n{}", out.stdout);
    }
    for f in &drop {
        assert!(!backups.join(f).exists(), "{f} deleted\n{}", out.stdout);
        assert!(!backups.join(format!("{f}.counts.json")).exists(), "its counts too");
    }
    // Off the host: the new dump and its counts, identical to the local ones.
    let off = dumps(&offsite);
    assert_eq!(off.len(), 2, "{off:?}");
    let new = off.iter().find(|f| f.ends_with(".dump")).unwrap().clone();
    assert_eq!(
        std::fs::read(offsite.join(&new)).unwrap(),
        std::fs::read(backups.join(&new)).unwrap()
    );
    let counts: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(offsite.join(format!("{new}.counts.json"))).unwrap()).unwrap();
    assert_eq!(counts["tables"]["public.transactions"], 5000);
    // The dump is real: pg_restore lists the tables.
    let list = std::process::Command::new(format!("{}/pg_restore", lab.info["postgres"]["bin"].as_str().unwrap()))
        .arg("--list")
        .arg(backups.join(&new))
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&list.stdout).contains("TABLE DATA public transactions"));

    // An off-site copy that differs from the dump fails the run; the RPO shown
    // is still that of the newest copy that was verified.
    std::thread::sleep(std::time::Duration::from_millis(1100)); // another name
    let bad_copy = format!(
        "copy_cmd=cp \"$FILE\" {o}/ && echo corrupt >> {o}/\"$(basename \"$FILE\")\"",
        o = offsite.display()
    );
    lab.play(&run, "backup", &["verify_cmd"], &[&dir, &bad_copy])
        .exit(1)
        .stdout_has("differs")
        .stdout_has(&format!("RPO: the newest verified off-site copy ({new})"));
    let verified = std::fs::read_to_string(backups.join("verified.log")).unwrap();
    assert_eq!(verified.lines().count(), 1, "{verified}");
}

fn scratch_exists(lab: &Lab) -> String {
    lab.psql(
        "primary",
        "SELECT count(*) FROM pg_database WHERE datname = 'finance_restore_test'",
    )
}

#[test]
fn restore_test_restores_the_offsite_copy_checks_every_table_against_the_source_and_always_drops_the_scratch_db() {
    let lab = Lab::postgres();
    let backups = lab.dir.path().join("backups");
    let offsite = lab.dir.path().join("offsite");
    let run = lab.runbook();
    lab.play(&run, "backup", &OFFSITE[..2], &[&format!("dir={}", backups.display())])
        .exit(0);
    // Writes after the dump do not count: the restore holds what the source
    // held when it was dumped.
    lab.psql("primary", "INSERT INTO accounts (name) VALUES ('after the dump')");
    // The local dumps are gone (the host burned down): only the off-site copy is left.
    std::fs::remove_dir_all(&backups).unwrap();
    let work = lab.dir.path().join("work/restore");
    let dir = format!("dir={}", work.display());
    let out = lab
        .play(&run, "restore-test", &OFFSITE[2..], &[&dir])
        .exit(0)
        .stdout_has("3 of 3 tables hold the rows of the source (5205 rows)")
        .stdout_has("RTO measured")
        .stdout_has("RPO: the backup is");
    let report = out
        .stdout
        .lines()
        .find(|l| l.contains("rto_seconds"))
        .unwrap()
        .to_owned();
    assert!(
        report.contains("rpo_seconds") && report.contains("\"rows\": 5205"),
        "{report}"
    );
    assert_eq!(scratch_exists(&lab), "0", "the scratch database is dropped");
    assert!(!work.exists(), "the fetched copy is removed");

    // A copy that does not hold what the source had: the run fails, naming
    // the table, and the scratch database is still dropped.
    let counts = dumps(&offsite)
        .into_iter()
        .find(|f| f.ends_with(".counts.json"))
        .unwrap();
    let path = offsite.join(counts);
    let text = std::fs::read_to_string(&path).unwrap().replace("5000", "5001");
    std::fs::write(&path, text).unwrap();
    lab.play(&run, "restore-test", &OFFSITE[2..], &[&dir])
        .exit(1)
        .stdout_has("public.transactions: 5000 rows, 5001 in the source");
    assert_eq!(scratch_exists(&lab), "0", "dropped also when the check fails");
}

#[test]
fn full_restore_puts_the_backup_back_and_the_app_up_on_the_matching_release() {
    let lab = Lab::stack(2);
    let backups = lab.dir.path().join("backups");
    let run = lab.runbook();
    let dir = format!("dir={}", backups.display());
    lab.play(&run, "backup", &OFFSITE[..2], &[&dir]).exit(0);
    let file = backups.join(dumps(&backups).into_iter().find(|f| f.ends_with(".dump")).unwrap());
    // The data is damaged after the backup.
    lab.psql("primary", "DELETE FROM transactions WHERE id > 1000");
    let keys = &["app_port", "lb_url", "stop_app_cmd", "deploy_cmd", "start_app_cmd"];
    let file = format!("file={}", file.display());
    let id = lab
        .play(&run, "full-restore", keys, &[&file, "release=v1"])
        .exit(3)
        .stdout_has("waits for an approval: restore finance from")
        .run_id();
    assert_eq!(
        lab.psql("primary", "SELECT count(*) FROM transactions"),
        "1000",
        "nothing changed yet"
    );
    for i in 0..2 {
        assert!(lab.get(i, "/health/ready/").contains("\"ready\""), "the app still runs");
    }
    run.exec(["approve", &id, "--as", "oncall"])
        .exit(0)
        .stdout_has("✓ served");
    // It ended only once users were served through HAProxy.
    assert!(lab.get_via_lb("/health/ready/").contains("\"ready\""));
    assert_eq!(lab.psql("primary", "SELECT count(*) FROM transactions"), "5000");
    assert_eq!(
        lab.psql(
            "primary",
            "SELECT tableowner FROM pg_tables WHERE tablename = 'transactions'"
        ),
        "app",
        "the app still owns its tables"
    );
    for i in 0..2 {
        assert!(lab.get(i, "/health/ready/").contains("\"ready\""));
    }
}

const FAILOVER: &[&str] = &["app_port", "lb_url", "lb_socket", "repoint_cmd", "restart_cmd"];

fn database_urls(lab: &Lab, hosts: usize) -> Vec<String> {
    (0..hosts)
        .map(|i| {
            lab.host_file(i, "config/env")
                .lines()
                .find_map(|l| l.strip_prefix("DATABASE_URL="))
                .unwrap_or_default()
                .to_owned()
        })
        .collect()
}

#[test]
fn dr_failover_refuses_beyond_the_lag_gate_then_promotes_repoints_and_serves() {
    let lab = Lab::stack(2);
    let standby_app = lab.info["postgres"]["standby"]["app_dsn"].as_str().unwrap().to_owned();
    let primary_app = lab.info["postgres"]["primary"]["app_dsn"].as_str().unwrap().to_owned();
    let run = lab.runbook().env("NEW_DATABASE_URL", &standby_app);
    // The standby is behind: replay paused while the primary writes.
    lab.psql("standby", "SELECT pg_wal_replay_pause()");
    lab.psql(
        "primary",
        "CREATE TABLE filler AS SELECT g, repeat('x', 1000) AS pad FROM generate_series(1, 20000) g",
    );
    lab.play(&run, "dr-failover", FAILOVER, &["max_lag_bytes=1MB", "--yes"])
        .exit(1)
        .stdout_has("replication lag too high");
    assert_eq!(
        lab.psql("standby", "SELECT pg_is_in_recovery()"),
        "t",
        "nothing was promoted"
    );
    assert_eq!(
        lab.psql("primary", "SHOW default_transaction_read_only"),
        "off",
        "nothing was fenced"
    );
    assert_eq!(database_urls(&lab, 2), [primary_app.clone(), primary_app.clone()]);

    // Caught up: the failover goes through.
    lab.psql("standby", "SELECT pg_wal_replay_resume()");
    let caught_up = || lab.psql("standby", "SELECT pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn()") == "t";
    let until = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !caught_up() && std::time::Instant::now() < until {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    // Users are served throughout: the instances are repointed one at a time,
    // each drained first.
    let port = lab.info["haproxy"]["port"].as_u64().unwrap() as u16;
    let load = support::Load::start(port, "/health/", 4);
    std::thread::sleep(std::time::Duration::from_millis(300));
    let out = lab.play(&run, "dr-failover", FAILOVER, &["max_lag_bytes=1MB", "--yes"]);
    std::thread::sleep(std::time::Duration::from_millis(300));
    let count = load.stop();
    let out = out.exit(0).stdout_has("RTO measured").stdout_has("replayed");
    assert_eq!(count.http_errors, 0, "{count:?}");
    assert_eq!(count.connection_errors, 0, "{count:?}");
    assert!(count.ok > 50, "the load ran throughout: {count:?}");
    assert_eq!(
        lab.psql("standby", "SELECT pg_is_in_recovery()"),
        "f",
        "the standby is the primary now"
    );
    assert_eq!(
        lab.psql("standby", "SELECT count(*) FROM runbook_dr_check"),
        "1",
        "{}",
        out.stdout
    );
    assert_eq!(
        lab.psql("standby", "SELECT count(*) FROM filler"),
        "20000",
        "no write was lost"
    );
    assert_eq!(
        lab.psql("primary", "SHOW default_transaction_read_only"),
        "on",
        "the old primary is fenced"
    );
    assert_eq!(database_urls(&lab, 2), [standby_app.clone(), standby_app.clone()]);
    // The app is ready against the new primary (its readiness needs a writable database).
    for i in 0..2 {
        assert!(lab.get(i, "/health/ready/").contains("\"ready\""));
    }
    assert!(lab.get_via_lb("/health/ready/").contains("\"ready\""));
    assert!(
        !out.stdout
            .contains(lab.info["postgres"]["app_password"].as_str().unwrap())
    );
}

#[test]
fn dr_drill_fails_over_loses_nothing_and_fails_back_to_where_it_started() {
    let lab = Lab::stack(2);
    let pg = &lab.info["postgres"];
    let primary_app = pg["primary"]["app_dsn"].as_str().unwrap().to_owned();
    let standby_app = pg["standby"]["app_dsn"].as_str().unwrap().to_owned();
    let run = lab
        .runbook()
        .env("PRIMARY_DATABASE_URL", &primary_app)
        .env("STANDBY_DATABASE_URL", &standby_app);
    let keys = &[
        "app_port",
        "lb_url",
        "lb_socket",
        "fail_primary_cmd",
        "rebuild_primary_cmd",
        "rebuild_standby_cmd",
        "repoint_cmd",
        "restart_cmd",
    ];
    // The simulated failure waits for a person: nothing is stopped without one.
    let waiting = lab
        .play(&run, "dr-drill", keys, &[])
        .exit(3)
        .stdout_has("approve-failure");
    assert_eq!(
        lab.psql("primary", "SELECT pg_is_in_recovery()"),
        "f",
        "the primary still runs"
    );
    run.exec(["cancel", &waiting.run_id()]).exit(0);
    let out = lab.play(&run, "dr-drill", keys, &["--yes"]).exit(0);
    // The outage was seen, the failover served traffic, the marker survived.
    let out = out
        .stdout_has("✓ outage")
        .stdout_has("✓ no-data-lost")
        .stdout_has("RTO measured")
        .stdout_has("failed back and redundant again");
    // The drill's own report (dr-failover's, nested, measures from its start).
    let report = out
        .stdout
        .lines()
        .find(|l| l.trim_start().starts_with("report │") && l.contains("rto_seconds"))
        .unwrap_or_default();
    assert!(report.contains("\"rpo_seconds\": 0"), "{}", out.stdout);
    // Where it started: the primary is the primary, the standby streams from it,
    // the app points at the primary and is ready through HAProxy.
    assert_eq!(lab.psql("primary", "SELECT pg_is_in_recovery()"), "f");
    assert_eq!(lab.psql("standby", "SELECT pg_is_in_recovery()"), "t");
    assert_eq!(
        lab.psql(
            "primary",
            "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'"
        ),
        "1"
    );
    assert_eq!(database_urls(&lab, 2), [primary_app.clone(), primary_app.clone()]);
    assert!(lab.get_via_lb("/health/ready/").contains("\"ready\""));
    // The marker written before the failure is on the primary and on its
    // standby, with the write dr-failover proved the promoted standby takes.
    let marker = "SELECT count(*) FROM runbook_dr_check WHERE note = 'before the failure'";
    assert_eq!(lab.psql("primary", marker), "1");
    assert_eq!(lab.psql("standby", marker), "1");
    let probe = "SELECT count(*) FROM runbook_dr_check WHERE note IS NULL";
    assert_eq!(
        lab.psql("primary", probe),
        "1",
        "dr-failover's write probe, failed back with the rest"
    );
    assert_eq!(lab.psql("primary", "SHOW default_transaction_read_only"), "off");
}

#[test]
fn a_drill_that_fails_after_stopping_the_primary_starts_it_again() {
    let lab = Lab::stack(2);
    let pg = &lab.info["postgres"];
    let run = lab
        .runbook()
        .env("PRIMARY_DATABASE_URL", pg["primary"]["app_dsn"].as_str().unwrap())
        .env("STANDBY_DATABASE_URL", pg["standby"]["app_dsn"].as_str().unwrap());
    // The failure injection stops the primary, then reports an error.
    let stop = lab.info["inputs"]["fail_primary_cmd"].as_str().unwrap();
    let fail = format!("fail_primary_cmd={stop}; exit 1");
    let keys = &[
        "app_port",
        "lb_url",
        "lb_socket",
        "start_primary_cmd",
        "repoint_cmd",
        "restart_cmd",
    ];
    lab.play(&run, "dr-drill", keys, &["--yes", &fail])
        .exit(1)
        .stdout_has("✓ on_failure.restart-primary");
    assert_eq!(
        lab.psql("primary", "SELECT pg_is_in_recovery()"),
        "f",
        "the primary runs again"
    );
    assert_eq!(
        lab.psql("standby", "SELECT pg_is_in_recovery()"),
        "t",
        "nothing was promoted"
    );
}

#[test]
fn pitr_brings_the_database_back_to_the_moment_before_a_bad_delete() {
    let lab = Lab::stack(2);
    // Last night's base backup; then a day's writes, the moment to go back
    // to, and a DELETE that should not have happened.
    lab.pg_ctl(&["basebackup", "primary"]);
    lab.psql(
        "primary",
        "INSERT INTO accounts (name) VALUES ('opened after the base backup')",
    );
    std::thread::sleep(std::time::Duration::from_millis(500));
    let target = lab.psql("primary", "SELECT clock_timestamp()::text");
    std::thread::sleep(std::time::Duration::from_millis(500));
    lab.psql("primary", "DELETE FROM transactions WHERE id > 100");
    assert_eq!(lab.psql("primary", "SELECT count(*) FROM transactions"), "100");

    let run = lab.runbook();
    let keys = &[
        "app_port",
        "lb_url",
        "stop_app_cmd",
        "start_app_cmd",
        "stop_db_cmd",
        "restore_cmd",
        "start_db_cmd",
        "rebuild_standby_cmd",
    ];
    // An ambiguous time (no offset) is refused before anything runs.
    lab.play(&run, "pitr", keys, &["target_time=2026-11-28 07:00:00", "--yes"])
        .exit(2);
    assert_eq!(lab.psql("primary", "SELECT count(*) FROM transactions"), "100");

    let target_set = format!("target_time={target}");
    let waiting = lab.play(&run, "pitr", keys, &[&target_set]).exit(3);
    assert!(
        lab.get_via_lb("/health/ready/").contains("\"ready\""),
        "nothing stopped before the approval"
    );
    let out = run.exec(["approve", &waiting.run_id()]).exit(0);
    // Everything before the target is there, the DELETE is not.
    assert_eq!(
        lab.psql("primary", "SELECT count(*) FROM transactions"),
        "5000",
        "{}",
        out.stdout
    );
    assert_eq!(
        lab.psql(
            "primary",
            "SELECT count(*) FROM accounts WHERE name = 'opened after the base backup'"
        ),
        "1"
    );
    assert_eq!(lab.psql("primary", "SELECT pg_is_in_recovery()"), "f");
    // The standby follows the recovered primary; users are served.
    assert_eq!(lab.psql("standby", "SELECT pg_is_in_recovery()"), "t");
    lab.psql("primary", "INSERT INTO accounts (name) VALUES ('after the recovery')");
    let mut seen = String::new();
    for _ in 0..50 {
        seen = lab.psql(
            "standby",
            "SELECT count(*) FROM accounts WHERE name = 'after the recovery'",
        );
        if seen == "1" {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(seen, "1", "the standby streams from the recovered primary");
    assert!(lab.get_via_lb("/health/ready/").contains("\"ready\""));
}

#[test]
fn region_failover_promotes_the_dr_standby_starts_the_dr_region_and_moves_the_name() {
    let lab = Lab::stack(2); // the primary region: web1 (blue); the DR region: web2 (green)
    let pg = &lab.info["postgres"];
    let standby_app = pg["standby"]["app_dsn"].as_str().unwrap().to_owned();
    let run = lab.runbook().env("NEW_DATABASE_URL", &standby_app);
    // The DR region's load balancer: the lab's blue-green frontend, on green.
    let map = lab.info["haproxy"]["map"].as_str().unwrap().to_owned();
    lab.haproxy(&format!("set map {map} active green"));
    let dr_lb = lab.info["inputs"]["bluegreen_url"].as_str().unwrap().to_owned();
    let web1_before = lab.host_file(0, "config/env");
    // The primary region is lost.
    lab.pg_ctl(&["stop", "primary"]);

    let keys = &["app_port", "repoint_cmd", "restart_cmd", "dns_cmd", "resolve_cmd"];
    let sets = [
        "dr_group=green".to_owned(),
        format!("dr_lb_url={dr_lb}"),
        "dns_name=finance.example.test".to_owned(),
        "dns_target=dr-lb.example.test".to_owned(),
    ];
    let sets: Vec<&str> = sets.iter().map(String::as_str).collect();
    // Nothing changes before the approval.
    let waiting = lab.play(&run, "region-failover", keys, &sets).exit(3);
    assert_eq!(lab.psql("standby", "SELECT pg_is_in_recovery()"), "t");
    let out = run.exec(["approve", &waiting.run_id()]).exit(0);
    let out = out
        .stdout_has("finance.example.test resolves to dr-lb.example.test")
        .stdout_has("rto_seconds");
    assert_eq!(lab.psql("standby", "SELECT pg_is_in_recovery()"), "f", "{}", out.stdout);
    // The DR instance uses the promoted standby and serves; the lost region's
    // instance was not touched.
    assert!(
        lab.host_file(1, "config/env")
            .contains(&format!("DATABASE_URL={standby_app}"))
    );
    assert_eq!(lab.host_file(0, "config/env"), web1_before);
    let port = lab.info["haproxy"]["bluegreen_port"].as_u64().unwrap() as u16;
    assert!(support::http_get("127.0.0.1", port, "/health/ready/").contains("\"ready\""));
    let zone = std::fs::read_to_string(lab.dir.path().join("dns.zone")).unwrap();
    assert_eq!(zone.trim(), "finance.example.test dr-lb.example.test");
}

/// Waits until `sql` on `server` answers `want` (at most 30 s).
fn wait_psql(lab: &Lab, server: &str, sql: &str, want: &str) {
    let until = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while lab.psql(server, sql) != want {
        assert!(std::time::Instant::now() < until, "{server}: `{sql}` never gave {want}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[test]
fn dr_failover_refuses_when_the_primary_sees_no_streaming_standby_and_fences_nothing() {
    let lab = Lab::stack(1);
    let standby_app = lab.info["postgres"]["standby"]["app_dsn"].as_str().unwrap().to_owned();
    let run = lab.runbook().env("NEW_DATABASE_URL", &standby_app);
    // The standby runs, but its WAL receiver is cut: it has replayed all it
    // received, so by its own view it is 0 bytes behind, while the primary
    // goes on taking writes it never sees.
    lab.psql("standby", "ALTER SYSTEM SET primary_conninfo = ''");
    lab.psql("standby", "SELECT pg_reload_conf()");
    wait_psql(&lab, "standby", "SELECT count(*) FROM pg_stat_wal_receiver", "0");
    wait_psql(&lab, "primary", "SELECT count(*) FROM pg_stat_replication", "0");
    lab.psql(
        "primary",
        "CREATE TABLE after_the_cut AS SELECT g FROM generate_series(1, 100) g",
    );
    let out = lab
        .play(&run, "dr-failover", FAILOVER, &["--yes"])
        .exit(1)
        .stdout_has("no WAL receiver")
        .stdout_has("no standby is streaming from this primary");
    // Nothing was fenced or promoted: production still takes writes.
    assert_eq!(
        lab.psql("primary", "SHOW default_transaction_read_only"),
        "off",
        "{}",
        out.stdout
    );
    lab.psql("primary", "INSERT INTO after_the_cut VALUES (101)");
    assert_eq!(
        lab.psql("standby", "SELECT pg_is_in_recovery()"),
        "t",
        "nothing was promoted"
    );
}

#[test]
fn dr_failover_undoes_the_fence_when_the_standby_does_not_catch_up_and_says_so() {
    let lab = Lab::stack(1);
    let standby_app = lab.info["postgres"]["standby"]["app_dsn"].as_str().unwrap().to_owned();
    let run = lab.runbook().env("NEW_DATABASE_URL", &standby_app);
    // The standby streams, a little behind (within the gate), but never
    // replays the fenced primary's final position: its replay is paused.
    lab.psql("standby", "SELECT pg_wal_replay_pause()");
    lab.psql(
        "primary",
        "CREATE TABLE before_the_fence AS SELECT g FROM generate_series(1, 100) g",
    );
    let out = lab
        .play(
            &run,
            "dr-failover",
            FAILOVER,
            &["--yes", "max_lag=1h", "catchup_timeout=3s"],
        )
        .exit(1)
        .stdout_has("✓ fence")
        .stdout_has("replayed");
    // The run's last lines say where the old primary was left.
    let tail: Vec<&str> = out.stdout.lines().rev().take(6).collect();
    assert!(
        tail.iter()
            .any(|l| l.contains("the old primary was put back to read-write")),
        "{}",
        out.stdout
    );
    // And it is so: read-write, writes from the app's role go through.
    assert_eq!(lab.psql("primary", "SHOW default_transaction_read_only"), "off");
    let app = lab.info["postgres"]["primary"]["app_dsn"].as_str().unwrap();
    let psql = format!("{}/psql", lab.info["postgres"]["bin"].as_str().unwrap());
    let write = std::process::Command::new(psql)
        .args(["-X", "-v", "ON_ERROR_STOP=1", "-d", app, "-c"])
        .arg("INSERT INTO accounts (name) SELECT 'after the failed failover' WHERE false")
        .output()
        .unwrap();
    assert!(write.status.success(), "{}", String::from_utf8_lossy(&write.stderr));
    assert_eq!(
        lab.psql("standby", "SELECT pg_is_in_recovery()"),
        "t",
        "nothing was promoted"
    );
}

#[test]
fn full_restore_refuses_a_dump_of_another_database_or_without_its_counts_before_stopping_anything() {
    let lab = Lab::stack(1);
    let run = lab.runbook();
    let keys = &["app_port", "lb_url", "stop_app_cmd", "deploy_cmd", "start_app_cmd"];
    // A good, verified backup of another database on the same server.
    lab.psql("primary", "CREATE DATABASE ledger OWNER app");
    lab.psql_in(
        "primary",
        "ledger",
        "CREATE TABLE entries AS SELECT g AS id FROM generate_series(1, 10) g",
    );
    let other = lab.dir.path().join("other");
    let dir = format!("dir={}", other.display());
    lab.play(&run, "backup", &OFFSITE[..2], &[&dir, "database=ledger"])
        .exit(0);
    let wrong = other.join(dumps(&other).into_iter().find(|f| f.ends_with(".dump")).unwrap());
    let file = format!("file={}", wrong.display());
    let out = lab
        .play(&run, "full-restore", keys, &[&file, "release=v1", "--yes"])
        .exit(1)
        .stdout_has("is a dump of ledger, not of finance");
    // Refused before anything was stopped or restored.
    assert!(!out.stdout.contains("stop-app"), "{}", out.stdout);
    assert!(lab.get(0, "/health/ready/").contains("\"ready\""), "the app still runs");
    assert_eq!(lab.psql("primary", "SELECT count(*) FROM transactions"), "5000");
    assert_eq!(
        lab.psql("primary", "SELECT count(*) FROM pg_tables WHERE tablename = 'entries'"),
        "0",
        "the other database's table was not loaded into production"
    );
    // A dump of this database without the counts `backup` writes beside it:
    // nothing says what the restore must hold.
    let backups = lab.dir.path().join("backups");
    let dir = format!("dir={}", backups.display());
    lab.play(&run, "backup", &OFFSITE[..2], &[&dir]).exit(0);
    let good = backups.join(dumps(&backups).into_iter().find(|f| f.ends_with(".dump")).unwrap());
    let counts = format!("{}.counts.json", good.display());
    std::fs::rename(&counts, format!("{counts}.aside")).unwrap();
    let file = format!("file={}", good.display());
    lab.play(&run, "full-restore", keys, &[&file, "release=v1", "--yes"])
        .exit(1)
        .stdout_has("without the counts `backup` writes beside a dump");
    assert!(lab.get(0, "/health/ready/").contains("\"ready\""), "the app still runs");
    // With them, the restore goes through and its rows are checked.
    std::fs::rename(format!("{counts}.aside"), &counts).unwrap();
    lab.psql("primary", "DELETE FROM transactions WHERE id > 1000");
    lab.play(&run, "full-restore", keys, &[&file, "release=v1", "--yes"])
        .exit(0)
        .stdout_has("its tables those")
        .stdout_has("✓ rows");
    assert_eq!(lab.psql("primary", "SELECT count(*) FROM transactions"), "5000");
}
