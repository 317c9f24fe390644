//! Every crash point, not a sample: a run is stopped dead (`abort`) right
//! after its k-th durable write (journal append, lock take or free, runner
//! record, log batch), for every k an uninterrupted run has, then resumed as
//! an operator would. Each time the invariants hold: a step recorded
//! finished never runs again; a step in flight runs at most once more, and
//! only if it is idempotent (otherwise the run stops as uncertain and the
//! operator decides from the evidence); the `finally` step runs exactly
//! once; the run ends as an uninterrupted run does, with every step
//! recorded succeeded.
//!
//! The points come from the binary's test hook (`RUNBOOK_CRASH_AT`,
//! `RUNBOOK_CRASH_LOG`; debug builds only). This is the representative
//! subset CI runs; `bench/crash-points.sh` sweeps a larger playbook.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;
use std::collections::HashMap;
use support::Run;

/// A lock, a chain (non-idempotent, then idempotent), a fan-out of three
/// items two at a time, a last step, and a `finally` step: what each
/// marker is and whether its step is idempotent.
fn playbook(markers: &str) -> (String, HashMap<String, bool>) {
    let step = |id: &str, needs: &str, idem: bool| {
        format!(
            "  - {{ id: {id}, uses: shell, idempotent: {idem}{needs}, with: {{ run: \"echo {id} >> {markers}\" }} }}\n"
        )
    };
    let mut y = String::from("apiVersion: runbook/v1\nname: points\nversion: 1\nlock: db/primary\nsteps:\n");
    y.push_str(&step("first", "", false));
    y.push_str(&step("second", ", needs: [first]", true));
    y.push_str(&format!(
        "  - id: fan\n    needs: [second]\n    for_each: [{}]\n    concurrency: 2\n    steps:\n      - {{ id: item, uses: shell, with: {{ run: \"echo fan-{{{{item}}}} >> {markers}\" }} }}\n",
        items().join(", ")
    ));
    y.push_str(&step("last", ", needs: [fan]", false));
    y.push_str("finally:\n");
    y.push_str(&step("tidy", "", true));
    let mut expected = HashMap::new();
    for (m, idem) in [("first", false), ("second", true), ("last", false), ("tidy", true)] {
        expected.insert(m.to_owned(), idem);
    }
    for i in items() {
        expected.insert(format!("fan-{i}"), false);
    }
    (y, expected)
}

/// The fan-out's items: 3, or `RUNBOOK_CRASH_ITEMS` (bench/crash-points.sh
/// sweeps a wider fan-out).
fn items() -> Vec<String> {
    let n: usize = std::env::var("RUNBOOK_CRASH_ITEMS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(3);
    (0..n).map(|i| format!("i{i:03}")).collect()
}

/// Another playbook on the same lock.
const AFTER: &str = "apiVersion: runbook/v1\nname: after\nversion: 1\nlock: db/primary\nsteps:\n  - { id: x, uses: shell, with: { run: \"true\" } }\n";

fn counts(path: &std::path::Path) -> HashMap<String, usize> {
    let mut c = HashMap::new();
    for line in std::fs::read_to_string(path).unwrap_or_default().lines() {
        *c.entry(line.to_owned()).or_default() += 1;
    }
    c
}

/// The marker of a step path.
fn marker(step: &str) -> String {
    let step = step.strip_prefix("finally.").unwrap_or(step);
    step.strip_prefix("fan[")
        .and_then(|rest| rest.split(']').next())
        .map_or(step.to_owned(), |item| format!("fan-{item}"))
}

/// One crash at point `k`, then resumes until the run ends; the invariants.
/// What happened, in a word (for the summary).
fn crash_at(k: usize) -> &'static str {
    let run = Run::new();
    let markers = run.path().join("markers");
    let (yaml, expected) = playbook(&markers.display().to_string());
    let run = run.playbook("points", &yaml).playbook("after", AFTER);
    let k_text = k.to_string();
    let crashed = run.exec_env(&[("RUNBOOK_CRASH_AT", &k_text)], ["run", "points"]);
    // Aborted (killed by its own SIGABRT: no exit code), or, when a
    // concurrent fan-out wrote in another order, finished.
    let aborted = crashed.code == -1 && crashed.stderr.contains("crash point");
    assert!(
        aborted || crashed.code == 0,
        "point {k}: the run neither crashed nor finished: {} {}",
        crashed.code,
        crashed.stderr
    );
    let mut uncertain = false;
    let runs = run.exec(["status", "--output", "json"]);
    let listed: serde_json::Value = serde_json::from_str(&runs.stdout).unwrap();
    let Some(id) = listed[0]["id"].as_str().map(str::to_owned) else {
        // Dead before the run was recorded: nothing ran, and the lock it
        // took is the one trace, freed as `runbook locks` tells an operator to.
        assert!(
            counts(&markers).is_empty(),
            "point {k}: a step ran before its run existed"
        );
        run.exec(["unlock", "db/primary", "--force"]).exit(0);
        run.exec(["run", "points"]).exit(0);
        check(&run, &markers, &expected, k, None);
        return "before the run existed";
    };
    for _ in 0..10 {
        let status = run.exec(["status", &id, "--output", "json"]);
        let v: serde_json::Value = serde_json::from_str(&status.stdout).unwrap();
        match v["run"]["status"].as_str() {
            Some("succeeded") => {
                check(&run, &markers, &expected, k, Some(&v));
                return if uncertain {
                    "uncertain, then decided"
                } else {
                    "resumed"
                };
            }
            Some("uncertain") => {
                uncertain = true;
                let error = v["error"].as_str().unwrap_or_default();
                let step = error.split('`').nth(1).expect("uncertain names the step").to_owned();
                let m = marker(&step);
                assert!(
                    !expected[&m],
                    "point {k}: idempotent step `{step}` was reported uncertain"
                );
                // The operator looks at the evidence: did its effect happen?
                let decision = if counts(&markers).contains_key(&m) {
                    "--mark-done"
                } else {
                    "--rerun"
                };
                let out = run.exec(["resume", &id, decision, &step]);
                assert!(
                    matches!(out.code, 0 | 5),
                    "point {k}: resume {decision} {step}: {}",
                    out.stderr
                );
            }
            Some("running" | "interrupted") => {
                let out = run.exec(["resume", &id]);
                assert!(
                    matches!(out.code, 0 | 5),
                    "point {k}: resume: {} {}",
                    out.code,
                    out.stderr
                );
            }
            other => panic!("point {k}: unexpected status {other:?}\n{}", status.stdout),
        }
    }
    panic!("point {k}: the run did not finish in 10 resumes");
}

/// The invariants of a finished run.
fn check(
    run: &Run,
    markers: &std::path::Path,
    expected: &HashMap<String, bool>,
    k: usize,
    status: Option<&serde_json::Value>,
) {
    let c = counts(markers);
    assert_eq!(c.len(), expected.len(), "point {k}: markers {c:?}");
    for (m, idempotent) in expected {
        let n = c[m];
        assert!(
            n == 1 || (n == 2 && *idempotent),
            "point {k}: `{m}` ran {n} times (idempotent: {idempotent})"
        );
    }
    let owned;
    let v = match status {
        Some(v) => v,
        None => {
            let runs = run.exec(["status", "--output", "json"]);
            let listed: serde_json::Value = serde_json::from_str(&runs.stdout).unwrap();
            let id = listed[0]["id"].as_str().unwrap().to_owned();
            owned = serde_json::from_str::<serde_json::Value>(&run.exec(["status", &id, "--output", "json"]).stdout)
                .unwrap();
            &owned
        }
    };
    for step in ["first", "second", "last", "finally.tidy"]
        .into_iter()
        .map(str::to_owned)
        .chain(items().iter().map(|i| format!("fan[{i}].item")))
    {
        let row = v["steps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["step"] == step.as_str());
        assert_eq!(
            row.and_then(|r| r["state"].as_str()),
            Some("succeeded"),
            "point {k}: the journal of `{step}`"
        );
    }
    // The lock is free for the next run at once (a lease its ended run did
    // not give back, the runner dying in between, is freed, not waited out).
    let next = run.exec(["run", "after"]);
    assert_eq!(next.code, 0, "point {k}: the next run on the lock: {}", next.stderr);
}

#[test]
fn a_crash_after_any_durable_write_resumes_to_the_same_end() {
    // How many points an uninterrupted run has, and which.
    let probe = Run::new();
    let log = probe.path().join("points.log");
    let (yaml, _) = playbook(&probe.path().join("markers").display().to_string());
    let probe = probe.playbook("points", &yaml);
    let log_text = log.display().to_string();
    probe
        .exec_env(&[("RUNBOOK_CRASH_LOG", &log_text)], ["run", "points"])
        .exit(0);
    let points: Vec<String> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    assert!(points.len() >= 10, "{points:?}");
    let mut outcomes: HashMap<&str, usize> = HashMap::new();
    for k in 1..=points.len() {
        *outcomes.entry(crash_at(k)).or_default() += 1;
    }
    eprintln!(
        "{} crash points, every one resumed to the same end, violations 0: {outcomes:?}",
        points.len()
    );
    eprintln!("the points: {points:#?}");
}
