//! Reports for pipelines and people: JUnit XML read back by a real JUnit
//! parser, the JSON report, and Markdown/HTML with the measured RTO and RPO
//! against the playbook's objectives.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;
use support::Run;

const PLAYBOOK: &str = r#"apiVersion: runbook/v1
name: drill
version: 1
inputs:
  rto: { type: number, default: 12.5 }
  fail: { type: boolean, default: false }
objectives: { rto: 1m, rpo: 1h }
steps:
  - { id: prepare, uses: shell, with: { run: "echo preparing" } }
  - { id: optional, uses: shell, when: "{{inputs.fail}}", with: { run: "echo never" } }
  - id: recover
    uses: shell
    with: { json: true, run: "echo '{\"rto_seconds\": {{inputs.rto}}, \"rpo_seconds\": 0}'" }
  - id: verify
    uses: shell
    with: { run: "echo 'checked <3 & done'; test {{inputs.fail}} = false || { echo 'the app did not answer' >&2; exit 1; }" }
"#;

#[test]
fn junit_is_read_back_by_a_junit_parser_with_one_case_per_step() {
    let run = Run::new().playbook("drill", PLAYBOOK);
    let ok = run.path().join("ok.xml");
    let bad = run.path().join("bad.xml");
    run.exec(["run", "drill", "--report", &format!("junit={}", ok.display())])
        .exit(0);
    run.exec([
        "run",
        "drill",
        "--set",
        "fail=true",
        "--report",
        &format!("junit={}", bad.display()),
    ])
    .exit(1);
    let ok = junit_parser::from_reader(std::io::Cursor::new(std::fs::read(&ok).unwrap())).expect("valid JUnit");
    let suite = &ok.suites[0];
    assert_eq!(suite.name, "drill v1");
    let names: Vec<&str> = suite.cases.iter().map(|c| c.name.as_str()).collect();
    // The parser names a case `classname::name`; the class is the playbook.
    assert_eq!(
        names,
        ["drill::prepare", "drill::optional", "drill::recover", "drill::verify"]
    );
    let skipped = suite.cases.iter().filter(|c| c.status.is_skipped()).count();
    assert_eq!((suite.tests, suite.failures, skipped), (4, 0, 1));
    assert!(suite.cases[1].status.is_skipped());
    assert!(suite.cases[3].status.is_success());

    let bad = junit_parser::from_reader(std::io::Cursor::new(std::fs::read(&bad).unwrap())).expect("valid JUnit");
    let suite = &bad.suites[0];
    assert_eq!(suite.failures, 1);
    let verify = suite.cases.iter().find(|c| c.name == "drill::verify").unwrap();
    assert!(verify.status.is_failure());
    let failure = verify.status.failure_as_ref();
    assert!(failure.message.contains("the app did not answer"), "{failure:?}");
    // The failure's text ends with the step's last log lines, escaped and read back.
    assert!(failure.text.contains("--- last log lines ---"), "{failure:?}");
    // Escaped in the file (the parser reads entity-split text back in pieces).
    let raw = std::fs::read_to_string(run.path().join("bad.xml")).unwrap();
    assert!(raw.contains("checked &lt;3 &amp; done"), "{raw}");
    assert!(
        failure.text.contains("checked") && failure.text.contains("done"),
        "{failure:?}"
    );
}

#[test]
fn the_json_markdown_and_html_reports_give_the_verdict_on_the_objectives() {
    let run = Run::new().playbook("drill", PLAYBOOK);
    let json = run.path().join("r.json");
    let id = run
        .exec(["run", "drill", "--report", &format!("json={}", json.display())])
        .exit(0)
        .run_id();
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(v["status"], "succeeded");
    assert_eq!(v["objectives"][0]["name"], "RTO");
    assert_eq!(v["objectives"][0]["measured_seconds"], 12.5);
    assert_eq!(v["objectives"][0]["verdict"], "met");
    assert_eq!(v["objectives"][1]["verdict"], "met");
    assert_eq!(v["steps"].as_array().unwrap().len(), 4);

    // A slower recovery misses the RTO.
    let slow = run.exec(["run", "drill", "--set", "rto=75"]).exit(0).run_id();
    run.exec(["report", &slow])
        .exit(0)
        .stdout_has("| RTO | 1m | 75.0 s | **missed** |")
        .stdout_has("| RPO | 1h | 0.0 s | **met** |")
        .stdout_has("| `verify` | succeeded | 1 |");
    // history shows each run's measured RTO: a drill's trend.
    run.exec(["history", "drill"])
        .exit(0)
        .stdout_has("TOOK    RTO  USER")
        .stdout_has("  75.0s  tester")
        .stdout_has("  12.5s  tester");
    let html = run.exec(["report", &id, "--format", "html"]).exit(0);
    let html = html.stdout_has("<td class=\"met\">met</td>");
    assert!(html.stdout.starts_with("<!doctype html>"));
    let failed = run.exec(["run", "drill", "--set", "fail=true"]).exit(1).run_id();
    run.exec(["report", &failed, "--format", "html"])
        .exit(0)
        .stdout_has("<h3>last log lines of <code>verify</code></h3><pre>")
        .stdout_has("checked &lt;3 &amp; done");
    run.exec(["run", "drill", "--report", "pdf=x.pdf"])
        .exit(2)
        .stderr_has("unknown format `pdf`");
}

#[test]
fn every_json_event_matches_the_committed_schema() {
    let schema_text = std::fs::read_to_string(support::workspace().join("schemas/events.v1.json")).unwrap();
    // The committed schema is the one the binary documents.
    let printed = Run::new().args(["schema", "--events"]).run().exit(0);
    assert_eq!(
        printed.stdout, schema_text,
        "schemas/events.v1.json is stale: run scripts/regen"
    );
    let schema: serde_json::Value = serde_json::from_str(&schema_text).unwrap();
    let validator = jsonschema::validator_for(&schema).expect("the schema compiles");
    // A run that logs, skips, fails, waits for an approval and is approved.
    let run = Run::new().playbook(
        "events",
        r#"apiVersion: runbook/v1
name: events
version: 1
steps:
  - { id: hello, uses: shell, with: { run: "echo hello; echo oops >&2" } }
  - { id: never, uses: shell, when: "{{eq 1 2}}", with: { run: "true" } }
  - { id: flaky, uses: shell, continue_on_error: true, retry: { attempts: 2, delay: 10ms }, with: { run: "exit 3" } }
  - { id: ok, uses: approve, with: { message: "go on?" } }
"#,
    );
    let first = run.exec(["run", "events", "--output", "json"]).exit(3);
    let id = first.run_id();
    let second = run.exec(["approve", &id, "--as", "alice", "--output", "json"]).exit(0);
    let mut kinds = std::collections::BTreeSet::new();
    for line in first.stdout.lines().chain(second.stdout.lines()) {
        let v: serde_json::Value = serde_json::from_str(line).expect("one JSON object per line");
        let errors: Vec<String> = validator.iter_errors(&v).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{line}: {errors:?}");
        kinds.insert(v["event"].as_str().unwrap().to_owned());
    }
    for k in [
        "run_started",
        "step_started",
        "step_succeeded",
        "step_failed",
        "step_skipped",
        "step_waiting",
        "operator_action",
        "run_resumed",
        "run_finished",
        "log",
    ] {
        assert!(kinds.contains(k), "no `{k}` event seen: {kinds:?}");
    }
    // And the schema says no to what is not an event.
    for bad in [
        r#"{"event": "step_started", "run": "r", "at": "t"}"#,
        r#"{"event": "launched", "run": "r", "at": "t"}"#,
        r#"{"event": "log", "step": "a", "at": "t", "stream": "stdin", "line": "x"}"#,
    ] {
        let v: serde_json::Value = serde_json::from_str(bad).unwrap();
        assert!(!validator.is_valid(&v), "{bad} passed");
    }
}
