//! `http-check` against a real HTTP server (the lab app, on loopback): checks
//! that pass and fail as they should, with errors that say what happened, and
//! latency sampling that reports plausible percentiles and gates on the SLO.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;
use support::{App, Run};

const HEAD: &str = "apiVersion: runbook/v1\nname: t\nversion: 1\n";

fn check(with: &str) -> String {
    format!(
        "{HEAD}steps:\n  - id: c\n    uses: http-check\n    with: {with}\n  - {{ id: show, uses: shell, with: {{ run: \"echo status={{{{steps.c.outputs.status}}}}\" }} }}\n"
    )
}

fn outputs(run: &Run, id: &str) -> serde_json::Value {
    run.exec(["run", "t", "--output", "json"]).outputs_of(id)
}

#[test]
fn the_runbook_health_check_passes_and_outputs_flow() {
    let app = App::start();
    let yaml = check(&format!(
        "{{ url: \"{}\", expect: {{ status: 200, json: {{ status: healthy }}, headers: {{ x-release: \"^v7$\" }} }} }}",
        app.url("/health/")
    ));
    let run = Run::new().playbook("t", &yaml);
    run.exec(["run", "t"]).exit(0).stdout_has("show │ status=200");
    let o = outputs(&run, "c");
    assert_eq!(o["json"]["status"], "healthy");
    assert_eq!(o["headers"]["x-release"], "v7");
    assert!(o["latency_ms"].as_f64().is_some_and(|l| l > 0.0 && l < 5000.0), "{o}");
}

#[test]
fn failures_say_what_happened() {
    let app = App::start();
    let cases = [
        (
            format!("{{ url: \"{}\" }}", app.url("/status/503")),
            "expected status 2xx, got 503",
        ),
        (
            format!(
                "{{ url: \"{}\", expect: {{ json: {{ status: ready }} }} }}",
                app.url("/health/")
            ),
            "JSON at `status` is \"healthy\", expected \"ready\"",
        ),
        (
            format!(
                "{{ url: \"{}\", expect: {{ body: \"degraded\" }} }}",
                app.url("/health/")
            ),
            "body does not match /degraded/",
        ),
        (
            format!("{{ url: \"{}\", timeout: 200ms }}", app.url("/slow/2000")),
            "timed out after 200ms",
        ),
        (
            "{ url: \"http://127.0.0.1:9/health/\" }".to_owned(),
            "connection refused (is the service running",
        ),
    ];
    for (with, message) in cases {
        Run::new()
            .playbook("t", &check(&with))
            .exec(["run", "t"])
            .exit(1)
            .stdout_has(message);
    }
}

#[test]
fn post_with_a_json_body() {
    let app = App::start();
    let yaml = check(&format!(
        "{{ url: \"{}\", method: POST, json: {{ release: v9 }}, expect: {{ json: {{ method: POST, content_type: application/json }} }} }}",
        app.url("/deploy")
    ));
    let run = Run::new().playbook("t", &yaml);
    run.exec(["run", "t"]).exit(0);
    assert_eq!(outputs(&run, "c")["json"]["body"], "{\"release\":\"v9\"}");
    // A POST changes things: `plan` says so.
    run.exec(["plan", "t"]).exit(0).stdout_has("c     write    http-check");
}

#[test]
fn latency_sampling_reports_plausible_percentiles_and_gates() {
    let app = App::start();
    // 20 requests to an endpoint that takes 40 ms: every percentile is about 40 ms.
    let yaml = check(&format!(
        "{{ url: \"{}\", samples: 20, slo: {{ p50: 1s, p95: 2s }} }}",
        app.url("/slow/40")
    ));
    let run = Run::new().playbook("t", &yaml);
    let o = outputs(&run, "c");
    assert_eq!(o["samples"], 20);
    assert_eq!(o["errors"], 0);
    for p in ["p50_ms", "p95_ms", "p99_ms", "max_ms"] {
        let v = o[p].as_f64().unwrap_or(0.0);
        assert!((39.0..1500.0).contains(&v), "{p} = {v} ms for a 40 ms endpoint: {o}");
    }
    assert!(o["p50_ms"].as_f64() <= o["p99_ms"].as_f64());
    // A limit below the endpoint's own latency fails, naming the percentile.
    let tight = check(&format!(
        "{{ url: \"{}\", samples: 5, slo: {{ p95: 10ms }} }}",
        app.url("/slow/40")
    ));
    Run::new()
        .playbook("t", &tight)
        .exec(["run", "t"])
        .exit(1)
        .stdout_has("latency SLO missed over 5 requests: p95");
}

#[test]
fn error_rate_gate() {
    let app = App::start();
    // /flaky/ fails every other request.
    let loose = check(&format!(
        "{{ url: \"{}\", samples: 10, slo: {{ max_error_rate: 0.6 }} }}",
        app.url("/flaky/")
    ));
    let run = Run::new().playbook("t", &loose);
    let o = outputs(&run, "c");
    assert_eq!(o["errors"], 5);
    assert_eq!(o["error_rate"], 0.5);
    let strict = check(&format!(
        "{{ url: \"{}\", samples: 10, slo: {{ max_error_rate: 0.1 }} }}",
        app.url("/flaky/")
    ));
    Run::new()
        .playbook("t", &strict)
        .exec(["run", "t"])
        .exit(1)
        .stdout_has("5 of 10 requests failed (error rate 0.500, allowed 0.1)");
}

#[test]
fn a_wait_on_http_until_ready() {
    let app = App::start();
    let yaml = format!(
        "{HEAD}steps:\n  - id: ready\n    uses: wait\n    with:\n      check: {{ uses: http-check, with: {{ url: \"{}\", expect: {{ json: {{ status: ready }} }} }} }}\n      interval: 50ms\n      timeout: 5s\n",
        app.url("/health/ready/")
    );
    Run::new()
        .playbook("t", &yaml)
        .exec(["run", "t"])
        .exit(0)
        .stdout_has("✓ ready");
}
