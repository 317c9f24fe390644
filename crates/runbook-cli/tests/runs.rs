//! Running playbooks: what an operator sees happen. Each test runs the real
//! binary against a playbook of its own, with a state file of its own.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;
use std::time::Duration;
use support::{Run, lines, status_json};

const HEAD: &str = "apiVersion: runbook/v1\nname: t\nversion: 1\n";

fn step<'a>(v: &'a serde_json::Value, path: &str) -> &'a serde_json::Value {
    v["steps"]
        .as_array()
        .and_then(|a| a.iter().find(|s| s["step"] == path))
        .unwrap_or_else(|| panic!("no step `{path}` in {v:#}"))
}

/// True if the process is still running. A zombie is dead: it was killed and
/// only waits to be reaped by PID 1 (which, in some sandboxes, never reaps).
fn pid_alive(pid: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{}/stat", pid.trim()))
        .map(|s| {
            s.rsplit(')')
                .next()
                .is_some_and(|rest| !rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

#[test]
fn retry_with_backoff_until_it_works() {
    let run = Run::new();
    let n = run.path().join("n");
    let yaml = format!(
        "{HEAD}steps:\n  - id: flaky\n    uses: shell\n    with: {{ run: \"c=$(cat {n} 2>/dev/null || echo 0); c=$((c+1)); echo $c > {n}; test $c -ge 3\" }}\n    retry: {{ attempts: 5, delay: 10ms, backoff: exponential, max_delay: 50ms }}\n",
        n = n.display()
    );
    let run = run.playbook("t", &yaml);
    let out = run.exec(["run", "t"]).exit(0).stdout_has("▶ flaky (attempt 3)");
    let v = status_json(&run, &out.run_id());
    assert_eq!(step(&v, "flaky")["attempts"], 3);
    assert_eq!(step(&v, "flaky")["state"], "succeeded");
}

#[test]
fn retry_gives_up_after_its_attempts() {
    let yaml = format!(
        "{HEAD}steps:\n  - {{ id: never, uses: shell, retry: 2, with: {{ run: \"echo nope >&2; exit 7\" }} }}\n  - {{ id: after, uses: shell, with: {{ run: \"true\" }} }}\n"
    );
    let run = Run::new().playbook("t", &yaml);
    let out = run
        .exec(["run", "t"])
        .exit(1)
        .stdout_has("✗ never")
        .stdout_has("exited with status 7: nope, will retry")
        .stdout_lacks("▶ after");
    let v = status_json(&run, &out.run_id());
    assert_eq!(step(&v, "never")["attempts"], 2);
    assert_eq!(v["run"]["status"], "failed");
}

#[test]
fn retry_until_a_condition_on_outputs() {
    let run = Run::new();
    let n = run.path().join("n");
    let yaml = format!(
        "{HEAD}steps:\n  - id: poll\n    uses: shell\n    with: {{ run: \"c=$(cat {n} 2>/dev/null || echo 0); c=$((c+1)); echo $c > {n}; echo $c\" }}\n    retry: {{ attempts: 6, delay: 10ms, until: \"{{{{gte steps.poll.outputs.stdout 4}}}}\" }}\n  - {{ id: show, uses: shell, with: {{ run: \"echo got {{{{steps.poll.outputs.stdout}}}}\" }} }}\n",
        n = n.display()
    );
    let run = run.playbook("t", &yaml);
    run.exec(["run", "t"]).exit(0).stdout_has("show │ got 4");
}

#[test]
fn a_timeout_kills_the_whole_process_group() {
    let run = Run::new();
    let pidfile = run.path().join("grandchild");
    let yaml = format!(
        "{HEAD}steps:\n  - id: hang\n    uses: shell\n    timeout: 300ms\n    with: {{ run: \"sh -c 'sleep 300 & echo $! > {p}; wait' ; echo never\" }}\n",
        p = pidfile.display()
    );
    let run = run.playbook("t", &yaml);
    run.exec(["run", "t"])
        .exit(1)
        .stdout_has("timed out after 300ms; the step was stopped (a local command's whole session is killed)");
    let pid = std::fs::read_to_string(&pidfile).expect("grandchild pid");
    std::thread::sleep(Duration::from_millis(100));
    assert!(!pid_alive(&pid), "grandchild {pid} survived the timeout");
}

#[test]
fn when_false_skips_and_dependents_still_run() {
    let yaml = format!(
        "{HEAD}inputs:\n  env: {{ type: string, default: staging }}\nsteps:\n  - {{ id: prod-only, uses: shell, when: '{{{{eq inputs.env \"prod\"}}}}', with: {{ run: \"echo prod\" }} }}\n  - {{ id: next, uses: shell, with: {{ run: \"echo status={{{{steps.prod-only.status}}}}\" }} }}\n"
    );
    let run = Run::new().playbook("t", &yaml);
    let out = run
        .exec(["run", "t"])
        .exit(0)
        .stdout_has("↷ prod-only skipped: `when: {{eq inputs.env \"prod\"}}` is false")
        .stdout_has("next │ status=skipped");
    let v = status_json(&run, &out.run_id());
    assert_eq!(step(&v, "prod-only")["state"], "skipped");
    run.exec(["run", "t", "--set", "env=prod"])
        .exit(0)
        .stdout_has("prod-only │ prod");
}

#[test]
fn continue_on_error_keeps_going() {
    let yaml = format!(
        "{HEAD}steps:\n  - {{ id: optional, uses: shell, continue_on_error: true, with: {{ run: \"exit 3\" }} }}\n  - {{ id: next, uses: shell, with: {{ run: \"echo ran\" }} }}\n"
    );
    let run = Run::new().playbook("t", &yaml);
    let out = run.exec(["run", "t"]).exit(0).stdout_has("next │ ran");
    assert_eq!(step(&status_json(&run, &out.run_id()), "optional")["state"], "failed");
}

#[test]
fn handlers_undo_in_reverse_and_finally() {
    let run = Run::new();
    let m = run.path().join("m");
    let mark = |s: &str| format!("echo {s} >> {}", m.display());
    let yaml = format!(
        "{HEAD}steps:\n\
         \x20 - {{ id: a, uses: shell, with: {{ run: \"{}\" }}, undo: {{ uses: shell, with: {{ run: \"{}\" }} }} }}\n\
         \x20 - {{ id: b, uses: shell, with: {{ run: \"{}\" }}, undo: [{{ uses: shell, with: {{ run: \"{}\" }} }}] }}\n\
         \x20 - id: c\n    uses: shell\n    with: {{ run: \"{}; exit 1\" }}\n    on_failure:\n      - {{ uses: shell, with: {{ run: \"{} {{{{steps.c.status}}}}\" }} }}\n\
         on_failure:\n  - {{ uses: shell, with: {{ run: \"{}\" }} }}\n\
         finally:\n  - {{ uses: shell, with: {{ run: \"{}\" }} }}\n",
        mark("a"),
        mark("undo-a"),
        mark("b"),
        mark("undo-b"),
        mark("c"),
        mark("c-failed"),
        mark("run-failed"),
        mark("finally"),
    );
    let run = run.playbook("t", &yaml);
    run.exec(["run", "t"]).exit(1);
    assert_eq!(
        lines(&m),
        [
            "a",
            "b",
            "c",
            "c-failed failed",
            "run-failed",
            "undo-b",
            "undo-a",
            "finally"
        ]
    );
}

#[test]
fn finally_runs_on_success_and_its_failure_fails_the_run() {
    let yaml = format!(
        "{HEAD}steps:\n  - {{ id: a, uses: shell, with: {{ run: \"true\" }} }}\nfinally:\n  - {{ uses: shell, with: {{ run: \"exit 4\" }} }}\n"
    );
    Run::new()
        .playbook("t", &yaml)
        .exec(["run", "t"])
        .exit(1)
        .stdout_has("a `finally` step failed");
}

#[test]
fn max_failures_is_exceeded_only_past_the_limit() {
    let body = |limit: &str| {
        format!(
            "{HEAD}steps:\n  - id: fan\n    for_each: [ok1, bad1, ok2, bad2]\n    max_failures: {limit}\n    steps:\n      - {{ id: x, uses: shell, with: {{ run: \"case {{{{item}}}} in bad*) exit 1;; esac\" }} }}\n"
        )
    };
    // 2 of 4 failed: 50% tolerates it, 1 does not.
    Run::new().playbook("t", &body("\"50%\"")).exec(["run", "t"]).exit(0);
    Run::new()
        .playbook("t", &body("1"))
        .exec(["run", "t"])
        .exit(1)
        .stdout_has("2 of 4 items failed (max_failures 1)");
}

#[test]
fn a_ramp_runs_a_canary_first_and_stops_on_failure() {
    let run = Run::new();
    let m = run.path().join("m");
    let yaml = format!(
        "{HEAD}steps:\n  - id: roll\n    for_each: [h1, h2, h3, h4, h5]\n    concurrency: [1, 2, 100%]\n    steps:\n      - {{ id: x, uses: shell, with: {{ run: \"echo start-{{{{item}}}} >> {m}; sleep 0.4; echo end-{{{{item}}}} >> {m}\" }} }}\n",
        m = m.display()
    );
    let run = run.playbook("t", &yaml);
    run.exec(["run", "t"]).exit(0);
    let l = lines(&m);
    // The canary runs alone; the next batch of two only starts after it.
    assert_eq!(&l[..2], ["start-h1", "end-h1"]);
    let pos = |s: &str| l.iter().position(|x| x == s).expect(s);
    assert!(
        pos("start-h2") < pos("end-h3") && pos("start-h3") < pos("end-h2"),
        "h2 and h3 ran together: {l:?}"
    );
    assert!(
        pos("end-h2") < pos("start-h4") && pos("end-h3") < pos("start-h4"),
        "batch 3 waited: {l:?}"
    );

    // With a failing canary and max_failures 0, nothing else starts.
    let bad = yaml.replace(
        "echo start-{{item}}",
        "test {{item}} != h1 || exit 1; echo start-{{item}}",
    );
    let run2 = Run::new().playbook("t", &bad);
    run2.exec(["run", "t"])
        .exit(1)
        .stdout_has("1 of 5 items failed (max_failures 0); 4 items were not started");
}

#[test]
fn parallel_branches_and_outputs_flow() {
    let yaml = format!(
        "{HEAD}steps:\n  - {{ id: a, uses: shell, with: {{ run: \"echo '{{\\\"v\\\": [1, 2]}}'\", json: true }} }}\n  - {{ id: b, uses: shell, needs: [a], with: {{ run: \"echo {{{{len steps.a.outputs.json.v}}}}\" }} }}\n  - {{ id: c, uses: shell, needs: [a], with: {{ run: \"echo c\" }} }}\n  - {{ id: d, uses: shell, needs: [b, c], with: {{ run: \"echo {{{{steps.b.outputs.stdout}}}}-{{{{steps.c.outputs.stdout}}}}\" }} }}\n"
    );
    Run::new()
        .playbook("t", &yaml)
        .exec(["run", "t"])
        .exit(0)
        .stdout_has("d │ 2-c");
}

#[test]
fn json_events_one_per_line() {
    let yaml = format!("{HEAD}steps:\n  - {{ id: a, uses: shell, with: {{ run: \"echo hi\" }} }}\n");
    let out = Run::new()
        .playbook("t", &yaml)
        .exec(["run", "t", "--output", "json"])
        .exit(0);
    let events: Vec<serde_json::Value> = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    // `contained` (where the host gives runbook a cgroup) is bookkeeping.
    let events: Vec<serde_json::Value> = events.into_iter().filter(|e| e["event"] != "contained").collect();
    let names: Vec<&str> = events.iter().filter_map(|e| e["event"].as_str()).collect();
    assert_eq!(
        names,
        ["run_started", "step_started", "log", "step_succeeded", "run_finished"]
    );
    assert_eq!(events[2]["line"], "hi");
    assert_eq!(events[3]["outputs"]["stdout"], "hi");
    assert_eq!(events[4]["status"], "succeeded");
    assert!(events.iter().all(|e| e["run"].is_string() || e["event"] == "log"));
}

#[test]
fn stdin_env_cwd_and_logs() {
    let run = Run::new();
    let yaml = format!(
        "{HEAD}steps:\n  - {{ id: a, uses: shell, with: {{ run: \"cat; echo $GREETING; pwd\", stdin: \"from stdin\\n\", env: {{ GREETING: hello }}, cwd: {} }} }}\n",
        run.path().display()
    );
    let run = run.playbook("t", &yaml);
    let out = run.exec(["run", "t"]).exit(0);
    let logs = run.exec(["logs", &out.run_id()]).exit(0);
    assert_eq!(
        logs.stdout,
        format!("a │ from stdin\na │ hello\na │ {}\n", run.path().display())
    );
}

#[test]
fn finished_runs_cannot_be_resumed_and_history_lists_runs() {
    let yaml = format!("{HEAD}steps:\n  - {{ id: a, uses: shell, with: {{ run: \"true\" }} }}\n");
    let run = Run::new().playbook("t", &yaml);
    let id = run.exec(["run", "t"]).exit(0).run_id();
    run.exec(["resume", &id])
        .exit(2)
        .stderr_has("finished as succeeded; it cannot be resumed");
    run.exec(["history", "t"])
        .exit(0)
        .stdout_has(&id)
        .stdout_has("succeeded");
    run.exec(["status"]).exit(0).stdout_has(&id);
    run.exec(["resume", "nosuchrun"])
        .exit(2)
        .stderr_has("no run `nosuchrun`");
}

#[test]
fn cancel_from_another_process() {
    let run = Run::new();
    let pidfile = run.path().join("child");
    let yaml = format!(
        "{HEAD}steps:\n  - {{ id: long, uses: shell, with: {{ run: \"echo $$ > {p}; sleep 300\" }} }}\n  - {{ id: never, uses: shell, with: {{ run: \"true\" }} }}\n",
        p = pidfile.display()
    );
    let run = run.playbook("t", &yaml);
    let child = run.spawn(["run", "t"]);
    let mut waited = 0;
    while !pidfile.exists() && waited < 100 {
        std::thread::sleep(Duration::from_millis(50));
        waited += 1;
    }
    let runs = run.exec(["status", "--output", "json"]).exit(0);
    let v: serde_json::Value = serde_json::from_str(&runs.stdout).expect("json");
    let id = v[0]["id"].as_str().expect("run id").to_owned();
    run.exec(["cancel", &id]).exit(0).stdout_has("cancel requested");
    let out = child.wait_with_output().expect("waits");
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stdout));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("run ") && stdout.contains("cancelled"), "{stdout}");
    let pid = std::fs::read_to_string(&pidfile).expect("pid");
    std::thread::sleep(Duration::from_millis(100));
    assert!(!pid_alive(&pid), "the step's process {pid} survived the cancel");
    let v = status_json(&run, &id);
    assert_eq!(v["run"]["status"], "cancelled");
    assert_eq!(step(&v, "long")["state"], "interrupted");
    run.exec(["resume", &id]).exit(2).stderr_has("finished as cancelled");
}

#[test]
fn ctrl_c_stops_cleanly_runs_handlers_and_resumes() {
    let run = Run::new();
    let m = run.path().join("m");
    let go = run.path().join("go");
    let yaml = format!(
        "{HEAD}steps:\n  - {{ id: a, uses: shell, with: {{ run: \"echo a >> {m}\" }} }}\n  - {{ id: b, uses: shell, idempotent: true, with: {{ run: \"echo b-start >> {m}; while [ ! -f {go} ]; do sleep 0.05; done; echo b >> {m}\" }} }}\n  - {{ id: c, uses: shell, with: {{ run: \"echo c >> {m}\" }} }}\nfinally:\n  - {{ uses: shell, with: {{ run: \"echo finally >> {m}\" }} }}\n",
        m = m.display(),
        go = go.display()
    );
    let run = run.playbook("t", &yaml);
    let child = run.spawn(["run", "t"]);
    let mut waited = 0;
    while !lines(&m).contains(&"b-start".to_owned()) && waited < 200 {
        std::thread::sleep(Duration::from_millis(25));
        waited += 1;
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid")),
        nix::sys::signal::Signal::SIGINT,
    )
    .expect("signal");
    let out = child.wait_with_output().expect("waits");
    assert_eq!(out.status.code(), Some(5), "interrupted exits 5");
    assert_eq!(lines(&m), ["a", "b-start", "finally"]);
    // Nothing of the step is left running.
    std::thread::sleep(Duration::from_millis(100));
    let ps = std::process::Command::new("ps")
        .args(["-eo", "args"])
        .output()
        .expect("ps");
    let marker = go.display().to_string();
    assert!(
        !String::from_utf8_lossy(&ps.stdout).contains(&marker),
        "a process of the step survived Ctrl-C"
    );
    let id = String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| {
            l.strip_prefix("run ")
                .and_then(|r| r.strip_suffix(" started"))
                .map(str::to_owned)
        })
        .expect("id");
    assert_eq!(status_json(&run, &id)["run"]["status"], "interrupted");
    // Resume: `a` is not redone, `b` (idempotent, in flight) runs again, then the rest.
    std::fs::write(&m, "").expect("reset");
    std::fs::write(&go, "").expect("go");
    run.exec(["resume", &id]).exit(0);
    assert_eq!(lines(&m), ["b-start", "b", "c", "finally"]);
}

#[test]
fn secrets_never_reach_logs_outputs_errors_or_the_journal() {
    // A property over several secret values, some with shell and regex
    // metacharacters: whatever the step prints, returns or fails with, the
    // secret is masked on the terminal, in `logs`, in `status`, and in the
    // bytes of the state file.
    for secret in ["hunter2-pw", "p@$$ w0rd!", "a.b*c[d]", "x'y\"z", "Zm9vYmFy=="] {
        let yaml = format!(
            "{HEAD}secrets: [TOKEN]\nsteps:\n  - {{ id: leak, uses: shell, with: {{ run: \"echo out $T; echo err $T >&2; echo '{{\\\"k\\\": \\\"'$T'\\\"}}'\", json: false, env: {{ T: \"{{{{secrets.TOKEN}}}}\" }} }} }}\n  - {{ id: fail, uses: shell, with: {{ run: \"echo fail {{{{secrets.TOKEN}}}} >&2; exit 1\" }} }}\n"
        );
        let run = Run::new().playbook("t", &yaml).env("TOKEN", secret);
        let out = run.exec(["run", "t"]).exit(1);
        assert!(
            !out.stdout.contains(secret) && !out.stderr.contains(secret),
            "terminal shows {secret:?}:\n{}",
            out.stdout
        );
        assert!(out.stdout.contains("***"), "nothing was masked:\n{}", out.stdout);
        let id = out.run_id();
        let logs = run.exec(["logs", &id]).exit(0);
        assert!(
            !logs.stdout.contains(secret) && logs.stdout.contains("leak │ out ***"),
            "{}",
            logs.stdout
        );
        let status = run.exec(["status", &id, "--output", "json"]).exit(0);
        assert!(!status.stdout.contains(secret), "{}", status.stdout);
        let events = run.exec(["run", "t", "--output", "json"]).exit(1);
        assert!(!events.stdout.contains(secret), "{}", events.stdout);
        for file in ["state.db", "state.db-wal"] {
            let bytes = std::fs::read(run.path().join(file)).unwrap_or_default();
            let needle = secret.as_bytes();
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle),
                "{file} contains {secret:?}"
            );
        }
    }
}

/// language.md (secrets): "`command`: its standard output is the value, run
/// when the run starts and again when it resumes".
#[test]
fn a_secret_from_a_command_is_masked_refetched_on_resume_and_a_failing_one_refuses() {
    let run = Run::new();
    let dir = run.path().display().to_string();
    std::fs::write(run.path().join("vault"), "first-s3cret\n").unwrap();
    let yaml = format!(
        "{HEAD}secrets:\n  - {{ name: token, command: \"echo read >> {dir}/reads; cat {dir}/vault\" }}\nsteps:\n  - {{ id: a, uses: shell, with: {{ run: \"echo {{{{secrets.token}}}}; printf %s {{{{secrets.token}}}} > {dir}/a\" }} }}\n  - {{ id: ok, uses: approve, needs: [a], with: {{ message: go }} }}\n  - {{ id: b, uses: shell, needs: [ok], with: {{ run: \"printf %s {{{{secrets.token}}}} > {dir}/b\" }} }}\n"
    );
    let run = run.playbook("t", &yaml);
    let out = run.exec(["run", "t"]).exit(3);
    assert!(
        out.stdout.contains("a │ ***"),
        "masked on the terminal:\n{}",
        out.stdout
    );
    assert!(!out.stdout.contains("first-s3cret"), "{}", out.stdout);
    assert_eq!(std::fs::read_to_string(run.path().join("a")).unwrap(), "first-s3cret");
    let reads = || {
        std::fs::read_to_string(run.path().join("reads"))
            .unwrap()
            .lines()
            .count()
    };
    assert_eq!(reads(), 1, "the command runs once when the run starts");
    // Rotated while the run waits: the resumed run reads the new value.
    std::fs::write(run.path().join("vault"), "second-s3cret\n").unwrap();
    run.exec(["approve", &out.run_id()]).exit(0);
    assert_eq!(std::fs::read_to_string(run.path().join("b")).unwrap(), "second-s3cret");
    assert_eq!(reads(), 2, "and once more when it resumes");
    let bytes = std::fs::read(run.path().join("state.db")).unwrap();
    assert!(
        !bytes.windows(6).any(|w| w == b"s3cret"),
        "a value reached the state file"
    );
    // A command that fails refuses the run with its stderr; nothing runs.
    std::fs::remove_file(run.path().join("vault")).unwrap();
    run.exec(["run", "t"])
        .exit(2)
        .stderr_has("secret `token`: its command failed (status 1): cat:")
        .stderr_has("nothing was run");
    assert_eq!(
        std::fs::read_to_string(run.path().join("a")).unwrap(),
        "first-s3cret",
        "nothing ran"
    );
    // One source per secret.
    let both = format!(
        "{HEAD}secrets:\n  - {{ name: token, env: T, command: \"true\" }}\nsteps:\n  - {{ id: a, uses: shell, with: {{ run: \"true\" }} }}\n"
    );
    let run = run.playbook("two", &both.replace("name: t\n", "name: two\n"));
    run.exec(["validate", "two"])
        .exit(2)
        .stderr_has("secret `token` names 2 sources: env, command")
        .stderr_has("keep one of `env`, `file`, `command`, `aws` or `vault`");
}

/// language.md (secrets): "A secret never goes into a command line: written
/// in a command's text, it travels in the command's environment".
#[test]
fn a_secret_in_a_command_text_never_reaches_its_command_line() {
    let inline = format!(
        "{HEAD}secrets: [DB_PASSWORD]\nsteps:\n  - {{ id: a, uses: shell, with: {{ run: \"tr '\\\\0' ' ' < /proc/$$/cmdline; echo; printf %s {{{{secrets.DB_PASSWORD}}}} | wc -c\" }} }}\n"
    );
    let run = Run::new().playbook("t", &inline).env("DB_PASSWORD", "s3cret-Pass");
    let out = run.exec(["validate", "t"]).exit(0);
    assert!(!out.stderr.contains("warning"), "nothing to warn about: {}", out.stderr);
    let out = run.exec(["run", "t"]).exit(0);
    let id = out.run_id();
    let logs = run.exec(["logs", &id]).exit(0).stdout;
    assert!(
        logs.contains("${RUNBOOK_SECRETS_DB_PASSWORD}"),
        "the command line holds a reference: {logs}"
    );
    assert!(!logs.contains("s3cret"), "{logs}");
    assert!(logs.contains("a │ 11"), "the command received all 11 bytes: {logs}");
}

/// language.md (secrets): "its base64, URL-encoded and JSON-escaped forms
/// are masked too; a step registers a value it made with `::add-mask::`".
#[test]
fn encoded_secrets_and_values_a_step_registers_are_masked_everywhere() {
    let yaml = format!(
        "{HEAD}secrets: [TOKEN]\nsteps:\n  - {{ id: enc, uses: shell, with: {{ run: \"printf '%s\\\\n' \\\"$T\\\" | base64; python3 -c 'import sys,urllib.parse; print(urllib.parse.quote(sys.argv[1], safe=str()))' \\\"$T\\\"\", env: {{ T: \"{{{{secrets.TOKEN}}}}\" }} }} }}\n  - {{ id: gen, uses: shell, with: {{ run: \"pw=made-$$-pw; echo ::add-mask::$pw; echo $pw; printf %s $pw | base64\" }} }}\n  - {{ id: use, uses: shell, needs: [gen], with: {{ run: \"echo got {{{{steps.gen.outputs.stdout}}}}\" }} }}\n"
    );
    let secret = "p@ss w0rd/with&more";
    let run = Run::new().playbook("t", &yaml).env("TOKEN", secret);
    let out = run.exec(["run", "t"]).exit(0);
    let id = out.run_id();
    let logs = run.exec(["logs", &id]).exit(0).stdout;
    let status = run.exec(["status", &id, "--output", "json"]).exit(0).stdout;
    let state = String::from_utf8_lossy(&std::fs::read(run.path().join("state.db")).unwrap()).into_owned();
    let wal = String::from_utf8_lossy(&std::fs::read(run.path().join("state.db-wal")).unwrap_or_default()).into_owned();
    // What the steps printed, as a person would find it in clear.
    let encoded = ["cEBzcyB3MHJkL3dpdGgmbW9yZQo=", "p%40ss%20w0rd%2Fwith%26more"];
    for (place, text) in [
        ("terminal", &out.stdout),
        ("logs", &logs),
        ("status", &status),
        ("state", &state),
        ("wal", &wal),
    ] {
        for e in encoded {
            assert!(!text.contains(e), "{place} shows {e}:\n{text}");
        }
        // `made-<pid>-pw`: the playbook's own text says `made-$$-pw`.
        let made = text
            .match_indices("made-")
            .any(|(i, _)| text[i + 5..].starts_with(|c: char| c.is_ascii_digit()));
        assert!(!made, "{place} shows the registered value:\n{text}");
    }
    let enc: Vec<&str> = logs.lines().filter(|l| l.starts_with("enc ")).collect();
    assert_eq!(enc, ["enc │ ***", "enc │ ***"], "the whole of each encoding");
    assert!(logs.contains("gen │ ::add-mask::***"), "{logs}");
    assert!(logs.contains("use │ got ::add-mask::***"), "{logs}");
}

#[test]
fn wait_polls_until_the_check_holds_or_times_out() {
    let run = Run::new();
    let flag = run.path().join("ready");
    let yaml = format!(
        "{HEAD}steps:\n  - {{ id: later, uses: shell, needs: [], with: {{ run: \"sleep 0.3; echo 7 > {f}\" }} }}\n  - id: ready\n    uses: wait\n    needs: []\n    with:\n      check: {{ uses: shell, with: {{ run: \"cat {f}\" }} }}\n      until: '{{{{eq check.outputs.stdout \"7\"}}}}'\n      interval: 50ms\n      timeout: 5s\n  - {{ id: pause, uses: sleep, with: {{ duration: 10ms }} }}\n",
        f = flag.display()
    );
    let run = run.playbook("t", &yaml);
    let out = run.exec(["run", "t"]).exit(0);
    let v = status_json(&run, &out.run_id());
    assert_eq!(step(&v, "ready")["state"], "succeeded");
    std::fs::remove_file(&flag).expect("flag");
    let never = yaml
        .replace("sleep 0.3; echo 7", "sleep 0.05; echo 6")
        .replace("timeout: 5s", "timeout: 300ms");
    Run::new()
        .playbook("t", &never)
        .exec(["run", "t"])
        .exit(1)
        .stdout_has("`shell` did not hold within 0.3s");
}

#[test]
fn nested_shell_commands_quote_inputs_too() {
    // `wait` runs its `check` through a shell: an input inserted there is data,
    // exactly as in a top-level `shell` step.
    let run = Run::new();
    let pwned = run.path().join("pwned");
    let yaml = format!(
        "{HEAD}inputs:\n  name: {{ type: string }}\nsteps:\n  - id: w\n    uses: wait\n    with:\n      check: {{ uses: shell, with: {{ run: \"echo {{{{inputs.name}}}}\" }} }}\n      timeout: 2s\n"
    );
    let run = run.playbook("t", &yaml);
    let evil = format!("x; touch {}", pwned.display());
    run.exec(["run", "t", "--set", &format!("name={evil}")]).exit(0);
    assert!(!pwned.exists(), "an input ran as shell code inside a nested check");
    run.exec(["plan", "t", "--set", &format!("name={evil}")])
        .exit(0)
        .stdout_has(r#"echo \"${RUNBOOK_INPUTS_NAME}\""#)
        .stdout_has(&format!("RUNBOOK_INPUTS_NAME: x; touch {}", pwned.display()));
}

#[test]
fn resume_restart_runs_a_rolled_back_item_again_from_its_first_step() {
    let run = Run::new();
    let dir = run.path().to_path_buf();
    let log = dir.join("log");
    let broken = dir.join("broken-b");
    std::fs::write(&broken, "").unwrap();
    // Per host: deploy, check; a failed check rolls the host back.
    let yaml = format!(
        r#"{HEAD}steps:
  - id: roll
    for_each: [a, b, c]
    as: host
    concurrency: 1
    resume: restart
    steps:
      - {{ id: deploy, uses: shell, with: {{ run: "echo deploy-{{{{host}}}} >> {log}" }} }}
      - {{ id: check, uses: shell, with: {{ run: "test ! -e {dir}/broken-{{{{host}}}}" }} }}
    on_failure:
      - {{ uses: shell, with: {{ run: "echo rollback-{{{{host}}}} >> {log}" }} }}
"#,
        log = log.display(),
        dir = dir.display()
    );
    let run = run.playbook("t", &yaml);
    run.exec(["plan", "t"])
        .exit(0)
        .stdout_has("resume: starts again from its first step once its on_failure ran");
    let id = run.exec(["run", "t"]).exit(1).run_id();
    assert_eq!(lines(&log), ["deploy-a", "deploy-b", "rollback-b"]);
    std::fs::remove_file(&broken).unwrap();
    run.exec(["resume", &id]).exit(0);
    // b was rolled back, so it is deployed again; a is not.
    assert_eq!(
        lines(&log),
        ["deploy-a", "deploy-b", "rollback-b", "deploy-b", "deploy-c"]
    );
    // On a call, `resume` is refused before anything runs.
    Run::new()
        .playbook(
            "c",
            &format!("{HEAD}steps:\n  - {{ id: x, uses: shell, resume: restart, with: {{ run: \"true\" }} }}\n")
                .replace("name: t", "name: c"),
        )
        .exec(["validate", "c"])
        .exit(2)
        .stderr_has("`resume` applies to groups");
}

#[test]
fn a_string_input_takes_set_text_as_typed() {
    let yaml = format!(
        "{HEAD}inputs:\n  v: {{ type: string }}\n  n: {{ type: integer, default: 1 }}\nsteps:\n  - {{ id: a, uses: shell, with: {{ run: \"echo v={{{{inputs.v}}}} n={{{{inputs.n}}}}\" }} }}\n"
    );
    Run::new()
        .playbook("t", &yaml)
        .exec(["run", "t", "--set", "v=0005", "--set", "n=0005"])
        .exit(0)
        .stdout_has("v=0005 n=5");
}

/// A playbook with an approval between two steps; its recheck gate holds while
/// `gate` exists.
fn approval_playbook(dir: &std::path::Path, timeout: &str, approvers: &str) -> String {
    format!(
        r#"{HEAD}steps:
  - {{ id: before, uses: shell, with: {{ run: "echo before" }} }}
  - id: ok
    uses: approve
    with:
      message: "unapply the migrations?"
      timeout: {timeout}
      approvers: {approvers}
      recheck:
        - {{ uses: shell, with: {{ run: "test -e {gate}" }} }}
  - {{ id: after, uses: shell, with: {{ run: "echo after, approved by {{{{steps.ok.outputs.approved_by}}}}" }} }}
on_failure:
  - {{ id: cleanup, uses: shell, with: {{ run: "echo cleaned up" }} }}
"#,
        gate = dir.join("gate").display()
    )
}

#[test]
fn an_approval_waits_then_another_process_approves_and_the_run_continues() {
    let run = Run::new();
    std::fs::write(run.path().join("gate"), "").unwrap();
    let yaml = approval_playbook(run.path(), "1h", "[alice, bob]");
    let run = run.playbook("t", &yaml);
    let out = run
        .exec(["run", "t"])
        .exit(3)
        .stdout_has("⏸ ok waits for an approval: unapply the migrations? (approvers: alice, bob)")
        .stdout_lacks("after");
    let id = out.run_id();
    let v = status_json(&run, &id);
    assert_eq!(v["run"]["status"], "waiting");
    assert_eq!(step(&v, "ok")["state"], "waiting");
    let plan = v["plan_hash"].as_str().unwrap().to_owned();
    // Not an approver: recorded, but the run keeps waiting.
    run.exec(["approve", &id, "--as", "mallory"])
        .exit(3)
        .stdout_has("mallory may not approve this");
    // A plan other than the one reviewed: refused, nothing recorded.
    run.exec(["approve", &id, "--as", "alice", "--plan-hash", "0000"])
        .exit(2)
        .stderr_has("you reviewed plan 0000");
    run.exec([
        "approve",
        &id,
        "--as",
        "alice",
        "--comment",
        "lag checked",
        "--plan-hash",
        &plan,
    ])
    .exit(0)
    .stdout_has("alice: approve ok (lag checked)")
    .stdout_has("after, approved by alice");
    run.exec(["status", &id])
        .exit(0)
        .stdout_has("alice: approve ok (lag checked)");
    // Nothing is left to approve.
    run.exec(["approve", &id]).exit(2).stderr_has("finished as succeeded");
}

#[test]
fn a_rejection_fails_the_run_and_runs_its_handlers() {
    let run = Run::new();
    std::fs::write(run.path().join("gate"), "").unwrap();
    let yaml = approval_playbook(run.path(), "1h", "[]");
    let run = run.playbook("t", &yaml);
    let id = run.exec(["run", "t"]).exit(3).run_id();
    run.exec(["reject", &id, "--as", "bob", "--comment", "not during the sale"])
        .exit(1)
        .stdout_has("rejected by bob: not during the sale")
        .stdout_has("cleaned up")
        .stdout_lacks("after,");
}

#[test]
fn an_approval_expires_and_a_gate_is_rechecked_after_it() {
    // Expired: the answer comes after the timeout; the run fails.
    let run = Run::new();
    std::fs::write(run.path().join("gate"), "").unwrap();
    let yaml = approval_playbook(run.path(), "1s", "[]");
    let run = run.playbook("t", &yaml);
    let id = run.exec(["run", "t"]).exit(3).run_id();
    std::thread::sleep(Duration::from_millis(1500));
    run.exec(["approve", &id, "--as", "alice"])
        .exit(1)
        .stdout_has("came after the question expired")
        .stdout_lacks("after,");

    // The gate changed while the approver read: the approval does not carry the run.
    let run = Run::new();
    let gate = run.path().join("gate");
    std::fs::write(&gate, "").unwrap();
    let yaml = approval_playbook(run.path(), "1h", "[]");
    let run = run.playbook("t", &yaml);
    let id = run.exec(["run", "t"]).exit(3).run_id();
    std::fs::remove_file(&gate).unwrap();
    run.exec(["approve", &id, "--as", "alice"])
        .exit(1)
        .stdout_has("approved by alice, but gate 1 (`shell`) no longer holds")
        .stdout_lacks("after,");

    // --yes approves as the current user, where the approvers allow it.
    let run = Run::new();
    std::fs::write(run.path().join("gate"), "").unwrap();
    let yaml = approval_playbook(run.path(), "1h", "[]");
    let run = run.playbook("t", &yaml);
    run.exec(["run", "t", "--yes"])
        .exit(0)
        .stdout_has("after, approved by tester");
}

#[test]
fn at_a_terminal_an_approval_is_asked_and_answered_in_place() {
    let run = Run::new();
    std::fs::write(run.path().join("gate"), "").unwrap();
    let yaml = approval_playbook(run.path(), "1h", "[]");
    let run = run.playbook("t", &yaml);
    // `script` gives runbook a terminal (a pty); "y" is typed at the question.
    let cmd = format!(
        "{} --state {} --playbooks {} run t",
        env!("CARGO_BIN_EXE_runbook"),
        run.path().join("state.db").display(),
        run.path().join("playbooks").display()
    );
    let mut child = std::process::Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .env_remove("CI")
        .env("USER", "tester")
        .env("NO_COLOR", "1")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("script (util-linux) runs");
    {
        use std::io::Write;
        let stdin = child.stdin.as_mut().unwrap();
        std::thread::sleep(Duration::from_millis(1500));
        stdin.write_all(b"y\n").unwrap();
    }
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("approve ok as tester?"), "{text}");
    assert!(text.contains("after, approved by tester"), "{text}");
    // Without a terminal nobody is asked: the run waits (exit 3).
    run.exec(["run", "t"]).exit(3).stdout_lacks("after,");
}

#[test]
fn without_user_in_the_environment_the_operating_system_names_who_ran_it() {
    let run = Run::new().unset("USER").unset("RUNBOOK_USER").playbook(
        "t",
        &format!("{HEAD}steps:\n  - {{ id: a, uses: shell, with: {{ run: \"true\" }} }}\n"),
    );
    let id = run.exec(["run", "t"]).exit(0).run_id();
    let v = status_json(&run, &id);
    let os_user = String::from_utf8(std::process::Command::new("id").arg("-un").output().unwrap().stdout).unwrap();
    assert_eq!(v["run"]["user"], os_user.trim(), "{v:#}");
}

#[test]
fn logs_and_history_speak_json_on_request() {
    let run = Run::new().playbook(
        "t",
        &format!("{HEAD}steps:\n  - {{ id: a, uses: shell, with: {{ run: \"echo one; echo two >&2\" }} }}\n"),
    );
    let id = run.exec(["run", "t"]).exit(0).run_id();
    let logs = run.exec(["logs", &id, "--output", "json"]).exit(0);
    let lines: Vec<serde_json::Value> = logs.stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2, "{}", logs.stdout);
    assert!(lines.iter().all(|l| l["event"] == "log" && l["step"] == "a"));
    assert!(lines.iter().any(|l| l["stream"] == "stderr" && l["line"] == "two"));
    let history = run.exec(["history", "t", "--output", "json"]).exit(0);
    let runs: serde_json::Value = serde_json::from_str(&history.stdout).unwrap();
    assert_eq!(runs.as_array().map(Vec::len), Some(1));
    assert_eq!(runs[0]["id"], id.as_str());
}

/// language.md (secrets): "an input or a `for_each` item that holds a secret
/// reaches its steps as it is, on resume too; the journal keeps the secret's
/// name in its place, never its value".
#[test]
fn inputs_and_items_holding_a_secret_reach_their_steps_as_they_are_after_a_kill_too() {
    let run = Run::new();
    let (got, gate, marker) = (
        run.path().join("got"),
        run.path().join("gate"),
        run.path().join("marker"),
    );
    let yaml = format!(
        r#"{HEAD}secrets: [DB_PASSWORD]
inputs:
  url: {{ type: string }}
steps:
  - id: each
    for_each: [plain, "{{{{inputs.url}}}}"]
    as: u
    concurrency: 1
    steps:
      - id: use
        uses: shell
        idempotent: true
        with: {{ run: "printf '%s\n' {{{{u}}}} >> {got}; test -f {gate} || {{ touch {marker}; sleep 30; }}" }}
  - {{ id: after, uses: shell, needs: [each], with: {{ run: "printf '%s\n' {{{{inputs.url}}}} >> {got}" }} }}
"#,
        got = got.display(),
        gate = gate.display(),
        marker = marker.display()
    );
    let secret = "s3cr3t-Pw/9";
    let url = format!("postgres://app:{secret}@db1/app");
    let run = run.playbook("t", &yaml).env("DB_PASSWORD", secret);
    let set = format!("url={url}");
    let out = support::kill_when(&run, &["run", "t", "--set", &set], &marker);
    let id = support::started_id(&out);
    std::fs::write(&gate, "").unwrap();
    run.exec(["resume", &id]).exit(0);
    assert_eq!(
        lines(&got),
        ["plain", "plain", url.as_str(), url.as_str()],
        "every step got the real values, the resumed fan-out's item and input included"
    );
    let logs = run.exec(["logs", &id]).exit(0).stdout;
    let status = run.exec(["status", &id, "--output", "json"]).exit(0).stdout;
    let state = String::from_utf8_lossy(&std::fs::read(run.path().join("state.db")).unwrap()).into_owned();
    let wal = String::from_utf8_lossy(&std::fs::read(run.path().join("state.db-wal")).unwrap_or_default()).into_owned();
    for (place, text) in [("logs", &logs), ("status", &status), ("state", &state), ("wal", &wal)] {
        assert!(!text.contains(secret), "{place} shows the secret:\n{text}");
    }
    assert!(status.contains("postgres://app:***@db1/app"), "{status}");
}

/// language.md (secrets): "`secret_outputs` covers every output, a `json`
/// structure included".
#[test]
fn a_secret_json_output_is_masked_everywhere_and_read_in_clear_by_later_steps() {
    let run = Run::new();
    let got = run.path().join("got");
    let yaml = format!(
        r#"{HEAD}steps:
  - id: login
    uses: shell
    secret_outputs: [json]
    with: {{ run: "printf '{{\"token\": \"tok-%s\", \"ttl\": 3600}}' $((5550000 + 123))", json: true }}
  - {{ id: use, uses: shell, needs: [login], with: {{ run: "printf '%s\n' {{{{steps.login.outputs.json.token}}}} > {got}; echo used tok-$((5550000 + 123))" }} }}
"#,
        got = got.display()
    );
    // The token is made by the step: the playbook's text never holds it.
    let run = run.playbook("t", &yaml);
    let out = run.exec(["run", "t", "--output", "json"]).exit(0);
    assert_eq!(lines(&got), ["tok-5550123"], "the step after it reads the value");
    let state = String::from_utf8_lossy(&std::fs::read(run.path().join("state.db")).unwrap()).into_owned();
    let wal = String::from_utf8_lossy(&std::fs::read(run.path().join("state.db-wal")).unwrap_or_default()).into_owned();
    for (place, text) in [("events", &out.stdout), ("state", &state), ("wal", &wal)] {
        assert!(
            !text.contains("tok-5550123"),
            "{place} shows the secret output:\n{text}"
        );
    }
    assert!(out.stdout.contains("used ***"), "{}", out.stdout);
}

/// language.md (secrets): "a value a step registers is masked from then on,
/// after a kill and resume too: the journal keeps it sealed under the
/// runner's mask key, never in clear".
#[test]
fn a_registered_value_stays_masked_after_a_kill_and_resume_and_is_never_journalled() {
    let run = Run::new();
    let (made, gate, marker) = (
        run.path().join("made"),
        run.path().join("gate"),
        run.path().join("marker"),
    );
    let yaml = format!(
        r#"{HEAD}steps:
  - {{ id: gen, uses: shell, with: {{ run: "pw=made-$$-pw; echo ::add-mask::$pw; echo $pw > {made}" }} }}
  - {{ id: hold, uses: shell, idempotent: true, with: {{ run: "test -f {gate} || {{ touch {marker}; sleep 30; }}" }} }}
  - {{ id: use, uses: shell, with: {{ run: "echo using $(cat {made}); cat {made} >&2" }} }}
"#,
        made = made.display(),
        gate = gate.display(),
        marker = marker.display()
    );
    let key = run.path().join("mask.key");
    let run = run
        .playbook("t", &yaml)
        .env("RUNBOOK_MASK_KEY_FILE", key.to_str().unwrap());
    let out = support::kill_when(&run, &["run", "t"], &marker);
    let id = support::started_id(&out);
    std::fs::write(&gate, "").unwrap();
    // Another runner's key cannot open what was registered: refused, nothing runs.
    let other = run.path().join("other.key");
    let run = run.env("RUNBOOK_MASK_KEY_FILE", other.to_str().unwrap());
    let refused = run.exec(["resume", &id]).exit(2);
    assert!(
        refused.stderr.contains("cannot be opened with the mask key"),
        "{}",
        refused.stderr
    );
    assert!(refused.stderr.contains("RUNBOOK_MASK_KEY_FILE"), "{}", refused.stderr);
    let run = run.env("RUNBOOK_MASK_KEY_FILE", key.to_str().unwrap());
    run.exec(["resume", &id]).exit(0);
    let value = std::fs::read_to_string(&made).unwrap().trim().to_owned();
    assert!(value.starts_with("made-"), "{value}");
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the key is its owner's alone");
    let logs = run.exec(["logs", &id]).exit(0).stdout;
    assert!(
        logs.contains("use │ using ***"),
        "masked in the resumed process too:\n{logs}"
    );
    let state = String::from_utf8_lossy(&std::fs::read(run.path().join("state.db")).unwrap()).into_owned();
    let wal = String::from_utf8_lossy(&std::fs::read(run.path().join("state.db-wal")).unwrap_or_default()).into_owned();
    for (place, text) in [("logs", &logs), ("state", &state), ("wal", &wal)] {
        assert!(!text.contains(&value), "{place} shows the registered value:\n{text}");
    }
}

/// language.md (secrets): "a lock key never holds a secret, and what a
/// failing secret command says is masked with the others".
#[test]
fn secrets_never_reach_lock_keys_or_the_errors_of_other_secrets() {
    let secret = "tok-Q/9+z=&";
    let locked = format!(
        "{HEAD}secrets: [TOKEN]\ninputs:\n  x: {{ type: string }}\nlock: \"lk-{{{{inputs.x}}}}\"\nsteps:\n  - {{ id: a, uses: shell, with: {{ run: \"touch ran\" }} }}\n"
    );
    let run = Run::new().playbook("t", &locked).env("TOKEN", secret);
    let out = run.exec(["run", "t", "--set", &format!("x=pre-{secret}")]).exit(2);
    assert!(out.stderr.contains("lock `lk-pre-***`"), "{}", out.stderr);
    assert!(
        !format!("{}{}", out.stdout, out.stderr).contains(secret),
        "{}",
        out.stderr
    );
    assert!(!run.path().join("ran").exists(), "nothing ran");
    let failing = format!(
        "{HEAD}secrets:\n  - TOKEN\n  - {{ name: B, command: \"echo oops $TOKEN >&2; exit 3\" }}\nsteps:\n  - {{ id: a, uses: shell, with: {{ run: \"true\" }} }}\n"
    );
    let run = Run::new().playbook("t", &failing).env("TOKEN", secret);
    let out = run.exec(["run", "t"]).exit(2);
    assert!(out.stderr.contains("oops ***"), "{}", out.stderr);
    assert!(!out.stderr.contains(secret), "{}", out.stderr);
}

/// language.md (secrets): "a runner without a mask key keeps no registered
/// value, and a resume of its run is refused".
#[test]
fn a_run_whose_registered_values_were_not_kept_is_not_resumed() {
    let run = Run::new();
    let (gate, marker) = (run.path().join("gate"), run.path().join("marker"));
    let yaml = format!(
        r#"{HEAD}steps:
  - {{ id: gen, uses: shell, with: {{ run: "echo ::add-mask::made-$$-pw" }} }}
  - {{ id: hold, uses: shell, idempotent: true, with: {{ run: "test -f {gate} || {{ touch {marker}; sleep 30; }}" }} }}
"#,
        gate = gate.display(),
        marker = marker.display()
    );
    // A key file that cannot be made: no key.
    let run = run
        .playbook("t", &yaml)
        .env("RUNBOOK_MASK_KEY_FILE", "/proc/runbook-no-such/mask.key");
    let id = support::started_id(&support::kill_when(&run, &["run", "t"], &marker));
    std::fs::write(&gate, "").unwrap();
    let out = run.exec(["resume", &id]).exit(2);
    assert!(out.stderr.contains("were not kept"), "{}", out.stderr);
    assert!(
        out.stderr.contains("HOME"),
        "the hint says what to give: {}",
        out.stderr
    );
}

/// A run of a step that counts each SIGTERM it gets and ignores it (the
/// playbook `t`, with `timeout` after its `uses`), and where it counts.
fn counting_step(timeout: &str) -> (Run, std::path::PathBuf, std::path::PathBuf) {
    let run = Run::new();
    let (script, terms, up) = (
        run.path().join("count.py"),
        run.path().join("terms"),
        run.path().join("up"),
    );
    std::fs::write(
        &script,
        "import os, signal, sys, time\n\
         def term(*_):\n    with open(sys.argv[1], 'a') as f:\n        f.write('term\\n')\n\
         signal.signal(signal.SIGTERM, term)\n\
         with open(sys.argv[2], 'w') as f:\n    f.write(str(os.getpid()))\n\
         end = time.time() + 60\n\
         while time.time() < end:\n    time.sleep(0.05)\n",
    )
    .unwrap();
    let yaml = format!(
        "{HEAD}steps:\n  - {{ id: count, uses: shell{timeout}, with: {{ run: \"exec python3 {s} {t} {u}\" }} }}\n",
        s = script.display(),
        t = terms.display(),
        u = up.display(),
    );
    (run.playbook("t", &yaml), terms, up)
}

/// The step counted one SIGTERM, and was killed no sooner than `grace`
/// after it was stopped (`took` is how long the run took since).
fn stopped_once(terms: &std::path::Path, up: &std::path::Path, took: Duration, grace: Duration) {
    assert_eq!(lines(terms), ["term"], "SIGTERM once");
    assert!(took >= grace, "SIGKILL only after the grace: {took:?}");
    let pid = std::fs::read_to_string(up).unwrap();
    assert!(!pid_alive(&pid), "killed after the grace");
}

#[test]
fn a_stopped_step_gets_sigterm_once_then_sigkill_after_the_grace() {
    // One Ctrl-C.
    let (run, terms, up) = counting_step("");
    let mut child = support::Killed(run.spawn(["run", "t"]));
    support::until("the step to listen", Duration::from_secs(20), || {
        std::fs::read_to_string(&up).is_ok_and(|p| !p.is_empty())
    });
    let sent = std::time::Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(child.0.id()).unwrap()),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let code = support::exits_within("the interrupted run", &mut child.0, Duration::from_secs(20)).code();
    assert_eq!(code, Some(5));
    stopped_once(&terms, &up, sent.elapsed(), Duration::from_millis(4500));
    // A timeout of 1 s: the same.
    let (run, terms, up) = counting_step(", timeout: 1s");
    let begun = std::time::Instant::now();
    run.exec(["run", "t"]).exit(1).stdout_has("timed out after 1s");
    stopped_once(&terms, &up, begun.elapsed(), Duration::from_millis(5500));
}
