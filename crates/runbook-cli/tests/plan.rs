//! `plan` on realistic playbooks: execution order, parallel stages, rendered
//! params, typed placeholders, for_each expansion, when, handlers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;
use support::{Run, workspace};

fn plan(name: &str, sets: &[&str]) -> support::Outcome {
    let mut args = vec![
        "--playbooks".to_owned(),
        "tests/corpus/plans".to_owned(),
        "plan".to_owned(),
        name.to_owned(),
    ];
    for s in sets {
        args.push("--set".to_owned());
        args.push((*s).to_owned());
    }
    Run::new().cwd(workspace()).args(args).run()
}

#[test]
fn rolling_deploy_plan() {
    let out = plan(
        "rolling-deploy",
        &["release=v42", "hosts=[web1, web2]", "env=prod", "notify=true"],
    )
    .exit(0)
    // for_each known from inputs: expanded per host, nested for_each per unit.
    .stdout_has("roll[web2].components[celery]")
    .stdout_has(r#"run `ssh "${RUNBOOK_HOST}" systemctl restart "${RUNBOOK_UNIT}"`"#)
    .stdout_has("env: {RUNBOOK_HOST: web2, RUNBOOK_UNIT: celery}")
    // outputs of earlier steps as typed placeholders, in the variables.
    .stdout_has(r#"RUNBOOK_STEPS_FETCH_OUTPUTS_STDOUT: "<steps.fetch.outputs.stdout: string>""#)
    // parallel stage: preflight and fetch both start at once.
    .stdout_has(" 1∥  preflight")
    .stdout_has(" 1∥  fetch")
    // `when` decided from inputs.
    .stdout_has(r#"announce   unknown  shell       run `notify 'deployed '"${RUNBOOK_INPUTS_RELEASE}"''`"#)
    .stdout_lacks("skipped");
    insta::assert_snapshot!(out.stdout);
}

#[test]
fn when_false_is_shown_as_skipped() {
    plan("rolling-deploy", &["release=v42"])
        .exit(0)
        .stdout_has("skipped: `when: {{and inputs.notify (eq inputs.env \"prod\")}}` is false");
}

#[test]
fn dr_failover_plan() {
    let out = plan("dr-failover", &[])
        .exit(0)
        // conditions on step outputs are left to the run.
        .stdout_has("when: {{eq steps.lag.outputs.exit_code 0}} (decided at run time)")
        // secrets never appear, only a placeholder.
        .stdout_has("PGPASSWORD: <secret PGPASSWORD>")
        .stdout_has("concurrency ramp [1, 50%, 100%]")
        .stdout_has("undo:")
        .stdout_has("5 attempts, 1s apart, backing off, until");
    insta::assert_snapshot!(out.stdout);
}

#[test]
fn backup_plan_with_runtime_fan_out() {
    let out = plan("backup-verify", &["database=ledger"])
        .exit(0)
        .stdout_has(" 2∥  verify")
        .stdout_has(" 2∥  copy")
        .stdout_has("for each item in {{steps.report.outputs.json}} (known at run time)")
        .stdout_has("list-later[<item>]")
        .stdout_has("failure does not fail the run");
    insta::assert_snapshot!(out.stdout);
}

#[test]
fn plan_as_json_marks_effects() {
    let out = plan("backup-verify", &[]).exit(0);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap_or(serde_json::Value::Null);
    assert!(v.is_null(), "text by default");
    let out = Run::new()
        .cwd(workspace())
        .args([
            "--playbooks",
            "tests/corpus/plans",
            "plan",
            "backup-verify",
            "--output",
            "json",
        ])
        .run()
        .exit(0);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).expect("json");
    assert_eq!(v["steps"][0]["path"], "dump");
    assert_eq!(v["steps"][0]["effect"], "unknown");
    assert_eq!(v["steps"][2]["children"][1]["path"], "copy[nfs]");
}

#[test]
fn plan_refuses_bad_inputs_and_names_them() {
    plan(
        "rolling-deploy",
        &["release=42; rm -rf /", "batch=0", "hosts=web1", "relase=v1"],
    )
    .exit(2)
    .stderr_has("input `release`: `42; rm -rf /` does not match the pattern `^v[0-9]+$`")
    .stderr_has("input `batch`: `0` must be at least 1")
    .stderr_has("input `hosts`: expected a list, found a string `web1`")
    .stderr_has("declares no input `relase` (hint: did you mean `release`?)")
    .stderr_has("nothing was run");
    plan("rolling-deploy", &[])
        .exit(2)
        .stderr_has("input `release`: is required");
}

#[test]
fn inputs_file_errors_point_into_the_file() {
    Run::new()
        .file("in.yaml", "release: v7\nbatch: many\n")
        .args([
            "--playbooks",
            &workspace().join("tests/corpus/plans").display().to_string(),
            "plan",
            "rolling-deploy",
            "--inputs",
            "in.yaml",
        ])
        .run()
        .exit(2)
        .stderr_has("input `batch`: expected an integer, found a string `many`")
        .stderr_has("╭─[in.yaml:2:8]");
}

#[test]
fn set_wins_over_inputs_file() {
    Run::new()
        .file("in.yaml", "release: v7\nhosts: [a]\n")
        .args([
            "--playbooks",
            &workspace().join("tests/corpus/plans").display().to_string(),
            "plan",
            "rolling-deploy",
            "--inputs",
            "in.yaml",
            "--set",
            "release=v8",
        ])
        .run()
        .exit(0)
        .stdout_has("inputs: release=v8, hosts=[a]");
}

#[test]
fn graph_formats() {
    let dot = Run::new()
        .cwd(workspace())
        .args(["--playbooks", "tests/corpus/plans", "graph", "backup-verify"])
        .run()
        .exit(0);
    assert!(dot.stdout.starts_with("digraph \"backup-verify\""));
    assert!(dot.stdout.contains("\"dump\" -> \"verify\";"));
    assert!(dot.stdout.contains("\"dump\" -> \"copy.upload\";"));
    insta::assert_snapshot!("graph_dot", dot.stdout);
    let mermaid = Run::new()
        .cwd(workspace())
        .args([
            "--playbooks",
            "tests/corpus/plans",
            "graph",
            "rolling-deploy",
            "--format",
            "mermaid",
        ])
        .run()
        .exit(0);
    assert!(mermaid.stdout.starts_with("flowchart TD"));
    assert!(mermaid.stdout.contains("preflight --> roll_drain"));
    insta::assert_snapshot!("graph_mermaid", mermaid.stdout);
}

/// language.md (secrets): "`plan` never shows a declared secret's value,
/// whichever way a template reads it (`secrets.X`, `env.X`)".
#[test]
fn a_plan_never_shows_a_secret_read_through_the_environment() {
    let yaml = "apiVersion: runbook/v1\nname: e\nversion: 1\nsecrets: [TOKEN, { name: DB, env: PGPASS }]\nsteps:\n  - { id: a, uses: shell, with: { run: \"curl -H 'X: {{env.TOKEN}}' -u {{env.PGPASS}} {{secrets.DB}} {{env.VAULT_TOKEN}} {{env.OTHER}}\", env: { T: \"{{env.TOKEN}}\" } } }\n";
    let run = Run::new()
        .playbook("e", yaml)
        .env("TOKEN", "tok-abc-7741")
        .env("PGPASS", "pg-pass-9981")
        .env("VAULT_TOKEN", "hvs.vault-5512")
        // The same value under another name (PGPASSWORD beside DB_PASSWORD).
        .env("OTHER", "tok-abc-7741");
    for args in [vec!["plan", "e"], vec!["plan", "e", "--output", "json"]] {
        let out = run.exec(args).exit(0);
        for secret in ["tok-abc-7741", "pg-pass-9981", "hvs.vault-5512"] {
            assert!(!out.stdout.contains(secret), "{secret} in\n{}", out.stdout);
        }
        assert!(out.stdout.contains("<secret TOKEN>"), "{}", out.stdout);
        assert!(out.stdout.contains("<secret DB>"), "{}", out.stdout);
    }
}
