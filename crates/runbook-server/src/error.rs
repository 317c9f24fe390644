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
