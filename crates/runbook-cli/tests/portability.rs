//! Every library playbook against a world it was not written for: the lab's
//! `alt` flavour (tests/lab/lab.py) has its own host and group names, a
//! non-root ssh user, another folder and other script names on the hosts, the
//! release at `/api/build` as `build.release` (no `/version/`), a database and
//! role of other names, HAProxy backend `django_pool` and a map `colours.map`
//! keyed `live` with green live, and the app serving https only, signed by the
//! lab's own CA. The playbooks are driven only through `--set`, the inventory
//! and secrets, never edited; each test asserts what the default-flavour tests
//! assert. (`hello-service` has no fleet: playbooks.rs runs it on a port,
//! folder and releases of its own.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;
use support::{Lab, Outcome, Run};

/// The playbooks run here, checked against the library's list.
const COVERED: &[&str] = &[
    "health-check",
    "preflight",
    "verify-startup",
    "rolling-deploy",
    "app-rollback",
    "deploy-host",
    "blue-green",
    "cache-clear",
    "high-error-rate",
    "high-latency",
    "db-connections-exhausted",
    "db-rollback",
    "graceful-shutdown",
    "startup",
    "emergency-shutdown",
    "backup",
    "restore-test",
    "dr-drill",
    "full-restore",
    "pitr",
    "region-failover",
    "dr-failover",
];

#[test]
fn every_fleet_playbook_of_the_library_is_run_in_the_other_world() {
    let mut library: Vec<String> = std::fs::read_dir(support::workspace().join("playbooks"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "hello-service")
        .collect();
    library.sort();
    let mut covered: Vec<String> = COVERED.iter().map(|s| (*s).to_owned()).collect();
    covered.sort();
    assert_eq!(covered, library, "a playbook was added: run it in portability.rs too");
}

/// `runbook run PLAYBOOK` with the world's value for every input the playbook
/// declares (lab.json's `inputs`), then the test's own `KEY=VALUE`s and flags.
fn play(lab: &Lab, run: &Run, playbook: &str, own: &[&str]) -> Outcome {
    let show = run.exec(["show", playbook, "--output", "json"]).exit(0);
    let show: serde_json::Value = serde_json::from_str(&show.stdout).unwrap();
    let declared = show["playbook"]["inputs"].as_object().unwrap();
    let mine: Vec<&str> = own.iter().filter_map(|s| s.split_once('=').map(|(k, _)| k)).collect();
    let keys: Vec<&str> = declared
        .keys()
        .map(String::as_str)
        .filter(|k| lab.info["inputs"].get(*k).is_some() && !mine.contains(k))
        .collect();
    lab.play(run, playbook, &keys, own)
}

/// `runbook` with the world's inventory and every secret the library reads.
fn runbook(lab: &Lab) -> Run {
    let pg = &lab.info["postgres"];
    lab.runbook()
        .env("REDIS_URL", lab.info["redis"]["url"].as_str().unwrap())
        .env("PRIMARY_DATABASE_URL", pg["primary"]["app_dsn"].as_str().unwrap())
        .env("STANDBY_DATABASE_URL", pg["standby"]["app_dsn"].as_str().unwrap())
        .env("NEW_DATABASE_URL", pg["standby"]["app_dsn"].as_str().unwrap())
}

fn name(lab: &Lab, i: usize) -> String {
    lab.host(i)["name"].as_str().unwrap().to_owned()
}

fn app_url(lab: &Lab, i: usize) -> String {
    let h = lab.host(i);
    format!("https://{}:{}", h["address"].as_str().unwrap(), h["app_port"])
}

/// What host `i` serves at `path`, over https, trusting only the lab's CA;
/// None when nothing answers.
fn get(lab: &Lab, i: usize, path: &str) -> Option<String> {
    let out = std::process::Command::new("curl")
        .args(["-sS", "--max-time", "5", "--cacert"])
        .arg(lab.info["inputs"]["ca_file"].as_str().unwrap())
        .arg(format!("{}{path}", app_url(lab, i)))
        .output()
        .expect("curl (apt-get install curl)");
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The release host `i` serves, from its `/api/build`.
fn release(lab: &Lab, i: usize) -> String {
    let body = get(lab, i, "/api/build").expect("the app answers");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["build"]["release"].as_str().unwrap().to_owned()
}

fn lb_port(lab: &Lab, which: &str) -> u16 {
    lab.info["haproxy"][which].as_u64().unwrap() as u16
}

fn backend(lab: &Lab) -> String {
    lab.info["haproxy"]["backend"].as_str().unwrap().to_owned()
}

#[test]
fn deploys_and_checks_in_the_other_world() {
    let lab = Lab::alt(2); // blue: ledger-1, green (live): ledger-2
    let run = runbook(&lab);
    let (h1, h2) = (name(&lab, 0), name(&lab, 1));

    // The read-only checks.
    let url = format!("url={}", app_url(&lab, 0));
    play(&lab, &run, "health-check", &[&url]).exit(0);
    play(&lab, &run, "preflight", &[])
        .exit(0)
        .stdout_has("database: ok")
        .stdout_has("redis: ok");
    play(&lab, &run, "verify-startup", &[])
        .exit(0)
        .stdout_has("no errors in the last 1000 lines");

    // The library's defaults do not fit this world: refused before anything
    // is touched, naming what is missing.
    lab.play(&run, "rolling-deploy", &[], &["release=v2"])
        .exit(2)
        .stderr_has("`web`");
    assert!(lab.deploys(0).is_empty() && lab.deploys(1).is_empty());

    // rolling-deploy: every host serves v2 and is back in rotation.
    play(&lab, &run, "rolling-deploy", &["release=v2"]).exit(0);
    for (i, host) in [&h1, &h2].iter().enumerate() {
        assert_eq!(release(&lab, i), "v2");
        assert_eq!(lab.deploys(i), ["v2"]);
        let (admin, op, _) = lab.server_state(&backend(&lab), host);
        assert_eq!((admin, op), (0, 2), "{host} in rotation and UP");
    }
    play(&lab, &run, "app-rollback", &["to=v1"]).exit(0);
    assert_eq!([release(&lab, 0), release(&lab, 1)], ["v1", "v1"]);
    // deploy-host (the per-instance steps both run) redoes one instance by name.
    let one = format!("host={h1}");
    play(&lab, &run, "deploy-host", &[&one, "release=v2"]).exit(0);
    assert_eq!([release(&lab, 0), release(&lab, 1)], ["v2", "v1"], "only {h1}");
    play(&lab, &run, "deploy-host", &[&one, "release=v1"]).exit(0);
    assert_eq!(lab.deploys(0), ["v2", "v1", "v2", "v1"]);
    assert_eq!(lab.deploys(1), ["v2", "v1"], "only {h1}");

    // blue-green migrates only with a recent verified backup.
    let backup_dir = format!("dir={}", lab.info["inputs"]["backup_dir"].as_str().unwrap());
    play(&lab, &run, "backup", &[&backup_dir]).exit(0);
    // blue-green with the library's colours (blue live) is refused: green is
    // live here, and nothing is deployed.
    let bake = ["bake_samples=10", "bake_rate=20", "p95=1s"];
    let mut args = vec!["release=v3", "--yes"];
    args.extend(bake);
    play(&lab, &run, "blue-green", &args)
        .exit(1)
        .stdout_has("traffic goes to `green`, not `blue`");
    assert_eq!(lab.deploys(0), ["v2", "v1", "v2", "v1"], "blue untouched");
    // From the live colour to the idle one, half the users first (the world's
    // ramp backend, its servers speaking TLS): the switch is in the world's map.
    args.extend(["from=green", "to=blue", "ramp=[50]", "ramp_bake=1s"]);
    play(&lab, &run, "blue-green", &args)
        .exit(0)
        .stdout_has("haproxy colours_ramp: blue 0% -> 50% of the traffic, green the rest")
        .stdout_has("traffic: colours_ramp -> blue");
    let map = lab.info["haproxy"]["map"].as_str().unwrap();
    assert!(lab.haproxy(&format!("show map {map}")).contains("live blue"));
    let via = support::http_get("127.0.0.1", lb_port(&lab, "bluegreen_port"), "/api/build");
    assert!(via.contains("\"v3\"") && via.contains(h1.as_str()), "{via}");
    assert_eq!(release(&lab, 1), "v1", "the old colour keeps its release");

    play(&lab, &run, "cache-clear", &["--yes"])
        .exit(0)
        .stdout_has("cache: cleared");
}

#[test]
fn operations_and_incidents_in_the_other_world() {
    let lab = Lab::alt(2);
    let run = runbook(&lab);
    let hosts = [name(&lab, 0), name(&lab, 1)];
    let root = "/srv/ledger";

    play(&lab, &run, "high-error-rate", &[]).exit(0);
    play(&lab, &run, "high-latency", &[]).exit(0);
    play(&lab, &run, "db-connections-exhausted", &[]).exit(0);

    // db-rollback moves the world's database to the migration asked for.
    play(&lab, &run, "db-rollback", &["migration=0004", "--yes"]).exit(0);
    let seed = "SELECT count(*) FROM django_migrations WHERE name = '0005_seed'";
    assert_eq!(lab.psql("primary", seed), "0");

    // graceful-shutdown: no app answers, the workers are stopped, HAProxy
    // sends nothing to the instances.
    play(&lab, &run, "graceful-shutdown", &[]).exit(0);
    for (i, host) in hosts.iter().enumerate() {
        assert!(get(&lab, i, "/health/").is_none(), "{host}'s app is stopped");
        assert_eq!(lab.server_state(&backend(&lab), host).0 & 8, 8, "{host} drained");
    }
    let jobs = format!("{root}/bin/jobs status");
    assert!(lab.in_host(0, &jobs).contains("worker stopped"));
    play(&lab, &run, "startup", &[]).exit(0);
    for (i, host) in hosts.iter().enumerate() {
        assert!(get(&lab, i, "/health/ready/").unwrap().contains("\"ready\""));
        assert_eq!(lab.server_state(&backend(&lab), host).0, 0, "{host} in rotation");
    }
    assert!(lab.in_host(0, &jobs).contains("worker running"));

    // emergency-shutdown turns users away at once; startup brings them back.
    play(&lab, &run, "emergency-shutdown", &["--yes"]).exit(0);
    assert!(lab.get_via_lb("/health/").contains("503"));
    assert!(get(&lab, 0, "/health/").is_none());
    play(&lab, &run, "startup", &[]).exit(0);
    assert!(lab.get_via_lb("/health/ready/").contains("\"ready\""));

    // region-failover: the primary region (blue) is lost; the DR region
    // (green, live on the blue-green frontend here) takes over.
    lab.pg_ctl(&["stop", "primary"]);
    let dr_lb = format!("dr_lb_url={}", lab.info["inputs"]["bluegreen_url"].as_str().unwrap());
    play(
        &lab,
        &run,
        "region-failover",
        &[
            "dr_group=green",
            &dr_lb,
            "dns_name=ledger.example.test",
            "dns_target=dr.example.test",
            "--yes",
        ],
    )
    .exit(0)
    .stdout_has("ledger.example.test resolves to dr.example.test");
    assert_eq!(lab.psql("standby", "SELECT pg_is_in_recovery()"), "f");
}

#[test]
fn data_and_disaster_recovery_in_the_other_world() {
    let lab = Lab::alt(2);
    let run = runbook(&lab);
    let backups = lab.dir.path().join("backups");
    let offsite = lab.dir.path().join("offsite");
    let dir = format!("dir={}", backups.display());

    // backup and restore-test, of the world's database, through its off-site copy.
    play(&lab, &run, "backup", &[&dir])
        .exit(0)
        .stdout_has("off-site copy verified");
    let dumps: Vec<String> = std::fs::read_dir(&offsite)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|f| f.ends_with(".dump"))
        .collect();
    assert!(
        dumps.len() == 1 && dumps[0].starts_with("ledger-"),
        "one dump of `ledger` off the host: {dumps:?}"
    );
    let work = format!("dir={}/work/restore", lab.dir.path().display());
    play(&lab, &run, "restore-test", &[&work])
        .exit(0)
        .stdout_has("3 of 3 tables hold the rows of the source");

    // dr-drill fails over and back: the primary is the primary again.
    play(&lab, &run, "dr-drill", &["--yes"]).exit(0);
    assert_eq!(lab.psql("primary", "SELECT pg_is_in_recovery()"), "f");
    assert_eq!(lab.psql("standby", "SELECT pg_is_in_recovery()"), "t");

    // full-restore puts the dump back and users are served.
    let file = format!("file={}/{}", offsite.display(), dumps[0]);
    play(&lab, &run, "full-restore", &[&file, "release=v1", "--yes"]).exit(0);
    assert!(lab.get_via_lb("/health/ready/").contains("\"ready\""));
    assert_eq!(lab.psql("primary", "SELECT count(*) FROM transactions"), "5000");

    // pitr: back to the moment before a bad DELETE, from a base backup and
    // the WAL archive.
    lab.pg_ctl(&["basebackup", "primary"]);
    std::thread::sleep(std::time::Duration::from_millis(300));
    let target = lab.psql("primary", "SELECT clock_timestamp()::text");
    std::thread::sleep(std::time::Duration::from_millis(300));
    lab.psql("primary", "DELETE FROM transactions WHERE id > 100");
    play(&lab, &run, "pitr", &[&format!("target_time={target}"), "--yes"]).exit(0);
    assert_eq!(lab.psql("primary", "SELECT count(*) FROM transactions"), "5000");
    assert!(lab.get_via_lb("/health/ready/").contains("\"ready\""));

    // dr-failover: the standby is promoted and every host points at it.
    play(&lab, &run, "dr-failover", &["--yes"]).exit(0);
    assert_eq!(lab.psql("standby", "SELECT pg_is_in_recovery()"), "f");
    let standby = lab.info["postgres"]["standby"]["app_dsn"].as_str().unwrap();
    for i in 0..2 {
        let env = lab.host_file(i, "config/env");
        assert!(env.contains(&format!("DATABASE_URL={standby}")), "{env}");
    }
    assert!(lab.get_via_lb("/health/ready/").contains("\"ready\""));
}
