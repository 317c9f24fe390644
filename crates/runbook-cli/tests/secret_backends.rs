//! Secret backends against real servers: AWS Secrets Manager through the
//! SDK against moto (a local AWS API), fetched when a run starts and again when
//! it resumes (a rotation between the two is seen), masked, never journalled;
//! a secret that cannot be read refuses the run before anything happens.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;
use support::Run;

/// The AWS settings of a run against moto.
fn aws_env(moto: &support::Moto) -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ENDPOINT_URL", moto.endpoint.clone()),
        ("AWS_ACCESS_KEY_ID", "testing".to_owned()),
        ("AWS_SECRET_ACCESS_KEY", "testing".to_owned()),
        ("AWS_REGION", "us-east-1".to_owned()),
        // No profile or instance metadata of the machine the tests run on.
        ("AWS_CONFIG_FILE", "/dev/null".to_owned()),
        ("AWS_SHARED_CREDENTIALS_FILE", "/dev/null".to_owned()),
        ("AWS_EC2_METADATA_DISABLED", "true".to_owned()),
    ]
}

#[test]
fn aws_secrets_are_read_through_the_sdk_masked_and_read_again_on_resume() {
    let moto = support::Moto::start();
    moto.fixture(&[
        "secret",
        "prod/finance/db",
        r#"{"username": "finance", "password": "pw-before-rotation"}"#,
    ]);
    moto.fixture(&["secret", "prod/finance/api", "api-key-31f9c2"]);
    let run = Run::new();
    let seen = run.path().join("seen");
    let yaml = format!(
        r#"apiVersion: runbook/v1
name: s
version: 1
secrets:
  - {{ name: DB_PASSWORD, aws: {{ secret_id: prod/finance/db, key: password }} }}
  - {{ name: API_KEY, aws: {{ secret_id: prod/finance/api, region: us-east-1 }} }}
steps:
  - id: first
    uses: shell
    with:
      run: 'printf "%s %s\n" "$PW" "$KEY" >> {seen}; echo "using $PW"; printf %s "$PW" | base64'
      env: {{ PW: "{{{{secrets.DB_PASSWORD}}}}", KEY: "{{{{secrets.API_KEY}}}}" }}
  - {{ id: ok, uses: approve, with: {{ message: "go on?" }} }}
  - id: second
    uses: shell
    with:
      run: 'printf "%s\n" "$PW" >> {seen}'
      env: {{ PW: "{{{{secrets.DB_PASSWORD}}}}" }}
"#,
        seen = seen.display()
    );
    let run = run.playbook("s", &yaml);
    let env = aws_env(&moto);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let out = run.exec_env(&env, ["run", "s"]).exit(3);
    let id = out.run_id();
    assert_eq!(
        std::fs::read_to_string(&seen).unwrap(),
        "pw-before-rotation api-key-31f9c2\n",
        "the field of a JSON secret, and a whole one"
    );
    // The secret is rotated while the run waits: the resumed run reads it again.
    moto.fixture(&[
        "secret",
        "prod/finance/db",
        r#"{"username": "finance", "password": "pw-after-rotation"}"#,
    ]);
    let answered = run.exec_env(&env, ["approve", &id]).exit(0);
    assert_eq!(
        std::fs::read_to_string(&seen).unwrap(),
        "pw-before-rotation api-key-31f9c2\npw-after-rotation\n"
    );
    let logs = run.exec(["logs", &id]).exit(0);
    assert!(logs.stdout.contains("using ***"), "{}", logs.stdout);
    let journal = String::from_utf8_lossy(&std::fs::read(run.path().join("state.db")).unwrap()).into_owned();
    let everything = format!(
        "{}{}{}{}{journal}",
        out.stdout, out.stderr, answered.stdout, logs.stdout
    );
    for secret in [
        "pw-before-rotation",
        "pw-after-rotation",
        "api-key-31f9c2",
        "cHctYmVmb3JlLXJvdGF0aW9u",
    ] {
        assert!(!everything.contains(secret), "{secret} leaked");
    }
}

#[test]
fn an_aws_secret_that_cannot_be_read_refuses_the_run_saying_why() {
    let moto = support::Moto::start();
    moto.fixture(&["secret", "prod/plain", "not-json"]);
    let run = Run::new();
    let marker = run.path().join("ran");
    let playbook = |source: &str| {
        format!(
            "apiVersion: runbook/v1\nname: s\nversion: 1\nsecrets:\n  - {{ name: X, aws: {{ {source} }} }}\nsteps:\n  - {{ id: a, uses: shell, with: {{ run: 'touch {}' }} }}\n",
            marker.display()
        )
    };
    let env = aws_env(&moto);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    for (source, why) in [
        (
            "secret_id: prod/missing",
            "no secret `prod/missing` (check its name and the region)",
        ),
        (
            "secret_id: prod/plain, key: password",
            "its value is not a JSON object, so it has no field `password`",
        ),
    ] {
        let run = Run::new().playbook("s", &playbook(source));
        let out = run.exec_env(&env, ["run", "s"]).exit(2);
        assert!(out.stderr.contains(why), "{source}: {}", out.stderr);
        assert!(
            out.stderr.contains("secret `X` (AWS Secrets Manager)"),
            "{}",
            out.stderr
        );
        assert!(!marker.exists(), "nothing ran");
    }
    // Two sources for one secret: refused by validate, with the line.
    Run::new()
        .playbook("s", &playbook("secret_id: a }, env: X, vault: { path: p, key: k"))
        .args(["validate", "s"])
        .run()
        .exit(2)
        .stderr_has("names 3 sources: env, aws, vault");
}

/// A step's declared secret outputs: the steps after it read the value, logs,
/// events and the journal only `***`; a resumed run that still needs the value
/// runs the step again (it was never journalled) and the reader gets the new
/// one, never `***`.
#[test]
fn a_declared_secret_output_is_masked_and_produced_again_on_resume() {
    let run = Run::new();
    let seen = run.path().join("seen");
    let counter = run.path().join("counter");
    let yaml = format!(
        r#"apiVersion: runbook/v1
name: tok
version: 1
steps:
  - id: login
    uses: shell
    secret_outputs: [stdout]
    with: {{ run: 'n=$(($(cat {counter} 2>/dev/null || echo 0) + 1)); echo $n > {counter}; echo "tok-$n-$(printf %s c0 ff ee)"' }}
  - id: use
    uses: shell
    with:
      run: 'printf "%s\n" "$TOKEN" >> {seen}; echo "logged in with $TOKEN"'
      env: {{ TOKEN: "{{{{steps.login.outputs.stdout}}}}" }}
  - {{ id: ok, uses: approve, with: {{ message: "go on?" }} }}
  - id: again
    uses: shell
    with:
      run: 'printf "%s\n" "$TOKEN" >> {seen}'
      env: {{ TOKEN: "{{{{steps.login.outputs.stdout}}}}" }}
"#,
        counter = counter.display(),
        seen = seen.display()
    );
    let run = run.playbook("tok", &yaml);
    let out = run.exec(["run", "tok", "--output", "json"]).exit(3);
    let id = out.run_id();
    assert_eq!(
        std::fs::read_to_string(&seen).unwrap(),
        "tok-1-c0ffee\n",
        "the reader got the value"
    );
    assert_eq!(out.outputs_of("login")["stdout"], "***");
    let answered = run.exec(["approve", &id]).exit(0);
    assert_eq!(
        std::fs::read_to_string(&seen).unwrap(),
        "tok-1-c0ffee\ntok-2-c0ffee\n",
        "the resumed run logged in again for the step that still needed the token"
    );
    let logs = run.exec(["logs", &id]).exit(0);
    assert!(logs.stdout.contains("logged in with ***"), "{}", logs.stdout);
    let journal = String::from_utf8_lossy(&std::fs::read(run.path().join("state.db")).unwrap()).into_owned();
    let everything = format!(
        "{}{}{}{}{journal}",
        out.stdout, out.stderr, answered.stdout, logs.stdout
    );
    if let Some(at) = everything.find("c0ffee") {
        let from = everything[..at].char_indices().rev().nth(200).map_or(0, |(i, _)| i);
        panic!(
            "a secret output leaked: …{}…",
            &everything[from..(at + 40).min(everything.len())]
        );
    }
    // Only outputs the step has can be declared secret.
    Run::new()
        .playbook(
            "tok",
            &yaml.replace("secret_outputs: [stdout]", "secret_outputs: [stdot]"),
        )
        .args(["validate", "tok"])
        .run()
        .exit(2)
        .stderr_has("`shell` has no output `stdot`");
}
