//! The `shell` step kind: a command run locally by `/bin/sh -c`.
//!
//! This crate owns the kind's parameters (its `with:`), from which the JSON
//! Schema and the book's reference are generated, and what `plan` says about a
//! call. It depends only on `runbook-core`, never on the engine.
//!
//! A key design decision: `run` is a shell-run field, so `{{x}}` in it becomes
//! a reference to a variable of `env` that carries the value (the engine adds
//! it): an input is data, never shell code, unless the playbook writes
//! `{{{x}}}` (which `validate` flags).

pub mod process;

use indexmap::IndexMap;
use runbook_core::kind::{
    Effect, OutputDecl, OutputType, Outputs, Scalar, StepContext, StepError, StepKind, UNKNOWN_YET, one_line, params,
    plan_params, schema_for,
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

/// Runs a command locally with `/bin/sh -c`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ShellParams {
    /// The command, run by `/bin/sh -c`. `{{x}}` passes a value in an environment variable and writes a reference to it (`"${RUNBOOK_INPUTS_X}"`): a value is never script text.
    pub run: String,
    /// Environment variables added to the runner's environment.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub env: IndexMap<String, Scalar>,
    /// The working directory (default: where runbook was started).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    /// Text written to the command's standard input (default: none, stdin is closed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdin: Option<String>,
    /// Parse standard output as JSON into the `json` output.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub json: bool,
    /// The most of each stream kept for the `stdout`/`stderr` outputs, e.g. `8MB` (default 1MB). The log keeps everything; `stdout_truncated` says when the output was cut.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "size"))]
    pub max_output: Option<String>,
}

/// The `shell` kind.
#[derive(Debug, Clone, Copy, Default)]
pub struct Shell;

const OUTPUTS: &[OutputDecl] = &[
    OutputDecl::new("exit_code", OutputType::Integer, "the command's exit status"),
    OutputDecl::new(
        "stdout",
        OutputType::String,
        "standard output, trailing newline removed",
    ),
    OutputDecl::new("stderr", OutputType::String, "standard error, trailing newline removed"),
    OutputDecl::new(
        "json",
        OutputType::Any,
        "standard output parsed as JSON (with `json: true`)",
    ),
    OutputDecl::new(
        "stdout_truncated",
        OutputType::Boolean,
        "true if standard output was longer than `max_output` and `stdout` holds only its start",
    ),
    OutputDecl::new(
        "stderr_truncated",
        OutputType::Boolean,
        "true if standard error was longer than `max_output`",
    ),
];

#[async_trait::async_trait]
impl StepKind for Shell {
    fn name(&self) -> &'static str {
        "shell"
    }

    fn summary(&self) -> &'static str {
        "run a command locally with /bin/sh -c"
    }

    fn params_schema(&self) -> Json {
        schema_for::<ShellParams>()
    }

    fn shell_fields(&self) -> &'static [&'static str] {
        &["/run"]
    }

    fn effect(&self, _with: &Json) -> Effect {
        Effect::Unknown
    }

    fn idempotent(&self, _with: &Json) -> bool {
        false
    }

    fn outputs(&self) -> &[OutputDecl] {
        OUTPUTS
    }

    fn describe(&self, with: &Json) -> String {
        plan_params::<ShellParams>(with).map_or_else(
            || format!("run a command {UNKNOWN_YET}"),
            |p| format!("run `{}`", one_line(&p.run, 100)),
        )
    }

    async fn run(&self, ctx: &StepContext, with: Json) -> Result<Outputs, StepError> {
        let p: ShellParams = params(with)?;
        let mut cmd = tokio::process::Command::new("/bin/sh");
        cmd.arg("-c").arg(&p.run);
        for (k, v) in &p.env {
            cmd.env(k, v.to_string());
        }
        if let Some(cwd) = &p.cwd {
            cmd.current_dir(cwd);
        }
        let keep = match &p.max_output {
            None => process::KEEP,
            Some(text) => runbook_core::inputs::parse_size(text)
                .map_err(|e| StepError::new(format!("`max_output`: {e}")))
                .map(|n| usize::try_from(n).unwrap_or(usize::MAX))?,
        };
        let done = process::run(cmd, p.stdin.as_deref(), keep, ctx).await?;
        let mut out = Outputs::new();
        out.insert("exit_code".into(), Json::from(done.code));
        out.insert("stdout".into(), Json::String(done.stdout.clone()));
        out.insert("stderr".into(), Json::String(done.stderr.clone()));
        out.insert("stdout_truncated".into(), Json::Bool(done.stdout_cut));
        out.insert("stderr_truncated".into(), Json::Bool(done.stderr_cut));
        if done.code != 0 {
            return Err(StepError::new(done.failure_message()).with_outputs(out));
        }
        if p.json && done.stdout_cut {
            return Err(StepError::new(format!(
                "`json: true` but standard output is longer than the {keep} bytes kept (hint: raise `max_output`)"
            ))
            .with_outputs(out));
        }
        if p.json {
            match serde_json::from_str::<Json>(&done.stdout) {
                Ok(v) => {
                    out.insert("json".into(), v);
                }
                Err(e) => {
                    return Err(StepError::new(format!(
                        "`json: true` but standard output is not JSON ({e}); it starts with: {}",
                        one_line(&done.stdout, 80)
                    ))
                    .with_outputs(out));
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn schema_requires_run_and_refuses_unknown_fields() {
        let v = jsonschema::validator_for(&Shell.params_schema()).expect("compiles");
        assert!(v.is_valid(&json!({ "run": "true", "env": { "PORT": 8000, "DEBUG": true } })));
        assert!(!v.is_valid(&json!({ "env": {} })));
        assert!(!v.is_valid(&json!({ "run": "true", "cmd": "x" })));
    }

    #[test]
    fn describes_the_first_line() {
        assert_eq!(Shell.describe(&json!({ "run": "set -e\necho hi" })), "run `set -e…`");
    }
}
