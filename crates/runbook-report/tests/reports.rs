//! The reports of one drill's journal, in every format: what a person reading
//! the post-mortem or a CI server reading the JUnit file sees. Built from a
//! journal written by hand, so each test reads the events it is about.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use runbook_core::model::Objectives;
use runbook_report::{Format, Report, steps};
use runbook_state::{Event, LogLine, Recorded, RunRecord, RunStatus, Stream};
use serde_json::json;

fn at(second: u32) -> String {
    format!("2026-11-28T07:00:{second:02}Z")
}

fn journal() -> (RunRecord, Vec<Recorded>, Vec<LogLine>) {
    let record = RunRecord {
        id: "01run".into(),
        playbook: "dr-drill".into(),
        version: 1,
        text: String::new(),
        hash: "abc".into(),
        calls: Default::default(),
        inputs: json!({ "cluster": "main" }),
        status: RunStatus::Failed,
        user: "ops".into(),
        created_at: at(0),
        updated_at: at(30),
        pid: None,
        submitted: false,
        worker: None,
        lease_until: None,
    };
    let events = [
        (
            0,
            Event::RunStarted {
                user: "ops".into(),
                runner: None,
            },
        ),
        (
            1,
            Event::StepStarted {
                step: "promote".into(),
                attempt: 1,
            },
        ),
        (
            4,
            Event::StepSucceeded {
                step: "promote".into(),
                attempt: 1,
                outputs: json!({ "json": { "rto_seconds": 3.5 } }),
            },
        ),
        (
            5,
            Event::StepWaiting {
                step: "approve".into(),
                message: "fail back?".into(),
                expires_at: None,
            },
        ),
        (
            9,
            Event::OperatorAction {
                action: "approve".into(),
                step: Some("approve".into()),
                who: "alice".into(),
                comment: Some("go <now> & | then".into()),
                plan_hash: None,
                covers: None,
            },
        ),
        (
            10,
            Event::StepSkipped {
                step: "notify".into(),
                reason: "`when` is false".into(),
            },
        ),
        (
            11,
            Event::StepStarted {
                step: "check".into(),
                attempt: 1,
            },
        ),
        (
            13,
            Event::StepFailed {
                step: "check".into(),
                attempt: 1,
                error: "exit 1".into(),
                will_retry: false,
            },
        ),
        (
            14,
            Event::RunFinished {
                status: RunStatus::Failed,
                error: Some("step `check` failed".into()),
            },
        ),
    ];
    let events = events
        .into_iter()
        .enumerate()
        .map(|(i, (s, event))| Recorded {
            seq: i as i64 + 1,
            at: at(s),
            event,
        })
        .collect();
    let logs = vec![LogLine {
        step: "check".into(),
        at: at(12),
        stream: Stream::Stderr,
        line: "replica <lag> & \"too\" high".into(),
    }];
    (record, events, logs)
}

fn objectives() -> Objectives {
    Objectives {
        rto: Some("1m".into()),
        rpo: Some("1h".into()),
        latency: None,
    }
}

#[test]
fn each_step_has_its_last_state_attempts_and_duration() {
    let (_, events, _) = journal();
    let rows: Vec<(String, String, u32, Option<u64>)> = steps(&events)
        .into_iter()
        .map(|r| (r.step, r.state, r.attempts, r.duration_ms))
        .collect();
    assert_eq!(
        rows,
        [
            ("promote".into(), "succeeded".into(), 1, Some(3000)),
            ("approve".into(), "waiting".into(), 0, None),
            ("notify".into(), "skipped".into(), 0, None),
            ("check".into(), "failed".into(), 1, Some(2000)),
        ]
    );
}

#[test]
fn objectives_are_judged_against_what_the_run_measured() {
    let (record, events, logs) = journal();
    let report: serde_json::Value =
        serde_json::from_str(&Report::build(&record, &events, &logs, Some(&objectives())).render(Format::Json))
            .unwrap();
    let o = &report["objectives"];
    assert_eq!(o[0]["name"], "RTO");
    assert_eq!(o[0]["measured_seconds"], 3.5);
    assert_eq!(o[0]["verdict"], "met");
    assert_eq!(o[1]["name"], "RPO");
    assert_eq!(o[1]["verdict"], "not measured", "no step reported rpo_seconds");
    assert_eq!(report["error"], "step `check` failed");
    assert_eq!(report["duration_seconds"], 14.0);
    // Without objectives, none are judged.
    let bare: serde_json::Value =
        serde_json::from_str(&Report::build(&record, &events, &logs, None).render(Format::Json)).unwrap();
    assert_eq!(bare["objectives"], json!([]));
}

#[test]
fn every_format_of_one_report() {
    let (record, events, logs) = journal();
    let report = Report::build(&record, &events, &logs, Some(&objectives()));
    insta::assert_snapshot!("junit", report.render(Format::Junit));
    insta::assert_snapshot!("markdown", report.render(Format::Markdown));
    insta::assert_snapshot!("html", report.render(Format::Html));
}

#[test]
fn formats_by_name() {
    assert_eq!("junit".parse::<Format>(), Ok(Format::Junit));
    assert_eq!("html".parse::<Format>(), Ok(Format::Html));
    assert!(
        "pdf"
            .parse::<Format>()
            .unwrap_err()
            .contains("junit, json, markdown, html")
    );
}
