//! The `approve` step kind: the run pauses until a person answers.
//!
//! The question, the answer and who gave it live in the run's journal, not
//! here: when the engine reaches an `approve` step with no answer, the kind
//! returns a *waiting* error and the run stops as `waiting` (exit 3).
//! `runbook approve RUN` (or `reject`) records the answer and resumes the run;
//! the step then finds the answer in its context ([`Approval`]). The kind
//! enforces what the answer must satisfy: it came before the question expired,
//! from one of the `approvers` if they are named, and the gates in `recheck`
//! still hold after it (a cluster can change while a person reads). `--yes`
//! answers only where a person could: from someone who may not answer, it
//! leaves the question waiting (saying why), and it never answers a question
//! that expired. The kind [`guards`](StepKind::guards) the steps after it:
//! the runner binds an answer to them, and asks again when they change.
//!
//! This crate depends only on `runbook-core`, never on the engine.

use runbook_core::kind::{
    Approval, Effect, NestedStep, OutputDecl, OutputType, Outputs, StepContext, StepError, StepKind, UNKNOWN_YET,
    duration_param, params, plan_params, schema_for,
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value as Json, json};
use std::time::{Duration, SystemTime};

/// How long a question stays open when `timeout` is not given.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// Pauses the run until a person approves (or rejects) it.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApproveParams {
    /// What the approver is asked: what happens next, and what to check first.
    pub message: String,
    /// How long the question stays open, e.g. `1h` (default `24h`). An answer
    /// after it is refused and the run fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "duration"))]
    pub timeout: Option<String>,
    /// Who may approve: user names as the journal records them (through
    /// `runbook serve`, the authenticated caller; at a terminal, `--as`,
    /// `$RUNBOOK_USER` or `$USER`); anyone when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub approvers: Vec<String>,
    /// Four eyes: whoever started the run may not approve it (nor `--yes`
    /// on their behalf); a second person must.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub four_eyes: bool,
    /// Gates checked again after the approval, as step calls (`{ uses: pg,
    /// with: { action: replication, ... } }`); the step fails if one fails. At
    /// most 8.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    pub recheck: Vec<NestedStep>,
}

/// The `approve` kind.
#[derive(Debug, Clone, Copy, Default)]
pub struct Approve;

const OUTPUTS: &[OutputDecl] = &[
    OutputDecl::new("approved_by", OutputType::String, "who approved"),
    OutputDecl::new("comment", OutputType::String, "what they said (empty if nothing)"),
    OutputDecl::new("automatic", OutputType::Boolean, "true when approved by `--yes`"),
];

/// JSON pointers of the `recheck` calls, validated like steps.
const RECHECK: &[&str] = &[
    "/recheck/0",
    "/recheck/1",
    "/recheck/2",
    "/recheck/3",
    "/recheck/4",
    "/recheck/5",
    "/recheck/6",
    "/recheck/7",
];

#[async_trait::async_trait]
impl StepKind for Approve {
    fn name(&self) -> &'static str {
        "approve"
    }

    fn summary(&self) -> &'static str {
        "pause until a person approves (`runbook approve`) or rejects; gates re-checked after"
    }

    fn params_schema(&self) -> Json {
        schema_for::<ApproveParams>()
    }

    fn nested_steps(&self) -> &'static [&'static str] {
        RECHECK
    }

    fn effect(&self, _with: &Json) -> Effect {
        Effect::Read
    }

    fn idempotent(&self, _with: &Json) -> bool {
        true
    }

    fn outputs(&self) -> &[OutputDecl] {
        OUTPUTS
    }

    fn guards(&self) -> bool {
        true
    }

    fn describe(&self, with: &Json) -> String {
        let Some(p) = plan_params::<ApproveParams>(with) else {
            return format!("wait for an approval {UNKNOWN_YET}");
        };
        let mut who = if p.approvers.is_empty() {
            String::new()
        } else {
            format!(" by one of {}", p.approvers.join(", "))
        };
        if p.four_eyes {
            who.push_str(" (not whoever started the run)");
        }
        let then = match p.recheck.len() {
            0 => String::new(),
            n => format!("; then re-check {n} gate(s)"),
        };
        format!("wait for an approval{who}: {}{then}", p.message)
    }

    async fn run(&self, ctx: &StepContext, with: Json) -> Result<Outputs, StepError> {
        let p: ApproveParams = params(with)?;
        let timeout = duration_param("timeout", p.timeout.as_deref())?.unwrap_or(DEFAULT_TIMEOUT);
        let (who, comment, automatic) = answer(&ctx.approval, &p, timeout)?;
        for (i, gate) in p.recheck.iter().enumerate() {
            ctx.nested
                .call(&gate.uses, Json::Object(gate.with.clone()), ctx)
                .await
                .map_err(|e| {
                    StepError::new(format!(
                        "approved by {who}, but gate {} (`{}`) no longer holds: {}",
                        i + 1,
                        gate.uses,
                        e.message
                    ))
                })?;
        }
        let mut out = Outputs::new();
        out.insert("approved_by".into(), json!(who));
        out.insert("comment".into(), json!(comment.unwrap_or_default()));
        out.insert("automatic".into(), json!(automatic));
        Ok(out)
    }
}

/// Who approved, what they said, and whether it was `--yes`; or why not.
fn answer(a: &Approval, p: &ApproveParams, timeout: Duration) -> Result<(String, Option<String>, bool), StepError> {
    let since = a
        .waiting_since
        .as_deref()
        .and_then(|t| humantime::parse_rfc3339_weak(t).ok())
        .unwrap_or_else(SystemTime::now);
    let expires = since + timeout;
    let expires_text = humantime::format_rfc3339_seconds(expires).to_string();
    let may = |who: &str| p.approvers.is_empty() || p.approvers.iter().any(|a| a == who);
    let approvers = || p.approvers.join(", ");
    if let Some(d) = &a.decision {
        let said = d.comment.as_deref().map(|c| format!(": {c}")).unwrap_or_default();
        if !d.approved {
            return Err(StepError::new(format!("rejected by {}{said}", d.who)));
        }
        let at = humantime::parse_rfc3339_weak(&d.at).unwrap_or(since);
        if at > expires {
            return Err(StepError::new(format!(
                "the approval by {} came after the question expired ({expires_text}); nothing after it ran",
                d.who
            )));
        }
        if p.four_eyes && d.who == a.started_by {
            return Err(StepError::waiting(
                format!(
                    "{} started this run and may not approve it too (four eyes): a second person must; {}",
                    d.who, p.message
                ),
                Some(expires_text),
            ));
        }
        if may(&d.who) {
            return Ok((d.who.clone(), d.comment.clone(), false));
        }
        return Err(StepError::waiting(
            format!(
                "{} may not approve this (approvers: {}); {}",
                d.who,
                approvers(),
                p.message
            ),
            Some(expires_text),
        ));
    }
    // An expired question is never answered by `--yes`: resume asks it
    // again (a fresh question), and the run waits for a person.
    if SystemTime::now() > expires {
        return Err(StepError::new(format!(
            "nobody approved before the question expired ({expires_text}): {}",
            p.message
        )));
    }
    let mut who = if p.approvers.is_empty() {
        String::new()
    } else {
        format!(" (approvers: {})", approvers())
    };
    if p.four_eyes {
        who.push_str(&format!(" (four eyes: not {})", a.started_by));
    }
    if let Some(user) = &a.auto_approve {
        // `--yes` from someone who may not answer leaves the question to
        // those who may: the run waits, it does not fail.
        let why = if p.four_eyes {
            Some(format!(
                "`--yes` cannot approve as {user}: four eyes, a second person must answer"
            ))
        } else if !may(user) {
            Some(format!(
                "`--yes` cannot approve as {user}, who is not one of the approvers"
            ))
        } else {
            None
        };
        let Some(why) = why else {
            return Ok((user.clone(), Some("--yes".to_owned()), true));
        };
        return Err(StepError::waiting(
            format!("{}{who}; {why}", p.message),
            Some(expires_text),
        ));
    }
    Err(StepError::waiting(format!("{}{who}", p.message), Some(expires_text)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use runbook_core::kind::Decision;

    fn params(approvers: &[&str]) -> ApproveParams {
        ApproveParams {
            message: "go?".into(),
            timeout: None,
            approvers: approvers.iter().map(|s| (*s).to_owned()).collect(),
            four_eyes: false,
            recheck: Vec::new(),
        }
    }

    fn decision(approved: bool, who: &str, at: SystemTime) -> Option<Decision> {
        Some(Decision {
            approved,
            who: who.into(),
            comment: Some("ok".into()),
            at: humantime::format_rfc3339_millis(at).to_string(),
        })
    }

    #[test]
    fn no_answer_waits_until_it_expires() {
        let hour = Duration::from_secs(3600);
        let e = answer(&Approval::default(), &params(&[]), hour).unwrap_err();
        assert!(e.waiting.is_some());
        let long_ago = humantime::format_rfc3339_millis(SystemTime::now() - 2 * hour).to_string();
        let a = Approval {
            waiting_since: Some(long_ago),
            ..Approval::default()
        };
        let e = answer(&a, &params(&[]), hour).unwrap_err();
        assert!(e.waiting.is_none());
        assert!(e.message.contains("expired"), "{}", e.message);
    }

    #[test]
    fn answers_are_checked() {
        let hour = Duration::from_secs(3600);
        let now = SystemTime::now();
        let since = humantime::format_rfc3339_millis(now).to_string();
        let with = |d| Approval {
            decision: d,
            waiting_since: Some(since.clone()),
            auto_approve: None,
            started_by: "carol".into(),
        };
        assert_eq!(
            answer(&with(decision(true, "alice", now)), &params(&["alice"]), hour).unwrap(),
            ("alice".to_owned(), Some("ok".to_owned()), false)
        );
        let e = answer(&with(decision(false, "bob", now)), &params(&[]), hour).unwrap_err();
        assert_eq!(e.message, "rejected by bob: ok");
        let e = answer(&with(decision(true, "mallory", now)), &params(&["alice"]), hour).unwrap_err();
        assert!(
            e.waiting.is_some() && e.message.contains("mallory may not approve"),
            "{}",
            e.message
        );
        let late = answer(&with(decision(true, "alice", now + 2 * hour)), &params(&[]), hour).unwrap_err();
        assert!(late.message.contains("after the question expired"), "{}", late.message);
        let auto = Approval {
            auto_approve: Some("ci".into()),
            ..Approval::default()
        };
        assert!(answer(&auto, &params(&[]), hour).unwrap().2);
        let e = answer(&auto, &params(&["alice"]), hour).unwrap_err();
        assert!(
            e.waiting.is_some() && e.message.contains("`--yes` cannot approve as ci"),
            "--yes from someone else leaves it waiting: {}",
            e.message
        );
        // An expired question is not answered by `--yes`.
        let expired = Approval {
            waiting_since: Some(humantime::format_rfc3339_millis(now - 2 * hour).to_string()),
            ..auto
        };
        let e = answer(&expired, &params(&[]), hour).unwrap_err();
        assert!(e.waiting.is_none() && e.message.contains("expired"), "{}", e.message);
    }

    #[test]
    fn four_eyes_needs_someone_other_than_the_starter() {
        let hour = Duration::from_secs(3600);
        let now = SystemTime::now();
        let p = ApproveParams {
            four_eyes: true,
            ..params(&[])
        };
        let by = |who: &str| Approval {
            decision: decision(true, who, now),
            waiting_since: Some(humantime::format_rfc3339_millis(now).to_string()),
            auto_approve: None,
            started_by: "carol".into(),
        };
        let e = answer(&by("carol"), &p, hour).unwrap_err();
        assert!(e.waiting.is_some() && e.message.contains("four eyes"), "{}", e.message);
        assert_eq!(answer(&by("dave"), &p, hour).unwrap().0, "dave");
        let auto = Approval {
            auto_approve: Some("carol".into()),
            started_by: "carol".into(),
            ..Approval::default()
        };
        let e = answer(&auto, &p, hour).unwrap_err();
        assert!(
            e.waiting.is_some() && e.message.contains("four eyes, a second person must answer"),
            "--yes cannot be the second person: {}",
            e.message
        );
    }
}
