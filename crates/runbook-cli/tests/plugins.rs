//! External step kinds: the example plugins (Python and Perl) speak the
//! protocol, run in playbooks with their secrets kept out of process lists and
//! logs, resume after a SIGKILL, stop on a cancel; a broken plugin fails its
//! step (or its validation) with a clear error and nothing lost.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use support::{Run, status_json, workspace};

/// A library with the example plugins in its `plugins/` folder.
fn with_examples() -> Run {
    let run = Run::new();
    for name in ["runbook-step-feature-flag", "runbook-step-ticket"] {
        let from = workspace().join("examples/plugins").join(name);
        install(run.path(), name, &std::fs::read_to_string(from).unwrap());
    }
    run
}

/// Puts an executable plugin in the library's `plugins/` folder.
fn install(root: &Path, name: &str, text: &str) -> PathBuf {
    let dir = root.join("playbooks/plugins");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// The flags file as JSON (Null when absent).
fn flag(run: &Run, name: &str) -> serde_json::Value {
    std::fs::read_to_string(run.path().join("flags.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .map_or(serde_json::Value::Null, |v| v["flags"][name].clone())
}

/// Every ticket of the queue, by id.
fn tickets(run: &Run) -> Vec<serde_json::Value> {
    let mut out: Vec<serde_json::Value> = std::fs::read_dir(run.path().join("queue"))
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
                .map(|e| serde_json::from_str(&std::fs::read_to_string(e.path()).unwrap()).unwrap())
                .collect()
        })
        .unwrap_or_default();
    out.sort_by_key(|t| t["id"].as_str().unwrap_or_default().to_owned());
    out
}

const TOKEN: &str = "tok-7f3e9a1c55d2";
/// Used by one test only, so that no other test's runner holds it.
const PROBE_SECRET: &str = "probe-2b81e6f0c4";

/// A release that opens a change ticket, ramps a flag, then closes the ticket.
fn release(run: &Run, ramp: &str, pause: f64) -> String {
    format!(
        r#"apiVersion: runbook/v1
name: release
version: 1
secrets: [TICKET_TOKEN]
steps:
  - id: change
    uses: ticket
    secrets: [TICKET_TOKEN]
    with: {{ queue: "{queue}", action: open, title: "release {{{{run.id}}}}" }}
  - id: flag
    uses: feature-flag
    with: {{ file: "{flags}", flag: checkout-v2, enabled: true, ramp: {ramp}, pause: {pause} }}
  - id: done
    uses: ticket
    secrets: [TICKET_TOKEN]
    with:
      queue: "{queue}"
      action: close
      ticket: "{{{{steps.change.outputs.ticket}}}}"
"#,
        queue = run.path().join("queue").display(),
        flags = run.path().join("flags.json").display(),
    )
}

#[test]
fn the_example_plugins_speak_the_protocol() {
    let run = Run::new();
    // Their own examples, pointed at this test's folder (`--with`).
    let flags = run.path().join("flags.json");
    let queue = run.path().join("queue");
    let cases = [
        (
            "runbook-step-feature-flag",
            serde_json::json!({"file": flags, "flag": "plugin-test", "enabled": true, "ramp": [50, 100], "pause": 1}),
        ),
        (
            "runbook-step-ticket",
            serde_json::json!({"queue": queue, "action": "open", "title": "plugin test"}),
        ),
    ];
    for (name, with) in &cases {
        let path = workspace().join("examples/plugins").join(name);
        let out = run
            .exec_env(
                &[("TICKET_TOKEN", TOKEN)],
                ["plugin", "test", path.to_str().unwrap(), "--with", &with.to_string()],
            )
            .exit(0)
            .stdout_has("the plugin speaks the protocol");
        for check in ["describe", "example", "run", "cancel", "malformed request"] {
            assert!(
                out.stdout
                    .lines()
                    .any(|l| l.trim_start().starts_with("ok") && l.contains(check)),
                "{name}: {check} not ok\n{}",
                out.stdout
            );
        }
        assert!(!out.stdout.contains(TOKEN), "the granted secret is not shown");
    }
    assert_eq!(
        flag(&run, "plugin-test"),
        serde_json::json!({"enabled": true, "percent": 50}),
        "the run set it to 100 %; the cancel check's run stopped at its first stage"
    );
    let t = tickets(&run);
    assert_eq!(
        t.len(),
        1,
        "the cancel check's run found the ticket the first run opened, by the idempotency key: {t:?}"
    );
    // The ramp of the flag example runs long enough to be cancelled.
    let (name, with) = &cases[0];
    let path = workspace().join("examples/plugins").join(name);
    let out = run
        .exec([
            "plugin",
            "test",
            path.to_str().unwrap(),
            "--with",
            &with.to_string(),
            "--output",
            "json",
        ])
        .exit(0);
    let report: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let cancel = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "cancel")
        .unwrap();
    assert!(cancel["detail"].as_str().unwrap().starts_with("stopped"), "{cancel}");
}

#[test]
fn plugin_test_says_what_is_wrong_with_a_broken_plugin() {
    let run = Run::new();
    let plugin = |kind: &str, body: &str| scripted(run.path(), kind, "read", body);
    let cases = [
        (
            plugin(
                "chatty",
                "echo starting; echo '{\"type\":\"result\",\"status\":\"succeeded\"}'",
            ),
            "line 1 of its output is not JSON: starting",
        ),
        (
            plugin("mute", "echo '{\"type\":\"log\",\"message\":\"hi\"}'"),
            "exited with status 0 without a result",
        ),
        (
            plugin(
                "typo",
                "echo '{\"type\":\"result\",\"status\":\"succeeded\",\"outputs\":{\"n\":\"three\"}}'",
            ),
            "its output `n` should be of type integer",
        ),
        (
            plugin(
                "extra",
                "echo '{\"type\":\"result\",\"status\":\"succeeded\",\"outputs\":{\"m\":1}}'",
            ),
            "the output `m`, which its description does not declare",
        ),
        (
            plugin("liar", "echo '{\"type\":\"result\",\"status\":\"succeeded\"}'; exit 3"),
            "reported success but then exited with status 3",
        ),
    ];
    for (path, why) in &cases {
        run.exec(["plugin", "test", path.to_str().unwrap()])
            .exit(1)
            .stdout_has("FAIL run")
            .stdout_has(why)
            .stdout_has("does not speak the protocol");
    }
    // A schema that is not JSON Schema, and a name that does not match.
    let bad = install(
        run.path(),
        "runbook-step-bad",
        "#!/bin/sh\necho '{\"protocol\":1,\"kind\":\"bad\",\"description\":\"d\",\"schema\":{\"type\":\"objekt\"},\"effect\":\"read\",\"idempotent\":true}'\n",
    );
    run.exec(["plugin", "test", bad.to_str().unwrap()])
        .exit(1)
        .stdout_has("FAIL describe")
        .stdout_has("its `schema` is not valid JSON Schema");
    // A plugin that takes any request as a success is told so.
    let lax = plugin(
        "lax",
        "echo '{\"type\":\"result\",\"status\":\"succeeded\",\"outputs\":{\"n\":1}}'",
    );
    run.exec(["plugin", "test", lax.to_str().unwrap()])
        .exit(1)
        .stdout_has("FAIL malformed request")
        .stdout_has("a plugin must refuse what it cannot read");
    // `plugin list` shows the broken one with why, and exits 1.
    run.exec(["plugin", "list"])
        .exit(1)
        .stdout_has("bad                  BROKEN")
        .stdout_has("lax ");
}

#[test]
fn a_playbook_runs_plugins_with_their_secrets_masked_and_out_of_process_lists() {
    let run = with_examples();
    let yaml = release(&run, "[50, 100]", 0.2);
    let run = run.playbook("release", &yaml);
    // Validated like built-ins: the plugin's own schema, with file and line.
    run.exec(["validate", "release"]).exit(0);
    let wrong = yaml.replace("enabled: true", "enabled: yes-please");
    let bad = with_examples().playbook("release", &wrong);
    let out = bad.exec(["run", "release"]).exit(2);
    assert!(out.stderr.contains("v1.yaml:12:77"), "file and line: {}", out.stderr);
    assert!(!bad.path().join("flags.json").exists(), "nothing ran");
    // `plan` shows what the plugin steps will do; the schema includes them.
    run.exec(["plan", "release"])
        .exit(0)
        .stdout_has("turn a feature flag on or off")
        .stdout_has("(plugin)");
    run.exec(["schema", "--kind", "feature-flag"])
        .exit(0)
        .stdout_has("\"ramp\"");
    // A built-in kind takes no granted secrets; an undeclared one is refused.
    let misuse = yaml.replace("uses: feature-flag", "uses: feature-flag\n    secrets: [NOPE]");
    Run::new()
        .playbook("release", &misuse)
        .args(["validate", "release"])
        .run()
        .exit(2);
    // A step that does not grant what the plugin expects is warned about.
    let ungranted = yaml.replacen("    secrets: [TICKET_TOKEN]\n", "", 1);
    let out = with_examples()
        .playbook("release", &ungranted)
        .args(["validate", "release"])
        .run();
    assert!(
        out.stderr
            .contains("`ticket` expects the secret `TICKET_TOKEN`, which this step does not grant")
            || out.stdout.contains("`ticket` expects the secret `TICKET_TOKEN`"),
        "{}\n{}",
        out.stdout,
        out.stderr
    );
    // The run: the secret comes from the environment and reaches the plugin
    // in its request only.
    let out = run
        .exec_env(&[("TICKET_TOKEN", TOKEN)], ["run", "release", "--output", "json"])
        .exit(0);
    let t = tickets(&run);
    assert_eq!(t.len(), 1, "{t:?}");
    assert_eq!(t[0]["state"], "closed");
    assert_eq!(
        flag(&run, "checkout-v2"),
        serde_json::json!({"enabled": true, "percent": 100})
    );
    assert_eq!(out.outputs_of("change")["ticket"], "OPS-1");
    assert_eq!(
        out.outputs_of("change")["link"],
        "***",
        "a value the plugin registered as secret"
    );
    assert_eq!(out.outputs_of("flag")["percent"], 100);
    let id = out.run_id();
    let logs = run.exec(["logs", &id]).exit(0);
    assert!(
        logs.stdout.contains("progress [1/2]: `checkout-v2` on for 50%"),
        "{}",
        logs.stdout
    );
    assert!(logs.stdout.contains("private link: ***"), "{}", logs.stdout);
    let journal = std::fs::read(run.path().join("state.db")).unwrap();
    let everything = format!("{}{}{}", out.stdout, out.stderr, logs.stdout) + &String::from_utf8_lossy(&journal);
    assert!(!everything.contains(TOKEN), "the token leaked");
    assert!(
        !everything.contains("tickets.example/OPS-1?k="),
        "the private link leaked"
    );
}

#[test]
fn a_plugin_never_sees_its_secret_in_argv_or_environment() {
    let run = Run::new();
    let seen = run.path().join("seen");
    install(
        run.path(),
        "runbook-step-probe",
        &format!(
            r#"#!/bin/sh
if [ "$1" = describe ]; then
  echo '{{"protocol":1,"kind":"probe","description":"wait a moment","schema":{{"type":"object"}},"effect":"read","idempotent":true}}'
  exit 0
fi
read -r request
echo "$request" > {seen}
sleep 1
echo '{{"type":"result","status":"succeeded"}}'
"#,
            seen = seen.display()
        ),
    );
    let run = run.playbook(
        "p",
        "apiVersion: runbook/v1\nname: p\nversion: 1\nsecrets: [API_KEY]\nsteps:\n  - { id: probe, uses: probe, secrets: [API_KEY] }\n",
    );
    let mut child = run.spawn_logged_env(&[("API_KEY", PROBE_SECRET)], ["run", "p"], &run.path().join("out"));
    let until = Instant::now() + Duration::from_secs(20);
    while !seen.exists() && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(20));
    }
    // While it runs: no process of this machine shows the secret, except
    // runbook itself (it was given it in its environment).
    let runner = child.id().to_string();
    let mut looked = 0;
    for entry in std::fs::read_dir("/proc").unwrap().filter_map(Result::ok) {
        let pid = entry.file_name().to_string_lossy().into_owned();
        if pid.parse::<u32>().is_err() || pid == runner {
            continue;
        }
        for file in ["cmdline", "environ"] {
            if let Ok(bytes) = std::fs::read(entry.path().join(file)) {
                looked += 1;
                assert!(
                    !String::from_utf8_lossy(&bytes).contains(PROBE_SECRET),
                    "process {pid} shows the secret in its {file}"
                );
            }
        }
    }
    assert!(looked > 2);
    assert!(support::exits_within("the run", &mut child, Duration::from_secs(20)).success());
    let request: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&seen).unwrap()).unwrap();
    assert_eq!(request["secrets"]["API_KEY"], PROBE_SECRET, "granted in the request");
    assert_eq!(request["protocol"], 1);
    assert_eq!(request["attempt"], 1);
    assert_eq!(
        request["idempotency_key"],
        format!("{}/probe", request["run_id"].as_str().unwrap())
    );
}

/// A release with a slow ramp, started in the background and caught at its
/// first stage (10 %): the library, the runner, and when `signal` was sent
/// to it.
fn caught_in_the_ramp(signal: nix::sys::signal::Signal) -> (Run, std::process::Child, Instant) {
    let run = with_examples();
    let yaml = release(&run, "[10, 50, 100]", 2.0);
    let run = run.playbook("release", &yaml);
    let child = run.spawn_logged_env(&[("TICKET_TOKEN", TOKEN)], ["run", "release"], &run.path().join("out"));
    let until = Instant::now() + Duration::from_secs(30);
    while flag(&run, "checkout-v2")["percent"].as_u64() != Some(10) {
        assert!(Instant::now() < until, "the flag never reached 10%");
        std::thread::sleep(Duration::from_millis(20));
    }
    let sent = Instant::now();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), signal).unwrap();
    (run, child, sent)
}

/// The id of the run the background `runbook run` started.
fn started_run(run: &Run) -> String {
    let out = std::fs::read_to_string(run.path().join("out")).unwrap();
    out.lines()
        .find_map(|l| l.strip_prefix("run ").and_then(|r| r.strip_suffix(" started")))
        .unwrap_or_else(|| panic!("no run id in\n{out}"))
        .to_owned()
}

#[test]
fn a_run_killed_inside_a_plugin_step_resumes_and_opens_one_ticket() {
    let (run, mut child, _) = caught_in_the_ramp(nix::sys::signal::Signal::SIGKILL);
    let _ = child.wait();
    let id = started_run(&run);
    assert_eq!(tickets(&run).len(), 1);
    assert_eq!(tickets(&run)[0]["state"], "open");
    // The flag step is idempotent (it sets the flag to where it should be):
    // resume runs it again; the ticket is opened once and closed.
    run.exec_env(&[("TICKET_TOKEN", TOKEN)], ["resume", &id])
        .exit(0)
        .stdout_has("succeeded");
    assert_eq!(flag(&run, "checkout-v2")["percent"], 100);
    let t = tickets(&run);
    assert_eq!(t.len(), 1, "one ticket: {t:?}");
    assert_eq!(t[0]["state"], "closed");
    let status = status_json(&run, &id);
    assert_eq!(status["run"]["status"], "succeeded", "{status}");
}

#[test]
fn a_cancelled_plugin_step_stops_where_it_is_and_resumes() {
    let (run, mut child, stopped) = caught_in_the_ramp(nix::sys::signal::Signal::SIGINT);
    let code = support::exits_within("the cancelled run", &mut child, Duration::from_secs(20)).code();
    assert_eq!(code, Some(5), "interrupted");
    assert!(
        stopped.elapsed() < Duration::from_secs(5),
        "the plugin stopped on SIGTERM, not after the grace"
    );
    assert_eq!(flag(&run, "checkout-v2")["percent"], 10, "left where it was");
    let id = started_run(&run);
    run.exec_env(&[("TICKET_TOKEN", TOKEN)], ["resume", &id]).exit(0);
    assert_eq!(flag(&run, "checkout-v2")["percent"], 100);
    assert_eq!(tickets(&run).len(), 1);
}

/// A plugin in `root`'s library that describes itself well and runs `body`.
fn scripted(root: &Path, kind: &str, effect: &str, body: &str) -> PathBuf {
    let describe = format!(
        r#"{{"protocol":1,"kind":"{kind}","description":"d","schema":{{"type":"object"}},"outputs":[{{"name":"n","type":"integer"}}],"effect":"{effect}","idempotent":false,"example":{{}}}}"#
    );
    install(
        root,
        &format!("runbook-step-{kind}"),
        &format!("#!/bin/sh\nif [ \"$1\" = describe ]; then echo '{describe}'; exit 0; fi\ncat >/dev/null\n{body}\n"),
    )
}

#[test]
fn a_broken_plugin_fails_its_step_clearly_and_loses_nothing() {
    let playbook = |kind: &str, marker: &Path| {
        format!(
            "apiVersion: runbook/v1\nname: b\nversion: 1\nsteps:\n  - {{ id: before, uses: shell, with: {{ run: 'echo before' }} }}\n  - {{ id: call, uses: {kind} }}\n  - {{ id: after, uses: shell, with: {{ run: 'touch {}' }} }}\n",
            marker.display()
        )
    };
    for (kind, body, why) in [
        (
            "garbled",
            "echo 'Traceback (most recent call last):'; exit 1",
            "broke the protocol: line 1 of its output is not JSON: Traceback",
        ),
        ("silent", "exit 0", "exited with status 0 without a result"),
        (
            "typed",
            "echo '{\"type\":\"result\",\"status\":\"succeeded\",\"outputs\":{\"n\":\"x\"}}'",
            "its output `n` should be of type integer",
        ),
    ] {
        let run = Run::new();
        scripted(run.path(), kind, "write", body);
        let marker = run.path().join("after");
        let run = run.playbook("b", &playbook(kind, &marker));
        let out = run.exec(["run", "b"]).exit(1);
        assert!(
            out.stderr.contains(why) || out.stdout.contains(why),
            "{kind}:\n{}\n{}",
            out.stdout,
            out.stderr
        );
        assert!(!marker.exists(), "{kind}: the step after it did not run");
        // Nothing lost: the journal has the step before as done, this one as
        // failed with the reason.
        let id = out.run_id();
        let status = status_json(&run, &id);
        assert_eq!(status["run"]["status"], "failed", "{status}");
        let text = status.to_string();
        assert!(text.contains(why), "{kind}: the journal says why: {status}");
        let steps = run.exec(["status", &id]).exit(0).stdout;
        assert!(steps.contains("before") && steps.contains("succeeded"), "{steps}");
    }
    // A plugin whose description is broken: a playbook that uses it is
    // refused before anything runs, saying why.
    let run = Run::new();
    install(
        run.path(),
        "runbook-step-wrong",
        "#!/bin/sh\necho '{\"protocol\":1,\"kind\":\"wrong\",\"description\":\"d\",\"schema\":{\"type\":\"objekt\"},\"effect\":\"read\",\"idempotent\":true}'\n",
    );
    let marker = run.path().join("after");
    let run = run.playbook("b", &playbook("wrong", &marker));
    run.exec(["run", "b"])
        .exit(2)
        .stderr_has("unknown step kind `wrong`")
        .stderr_has("cannot be used: its `schema` is not valid");
    assert!(!marker.exists());
}

/// Descriptions are remembered by the executable's identity: a command does
/// not start every plugin, and a plugin replaced or edited is asked again.
#[test]
fn a_changed_plugin_is_described_again() {
    let run = Run::new();
    let counter = run.path().join("described");
    let plugin = |description: &str| {
        install(
            run.path(),
            "runbook-step-hello",
            &format!(
                "#!/bin/sh\necho x >> {}\necho '{{\"protocol\":1,\"kind\":\"hello\",\"description\":\"{description}\",\"schema\":{{\"type\":\"object\"}},\"effect\":\"read\",\"idempotent\":true}}'\n",
                counter.display()
            ),
        )
    };
    let asked = || std::fs::read_to_string(&counter).unwrap_or_default().lines().count();
    plugin("say hello");
    run.exec(["plugin", "list"]).exit(0).stdout_has("say hello");
    run.exec(["plugin", "list"]).exit(0).stdout_has("say hello");
    run.exec(["list"]).exit(0);
    assert_eq!(asked(), 1, "described once, then remembered");
    std::thread::sleep(Duration::from_millis(20));
    plugin("say hello, politely");
    run.exec(["plugin", "list"]).exit(0).stdout_has("say hello, politely");
    assert_eq!(asked(), 2, "an edited plugin is asked again");
    assert!(run.path().join(".cache/runbook/plugins.json").exists());
    // `runbook config` says where plugins are looked for.
    run.exec_env(&[("RUNBOOK_PLUGIN_PATH", "/opt/runbook-plugins")], ["config"])
        .exit(0)
        .stdout_has("plugins    playbooks/plugins:/opt/runbook-plugins  (the library's plugins/, then environment)");
}

#[test]
fn a_plugin_s_timeout_is_sigterm_then_the_grace_and_what_it_said_while_stopping_is_kept() {
    let run = Run::new();
    let started = run.path().join("started");
    // On SIGTERM it says where it stopped and writes a `failed` result.
    let body = format!(
        "stop() {{ echo '{{\"type\":\"log\",\"message\":\"stopping at stage 2\"}}'; echo '{{\"type\":\"result\",\"status\":\"failed\",\"error\":\"stopped at stage 2 of 3\"}}'; exit 1; }}\ntrap stop TERM\necho '{{\"type\":\"output\",\"name\":\"n\",\"value\":2}}'\necho '{{\"type\":\"log\",\"message\":\"at stage 2\"}}'\ntouch {s}\nsleep 30 & wait\n",
        s = started.display()
    );
    scripted(run.path(), "stages", "write", &body);
    // It ignores SIGTERM.
    scripted(run.path(), "stubborn", "write", "trap '' TERM\nsleep 30\n");
    let playbook = |kind: &str, timeout: &str| {
        format!("apiVersion: runbook/v1\nname: p\nversion: 1\nsteps:\n  - {{ id: flip, uses: {kind}{timeout} }}\n")
    };
    let run = run.playbook("p", &playbook("stages", ", timeout: 1s"));
    let begun = Instant::now();
    let out = run.exec(["run", "p"]).exit(1);
    assert!(
        begun.elapsed() < Duration::from_secs(5),
        "SIGTERM ended it, no wait for the grace"
    );
    let id = out.run_id();
    out.stdout_has("timed out after 1s")
        .stdout_has("stopped at stage 2 of 3");
    assert!(
        status_json(&run, &id).to_string().contains("stopped at stage 2 of 3"),
        "the journal keeps its result"
    );
    run.exec(["logs", &id, "flip"])
        .exit(0)
        .stdout_has("at stage 2")
        .stdout_has("stopping at stage 2")
        .stdout_has("it stopped with a `failed` result: stopped at stage 2 of 3");
    // Ctrl-C: the same words in the step's log; the step is interrupted.
    std::fs::remove_file(&started).ok();
    let run = run.playbook("p", &playbook("stages", ""));
    let child = run.spawn_logged(["run", "p"], &run.path().join("out"));
    let mut child = support::Killed(child);
    support::until("the plugin to start", Duration::from_secs(20), || started.exists());
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.0.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let code = support::exits_within("the interrupted run", &mut child.0, Duration::from_secs(20)).code();
    assert_eq!(code, Some(5));
    let id = started_run(&run);
    run.exec(["logs", &id, "flip"])
        .exit(0)
        .stdout_has("stopping at stage 2")
        .stdout_has("it stopped with a `failed` result: stopped at stage 2 of 3");
    // One that ignores SIGTERM is killed after the 5 s grace.
    let run = run.playbook("p", &playbook("stubborn", ", timeout: 1s"));
    let begun = Instant::now();
    run.exec(["run", "p"]).exit(1).stdout_has("timed out after 1s");
    let took = begun.elapsed();
    assert!(
        took >= Duration::from_millis(5500) && took < Duration::from_secs(15),
        "SIGKILL came after the grace: {took:?}"
    );
}
