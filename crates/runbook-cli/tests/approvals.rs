//! Approvals: what an answer binds to, which question it answers, and what
//! `--yes`, expiry, rejection and `resume` do with a question. Each test runs
//! the real binary against a playbook of its own, with a state file of its
//! own, and asserts what an operator sees: exit codes, status and journal.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;
use std::time::Duration;
use support::{Run, lines, status_json};

const HEAD: &str = "apiVersion: runbook/v1\nname: t\nversion: 1\n";

/// The state of a step in `status --output json`.
fn state(run: &Run, id: &str, path: &str) -> String {
    let v = status_json(run, id);
    v["steps"]
        .as_array()
        .and_then(|a| a.iter().find(|s| s["step"] == path))
        .map(|s| s["state"].as_str().unwrap_or("").to_owned())
        .unwrap_or_else(|| panic!("no step `{path}` in {v:#}"))
}

/// The events named `name` among JSON lines.
fn events(stdout: &str, name: &str) -> Vec<serde_json::Value> {
    stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["event"] == name)
        .collect()
}

/// The `operator_action` events among JSON lines, as (action, step, comment).
fn actions(stdout: &str) -> Vec<(String, String, String)> {
    events(stdout, "operator_action")
        .into_iter()
        .map(|v| {
            let text = |k: &str| v[k].as_str().unwrap_or("").to_owned();
            (text("action"), text("step"), text("comment"))
        })
        .collect()
}

/// When each question among JSON lines expires (`step_waiting`).
fn expiries(stdout: &str) -> Vec<String> {
    events(stdout, "step_waiting")
        .iter()
        .map(|v| v["expires_at"].as_str().unwrap_or("").to_owned())
        .collect()
}

/// A question between a probe that may fail (tolerated) and a deploy that
/// needs `gate`; each marks what it ran.
fn guarded(dir: &std::path::Path, probe: &str, deploy: &str) -> String {
    let m = dir.join("marks").display().to_string();
    let gate = dir.join("gate").display().to_string();
    format!(
        r#"{HEAD}steps:
  - {{ id: probe, uses: shell, continue_on_error: true, with: {{ run: "{probe}" }} }}
  - {{ id: ok, uses: approve, with: {{ message: "deploy?" }} }}
  - {{ id: deploy, uses: shell, with: {{ run: "echo {deploy} >> {m}; test -e {gate}" }} }}
"#
    )
}

/// runs.md: "An approval records what it approved; `--to-current` asks
/// again where the question or a step it guards changed, and an unchanged
/// one keeps its approval."
#[test]
fn to_current_asks_again_where_what_the_approval_covers_changed() {
    let run = Run::new();
    let marks = run.path().join("marks");
    let v1 = guarded(run.path(), "exitt 0", "deploy-v1");
    let run = run.playbook("t", &v1);
    // Two runs wait, are approved, and fail at the deploy (no gate yet).
    let changed = run.exec(["run", "t"]).exit(3).run_id();
    let approved = run
        .exec(["approve", &changed, "--output", "json"])
        .exit(1)
        .stdout
        .clone();
    // The answer is journalled with what it covers.
    let covers = events(&approved, "operator_action")
        .iter()
        .find(|v| v["action"] == "approve")
        .map(|v| v["covers"].as_str().unwrap_or("").to_owned())
        .unwrap_or_default();
    assert_eq!(covers.len(), 64, "a SHA-256 of what it approved: {approved}");
    let kept = run.exec(["run", "t"]).exit(3).run_id();
    run.exec(["approve", &kept]).exit(1);
    std::fs::write(run.path().join("gate"), "").unwrap();

    // A step outside what the approval covers changed (the probe before it):
    // the approval stands, the run goes on without a question.
    let kept_text = guarded(run.path(), "true", "deploy-v1");
    let run = run.playbook("t", &kept_text);
    let out = run.exec(["resume", &kept, "--to-current", "--output", "json"]).exit(0);
    assert!(
        !actions(&out.stdout).iter().any(|a| a.0 == "ask-again"),
        "{}",
        out.stdout
    );

    // The step it guards changed: the question is asked again, nothing after
    // it runs until a person answers.
    let v2 = guarded(run.path(), "true", "deploy-v2");
    let run = run.playbook("t", &v2);
    let out = run
        .exec(["resume", &changed, "--to-current", "--output", "json"])
        .exit(3);
    let asked = actions(&out.stdout);
    assert!(
        asked
            .iter()
            .any(|(a, s, c)| a == "ask-again" && s == "ok" && c.contains("changes what it approved")),
        "{asked:?}"
    );
    assert_eq!(state(&run, &changed, "ok"), "waiting");
    assert!(
        !lines(&marks).contains(&"deploy-v2".to_owned()),
        "nothing ran under the old approval"
    );
    run.exec(["approve", &changed, "ok"]).exit(0);
    assert_eq!(lines(&marks).iter().filter(|l| *l == "deploy-v2").count(), 1);

    // The question itself changed (its message): asked again too.
    let run = run.playbook("t", &v1);
    std::fs::remove_file(run.path().join("gate")).unwrap();
    let id = run.exec(["run", "t"]).exit(3).run_id();
    run.exec(["approve", &id]).exit(1);
    std::fs::write(run.path().join("gate"), "").unwrap();
    let run = run.playbook("t", &v1.replace("deploy?", "deploy now?"));
    run.exec(["resume", &id, "--to-current"])
        .exit(3)
        .stdout_has("ask-again ok")
        .stdout_has("⏸ ok waits for an approval: deploy now?");
}

/// Two questions at once, side by side.
fn two_questions(dir: &std::path::Path) -> String {
    let m = dir.join("marks").display().to_string();
    format!(
        r#"{HEAD}steps:
  - {{ id: ok_db, uses: approve, with: {{ message: "migrate the database?" }} }}
  - {{ id: ok_web, needs: [], uses: approve, with: {{ message: "switch the web tier?" }} }}
  - {{ id: after, needs: [ok_db, ok_web], uses: shell, with: {{ run: "echo after >> {m}" }} }}
"#
    )
}

/// runs.md: "`approve` answers the question it names, or every one with
/// `--all`; with several waiting and none named it refuses and lists them.
/// The run's status and hints name every waiting question."
#[test]
fn approve_answers_the_question_it_names_and_refuses_to_guess() {
    let run = Run::new();
    let marks = run.path().join("marks");
    let yaml = two_questions(run.path());
    let run = run.playbook("t", &yaml);
    let out = run
        .exec(["run", "t"])
        .exit(3)
        .stdout_has("2 steps wait for an approval: `ok_db`: migrate the database?; `ok_web`: switch the web tier?")
        .stdout_has("--all");
    let id = out.run_id();
    let v = status_json(&run, &id);
    let error = v["error"].as_str().unwrap_or("");
    assert!(error.contains("`ok_db`") && error.contains("`ok_web`"), "{v:#}");
    // None named of two: refused, nothing recorded.
    run.exec(["approve", &id])
        .exit(2)
        .stderr_has("waits at 2 questions (`ok_db`, `ok_web`)")
        .stderr_has(&format!("`runbook approve {id} ok_db` answers `ok_db` alone"))
        .stderr_has("--all");
    run.exec(["reject", &id]).exit(2).stderr_has("waits at 2 questions");
    run.exec(["approve", &id, "nope"])
        .exit(2)
        .stderr_has("does not wait at `nope`");
    assert_eq!(state(&run, &id, "ok_db"), "waiting");
    // The one named, alone: the run waits at the other, and says so.
    run.exec(["approve", &id, "ok_db"])
        .exit(3)
        .stdout_has("step `ok_web` waits for an approval: switch the web tier?")
        .stdout_has(&format!("`runbook approve {id} ok_web`"));
    assert_eq!(state(&run, &id, "ok_db"), "succeeded");
    assert_eq!(state(&run, &id, "ok_web"), "waiting");
    assert!(lines(&marks).is_empty());
    // A question already answered is not waiting any more.
    run.exec(["approve", &id, "ok_db"])
        .exit(2)
        .stderr_has("does not wait at `ok_db` (it waits at `ok_web`)");

    // `--all`, explicitly: every question at once.
    let id = run.exec(["run", "t"]).exit(3).run_id();
    run.exec(["approve", &id, "--all"])
        .exit(0)
        .stdout_has("tester: approve ok_db")
        .stdout_has("tester: approve ok_web");
    assert_eq!(lines(&marks), ["after"]);
}

/// The approval playbook of runs.rs: a question between two steps, its
/// handler saying when it ran.
fn approval(dir: &std::path::Path, with: &str) -> String {
    let m = dir.join("marks").display().to_string();
    format!(
        r#"{HEAD}steps:
  - id: ok
    uses: approve
    with:
      message: "unapply the migrations?"
{with}
  - {{ id: after, uses: shell, with: {{ run: "echo after by {{{{steps.ok.outputs.approved_by}}}} >> {m}" }} }}
on_failure:
  - {{ id: cleanup, uses: shell, with: {{ run: "echo cleanup >> {m}" }} }}
"#
    )
}

/// runs.md: "An expired question is asked anew by `resume`, with a fresh
/// expiry; `--yes` never answers it."
#[test]
fn an_expired_question_is_asked_anew_on_resume_and_never_answered_by_yes() {
    let run = Run::new();
    let marks = run.path().join("marks");
    let yaml = approval(run.path(), "      timeout: 4s");
    let run = run.playbook("t", &yaml);
    let out = run.exec(["run", "t", "--output", "json"]).exit(3);
    let id = out.run_id();
    let first = expiries(&out.stdout);
    std::thread::sleep(Duration::from_millis(4300));
    let out = run.exec(["resume", &id, "--yes", "--output", "json"]).exit(3);
    let asked = actions(&out.stdout);
    assert!(
        asked
            .iter()
            .any(|(a, s, c)| a == "ask-again" && s == "ok" && c.contains("nobody answered it before it expired")),
        "{asked:?}"
    );
    assert!(
        !asked.iter().any(|a| a.0 == "approve"),
        "--yes answered nothing: {asked:?}"
    );
    // A fresh question: it waits again, expiring later.
    let fresh = expiries(&out.stdout);
    assert!(
        fresh.len() == 1 && first.len() == 1 && fresh[0] > first[0],
        "{first:?} then {fresh:?}"
    );
    assert!(lines(&marks).is_empty(), "neither `after` nor a handler ran");
    // Asked again, the question is for a person: `--yes` does not answer it.
    run.exec(["resume", &id, "--yes"]).exit(3).stdout_lacks("after by");
    run.exec(["approve", &id, "--as", "alice"]).exit(0);
    assert_eq!(lines(&marks), ["after by alice"]);
}

/// runs.md: "`--yes` from someone who may not answer (not an approver, or
/// the starter under four eyes) leaves the run waiting at the question,
/// saying why: no handler runs."
#[test]
fn yes_from_someone_who_may_not_answer_leaves_the_run_waiting() {
    let run = Run::new();
    let marks = run.path().join("marks");
    let yaml = approval(run.path(), "      approvers: [alice]");
    let run = run.playbook("t", &yaml);
    let out = run
        .exec(["run", "t", "--yes"])
        .exit(3)
        .stdout_has("`--yes` cannot approve as tester, who is not one of the approvers");
    let id = out.run_id();
    assert_eq!(status_json(&run, &id)["run"]["status"], "waiting");
    assert!(lines(&marks).is_empty(), "no on_failure, no undo: {:?}", lines(&marks));
    run.exec(["approve", &id, "--as", "alice"]).exit(0);
    assert_eq!(lines(&marks), ["after by alice"]);

    // Four eyes: the one who started it cannot `--yes` it either.
    let paired = approval(run.path(), "      four_eyes: true");
    let run = run.playbook("t", &paired);
    std::fs::remove_file(&marks).unwrap();
    let id = run
        .exec(["run", "t", "--yes"])
        .exit(3)
        .stdout_has("`--yes` cannot approve as tester: four eyes, a second person must answer")
        .run_id();
    assert_eq!(state(&run, &id, "ok"), "waiting");
    assert!(lines(&marks).is_empty());
    run.exec(["approve", &id, "--as", "bob"]).exit(0);
    assert_eq!(lines(&marks), ["after by bob"]);
}

/// runs.md: "A rejected or expired question is asked again by `resume`, and
/// the hints say so."
#[test]
fn a_rejected_or_expired_question_is_asked_again_by_resume() {
    let run = Run::new();
    let marks = run.path().join("marks");
    let yaml = approval(run.path(), "      timeout: 1h");
    let run = run.playbook("t", &yaml);
    let id = run.exec(["run", "t"]).exit(3).run_id();
    run.exec(["reject", &id, "--as", "bob", "--comment", "not now"])
        .exit(1)
        .stdout_has("rejected by bob: not now")
        .stderr_has(&format!(
            "hint: `runbook resume {id}` asks again `ok` (bob rejected it): a fresh question"
        ));
    assert_eq!(lines(&marks), ["cleanup"]);
    run.exec(["status", &id]).exit(0).stdout_has(&format!(
        "hint: `runbook resume {id}` asks again `ok` (bob rejected it)"
    ));
    // Asked again: it waits for a person (`--yes` does not answer it).
    run.exec(["resume", &id, "--yes"])
        .exit(3)
        .stdout_has("ask-again ok (bob rejected it; asked anew")
        .stdout_has("⏸ ok waits for an approval: unapply the migrations?");
    assert_eq!(state(&run, &id, "ok"), "waiting");
    run.exec(["approve", &id, "--as", "alice"]).exit(0);
    assert_eq!(lines(&marks), ["cleanup", "after by alice"]);

    // An approval after the question expired fails the step; resume asks it
    // again.
    let short = approval(run.path(), "      timeout: 1s");
    let run = run.playbook("t", &short);
    let id = run.exec(["run", "t"]).exit(3).run_id();
    std::thread::sleep(Duration::from_millis(1500));
    run.exec(["approve", &id, "--as", "alice"])
        .exit(1)
        .stdout_has("came after the question expired")
        .stderr_has("asks again `ok` (the approval by alice came after it expired");
    run.exec(["resume", &id])
        .exit(3)
        .stdout_has("ask-again ok (the approval by alice came after it expired");
    assert_eq!(state(&run, &id, "ok"), "waiting");
}
