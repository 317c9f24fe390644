//! Where a playbook's secrets come from, each declared with one source: an
//! environment variable (the default), a file, a command's output, AWS Secrets
//! Manager (through the official SDK, feature `aws`) or a HashiCorp Vault KV
//! version 2 engine (over its HTTP API).
//!
//! Values are fetched when a run starts and again whenever it resumes (so a
//! rotated secret is read afresh), never stored; masking them is the engine's
//! (`runbook_engine::secrets`). A secret that cannot be read refuses the run
//! before anything happens, saying why and what to do.

#[cfg(feature = "aws")]
mod aws;
mod vault;

use indexmap::IndexMap;
use runbook_core::model::{Playbook, SecretSource, SecretSpec};
use std::time::Duration;

/// How long one remote fetch (AWS, Vault) may take.
pub const FETCH_LIMIT: Duration = Duration::from_secs(20);

/// A secret that could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingSecret {
    /// The secret's name.
    pub name: String,
    /// Why, with what to do.
    pub message: String,
}

/// Reads every secret a playbook declares. `env` is the environment to read
/// (and the environment of a secret's `command`, and where Vault's and AWS's
/// settings are read).
pub fn resolve(
    playbook: &Playbook,
    env: &IndexMap<String, String>,
) -> Result<IndexMap<String, String>, Vec<MissingSecret>> {
    let mut out = IndexMap::new();
    let mut missing = Vec::new();
    for spec in &playbook.secrets {
        let name = spec.name().to_owned();
        let value = match spec {
            SecretSpec::Name(n) => env
                .get(n)
                .cloned()
                .ok_or_else(|| format!("secret `{n}` is not set (hint: export {n}=... before running)")),
            SecretSpec::Full(s) => from_source(s, env),
        };
        // Every source is trimmed the same way: a file saved by an editor on
        // Windows or a command that prints `\r\n` gives the value alone.
        let value = value.map(|v| trim_line_ends(&v).to_owned());
        match value {
            Ok(v) if v.is_empty() => missing.push(MissingSecret {
                message: format!("secret `{name}` is empty"),
                name,
            }),
            Ok(v) => {
                out.insert(name, v);
            }
            Err(message) => missing.push(MissingSecret { name, message }),
        }
    }
    if missing.is_empty() {
        return Ok(out);
    }
    // What a failing command said may hold the others' values.
    for m in &mut missing {
        for v in out.values() {
            m.message = m.message.replace(v.as_str(), "***");
        }
    }
    Err(missing)
}

/// The value of a secret declared in full.
fn from_source(s: &SecretSource, env: &IndexMap<String, String>) -> Result<String, String> {
    if let Some(path) = &s.file {
        return std::fs::read_to_string(path).map_err(|e| format!("secret `{}`: cannot read `{path}`: {e}", s.name));
    }
    if let Some(command) = &s.command {
        return from_command(&s.name, command, env);
    }
    if let Some(v) = &s.vault {
        return remote(vault::fetch(v, env)).map_err(|e| format!("secret `{}` (Vault): {e}", s.name));
    }
    if let Some(a) = &s.aws {
        return from_aws(a, env).map_err(|e| format!("secret `{}` (AWS Secrets Manager): {e}", s.name));
    }
    let var = s.env.as_deref().unwrap_or(&s.name);
    env.get(var)
        .cloned()
        .ok_or_else(|| format!("secret `{}` is not set (hint: export {var}=... before running)", s.name))
}

#[cfg(feature = "aws")]
fn from_aws(a: &runbook_core::model::AwsSecret, env: &IndexMap<String, String>) -> Result<String, String> {
    remote(aws::fetch(a, env))
}

#[cfg(not(feature = "aws"))]
fn from_aws(_a: &runbook_core::model::AwsSecret, _env: &IndexMap<String, String>) -> Result<String, String> {
    Err("this runbook was built without AWS support (the `aws` feature)".to_owned())
}

/// Runs an async fetch to its end on a thread and runtime of its own, for at
/// most [`FETCH_LIMIT`]: resolution is synchronous, and may be called from
/// inside a runtime (a worker resolving a claimed run's secrets).
fn remote(fetch: impl std::future::Future<Output = Result<String, String>> + Send) -> Result<String, String> {
    std::thread::scope(|scope| {
        scope
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| format!("cannot start a runtime: {e}"))?;
                rt.block_on(async {
                    tokio::time::timeout(FETCH_LIMIT, fetch)
                        .await
                        .unwrap_or_else(|_| Err(format!("no answer within {} s", FETCH_LIMIT.as_secs())))
                })
            })
            .join()
            .unwrap_or_else(|_| Err("the fetch failed unexpectedly".to_owned()))
    })
}

/// The field `key` of a secret whose value is a JSON object (a string as
/// is; a number or boolean as its text).
pub(crate) fn field(text: &str, key: &str) -> Result<String, String> {
    let doc: serde_json::Value = serde_json::from_str(text)
        .map_err(|_| format!("its value is not a JSON object, so it has no field `{key}` (hint: leave out `key`)"))?;
    let obj = doc
        .as_object()
        .ok_or_else(|| format!("its value is not a JSON object, so it has no field `{key}`"))?;
    match obj.get(key) {
        Some(serde_json::Value::String(s)) => Ok(s.clone()),
        Some(v @ (serde_json::Value::Number(_) | serde_json::Value::Bool(_))) => Ok(v.to_string()),
        Some(_) => Err(format!("its field `{key}` is not text")),
        None => {
            let mut names: Vec<&str> = obj.keys().map(String::as_str).collect();
            names.sort_unstable();
            Err(format!("it has no field `{key}` (it has: {})", names.join(", ")))
        }
    }
}

/// The value a secret's `command` prints (trailing newline removed), run with
/// `env` as its whole environment; its stderr says why when it fails.
fn from_command(name: &str, command: &str, env: &IndexMap<String, String>) -> Result<String, String> {
    let out = std::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(command)
        .env_clear()
        .envs(env)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("secret `{name}`: cannot run its command: {e}"))?;
    if !out.status.success() {
        let why = String::from_utf8_lossy(&out.stderr);
        let why = why.trim();
        let code = out
            .status
            .code()
            .map_or("a signal".to_owned(), |c| format!("status {c}"));
        return Err(format!(
            "secret `{name}`: its command failed ({code}){}",
            if why.is_empty() {
                String::new()
            } else {
                format!(": {why}")
            }
        ));
    }
    let text = String::from_utf8(out.stdout)
        .map_err(|_| format!("secret `{name}`: its command printed bytes that are not UTF-8"))?;
    Ok(text)
}

/// A value without the line breaks (`\n`, `\r\n`, `\r`) at its end.
pub fn trim_line_ends(v: &str) -> &str {
    v.trim_end_matches(['\r', '\n'])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_field_of_a_json_secret_is_read_or_the_fields_are_named() {
        let doc = r#"{"username": "finance", "password": "pw-1", "port": 5432}"#;
        assert_eq!(field(doc, "password").unwrap(), "pw-1");
        assert_eq!(field(doc, "port").unwrap(), "5432");
        assert!(
            field(doc, "pass")
                .unwrap_err()
                .contains("it has: password, port, username")
        );
        assert!(field("plain", "password").unwrap_err().contains("not a JSON object"));
    }
}
