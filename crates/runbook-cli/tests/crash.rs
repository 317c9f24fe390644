//! The crash test: a run is killed with SIGKILL at random moments (seeded, so a
//! failure reproduces), then resumed until it finishes. Every step's marker must
//! appear exactly once; a step in flight at a kill may appear twice only if it is
//! idempotent; a non-idempotent one makes the run stop as `uncertain`, and the
//! test answers as an operator would, after looking at the evidence.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;
use std::collections::HashMap;
use std::time::Duration;
use support::Run;

/// A small deterministic generator (xorshift64*), so trials are reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// 50 markers: a chain of 20 (every other one idempotent), 10 parallel steps,
/// a for_each of 10 items (concurrency 4), and a chain of 10.
fn playbook(markers: &str) -> (String, HashMap<String, bool>) {
    let mut y = String::from("apiVersion: runbook/v1\nname: crash\nversion: 1\nsteps:\n");
    let mut expected = HashMap::new();
    let mut step = |y: &mut String, id: &str, needs: Option<String>, idem: bool| {
        let needs = needs.map(|n| format!(", needs: [{n}]")).unwrap_or_default();
        y.push_str(&format!(
            "  - {{ id: {id}, uses: shell, idempotent: {idem}{needs}, with: {{ run: \"sleep 0.0$(($$ % 4)); echo {id} >> {markers}\" }} }}\n"
        ));
        expected.insert(id.to_owned(), idem);
    };
    for i in 1..=20 {
        step(&mut y, &format!("s{i:02}"), None, i % 2 == 0);
    }
    for i in 1..=10 {
        step(&mut y, &format!("p{i:02}"), Some("s20".into()), i % 3 == 0);
    }
    let ps: Vec<String> = (1..=10).map(|i| format!("p{i:02}")).collect();
    y.push_str(&format!(
        "  - id: fan\n    needs: [{}]\n    for_each: [{}]\n    concurrency: 4\n    steps:\n      - {{ id: item, uses: shell, with: {{ run: \"sleep 0.0$(($$ % 4)); echo fan-{{{{item}}}} >> {markers}\" }} }}\n",
        ps.join(", "),
        (1..=10).map(|i| format!("i{i:02}")).collect::<Vec<_>>().join(", ")
    ));
    for i in 1..=10 {
        step(
            &mut y,
            &format!("t{i:02}"),
            if i == 1 { Some("fan".into()) } else { None },
            i % 2 == 1,
        );
    }
    for i in 1..=10 {
        expected.insert(format!("fan-i{i:02}"), false);
    }
    (y, expected)
}

fn counts(path: &std::path::Path) -> HashMap<String, usize> {
    let mut c = HashMap::new();
    for line in std::fs::read_to_string(path).unwrap_or_default().lines() {
        *c.entry(line.to_owned()).or_default() += 1;
    }
    c
}

fn wait_quiet() {
    // Steps of a killed runner finish on their own (runbook was SIGKILLed, its
    // children were not); let them land before looking at the evidence.
    std::thread::sleep(Duration::from_millis(120));
}

/// What a trial exercised.
#[derive(Default, Debug)]
struct Seen {
    kills: usize,
    resumes_mid_run: usize,
    uncertain: usize,
    doubled_idempotent: usize,
}

fn trial(seed: u64, span: Duration, seen: &mut Seen) {
    let run = Run::new();
    let markers = run.path().join("markers");
    let (yaml, expected) = playbook(&markers.display().to_string());
    let run = run.playbook("crash", &yaml);
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut id: Option<String> = None;
    let mut kills = 0;
    for round in 0..40 {
        let args: Vec<String> = match &id {
            None => vec!["run".into(), "crash".into()],
            Some(id) => vec!["resume".into(), id.clone()],
        };
        let mut child = run.spawn(&args);
        // Kill in most rounds (fewer as rounds go on, so the run can finish).
        let kill = round < 6 && rng.below(4) != 0;
        if kill {
            // Somewhere in the run's expected span, so most kills land mid-run
            // whatever the machine's speed.
            let at = 0.1 + 0.8 * (rng.below(1000) as f64 / 1000.0);
            std::thread::sleep(span.mul_f64(at));
            let _ = child.kill();
            kills += 1;
            seen.kills += 1;
        }
        let out = child.wait_with_output().expect("waits");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if id.is_none() {
            id = stdout
                .lines()
                .find_map(|l| l.strip_prefix("run ").and_then(|r| r.strip_suffix(" started")))
                .map(str::to_owned);
            if id.is_none() {
                // Killed before the run was even created: start again.
                continue;
            }
        }
        let id = id.clone().expect("run id");
        wait_quiet();
        let status = run.exec(["status", &id, "--output", "json"]);
        let v: serde_json::Value = serde_json::from_str(&status.stdout).expect("status json");
        match v["run"]["status"].as_str() {
            Some("succeeded") => {
                let c = counts(&markers);
                seen.doubled_idempotent += c.values().filter(|n| **n >= 2).count();
                for (marker, idempotent) in &expected {
                    let n = c.get(marker).copied().unwrap_or(0);
                    // An idempotent step runs again after each kill that cut
                    // it short: once more per kill at most.
                    assert!(
                        n == 1 || (n >= 2 && n <= 1 + kills && *idempotent),
                        "seed {seed}: marker `{marker}` appears {n} times (idempotent: {idempotent}); kills: {kills}"
                    );
                }
                assert_eq!(c.len(), expected.len(), "seed {seed}: unexpected markers {c:?}");
                // Zero lost journal entries: every leaf step has its success recorded.
                let steps = v["steps"].as_array().expect("steps");
                for marker in expected.keys() {
                    let path = marker
                        .strip_prefix("fan-")
                        .map_or(marker.clone(), |i| format!("fan[{i}].item"));
                    let row = steps.iter().find(|s| s["step"] == path.as_str());
                    assert_eq!(
                        row.and_then(|r| r["state"].as_str()),
                        Some("succeeded"),
                        "seed {seed}: journal of `{path}`"
                    );
                }
                return;
            }
            Some("uncertain") => {
                seen.uncertain += 1;
                // The operator looks: did the step's effect happen?
                let c = counts(&markers);
                let error = v["error"].as_str().unwrap_or_default();
                let step = error.split('`').nth(1).expect("uncertain names the step").to_owned();
                let marker = step
                    .strip_prefix("fan[")
                    .map_or(step.clone(), |s| format!("fan-{}", &s[..3]));
                assert!(
                    !expected[&marker],
                    "seed {seed}: idempotent step `{step}` was reported uncertain"
                );
                let decision = if c.get(&marker).copied().unwrap_or(0) > 0 {
                    "--mark-done"
                } else {
                    "--rerun"
                };
                let out = run.exec(["resume", &id, decision, &step]);
                assert!(
                    matches!(out.code, 0 | 1 | 5),
                    "seed {seed}: resume {decision} {step}: {}",
                    out.stderr
                );
            }
            Some("running" | "interrupted" | "failed") => {
                if counts(&markers).len() < expected.len() {
                    seen.resumes_mid_run += 1;
                }
            }
            other => panic!("seed {seed}: unexpected status {other:?}\n{}", status.stdout),
        }
    }
    panic!("seed {seed}: the run did not finish in 40 rounds");
}

#[test]
fn killed_runs_resume_without_losing_or_redoing_work() {
    // 26 trials, each with up to 6 kills (seeded: a failing seed reproduces).
    // Calibrate: how long an uninterrupted run takes on this machine, now.
    let calibration = Run::new();
    let markers = calibration.path().join("markers");
    let (yaml, _) = playbook(&markers.display().to_string());
    let calibration = calibration.playbook("crash", &yaml);
    let start = std::time::Instant::now();
    calibration.exec(["run", "crash"]).exit(0);
    let span = start.elapsed();
    let mut seen = Seen::default();
    for seed in 1..=26 {
        trial(seed, span, &mut seen);
    }
    eprintln!("crash test exercised: {seen:?}");
    // The test must have done what it claims: killed runs part-way, met
    // non-idempotent steps in flight, and resumed from the middle.
    assert!(seen.kills >= 25, "{seen:?}");
    assert!(seen.resumes_mid_run >= 10, "{seen:?}");
    assert!(seen.uncertain >= 1, "{seen:?}");
}
