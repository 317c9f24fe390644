//! The library and the read-only commands: list, show, validate, schema,
//! completions; names that try to leave the library; and the promise that
//! reading a playbook never runs any of it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;
use support::{Run, workspace};

const HELLO: &str = r#"apiVersion: runbook/v1
name: hello
version: 1
description: Say hello.
inputs:
  who: { type: string, default: world }
steps:
  - { id: greet, uses: shell, with: { run: "echo hello {{inputs.who}}" } }
"#;

#[test]
fn list_show_validate_a_library() {
    let run = Run::new().playbook("hello", HELLO).file(
        "playbooks/hello/v2.yaml",
        &HELLO
            .replace("version: 1", "version: 2")
            .replace("Say hello.", "Say hello, v2."),
    );
    run.exec(["list"]).exit(0).stdout_has("hello  v2 (+1)   Say hello, v2.");
    // A playbook that does not validate is listed as such, and `list` says so by its exit code.
    let broken = run.playbook(
        "broken",
        &HELLO
            .replace("name: hello", "name: broken")
            .replace("uses: shell", "uses: shel"),
    );
    broken
        .exec(["list"])
        .exit(2)
        .stdout_has("hello   v2 (+1)   Say hello, v2.")
        .stdout_has("broken  v1        (invalid: 1 error; see `runbook validate broken`)");
    let json = broken.exec(["list", "--output", "json"]).exit(2).stdout;
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let entry = v["playbooks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "broken")
        .unwrap()
        .clone();
    assert_eq!(entry["valid"], false);
    assert_eq!(entry["error"], "1 error");
    Run::new()
        .playbook("hello", HELLO)
        .args(["show", "hello"])
        .run()
        .exit(0)
        .stdout_has("who  string, default world")
        .stdout_has("- greet (shell)");
    Run::new()
        .playbook("hello", HELLO)
        .args(["validate"])
        .run()
        .exit(0)
        .stdout_has("1 valid, 0 invalid");
}

#[test]
fn pinned_versions_and_paths() {
    Run::new()
        .playbook("hello", HELLO)
        .file("playbooks/hello/v2.yaml", &HELLO.replace("version: 1", "version: 2"))
        .args(["plan", "hello@1"])
        .run()
        .exit(0)
        .stdout_has("plan: hello v1");
    Run::new()
        .playbook("hello", HELLO)
        .args(["plan", "hello@3"])
        .run()
        .exit(2)
        .stderr_has("playbook `hello` has no version 3 (hint: it has v1)");
    Run::new()
        .playbook("hello", HELLO)
        .args(["plan", "playbooks/hello/v1.yaml"])
        .run()
        .exit(0)
        .stdout_has(r#"run `echo hello "${RUNBOOK_INPUTS_WHO}"`"#)
        .stdout_has("env: {RUNBOOK_INPUTS_WHO: world}");
    Run::new()
        .playbook("hello", HELLO)
        .args(["plan", "helo"])
        .run()
        .exit(2)
        .stderr_has("no playbook `helo`")
        .stderr_has("did you mean `hello`?");
}

#[test]
fn names_cannot_leave_the_library() {
    for bad in ["../hello", "hello/../../etc", "/etc/passwd", "..", "Hello", "hello@x"] {
        Run::new()
            .playbook("hello", HELLO)
            .args(["plan", bad])
            .run()
            .exit(2)
            .stderr_has("is not a playbook name");
    }
}

#[test]
fn library_folder_from_the_environment() {
    let run = Run::new().playbook("hello", HELLO);
    let dir = run.path().join("playbooks").display().to_string();
    Run::new()
        .env("RUNBOOK_PLAYBOOKS", &dir)
        .args(["list"])
        .run()
        .exit(0)
        .stdout_has("hello");
    Run::new()
        .args(["--playbooks", &dir, "list"])
        .run()
        .exit(0)
        .stdout_has("hello");
    Run::new()
        .args(["list"])
        .run()
        .exit(2)
        .stderr_has("hint: pass `--playbooks DIR`");
}

#[test]
fn version_and_name_must_match_the_file() {
    Run::new()
        .file("playbooks/hello/v3.yaml", HELLO)
        .file("playbooks/greet/v1.yaml", HELLO)
        .args(["validate"])
        .run()
        .exit(2)
        .stderr_has("`version: 1` does not match the file name `v3.yaml`")
        .stderr_has("`name: hello` does not match its folder `greet`")
        .stdout_has("0 valid, 2 invalid");
}

#[test]
fn reading_a_playbook_never_runs_it() {
    let run = Run::new();
    let marker = run.path().join("ran");
    let yaml = format!(
        "apiVersion: runbook/v1\nname: trap\nversion: 1\nsteps:\n  - {{ id: a, uses: shell, with: {{ run: \"touch {m}\" }} }}\n  - id: b\n    for_each: [x]\n    steps:\n      - {{ id: c, uses: shell, with: {{ run: \"touch {m}\" }} }}\nfinally:\n  - {{ uses: shell, with: {{ run: \"touch {m}\" }} }}\n",
        m = marker.display()
    );
    let run = run.playbook("trap", &yaml);
    for args in [
        vec!["validate"],
        vec!["show", "trap"],
        vec!["plan", "trap"],
        vec!["graph", "trap"],
        vec!["list"],
    ] {
        run.exec(args.clone()).exit(0);
        assert!(!marker.exists(), "`runbook {}` ran a step", args.join(" "));
    }
    // Invalid input: exit 2 and, again, nothing ran.
    let broken = Run::new().playbook(
        "trap",
        &yaml.replace("steps:\n  - { id: a", "steps:\n  - { id: a, neds: [x]"),
    );
    broken.exec(["plan", "trap"]).exit(2);
    assert!(!marker.exists());
}

#[test]
fn committed_schema_is_current() {
    let out = Run::new().args(["schema"]).run().exit(0);
    let committed =
        std::fs::read_to_string(workspace().join("schemas/playbook.v1.json")).expect("schemas/playbook.v1.json");
    assert!(
        committed.trim() == out.stdout.trim(),
        "schemas/playbook.v1.json is stale: regenerate it with `cargo run -q -p runbook-cli -- schema > schemas/playbook.v1.json`"
    );
}

#[test]
fn editors_see_the_same_rules() {
    // The committed schema (what editors use) accepts the plan fixtures and
    // rejects structural mistakes, including a kind's own parameters.
    let schema: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(workspace().join("schemas/playbook.v1.json")).expect("schema"))
            .expect("json");
    let v = jsonschema::validator_for(&schema).expect("schema compiles");
    for name in ["rolling-deploy", "dr-failover", "backup-verify"] {
        let text =
            std::fs::read_to_string(workspace().join(format!("tests/corpus/plans/{name}/v1.yaml"))).expect("fixture");
        let node = runbook_core::parse::parse(&text).expect("yaml");
        let errors: Vec<String> = v
            .iter_errors(&node.to_json())
            .map(|e| format!("{e} at {}", e.instance_path()))
            .collect();
        assert!(errors.is_empty(), "{name}: {errors:?}");
    }
    let bad = serde_json::json!({"apiVersion": "runbook/v1", "name": "x", "version": 1, "steps": [{"id": "a", "uses": "shell", "with": {"cmd": "x"}}]});
    assert!(
        !v.is_valid(&bad),
        "unknown `with` key of `shell` is caught by the editor schema"
    );
}

#[test]
fn schema_of_one_kind_and_completions() {
    Run::new()
        .args(["schema", "--kind", "shell"])
        .run()
        .exit(0)
        .stdout_has("\"run\"");
    Run::new()
        .args(["schema", "--kind", "shel"])
        .run()
        .exit(2)
        .stderr_has("did you mean `shell`?");
    Run::new()
        .args(["completions", "bash"])
        .run()
        .exit(0)
        .stdout_has("_runbook()");
}

#[test]
fn committed_step_reference_is_current() {
    let out = Run::new().args(["docs", "steps"]).run().exit(0);
    let committed =
        std::fs::read_to_string(workspace().join("book/src/reference/steps.md")).expect("book/src/reference/steps.md");
    assert!(
        committed == out.stdout,
        "book/src/reference/steps.md is stale: regenerate it with `cargo run -q -p runbook-cli -- docs steps > book/src/reference/steps.md`"
    );
}

#[test]
fn committed_playbook_reference_is_current() {
    let committed = std::fs::read_to_string(workspace().join("book/src/reference/playbooks.md"))
        .expect("book/src/reference/playbooks.md");
    let mut dirs: Vec<String> = std::fs::read_dir(workspace().join("playbooks"))
        .expect("playbooks/")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    dirs.sort();
    for name in dirs {
        let out = Run::new()
            .cwd(workspace())
            .args(["--playbooks", "playbooks", "show", &name])
            .run()
            .exit(0);
        assert!(
            committed.contains(&format!("## {name}\n\n```text\n{}```", out.stdout)),
            "book/src/reference/playbooks.md is stale for `{name}`: run scripts/regen"
        );
    }
}

#[test]
fn wait_until_reads_the_check() {
    let yaml = "apiVersion: runbook/v1\nname: w\nversion: 1\nsteps:\n  - id: w\n    uses: wait\n    with:\n      check: { uses: shell, with: { run: \"curl -s x\" } }\n      until: '{{eq check.outputs.exit_code 0}}'\n";
    Run::new().playbook("w", yaml).args(["validate"]).run().exit(0);
    let bad = yaml.replace("check.outputs", "chek.outputs");
    Run::new()
        .playbook("w", &bad)
        .args(["validate"])
        .run()
        .exit(2)
        .stderr_has("undefined name `chek`")
        .stderr_has("did you mean `check`?");
}

#[test]
fn what_a_step_may_read() {
    // Everything below is allowed: a plain group's inner steps after the group,
    // a sibling in the same for_each item, a step's own outputs in its handlers,
    // `until` and `outputs`, and anything in `finally`.
    let yaml = r#"apiVersion: runbook/v1
name: reads
version: 1
steps:
  - id: prep
    steps:
      - { id: inner, uses: shell, with: { run: "true" } }
  - id: after-group
    uses: shell
    with: { run: "echo {{steps.inner.outputs.stdout}} {{steps.prep.status}}" }
  - id: fan
    for_each: [a, b]
    outputs: { last: "{{steps.second.outputs.stdout}}" }
    steps:
      - { id: first, uses: shell, with: { run: "echo {{item}}" } }
      - { id: second, uses: shell, with: { run: "echo {{steps.first.outputs.stdout}}" } }
    on_failure:
      - { uses: shell, with: { run: "echo {{item}} {{steps.first.status}}" } }
  - id: polled
    uses: shell
    with: { run: "check" }
    retry: { attempts: 3, until: "{{eq steps.polled.outputs.exit_code 0}}" }
    undo: { uses: shell, with: { run: "undo {{steps.polled.outputs.stdout}}" } }
  - id: reads-fan
    uses: shell
    with: { run: "echo {{steps.fan.outputs.last}}" }
finally:
  - { uses: shell, with: { run: "echo {{steps.polled.status}}" } }
"#;
    Run::new().playbook("reads", yaml).args(["validate"]).run().exit(0);
}

/// Every playbook that changes the app fleet takes the same lock key, and
/// every playbook that changes the database the same key per cluster, so two
/// of them never run at once on the same target.
#[test]
fn playbooks_that_change_one_target_share_its_lock_key() {
    let run = Run::new().cwd(support::workspace());
    let lock = |name: &str, sets: &[&str]| -> String {
        let mut args = vec![
            "--playbooks".to_owned(),
            "playbooks".to_owned(),
            "plan".to_owned(),
            name.to_owned(),
        ];
        for s in sets {
            args.push("--set".to_owned());
            args.push((*s).to_owned());
        }
        args.extend(["--output".to_owned(), "json".to_owned()]);
        let out = run.exec(&args).exit(0);
        let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
        v["lock"].as_str().unwrap_or_default().to_owned()
    };
    for (name, sets) in [
        ("rolling-deploy", &["release=v2"][..]),
        ("app-rollback", &["to=v1"][..]),
        ("startup", &[][..]),
        ("graceful-shutdown", &[][..]),
        ("emergency-shutdown", &[][..]),
    ] {
        assert_eq!(lock(name, sets), "fleet/app", "{name}");
        let mut other = sets.to_vec();
        other.push("fleet=billing");
        assert_eq!(lock(name, &other), "fleet/billing", "{name}");
    }
    for name in ["dr-failover", "dr-drill"] {
        assert!(lock(name, &[]).split(", ").eq(["db/main", "fleet/app"]), "{name}");
    }
    // blue-green migrates the database both colours share.
    let bg = lock("blue-green", &["release=v2"]);
    assert!(bg.split(", ").eq(["db/main", "fleet/app"]), "{bg}");
    // db-rollback changes the schema the fleet's code reads: it holds the
    // fleet's key too, so it and a deploy exclude each other.
    let dbr = lock("db-rollback", &["migration=0005"]);
    assert!(dbr.split(", ").eq(["db/main", "fleet/app"]), "{dbr}");
    let restore = lock("full-restore", &["file=/tmp/x.dump", "release=v1"]);
    assert!(restore.split(", ").eq(["db/main", "fleet/app"]), "{restore}");
}

/// The schemas of the read-only commands' `--output json` are generated from
/// their types; the committed copies must be current.
#[test]
fn committed_cli_schemas_are_current() {
    // The commands with a schema, as runbook itself lists them.
    let asked = Run::new().args(["schema", "--output-of", "nothing"]).run().exit(2);
    let listed = asked
        .stderr
        .split("hint: one of ")
        .nth(1)
        .and_then(|r| r.split(';').next())
        .unwrap_or_else(|| panic!("no list in {}", asked.stderr))
        .to_owned();
    let commands: Vec<&str> = listed.split(", ").collect();
    assert!(commands.len() >= 9 && commands.contains(&"validate"), "{listed}");
    for command in commands {
        let out = Run::new().args(["schema", "--output-of", command]).run().exit(0);
        let path = format!("schemas/cli/{command}.json");
        let committed = std::fs::read_to_string(workspace().join(&path)).unwrap_or_default();
        assert!(
            committed.trim() == out.stdout.trim(),
            "{path} is stale: regenerate it with scripts/regen"
        );
    }
}

/// What each read-only command prints with `--output json` follows its
/// committed schema, for a good library, a broken playbook and an inventory.
#[test]
fn json_output_of_the_read_commands_follows_its_schema() {
    let check = |command: &str, stdout: &str| -> serde_json::Value {
        let path = workspace().join(format!("schemas/cli/{command}.json"));
        let schema: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let doc: serde_json::Value =
            serde_json::from_str(stdout).unwrap_or_else(|e| panic!("{command}: not JSON ({e}): {stdout}"));
        let v = jsonschema::validator_for(&schema).unwrap();
        let errors: Vec<String> = v.iter_errors(&doc).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{command}: {errors:?}");
        doc
    };
    let repo = Run::new().cwd(workspace());
    let list = repo.exec(["list", "--output", "json"]).exit(0);
    let doc = check("list", &list.stdout);
    assert!(
        doc["playbooks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "rolling-deploy")
    );
    let show = repo.exec(["show", "rolling-deploy", "--output", "json"]).exit(0);
    let doc = check("show", &show.stdout);
    assert_eq!(doc["required_inputs"], serde_json::json!(["release"]));
    let valid = repo.exec(["validate", "--output", "json"]).exit(0);
    let doc = check("validate", &valid.stdout);
    assert_eq!(doc["invalid"], 0);
    let plan = repo
        .exec(["plan", "rolling-deploy", "--set", "release=v2", "--output", "json"])
        .exit(0);
    check("plan", &plan.stdout);
    // A run's history and the locks, from a state of its own.
    let hello = Run::new().playbook("hello", HELLO);
    let id = hello.exec(["run", "hello"]).exit(0).run_id();
    let doc = check(
        "status",
        &hello.exec(["status", &id, "--output", "json"]).exit(0).stdout,
    );
    assert_eq!(doc["steps"][0]["state"], "succeeded");
    check("history", &hello.exec(["status", "--output", "json"]).exit(0).stdout);
    let doc = check(
        "history",
        &hello.exec(["history", "hello", "--output", "json"]).exit(0).stdout,
    );
    assert_eq!(doc[0]["playbook"], "hello");
    check("locks", &hello.exec(["locks", "--output", "json"]).exit(0).stdout);

    // A broken playbook: each diagnostic with file, line and column, nothing on stderr.
    let broken = Run::new()
        .playbook("t", "apiVersion: runbook/v1\nname: t\nversion: 1\nsteps:\n  - { id: a, uses: shelll, with: { run: \"true\" } }\n")
        .file("inventory.yaml", "hosts:\n  web1: { address: 10.0.0.1, user: deploy, port: 2222 }\ngroups:\n  web: [web1]\n");
    let out = broken.exec(["validate", "t", "--output", "json"]).exit(2);
    let doc = check("validate", &out.stdout);
    let d = &doc["files"][0]["diagnostics"][0];
    assert_eq!(
        (d["code"].as_str(), d["line"].as_u64(), d["column"].as_u64()),
        (Some("unknown-kind"), Some(5), Some(20)),
        "{doc:#}"
    );
    assert_eq!(d["hint"], "did you mean `shell`?");
    assert!(out.stderr.is_empty(), "{}", out.stderr);
    let inv = broken.exec(["inventory", "--output", "json"]).exit(0);
    let doc = check("inventory", &inv.stdout);
    assert_eq!(doc["hosts"]["web1"]["port"], 2222);
    assert_eq!(doc["hosts"]["web1"]["groups"], serde_json::json!(["web"]));
}

/// runbook.toml, found upward from the current folder, says where the library,
/// inventory and state are; a flag or an environment variable wins over it;
/// `runbook config` says which setting came from where.
#[test]
fn runbook_toml_sets_the_defaults_and_flags_and_environment_win() {
    let run = Run::new()
        .file(
            "project/runbook.toml",
            "playbooks = \"ops/playbooks\"\nstate = \"ops/state.db\"\n",
        )
        .file("project/ops/playbooks/hello/v1.yaml", HELLO)
        .file("project/deep/er/.keep", "");
    let here = run.path().join("project/deep/er");
    let run = run.cwd(&here).unset("RUNBOOK_STATE");
    let out = run.exec(["config"]).exit(0);
    let root = run.path().join("project");
    assert!(
        out.stdout.contains(&format!(
            "playbooks  {}  (file {})",
            root.join("ops/playbooks").display(),
            root.join("runbook.toml").display()
        )),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains(&format!("state      {}", root.join("ops/state.db").display())),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("notify     (not set)  (none)"), "{}", out.stdout);
    run.exec(["list"]).exit(0).stdout_has("hello");
    run.exec(["run", "hello"]).exit(0);
    assert!(
        root.join("ops/state.db").exists(),
        "runs are recorded where the file says"
    );
    // A flag wins over the file.
    run.exec(["--playbooks", "/nonexistent", "config"])
        .exit(0)
        .stdout_has("playbooks  /nonexistent  (flag)");
    // A mistake in the file is an error, not a guess.
    std::fs::write(root.join("runbook.toml"), "playbook = \"x\"\n").unwrap();
    run.exec(["list"]).exit(2).stderr_has("unknown field `playbook`");
}

#[test]
fn the_man_page_and_completions_come_from_the_command_line_definition() {
    let man = Run::new().args(["docs", "man"]).run().exit(0);
    assert!(
        man.stdout.contains(".TH runbook 1"),
        "{}",
        &man.stdout[..200.min(man.stdout.len())]
    );
    assert!(man.stdout.contains("resume"));
    let bash = Run::new().args(["completions", "bash"]).run().exit(0);
    assert!(bash.stdout.contains("--to-current"), "completions know every flag");
}

/// book/src/architecture.md draws each crate's arrows; they are the
/// dependencies its Cargo.toml declares, no more and no fewer.
#[test]
fn the_architecture_page_draws_the_real_crate_arrows() {
    let root = support::workspace();
    let page = std::fs::read_to_string(root.join("book/src/architecture.md")).unwrap();
    let mut drawn = std::collections::BTreeMap::new();
    for line in page.lines().filter(|l| l.contains(" ──> ")) {
        let (from, to) = line.split_once(" ──> ").unwrap();
        let to = to.split("  ").next().unwrap_or_default();
        let deps: std::collections::BTreeSet<String> = to
            .split(", ")
            .map(str::trim)
            .filter(|d| d.starts_with("runbook-"))
            .map(str::to_owned)
            .collect();
        drawn.insert(from.trim().to_owned(), deps);
    }
    for entry in std::fs::read_dir(root.join("crates")).unwrap() {
        let dir = entry.unwrap().path();
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let toml = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap();
        let deps_section = toml.split("[dependencies]").nth(1).unwrap_or_default();
        let deps_section = deps_section.split("\n[").next().unwrap_or_default();
        let mut real: std::collections::BTreeSet<String> = deps_section
            .lines()
            .filter_map(|l| l.split(['.', ' ', '=']).next())
            .filter(|d| d.starts_with("runbook-"))
            .map(|d| {
                if d.starts_with("runbook-step-") && name == "runbook-cli" {
                    "runbook-step-*".to_owned()
                } else {
                    d.to_owned()
                }
            })
            .collect();
        real.remove(&name);
        let key = if name.starts_with("runbook-step-") && !drawn.contains_key(&name) {
            "runbook-step-*".to_owned()
        } else {
            name.clone()
        };
        let want = drawn
            .get(&key)
            .unwrap_or_else(|| panic!("{name} is not drawn in architecture.md"));
        assert_eq!(&real, want, "{name}: its Cargo.toml against architecture.md");
    }
}

/// The command line stays a front end: no two of its modules reach each
/// other through imports, and its code (blank lines and comments aside)
/// stays within 2,500 lines; the lifecycle lives in runbook-runner, which
/// knows no argument parser, terminal or step kind.
#[test]
fn the_command_line_is_a_front_end_without_module_cycles() {
    let root = support::workspace();
    let src = root.join("crates/runbook-cli/src");
    let mut imports = std::collections::BTreeMap::new();
    let mut code_lines = 0;
    for entry in std::fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        let module = path.file_stem().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&path).unwrap();
        code_lines += text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with("//"))
            .count();
        let used: std::collections::BTreeSet<String> = text
            .split("crate::")
            .skip(1)
            .map(|rest| {
                rest.chars()
                    .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                    .collect()
            })
            .filter(|m: &String| !m.is_empty() && *m != module)
            .collect();
        imports.insert(module, used);
    }
    for (module, used) in &imports {
        // Everything `module` reaches, through any chain of imports.
        let mut reached = std::collections::BTreeSet::new();
        let mut next: Vec<&String> = used.iter().collect();
        while let Some(m) = next.pop() {
            if reached.insert(m.clone()) {
                next.extend(imports.get(m).into_iter().flatten());
            }
        }
        assert!(
            !reached.contains(module),
            "crates/runbook-cli/src/{module}.rs is in an import cycle"
        );
    }
    assert!(
        code_lines <= 2500,
        "the command line has {code_lines} lines of code; move logic to a library crate"
    );
    let runner = std::fs::read_to_string(root.join("crates/runbook-runner/Cargo.toml")).unwrap();
    let deps = runner
        .split("[dependencies]")
        .nth(1)
        .unwrap()
        .split("\n[")
        .next()
        .unwrap();
    for banned in ["clap", "miette", "indicatif", "runbook-step-"] {
        assert!(!deps.contains(banned), "runbook-runner depends on {banned}");
    }
}
