//! The `shell` step kind: a command run locally by `/bin/sh -c`.
//!
//! This crate owns the kind's parameters (its `with:`), from which the JSON
//! Schema and the book's reference are generated, and what `plan` says about a
//! call. It depends only on `runbook-core`, never on the engine.
//!
//! A key design decision: `run` is a shell-run field, so `{{x}}` in it inserts
//! the value shell-quoted; an input is data, never shell code, unless the
//! playbook writes `{{{x}}}` (which `validate` flags).

use indexmap::IndexMap;
use runbook_core::kind::{Effect, OutputDecl, OutputType, Scalar, StepKind, one_line, schema_for};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

/// Runs a command locally with `/bin/sh -c`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ShellParams {
    /// The command, run by `/bin/sh -c`. `{{x}}` inserts a value quoted for where it stands (a word, or inside quotes).
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
}

/// The `shell` kind.
#[derive(Debug, Clone, Copy, Default)]
pub struct Shell;

const OUTPUTS: &[OutputDecl] = &[
    OutputDecl {
        name: "exit_code",
        ty: OutputType::Integer,
        doc: "the command's exit status",
    },
    OutputDecl {
        name: "stdout",
        ty: OutputType::String,
        doc: "standard output, trailing newline removed",
    },
    OutputDecl {
        name: "stderr",
        ty: OutputType::String,
        doc: "standard error, trailing newline removed",
    },
    OutputDecl {
        name: "json",
        ty: OutputType::Any,
        doc: "standard output parsed as JSON (with `json: true`)",
    },
];

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

    fn outputs(&self) -> &'static [OutputDecl] {
        OUTPUTS
    }

    fn describe(&self, with: &Json) -> String {
        let run = with.get("run").and_then(Json::as_str).unwrap_or_default();
        format!("run `{}`", one_line(run, 100))
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
