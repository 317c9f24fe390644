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
    let bad = lab.dir.path().join("artifacts/v2");
    std::fs::create_dir_all(&bad).unwrap();
    std::fs::write(bad.join("ERROR_RATE"), "0.2").unwrap();
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
