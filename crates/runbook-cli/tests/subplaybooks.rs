//! Sub-playbooks (`uses: playbook`), as an operator meets them: a playbook
//! of the library run as one step of another, its steps journalled under
//! the step, resumed after a kill inside it, its outputs handed back, its
//! lock taken once, and every mistake in a call refused before anything
//! runs (book/src/language.md, "Calling another playbook").
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;
use support::{Run, kill_when, lines, started_id, status_json};

/// A callee that greets, then waits for a flag (so a test can kill the run
/// inside it), with a default, an output and a `finally`; each step leaves a
/// mark in `marks` (the `finally`'s ends with `extra`).
fn child(marks: &std::path::Path, flag: &std::path::Path, extra: &str) -> String {
    format!(
        "apiVersion: runbook/v1\nname: child\nversion: 1\ninputs:\n  who: {{ type: string }}\n  times: {{ type: integer, default: 2 }}\nlock: \"db/{{{{inputs.who}}}}\"\noutputs:\n  greeting: \"{{{{steps.greet.outputs.stdout}}}}\"\nsteps:\n  - {{ id: greet, uses: shell, with: {{ run: \"echo greet >> {m}; echo hello {{{{inputs.who}}}} x{{{{inputs.times}}}} from {{{{playbook.name}}}}\" }} }}\n  - {{ id: hold, uses: shell, idempotent: true, with: {{ run: \"echo hold >> {m}; touch {m}.holding; while ! test -e {f}; do sleep 0.05; done\" }} }}\nfinally:\n  - {{ id: bye, uses: shell, with: {{ run: \"echo bye{extra} >> {m}\" }} }}\n",
        m = marks.display(),
        f = flag.display(),
    )
}

const PARENT: &str = "apiVersion: runbook/v1\nname: parent\nversion: 1\ninputs:\n  name: { type: string, default: ops }\nlock: \"db/{{inputs.name}}\"\nsteps:\n  - { id: first, uses: shell, with: { run: \"echo parent first\" } }\n  - id: sub\n    uses: playbook\n    with: { name: child, inputs: { who: \"{{inputs.name}}\" } }\n  - { id: after, uses: shell, with: { run: \"echo got {{steps.sub.outputs.greeting}}\" } }\n";

#[test]
fn a_called_playbook_resumes_inside_after_a_kill_and_keeps_the_text_it_started_with() {
    let run = Run::new();
    let (marks, flag) = (run.path().join("marks"), run.path().join("flag"));
    let holding = run.path().join("marks.holding");
    let run = run
        .playbook("child", &child(&marks, &flag, ""))
        .playbook("parent", PARENT);
    // Killed while the called playbook's second step runs.
    let out = kill_when(&run, &["run", "parent"], &holding);
    let id = started_id(&out);
    assert!(out.contains("sub.greet │ hello ops x2 from child"), "{out}");
    let v = status_json(&run, &id);
    let steps: Vec<(String, String)> = v["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["step"].as_str().unwrap().to_owned(),
                s["state"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert!(steps.contains(&("sub.greet".into(), "succeeded".into())), "{steps:?}");
    assert!(steps.contains(&("sub.hold".into(), "running".into())), "{steps:?}");
    // The library's copy changes meanwhile: the run goes on with the text it
    // started with (and says that the file changed).
    std::fs::write(
        run.path().join("playbooks/child/v1.yaml"),
        child(&marks, &flag, " EDITED"),
    )
    .unwrap();
    std::fs::write(&flag, "").unwrap();
    let resumed = run.exec(["resume", &id]).exit(0);
    resumed
        .stdout_has("▶ sub.hold (attempt 2)")
        .stdout_has("✓ sub.finally.bye")
        .stdout_has("after │ got hello ops x2 from child")
        .stdout_lacks("EDITED")
        .stdout_lacks("▶ sub.greet");
    // The finished step did not run again; the one in flight did (it is
    // idempotent); `finally` once, when the called playbook ended.
    assert_eq!(lines(&marks), ["greet", "hold", "hold", "bye"]);
    let v = status_json(&run, &id);
    assert_eq!(v["run"]["status"], "succeeded", "{v:#}");
}

#[test]
fn a_call_takes_the_callee_s_lock_once_and_hands_its_inputs_typed() {
    let run = Run::new();
    let (marks, flag) = (run.path().join("marks"), run.path().join("flag"));
    std::fs::write(&flag, "").unwrap();
    let run = run
        .playbook("child", &child(&marks, &flag, ""))
        .playbook("parent", PARENT);
    // The parent's key and the child's render the same: held once, and the
    // run does not wait for itself.
    let out = run.exec(["run", "parent", "--set", "name=billing"]).exit(0);
    out.stdout_has("sub.greet │ hello billing x2 from child")
        .stdout_has("after │ got hello billing x2 from child");
    // Another key for the child: both are held while the run waits.
    let waiting = PARENT
        .replace("lock: \"db/{{inputs.name}}\"", "lock: fleet/app")
        .replace(
            "  - id: sub\n",
            "  - { id: ask, uses: approve, with: { message: go on? } }\n  - id: sub\n",
        );
    let run = run.playbook("parent", &waiting);
    let id = run.exec(["run", "parent"]).exit(3).run_id();
    let locks = run.exec(["locks", "--output", "json"]).exit(0).stdout;
    let locks: serde_json::Value = serde_json::from_str(&locks).unwrap();
    let mut keys: Vec<&str> = locks
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|l| l["key"].as_str())
        .collect();
    keys.sort_unstable();
    assert_eq!(keys, ["db/ops", "fleet/app"], "{locks:#}");
    run.exec(["cancel", &id]).exit(0);
    // A key that needs a step's result cannot be taken at start: refused,
    // nothing run.
    let late = PARENT.replace("who: \"{{inputs.name}}\"", "who: \"{{steps.first.outputs.stdout}}\"");
    let run = run.playbook("parent", &late);
    run.exec(["run", "parent"])
        .exit(2)
        .stderr_has("must be known when the run starts");
    assert_eq!(lines(&marks), ["greet", "hold", "bye"], "nothing more ran");
}

#[test]
fn every_mistake_in_a_call_is_refused_with_its_place_and_nothing_runs() {
    let run = Run::new();
    let (marks, flag) = (run.path().join("marks"), run.path().join("flag"));
    let loop_a = "apiVersion: runbook/v1\nname: loop-a\nversion: 1\nsteps:\n  - { id: b, uses: playbook, with: { name: loop-b } }\n";
    let loop_b = "apiVersion: runbook/v1\nname: loop-b\nversion: 1\nsteps:\n  - { id: a, uses: playbook, with: { name: loop-a } }\n";
    let bad = "apiVersion: runbook/v1\nname: bad\nversion: 1\nsteps:\n  - { id: first, uses: shell, with: { run: \"echo ran >> MARKS\" } }\n  - id: sub\n    uses: playbook\n    retry: 3\n    with: { name: child, inputs: { whom: x, times: many } }\n  - { id: nope, uses: playbook, with: { name: chlid } }\n  - { id: after, uses: shell, with: { run: \"echo {{steps.sub.outputs.greting}}\" } }\n"
        .replace("MARKS", &marks.display().to_string());
    let secret = "apiVersion: runbook/v1\nname: secret\nversion: 1\nsteps:\n  - { id: s, uses: playbook, with: { name: needs-token } }\n";
    let needs = "apiVersion: runbook/v1\nname: needs-token\nversion: 1\nsecrets: [TOKEN]\nsteps:\n  - { id: s, uses: shell, with: { run: \"true\" } }\n";
    let run = run
        .playbook("child", &child(&marks, &flag, ""))
        .playbook("loop-a", loop_a)
        .playbook("loop-b", loop_b)
        .playbook("bad", &bad)
        .playbook("secret", secret)
        .playbook("needs-token", needs);
    let out = run.exec(["run", "bad"]).exit(2);
    out.stderr_has("`retry` does not apply to `uses: playbook`")
        .stderr_has("`child` needs the input(s) `who`")
        .stderr_has("`child` declares no input `whom`")
        .stderr_has("did you mean `who`?")
        .stderr_has("`child` input `times`: expected an integer")
        .stderr_has("no playbook `chlid`")
        .stderr_has("did you mean `child`?")
        .stderr_has("step `sub` (`playbook`) has no output `greting`")
        .stderr_has("bad/v1.yaml:9:");
    run.exec(["validate", "loop-a"])
        .exit(2)
        .stderr_has("`loop-a` calls itself: loop-a → loop-b → loop-a");
    // A cycle found through one call does not stand for another callee's own mistake.
    let both = "apiVersion: runbook/v1\nname: both\nversion: 1\nsteps:\n  - { id: a, uses: playbook, with: { name: loop-a } }\n  - { id: b, uses: playbook, with: { name: broken } }\n";
    let broken = "apiVersion: runbook/v1\nname: broken\nversion: 1\nsteps:\n  - { id: s, uses: shel, with: { run: \"true\" } }\n";
    let run = run.playbook("both", both).playbook("broken", broken);
    run.exec(["validate", "both"])
        .exit(2)
        .stderr_has("`loop-a` calls itself: both → loop-a → loop-b → loop-a")
        .stderr_has("`broken` is invalid (1 error(s)), first at")
        .stderr_has("`shel`");
    run.exec(["run", "secret"])
        .exit(2)
        .stderr_has("`needs-token` reads the secret `TOKEN`, which this playbook does not declare");
    assert!(!marks.exists(), "nothing ran");
    assert!(
        run.exec(["status", "--output", "json"]).exit(0).stdout.trim() == "[]",
        "no run was recorded"
    );
}

#[test]
fn a_call_names_a_playbook_of_the_library_never_a_file() {
    let run = Run::new();
    let marks = run.path().join("marks");
    let evil = run.path().join("evil.yaml");
    let text = "apiVersion: runbook/v1\nname: evil\nversion: 1\nsteps:\n  - { id: s, uses: shell, with: { run: \"echo ran >> MARKS\" } }\n";
    std::fs::write(&evil, text.replace("MARKS", &marks.display().to_string())).unwrap();
    let caller = format!(
        "apiVersion: runbook/v1\nname: caller\nversion: 1\nsteps:\n  - {{ id: sub, uses: playbook, with: {{ name: \"{}\" }} }}\n",
        evil.display()
    );
    let run = run.playbook("caller", &caller);
    run.exec(["run", "caller"]).exit(2).stderr_has("invalid name `");
    assert!(!marks.exists(), "nothing ran");
}

/// A callee whose step has an `undo` (so resume walks into the call to know
/// what it could undo), a `finally`, and marks in `marks`.
fn undoable(marks: &std::path::Path) -> String {
    format!(
        "apiVersion: runbook/v1\nname: undoable\nversion: 1\nsteps:\n  - id: change\n    uses: shell\n    with: {{ run: \"echo change >> {m}\" }}\n    undo: {{ uses: shell, with: {{ run: \"echo undo >> {m}\" }} }}\nfinally:\n  - {{ id: bye, uses: shell, with: {{ run: \"echo bye >> {m}\" }} }}\n",
        m = marks.display(),
    )
}

#[test]
fn a_call_that_succeeded_does_not_run_its_finally_again_on_resume() {
    let run = Run::new();
    let (marks, flag) = (run.path().join("marks"), run.path().join("flag"));
    let holding = run.path().join("holding");
    let parent = format!(
        "apiVersion: runbook/v1\nname: parent\nversion: 1\nsteps:\n  - {{ id: sub, uses: playbook, with: {{ name: undoable }} }}\n  - {{ id: hold, uses: shell, idempotent: true, with: {{ run: \"echo hold >> {m}; touch {h}; while ! test -e {f}; do sleep 0.05; done\" }} }}\n",
        m = marks.display(),
        h = holding.display(),
        f = flag.display(),
    );
    let run = run.playbook("undoable", &undoable(&marks)).playbook("parent", &parent);
    // Killed after the call ended (its `finally` ran), in the step after it.
    let id = started_id(&kill_when(&run, &["run", "parent"], &holding));
    assert_eq!(lines(&marks), ["change", "bye", "hold"]);
    std::fs::write(&flag, "").unwrap();
    run.exec(["resume", &id])
        .exit(0)
        .stdout_lacks("sub.finally.bye")
        .stdout_lacks("sub.change");
    // The call's `finally` ran once, when the call ended; its step never again.
    assert_eq!(lines(&marks), ["change", "bye", "hold", "hold"]);
    assert_eq!(status_json(&run, &id)["run"]["status"], "succeeded");
}

#[test]
fn cancelling_a_run_that_waits_inside_a_call_runs_the_call_s_finally() {
    let run = Run::new();
    let marks = run.path().join("marks");
    let asking = format!(
        "apiVersion: runbook/v1\nname: asking\nversion: 1\nsteps:\n  - {{ id: greet, uses: shell, with: {{ run: \"echo greet >> {m}\" }} }}\n  - {{ id: ask, uses: approve, with: {{ message: go on? }} }}\nfinally:\n  - {{ id: bye, uses: shell, with: {{ run: \"echo bye >> {m}\" }} }}\n",
        m = marks.display(),
    );
    let parent = |steps: &str| {
        format!(
            "apiVersion: runbook/v1\nname: parent\nversion: 1\nsteps:\n{steps}finally:\n  - {{ id: end, uses: shell, with: {{ run: \"echo end >> {m}\" }} }}\n",
            m = marks.display(),
        )
    };
    let mut run = run.playbook("asking", &asking);
    // The call itself, then a call for each item of a fan-out.
    for steps in [
        "  - { id: sub, uses: playbook, with: { name: asking } }\n",
        "  - { id: each, for_each: [web1], uses: playbook, with: { name: asking } }\n",
    ] {
        std::fs::remove_file(&marks).ok();
        run = run.playbook("parent", &parent(steps));
        let id = run.exec(["run", "parent"]).exit(3).run_id();
        assert_eq!(lines(&marks), ["greet"], "it waits inside the call");
        run.exec(["cancel", &id]).exit(0);
        // The called playbook's `finally` ran, then the run's, once each.
        assert_eq!(lines(&marks), ["greet", "bye", "end"], "{steps}");
        assert_eq!(status_json(&run, &id)["run"]["status"], "cancelled");
        run.exec(["resume", &id]).exit(2).stderr_has("finished as cancelled");
        assert_eq!(lines(&marks), ["greet", "bye", "end"], "nothing ran again");
    }
}

#[test]
fn a_called_playbook_s_templates_are_checked_at_start_with_the_inputs_the_call_gives() {
    let run = Run::new();
    let marks = run.path().join("marks");
    let arith = format!(
        "apiVersion: runbook/v1\nname: arith\nversion: 1\ninputs:\n  n: {{ type: string }}\nsteps:\n  - {{ id: math, uses: shell, with: {{ run: \"echo $(( {{{{inputs.n}}}} + 1 )) >> {m}\" }} }}\n",
        m = marks.display(),
    );
    let parent = |n: &str| {
        format!(
            "apiVersion: runbook/v1\nname: parent\nversion: 1\ninputs:\n  n: {{ type: string, default: x }}\nsteps:\n  - {{ id: drain, uses: shell, with: {{ run: \"echo drain >> {m}; echo 41\" }} }}\n  - {{ id: sub, uses: playbook, with: {{ name: arith, inputs: {{ n: \"{n}\" }} }} }}\n",
            m = marks.display(),
        )
    };
    let run = run
        .playbook("arith", &arith)
        .playbook("parent", &parent("{{inputs.n}}"));
    // As the same step inline would be: refused before the drain, exit 2.
    run.exec(["run", "parent"])
        .exit(2)
        .stderr_has("step `sub.math`, `with.run`: ")
        .stderr_has("must be an integer")
        .stderr_has("nothing was run");
    assert!(!marks.exists(), "no step ran");
    run.exec(["run", "parent", "--set", "n=41"]).exit(0);
    assert_eq!(lines(&marks), ["drain", "42"]);
    // An input known only once a step ran is checked when the call starts.
    let run = run.playbook("parent", &parent("{{steps.drain.outputs.stdout}}"));
    run.exec(["run", "parent"]).exit(0);
    assert_eq!(lines(&marks), ["drain", "42", "drain", "42"]);
}

#[test]
fn mark_done_inside_a_call_asks_for_the_outputs_its_later_steps_read() {
    let run = Run::new();
    let (started, marks) = (run.path().join("started"), run.path().join("marks"));
    let deploying = format!(
        "apiVersion: runbook/v1\nname: deploying\nversion: 1\noutputs:\n  said: \"{{{{steps.deploy.outputs.stderr}}}}\"\nsteps:\n  - {{ id: deploy, uses: shell, with: {{ run: \"touch {st}; sleep 2; echo v1\" }} }}\n  - {{ id: check, uses: shell, with: {{ run: \"test {{{{steps.deploy.outputs.stdout}}}} = v1 && echo ok >> {m}\" }} }}\n",
        st = started.display(),
        m = marks.display(),
    );
    let parent = "apiVersion: runbook/v1\nname: parent\nversion: 1\nsteps:\n  - { id: sub, uses: playbook, with: { name: deploying } }\n";
    let run = run.playbook("deploying", &deploying).playbook("parent", parent);
    let id = started_id(&kill_when(&run, &["run", "parent"], &started));
    run.exec(["resume", &id]).exit(5).stdout_has("`sub.deploy`");
    // As at the top level: refused until each output read after it is given
    // (by its playbook's steps and by its `outputs:`).
    run.exec(["resume", &id, "--mark-done", "sub.deploy"])
        .exit(2)
        .stderr_has("output `stdout`, output `stderr` of `sub.deploy`")
        .stderr_has("--set-output sub.deploy.stdout=VALUE");
    assert!(!marks.exists(), "nothing ran");
    run.exec([
        "resume",
        &id,
        "--mark-done",
        "sub.deploy",
        "--set-output",
        "sub.deploy.stdout=v1",
        "--set-output",
        "sub.deploy.stderr=",
    ])
    .exit(0);
    assert_eq!(lines(&marks), ["ok"]);
}

#[test]
fn a_call_s_own_on_failure_and_its_playbook_s_are_journalled_apart() {
    let run = Run::new();
    let marks = run.path().join("marks");
    let failing = format!(
        "apiVersion: runbook/v1\nname: failing\nversion: 1\nsteps:\n  - {{ id: boom, uses: shell, with: {{ run: \"exit 3\" }} }}\non_failure:\n  - {{ id: notify, uses: shell, with: {{ run: \"echo callee >> {m}\" }} }}\n",
        m = marks.display(),
    );
    let parent = format!(
        "apiVersion: runbook/v1\nname: parent\nversion: 1\nsteps:\n  - id: sub\n    uses: playbook\n    with: {{ name: failing }}\n    on_failure:\n      - {{ id: notify, uses: shell, with: {{ run: \"echo caller >> {m}\" }} }}\n",
        m = marks.display(),
    );
    let run = run.playbook("failing", &failing).playbook("parent", &parent);
    run.exec(["plan", "parent", "--output", "json"])
        .exit(0)
        .stdout_has("\"sub.on_failure.notify\"")
        .stdout_has("\"sub.call.on_failure.notify\"");
    let id = run.exec(["run", "parent"]).exit(1).run_id();
    assert_eq!(lines(&marks), ["callee", "caller"]);
    // Two handlers, two paths: each with its own record.
    let v = status_json(&run, &id);
    let rows: Vec<(String, String, u64)> = v["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["step"].as_str().unwrap().ends_with("notify"))
        .map(|s| {
            (
                s["step"].as_str().unwrap().to_owned(),
                s["state"].as_str().unwrap().to_owned(),
                s["attempts"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            ("sub.on_failure.notify".to_owned(), "succeeded".to_owned(), 1),
            ("sub.call.on_failure.notify".to_owned(), "succeeded".to_owned(), 1),
        ],
        "{v:#}"
    );
}
