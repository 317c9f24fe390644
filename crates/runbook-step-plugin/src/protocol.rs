//! The plugin protocol, version 1: what `describe` prints, the request `run`
//! reads, and the messages `run` writes. book/src/plugins.md specifies it for
//! plugin authors; this module is its one implementation on runbook's side.

use runbook_core::kind::{Effect, OutputType};
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

/// The protocol version this runbook speaks.
pub const PROTOCOL: u32 = 1;

/// What `runbook-step-<kind> describe` prints: one JSON document.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Description {
    /// The protocol version the plugin speaks.
    pub protocol: u32,
    /// The kind's name: what `uses:` says, and the executable's suffix.
    pub kind: String,
    /// One line for `runbook kinds` and the reference.
    pub description: String,
    /// The JSON Schema of the step's `with:`.
    pub schema: Json,
    /// The outputs it produces.
    #[serde(default)]
    pub outputs: Vec<OutputDoc>,
    /// What it does to the world: `read`, `write` or `unknown`.
    pub effect: Effect,
    /// True when running it twice with the same parameters is safe.
    pub idempotent: bool,
    /// Names of secrets it expects a step to grant (`secrets:` on the step).
    #[serde(default)]
    pub secrets: Vec<String>,
    /// A harmless `with:` that `runbook plugin test` runs it with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub example: Option<Json>,
}

/// One output a plugin declares.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OutputDoc {
    /// The name under `steps.<id>.outputs`.
    pub name: String,
    /// `string`, `integer`, `number`, `boolean`, `list` or `any`.
    #[serde(rename = "type")]
    pub ty: OutputType,
    /// What it holds.
    #[serde(default)]
    pub description: String,
}

/// What `runbook-step-<kind> run` reads on its standard input: one JSON
/// document, then end of file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Request {
    /// The protocol version runbook speaks.
    pub protocol: u32,
    /// The kind asked for.
    pub kind: String,
    /// The run's id.
    pub run_id: String,
    /// The step's path in the run, e.g. `roll[web2].flag`.
    pub step: String,
    /// 1 for the first attempt; retries and resumed runs count on.
    pub attempt: u32,
    /// The same for every attempt of this step in this run: a plugin whose
    /// effect must not happen twice keys it on this.
    pub idempotency_key: String,
    /// The step's `with:`, rendered and checked against the schema.
    pub params: Json,
    /// The secrets the step grants, by name.
    pub secrets: serde_json::Map<String, Json>,
}

/// One line a plugin writes on its standard output while it runs.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum Message {
    /// A line for the step log.
    Log {
        /// The text.
        message: String,
        /// `stdout` (default) or `stderr`.
        #[serde(default)]
        stream: Option<StreamName>,
    },
    /// How far it is.
    Progress {
        /// What it is doing.
        message: String,
        /// Units done.
        #[serde(default)]
        done: Option<u64>,
        /// Units in all.
        #[serde(default)]
        total: Option<u64>,
    },
    /// One output, as soon as it is known (kept if the step then fails).
    Output {
        /// Its declared name.
        name: String,
        /// Its value.
        value: Json,
    },
    /// A value it produced that is secret: masked everywhere from now on.
    Mask {
        /// The value.
        value: String,
    },
    /// The end: the last message.
    Result {
        /// `succeeded` or `failed`.
        status: Status,
        /// Outputs (merged over those already sent).
        #[serde(default)]
        outputs: serde_json::Map<String, Json>,
        /// Why it failed, for a person.
        #[serde(default)]
        error: Option<String>,
    },
}

/// The stream a log message belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StreamName {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// It did what was asked.
    Succeeded,
    /// It did not.
    Failed,
}

/// Reads a description, saying precisely what is wrong with it.
pub fn parse_description(text: &str) -> Result<Description, String> {
    let raw: Json =
        serde_json::from_str(text.trim()).map_err(|e| format!("`describe` did not print one JSON document ({e})"))?;
    if let Some(v) = raw.get("protocol").and_then(Json::as_u64) {
        if v != u64::from(PROTOCOL) {
            return Err(format!(
                "it speaks protocol {v}; this runbook speaks protocol {PROTOCOL} (hint: update the plugin or runbook)"
            ));
        }
    }
    let d: Description = serde_path_to_error::deserialize(raw).map_err(|e| {
        let at = e.path().to_string();
        format!("`describe` printed an invalid description: `{at}`: {}", e.inner())
    })?;
    if d.kind.is_empty()
        || !d
            .kind
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        return Err(format!(
            "kind `{}` is not a valid name (lowercase letters, digits and `-`)",
            d.kind
        ));
    }
    if !d.schema.is_object() {
        return Err("its `schema` is not a JSON Schema object".to_owned());
    }
    if let Err(e) = jsonschema::validator_for(&d.schema) {
        return Err(format!("its `schema` is not valid JSON Schema: {e}"));
    }
    let mut seen = std::collections::HashSet::new();
    for o in &d.outputs {
        if !seen.insert(o.name.as_str()) {
            return Err(format!("it declares the output `{}` twice", o.name));
        }
    }
    Ok(d)
}

/// Reads one line of a plugin's output.
pub fn parse_message(line: &str) -> Result<Message, String> {
    serde_json::from_str(line).map_err(|e| {
        let shown: String = line.chars().take(80).collect();
        if serde_json::from_str::<Json>(line).is_ok() {
            format!("not a protocol message ({e}): {shown}")
        } else {
            format!("not JSON: {shown}")
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn described(extra: Json) -> Json {
        let mut d = json!({
            "protocol": 1, "kind": "flag", "description": "set a flag",
            "schema": {"type": "object", "properties": {"name": {"type": "string"}}},
            "outputs": [{"name": "previous", "type": "boolean"}],
            "effect": "write", "idempotent": true
        });
        if let (Some(d), Some(e)) = (d.as_object_mut(), extra.as_object()) {
            d.extend(e.clone());
        }
        d
    }

    #[test]
    fn a_description_is_read_and_its_faults_are_named() {
        let d = parse_description(&described(json!({})).to_string()).unwrap();
        assert_eq!(d.kind, "flag");
        assert_eq!(d.outputs[0].ty, OutputType::Boolean);
        let fault = |extra: Json| parse_description(&described(extra).to_string()).unwrap_err();
        assert!(fault(json!({"protocol": 2})).contains("protocol 2"));
        assert!(fault(json!({"kind": "Flag!"})).contains("not a valid name"));
        assert!(fault(json!({"schema": {"type": "objekt"}})).contains("not valid JSON Schema"));
        let e = fault(json!({"effect": "maybe"}));
        assert!(e.contains("`effect`"), "{e}");
        assert!(parse_description("{").unwrap_err().contains("one JSON document"));
    }

    #[test]
    fn messages_are_read_and_anything_else_is_named() {
        assert_eq!(
            parse_message(r#"{"type":"result","status":"succeeded","outputs":{"n":1}}"#).unwrap(),
            Message::Result {
                status: Status::Succeeded,
                outputs: json!({"n": 1}).as_object().cloned().unwrap(),
                error: None
            }
        );
        assert!(parse_message("hello").unwrap_err().starts_with("not JSON"));
        assert!(
            parse_message(r#"{"type":"shout"}"#)
                .unwrap_err()
                .starts_with("not a protocol message")
        );
        assert!(OutputType::Integer.admits(&json!(3)) && !OutputType::Integer.admits(&json!(3.5)));
    }
}
