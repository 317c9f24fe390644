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
//! subset CI runs; `bench/crash-points.sh` sweeps a larger playbook. A second
//! test (`world`) crashes a run against the lab (pg, lb, ssh, a tolerated
//! fan-out failure and its on_failure handler, an approval, a lock) at every
//! point of the run and of the `approve` that continues it.
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
    let (how, v) = carry_to_end(&run, &id, &k.to_string(), "resumed", |step| {
        let m = marker(step);
        (expected[&m], counts(&markers).contains_key(&m))
    });
    check(&run, &markers, &expected, k, Some(&v));
    how
}

/// Carries run `id` to its end as an operator would: resumes it, approves it
/// where it waits, and decides a step left uncertain from the evidence.
/// `step` says of a step path whether it is idempotent (an idempotent one is
/// never to be left uncertain) and whether its effect is there (then it is
/// marked done, else run again). How it went (`how` when nothing was left
/// uncertain), and the run's final status.
fn carry_to_end(
    run: &Run,
    id: &str,
    point: &str,
    how: &'static str,
    step: impl Fn(&str) -> (bool, bool),
) -> (&'static str, serde_json::Value) {
    let mut how = how;
    let continued = |args: &[&str]| {
        let out = run.exec(args);
        assert!(
            matches!(out.code, 0 | 3 | 5),
            "point {point}: {args:?}: {} {}",
            out.code,
            out.stderr
        );
    };
    for _ in 0..10 {
        let status = run.exec(["status", id, "--output", "json"]);
        let v: serde_json::Value = serde_json::from_str(&status.stdout).unwrap();
        match v["run"]["status"].as_str() {
            Some("succeeded") => return (how, v),
            Some("waiting") => continued(&["approve", id]),
            Some("uncertain") => {
                how = "uncertain, then decided";
                let error = v["error"].as_str().unwrap_or_default();
                let path = error.split('`').nth(1).expect("uncertain names the step").to_owned();
                let (idempotent, happened) = step(&path);
                assert!(
                    !idempotent,
                    "point {point}: idempotent step `{path}` was reported uncertain"
                );
                // The operator looks at the evidence: did its effect happen?
                let decision = if happened { "--mark-done" } else { "--rerun" };
                continued(&["resume", id, decision, &path]);
            }
            Some("running" | "interrupted") => continued(&["resume", id]),
            other => panic!("point {point}: unexpected status {other:?}\n{}", status.stdout),
        }
    }
    panic!("point {point}: the run did not finish in 10 continuations");
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

/// The lab's world, crashed at every point: a lock, a `pg` write, a fan-out
/// over the hosts (`lb` drain, an `ssh` command, a check that fails on web2
/// and is tolerated by `max_failures: 1`, whose `on_failure` handler puts
/// web2 back in rotation; web1 goes back with `lb ready`), an approval,
/// a last `pg` write, and a `finally` step. What each step leaves, keyed by
/// the crash point's tag: rows in PostgreSQL, lines in the hosts' files,
/// lines in a local file.
mod world {
    use super::support::{Lab, Run};
    use std::collections::HashMap;

    const PLAYBOOK: &str = r#"apiVersion: runbook/v1
name: world
version: 1
lock: fleet/lab
secrets: [PRIMARY_DSN]
inputs:
  tag: { type: string }
  socket: { type: string }
  markers: { type: string }
steps:
  - id: record
    uses: pg
    with: { action: exec, dsn: "{{secrets.PRIMARY_DSN}}", sql: "INSERT INTO points (mark) VALUES ('{{inputs.tag}}:record')" }
  - id: hosts
    needs: [record]
    for_each: "{{inventory.groups.web}}"
    as: host
    concurrency: 1
    max_failures: 1
    steps:
      - id: drain
        uses: lb
        with: { action: drain, backend: app, server: "{{host}}", socket: "{{inputs.socket}}" }
      - id: work
        uses: ssh
        idempotent: true
        with: { host: "{{host}}", run: "echo {{inputs.tag}}:work-{{host}} >> /srv/app/points" }
      - id: check
        uses: shell
        idempotent: true
        with: { run: "echo {{inputs.tag}}:check-{{host}} >> {{inputs.markers}}; test {{host}} != web2" }
      - id: ready
        uses: lb
        with: { action: ready, backend: app, server: "{{host}}", socket: "{{inputs.socket}}" }
    on_failure:
      - id: back
        uses: lb
        with: { action: ready, backend: app, server: "{{host}}", socket: "{{inputs.socket}}" }
      - id: told
        uses: shell
        idempotent: true
        with: { run: "echo {{inputs.tag}}:onfail-{{host}} >> {{inputs.markers}}" }
  - id: go
    needs: [hosts]
    uses: approve
    with: { message: "write the last row?" }
  - id: last
    needs: [go]
    uses: pg
    with: { action: exec, dsn: "{{secrets.PRIMARY_DSN}}", sql: "INSERT INTO points (mark) VALUES ('{{inputs.tag}}:last')" }
finally:
  - id: tidy
    uses: shell
    idempotent: true
    with: { run: "echo {{inputs.tag}}:tidy >> {{inputs.markers}}" }
"#;

    /// Each mark an uninterrupted run leaves once, and whether the step
    /// that leaves it may run again (idempotent).
    /// Which process crashes: the `run` (up to the approval) or the
    /// `approve` that continues it.
    #[derive(Debug, Clone, Copy)]
    enum Phase {
        Run,
        Approve,
    }

    const MARKS: &[(&str, bool)] = &[
        ("record", false),
        ("work-web1", true),
        ("work-web2", true),
        ("check-web1", true),
        ("check-web2", true),
        ("onfail-web2", true),
        ("last", false),
        ("tidy", true),
    ];

    struct World {
        lab: Lab,
    }

    impl World {
        fn start() -> World {
            let lab = Lab::start_with(&["--hosts", "2", "--postgres"]);
            lab.psql("primary", "CREATE TABLE points (mark text NOT NULL)");
            World { lab }
        }

        fn run(&self) -> Run {
            Run::new()
                .env("PRIMARY_DSN", &self.lab.dsn("primary"))
                .file("inventory.yaml", &self.lab.inventory())
                .playbook("world", PLAYBOOK)
        }

        fn sets(&self, tag: &str, markers: &std::path::Path) -> Vec<String> {
            let socket = self.lab.info["haproxy"]["socket"].as_str().unwrap();
            ["tag", tag, "socket", socket, "markers", &markers.display().to_string()]
                .chunks(2)
                .flat_map(|kv| ["--set".to_owned(), format!("{}={}", kv[0], kv[1])])
                .collect()
        }

        /// How many times each mark of `tag` was left.
        fn marks(&self, tag: &str, markers: &std::path::Path) -> HashMap<String, usize> {
            let mut lines: Vec<String> = self
                .lab
                .psql("primary", &format!("SELECT mark FROM points WHERE mark LIKE '{tag}:%'"))
                .lines()
                .map(str::to_owned)
                .collect();
            for i in 0..2 {
                lines.extend(self.lab.host_file(i, "points").lines().map(str::to_owned));
            }
            lines.extend(
                std::fs::read_to_string(markers)
                    .unwrap_or_default()
                    .lines()
                    .map(str::to_owned),
            );
            let mut c = HashMap::new();
            for l in lines {
                if let Some(mark) = l.strip_prefix(&format!("{tag}:")) {
                    *c.entry(mark.to_owned()).or_default() += 1;
                }
            }
            c
        }

        /// The mark a step path leaves.
        fn mark_of(step: &str) -> String {
            let host = step.split('[').nth(1).and_then(|r| r.split(']').next()).unwrap_or("");
            let name = step.rsplit('.').next().unwrap_or(step);
            match name {
                "work" | "check" => format!("{name}-{host}"),
                "told" => format!("onfail-{host}"),
                other => other.to_owned(),
            }
        }

        /// Crash at point `k` of `phase` (0: never), then carry the run to
        /// its end as an operator would; the invariants. What happened, in a
        /// word.
        fn crash_at(&self, phase: Phase, k: usize) -> &'static str {
            let tag = format!("{phase:?}{k}");
            let dir = tempfile::tempdir().unwrap();
            let markers = dir.path().join("markers");
            let run = self.run();
            let mut args = vec!["run".to_owned(), "world".to_owned()];
            args.extend(self.sets(&tag, &markers));
            let k_text = k.to_string();
            let crash: &[(&str, &str)] = if k == 0 { &[] } else { &[("RUNBOOK_CRASH_AT", &k_text)] };
            let (first, aborted) = match phase {
                Phase::Run => {
                    let first = run.exec_env(crash, &args);
                    let aborted = first.code == -1 && first.stderr.contains("crash point");
                    (first, aborted)
                }
                Phase::Approve => {
                    run.exec(&args).exit(3);
                    let listed: serde_json::Value =
                        serde_json::from_str(&run.exec(["status", "--output", "json"]).stdout).unwrap();
                    let id = listed[0]["id"].as_str().unwrap().to_owned();
                    let first = run.exec_env(crash, ["approve", &id]);
                    let aborted = first.code == -1 && first.stderr.contains("crash point");
                    (first, aborted)
                }
            };
            assert!(
                aborted || matches!(first.code, 0 | 3),
                "{phase:?} point {k}: neither crashed nor stopped for the approval: {} {}",
                first.code,
                first.stderr
            );
            let listed: serde_json::Value =
                serde_json::from_str(&run.exec(["status", "--output", "json"]).stdout).unwrap();
            let Some(id) = listed[0]["id"].as_str().map(str::to_owned) else {
                assert!(
                    self.marks(&tag, &markers).is_empty(),
                    "point {k}: a step ran before its run existed"
                );
                run.exec(["unlock", "fleet/lab", "--force"]).exit(0);
                let again = run.exec(&args);
                assert_eq!(again.code, 3, "point {k}: {}", again.stderr);
                return self.finish(&run, &tag, &markers, k, "before the run existed");
            };
            let how = if aborted { "resumed" } else { "uninterrupted" };
            let point = format!("{phase:?} {k}");
            let (how, _) = super::carry_to_end(&run, &id, &point, how, |step| {
                let mark = World::mark_of(step);
                let idempotent = MARKS.iter().find(|(m, _)| *m == mark).is_some_and(|(_, i)| *i);
                (idempotent, self.marks(&tag, &markers).contains_key(&mark))
            });
            self.check(&run, &id, &tag, &markers, k);
            how
        }

        /// Approves the one run of `run`'s state until it ends; the invariants.
        fn finish(&self, run: &Run, tag: &str, markers: &std::path::Path, k: usize, how: &'static str) -> &'static str {
            let listed: serde_json::Value =
                serde_json::from_str(&run.exec(["status", "--output", "json"]).stdout).unwrap();
            let id = listed[0]["id"].as_str().unwrap().to_owned();
            run.exec(["approve", &id]).exit(0);
            self.check(run, &id, tag, markers, k);
            how
        }

        fn check(&self, run: &Run, id: &str, tag: &str, markers: &std::path::Path, k: usize) {
            let c = self.marks(tag, markers);
            assert_eq!(c.len(), MARKS.len(), "point {k}: marks {c:?}");
            for (mark, idempotent) in MARKS {
                let n = c.get(*mark).copied().unwrap_or(0);
                assert!(
                    n == 1 || (n == 2 && *idempotent),
                    "point {k}: `{mark}` left {n} times (idempotent: {idempotent})"
                );
            }
            let v: serde_json::Value =
                serde_json::from_str(&run.exec(["status", id, "--output", "json"]).stdout).unwrap();
            let state = |step: &str| {
                v["steps"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|s| s["step"] == step)
                    .and_then(|s| s["state"].as_str().map(str::to_owned))
                    .unwrap_or_default()
            };
            for step in ["record", "hosts[web1].ready", "go", "last", "finally.tidy"] {
                assert_eq!(state(step), "succeeded", "point {k}: `{step}`\n{v}");
            }
            assert_eq!(state("hosts[web2].check"), "failed", "point {k}\n{v}");
            // Both servers back in rotation, as after an uninterrupted run.
            for server in ["web1", "web2"] {
                assert_eq!(
                    self.lab.server_state("app", server).0,
                    0,
                    "point {k}: {server} not ready"
                );
            }
        }
    }

    #[test]
    fn every_crash_point_of_a_run_against_the_lab_resumes_to_the_same_end() {
        let world = World::start();
        // The points an uninterrupted run has: up to its approval, and in
        // the `approve` that continues it.
        let dir = tempfile::tempdir().unwrap();
        let (before, after) = (dir.path().join("run.log"), dir.path().join("approve.log"));
        let run = world.run();
        let mut args = vec!["run".to_owned(), "world".to_owned()];
        args.extend(world.sets("probe", &dir.path().join("markers")));
        let text = |p: &std::path::Path| p.display().to_string();
        run.exec_env(&[("RUNBOOK_CRASH_LOG", &text(&before))], &args).exit(3);
        let listed: serde_json::Value = serde_json::from_str(&run.exec(["status", "--output", "json"]).stdout).unwrap();
        let id = listed[0]["id"].as_str().unwrap().to_owned();
        run.exec_env(&[("RUNBOOK_CRASH_LOG", &text(&after))], ["approve", &id])
            .exit(0);
        let count = |p: &std::path::Path| std::fs::read_to_string(p).unwrap().lines().count();
        let (run_points, approve_points) = (count(&before), count(&after));
        assert!(
            run_points >= 10 && approve_points >= 4,
            "{run_points} + {approve_points} points"
        );
        // The uninterrupted run is what every crashed one must end as.
        assert_eq!(world.crash_at(Phase::Run, 0), "uninterrupted");
        let mut outcomes: HashMap<&str, usize> = HashMap::new();
        for (phase, points) in [(Phase::Run, run_points), (Phase::Approve, approve_points)] {
            for k in 1..=points {
                *outcomes.entry(world.crash_at(phase, k)).or_default() += 1;
            }
        }
        eprintln!(
            "{} crash points against the lab ({run_points} in the run, {approve_points} in its approval), \
             every one resumed to the same end, violations 0: {outcomes:?}",
            run_points + approve_points
        );
    }
}
