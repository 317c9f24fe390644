//! [`ApiError`]: why a request was refused, as an HTTP status and a JSON body
//! `{ "error", "hint"?, "details"? }`. The wording is the runner's (the same
//! words the command line says); the status says which kind of refusal it
//! is: 400 a malformed request, 404 nothing by that name, 409 held by
//! another run or process, 422 well-formed but refused (inputs, a playbook
//! that does not validate, a plan hash that does not match), 501 what this
//! state cannot do (the workers of a SQLite state), 503 the state is
//! unreachable.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use runbook_core::diag::{Diagnostic, Source};
use runbook_runner::catalog::Diag;
use runbook_runner::{ErrorClass, RunnerError};
use runbook_state::StoreError;
use serde_json::{Value as Json, json};

/// A refused request.
#[derive(Debug)]
pub struct ApiError {
    /// The status.
    pub status: StatusCode,
    /// What went wrong.
    pub error: String,
    /// What to do about it.
    pub hint: Option<Box<str>>,
    /// Located diagnostics or per-input problems.
    pub details: Option<Box<Json>>,
}

impl ApiError {
    /// A refusal with a status and a message.
    pub fn new(status: StatusCode, error: impl Into<String>) -> ApiError {
        ApiError {
            status,
            error: error.into(),
            hint: None,
            details: None,
        }
    }

    /// With diagnostics of a text, located.
    pub(crate) fn diagnosed(mut self, source: &Source, diagnostics: &[Diagnostic]) -> ApiError {
        let each: Vec<Diag> = diagnostics.iter().map(|d| Diag::of(source, d)).collect();
        self.details = serde_json::to_value(each).ok().map(Box::new);
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({ "error": self.error });
        if let Some(h) = self.hint {
            body["hint"] = h.as_ref().into();
        }
        if let Some(d) = self.details {
            body["details"] = *d;
        }
        (self.status, axum::Json(body)).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        let status = match &e {
            StoreError::NoRun(_) => StatusCode::NOT_FOUND,
            StoreError::Ambiguous(_) => StatusCode::BAD_REQUEST,
            // The queue and its workers on a SQLite state.
            StoreError::Unsupported(_) => StatusCode::NOT_IMPLEMENTED,
            _ => StatusCode::SERVICE_UNAVAILABLE,
        };
        ApiError::new(status, e.to_string())
    }
}

impl From<RunnerError> for ApiError {
    fn from(e: RunnerError) -> ApiError {
        if let RunnerError::Store(s) = e {
            return s.into();
        }
        let status = match e.class() {
            ErrorClass::Invalid => StatusCode::UNPROCESSABLE_ENTITY,
            ErrorClass::Locked => StatusCode::CONFLICT,
            ErrorClass::Interrupted => StatusCode::SERVICE_UNAVAILABLE,
            ErrorClass::Failed => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let mut out = ApiError::new(status, e.to_string());
        out.hint = e.hint().map(String::into_boxed_str);
        if let Some(inv) = e.invalid() {
            out = out.diagnosed(&inv.source, &inv.diagnostics);
        }
        out
    }
}

/// The largest framework refusal read back to be put in the JSON contract.
const REFUSAL_TEXT: usize = 16 * 1024;

/// What every answer goes through: the framework's own refusals (a body
/// that is not JSON or too large, a method a route does not take, a path or
/// query that does not parse) get the JSON contract `{ "error" }` as the
/// server's own do; a 401 says how to authenticate (`WWW-Authenticate`);
/// and no answer is sniffed as another type, nor an HTML page or SVG
/// picture framed by another page or allowed a script it did not bring.
pub(crate) async fn contract(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    use axum::http::{HeaderValue, header};
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let mut resp = next.run(req).await;
    let status = resp.status();
    let media = |r: &Response| {
        r.headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or("").trim().to_ascii_lowercase())
            .unwrap_or_default()
    };
    if (status.is_client_error() || status.is_server_error()) && media(&resp) != "application/json" {
        let (parts, body) = resp.into_parts();
        let text = axum::body::to_bytes(body, REFUSAL_TEXT).await.unwrap_or_default();
        let text = String::from_utf8_lossy(&text).trim().to_owned();
        let mut refused = match status {
            StatusCode::METHOD_NOT_ALLOWED => ApiError::new(status, format!("{path} does not take {method}")),
            _ if text.is_empty() => ApiError::new(
                status,
                status.canonical_reason().unwrap_or("refused").to_ascii_lowercase(),
            ),
            _ => ApiError::new(status, text),
        };
        if status == StatusCode::METHOD_NOT_ALLOWED {
            // `Allow` (added past this layer) names the methods it takes.
            refused.hint = Some("the `Allow` header and /api/v1/openapi.json say which methods it takes".into());
        }
        if status == StatusCode::UNSUPPORTED_MEDIA_TYPE {
            refused.hint = Some(
                "send a JSON body with `Content-Type: application/json` (`{}` when there is nothing to say)".into(),
            );
        }
        let mut json = refused.into_response();
        for (name, value) in &parts.headers {
            if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
                json.headers_mut().insert(name.clone(), value.clone());
            }
        }
        resp = json;
    }
    let kind = media(&resp);
    let headers = resp.headers_mut();
    if status == StatusCode::UNAUTHORIZED {
        headers.insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"runbook\""),
        );
    }
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    let csp = match kind.as_str() {
        // The UI: its own scripts and styles only.
        "text/html" if !path.starts_with("/api/") => {
            Some("default-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
        }
        // A report or a picture: no script at all, its own inline styles.
        "text/html" | "image/svg+xml" => Some(
            "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        ),
        _ => None,
    };
    if let Some(csp) = csp {
        headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(csp));
        headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    }
    resp
}
