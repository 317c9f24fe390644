//! An external kind: a step that runs `runbook-step-<kind> run`, hands it the
//! request on its standard input and reads its messages.

use crate::discover::Found;
use crate::protocol::{Description, Message, PROTOCOL, Request, Status, StreamName, parse_message};
use runbook_core::kind::{
    Effect, LogStream, OutputDecl, OutputType, Outputs, StepContext, StepError, StepKind, one_line,
};
use serde_json::Value as Json;
use std::borrow::Cow;
use std::path::PathBuf;
use std::sync::Mutex;

/// A kind served by a plugin.
#[derive(Debug)]
pub struct External {
    path: PathBuf,
    description: Description,
    outputs: Vec<OutputDecl>,
}

impl External {
    /// The kind a plugin described.
    pub fn new(found: Found) -> External {
        let outputs = found
            .description
            .outputs
            .iter()
            .map(|o| OutputDecl {
                name: Cow::Owned(o.name.clone()),
                ty: o.ty,
                doc: Cow::Owned(o.description.clone()),
            })
            .collect();
        External {
            path: found.path,
            description: found.description,
            outputs,
        }
    }

    fn declared(&self, name: &str) -> Option<OutputType> {
        self.description.outputs.iter().find(|o| o.name == name).map(|o| o.ty)
    }
}

/// What the plugin said so far.
#[derive(Default)]
struct Heard {
    outputs: Outputs,
    result: Option<(Status, Option<String>)>,
    /// The first breach of the protocol, if any.
    fault: Option<String>,
    lines: usize,
}

impl Heard {
    fn fault(&mut self, why: String) {
        if self.fault.is_none() {
            self.fault = Some(why);
        }
    }
}

#[async_trait::async_trait]
impl StepKind for External {
    fn name(&self) -> &str {
        &self.description.kind
    }

    fn summary(&self) -> &str {
        &self.description.description
    }

    fn params_schema(&self) -> Json {
        self.description.schema.clone()
    }

    fn effect(&self, _with: &Json) -> Effect {
        self.description.effect
    }

    fn idempotent(&self, _with: &Json) -> bool {
        self.description.idempotent
    }

    fn outputs(&self) -> &[OutputDecl] {
        &self.outputs
    }

    fn takes_secrets(&self) -> bool {
        true
    }

    fn wants_secrets(&self) -> &[String] {
        &self.description.secrets
    }

    fn describe(&self, with: &Json) -> String {
        let params = match with {
            Json::Object(m) if !m.is_empty() => {
                format!(" with {}", one_line(&Json::Object(m.clone()).to_string(), 100))
            }
            _ => String::new(),
        };
        format!("{} (plugin){params}", self.description.description)
    }

    async fn run(&self, ctx: &StepContext, with: Json) -> Result<Outputs, StepError> {
        let request = Request {
            protocol: PROTOCOL,
            kind: self.description.kind.clone(),
            run_id: ctx.run_id.clone(),
            step: ctx.step.clone(),
            attempt: ctx.attempt,
            idempotency_key: format!("{}/{}", ctx.run_id, ctx.step),
            params: with,
            secrets: ctx.secrets.clone(),
        };
        let mut text = serde_json::to_string(&request).map_err(|e| StepError::new(format!("request: {e}")))?;
        text.push('\n');
        let heard = Mutex::new(Heard::default());
        let on_line = |stream: LogStream, line: &str| {
            if stream == LogStream::Stderr {
                ctx.log.line(LogStream::Stderr, line);
                return;
            }
            let Ok(mut h) = heard.lock() else { return };
            h.lines += 1;
            if line.trim().is_empty() {
                return;
            }
            if h.result.is_some() {
                h.fault("it wrote after its result".to_owned());
                ctx.log.line(LogStream::Stdout, line);
                return;
            }
            match parse_message(line) {
                Ok(m) => self.heard(m, ctx, &mut h),
                Err(why) => {
                    let n = h.lines;
                    h.fault(format!("line {n} of its output is {why}"));
                    ctx.log.line(LogStream::Stdout, line);
                }
            }
        };
        let mut cmd = tokio::process::Command::new(&self.path);
        cmd.arg("run");
        // A plugin gets the secrets its step grants, in the request; the
        // variables runbook read the run's secrets from are not passed on
        // (`run_lines` leaves them out, as for every command).
        let ran = runbook_step_shell::process::run_lines(cmd, Some(&text), ctx, &on_line).await;
        let heard = heard.into_inner().unwrap_or_default();
        let plugin = format!("plugin `{}`", self.path.display());
        let code = match ran {
            Ok(code) => code,
            // Stopped (a cancel, a `timeout:`): what it said while stopping
            // is kept, its result in the step log and in the error.
            Err(e) if e.cancelled => return Err(stopped(heard, ctx)),
            Err(e) => return Err(e),
        };
        let protocol = |why: String| {
            StepError::new(format!(
                "{plugin} broke the protocol: {why} (hint: `runbook plugin test {}`)",
                self.path.display()
            ))
            .with_outputs(heard.outputs.clone())
        };
        if let Some(why) = heard.fault.clone() {
            return Err(protocol(why));
        }
        match heard.result {
            None => Err(protocol(format!(
                "it {} without a result",
                runbook_core::kind::exit_message(code, "")
            ))),
            Some((Status::Succeeded, _)) if code != 0 => Err(protocol(format!(
                "it reported success but then exited with status {code}"
            ))),
            Some((Status::Succeeded, _)) => Ok(heard.outputs),
            Some((Status::Failed, why)) => Err(StepError::new(
                why.filter(|w| !w.trim().is_empty())
                    .unwrap_or_else(|| format!("{plugin} failed without saying why")),
            )
            .with_outputs(heard.outputs)),
        }
    }
}

/// A plugin stopped by SIGTERM: a cancelled step, with the outputs it sent
/// and the `failed` result it wrote while stopping (also in the step log).
fn stopped(heard: Heard, ctx: &StepContext) -> StepError {
    let mut e = StepError::cancelled().with_outputs(heard.outputs);
    if let Some((status, why)) = heard.result {
        let status = match status {
            Status::Succeeded => "succeeded",
            Status::Failed => "failed",
        };
        let said = match why.filter(|w| !w.trim().is_empty()) {
            Some(why) => format!("it stopped with a `{status}` result: {why}"),
            None => format!("it stopped with a `{status}` result"),
        };
        ctx.log.line(LogStream::Stderr, &format!("runbook: {said}"));
        e.message = said;
    }
    e
}

impl External {
    /// Takes in one message.
    fn heard(&self, m: Message, ctx: &StepContext, h: &mut Heard) {
        let output = |h: &mut Heard, name: String, value: Json| match self.declared(&name) {
            None => h.fault(format!(
                "it reported the output `{name}`, which its description does not declare"
            )),
            Some(ty) if !value.is_null() && !ty.admits(&value) => h.fault(format!(
                "its output `{name}` should be of type {} but is {}",
                ty.as_str(),
                one_line(&value.to_string(), 60)
            )),
            Some(_) => {
                h.outputs.insert(name, value);
            }
        };
        match m {
            Message::Log { message, stream } => {
                let stream = match stream {
                    Some(StreamName::Stderr) => LogStream::Stderr,
                    _ => LogStream::Stdout,
                };
                for line in message.lines() {
                    ctx.log.line(stream, line);
                }
            }
            Message::Progress { message, done, total } => {
                let count = match (done, total) {
                    (Some(d), Some(t)) => format!(" [{d}/{t}]"),
                    (Some(d), None) => format!(" [{d}]"),
                    _ => String::new(),
                };
                ctx.log.line(LogStream::Stdout, &format!("progress{count}: {message}"));
            }
            Message::Output { name, value } => output(h, name, value),
            // The engine's log sink registers the value and masks it from
            // here on, as for a command's `::add-mask::` line.
            Message::Mask { value } => ctx.log.line(LogStream::Stdout, &format!("::add-mask::{value}")),
            Message::Result { status, outputs, error } => {
                for (name, value) in outputs {
                    output(h, name, value);
                }
                h.result = Some((status, error));
            }
        }
    }
}
