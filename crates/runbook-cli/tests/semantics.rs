//! The engine's rules probed the way a skeptical operator would: small
//! playbooks of local `shell`, `sleep` and `approve` steps, with marker files
//! that show what ran and how often. Each test is named after the rule it
//! holds the engine to (book/src/language.md, runs.md, templates.md).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;
use support::{Run, kill_when, lines, started_id, status_json};

const HEAD: &str = "apiVersion: runbook/v1\nname: t\nversion: 1\n";

/// runs.md: "A run is executed by one process at a time."
#[test]
fn two_resumes_started_together_run_the_run_once() {
    for _ in 0..4 {
        let run = Run::new();
        let (flag, marks) = (run.path().join("flag"), run.path().join("marks"));
        let yaml = format!(
            "{HEAD}steps:\n  - {{ id: s1, uses: shell, with: {{ run: \"test -f {flag}\" }} }}\n  - {{ id: s2, uses: shell, with: {{ run: \"echo once >> {marks}; sleep 0.3\" }} }}\n",
            flag = flag.display(),
            marks = marks.display()
        );
        let run = run.playbook("t", &yaml);
        let id = run.exec(["run", "t"]).exit(1).run_id();
        std::fs::write(&flag, "").unwrap();
        let a = run.spawn(["resume", &id]);
        let b = run.spawn(["resume", &id]);
        let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
        let mut codes = [a.status.code(), b.status.code()];
        codes.sort();
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&a.stderr),
            String::from_utf8_lossy(&b.stderr)
        );
        // Either one ran it and the other was told it is being run (4), or the
        // second came after the first had finished it (2: nothing to resume).
        assert!(
            codes == [Some(0), Some(4)] || codes == [Some(0), Some(2)],
            "exit codes {codes:?}\n{said}"
        );
        assert_eq!(lines(&marks).len(), 1, "s2 ran once\n{said}");
        let v = status_json(&run, &id);
        assert_eq!(v["run"]["status"], "succeeded", "{v:#}");
    }
}

/// templates.md: "An input value is data in every shell context."
#[test]
fn input_values_stay_data_in_nested_shell_contexts() {
    let run = Run::new();
    let p = run.path().join("P");
    let yaml = format!(
        "{HEAD}inputs:\n  x: {{ type: string }}\nsteps:\n  - id: nested\n    uses: shell\n    with:\n      run: |\n        echo \"r: $(echo {{{{inputs.x}}}})\"\n        echo hi # {{{{inputs.x}}}}\n        cat <<EOF\n        h: {{{{inputs.x}}}}\n        EOF\n        case {{{{inputs.x}}}} in {{{{inputs.x}}}}) echo matched;; esac\n"
    );
    let run = run.playbook("t", &yaml);
    let value = format!("hi; touch {p}\ntouch {p} `touch {p}` $(touch {p})", p = p.display());
    let out = run.exec(["run", "t", "--set", &format!("x={value}")]).exit(0);
    assert!(!p.exists(), "the value ran as code\n{}", out.stdout);
    let first = value.lines().next().unwrap();
    assert!(out.stdout.contains(&format!("r: {first}")), "{}", out.stdout);
    assert!(
        out.stdout.contains(&format!("h: {first}")),
        "heredoc text without added quotes\n{}",
        out.stdout
    );
    assert!(out.stdout.contains("matched"), "{}", out.stdout);
}

/// templates.md: "A context where no quoting keeps a value data is refused."
#[test]
fn values_in_backticks_and_parameter_expansions_are_refused_before_anything_runs() {
    let run = Run::new();
    let yaml = format!(
        "{HEAD}inputs:\n  x: {{ type: string }}\nsteps:\n  - {{ id: a, uses: shell, with: {{ run: \"touch ran; echo `echo {{{{inputs.x}}}}`\" }} }}\n  - {{ id: b, uses: shell, with: {{ run: \"echo ${{HOME:-{{{{inputs.x}}}}}}\" }} }}\n"
    );
    let run = run.playbook("t", &yaml);
    run.exec(["validate", "t"])
        .exit(2)
        .stderr_has("a value inside backticks cannot be kept data")
        .stderr_has("use `$(...)` instead of backticks")
        .stderr_has("a value inside `${...}` cannot be kept data")
        .stderr_has("t/v1.yaml:7:63")
        .stderr_has("t/v1.yaml:8:54");
    run.exec(["run", "t", "--set", "x=1"]).exit(2);
    assert!(!run.path().join("ran").exists(), "nothing runs");
}

/// runs.md: "`resume: restart` applies to the failure whose handlers ran,
/// never to a later interruption."
#[test]
fn restart_applies_only_to_the_failure_whose_handlers_ran() {
    let run = Run::new();
    let (flag, first, second) = (
        run.path().join("flag"),
        run.path().join("first"),
        run.path().join("second"),
    );
    let yaml = format!(
        "{HEAD}steps:\n  - id: roll\n    for_each: [a]\n    resume: restart\n    steps:\n      - {{ id: s1, uses: shell, with: {{ run: \"echo s1 >> {first}\" }} }}\n      - {{ id: s2, uses: shell, with: {{ run: \"test -f {flag} || exit 1; echo s2 >> {second}; sleep 2\" }} }}\n    on_failure:\n      - {{ uses: shell, with: {{ run: \"echo handled\" }} }}\n",
        first = first.display(),
        second = second.display(),
        flag = flag.display()
    );
    let run = run.playbook("t", &yaml);
    let id = run.exec(["run", "t"]).exit(1).run_id();
    std::fs::write(&flag, "").unwrap();
    // The failure's handlers ran: the item starts again from its first step,
    // and is killed while its non-idempotent s2 runs.
    kill_when(&run, &["resume", &id], &second);
    assert_eq!(lines(&first).len(), 2, "s1 ran again once");
    // A later interruption resumes like any other: s2 was in flight.
    run.exec(["resume", &id]).exit(5).stdout_has("roll[a].s2");
    assert_eq!(lines(&first).len(), 2, "no third restart");
    assert_eq!(lines(&second).len(), 1, "s2 did not run again");
}

/// language.md: "`undo` runs in reverse completion order, across resumes,
/// once per completed item of a `for_each`."
#[test]
fn undo_after_a_resume_runs_in_reverse_completion_order_for_every_item() {
    let run = Run::new();
    let undo = run.path().join("undo");
    let yaml = format!(
        "{HEAD}steps:\n  - {{ id: ua, uses: shell, with: {{ run: \"true\" }}, undo: {{ uses: shell, with: {{ run: \"echo ua >> {u}\" }} }} }}\n  - id: fe\n    for_each: [x, y]\n    concurrency: 1\n    uses: shell\n    with: {{ run: \"true\" }}\n    undo: {{ uses: shell, with: {{ run: \"echo fe-{{{{item}}}} >> {u}\" }} }}\n  - {{ id: ub, uses: shell, with: {{ run: \"true\" }}, undo: {{ uses: shell, with: {{ run: \"echo ub >> {u}\" }} }} }}\n  - {{ id: gate, uses: approve, with: {{ message: go? }} }}\n",
        u = undo.display()
    );
    let run = run.playbook("t", &yaml);
    let id = run.exec(["run", "t"]).exit(3).run_id();
    run.exec(["reject", &id]).exit(1);
    assert_eq!(lines(&undo), ["ub", "fe-y", "fe-x", "ua"]);
}

/// runs.md: "A step whose `undo` ran runs again on resume."
#[test]
fn resume_after_undo_runs_the_undone_steps_again() {
    let run = Run::new();
    let (flag, marks) = (run.path().join("flag"), run.path().join("marks"));
    let yaml = format!(
        "{HEAD}steps:\n  - {{ id: a, uses: shell, with: {{ run: \"echo a >> {m}\" }}, undo: {{ uses: shell, with: {{ run: \"echo undo-a >> {m}\" }} }} }}\n  - {{ id: b, uses: shell, with: {{ run: \"test -f {f}\" }} }}\n",
        m = marks.display(),
        f = flag.display()
    );
    let run = run.playbook("t", &yaml);
    let id = run.exec(["run", "t"]).exit(1).stdout_has("a undone").run_id();
    std::fs::write(&flag, "").unwrap();
    run.exec(["resume", &id]).exit(0);
    assert_eq!(lines(&marks), ["a", "undo-a", "a"], "the effect is back");
}

/// language.md: "`continue_on_error` on a `for_each` tolerates the fan-out's
/// failure once `max_failures` has judged it."
#[test]
fn continue_on_error_on_a_for_each_keeps_max_failures() {
    let run = Run::new();
    let marks = run.path().join("marks");
    let yaml = format!(
        "{HEAD}steps:\n  - id: fe\n    for_each: [1, 2, 3, 4]\n    concurrency: 1\n    max_failures: 0\n    continue_on_error: true\n    uses: shell\n    with: {{ run: \"echo {{{{item}}}} >> {m}; test {{{{item}}}} != 1\" }}\n  - {{ id: after, uses: shell, with: {{ run: \"echo after\" }} }}\n",
        m = marks.display()
    );
    let run = run.playbook("t", &yaml);
    let out = run.exec(["run", "t", "--output", "json"]).exit(0);
    assert_eq!(lines(&marks), ["1"], "no item starts past the threshold");
    let failed = out
        .stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .any(|e| e["event"] == "step_failed" && e["step"] == "fe");
    assert!(failed, "the fan-out is recorded failed\n{}", out.stdout);
    assert!(out.outputs_of("after").is_object(), "the run went on");
}

/// language.md: "`timeout` and `retry` apply to calls, not to groups."
#[test]
fn timeout_and_retry_on_a_group_are_refused() {
    let yaml = format!(
        "{HEAD}steps:\n  - id: g\n    timeout: 1s\n    retry: 2\n    steps:\n      - {{ id: c, uses: shell, with: {{ run: \"true\" }} }}\n"
    );
    Run::new()
        .playbook("t", &yaml)
        .exec(["validate", "t"])
        .exit(2)
        .stderr_has("`timeout` applies to calls (`uses`), not to a group")
        .stderr_has("`retry` applies to calls (`uses`), not to a group")
        .stderr_has("t/v1.yaml:6:");
}

/// language.md: "Every `finally` step runs once per run end, whatever the
/// others did" (and so does every `on_failure` step).
#[test]
fn every_finally_and_on_failure_step_runs_whatever_the_others_did() {
    let run = Run::new();
    let marks = run.path().join("marks");
    let m = marks.display();
    let yaml = format!(
        "{HEAD}steps:\n  - {{ id: s, uses: shell, with: {{ run: \"exit 1\" }} }}\non_failure:\n  - {{ id: o1, uses: shell, with: {{ run: \"exit 1\" }} }}\n  - {{ id: o2, uses: shell, with: {{ run: \"echo o2 >> {m}\" }} }}\nfinally:\n  - {{ id: f1, uses: shell, with: {{ run: \"exit 1\" }} }}\n  - {{ id: f2, uses: shell, with: {{ run: \"echo f2 >> {m}\" }} }}\n  - {{ id: f3, uses: shell, with: {{ run: \"echo f3 >> {m}\" }} }}\n"
    );
    let run = run.playbook("t", &yaml);
    let id = run.exec(["run", "t"]).exit(1).run_id();
    assert_eq!(lines(&marks), ["o2", "f2", "f3"]);
    let v = status_json(&run, &id);
    let states: Vec<(String, String)> = v["steps"]
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
    for (step, state) in [
        ("finally.f1", "failed"),
        ("finally.f2", "succeeded"),
        ("finally.f3", "succeeded"),
    ] {
        assert!(
            states.contains(&(step.to_owned(), state.to_owned())),
            "{step} {state} in {states:?}"
        );
    }
}

/// runs.md: "Cancelling a run that waits runs its `finally` steps."
#[test]
fn cancel_of_a_waiting_run_runs_finally() {
    let run = Run::new();
    let marks = run.path().join("marks");
    let yaml = format!(
        "{HEAD}steps:\n  - {{ id: a, uses: shell, with: {{ run: \"echo a >> {m}\" }} }}\n  - {{ id: gate, uses: approve, with: {{ message: go? }} }}\n  - {{ id: b, uses: shell, with: {{ run: \"echo b >> {m}\" }} }}\nfinally:\n  - {{ id: f, uses: shell, with: {{ run: \"echo 'f {{{{steps.a.status}}}}' >> {m}\" }} }}\n",
        m = marks.display()
    );
    let run = run.playbook("t", &yaml);
    let id = run.exec(["run", "t"]).exit(3).run_id();
    run.exec(["cancel", &id]).exit(0).stdout_has("cancelled");
    assert_eq!(lines(&marks), ["a", "f succeeded"], "finally ran once, b never");
    assert_eq!(status_json(&run, &id)["run"]["status"], "cancelled");
}

/// runs.md: "`--mark-done` takes the outputs later steps read, and `--rerun`
/// takes the decision back."
#[test]
fn mark_done_asks_for_the_outputs_later_steps_read_and_rerun_takes_it_back() {
    let run = Run::new();
    let (started, marks) = (run.path().join("started"), run.path().join("marks"));
    let yaml = format!(
        "{HEAD}steps:\n  - {{ id: s2, uses: shell, with: {{ run: \"touch {st}; sleep 2; echo v1\" }} }}\n  - {{ id: s3, uses: shell, with: {{ run: \"test {{{{steps.s2.outputs.stdout}}}} = v1 && echo ok >> {m}\" }} }}\n",
        st = started.display(),
        m = marks.display()
    );
    let run = run.playbook("t", &yaml);
    let out = kill_when(&run, &["run", "t"], &started);
    let id = started_id(&out);
    run.exec(["resume", &id]).exit(5).stdout_has("`s2`");
    run.exec(["resume", &id, "--mark-done", "s2"])
        .exit(2)
        .stderr_has("output `stdout` of `s2`")
        .stderr_has("--set-output s2.stdout=VALUE");
    assert!(!marks.exists(), "nothing ran");
    // A wrong value: s3 reads it and fails.
    run.exec(["resume", &id, "--mark-done", "s2", "--set-output", "s2.stdout=v0"])
        .exit(1);
    assert!(!marks.exists());
    // The decision is taken back: s2 runs again, s3 reads its real output.
    run.exec(["resume", &id, "--rerun", "s2"]).exit(0);
    assert_eq!(lines(&marks), ["ok"]);
}

/// runs.md: "`steps.<for_each>.outputs.items` lists each item and how it
/// ended."
#[test]
fn validate_accepts_the_items_of_a_for_each() {
    let yaml = format!(
        "{HEAD}steps:\n  - {{ id: fe, for_each: [a, b], uses: shell, with: {{ run: \"echo {{{{item}}}}\" }} }}\n  - {{ id: n, uses: shell, with: {{ run: \"echo {{{{len steps.fe.outputs.items}}}}\" }} }}\n"
    );
    let run = Run::new().playbook("t", &yaml);
    run.exec(["validate", "t"]).exit(0);
    let out = run.exec(["run", "t", "--output", "json"]).exit(0);
    assert_eq!(out.outputs_of("n")["stdout"], "2");
}

/// language.md (shell): "`stdout` keeps `max_output` (1MB by default) and
/// says when it was cut."
#[test]
fn shell_output_beyond_max_output_is_marked_and_the_limit_is_configurable() {
    let big = "python3 -c 'import json; print(json.dumps([\\\"x\\\" * 100] * 17000))'";
    let yaml = format!(
        "{HEAD}steps:\n  - {{ id: cut, uses: shell, with: {{ run: \"{big}\" }} }}\n  - {{ id: kept, uses: shell, with: {{ run: \"{big}\", json: true, max_output: 4MB }} }}\n  - {{ id: says, uses: shell, with: {{ run: \"echo {{{{steps.cut.outputs.stdout_truncated}}}} {{{{len steps.kept.outputs.json}}}}\" }} }}\n  - {{ id: refused, uses: shell, with: {{ run: \"{big}\", json: true }} }}\n"
    );
    let run = Run::new().playbook("t", &yaml);
    let out = run
        .exec(["run", "t", "--output", "json"])
        .exit(1)
        .stdout_has("longer than the 1048576 bytes kept (hint: raise `max_output`)");
    assert_eq!(out.outputs_of("says")["stdout"], "true 17000");
    assert_eq!(out.outputs_of("cut")["stdout"].as_str().map(str::len), Some(1 << 20));
}

/// language.md: "A timeout stops the step; a local command's whole session
/// is killed, also what made a process group of its own."
#[test]
fn a_timeout_kills_what_the_command_started_in_its_own_process_group() {
    let run = Run::new();
    let pidfile = run.path().join("pid");
    let yaml = format!(
        "{HEAD}steps:\n  - {{ id: slow, uses: shell, timeout: 1s, with: {{ run: \"timeout 300 sh -c 'echo $$ > {p}; exec sleep 307'\" }} }}\n",
        p = pidfile.display()
    );
    let run = run.playbook("t", &yaml);
    run.exec(["run", "t"]).exit(1).stdout_has("timed out after 1s");
    let pid = std::fs::read_to_string(&pidfile).unwrap();
    // It was stopped before the run ended (SIGTERM, which `timeout` passes
    // on and then reaps it, or SIGKILL); the kernel takes a moment to tear
    // the process down on a loaded machine. Gone, or a zombie, is dead.
    let alive = || {
        std::fs::read_to_string(format!("/proc/{}/stat", pid.trim())).is_ok_and(|stat| {
            stat.rsplit(')')
                .next()
                .is_some_and(|r| !r.trim_start().starts_with('Z'))
        })
    };
    let until = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while alive() && std::time::Instant::now() < until {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(!alive(), "sleep 307 (pid {}) outlived its step", pid.trim());
}

/// runs.md: "An output is data for the next step, whatever bytes it holds."
#[test]
fn a_nul_byte_in_an_output_does_not_break_the_next_step() {
    let yaml = format!(
        "{HEAD}steps:\n  - {{ id: a, uses: shell, with: {{ run: \"printf 'x\\\\000y'\" }} }}\n  - {{ id: b, uses: shell, with: {{ run: \"echo got {{{{steps.a.outputs.stdout}}}}\" }} }}\n"
    );
    let out = Run::new()
        .playbook("t", &yaml)
        .exec(["run", "t", "--output", "json"])
        .exit(0);
    assert_eq!(out.outputs_of("b")["stdout"], "got x\u{FFFD}y");
}

/// language.md (inputs): "A list's items take its `items` type, from any
/// source"; an inputs file written by a JSON tool reads as meant.
#[test]
fn list_items_take_their_type_and_json_inputs_files_keep_every_character() {
    let run = Run::new();
    let file = run.path().join("inputs.json");
    std::fs::write(&file, "{\"hosts\": [1, 2], \"note\": \"\\ud83d\\ude00 ok\"}").unwrap();
    let yaml = format!(
        "{HEAD}inputs:\n  hosts: {{ type: list, items: string }}\n  note: {{ type: string }}\nsteps:\n  - {{ id: a, uses: shell, with: {{ run: \"echo {{{{json inputs.hosts}}}} {{{{inputs.note}}}}\" }} }}\n"
    );
    let out = run
        .playbook("t", &yaml)
        .exec(["run", "t", "--inputs", file.to_str().unwrap(), "--output", "json"])
        .exit(0);
    assert_eq!(out.outputs_of("a")["stdout"], "[\"1\",\"2\"] \u{1F600} ok");
}

/// runs.md: "A second Ctrl-C kills the running steps; they are recorded
/// interrupted."
#[test]
fn after_a_second_interrupt_status_shows_the_killed_step_interrupted() {
    let run = Run::new();
    let started = run.path().join("started");
    let yaml = format!(
        "{HEAD}steps:\n  - {{ id: stubborn, uses: shell, with: {{ run: \"trap '' TERM; touch {s}; sleep 20\" }} }}\n",
        s = started.display()
    );
    let run = run.playbook("t", &yaml);
    let child = run.spawn(["run", "t"]);
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
    while !started.exists() {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(5));
    let id = started_id(&String::from_utf8_lossy(&out.stdout));
    let v = status_json(&run, &id);
    let row = v["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["step"] == "stubborn")
        .cloned();
    assert_eq!(
        row.map(|r| r["state"].clone()),
        Some(serde_json::json!("interrupted")),
        "{v:#}"
    );
}

/// runs.md: "Resume stops as `uncertain` and names every non-idempotent step
/// that was in flight."
#[test]
fn uncertain_names_every_item_that_was_in_flight() {
    let run = Run::new();
    let marks = run.path().join("marks");
    let yaml = format!(
        "{HEAD}steps:\n  - id: fe\n    for_each: [a, b]\n    concurrency: 2\n    uses: shell\n    with: {{ run: \"echo {{{{item}}}} >> {m}; sleep 2\" }}\n",
        m = marks.display()
    );
    let run = run.playbook("t", &yaml);
    let child = run.spawn(["run", "t"]);
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
    while lines(&marks).len() < 2 {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).unwrap();
    let out = child.wait_with_output().unwrap();
    let id = started_id(&String::from_utf8_lossy(&out.stdout));
    run.exec(["resume", &id])
        .exit(5)
        .stdout_has("`fe[a]`")
        .stdout_has("`fe[b]`");
}

/// language.md (inputs): "An input without a `default` is required unless it
/// says `required: false`; a run or plan without one is refused."
#[test]
fn an_input_without_a_default_is_required() {
    let run = Run::new();
    let marks = run.path().join("marks");
    let yaml = format!(
        "{HEAD}inputs:\n  release: {{ type: string, description: the release to deploy }}\n  note: {{ type: string, required: false }}\n  batch: {{ type: integer }}\nsteps:\n  - {{ id: a, uses: shell, with: {{ run: \"echo ran >> {m}\" }} }}\n",
        m = marks.display()
    );
    let run = run.playbook("t", &yaml);
    for cmd in ["run", "plan"] {
        run.exec([cmd, "t"])
            .exit(2)
            .stderr_has("input `release`: is required (a string: the release to deploy)")
            .stderr_has("input `batch`: is required (an integer)")
            .stderr_has("--set release=");
    }
    assert!(!marks.exists(), "nothing ran");
    run.exec(["run", "t", "--set", "release=v2", "--set", "batch=1"])
        .exit(0);
}

/// language.md: "Every template known at start renders before the first step
/// starts; one that cannot refuses the run, naming the step and field."
#[test]
fn a_template_that_cannot_render_at_start_refuses_the_run_before_anything_changes() {
    let run = Run::new();
    let marks = run.path().join("marks");
    let inventory = run.path().join("inventory.yaml");
    std::fs::write(
        &inventory,
        "hosts:\n  web1: { address: 127.0.0.1 }\ngroups:\n  web: [web1]\n",
    )
    .unwrap();
    let yaml = format!(
        "{HEAD}inputs:\n  group: {{ type: string, default: workers }}\n  n: {{ type: string, default: x }}\nsteps:\n  - {{ id: first, uses: shell, with: {{ run: \"echo first >> {m}\" }} }}\n  - id: each\n    for_each: \"{{{{lookup inventory.groups inputs.group}}}}\"\n    uses: shell\n    with: {{ run: \"echo {{{{item}}}}\" }}\n  - {{ id: math, uses: shell, with: {{ run: \"echo $(( {{{{inputs.n}}}} + 1 ))\" }} }}\n  - {{ id: later, uses: shell, with: {{ run: \"echo {{{{steps.first.outputs.stdout}}}}\" }} }}\n",
        m = marks.display()
    );
    let run = run.playbook("t", &yaml);
    run.exec(["--inventory", inventory.to_str().unwrap(), "run", "t"])
        .exit(2)
        .stderr_has("step `each`, `for_each`: the inventory has no group `workers`; its groups are: web")
        .stderr_has("step `math`, `with.run`: ")
        .stderr_has("must be an integer")
        .stderr_has("nothing was run");
    assert!(!marks.exists(), "no step ran");
    run.exec([
        "--inventory",
        inventory.to_str().unwrap(),
        "run",
        "t",
        "--set",
        "group=web",
        "--set",
        "n=41",
    ])
    .exit(0);
}

/// language.md: "A handler can tell a step that never acted from one that
/// acted and failed (`steps.ID.acted`)."
#[test]
fn a_handler_knows_whether_the_step_it_compensates_ever_acted() {
    let run = Run::new();
    let marks = run.path().join("marks");
    let m = marks.display();
    // `deploy` reads an output `probe` does not have: it fails before acting.
    let yaml = format!(
        "{HEAD}inputs:\n  fail_in: {{ type: string }}\nsteps:\n  - {{ id: probe, uses: shell, with: {{ run: \"echo '{{\\\"a\\\": 1}}'\", json: true }} }}\n  - id: deploy\n    uses: shell\n    with: {{ run: \"echo deployed >> {m}; test {{{{inputs.fail_in}}}} != deploy && echo {{{{#if (eq inputs.fail_in 'render')}}}}{{{{steps.probe.outputs.json.b}}}}{{{{/if}}}}\" }}\n    on_failure:\n      - {{ id: rollback, when: \"{{{{steps.deploy.acted}}}}\", uses: shell, with: {{ run: \"echo rolled-back >> {m}\" }} }}\n"
    );
    let run = run.playbook("t", &yaml);
    let id = run.exec(["run", "t", "--set", "fail_in=render"]).exit(1).run_id();
    assert!(!marks.exists(), "never acted, never rolled back");
    // The journal says it failed before acting: `status` shows it refused.
    let v = status_json(&run, &id);
    let deploy = v["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["step"] == "deploy")
        .cloned();
    assert_eq!(
        deploy.map(|d| d["state"].clone()),
        Some(serde_json::json!("refused")),
        "{v:#}"
    );
    run.exec(["run", "t", "--set", "fail_in=deploy"]).exit(1);
    assert_eq!(lines(&marks), ["deployed", "rolled-back"]);
}

/// language.md: "A literal duration or size in `with:` is checked before
/// anything runs; a templated one when the run starts."
#[test]
fn durations_and_sizes_are_checked_before_anything_runs() {
    let run = Run::new();
    let marks = run.path().join("marks");
    let bad = format!(
        "{HEAD}steps:\n  - {{ id: a, uses: shell, with: {{ run: \"echo a >> {m}\" }} }}\n  - {{ id: nap, uses: sleep, with: {{ duration: \"ten seconds\" }} }}\n",
        m = marks.display()
    );
    let run = run.playbook("t", &bad);
    run.exec(["validate", "t"])
        .exit(2)
        .stderr_has("`duration`: `ten seconds` is not a duration")
        .stderr_has("t/v1.yaml:6:");
    run.exec(["run", "t"]).exit(2);
    let templated = format!(
        "{HEAD}inputs:\n  d: {{ type: string }}\nsteps:\n  - {{ id: a, uses: shell, with: {{ run: \"echo a >> {m}\" }} }}\n  - {{ id: nap, uses: sleep, with: {{ duration: \"{{{{inputs.d}}}}\" }} }}\n",
        m = marks.display()
    );
    let run = run.playbook("t", &templated);
    run.exec(["validate", "t"]).exit(0);
    run.exec(["run", "t", "--set", "d=soon"])
        .exit(2)
        .stderr_has("step `nap`, `with.duration`: `soon` is not a duration");
    assert!(!marks.exists(), "nothing ran");
    run.exec(["run", "t", "--set", "d=10ms"]).exit(0);
}

/// runs.md: "`resume` says when the playbook file changed since the run
/// started; `--to-current` continues on the new text only if it agrees with
/// what already ran."
#[test]
fn resume_says_the_playbook_changed_and_to_current_checks_what_already_ran() {
    let run = Run::new();
    let marks = run.path().join("marks");
    let m = marks.display();
    let v1 = format!(
        "{HEAD}steps:\n  - {{ id: s1, uses: shell, with: {{ run: \"echo s1 >> {m}\" }} }}\n  - {{ id: s2, uses: shell, with: {{ run: \"exitt 0\" }} }}\n"
    );
    let run = run.playbook("t", &v1);
    let id = run.exec(["run", "t"]).exit(1).run_id();
    // The operator fixes the typo; a plain resume still runs the text it started with.
    let fixed = v1.replace("exitt 0", &format!("echo s2 >> {m}"));
    let run = run.playbook("t", &fixed);
    run.exec(["resume", &id])
        .exit(1)
        .stderr_has("changed since run")
        .stderr_has("--to-current");
    // A text that changes a step already done is refused, naming it.
    let other = fixed.replace("echo s1", "echo S1");
    let run = run.playbook("t", &other);
    run.exec(["resume", &id, "--to-current"])
        .exit(2)
        .stderr_has("changes steps this run already finished: `s1` changed");
    let run = run.playbook("t", &fixed);
    run.exec(["resume", &id, "--to-current"]).exit(0);
    assert_eq!(lines(&marks), ["s1", "s2"], "s1 once, then the fixed s2");
}

/// language.md: "The items of a literal `for_each` list are templates like
/// any other value."
#[test]
fn the_items_of_a_literal_for_each_list_are_rendered() {
    let run = Run::new();
    let marks = run.path().join("marks");
    let yaml = format!(
        "{HEAD}inputs:\n  a: {{ type: string, default: one }}\nsteps:\n  - {{ id: made, uses: shell, with: {{ run: echo two }} }}\n  - id: each\n    for_each: [\"{{{{inputs.a}}}}\", \"{{{{steps.made.outputs.stdout}}}}\", 3]\n    steps:\n      - {{ id: mark, uses: shell, with: {{ run: \"echo {{{{item}}}} >> {m}\" }} }}\n",
        m = marks.display()
    );
    let run = run.playbook("t", &yaml);
    run.exec(["run", "t"]).exit(0);
    let mut got = lines(&marks);
    got.sort();
    assert_eq!(got, ["3", "one", "two"]);
    // An item that names nothing is found by validate, with its place.
    let bad = yaml.replace("inputs.a}}", "inputs.nope}}");
    let run = Run::new().playbook("t", &bad);
    run.exec(["validate", "t"]).exit(2).stderr_has("undefined input `nope`");
}
