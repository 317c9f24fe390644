//! `runbook plugin test PATH`: checks a plugin against the protocol the way
//! runbook will use it, and says what is wrong.
//!
//! The checks, in order (a failed check stops those that need it):
//! 1. `describe`: one valid description, within the time limit, whose kind
//!    matches the file name;
//! 2. `example`: the description gives a `with:` that its own schema accepts;
//! 3. `run`: the example runs to a success, through the same code a step
//!    uses, every output declared and of its declared type;
//! 4. `cancel`: a second run of the example, sent SIGTERM, stops within the
//!    grace period (or finished before it could be cancelled);
//! 5. `malformed request`: a request that is not JSON, and one of an unknown
//!    protocol version, each end in a failure, not a success or a hang.

use crate::discover::{PREFIX, describe, run_with};
use crate::kind::External;
use crate::protocol::{Description, Message, PROTOCOL, Status, parse_message};
use runbook_core::kind::{Approval, LogSink, LogStream, Nested, Outputs, StepContext, StepError, StepKind};
use serde::Serialize;
use serde_json::{Value as Json, json};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long the example's run may take.
pub const RUN_LIMIT: Duration = Duration::from_secs(60);
/// When the cancel check sends SIGTERM.
const CANCEL_AFTER: Duration = Duration::from_millis(300);

/// One check's verdict.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// What was checked.
    pub name: &'static str,
    /// Passed (true), failed (false).
    pub ok: bool,
    /// What was seen.
    pub detail: String,
}

/// Every check run, in order.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The plugin's executable.
    pub path: String,
    /// The kind, when `describe` said it.
    pub kind: Option<String>,
    /// The checks.
    pub checks: Vec<Check>,
}

impl Report {
    /// True when every check passed.
    pub fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.ok)
    }

    /// The report, for people: each check, then the verdict.
    pub fn text(&self) -> String {
        let mut out = format!("{}\n", self.path);
        for c in &self.checks {
            out.push_str(&format!(
                "  {} {:<18} {}\n",
                if c.ok { "ok  " } else { "FAIL" },
                c.name,
                c.detail
            ));
        }
        out.push_str(if self.passed() {
            "the plugin speaks the protocol\n"
        } else {
            "the plugin does not speak the protocol (book: Plugins)\n"
        });
        out
    }

    fn add(&mut self, name: &'static str, verdict: Result<String, String>) -> bool {
        let ok = verdict.is_ok();
        self.checks.push(Check {
            name,
            ok,
            detail: verdict.unwrap_or_else(|e| e),
        });
        ok
    }
}

/// Runs every check against the plugin at `path`; `with` replaces the
/// description's example.
pub async fn check(path: &Path, with: Option<Json>) -> Report {
    let mut report = Report {
        path: path.display().to_string(),
        kind: None,
        checks: Vec::new(),
    };
    let described = describe(path).and_then(|d| {
        let file = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        match file.strip_prefix(PREFIX) {
            Some(k) if k == d.kind => Ok(d),
            _ => Err(format!(
                "it says kind `{}`, so runbook finds it only as `{PREFIX}{}` (its file is `{file}`)",
                d.kind, d.kind
            )),
        }
    });
    let d = match described {
        Ok(d) => {
            report.kind = Some(d.kind.clone());
            report.add(
                "describe",
                Ok(format!(
                    "kind `{}`, protocol {}, effect {}, {}idempotent, {} output(s)",
                    d.kind,
                    d.protocol,
                    d.effect.as_str(),
                    if d.idempotent { "" } else { "not " },
                    d.outputs.len()
                )),
            );
            d
        }
        Err(why) => {
            report.add("describe", Err(why));
            return report;
        }
    };
    let example = with.or_else(|| d.example.clone());
    let verdict = match &example {
        None => Err("the description has no `example` and none was given (hint: add `example` to `describe`, or pass --with JSON)".to_owned()),
        Some(e) => match jsonschema::validator_for(&d.schema) {
            Err(e) => Err(format!("its schema does not compile: {e}")),
            Ok(v) => {
                let errors: Vec<String> = v.iter_errors(e).map(|e| e.to_string()).collect();
                if errors.is_empty() {
                    Ok(format!("{e} is valid against its schema"))
                } else {
                    Err(format!("its own schema refuses {e}: {}", errors.join("; ")))
                }
            }
        },
    };
    if !report.add("example", verdict) {
        return report;
    }
    let example = example.unwrap_or(Json::Null);
    let kind = External::new(crate::discover::Found {
        path: path.to_owned(),
        description: d.clone(),
    });
    let started = Instant::now();
    let (result, _) = run_once(&kind, &d, &example, None).await;
    let took = started.elapsed();
    let ran = match result {
        Ok(outputs) => Ok(format!(
            "succeeded in {} ms with outputs {}",
            took.as_millis(),
            Json::Object(outputs)
        )),
        Err(e) => Err(e.message),
    };
    if !report.add("run", ran) {
        return report;
    }
    let started = Instant::now();
    let (result, lines) = run_once(&kind, &d, &example, Some(CANCEL_AFTER)).await;
    let took = started.elapsed();
    let cancelled = match result {
        Err(e) if e.cancelled => {
            let after = took.saturating_sub(CANCEL_AFTER);
            if after >= runbook_step_shell::process::GRACE {
                Err(format!(
                    "it ignored SIGTERM and was killed after the {} s grace period (hint: stop on SIGTERM and \
                     leave things as they were or as they are now, said in a result)",
                    runbook_step_shell::process::GRACE.as_secs()
                ))
            } else {
                Ok(format!(
                    "stopped {} ms after SIGTERM ({lines} line(s) before)",
                    after.as_millis()
                ))
            }
        }
        Ok(_) => Ok(format!(
            "not exercised: the example finished in {} ms, before SIGTERM at {} ms",
            took.as_millis(),
            CANCEL_AFTER.as_millis()
        )),
        Err(e) => Err(format!("the second run failed: {}", e.message)),
    };
    report.add("cancel", cancelled);
    report.add("malformed request", malformed(path, &d));
    report
}

/// Runs the example once, cancelled after `cancel_after` if given; the
/// outcome and how many log lines it wrote.
async fn run_once(
    kind: &External,
    d: &Description,
    with: &Json,
    cancel_after: Option<Duration>,
) -> (Result<Outputs, StepError>, usize) {
    let log = Arc::new(Lines::default());
    let secrets = d
        .secrets
        .iter()
        .map(|name| {
            let value = std::env::var(name).unwrap_or_else(|_| format!("plugin-test-secret-{name}"));
            (name.clone(), Json::String(value))
        })
        .collect();
    let ctx = StepContext {
        run_id: "plugin-test".to_owned(),
        step: "example".to_owned(),
        attempt: 1,
        secrets,
        cancel: runbook_core::kind::CancellationToken::new(),
        log: log.clone(),
        data: runbook_core::template::Data::new(json!({})),
        inventory: Arc::new(json!({})),
        nested: Arc::new(NoNested),
        approval: Approval::default(),
        contain: None,
    };
    if let Some(after) = cancel_after {
        let token = ctx.cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            token.cancel();
        });
    }
    let result = match tokio::time::timeout(RUN_LIMIT, kind.run(&ctx, with.clone())).await {
        Ok(r) => r,
        Err(_) => Err(StepError::new(format!(
            "the example did not finish within {} s",
            RUN_LIMIT.as_secs()
        ))),
    };
    let lines = log.count.lock().map(|l| *l).unwrap_or(0);
    let result = result
        .map(|outputs| match log.masked(Json::Object(outputs).to_string()).parse() {
            Ok(Json::Object(o)) => o,
            _ => Outputs::new(),
        })
        .map_err(|mut e| {
            e.message = log.masked(e.message);
            e
        });
    (result, lines)
}

/// Counts log lines, and keeps the values the plugin registered as secret.
#[derive(Default)]
struct Lines {
    count: Mutex<usize>,
    masks: Mutex<Vec<String>>,
}

impl LogSink for Lines {
    fn line(&self, _stream: LogStream, text: &str) {
        if let Ok(mut n) = self.count.lock() {
            *n += 1;
        }
        if let (Some(value), Ok(mut masks)) = (text.strip_prefix("::add-mask::"), self.masks.lock()) {
            masks.push(value.to_owned());
        }
    }
}

impl Lines {
    /// `text` with every registered secret masked.
    fn masked(&self, text: String) -> String {
        let masks = self.masks.lock().map(|m| m.clone()).unwrap_or_default();
        masks
            .iter()
            .filter(|m| !m.is_empty())
            .fold(text, |t, m| t.replace(m.as_str(), "***"))
    }
}

/// A plugin has no nested calls.
struct NoNested;

#[async_trait::async_trait]
impl Nested for NoNested {
    async fn call(&self, uses: &str, _with: Json, _ctx: &StepContext) -> Result<Outputs, StepError> {
        Err(StepError::new(format!("no nested call of `{uses}` in a plugin test")))
    }
}

/// A request that is not JSON, and one of a protocol version from the
/// future: each must end in a failure (a failed result, or a status other
/// than 0 with no success), within the time limit.
fn malformed(path: &Path, d: &Description) -> Result<String, String> {
    let future = json!({
        "protocol": PROTOCOL + 100, "kind": d.kind, "run_id": "plugin-test", "step": "example",
        "attempt": 1, "idempotency_key": "plugin-test/example", "params": d.example.clone().unwrap_or(json!({})), "secrets": {}
    });
    let mut seen = Vec::new();
    for (what, input) in [
        ("not JSON", "{not json\n".to_owned()),
        ("protocol from the future", format!("{future}\n")),
    ] {
        let (code, stdout) = feed(path, &input)?;
        let succeeded = stdout.lines().filter_map(|l| parse_message(l).ok()).any(|m| {
            matches!(
                m,
                Message::Result {
                    status: Status::Succeeded,
                    ..
                }
            )
        });
        if succeeded
            || code == Some(0)
                && !stdout
                    .lines()
                    .any(|l| matches!(parse_message(l), Ok(Message::Result { .. })))
        {
            return Err(format!(
                "a request {what} did not fail (status {}): a plugin must refuse what it cannot read",
                code.map_or("a signal".to_owned(), |c| c.to_string())
            ));
        }
        seen.push(format!(
            "{what}: status {}",
            code.map_or("a signal".to_owned(), |c| c.to_string())
        ));
    }
    Ok(format!("refused: {}", seen.join(", ")))
}

/// Runs `path run` with `input` on its standard input; its exit code and
/// standard output.
fn feed(path: &Path, input: &str) -> Result<(Option<i32>, String), String> {
    let (status, stdout, _) = run_with(path, &["run"], Some(input), crate::discover::DESCRIBE_LIMIT)?;
    Ok((status.code(), stdout))
}
