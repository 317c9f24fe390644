//! The `http-check` step kind: one request with expectations, or a sample of
//! requests whose latency percentiles and error rate gate the step (the latency
//! SLO table of a production runbook, as a gate).
//!
//! This crate owns the kind's parameters (from which its JSON Schema and the
//! book's reference are generated), what `plan` says about a call, and running it.
//! It depends only on `runbook-core`, never on the engine.
//!
//! A key design decision: errors say what a tired engineer needs: which request,
//! whether the connection was refused, timed out or failed TLS, or which
//! expectation failed with what was received instead. HTTP clients are pooled per
//! TLS configuration and reused by every step of the run.

mod expect;

use hdrhistogram::Histogram;
use indexmap::IndexMap;
use runbook_core::inputs::parse_duration;
use runbook_core::kind::{
    Effect, OutputDecl, OutputType, Outputs, Scalar, StepContext, StepError, StepKind, UNKNOWN_YET, params,
    plan_params, schema_for,
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub use expect::{Expect, StatusExpect};

/// An HTTP request and what its answer must be; optionally sampled for latency.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpParams {
    /// The URL, e.g. `http://10.0.0.5:8000/health/`.
    pub url: String,
    /// The method (default `GET`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<Method>,
    /// Request headers.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub headers: IndexMap<String, Scalar>,
    /// A request body, sent as is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// A JSON request body (sets `content-type: application/json`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json: Option<Json>,
    /// Time allowed for each request, e.g. `5s` (default `10s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "duration"))]
    pub timeout: Option<String>,
    /// TLS options.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<Tls>,
    /// What the answer must be (default: a 2xx status).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect: Option<Expect>,
    /// How many requests to send (default 1); with more than one, latency
    /// percentiles and the error rate are measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100000))]
    pub samples: Option<u32>,
    /// Requests per second while sampling (default: one after another, at once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<f64>,
    /// Latency and error-rate limits over the samples: the step fails if any is exceeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slo: Option<Slo>,
}

/// An HTTP method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum Method {
    /// GET.
    Get,
    /// HEAD.
    Head,
    /// POST.
    Post,
    /// PUT.
    Put,
    /// PATCH.
    Patch,
    /// DELETE.
    Delete,
    /// OPTIONS.
    Options,
}

impl Method {
    fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Patch => "PATCH",
            Method::Delete => "DELETE",
            Method::Options => "OPTIONS",
        }
    }
}

/// TLS options.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema, PartialEq, Eq, Hash)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    /// A PEM file of CA certificates to trust, besides the system's. Empty
    /// means none (a playbook input that defaults to the system's CAs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
    /// Accept any certificate. Only for a lab: say so explicitly.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure: bool,
}

/// Latency and error-rate limits.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Slo {
    /// Median latency limit, e.g. `50ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "duration"))]
    pub p50: Option<String>,
    /// 95th percentile limit, e.g. `100ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "duration"))]
    pub p95: Option<String>,
    /// 99th percentile limit, e.g. `200ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "duration"))]
    pub p99: Option<String>,
    /// The largest tolerated fraction of failed requests (`0.001` = 0.1%). Without
    /// it, every sample must pass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_error_rate: Option<f64>,
}

/// The `http-check` kind.
#[derive(Debug, Default)]
pub struct HttpCheck {
    clients: Clients,
}

const OUTPUTS: &[OutputDecl] = &[
    OutputDecl::new("status", OutputType::Integer, "the HTTP status of the (last) response"),
    OutputDecl::new("json", OutputType::Any, "the (last) body parsed as JSON, or null"),
    OutputDecl::new("body", OutputType::String, "the (last) body as text (first 64 KiB)"),
    OutputDecl::new(
        "headers",
        OutputType::Any,
        "the (last) response headers, lowercase names",
    ),
    OutputDecl::new("latency_ms", OutputType::Number, "latency of the (last) request, ms"),
    OutputDecl::new("p50_ms", OutputType::Number, "median latency over the samples, ms"),
    OutputDecl::new("p95_ms", OutputType::Number, "95th percentile latency, ms"),
    OutputDecl::new("p99_ms", OutputType::Number, "99th percentile latency, ms"),
    OutputDecl::new("max_ms", OutputType::Number, "slowest request, ms"),
    OutputDecl::new("samples", OutputType::Integer, "requests sent"),
    OutputDecl::new(
        "errors",
        OutputType::Integer,
        "requests that failed or missed an expectation",
    ),
    OutputDecl::new("error_rate", OutputType::Number, "errors / samples"),
];

/// How much of a body is kept in outputs and messages.
const BODY_KEEP: usize = 64 * 1024;

/// The answer to one request.
struct Answer {
    status: u16,
    headers: serde_json::Map<String, Json>,
    body: String,
    json: Json,
    latency: Duration,
}

impl HttpCheck {
    async fn once(&self, client: &reqwest::Client, p: &HttpParams, timeout: Duration) -> Result<Answer, String> {
        let method = p.method.unwrap_or(Method::Get);
        let m = reqwest::Method::from_bytes(method.as_str().as_bytes()).map_err(|e| e.to_string())?;
        let mut req = client.request(m, &p.url).timeout(timeout);
        for (k, v) in &p.headers {
            req = req.header(k.as_str(), v.to_string());
        }
        if let Some(j) = &p.json {
            req = req
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(j.to_string());
        } else if let Some(b) = &p.body {
            req = req.body(b.clone());
        }
        let start = Instant::now();
        let resp = req
            .send()
            .await
            .map_err(|e| describe_error(&e, method, &p.url, timeout))?;
        let status = resp.status().as_u16();
        let headers = resp
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    Json::String(String::from_utf8_lossy(v.as_bytes()).into_owned()),
                )
            })
            .collect();
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| describe_error(&e, method, &p.url, timeout))?;
        let latency = start.elapsed();
        let json = serde_json::from_slice(&bytes).unwrap_or(Json::Null);
        let body = String::from_utf8_lossy(&bytes[..bytes.len().min(BODY_KEEP)]).into_owned();
        Ok(Answer {
            status,
            headers,
            body,
            json,
            latency,
        })
    }
}

/// HTTP clients, one per set of TLS options, built on first use and shared
/// by every call of a kind (connections are kept alive between them).
#[derive(Debug, Default)]
pub struct Clients(Mutex<HashMap<Tls, reqwest::Client>>);

impl Clients {
    /// The client for these TLS options.
    pub fn get(&self, tls: &Tls) -> Result<reqwest::Client, StepError> {
        let mut clients = self.0.lock().map_err(|_| StepError::new("http client pool poisoned"))?;
        if let Some(c) = clients.get(tls) {
            return Ok(c.clone());
        }
        let c = client(tls)?;
        clients.insert(tls.clone(), c.clone());
        Ok(c)
    }
}

/// An HTTP client with these TLS options (the CAs of `ca_file` trusted
/// besides the system's, or any certificate with `insecure`), for every kind
/// that speaks HTTP the way `http-check` does.
pub fn client(tls: &Tls) -> Result<reqwest::Client, StepError> {
    let mut b = reqwest::Client::builder()
        .user_agent(concat!("runbook/", env!("CARGO_PKG_VERSION")))
        .redirect(reqwest::redirect::Policy::limited(5));
    if let Some(path) = tls.ca_file.as_deref().filter(|p| !p.is_empty()) {
        let pem = std::fs::read(path).map_err(|e| StepError::new(format!("`tls.ca_file` `{path}`: {e}")))?;
        for cert in reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| StepError::new(format!("`tls.ca_file` `{path}` is not PEM certificates: {e}")))?
        {
            b = b.add_root_certificate(cert);
        }
    }
    if tls.insecure {
        b = b.danger_accept_invalid_certs(true);
    }
    b.build()
        .map_err(|e| StepError::new(format!("cannot build the HTTP client: {e}")))
}

/// Says which of the usual things went wrong, in words.
fn describe_error(e: &reqwest::Error, method: Method, url: &str, timeout: Duration) -> String {
    let mut chain = Vec::new();
    let mut src: Option<&dyn std::error::Error> = std::error::Error::source(e);
    while let Some(s) = src {
        chain.push(s.to_string());
        src = s.source();
    }
    let deepest = chain.last().cloned().unwrap_or_else(|| e.to_string());
    let what = if e.is_timeout() {
        format!("timed out after {}", humantime::format_duration(timeout))
    } else if e.is_connect() {
        let all = chain.join(": ").to_lowercase();
        if all.contains("certificate") || all.contains("tls") || all.contains("handshake") {
            format!("TLS failed: {deepest} (hint: `tls.ca_file` trusts a private CA)")
        } else if all.contains("refused") {
            "connection refused (is the service running and listening there?)".to_owned()
        } else if all.contains("dns") || all.contains("resolve") || all.contains("lookup") {
            format!("cannot resolve the host: {deepest}")
        } else {
            format!("cannot connect: {deepest}")
        }
    } else if e.is_builder() {
        format!("invalid request: {deepest}")
    } else {
        deepest
    };
    format!("{} {url}: {what}", method.as_str())
}

fn ms(d: Duration) -> Json {
    serde_json::Number::from_f64((d.as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0).map_or(Json::Null, Json::Number)
}

fn pct_ms(h: &Histogram<u64>, q: f64) -> Json {
    ms(Duration::from_micros(h.value_at_quantile(q)))
}

#[async_trait::async_trait]
impl StepKind for HttpCheck {
    fn name(&self) -> &'static str {
        "http-check"
    }

    fn summary(&self) -> &'static str {
        "send an HTTP request and check the answer; sample latency against SLO limits"
    }

    fn params_schema(&self) -> Json {
        schema_for::<HttpParams>()
    }

    fn effect(&self, with: &Json) -> Effect {
        match plan_params::<HttpParams>(with).map(|p| p.method.unwrap_or(Method::Get)) {
            Some(Method::Get | Method::Head | Method::Options) => Effect::Read,
            Some(_) => Effect::Write,
            None => Effect::Unknown,
        }
    }

    fn idempotence(&self) -> String {
        "yes, except `POST` and `PATCH` (resume may run it again)".to_owned()
    }

    fn idempotent(&self, with: &Json) -> bool {
        plan_params::<HttpParams>(with).is_some_and(|p| !matches!(p.method, Some(Method::Post | Method::Patch)))
    }

    fn outputs(&self) -> &[OutputDecl] {
        OUTPUTS
    }

    fn describe(&self, with: &Json) -> String {
        let Some(p) = plan_params::<HttpParams>(with) else {
            return format!("an HTTP check {UNKNOWN_YET}");
        };
        let method = p.method.unwrap_or(Method::Get).as_str();
        let mut s = format!("{method} {}", p.url);
        let status = p
            .expect
            .and_then(|e| e.status)
            .and_then(|st| serde_json::to_value(st).ok());
        match status {
            Some(st) => s.push_str(&format!(" expect {}", runbook_core::template::scalar_text(&st))),
            None => s.push_str(" expect 2xx"),
        }
        if let Some(n) = p.samples.filter(|n| *n > 1) {
            s.push_str(&format!(", {n} samples"));
            if let Some(r) = p.rate {
                s.push_str(&format!(" at {r}/s"));
            }
        }
        if let Some(slo) = p.slo {
            let mut parts: Vec<String> = [("p50", slo.p50), ("p95", slo.p95), ("p99", slo.p99)]
                .into_iter()
                .filter_map(|(k, v)| Some(format!("{k} {}", v?)))
                .collect();
            parts.extend(slo.max_error_rate.map(|r| format!("max_error_rate {r}")));
            s.push_str(&format!(", SLO {}", parts.join(" ")));
        }
        s
    }

    async fn run(&self, ctx: &StepContext, with: Json) -> Result<Outputs, StepError> {
        let p: HttpParams = params(with)?;
        let timeout =
            runbook_core::kind::duration_param("timeout", p.timeout.as_deref())?.unwrap_or(Duration::from_secs(10));
        let slo = p.slo.clone().unwrap_or_default();
        let limits: Vec<(&str, f64, Duration)> = [
            ("p50", 0.50, &slo.p50),
            ("p95", 0.95, &slo.p95),
            ("p99", 0.99, &slo.p99),
        ]
        .into_iter()
        .filter_map(|(name, q, v)| v.as_ref().map(|v| (name, q, v)))
        .map(|(name, q, v)| {
            parse_duration(v)
                .map(|d| (name, q, d))
                .map_err(|e| StepError::new(format!("`slo.{name}`: {e}")))
        })
        .collect::<Result<_, _>>()?;
        let expect = p.expect.clone().unwrap_or_default();
        let checker = expect.compile().map_err(StepError::new)?;
        let client = self.clients.get(&p.tls.clone().unwrap_or_default())?;
        let samples = p.samples.unwrap_or(1).max(1);
        let interval = p.rate.filter(|r| *r > 0.0).map(|r| Duration::from_secs_f64(1.0 / r));
        let mut hist = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3)
            .map_err(|e| StepError::new(format!("histogram: {e}")))?;
        let mut errors = 0u32;
        let mut last: Option<Answer> = None;
        let mut first_error: Option<String> = None;
        let started = Instant::now();
        for i in 0..samples {
            if let Some(iv) = interval {
                let due = started + iv * i;
                let now = Instant::now();
                if due > now {
                    tokio::select! {
                        () = tokio::time::sleep(due - now) => {}
                        () = ctx.cancel.cancelled() => return Err(StepError::cancelled()),
                    }
                }
            }
            let result = tokio::select! {
                r = self.once(&client, &p, timeout) => r,
                () = ctx.cancel.cancelled() => return Err(StepError::cancelled()),
            };
            match result {
                Ok(a) => {
                    let _ = hist.record(u64::try_from(a.latency.as_micros()).unwrap_or(u64::MAX).max(1));
                    if let Err(why) = checker.check(a.status, &a.headers, &a.body, &a.json) {
                        errors += 1;
                        first_error.get_or_insert_with(|| {
                            format!("{} {}: {why}", p.method.unwrap_or(Method::Get).as_str(), p.url)
                        });
                    }
                    last = Some(a);
                }
                Err(e) => {
                    errors += 1;
                    first_error.get_or_insert(e);
                }
            }
        }
        let mut out = Outputs::new();
        if let Some(a) = &last {
            out.insert("status".into(), Json::from(a.status));
            out.insert("json".into(), a.json.clone());
            out.insert("body".into(), Json::String(a.body.clone()));
            out.insert("headers".into(), Json::Object(a.headers.clone()));
            out.insert("latency_ms".into(), ms(a.latency));
        }
        let error_rate = f64::from(errors) / f64::from(samples);
        out.insert("samples".into(), Json::from(samples));
        out.insert("errors".into(), Json::from(errors));
        out.insert(
            "error_rate".into(),
            serde_json::Number::from_f64(error_rate).map_or(Json::Null, Json::Number),
        );
        if !hist.is_empty() {
            out.insert("p50_ms".into(), pct_ms(&hist, 0.50));
            out.insert("p95_ms".into(), pct_ms(&hist, 0.95));
            out.insert("p99_ms".into(), pct_ms(&hist, 0.99));
            out.insert("max_ms".into(), ms(Duration::from_micros(hist.max())));
        }
        if samples > 1 {
            ctx.log.line(
                runbook_core::kind::LogStream::Stdout,
                &format!(
                    "{samples} requests: p50 {} ms, p95 {} ms, p99 {} ms, max {} ms, {errors} errors",
                    out.get("p50_ms").map_or("-".into(), |v| v.to_string()),
                    out.get("p95_ms").map_or("-".into(), |v| v.to_string()),
                    out.get("p99_ms").map_or("-".into(), |v| v.to_string()),
                    out.get("max_ms").map_or("-".into(), |v| v.to_string()),
                ),
            );
        }
        // The gate: errors first, then latency limits.
        let tolerated = slo.max_error_rate.unwrap_or(0.0);
        if error_rate > tolerated {
            let why = first_error.unwrap_or_default();
            let msg = if samples == 1 {
                why
            } else {
                format!(
                    "{errors} of {samples} requests failed (error rate {:.3}, allowed {tolerated}); first: {why}",
                    error_rate
                )
            };
            return Err(StepError::new(msg).with_outputs(out));
        }
        let mut over = Vec::new();
        for (name, q, limit) in &limits {
            let got = Duration::from_micros(hist.value_at_quantile(*q));
            if got > *limit {
                over.push(format!(
                    "{name} {} > {}",
                    humantime::format_duration(Duration::from_millis(
                        u64::try_from(got.as_millis()).unwrap_or(u64::MAX)
                    )),
                    humantime::format_duration(*limit)
                ));
            }
        }
        if !over.is_empty() {
            return Err(StepError::new(format!(
                "latency SLO missed over {samples} requests: {}",
                over.join(", ")
            ))
            .with_outputs(out));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn schema_and_plan_words() {
        let v = jsonschema::validator_for(&HttpCheck::default().params_schema()).expect("compiles");
        assert!(
            v.is_valid(&json!({ "url": "http://x/", "expect": { "status": [200, 204], "json": { "status": "ok" } } }))
        );
        assert!(v.is_valid(
            &json!({ "url": "http://x/", "expect": { "status": "2xx" }, "samples": 100, "slo": { "p95": "100ms" } })
        ));
        assert!(!v.is_valid(&json!({ "url": "http://x/", "method": "FETCH" })));
        assert!(!v.is_valid(&json!({ "uri": "http://x/" })));
        let k = HttpCheck::default();
        assert_eq!(k.effect(&json!({"url": "http://a/", "method": "POST"})), Effect::Write);
        assert_eq!(k.effect(&json!({"url": "http://a/"})), Effect::Read);
        assert!(!k.idempotent(&json!({"url": "http://a/", "method": "POST"})));
        assert!(k.idempotent(&json!({"url": "http://a/"})));
        // A method known only at run time: no guess.
        let later = json!({"url": "http://a/", "method": "{{ inputs.verb }}"});
        assert_eq!(k.effect(&later), Effect::Unknown);
        assert!(!k.idempotent(&later));
        assert_eq!(
            k.describe(&json!({"url": "http://a/h", "samples": 50, "rate": 10.0, "slo": {"p95": "100ms"}})),
            "GET http://a/h expect 2xx, 50 samples at 10/s, SLO p95 100ms"
        );
    }
}
