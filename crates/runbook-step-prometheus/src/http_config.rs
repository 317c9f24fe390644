//! Prometheus's HTTP client configuration file, as promtool's
//! `--http.config.file` and a scrape job's HTTP settings read it: where the
//! credentials and the CA of a Prometheus that wants them are kept, so that a
//! playbook names a file and never holds a password.
//!
//! Read: `basic_auth` (`username`, `password` or `password_file`),
//! `authorization` (`type`, default `Bearer`; `credentials` or
//! `credentials_file`), `bearer_token` / `bearer_token_file`, and
//! `tls_config` (`ca_file`, `insecure_skip_verify`). Relative paths are read
//! from the file's folder, as Prometheus does. Any other setting is refused
//! by name rather than ignored.

use base64::Engine;
use runbook_step_http::Tls;
use serde::Deserialize;
use std::path::{Path, PathBuf};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpConfig {
    basic_auth: Option<BasicAuth>,
    authorization: Option<Authorization>,
    bearer_token: Option<String>,
    bearer_token_file: Option<String>,
    tls_config: Option<TlsConfig>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BasicAuth {
    #[serde(default)]
    username: String,
    password: Option<String>,
    password_file: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Authorization {
    #[serde(rename = "type")]
    kind: Option<String>,
    credentials: Option<String>,
    credentials_file: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsConfig {
    ca_file: Option<String>,
    #[serde(default)]
    insecure_skip_verify: bool,
}

/// What a configuration file gives a request.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Http {
    /// The `Authorization` header's value, if the file gives credentials.
    pub(crate) authorization: Option<String>,
    /// TLS options, if the file has `tls_config`.
    pub(crate) tls: Option<Tls>,
}

/// Reads the file at `path`.
pub(crate) fn load(path: &str) -> Result<Http, String> {
    let fail = |why: String| format!("`http_config` `{path}`: {why}");
    let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
    let node = runbook_core::parse::parse(&text)
        .map_err(|d| fail(d.iter().map(|d| d.message.clone()).collect::<Vec<_>>().join("; ")))?;
    let json = node.to_json();
    let config: HttpConfig = if json.is_null() {
        HttpConfig::default()
    } else {
        serde_json::from_value(json).map_err(|e| {
            fail(format!(
                "{e} (read: basic_auth, authorization, bearer_token, bearer_token_file, tls_config)"
            ))
        })?
    };
    let folder = Path::new(path).parent().unwrap_or(Path::new("."));
    interpret(config, folder).map_err(fail)
}

/// A path of the file, from the file's folder when relative.
fn beside(folder: &Path, file: &str) -> PathBuf {
    let p = Path::new(file);
    if p.is_absolute() { p.to_owned() } else { folder.join(p) }
}

/// A credential given in the file or in a file of its own (its trailing
/// newline removed).
fn credential(
    folder: &Path,
    field: &str,
    inline: Option<String>,
    file: Option<String>,
) -> Result<Option<String>, String> {
    match (inline, file) {
        (Some(_), Some(_)) => Err(format!("both `{field}` and `{field}_file`: give one")),
        (Some(v), None) => Ok(Some(v)),
        (None, Some(f)) => {
            let path = beside(folder, &f);
            let v = std::fs::read_to_string(&path).map_err(|e| format!("`{field}_file` `{}`: {e}", path.display()))?;
            Ok(Some(v.strip_suffix('\n').unwrap_or(&v).to_owned()))
        }
        (None, None) => Ok(None),
    }
}

fn interpret(c: HttpConfig, folder: &Path) -> Result<Http, String> {
    let methods = [
        c.basic_auth.is_some(),
        c.authorization.is_some(),
        c.bearer_token.is_some() || c.bearer_token_file.is_some(),
    ];
    if methods.iter().filter(|m| **m).count() > 1 {
        return Err("at most one of basic_auth, authorization and bearer_token".to_owned());
    }
    let authorization = if let Some(b) = c.basic_auth {
        let password = credential(folder, "password", b.password, b.password_file)?.unwrap_or_default();
        let pair = format!("{}:{password}", b.username);
        Some(format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(pair)
        ))
    } else if let Some(a) = c.authorization {
        let kind = a.kind.unwrap_or_else(|| "Bearer".to_owned());
        let credentials = credential(folder, "credentials", a.credentials, a.credentials_file)?
            .ok_or("`authorization` needs `credentials` or `credentials_file`")?;
        Some(format!("{kind} {credentials}"))
    } else {
        credential(folder, "bearer_token", c.bearer_token, c.bearer_token_file)?.map(|t| format!("Bearer {t}"))
    };
    let tls = c.tls_config.map(|t| Tls {
        ca_file: t.ca_file.map(|f| beside(folder, &f).to_string_lossy().into_owned()),
        insecure: t.insecure_skip_verify,
    });
    Ok(Http { authorization, tls })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> String {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p.to_string_lossy().into_owned()
    }

    #[test]
    fn reads_credentials_and_tls_as_prometheus_does() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "pw", "s3cret\n");
        let basic = write(
            dir.path(),
            "basic.yml",
            "basic_auth:\n  username: runbook\n  password_file: pw\ntls_config:\n  ca_file: ca.crt\n",
        );
        let http = load(&basic).unwrap();
        // base64("runbook:s3cret")
        assert_eq!(http.authorization.as_deref(), Some("Basic cnVuYm9vazpzM2NyZXQ="));
        let tls = http.tls.unwrap();
        assert_eq!(tls.ca_file.unwrap(), dir.path().join("ca.crt").to_string_lossy());
        let bearer = write(dir.path(), "b.yml", "authorization:\n  credentials: abc\n");
        assert_eq!(load(&bearer).unwrap().authorization.as_deref(), Some("Bearer abc"));
        let old = write(dir.path(), "o.yml", "bearer_token_file: pw\n");
        assert_eq!(load(&old).unwrap().authorization.as_deref(), Some("Bearer s3cret"));
        assert_eq!(load(&write(dir.path(), "e.yml", "")).unwrap(), Http::default());
    }

    #[test]
    fn refuses_what_it_would_otherwise_ignore() {
        let dir = tempfile::tempdir().unwrap();
        let both = write(
            dir.path(),
            "x.yml",
            "basic_auth: { username: a, password: b }\nbearer_token: c\n",
        );
        assert!(load(&both).unwrap_err().contains("at most one of"));
        let proxy = write(dir.path(), "p.yml", "proxy_url: http://proxy:3128\n");
        let e = load(&proxy).unwrap_err();
        assert!(e.contains("proxy_url") && e.contains("p.yml"), "{e}");
        let cert = write(dir.path(), "c.yml", "tls_config: { cert_file: c.pem }\n");
        assert!(load(&cert).unwrap_err().contains("cert_file"));
        let gone = write(
            dir.path(),
            "g.yml",
            "basic_auth: { username: a, password_file: nothere }\n",
        );
        assert!(load(&gone).unwrap_err().contains("nothere"));
        assert!(load("/no/such/file.yml").unwrap_err().contains("/no/such/file.yml"));
    }
}
