//! The deploy playbooks of the library (`playbooks/`) against the lab's whole
//! service: HAProxy in front of app hosts reached over ssh, each checking its
//! PostgreSQL and Redis. Each test asserts what an operator would check: which
//! release every host serves, what HAProxy routes to, and that users saw no
//! failed request.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;
use support::{Lab, Load};

const ROLLING: &[&str] = &["lb_socket", "app_port", "deploy_cmd", "restart_cmd", "rollback_cmd"];

#[test]
fn rolling_deploy_under_load_serves_the_release_everywhere_with_no_failed_request() {
    let lab = Lab::stack(3);
    let port = lab.info["haproxy"]["port"].as_u64().unwrap() as u16;
    let load = Load::start(port, "/version/", 4);
    std::thread::sleep(std::time::Duration::from_millis(300));
    let out = lab.play(&lab.runbook(), "rolling-deploy", ROLLING, &["release=v2"]);
    std::thread::sleep(std::time::Duration::from_millis(300));
    let count = load.stop();
    let out = out.exit(0);
    assert_eq!(lab.versions(3), ["v2", "v2", "v2"], "{}", out.stdout);
    for (i, host) in ["web1", "web2", "web3"].iter().enumerate() {
        let (admin, op, _) = lab.server_state("app", host);
        assert_eq!((admin, op), (0, 2), "{host} is back in rotation and UP");
        assert_eq!(lab.deploys(i), ["v2"], "{host} was deployed once");
    }
    // What users saw: every request answered, none failed, none refused.
    assert_eq!(count.http_errors, 0, "{count:?}");
    assert_eq!(count.connection_errors, 0, "{count:?}");
    assert!(count.ok > 100, "the load ran throughout: {count:?}");
    // Through the load balancer, only the new release is served.
    for _ in 0..6 {
        assert!(lab.get_via_lb("/version/").contains("\"v2\""));
    }
}

#[test]
fn a_host_that_fails_its_health_gate_is_rolled_back_and_left_out_then_resume_finishes() {
    let lab = Lab::stack(3);
    // Release v3 starts badly on web2 only.
    let artifacts = lab.dir.path().join("artifacts/v3");
    std::fs::create_dir_all(&artifacts).unwrap();
    std::fs::write(artifacts.join("BROKEN"), "web2\n").unwrap();
    let run = lab.runbook();
    let out = lab.play(&run, "rolling-deploy", ROLLING, &["release=v3"]).exit(1);
    let id = out.run_id();
    // web1 was done; web2 is back on v1 and out of rotation; web3 was not touched.
    assert_eq!(lab.versions(3), ["v3", "v1", "v1"], "{}", out.stdout);
    assert_eq!(lab.deploys(0), ["v3"]);
    assert_eq!(lab.deploys(1), ["v3", "v1"], "web2 deployed, then rolled back");
    assert!(lab.deploys(2).is_empty(), "web3 untouched");
    assert_eq!(lab.server_state("app", "web1").0, 0, "web1 in rotation");
    assert_eq!(lab.server_state("app", "web2").0 & 1, 1, "web2 left in maint");
    assert_eq!(lab.server_state("app", "web3").0, 0, "web3 in rotation");
    for _ in 0..6 {
        assert!(!lab.get_via_lb("/version/").contains("web2"));
    }
    // Fix the release, resume: web2 is deployed again from its first step, web3
    // for the first time, web1 not again.
    std::fs::remove_file(artifacts.join("BROKEN")).unwrap();
    let out = run.exec(["resume", &id]).exit(0);
    assert_eq!(lab.versions(3), ["v3", "v3", "v3"], "{}", out.stdout);
    assert_eq!(lab.deploys(0), ["v3"], "web1 not redeployed");
    assert_eq!(lab.deploys(1), ["v3", "v1", "v3"]);
    assert_eq!(lab.deploys(2), ["v3"]);
    for host in ["web1", "web2", "web3"] {
        assert_eq!(lab.server_state("app", host).0, 0, "{host} in rotation");
    }
}

fn via_bluegreen(lab: &Lab) -> String {
    let port = lab.info["haproxy"]["bluegreen_port"].as_u64().unwrap() as u16;
    support::http_get("127.0.0.1", port, "/version/")
}

#[test]
fn blue_green_switches_after_warm_up_and_bake_and_switches_back_when_the_bake_fails() {
    let lab = Lab::stack(2); // blue: web1, green: web2
    let run = lab.runbook();
    // Objectives far from what the lab app does (about 50 ms), so that a loaded
    // test machine cannot fail a healthy bake, nor pass a slow one.
    let bake = ["bake_samples=10", "bake_rate=20", "p95=1s"];
    let sets = |release: &str| {
        let mut v = vec![format!("release={release}")];
        v.extend(bake.iter().map(|s| (*s).to_owned()));
        v
    };
    let args = sets("v2");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    // Without a recent verified backup, the migrations do not run: refused
    // before either colour is touched.
    lab.play(&run, "blue-green", support::BLUE_GREEN, &args)
        .exit(1)
        .stdout_has("no verified backup");
    assert!(lab.host_file(1, "deploys.log").is_empty(), "green untouched");
    lab.verified_backup(&run);
    // The migration waits for a person; --yes answers for a pipeline.
    let waits = lab.play(&run, "blue-green", support::BLUE_GREEN, &args).exit(3);
    assert!(waits.stdout.contains("approve-migrate"), "{}", waits.stdout);
    let out = run.exec(["approve", &waits.run_id()]).exit(0);
    assert!(via_bluegreen(&lab).contains("\"v2\""), "{}", out.stdout);
    assert!(via_bluegreen(&lab).contains("web2"), "traffic is on green");
    assert_eq!(
        lab.versions(2),
        ["v1", "v2"],
        "blue keeps the old release for a switch back"
    );
    assert!(
        lab.haproxy(&format!("show map {}", lab.info["haproxy"]["map"].as_str().unwrap()))
            .contains("active green")
    );

    // Back to blue for the next release; v3 answers slower than the p95 objective.
    // Live is green now: a release "to green" is refused before anything is
    // touched.
    let out = lab
        .play(&run, "blue-green", support::BLUE_GREEN, &["release=v9", "--yes"])
        .exit(1);
    assert!(
        out.stdout.contains("traffic goes to `green`, not `blue`"),
        "{}",
        out.stdout
    );
    assert_eq!(lab.versions(2), ["v1", "v2"], "no colour was touched");
    assert!(via_bluegreen(&lab).contains("web2"), "users still on green");
    let out = lab.play(
        &run,
        "blue-green",
        support::BLUE_GREEN,
        &[
            "--yes",
            "release=v1",
            "from=green",
            "to=blue",
            "bake_samples=5",
            "bake_rate=20",
            "p95=1s",
        ],
    );
    out.exit(0);
    assert!(via_bluegreen(&lab).contains("web1"));
    let slow = lab.dir.path().join("artifacts/v3");
    std::fs::create_dir_all(&slow).unwrap();
    std::fs::write(slow.join("SLOW_MS"), "1200").unwrap();
    let out = lab
        .play(
            &run,
            "blue-green",
            support::BLUE_GREEN,
            &["--yes", "release=v3", "bake_samples=3", "bake_rate=20", "p95=1s"],
        )
        .exit(1);
    let out = out
        .stdout_has("p95")
        .stdout_has("switch-back")
        .stdout_has("✓ switch.undo.served-back");
    // The switch happened and was undone: users are on blue's release again.
    assert!(via_bluegreen(&lab).contains("web1"), "{}", out.stdout);
    assert!(via_bluegreen(&lab).contains("\"v1\""));
}

#[test]
fn app_rollback_puts_every_instance_back_on_the_named_release() {
    let lab = Lab::stack(2);
    let run = lab.runbook();
    lab.play(&run, "rolling-deploy", ROLLING, &["release=v2"]).exit(0);
    assert_eq!(lab.versions(2), ["v2", "v2"]);
    lab.play(
        &run,
        "app-rollback",
        &["lb_socket", "app_port", "deploy_cmd", "restart_cmd"],
        &["to=v1"],
    )
    .exit(0);
    assert_eq!(lab.versions(2), ["v1", "v1"]);
    for host in ["web1", "web2"] {
        assert_eq!(lab.server_state("app", host).0, 0, "{host} in rotation");
    }
}

/// The columns the migrations after 0005 add (accounts.note, transactions.memo).
fn migration_columns(lab: &Lab) -> String {
    lab.psql(
        "primary",
        "SELECT string_agg(column_name, ',' ORDER BY column_name) FROM information_schema.columns WHERE table_name IN ('accounts', 'transactions') AND column_name IN ('note', 'memo')",
    )
}

/// A rolling-deploy of `release` that takes a while on each host, running.
fn slow_deploy(lab: &Lab, run: &support::Run, release: &str) -> std::process::Child {
    let mut args: Vec<String> = ["run", "rolling-deploy", "--set"].map(str::to_owned).to_vec();
    args.push(format!("release={release}"));
    args.extend(lab.sets(&["lb_socket", "app_port", "restart_cmd", "rollback_cmd"]));
    let slow = format!(
        "deploy_cmd=sleep 3 && {}",
        lab.info["inputs"]["deploy_cmd"].as_str().unwrap()
    );
    args.extend(["--set".to_owned(), slow]);
    run.spawn(&args)
}

#[test]
fn db_rollback_waits_for_an_approval_then_unapplies_the_later_migrations() {
    let lab = Lab::stack(1);
    let run = lab.runbook();
    // The schema is at 0007 (accounts.note and transactions.memo exist).
    lab.in_host(0, "/srv/app/bin/manage migrate finance 0007");
    let columns = || migration_columns(&lab);
    assert_eq!(columns(), "memo,note");
    let keys = &["showmigrations_cmd", "migrate_to_cmd"];
    // It waits for an approval; a rejection changes nothing.
    let id = lab
        .play(&run, "db-rollback", keys, &["migration=0005", "approvers=[alice]"])
        .exit(3)
        .stdout_has("[X] 0007_transaction_memo")
        .stdout_has("waits for an approval")
        .run_id();
    run.exec(["reject", &id, "--as", "alice", "--comment", "wrong migration"])
        .exit(1)
        .stdout_has("rejected by alice: wrong migration");
    assert_eq!(columns(), "memo,note", "nothing changed without the approval");
    let id = lab
        .play(&run, "db-rollback", keys, &["migration=0005", "approvers=[alice]"])
        .exit(3)
        .run_id();
    run.exec(["approve", &id, "--as", "alice"])
        .exit(0)
        .stdout_has("Unapplying finance.0007_transaction_memo... OK")
        .stdout_has("Unapplying finance.0006_account_note... OK")
        .stdout_has("[ ] 0006_account_note");
    assert_eq!(columns(), "");
    assert_eq!(
        lab.psql(
            "primary",
            "SELECT max(name) FROM django_migrations WHERE app = 'finance'"
        ),
        "0005_seed"
    );
}

#[test]
fn rolling_deploy_without_a_release_is_refused_and_touches_nothing() {
    let lab = Lab::stack(3);
    let out = lab.play(&lab.runbook(), "rolling-deploy", ROLLING, &[]).exit(2);
    assert!(out.stderr.contains("input `release`: is required"), "{}", out.stderr);
    assert!(out.stderr.contains("nothing was run"), "{}", out.stderr);
    for (i, host) in ["web1", "web2", "web3"].iter().enumerate() {
        let (admin, op, _) = lab.server_state("app", host);
        assert_eq!((admin, op), (0, 2), "{host} still in rotation and UP");
        assert!(lab.deploys(i).is_empty(), "{host} untouched");
    }
    assert_eq!(lab.versions(3), ["v1", "v1", "v1"]);
}

#[test]
fn the_release_gate_reads_the_endpoint_and_field_the_inputs_name() {
    let lab = Lab::stack(2);
    let run = lab.runbook();
    let shape = ["release=v2", "version_path=/api/build", "version_field=build.release"];
    let out = lab.play(&run, "rolling-deploy", ROLLING, &shape).exit(0);
    assert_eq!(lab.versions(2), ["v2", "v2"], "{}", out.stdout);
    // A field the answer does not have fails the gate on the first host, which
    // is rolled back and left out; the second is not touched.
    let wrong = ["release=v3", "version_path=/api/build", "version_field=release"];
    let out = lab.play(&run, "rolling-deploy", ROLLING, &wrong).exit(1);
    assert!(out.stdout.contains("JSON has no `release`"), "{}", out.stdout);
    assert_eq!(lab.versions(2), ["v2", "v2"]);
    assert_eq!(lab.deploys(1), ["v2"], "web2 untouched by the failed run");
    // Without a version endpoint, the gate is skipped, and plan says so.
    let plan = run
        .exec([
            "plan",
            "rolling-deploy",
            "--set",
            "release=v4",
            "--set",
            "version_path=",
        ])
        .exit(0);
    assert!(
        plan.stdout.contains("serving") && plan.stdout.contains("skipped"),
        "{}",
        plan.stdout
    );
}

#[test]
fn a_second_playbook_on_the_same_fleet_is_refused_while_a_deploy_runs() {
    let lab = Lab::stack(2);
    let run = lab.runbook();
    // A deploy that takes a while on each host.
    let mut deploy = slow_deploy(&lab, &run, "v2");
    support::wait_for_lock(&run, "fleet/app", &mut deploy);
    lab.verified_backup(&run);
    lab.play(&run, "blue-green", support::BLUE_GREEN, &["release=v3", "--yes"])
        .exit(4)
        .stderr_has("lock `fleet/app` is held by run");
    lab.play(&run, "graceful-shutdown", &["lb_socket"], &["--yes"])
        .exit(4)
        .stderr_has("lock `fleet/app` is held by run");
    let done = deploy.wait_with_output().unwrap();
    assert!(done.status.success(), "{}", String::from_utf8_lossy(&done.stdout));
    assert_eq!(lab.versions(2), ["v2", "v2"], "the deploy finished undisturbed");
    assert!(lab.deploys(1) == ["v2"], "blue-green touched nothing");
    // The refused run took nothing with it: no lock is left held.
    let locks = run.exec(["locks"]).exit(0);
    assert!(
        !locks.stdout.contains("db/main") && !locks.stdout.contains("fleet/app"),
        "{}",
        locks.stdout
    );
}

#[test]
fn blue_green_under_load_switches_only_once_haproxy_counts_the_new_colour_up() {
    let lab = Lab::stack(2); // blue: web1, green: web2
    let run = lab.runbook();
    lab.verified_backup(&run);
    // The idle colour was shut down after the last release: HAProxy counts
    // green/web2 DOWN, and needs a few good checks after the restart before it
    // sends green anything.
    let restart = lab.info["inputs"]["restart_cmd"].as_str().unwrap();
    lab.in_host(1, &restart.replace(" restart", " stop"));
    let down = std::time::Instant::now();
    while lab.server_state("green", "web2").1 == 2 {
        assert!(down.elapsed().as_secs() < 10, "HAProxy never saw green/web2 down");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let port = lab.info["haproxy"]["bluegreen_port"].as_u64().unwrap() as u16;
    let load = Load::start(port, "/version/", 4);
    std::thread::sleep(std::time::Duration::from_millis(300));
    let out = lab.play(
        &run,
        "blue-green",
        support::BLUE_GREEN,
        &[
            "--yes",
            "release=v2",
            "version_path=",
            "bake_samples=10",
            "bake_rate=20",
            "p95=1s",
        ],
    );
    std::thread::sleep(std::time::Duration::from_millis(300));
    let count = load.stop();
    // What users saw: no request failed at the switch (no 503 "No server is
    // available" from a backend whose servers HAProxy still counts down).
    assert_eq!(count.http_errors, 0, "{count:?}\n{}", out.stdout);
    assert_eq!(count.connection_errors, 0, "{count:?}");
    assert!(count.ok > 50, "the load ran throughout: {count:?}");
    // The switch waited for HAProxy's own view of green, and said so.
    out.exit(0).stdout_has("haproxy green/web2: healthy");
    assert!(via_bluegreen(&lab).contains("web2"), "traffic is on green");
    assert!(via_bluegreen(&lab).contains("\"v2\""));
}

#[test]
fn db_rollback_and_a_deploy_of_the_same_fleet_exclude_each_other() {
    let lab = Lab::stack(2);
    let run = lab.runbook();
    lab.in_host(0, "/srv/app/bin/manage migrate finance 0007");
    let columns = || migration_columns(&lab);
    assert_eq!(columns(), "memo,note");
    let keys = &["showmigrations_cmd", "migrate_to_cmd"];
    // A deploy that takes a while on each host, of a release written for the
    // schema it finds.
    let mut deploy = slow_deploy(&lab, &run, "v2");
    support::wait_for_lock(&run, "fleet/app", &mut deploy);
    // A schema rollback meanwhile is refused before it shows or asks anything.
    lab.play(&run, "db-rollback", keys, &["migration=0005", "--yes"])
        .exit(4)
        .stderr_has("lock `fleet/app` is held by run");
    assert_eq!(columns(), "memo,note", "the schema the deploy found is kept");
    let done = deploy.wait_with_output().unwrap();
    assert!(done.status.success(), "{}", String::from_utf8_lossy(&done.stdout));
    assert_eq!(lab.versions(2), ["v2", "v2"], "the deploy finished undisturbed");
    // The other way round: a rollback waiting for its approval holds the
    // fleet, and a deploy is refused until it ends.
    let id = lab
        .play(&run, "db-rollback", keys, &["migration=0005"])
        .exit(3)
        .run_id();
    lab.play(&run, "rolling-deploy", ROLLING, &["release=v3"])
        .exit(4)
        .stderr_has("lock `fleet/app` is held by run");
    assert_eq!(lab.versions(2), ["v2", "v2"], "nothing was deployed");
    run.exec(["approve", &id]).exit(0);
    assert_eq!(columns(), "");
    lab.play(&run, "rolling-deploy", ROLLING, &["release=v3"]).exit(0);
    assert_eq!(lab.versions(2), ["v3", "v3"]);
}
