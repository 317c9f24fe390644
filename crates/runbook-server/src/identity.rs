//! Who is asking, and whether they may.
//!
//! Every request is one [`Caller`]:
//! - with `Authorization: Bearer rbk_...`, the API token's (any mode);
//! - with the session cookie a browser got by signing in with a token
//!   (`POST /api/v1/session`), that token's, for as long as the token
//!   lives; such a request that changes anything must also carry the
//!   session's `X-CSRF-Token`;
//! - otherwise by [`Identity`]: the server's own user on loopback
//!   (`Process`; a request naming another host is refused, so a web page
//!   cannot reach the server by DNS rebinding), the name an authenticating
//!   proxy puts in a header (`TrustedProxy`, only from the proxy's
//!   addresses; a browser's changes carry the `X-CSRF-Token` that
//!   `GET /api/v1/session` gives), or nobody (`Tokens`: 401).
//!
//! What a caller may do on a playbook is its role there
//! ([`runbook_runner::access`]); [`allow`] refuses (403) below it.

use crate::Shared;
use crate::error::ApiError;
use crate::tls::TlsListener;
use axum::Json;
use axum::extract::connect_info::Connected;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::serve::IncomingStream;
use runbook_runner::access::{self, Caller, Role};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;

/// How a request's user is known when it carries no API token.
#[derive(Debug, Clone, Default)]
pub enum Identity {
    /// Every request acts as the server's own user; only on loopback.
    #[default]
    Process,
    /// Only API tokens (and browsers signed in with one).
    Tokens,
    /// The user is what an authenticating proxy says in `header`; requests
    /// come only from the proxy's addresses.
    TrustedProxy {
        /// The header the proxy sets (e.g. `X-Forwarded-User`).
        header: String,
        /// The proxy's addresses.
        from: Vec<IpAddr>,
    },
}

impl Identity {
    /// Refuses to serve beyond loopback with nobody authenticated.
    pub fn check_listener(&self, addr: SocketAddr) -> Result<(), String> {
        if matches!(self, Identity::Process) && !addr.ip().is_loopback() {
            return Err(format!(
                "refusing to listen on {addr} without authentication: anyone who reaches it could run playbooks \
                 (hint: `--require-token` with `runbook token create`, or `--trusted-proxy IP` behind an \
                 authenticating proxy; or listen on 127.0.0.1)"
            ));
        }
        Ok(())
    }
}

/// How the caller was established (what a change must carry against CSRF).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Via {
    /// The server's own user on loopback.
    Local,
    /// An `Authorization` header (no browser sends one by itself).
    Bearer,
    /// The session cookie, with the session's CSRF token.
    Session(String),
    /// An authenticating proxy (its cookies travel by themselves).
    Proxy,
}

/// The address a connection came from.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Peer(pub(crate) SocketAddr);

impl Connected<IncomingStream<'_, TcpListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, TcpListener>) -> Peer {
        Peer(*stream.remote_addr())
    }
}

impl Connected<IncomingStream<'_, TlsListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, TlsListener>) -> Peer {
        Peer(*stream.remote_addr())
    }
}

/// The longest name taken from a proxy's header.
const LONGEST: usize = 200;

/// The session cookie's name.
const COOKIE: &str = "runbook_session";

/// How long a browser's session lasts (the token may end it sooner).
const SESSION_LIFE: Duration = Duration::from_secs(12 * 3600);

/// A browser signed in with a token.
struct Session {
    /// The token's hash: the session ends when the token does.
    token_hash: String,
    /// What its changes must carry in `X-CSRF-Token`.
    csrf: String,
    /// When it ends.
    until: Instant,
}

/// The browsers' sessions, by the cookie's value (in memory: a restarted
/// server asks them to sign in again).
#[derive(Default)]
pub(crate) struct Sessions {
    by_id: Mutex<HashMap<String, Session>>,
    /// The CSRF token of the browsers of the server's own user and of
    /// those behind the proxy (one per server; only a page of this origin
    /// can read it, from `GET /api/v1/session`).
    pub(crate) browser_csrf: String,
}

impl Sessions {
    pub(crate) fn new() -> Sessions {
        Sessions {
            by_id: Mutex::default(),
            browser_csrf: random().unwrap_or_default(),
        }
    }
}

/// 32 random bytes, base64url.
fn random() -> Option<String> {
    use base64::Engine;
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).ok()?;
    Some(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// Requests anyone may make: the UI's files, health, the API's description
/// and signing in.
fn public(method: &Method, path: &str) -> bool {
    matches!(path, "/" | "/api/v1/health" | "/api/v1/openapi.json")
        || path.starts_with("/ui/")
        || (path == "/api/v1/session" && (method == Method::POST || method == Method::GET))
}

fn refuse(status: StatusCode, message: impl Into<String>, hint: Option<&str>) -> Response {
    let mut e = ApiError::new(status, message);
    e.hint = hint.map(Into::into);
    e.into_response()
}

/// Whether `host` (a `Host` header) names this machine's loopback.
fn loopback_host(host: &str) -> bool {
    let name = match host.rsplit_once(':') {
        Some((name, port)) if port.chars().all(|c| c.is_ascii_digit()) => name,
        _ => host,
    };
    let name = name.trim_start_matches('[').trim_end_matches(']');
    name.eq_ignore_ascii_case("localhost") || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The value of cookie `name`.
fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// The secret of `Authorization: Bearer SECRET` (the scheme is
/// case-insensitive, RFC 9110: `bearer` is `Bearer`).
fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()
        .and_then(|v| v.trim().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, secret)| secret.trim())
}

/// What a request was authenticated with that can end while it is served
/// (an event stream): a token, or a browser's session.
#[derive(Debug, Clone)]
pub(crate) enum Credential {
    /// Nothing that ends: the server's own user, the proxy's word.
    Lasting,
    /// An API token, by its hash.
    Token(String),
    /// A browser's session, by its cookie.
    Session(String),
}

/// Whether `credential` still authenticates: its token neither revoked nor
/// expired, its session not signed out nor past its end.
pub(crate) async fn still_valid(s: &Shared, credential: &Credential) -> bool {
    let hash = match credential {
        Credential::Lasting => return true,
        Credential::Token(hash) => Some(hash.clone()),
        Credential::Session(id) => s.sessions.by_id.lock().ok().and_then(|m| {
            m.get(id)
                .filter(|x| x.until > Instant::now())
                .map(|x| x.token_hash.clone())
        }),
    };
    match hash {
        Some(hash) => access::authenticate_hash(s.runner.store.as_ref(), &hash).await.is_ok(),
        None => false,
    }
}

/// The caller of a request, or why it is refused (before any handler runs).
async fn caller_of(s: &Shared, peer: &Peer, headers: &HeaderMap) -> Result<Option<(Caller, Via)>, Response> {
    let unauthorized = |e: access::TokenError| {
        refuse(
            StatusCode::UNAUTHORIZED,
            e.to_string(),
            Some("`runbook token create NAME --role ROLE` makes one"),
        )
    };
    if headers.contains_key(header::AUTHORIZATION) {
        let Some(secret) = bearer(headers) else {
            return Err(refuse(
                StatusCode::UNAUTHORIZED,
                "the Authorization header is not `Bearer TOKEN`",
                None,
            ));
        };
        let caller = access::authenticate(s.runner.store.as_ref(), secret)
            .await
            .map_err(unauthorized)?;
        return Ok(Some((caller, Via::Bearer)));
    }
    if let Some(id) = cookie(headers, COOKIE) {
        let session = s.sessions.by_id.lock().ok().and_then(|m| {
            m.get(id)
                .filter(|x| x.until > Instant::now())
                .map(|x| (x.token_hash.clone(), x.csrf.clone()))
        });
        if let Some((hash, csrf)) = session {
            let caller = access::authenticate_hash(s.runner.store.as_ref(), &hash)
                .await
                .map_err(unauthorized)?;
            return Ok(Some((caller, Via::Session(csrf))));
        }
    }
    match &s.options.identity {
        Identity::Process => {
            let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("");
            if !loopback_host(host) {
                let message = format!("this server answers only requests for localhost, not `{host}`");
                return Err(refuse(StatusCode::MISDIRECTED_REQUEST, message, None));
            }
            Ok(Some((Caller::Local(s.runner.user.clone()), Via::Local)))
        }
        Identity::Tokens => Ok(None),
        Identity::TrustedProxy { header, from } => {
            if !from.contains(&peer.0.ip()) {
                let message = format!(
                    "requests are taken only from the authenticating proxy, not from {}",
                    peer.0.ip()
                );
                return Err(refuse(
                    StatusCode::FORBIDDEN,
                    message,
                    Some("go through the proxy's address"),
                ));
            }
            // Two names is no name: which one the proxy meant is unknown
            // (a browser's own header may have reached us beside it).
            if headers.get_all(header.as_str()).iter().count() > 1 {
                let message = format!("the proxy named more than one user (`{header}` given more than once)");
                return Err(refuse(
                    StatusCode::UNAUTHORIZED,
                    message,
                    Some("the proxy must set the header itself, replacing the browser's"),
                ));
            }
            let name = headers
                .get(header.as_str())
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
                .filter(|n| !n.is_empty() && n.len() <= LONGEST && !n.chars().any(char::is_control));
            match name {
                Some(n) => Ok(Some((Caller::Person(n.to_owned()), Via::Proxy))),
                None => Err(refuse(
                    StatusCode::UNAUTHORIZED,
                    format!("the proxy did not say who is asking (no `{header}` header)"),
                    None,
                )),
            }
        }
    }
}

/// Whether a request changes anything (every method but the reading ones).
fn changes(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Whether the request's body is declared JSON: a web page elsewhere cannot
/// send that without the server's leave (it is not one of the types a
/// cross-origin `fetch` or form may send without asking first).
fn json_body(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"))
}

/// Whether `origin` (an `Origin` header) is this server's own: its scheme
/// and the `Host` the request was sent to (or, behind the proxy, the host
/// the proxy says the browser asked for).
fn own_origin(s: &Shared, origin: &str, headers: &HeaderMap) -> bool {
    let Some((scheme, authority)) = origin.split_once("://") else {
        return false; // `null`: a sandboxed frame, a file, a redirect
    };
    let proxied = matches!(s.options.identity, Identity::TrustedProxy { .. });
    let tls = s.secure.load(std::sync::atomic::Ordering::Relaxed);
    let scheme_ok = match scheme {
        "https" => tls || proxied,
        "http" => !tls,
        _ => false,
    };
    let names = |h: &str| headers.get(h).and_then(|v| v.to_str().ok()).map(str::trim);
    let mut hosts = vec![names("host")];
    if proxied {
        hosts.push(names("x-forwarded-host"));
    }
    let origin = same_authority(scheme, authority);
    scheme_ok && hosts.into_iter().flatten().any(|h| same_authority(scheme, h) == origin)
}

/// `host[:port]` as compared: lower case, without the scheme's default port.
fn same_authority(scheme: &str, authority: &str) -> String {
    let lower = authority.to_ascii_lowercase();
    let default = if scheme == "https" { ":443" } else { ":80" };
    lower.strip_suffix(default).map_or(lower.clone(), str::to_owned)
}

/// The refusal (403) of a change a web page of another origin sent: its `Origin`
/// is not this server's, or the browser says it comes from another site
/// (`Sec-Fetch-Site`).
fn cross_site(s: &Shared, headers: &HeaderMap) -> Option<Response> {
    let site = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok());
    if let Some(site @ ("cross-site" | "same-site")) = site {
        let message = format!("a change sent by a page of another origin is refused (Sec-Fetch-Site: {site})");
        return Some(refuse(StatusCode::FORBIDDEN, message, None));
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let text = origin.to_str().unwrap_or("?");
        if !own_origin(s, text, headers) {
            let message = format!("a change sent by a page of another origin (`{text}`) is refused");
            return Some(refuse(
                StatusCode::FORBIDDEN,
                message,
                Some("use this server's own pages, or a client that is not a browser"),
            ));
        }
    }
    None
}

/// 415: a change whose body is not declared JSON, without the CSRF header.
fn not_json() -> Response {
    refuse(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "a change needs a JSON body sent as `Content-Type: application/json` (or the page's X-CSRF-Token)",
        Some("send `{}` when there is nothing to say"),
    )
}

/// Says who the request acts as, or refuses it: unknown callers (401)
/// except on public routes, and any change a web page elsewhere could have
/// sent: from another origin or site, or without either a JSON body or its
/// CSRF token (a browser signed in with a cookie, or behind the proxy,
/// always needs the token).
pub(crate) async fn identify(
    State(s): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    mut req: Request,
    next: Next,
) -> Response {
    let changes = changes(req.method());
    if changes {
        if let Some(refused) = cross_site(&s, req.headers()) {
            return refused;
        }
    }
    let found = match caller_of(&s, &peer, req.headers()).await {
        Ok(found) => found,
        Err(refused) => return refused,
    };
    let is_public = public(req.method(), req.uri().path());
    let json = json_body(req.headers());
    let Some((caller, via)) = found else {
        if is_public {
            if changes && !json {
                return not_json();
            }
            return next.run(req).await;
        }
        return refuse(
            StatusCode::UNAUTHORIZED,
            "sign in: this server takes API tokens (`Authorization: Bearer TOKEN`)",
            Some("`runbook token create NAME --role ROLE` makes one"),
        );
    };
    if changes {
        let expected = match &via {
            Via::Session(csrf) => Some(csrf.as_str()),
            Via::Proxy | Via::Local => Some(s.sessions.browser_csrf.as_str()),
            Via::Bearer => None,
        };
        let given = req.headers().get("x-csrf-token").and_then(|v| v.to_str().ok());
        let token = expected.is_some_and(|e| !e.is_empty() && given == Some(e));
        if matches!(via, Via::Session(_) | Via::Proxy) && !token {
            return refuse(
                StatusCode::FORBIDDEN,
                "a change from a browser needs its X-CSRF-Token (GET /api/v1/session gives it)",
                None,
            );
        }
        if !token && !json {
            return not_json();
        }
    }
    let credential = match &via {
        Via::Bearer => bearer(req.headers()).map(|secret| Credential::Token(access::hash(secret))),
        Via::Session(_) => cookie(req.headers(), COOKIE).map(|id| Credential::Session(id.to_owned())),
        Via::Local | Via::Proxy => None,
    };
    req.extensions_mut().insert(credential.unwrap_or(Credential::Lasting));
    req.extensions_mut().insert(caller);
    req.extensions_mut().insert(via);
    next.run(req).await
}

/// Refuses (403) a caller whose role on `playbook` is below `need`.
pub(crate) fn allow(
    s: &Shared,
    caller: &Caller,
    playbook: Option<&str>,
    need: Role,
    what: &str,
) -> Result<(), ApiError> {
    let role = caller.role(s.options.roles.as_ref(), playbook);
    if role >= need {
        return Ok(());
    }
    let on = playbook.map(|p| format!(" on `{p}`")).unwrap_or_default();
    let mut e = ApiError::new(
        StatusCode::FORBIDDEN,
        format!("{} is {} {role}{on}; {what} needs {need}", caller.name(), article(role)),
    );
    e.hint = Some("roles are granted in the server's roles file (`runbook serve --roles FILE`)".into());
    Err(e)
}

fn article(role: Role) -> &'static str {
    match role {
        Role::Operator | Role::Approver | Role::Admin => "an",
        Role::Viewer => "a",
    }
}

/// `POST /api/v1/session`: a browser signs in with an API token.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SignIn {
    /// The API token's secret.
    token: String,
}

/// Who the caller is, and what a browser's changes must carry.
#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct Me {
    /// The name the journal records for what they do.
    pub(crate) user: String,
    /// How they were recognised: `local`, `token`, `session` or `proxy`.
    pub(crate) via: String,
    /// Their role on what belongs to no playbook (a playbook may grant
    /// more: see each run's `may`).
    pub(crate) role: Role,
    /// What to send as `X-CSRF-Token` with changes (browsers).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) csrf: Option<String>,
}

fn me(s: &Shared, caller: &Caller, via: &Via) -> Me {
    let (via, csrf) = match via {
        Via::Local => ("local", Some(s.sessions.browser_csrf.clone())),
        Via::Bearer => ("token", None),
        Via::Session(csrf) => ("session", Some(csrf.clone())),
        Via::Proxy => ("proxy", Some(s.sessions.browser_csrf.clone())),
    };
    Me {
        user: caller.name().to_owned(),
        via: via.to_owned(),
        role: caller.role(s.options.roles.as_ref(), None),
        csrf,
    }
}

/// `GET /api/v1/session`: who the caller is (401 when nobody).
pub(crate) async fn whoami(
    State(s): State<Arc<Shared>>,
    caller: Option<axum::Extension<Caller>>,
    via: Option<axum::Extension<Via>>,
) -> Result<Json<Me>, ApiError> {
    match (caller, via) {
        (Some(c), Some(v)) => Ok(Json(me(&s, &c.0, &v.0))),
        _ => Err(ApiError::new(StatusCode::UNAUTHORIZED, "not signed in")),
    }
}

/// `POST /api/v1/session`: checks the token, then sets an HttpOnly,
/// SameSite=Strict cookie (Secure over TLS) for a session of at most 12 h.
pub(crate) async fn sign_in(State(s): State<Arc<Shared>>, Json(req): Json<SignIn>) -> Result<Response, ApiError> {
    let caller = access::authenticate(s.runner.store.as_ref(), req.token.trim())
        .await
        .map_err(|e| ApiError::new(StatusCode::UNAUTHORIZED, e.to_string()))?;
    let (Some(id), Some(csrf)) = (random(), random()) else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no randomness for a session",
        ));
    };
    let session = Session {
        token_hash: access::hash(req.token.trim()),
        csrf: csrf.clone(),
        until: Instant::now() + SESSION_LIFE,
    };
    if let Ok(mut m) = s.sessions.by_id.lock() {
        let now = Instant::now();
        m.retain(|_, x| x.until > now);
        m.insert(id.clone(), session);
    }
    let secure = if s.secure.load(std::sync::atomic::Ordering::Relaxed) {
        "; Secure"
    } else {
        ""
    };
    let cookie = format!(
        "{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
        SESSION_LIFE.as_secs()
    );
    let body = me(&s, &caller, &Via::Session(csrf));
    Ok(([(header::SET_COOKIE, cookie)], Json(body)).into_response())
}

/// `DELETE /api/v1/session`: signs the browser out.
pub(crate) async fn sign_out(State(s): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    if let (Some(id), Ok(mut m)) = (cookie(&headers, COOKIE), s.sessions.by_id.lock()) {
        m.remove(id);
    }
    let gone = format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0");
    ([(header::SET_COOKIE, gone)], StatusCode::NO_CONTENT).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_names_are_local() {
        for host in ["localhost", "localhost:8080", "127.0.0.1:80", "[::1]:8080", "127.9.9.9"] {
            assert!(loopback_host(host), "{host}");
        }
        for host in [
            "evil.example",
            "evil.example:8080",
            "10.0.0.1:8080",
            "",
            "localhost.evil.example",
        ] {
            assert!(!loopback_host(host), "{host}");
        }
    }

    #[test]
    fn an_origin_s_authority_is_compared_without_its_default_port() {
        assert_eq!(
            same_authority("http", "LocalHost:80"),
            same_authority("http", "localhost")
        );
        assert_eq!(same_authority("https", "runbook.example:443"), "runbook.example");
        assert_ne!(
            same_authority("http", "localhost:8080"),
            same_authority("http", "localhost")
        );
        assert_ne!(same_authority("https", "runbook.example:80"), "runbook.example");
    }

    #[test]
    fn a_server_without_authentication_stays_on_loopback() {
        let any: SocketAddr = "0.0.0.0:8080".parse().unwrap_or_else(|_| unreachable!());
        let local: SocketAddr = "127.0.0.1:8080".parse().unwrap_or_else(|_| unreachable!());
        assert!(Identity::Process.check_listener(any).is_err());
        assert!(Identity::Process.check_listener(local).is_ok());
        assert!(Identity::Tokens.check_listener(any).is_ok());
    }
}
