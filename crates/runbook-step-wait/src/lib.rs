//! The `sleep` and `wait` step kinds: pausing, and polling until something holds.
//!
//! This crate owns their parameters (their `with:`), from which the JSON Schema
//! and the book's reference are generated, and what `plan` says about a call.
//! It depends only on `runbook-core`, never on the engine.
//!
//! `wait` nests a step call (`check:`) that is polled until it succeeds, or, with
//! `until:`, until a condition over the last check (`check.outputs.*`,
//! `check.status`) renders `true`.

use runbook_core::inputs::parse_duration;
use runbook_core::kind::{
    Effect, NestedStep, OutputDecl, OutputType, Outputs, StepContext, StepError, StepKind, UNKNOWN_YET, params,
    plan_params, schema_for,
};
use runbook_core::template::Renderer;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use std::time::{Duration, Instant};

/// Pauses for a fixed time.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SleepParams {
    /// How long: `30s`, `5m`, `250ms`.
    #[schemars(extend("format" = "duration"))]
    pub duration: String,
}

/// The `sleep` kind.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sleep;

const WAITED: &[OutputDecl] = &[OutputDecl::new("waited", OutputType::Number, "seconds actually waited")];

#[async_trait::async_trait]
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

    fn outputs(&self) -> &[OutputDecl] {
        WAITED
    }

    fn describe(&self, with: &Json) -> String {
        plan_params::<SleepParams>(with)
            .map_or_else(|| format!("sleep {UNKNOWN_YET}"), |p| format!("sleep {}", p.duration))
    }

    async fn run(&self, ctx: &StepContext, with: Json) -> Result<Outputs, StepError> {
        let p: SleepParams = params(with)?;
        let d = duration("duration", &p.duration)?;
        let start = Instant::now();
        pause(ctx, d).await?;
        Ok(waited(start))
    }
}

fn duration(field: &str, text: &str) -> Result<Duration, StepError> {
    parse_duration(text).map_err(|e| StepError::new(format!("`{field}`: {e}")))
}

/// Sleeps, but stops at once when the run is cancelled.
async fn pause(ctx: &StepContext, d: Duration) -> Result<(), StepError> {
    if d.is_zero() {
        // The timer wheel's resolution is 1 ms; a zero pause must not wait for it.
        return if ctx.cancel.is_cancelled() {
            Err(StepError::cancelled())
        } else {
            Ok(())
        };
    }
    tokio::select! {
        () = tokio::time::sleep(d) => Ok(()),
        () = ctx.cancel.cancelled() => Err(StepError::cancelled()),
    }
}

fn waited(start: Instant) -> Outputs {
    let mut out = Outputs::new();
    let secs = (start.elapsed().as_secs_f64() * 1000.0).round() / 1000.0;
    out.insert(
        "waited".into(),
        serde_json::Number::from_f64(secs).map_or(Json::Null, Json::Number),
    );
    out
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
    #[schemars(extend("format" = "duration"))]
    pub interval: Option<String>,
    /// Give up after this long (default `5m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "duration"))]
    pub timeout: Option<String>,
}

/// The `wait` kind.
#[derive(Debug, Clone, Copy, Default)]
pub struct Wait;

const WAIT_OUTPUTS: &[OutputDecl] = &[
    OutputDecl::new("waited", OutputType::Number, "seconds until the check held"),
    OutputDecl::new("attempts", OutputType::Integer, "how many times the check ran"),
    OutputDecl::new("outputs", OutputType::Any, "the outputs of the last check"),
];

#[async_trait::async_trait]
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

    fn outputs(&self) -> &[OutputDecl] {
        WAIT_OUTPUTS
    }

    fn describe(&self, with: &Json) -> String {
        let Some(p) = plan_params::<WaitParams>(with) else {
            return format!("poll a check {UNKNOWN_YET}");
        };
        let kind = &p.check.uses;
        let every = p.interval.as_deref().unwrap_or("5s");
        let up_to = p.timeout.as_deref().unwrap_or("5m");
        match &p.until {
            Some(c) => format!("poll `{kind}` every {every} until {c} (up to {up_to})"),
            None => format!("poll `{kind}` every {every} until it succeeds (up to {up_to})"),
        }
    }

    fn deferred_fields(&self) -> &'static [&'static str] {
        &["/until"]
    }

    async fn run(&self, ctx: &StepContext, with: Json) -> Result<Outputs, StepError> {
        let p: WaitParams = params(with)?;
        let interval = duration("interval", p.interval.as_deref().unwrap_or("5s"))?;
        let timeout = duration("timeout", p.timeout.as_deref().unwrap_or("5m"))?;
        let renderer = Renderer::new();
        let start = Instant::now();
        let mut attempts = 0u64;
        loop {
            attempts += 1;
            let result = ctx
                .nested
                .call(&p.check.uses, Json::Object(p.check.with.clone()), ctx)
                .await;
            let (status, outputs, error) = match result {
                Ok(o) => ("succeeded", o, None),
                Err(e) if e.cancelled => return Err(e),
                Err(e) => ("failed", e.outputs, Some(e.message)),
            };
            let holds = match &p.until {
                None => error.is_none(),
                Some(cond) => {
                    let mut data = ctx.data.clone();
                    if let Json::Object(m) = data.json_mut() {
                        m.insert(
                            "check".into(),
                            serde_json::json!({ "status": status, "outputs": outputs }),
                        );
                    }
                    renderer
                        .condition(cond, &data)
                        .map_err(|e| StepError::new(format!("`until`: {e}")))?
                }
            };
            if holds {
                let mut out = waited(start);
                out.insert("attempts".into(), Json::from(attempts));
                out.insert("outputs".into(), Json::Object(outputs));
                return Ok(out);
            }
            if start.elapsed() + interval > timeout {
                let last = error.map_or_else(|| "the condition was false".to_owned(), |e| format!("last check: {e}"));
                return Err(StepError::new(format!(
                    "`{}` did not hold within {} ({attempts} attempts; {last})",
                    p.check.uses,
                    humantime_short(timeout)
                ))
                .with_outputs(outputs));
            }
            ctx.log.line(
                runbook_core::kind::LogStream::Stdout,
                &format!(
                    "waiting: attempt {attempts} {}",
                    if status == "failed" { "failed" } else { "not yet" }
                ),
            );
            pause(ctx, interval).await?;
        }
    }
}

fn humantime_short(d: Duration) -> String {
    format!("{}s", d.as_secs_f64())
}
