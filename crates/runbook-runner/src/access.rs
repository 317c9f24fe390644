//! Who may do what through the server: roles, API tokens and the roles
//! file.
//!
//! Four roles, each allowed what the one before it is and more: a `viewer`
//! reads (the library, plans, runs, logs, reports, locks, workers); an
//! `operator` also starts, resumes and cancels runs; an `approver` also
//! answers approvals and makes resume decisions (`rerun`, `mark_done`); an
//! `admin` also frees locks by force.
//!
//! An API token's secret (`rbk_` and 43 characters) is shown once, at
//! creation; the store keeps only its SHA-256. The token's role is the most
//! it may ever do. The roles file (YAML, under version control) grants
//! roles to people and tokens, for every playbook or for some (`*`
//! matches any text in a playbook's name):
//!
//! ```yaml
//! default: viewer            # whoever else signs in (default: viewer)
//! grants:
//!   - { who: [alice], role: admin }
//!   - { who: [bob, ci-deploy], role: operator }
//!   - { who: [carol], role: approver, playbooks: [db-failover, "dr-*"] }
//! ```
//!
//! A person's role on a playbook is the highest of the file's grants that
//! name them and it (else `default`); a token's is that, capped by the
//! token's own role. Without a roles file a token has its own role and a
//! person named by an authenticating proxy is a viewer: nobody gets to
//! change anything without being granted it.

use crate::inputs::{Problem, Refused};
use runbook_core::diag::Source;
use runbook_state::{Store, StoreError, Token};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::{Duration, SystemTime};

/// What a caller may do, each role everything the one before it may.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads runs, logs, reports, locks and workers.
    #[default]
    Viewer,
    /// Also starts, resumes and cancels runs.
    Operator,
    /// Also approves and rejects, and decides about steps on resume.
    Approver,
    /// Also frees locks by force.
    Admin,
}

impl Role {
    /// Its name, as written in the roles file.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Approver => "approver",
            Role::Admin => "admin",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Role, String> {
        match s {
            "viewer" => Ok(Role::Viewer),
            "operator" => Ok(Role::Operator),
            "approver" => Ok(Role::Approver),
            "admin" => Ok(Role::Admin),
            other => Err(format!("unknown role `{other}` (viewer, operator, approver or admin)")),
        }
    }
}

/// The roles file.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Roles {
    /// The role of whoever signs in and is not granted more (default
    /// `viewer`).
    #[serde(default)]
    pub default: Role,
    /// Who has which role, on which playbooks.
    #[serde(default)]
    pub grants: Vec<Grant>,
}

/// One grant of the roles file.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    /// User names (as the proxy names them) and token names.
    #[schemars(length(min = 1))]
    pub who: Vec<String>,
    /// The role they get.
    pub role: Role,
    /// The playbooks it applies to (`*` matches any text); every playbook
    /// when left out. A grant limited to playbooks does not apply to what
    /// belongs to no playbook (freeing a lock).
    #[serde(default)]
    pub playbooks: Option<Vec<String>>,
}

impl Roles {
    /// Reads and checks the roles file; its errors are located in it.
    pub fn read(path: &Path) -> Result<Roles, Refused> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|e| Problem::Message(format!("cannot read the roles file `{shown}`: {e}")))?;
        let source = Source::new(shown, text);
        let located = |diagnostics| {
            Refused::from(Problem::Located {
                source: source.clone(),
                diagnostics,
            })
        };
        let root = runbook_core::parse::parse(&source.text).map_err(located)?;
        let schema = runbook_core::kind::schema_for::<Roles>();
        let diagnostics = runbook_core::validate::structure(&root, &schema);
        if !diagnostics.is_empty() {
            return Err(located(diagnostics));
        }
        serde_json::from_value(root.to_json()).map_err(|e| Problem::Message(format!("{}: {e}", source.name)).into())
    }

    /// `who`'s role on `playbook` (on what belongs to no playbook when
    /// `None`): the highest grant naming both, else the default.
    pub fn role_of(&self, who: &str, playbook: Option<&str>) -> Role {
        self.grants
            .iter()
            .filter(|g| g.who.iter().any(|w| w == who))
            .filter(|g| match (&g.playbooks, playbook) {
                (None, _) => true,
                (Some(patterns), Some(pb)) => patterns.iter().any(|p| matches(p, pb)),
                (Some(_), None) => false,
            })
            .map(|g| g.role)
            .max()
            .unwrap_or(self.default)
            .max(self.default)
    }
}

/// Whether `name` matches `pattern`, where `*` stands for any text.
fn matches(pattern: &str, name: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = name.strip_prefix(first) else {
        return false;
    };
    let mut parts: Vec<&str> = parts.collect();
    let Some(last) = parts.pop() else {
        return rest.is_empty();
    };
    for part in parts {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// Who a request comes from, as the server established it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// The server's own user, on loopback without authentication: may do
    /// everything, as the CLI at that terminal may.
    Local(String),
    /// A person an authenticating proxy named.
    Person(String),
    /// An API token: its name and its role.
    Token(String, Role),
}

impl Caller {
    /// The name the journal records.
    pub fn name(&self) -> &str {
        match self {
            Caller::Local(n) | Caller::Person(n) | Caller::Token(n, _) => n,
        }
    }

    /// What it may do on `playbook` (on what belongs to no playbook when
    /// `None`), given the roles file if there is one.
    pub fn role(&self, roles: Option<&Roles>, playbook: Option<&str>) -> Role {
        match (self, roles) {
            (Caller::Local(_), _) => Role::Admin,
            (Caller::Person(_), None) => Role::Viewer,
            (Caller::Person(n), Some(r)) => r.role_of(n, playbook),
            (Caller::Token(_, cap), None) => *cap,
            (Caller::Token(n, cap), Some(r)) => r.role_of(n, playbook).min(*cap),
        }
    }
}

/// Why a token was refused or could not be made.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// No token has this secret.
    #[error("unknown API token")]
    Unknown,
    /// It was revoked.
    #[error("the API token `{0}` was revoked at {1}")]
    Revoked(String, String),
    /// It expired.
    #[error("the API token `{0}` expired at {1}")]
    Expired(String, String),
    /// A live token has the name.
    #[error("a token named `{0}` exists and is live (hint: `runbook token revoke {0}` first)")]
    Taken(String),
    /// A name that could not be journalled as a user.
    #[error("a token's name is 1 to 64 letters, digits, `.`, `_`, `-` or `@`; `{0}` is not")]
    BadName(String),
    /// The state store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The system gave no randomness.
    #[error("cannot make a secret: {0}")]
    Random(String),
}

/// What a token's secret starts with (secret scanners look for it).
pub const PREFIX: &str = "rbk_";

/// The SHA-256 (hex) a secret is stored as.
pub fn hash(secret: &str) -> String {
    runbook_report::sha256_hex(secret)
}

/// Makes a token `name` with `role`, expiring after `ttl` if given,
/// created by `by`: its secret (shown once) and what was stored.
pub async fn create_token(
    store: &dyn Store,
    name: &str,
    role: Role,
    ttl: Option<Duration>,
    by: &str,
) -> Result<(String, Token), TokenError> {
    let good = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@');
    if name.is_empty() || name.len() > 64 || !name.chars().all(good) {
        return Err(TokenError::BadName(name.to_owned()));
    }
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| TokenError::Random(e.to_string()))?;
    use base64::Engine;
    let secret = format!(
        "{PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    );
    let now = SystemTime::now();
    let expires = ttl.map(|t| now + t);
    let token = Token {
        name: name.to_owned(),
        hash: hash(&secret),
        role: role.as_str().to_owned(),
        created_by: by.to_owned(),
        created_at: humantime::format_rfc3339_seconds(now).to_string(),
        expires_at: expires.map(|t| humantime::format_rfc3339_seconds(t).to_string()),
        revoked_at: None,
    };
    if !store.add_token(&token, expires.map(unix_ms), unix_ms(now)).await? {
        return Err(TokenError::Taken(name.to_owned()));
    }
    Ok((secret, token))
}

/// The caller a secret stands for, if it is a live token.
pub async fn authenticate(store: &dyn Store, secret: &str) -> Result<Caller, TokenError> {
    authenticate_hash(store, &hash(secret)).await
}

/// The caller of the token whose secret hashes to `hash`, if it is live.
pub async fn authenticate_hash(store: &dyn Store, hash: &str) -> Result<Caller, TokenError> {
    let token = store.token_by_hash(hash).await?.ok_or(TokenError::Unknown)?;
    if let Some(at) = token.revoked_at {
        return Err(TokenError::Revoked(token.name, at));
    }
    if let Some(at) = &token.expires_at {
        let expired = humantime::parse_rfc3339_weak(at).map_or(true, |t| t <= SystemTime::now());
        if expired {
            return Err(TokenError::Expired(token.name, at.clone()));
        }
    }
    // A role the store holds was written by `create_token`; an unknown one
    // (a newer version's) may do nothing beyond reading.
    let role = token.role.parse().unwrap_or(Role::Viewer);
    Ok(Caller::Token(token.name, role))
}

fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn roles(yaml: &str) -> Roles {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("roles.yaml");
        std::fs::write(&path, yaml).unwrap();
        Roles::read(&path).unwrap()
    }

    #[test]
    fn the_highest_grant_on_the_playbook_wins_and_tokens_are_capped() {
        let r = roles(
            "grants:\n  - { who: [alice], role: admin }\n  - { who: [bob, ci], role: operator }\n  \
             - { who: [carol], role: approver, playbooks: [db-failover, \"dr-*\"] }\n",
        );
        assert_eq!(r.role_of("alice", Some("anything")), Role::Admin);
        assert_eq!(r.role_of("carol", Some("dr-drill")), Role::Approver);
        assert_eq!(r.role_of("carol", Some("rolling-deploy")), Role::Viewer, "the default");
        assert_eq!(r.role_of("carol", None), Role::Viewer, "a playbook grant is not global");
        assert_eq!(r.role_of("mallory", Some("dr-drill")), Role::Viewer);
        let ci = Caller::Token("ci".into(), Role::Viewer);
        assert_eq!(ci.role(Some(&r), Some("deploy")), Role::Viewer, "capped by the token");
        let ci = Caller::Token("ci".into(), Role::Admin);
        assert_eq!(ci.role(Some(&r), Some("deploy")), Role::Operator, "capped by the file");
        assert_eq!(ci.role(None, Some("deploy")), Role::Admin, "no file: its own role");
        let proxied = Caller::Person("bob".into());
        assert_eq!(proxied.role(None, Some("deploy")), Role::Viewer, "no file: read only");
        assert_eq!(Caller::Local("me".into()).role(None, None), Role::Admin);
    }

    #[test]
    fn patterns_match_any_text_at_the_star() {
        assert!(matches("dr-*", "dr-drill"));
        assert!(matches("*-failover", "db-failover"));
        assert!(matches("a*b*c", "axxbyyc"));
        assert!(matches("exact", "exact"));
        assert!(!matches("exact", "exactly"));
        assert!(!matches("dr-*", "pre-dr-drill"));
        assert!(!matches("a*bc", "abc-"));
    }

    #[test]
    fn a_bad_roles_file_is_located() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("roles.yaml");
        std::fs::write(&path, "grants:\n  - { who: [alice], role: root }\n").unwrap();
        let refused = Roles::read(&path).unwrap_err();
        let Problem::Located { diagnostics, .. } = &refused.problems[0] else {
            panic!("{refused:?}");
        };
        let span = diagnostics[0].span.unwrap();
        assert_eq!(span.line, 2, "{diagnostics:?}");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_token_works_until_revoked_and_its_secret_is_not_stored() {
        let dir = tempfile::tempdir().unwrap();
        let store = runbook_state::open(Some(&dir.path().join("state.db"))).await.unwrap();
        let (secret, token) = create_token(store.as_ref(), "ci-deploy", Role::Operator, None, "alice")
            .await
            .unwrap();
        assert!(secret.starts_with(PREFIX) && secret.len() == PREFIX.len() + 43);
        assert_ne!(token.hash, secret);
        let caller = authenticate(store.as_ref(), &secret).await.unwrap();
        assert_eq!(caller, Caller::Token("ci-deploy".into(), Role::Operator));
        let again = create_token(store.as_ref(), "ci-deploy", Role::Admin, None, "eve").await;
        assert!(matches!(again, Err(TokenError::Taken(_))));
        assert!(matches!(
            authenticate(store.as_ref(), "rbk_guess").await,
            Err(TokenError::Unknown)
        ));
        store.revoke_token("ci-deploy", "2026-11-28T00:00:00Z").await.unwrap();
        assert!(matches!(
            authenticate(store.as_ref(), &secret).await,
            Err(TokenError::Revoked(..))
        ));
        let bad = create_token(store.as_ref(), "no spaces", Role::Viewer, None, "alice").await;
        assert!(matches!(bad, Err(TokenError::BadName(_))));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn an_expired_token_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = runbook_state::open(Some(&dir.path().join("state.db"))).await.unwrap();
        let ttl = Some(Duration::from_millis(1));
        let (secret, _) = create_token(store.as_ref(), "short", Role::Viewer, ttl, "alice")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert!(matches!(
            authenticate(store.as_ref(), &secret).await,
            Err(TokenError::Expired(..))
        ));
    }
}
