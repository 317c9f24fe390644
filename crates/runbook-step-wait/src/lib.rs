//! The `sleep` and `wait` step kinds: pausing, and polling until something holds.
//!
//! This crate owns their parameters (their `with:`), from which the JSON Schema
//! and the book's reference are generated, and what `plan` says about a call.
//! It depends only on `runbook-core`, never on the engine.
//!
//! `wait` nests a step call (`check:`) that is polled until it succeeds, or, with
//! `until:`, until a condition over the last check (`check.outputs.*`,
//! `check.status`) renders `true`.

use runbook_core::kind::{Effect, NestedStep, OutputDecl, OutputType, StepKind, schema_for};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

/// Pauses for a fixed time.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SleepParams {
    /// How long: `30s`, `5m`, `250ms`.
    pub duration: String,
}

/// The `sleep` kind.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sleep;

const WAITED: &[OutputDecl] = &[OutputDecl {
    name: "waited",
    ty: OutputType::Number,
    doc: "seconds actually waited",
}];

impl StepKind for Sleep {
    fn name(&self) -> &'static str {
        "sleep"
    }

    fn summary(&self) -> &'static str {
        "pause for a fixed time"
    }

    fn params_schema(&self) -> Json {
        schema_for::<SleepParams>()
    }

    fn effect(&self, _with: &Json) -> Effect {
        Effect::Read
    }

    fn idempotent(&self, _with: &Json) -> bool {
        true
    }

    fn outputs(&self) -> &'static [OutputDecl] {
        WAITED
    }

    fn describe(&self, with: &Json) -> String {
        format!("sleep {}", with.get("duration").and_then(Json::as_str).unwrap_or("?"))
    }
}

/// Polls a check until it succeeds (or until a condition over it holds).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WaitParams {
    /// The step polled: `{ uses: http-check, with: { url: ... } }`.
    pub check: NestedStep,
    /// A condition over the last check (`check.outputs.*`, `check.status`); without
    /// it, the wait ends when the check succeeds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
    /// Time between attempts (default `5s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    /// Give up after this long (default `5m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
}

/// The `wait` kind.
#[derive(Debug, Clone, Copy, Default)]
pub struct Wait;

const WAIT_OUTPUTS: &[OutputDecl] = &[
    OutputDecl {
        name: "waited",
        ty: OutputType::Number,
        doc: "seconds until the check held",
    },
    OutputDecl {
        name: "attempts",
        ty: OutputType::Integer,
        doc: "how many times the check ran",
    },
    OutputDecl {
        name: "outputs",
        ty: OutputType::Any,
        doc: "the outputs of the last check",
    },
];

impl StepKind for Wait {
    fn name(&self) -> &'static str {
        "wait"
    }

    fn summary(&self) -> &'static str {
        "poll a check at an interval until it holds or a timeout"
    }

    fn params_schema(&self) -> Json {
        schema_for::<WaitParams>()
    }

    fn nested_steps(&self) -> &'static [&'static str] {
        &["/check"]
    }

    fn extra_roots(&self) -> &'static [&'static str] {
        &["check"]
    }

    fn effect(&self, _with: &Json) -> Effect {
        Effect::Read
    }

    fn idempotent(&self, _with: &Json) -> bool {
        true
    }

    fn outputs(&self) -> &'static [OutputDecl] {
        WAIT_OUTPUTS
    }

    fn describe(&self, with: &Json) -> String {
        let kind = with.pointer("/check/uses").and_then(Json::as_str).unwrap_or("?");
        let every = with.get("interval").and_then(Json::as_str).unwrap_or("5s");
        let up_to = with.get("timeout").and_then(Json::as_str).unwrap_or("5m");
        match with.get("until").and_then(Json::as_str) {
            Some(c) => format!("poll `{kind}` every {every} until {c} (up to {up_to})"),
            None => format!("poll `{kind}` every {every} until it succeeds (up to {up_to})"),
        }
    }
}
