//! Metric gates (the `prometheus` kind) against the lab's real Prometheus,
//! which scrapes HAProxy's built-in exporter every second, under load through
//! HAProxy: a release that fails a fifth of its users is failed by its
//! metrics while its health checks pass, a good one passes, and no data or a
//! metrics server that is down is inconclusive (a pause), never a verdict on
//! the release (book/src/progressive.md).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;
use support::{Lab, Load, Run, status_json};

/// The ratio of 5xx answers of one server of backend `app` over the last 5 s.
fn error_ratio(server: &str) -> String {
    format!(
        "sum(rate(haproxy_server_http_responses_total{{proxy=\"app\",server=\"{server}\",code=\"5xx\"}}[5s])) / \
         sum(rate(haproxy_server_http_responses_total{{proxy=\"app\",server=\"{server}\"}}[5s]))"
    )
}

/// A playbook of one `prometheus` step comparing web1 (the canary) with
/// web2 (the baseline); `extra` adds fields to its `with:`.
fn gate(extra: &str) -> String {
    format!(
        "apiVersion: runbook/v1\nname: gate\nversion: 1\ninputs:\n  prom: {{ type: string }}\nsteps:\n  - id: canary\n    uses: prometheus\n    with:\n      url: \"{{{{inputs.prom}}}}\"\n      query: '{canary}'\n      compare: {{ baseline: '{baseline}', max_increase: 0.05 }}\n      min_samples: 1\n{extra}",
        canary = error_ratio("web1"),
        baseline = error_ratio("web2"),
    )
}

/// Makes the lab's release `release` with `file` saying `text` (`ERROR_RATE`,
/// `SLOW_MS`): what a deploy of it installs.
fn artifact(lab: &Lab, release: &str, file: &str, text: &str) {
    let dir = lab.dir.path().join("artifacts").join(release);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(file), text).unwrap();
}

/// Puts `release` on host `i` (from the lab's artifacts) and restarts its app.
fn deploy(lab: &Lab, i: usize, release: &str) {
    lab.in_host(i, &format!("/srv/app/bin/deploy {release} && /srv/app/bin/app restart"));
}

#[test]
fn a_release_that_fails_users_is_failed_by_its_metrics_and_no_data_is_a_pause() {
    let lab = Lab::start_with(&["--hosts", "2", "--prometheus"]);
    let prom = lab.info["prometheus"]["url"].as_str().unwrap().to_owned();
    let lb = u16::try_from(lab.info["haproxy"]["port"].as_u64().unwrap()).unwrap();
    // v2 answers 500 to one request in five and passes every health check.
    artifact(&lab, "v2", "ERROR_RATE", "0.2");
    deploy(&lab, 0, "v2");
    assert!(
        lab.get(0, "/health/ready/").contains("ready"),
        "the bad release is healthy"
    );
    let load = Load::start(lb, "/api/accounts", 4);
    let run = Run::new().playbook(
        "gate",
        &gate("      count: 3\n      interval: 1s\n      initial_delay: 6s\n"),
    );
    let out = run.exec(["run", "gate", "--set", &format!("prom={prom}")]).exit(1);
    let out = out
        .stdout_has("measurement 1/3: failure: canary 0.")
        .stdout_has("more than max_increase 0.05");
    let v = status_json(&run, &out.run_id());
    let step = &v["steps"][0];
    assert_eq!(step["state"], "failed", "{v:#}");
    // `plan --live` takes one measurement now, changing nothing.
    run.exec(["plan", "gate", "--live", "--set", &format!("prom={prom}")])
        .exit(0)
        .stdout_has("live: now: failure: canary 0.");
    // The failed requests were the canary's: about a fifth of its half.
    let count = load.stop();
    println!("under load: {count:?}");
    assert!(count.http_errors > 0 && count.connection_errors == 0, "{count:?}");
    let share = count.http_errors as f64 / (count.ok + count.http_errors) as f64;
    assert!(
        (0.05..=0.15).contains(&share),
        "a tenth of all requests failed, not {share:.3}"
    );

    // A good release on the canary: the same gate passes once the window
    // holds only its requests.
    deploy(&lab, 0, "v3");
    let load = Load::start(lb, "/api/accounts", 4);
    let out = run.exec(["run", "gate", "--set", &format!("prom={prom}")]).exit(0);
    out.stdout_has("measurement 3/3: success: canary 0.000000 against baseline 0.000000");
    let count = load.stop();
    assert_eq!((count.http_errors, count.connection_errors), (0, 0), "{count:?}");

    // A query that matches no series (a label that is not there: `web9`) is
    // no data, inconclusive; the run waits for a person, who lets it go on.
    let quiet = Run::new().playbook(
        "gate",
        &gate("      count: 2\n      interval: 200ms\n").replace("server=\"web1\"", "server=\"web9\""),
    );
    let waiting = quiet.exec(["run", "gate", "--set", &format!("prom={prom}")]).exit(3);
    let waiting = waiting
        .stdout_has("measurement 1/2: inconclusive: no data for the canary or the baseline")
        .stdout_has("the analysis is inconclusive");
    let id = waiting.run_id();
    quiet.exec(["approve", &id, "--comment", "quiet hour"]).exit(0);
    let v = status_json(&quiet, &id);
    assert_eq!(v["run"]["status"], "succeeded", "{v:#}");
}

#[test]
fn a_metrics_server_that_is_down_is_inconclusive_never_a_failure() {
    // Nothing listens there: every query fails to connect.
    let port = support::free_port();
    let run = Run::new().playbook(
        "gate",
        &gate("      count: 10\n      interval: 100ms\n      consecutive_error_limit: 2\n"),
    );
    let out = run
        .exec(["run", "gate", "--set", &format!("prom=http://127.0.0.1:{port}")])
        .exit(3);
    out.stdout_has("measurement 1/10: error:")
        .stdout_has("cannot connect (is Prometheus up?)")
        .stdout_has("3 queries in a row failed (consecutive_error_limit 2)")
        .stdout_lacks("measurement 4/10");
    // Told to fail instead of waiting, it fails, saying the same.
    let fail = Run::new().playbook(
        "gate",
        &gate("      count: 3\n      interval: 50ms\n      consecutive_error_limit: 0\n      on_inconclusive: fail\n"),
    );
    fail.exec(["run", "gate", "--set", &format!("prom=http://127.0.0.1:{port}")])
        .exit(1)
        .stdout_has("inconclusive: 1 queries in a row failed");
    // `--yes` approves dangerous steps, not an analysis that says nothing.
    let yes = Run::new().playbook("gate", &gate("      consecutive_error_limit: 0\n"));
    yes.exec([
        "run",
        "gate",
        "--yes",
        "--set",
        &format!("prom=http://127.0.0.1:{port}"),
    ])
    .exit(3);
}

/// What rolling-deploy needs of the lab, its Prometheus included.
/// A ramp of a canary then the rest, each judged after a short bake; every
/// instance put back when one fails. The bake is as long as the analysis
/// window, so that the window holds only the new release's requests (not the
/// last ones of the release before, on a run right after another); a 5 s
/// window on a loaded test machine may hold fewer than the default 20
/// requests per instance.
const RAMP: [&str; 7] = [
    "batches=[1, 100%]",
    "bake=5s",
    "analysis_window=5s",
    "analysis_count=2",
    "analysis_interval=1s",
    "analysis_min_requests=5",
    "roll_back=all",
];

const ROLLING: &[&str] = &[
    "lb_socket",
    "app_port",
    "deploy_cmd",
    "restart_cmd",
    "rollback_cmd",
    "prometheus_url",
];

#[test]
fn a_ramp_stops_a_bad_release_at_its_canary_rolls_back_and_lets_a_good_one_through() {
    let lab = Lab::start_with(&["--hosts", "3", "--prometheus"]);
    let lb = u16::try_from(lab.info["haproxy"]["port"].as_u64().unwrap()).unwrap();
    // v2 fails one request in five and passes every health check; v3 is good.
    artifact(&lab, "v2", "ERROR_RATE", "0.2");
    let ramp = RAMP;
    let run = lab.runbook();
    let load = Load::start(lb, "/api/accounts", 4);
    let mut sets = vec!["release=v2"];
    sets.extend(ramp);
    let out = lab.play(&run, "rolling-deploy", ROLLING, &sets).exit(1);
    let count = load.stop();
    let out = out
        .stdout_has("roll[web1].analysis │ measurement 1/2: failure: canary 0.")
        .stdout_has("✓ roll[web1].on_failure.rollback");
    // Stopped at the canary: web1 put back, the others never touched, the
    // fleet on v1.
    assert_eq!(lab.versions(3), ["v1", "v1", "v1"], "{}", out.stdout);
    assert_eq!(lab.deploys(0), ["v2", "v1"]);
    assert!(lab.deploys(1).is_empty() && lab.deploys(2).is_empty());
    // What users saw: only the canary's share of the traffic, while it ran
    // the bad release, failed (a full rollout would fail a fifth of it all).
    let total = count.ok + count.http_errors;
    let share = count.http_errors as f64 / total as f64;
    println!(
        "bad release stopped at the canary: {} of {total} requests failed ({:.2}%)",
        count.http_errors,
        share * 100.0
    );
    assert!(count.http_errors > 0 && count.connection_errors == 0, "{count:?}");
    assert!(
        share < 0.2 / 3.0 + 0.02,
        "more failed than the canary could cause: {share:.3}"
    );

    // A good release goes through every batch, each judged.
    let load = Load::start(lb, "/api/accounts", 4);
    let mut sets = vec!["release=v3"];
    sets.extend(ramp);
    let out = lab.play(&run, "rolling-deploy", ROLLING, &sets).exit(0);
    let count = load.stop();
    for host in ["web1", "web2", "web3"] {
        assert!(
            out.stdout.contains(&format!("✓ roll[{host}].analysis")),
            "{host} judged:\n{}",
            out.stdout
        );
    }
    assert_eq!(lab.versions(3), ["v3", "v3", "v3"]);
    assert_eq!((count.http_errors, count.connection_errors), (0, 0), "{count:?}");

    // v4 is bad on web3 only: the canary and web2 pass, web3 fails its
    // analysis; every batch already done is put back, newest first.
    artifact(&lab, "v4", "ERROR_RATE", "0.2 web3");
    let load = Load::start(lb, "/api/accounts", 4);
    let mut sets = vec!["release=v4"];
    sets.extend(ramp);
    let out = lab.play(&run, "rolling-deploy", ROLLING, &sets).exit(1);
    load.stop();
    let out = out.stdout_has("roll[web3].analysis │ measurement 1/2: failure:");
    assert_eq!(lab.versions(3), ["v3", "v3", "v3"], "{}", out.stdout);
    for i in 0..3 {
        let d = lab.deploys(i);
        assert_eq!(d[d.len() - 2..], ["v4", "v3"], "host {i}: deployed, then put back");
    }
    let undone = |host: &str| {
        out.stdout
            .find(&format!("✓ roll[{host}].undo.back"))
            .unwrap_or(usize::MAX)
    };
    assert!(
        undone("web2") < undone("web1") && undone("web1") < usize::MAX,
        "{}",
        out.stdout
    );

    // v5 is bad on both instances of the last batch. Each is compared with
    // the instances outside its batch (web1), not with its batch mate: about
    // 0.2 against 0, not against a baseline of about 0.1 that a tolerance of
    // 0.15 would let through.
    artifact(&lab, "v5", "ERROR_RATE", "0.2 web2 web3");
    let load = Load::start(lb, "/api/accounts", 4);
    let mut sets = vec!["release=v5", "max_error_increase=0.15"];
    sets.extend(ramp);
    let out = lab.play(&run, "rolling-deploy", ROLLING, &sets).exit(1);
    load.stop();
    let out = out
        .stdout_has("✓ roll[web1].analysis")
        .stdout_has("against baseline 0.000000 (difference +0.")
        .stdout_has("more than max_increase 0.15");
    assert_eq!(lab.versions(3), ["v3", "v3", "v3"], "{}", out.stdout);
}

#[test]
fn a_flapping_threshold_shows_up_in_backtest() {
    let lab = Lab::start_with(&["--hosts", "2", "--prometheus"]);
    let prom = lab.info["prometheus"]["url"].as_str().unwrap().to_owned();
    let lb = u16::try_from(lab.info["haproxy"]["port"].as_u64().unwrap()).unwrap();
    artifact(&lab, "v2", "ERROR_RATE", "0.2");
    // The canary goes bad and good again, three times, under load.
    let load = Load::start(lb, "/api/accounts", 4);
    for release in ["v2", "v3", "v2", "v3", "v2", "v3"] {
        deploy(&lab, 0, release);
        std::thread::sleep(std::time::Duration::from_secs(4));
    }
    load.stop();
    let run = Run::new().playbook("gate", &gate(""));
    let backtest = |extra: &[&str]| {
        let mut args = vec![
            "gate", "backtest", "gate", "--step", "canary", "--since", "40s", "--every", "1s",
        ];
        args.extend(extra);
        let prom = format!("prom={prom}");
        args.extend(["--set", &prom, "--output", "json"]);
        let out = run.exec(&args).exit(0);
        serde_json::from_str::<serde_json::Value>(&out.stdout).unwrap()
    };
    let b = backtest(&[]);
    let fired = b["fired"].as_array().unwrap().len();
    println!(
        "backtest over 40 s: {} success, {} failure, {} inconclusive, {} flips, fired {fired} times",
        b["successes"], b["failures"], b["inconclusive"], b["flips"]
    );
    assert!(fired >= 2, "the gate fires once per bad stretch: {b:#}");
    assert!(b["flips"].as_u64().unwrap() >= 3, "{b:#}");
    assert!(b["successes"].as_u64().unwrap() > 0, "{b:#}");
    // The text says the same, for a person.
    let prom_set = format!("prom={prom}");
    run.exec([
        "gate", "backtest", "gate", "--step", "canary", "--since", "40s", "--every", "1s", "--set", &prom_set,
    ])
    .exit(0)
    .stdout_has(&format!("it would have fired {fired} time(s):"));
    // A step that is not a gate, or a window too fine, is refused.
    run.exec(["gate", "backtest", "gate", "--step", "canray", "--set", &prom_set])
        .exit(2)
        .stderr_has("no `prometheus` step `canray` in `gate`")
        .stderr_has("did you mean `canary`?");
    run.exec([
        "gate", "backtest", "gate", "--step", "canary", "--since", "30d", "--every", "1s", "--set", &prom_set,
    ])
    .exit(2)
    .stderr_has("at most 11000 points");
}

#[test]
fn without_prometheus_a_ramp_is_judged_by_sampling_each_instance_against_its_objectives() {
    let lab = Lab::start_with(&["--hosts", "2"]);
    artifact(&lab, "v2", "ERROR_RATE", "0.2");
    let run = lab.runbook();
    let keys = ["lb_socket", "app_port", "deploy_cmd", "restart_cmd", "rollback_cmd"];
    let slo = [
        "batches=[1, 100%]",
        "slo_path=/api/accounts",
        "slo_samples=20",
        "slo_max_error_rate=0.05",
        "roll_back=all",
    ];
    let mut sets = vec!["release=v2"];
    sets.extend(slo);
    let out = lab.play(&run, "rolling-deploy", &keys, &sets).exit(1);
    let out = out.stdout_has("✗ roll[web1].slo");
    assert_eq!(lab.versions(2), ["v1", "v1"], "{}", out.stdout);
    assert!(lab.deploys(1).is_empty(), "web2 untouched");
    let mut sets = vec!["release=v3"];
    sets.extend(slo);
    lab.play(&run, "rolling-deploy", &keys, &sets)
        .exit(0)
        .stdout_has("✓ roll[web2].slo");
    assert_eq!(lab.versions(2), ["v3", "v3"]);
    // v4 fails nothing and answers 300 ms later: its p95 stops it at the
    // canary.
    artifact(&lab, "v4", "SLOW_MS", "300");
    let mut sets = vec!["release=v4", "slo_p95=200ms"];
    sets.extend(slo);
    lab.play(&run, "rolling-deploy", &keys, &sets)
        .exit(1)
        .stdout_has("✗ roll[web1].slo")
        .stdout_has("p95");
    assert_eq!(lab.versions(2), ["v3", "v3"]);
    // A metrics server that does not answer: the canary's analysis is
    // inconclusive and the ramp waits for a person, never rolls on.
    let down = format!("prometheus_url=http://127.0.0.1:{}", support::free_port());
    let waits = lab
        .play(
            &run,
            "rolling-deploy",
            &keys,
            // No bake: the analysis first waits one window (2 s here).
            &[
                "release=v5",
                "batches=[1, 100%]",
                &down,
                "analysis_window=2s",
                "analysis_interval=100ms",
            ],
        )
        .exit(3);
    let waits = waits.stdout_has("roll[web1].analysis waits for an approval: the analysis is inconclusive");
    assert_eq!(lab.versions(2), ["v5", "v3"], "the canary only: {}", waits.stdout);
    run.exec(["cancel", &waits.run_id()]).exit(0);
}

/// The p95 latency of one host's /api/ requests over the last 5 s, from the
/// app's own histogram.
fn p95(host: &str) -> String {
    format!("histogram_quantile(0.95, sum by (le) (rate(http_request_duration_seconds_bucket{{host=\"{host}\"}}[5s])))")
}

#[test]
fn a_slower_canary_is_failed_by_its_latency_quantile_against_the_baseline() {
    let lab = Lab::start_with(&["--hosts", "2", "--prometheus"]);
    let prom = lab.info["prometheus"]["url"].as_str().unwrap().to_owned();
    let lb = u16::try_from(lab.info["haproxy"]["port"].as_u64().unwrap()).unwrap();
    artifact(&lab, "v2", "SLOW_MS", "300");
    deploy(&lab, 0, "v2");
    let load = Load::start(lb, "/api/accounts", 4);
    let yaml = format!(
        "apiVersion: runbook/v1\nname: gate\nversion: 1\ninputs:\n  prom: {{ type: string }}\nsteps:\n  - id: p95\n    uses: prometheus\n    with:\n      url: \"{{{{inputs.prom}}}}\"\n      query: '{canary}'\n      compare: {{ baseline: '{baseline}', max_increase: 0.1 }}\n      initial_delay: 6s\n      count: 20\n      interval: 1s\n      inconclusive_limit: 18\n",
        canary = p95("web1"),
        baseline = p95("web2"),
    );
    let run = Run::new().playbook("gate", &yaml);
    let out = run.exec(["run", "gate", "--set", &format!("prom={prom}")]).exit(1);
    load.stop();
    // Until Prometheus has two scrapes of the restarted canary its rate is
    // no data (inconclusive, tolerated here, generously: a loaded machine
    // scrapes late); then its p95 fails it at its first measurement.
    out.stdout_has(": failure: canary 0.")
        .stdout_has("more than max_increase 0.1");

    // The library does the same with `latency_metric`: a ramp stops the slow
    // release at its canary by its p95 (the series named by Prometheus's own
    // `instance` label, address and port), though it fails no request.
    deploy(&lab, 0, "v1");
    let run = lab.runbook();
    let load = Load::start(lb, "/api/accounts", 4);
    // The bake gives Prometheus time for two scrapes of the restarted
    // canary's histogram (its rate), with room for a loaded machine.
    let sets = [
        "release=v2",
        "batches=[1, 100%]",
        "bake=8s",
        "analysis_window=5s",
        "analysis_count=2",
        "analysis_interval=1s",
        "analysis_min_requests=5",
        "latency_metric=http_request_duration_seconds",
        "latency_selector=job=\"app\"",
    ];
    let out = lab.play(&run, "rolling-deploy", ROLLING, &sets).exit(1);
    load.stop();
    let out = out
        .stdout_has("✓ roll[web1].analysis")
        .stdout_has("roll[web1].latency │ measurement 1/2: failure: canary 0.")
        .stdout_has("✓ roll[web1].on_failure.rollback");
    assert_eq!(lab.versions(2), ["v1", "v1"], "{}", out.stdout);
    assert!(lab.deploys(1).is_empty(), "web2 untouched");
}

/// blue-green's inputs that point it at the lab, with its ramp backend and
/// Prometheus.
fn blue_green_keys() -> Vec<&'static str> {
    [support::BLUE_GREEN, &["ramp_backend", "prometheus_url"]].concat()
}

#[test]
fn a_blue_green_ramp_stops_a_bad_release_at_its_first_share_and_lets_a_good_one_through() {
    // blue: web1, web2 (live); green: web3, web4.
    let lab = Lab::start_with(&["--hosts", "4", "--stack", "--prometheus"]);
    let bg = u16::try_from(lab.info["haproxy"]["bluegreen_port"].as_u64().unwrap()).unwrap();
    let map = lab.info["haproxy"]["map"].as_str().unwrap().to_owned();
    let run = lab.runbook();
    let bg_keys = blue_green_keys();
    lab.verified_backup(&run);
    artifact(&lab, "v2", "ERROR_RATE", "0.2");
    let ramp = [
        "ramp=[10, 50]",
        "ramp_bake=3s",
        "analysis_window=5s",
        "analysis_min_requests=5",
        "analysis_count=2",
        "analysis_interval=1s",
        "bake_samples=10",
        "bake_rate=20",
        "p95=1s",
        "--yes",
    ];
    // A ramp without a backend to split users in is refused before anything
    // changes.
    let mut sets = vec!["release=v2"];
    sets.extend(ramp);
    let keys: Vec<&str> = bg_keys.iter().copied().filter(|k| *k != "ramp_backend").collect();
    lab.play(&run, "blue-green", &keys, &sets)
        .exit(1)
        .stdout_has("✗ ramp-ready")
        .stdout_has("haproxy `split` needs `backend`");
    let green_untouched = || {
        assert!(
            lab.deploys(2).is_empty() && lab.deploys(3).is_empty(),
            "green untouched"
        )
    };
    green_untouched();
    // So is a share beyond 100, before anything runs.
    let mut wrong = vec!["release=v2", "ramp=[10, 150]"];
    wrong.extend(&ramp[1..]);
    lab.play(&run, "blue-green", &bg_keys, &wrong)
        .exit(2)
        .stderr_has("`ramp[150].shift`, `with.share`: 150 is greater than the maximum of 100");
    green_untouched();

    let load = Load::start(bg, "/api/accounts", 4);
    let out = lab.play(&run, "blue-green", &bg_keys, &sets).exit(1);
    let count = load.stop();
    // Judged at its first share and sent back: every user on blue again.
    let out = out
        .stdout_has("ramp[10].analysis │ measurement 1/2: failure: canary 0.")
        .stdout_has("✓ enter-ramp.undo.leave-ramp")
        .stdout_lacks("ramp[50]");
    assert!(
        lab.haproxy(&format!("show map {map}")).contains("active blue"),
        "{}",
        out.stdout
    );
    assert_eq!(
        lab.versions(4),
        ["v1", "v1", "v2", "v2"],
        "green keeps the release, idle"
    );
    // What users saw: only the tenth of the traffic green had failed, a fifth
    // of it (a switch at once would have failed a fifth of everything).
    let total = count.ok + count.http_errors;
    let share = count.http_errors as f64 / total as f64;
    println!(
        "bad release stopped at a 10% share: {} of {total} requests failed ({:.2}%)",
        count.http_errors,
        share * 100.0
    );
    assert!(count.http_errors > 0 && count.connection_errors == 0, "{count:?}");
    assert!(
        share < 0.2 * 0.1 + 0.02,
        "more failed than a 10% share could cause: {share:.3}"
    );

    // A good release goes through every share, each judged, then takes all users.
    let load = Load::start(bg, "/api/accounts", 4);
    let mut sets = vec!["release=v3"];
    sets.extend(ramp);
    let out = lab.play(&run, "blue-green", &bg_keys, &sets).exit(0);
    let count = load.stop();
    let out = out
        .stdout_has("✓ ramp[10].analysis")
        .stdout_has("✓ ramp[50].analysis")
        .stdout_has("-> 50% of the traffic, blue the rest");
    assert!(
        lab.haproxy(&format!("show map {map}")).contains("active green"),
        "{}",
        out.stdout
    );
    assert!(support::http_get("127.0.0.1", bg, "/version/").contains("\"v3\""));
    assert_eq!((count.http_errors, count.connection_errors), (0, 0), "{count:?}");

    // Back the other way, green live now: a share that serves fewer requests
    // than the analysis needs is no data, not a verdict. The ramp waits at
    // its share; rejecting it sends every user back to green.
    let load = Load::start(bg, "/api/accounts", 4);
    let mut sets = vec!["release=v4", "from=green", "to=blue"];
    sets.extend(&ramp[1..]);
    sets.extend(["ramp=[10]", "analysis_min_requests=1000000"]);
    let waits = lab.play(&run, "blue-green", &bg_keys, &sets).exit(3);
    let waits = waits
        .stdout_has("ramp[10].analysis │ measurement 1/2: inconclusive: no data")
        .stdout_has("ramp[10].analysis waits for an approval");
    assert!(
        lab.haproxy(&format!("show map {map}")).contains("active ramp"),
        "{}",
        waits.stdout
    );
    run.exec(["reject", &waits.run_id()])
        .exit(1)
        .stdout_has("✓ enter-ramp.undo.leave-ramp");
    let count = load.stop();
    assert!(lab.haproxy(&format!("show map {map}")).contains("active green"));
    assert_eq!((count.http_errors, count.connection_errors), (0, 0), "{count:?}");
}

#[test]
fn in_the_other_world_prometheus_wants_tls_and_a_password_read_from_its_client_file() {
    // alt: names of its own, the app on https, and a Prometheus that wants
    // TLS (the lab's CA) and basic auth, kept in DIR/prometheus-client.yml.
    let lab = Lab::start_with(&["--hosts", "2", "--prometheus", "--flavor", "alt"]);
    let prom = lab.info["prometheus"]["url"].as_str().unwrap().to_owned();
    assert!(prom.starts_with("https://"), "{prom}");
    let lb = u16::try_from(lab.info["haproxy"]["port"].as_u64().unwrap()).unwrap();
    let dir = lab.dir.path().to_owned();

    // The kind alone: an Authorization header from a secret and the CA.
    let password = std::fs::read_to_string(dir.join("prometheus.password")).unwrap();
    let token = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(format!("runbook:{}", password.trim()))
    };
    let yaml = format!(
        "apiVersion: runbook/v1\nname: up\nversion: 1\nsecrets: [PROM_AUTH]\nsteps:\n  - id: up\n    uses: prometheus\n    with:\n      url: \"{prom}\"\n      query: 'up{{job=\"haproxy\"}}'\n      min: 1\n      headers: {{ Authorization: \"Basic {{{{secrets.PROM_AUTH}}}}\" }}\n      tls: {{ ca_file: \"{}\" }}\n",
        dir.join("tls/ca.crt").display()
    );
    let run = Run::new().playbook("up", &yaml).env("PROM_AUTH", &token);
    let out = run
        .exec(["run", "up"])
        .exit(0)
        .stdout_has("measurement 1/1: success: 1");
    support::assert_absent(&out.stdout, &[&token]);

    // The library, given only the file: a bad release fails its analysis
    // and is put back.
    artifact(&lab, "v2", "ERROR_RATE", "0.2");
    let keys = [
        "lb_socket",
        "app_port",
        "deploy_cmd",
        "restart_cmd",
        "rollback_cmd",
        "group",
        "backend",
        "version_path",
        "version_field",
        "app_scheme",
        "ca_file",
        "prometheus_url",
        "prometheus_http_config",
    ];
    let ramp = RAMP;
    let run = lab.runbook();
    let load = Load::start(lb, "/api/accounts", 4);
    let mut sets = vec!["release=v2"];
    sets.extend(ramp);
    let out = lab.play(&run, "rolling-deploy", &keys, &sets).exit(1);
    load.stop();
    let first = lab.host(0)["name"].as_str().unwrap().to_owned();
    out.stdout_has(&format!("roll[{first}].analysis │ measurement 1/2: failure: canary 0."))
        .stdout_has(&format!("✓ roll[{first}].on_failure.rollback"));
    assert!(lab.deploys(1).is_empty(), "the second instance untouched");

    // Without the file, Prometheus cannot be asked: inconclusive, and the
    // ramp waits after its canary, saying why.
    let keys: Vec<&str> = keys
        .iter()
        .copied()
        .filter(|k| *k != "prometheus_http_config")
        .collect();
    let mut sets = vec!["release=v3"];
    sets.extend(ramp);
    let waits = lab.play(&run, "rolling-deploy", &keys, &sets).exit(3);
    let waits = waits
        .stdout_has("TLS: invalid peer certificate")
        .stdout_has(&format!("roll[{first}].analysis waits for an approval"));
    assert!(lab.deploys(1).is_empty(), "{}", waits.stdout);
    run.exec(["cancel", &waits.run_id()]).exit(0);
}
