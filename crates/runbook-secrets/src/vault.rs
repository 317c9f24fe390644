//! HashiCorp Vault's KV version 2 engine over its HTTP API:
//! `GET {VAULT_ADDR}/v1/{mount}/data/{path}[?version=N]` with the token in
//! `X-Vault-Token`; the value is `.data.data.{key}`. Settings are read as the
//! `vault` command reads them: `VAULT_ADDR`, `VAULT_TOKEN` (else the file
//! `~/.vault-token` that `vault login` writes), `VAULT_NAMESPACE`,
//! `VAULT_CACERT`, `VAULT_SKIP_VERIFY`.

use indexmap::IndexMap;
use runbook_core::model::VaultSecret;

/// The URL of a secret's data.
pub(crate) fn url(address: &str, v: &VaultSecret) -> String {
    let mount = v.mount.as_deref().unwrap_or("secret").trim_matches('/');
    let path = v.path.trim_matches('/');
    let version = v.version.map(|n| format!("?version={n}")).unwrap_or_default();
    format!("{}/v1/{mount}/data/{path}{version}", address.trim_end_matches('/'))
}

/// The token: `VAULT_TOKEN`, else `~/.vault-token`.
fn token(env: &IndexMap<String, String>) -> Result<String, String> {
    if let Some(t) = env.get("VAULT_TOKEN").filter(|t| !t.is_empty()) {
        return Ok(t.clone());
    }
    let file = env.get("HOME").map(|h| std::path::Path::new(h).join(".vault-token"));
    file.and_then(|f| std::fs::read_to_string(f).ok())
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            "no token: VAULT_TOKEN is not set and there is no ~/.vault-token (hint: `vault login`)".to_owned()
        })
}

/// Reads the secret's field.
pub(crate) async fn fetch(v: &VaultSecret, env: &IndexMap<String, String>) -> Result<String, String> {
    let address = v
        .address
        .clone()
        .or_else(|| env.get("VAULT_ADDR").cloned())
        .ok_or("no server: set VAULT_ADDR (or `address:` on the secret)")?;
    let token = token(env)?;
    let mut client = reqwest::Client::builder().timeout(crate::FETCH_LIMIT);
    if let Some(ca) = env.get("VAULT_CACERT") {
        let pem = std::fs::read(ca).map_err(|e| format!("cannot read VAULT_CACERT `{ca}`: {e}"))?;
        let cert = reqwest::Certificate::from_pem(&pem).map_err(|e| format!("VAULT_CACERT `{ca}`: {e}"))?;
        client = client.add_root_certificate(cert);
    }
    if env
        .get("VAULT_SKIP_VERIFY")
        .is_some_and(|s| matches!(s.as_str(), "1" | "true" | "t" | "yes"))
    {
        client = client.danger_accept_invalid_certs(true);
    }
    let client = client.build().map_err(|e| format!("cannot make an HTTP client: {e}"))?;
    let url = url(&address, v);
    let mut request = client.get(&url).header("X-Vault-Token", token);
    if let Some(ns) = env.get("VAULT_NAMESPACE").filter(|n| !n.is_empty()) {
        request = request.header("X-Vault-Namespace", ns);
    }
    let response = request
        .send()
        .await
        .map_err(|e| format!("{url}: {}", runbook_core::kind::error_chain(&e)))?;
    let status = response.status();
    let body = response
        .text()
        .await
        .map_err(|e| format!("{url}: reading the answer: {e}"))?;
    let shown = format!("{}/{}", v.mount.as_deref().unwrap_or("secret"), v.path);
    match status.as_u16() {
        200 => {}
        403 => {
            return Err(format!(
                "permission denied reading `{shown}` (check the token and its policy)"
            ));
        }
        404 => {
            return Err(format!(
                "no secret at `{shown}` (a KV version 2 engine mounted at `{}`?)",
                v.mount.as_deref().unwrap_or("secret")
            ));
        }
        code => {
            let errors = serde_json::from_str::<serde_json::Value>(&body)
                .ok()
                .and_then(|d| d.get("errors").map(ToString::to_string))
                .unwrap_or_default();
            return Err(format!("the server answered {code} for `{shown}` {errors}"));
        }
    }
    value(&body, &v.key).map_err(|e| format!("`{shown}`: {e}"))
}

/// The field `key` of a KV version 2 read's answer.
pub(crate) fn value(body: &str, key: &str) -> Result<String, String> {
    let doc: serde_json::Value = serde_json::from_str(body).map_err(|e| format!("the answer is not JSON: {e}"))?;
    let data = doc
        .pointer("/data/data")
        .filter(|d| d.is_object())
        .ok_or("the answer has no `data.data` (is this a KV version 2 engine? version 1 is not supported)")?;
    crate::field(&data.to_string(), key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_url_and_the_value_follow_the_kv2_api() {
        let v = VaultSecret {
            path: "/finance/db/".into(),
            key: "password".into(),
            mount: Some("kv".into()),
            version: Some(3),
            address: None,
        };
        assert_eq!(
            url("https://vault:8200/", &v),
            "https://vault:8200/v1/kv/data/finance/db?version=3"
        );
        // The answer's shape, as Vault's API documentation gives it.
        let answer =
            r#"{"request_id":"x","data":{"data":{"password":"s3cr3t","user":"finance"},"metadata":{"version":3}}}"#;
        assert_eq!(value(answer, "password").unwrap(), "s3cr3t");
        assert!(value(answer, "pw").unwrap_err().contains("it has: password, user"));
        assert!(
            value(r#"{"data":{"password":"v1"}}"#, "password")
                .unwrap_err()
                .contains("version 1")
        );
    }
}
