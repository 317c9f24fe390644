//! The `prometheus` step kind: judges a release from the metrics the fleet
//! already exports, the way progressive delivery tools analyse a canary.
//!
//! A step runs a PromQL query (instant, or over a range ending now) against a
//! Prometheus HTTP API, `count` times, `interval` apart, after an
//! `initial_delay`. Each measurement is a **success**, a **failure** or
//! **inconclusive** (no data, fewer points than `min_samples`, or neither
//! condition holds); a query that fails is an error, counted apart. The step
//! fails once the failures pass `failure_limit`. It is inconclusive once the
//! inconclusive measurements pass `inconclusive_limit`, once the errors in a
//! row pass `consecutive_error_limit` (a metrics server that is down says
//! nothing about the release), or when no measurement succeeded; then it
//! waits for a person (`on_inconclusive: pause`, the default: approving goes
//! on, rejecting fails) or fails (`fail`). An inconclusive verdict is never
//! approved by `--yes`.
//!
//! With `compare`, each measurement also runs a baseline query (the servers
//! on the old release) and judges the canary by how much worse it is.
//!
//! This crate owns the kind's parameters, the API client (with
//! Prometheus's HTTP client file for credentials and TLS, `http_config`) and the judging
//! (`verdict`); it depends on `runbook-core` and, for HTTP and TLS, on
//! `runbook-step-http`.

use indexmap::IndexMap;
use runbook_core::inputs::parse_duration;
use runbook_core::kind::{
    Effect, OutputDecl, OutputType, Outputs, StepContext, StepError, StepKind, UNKNOWN_YET, params, plan_params,
    schema_for,
};
use runbook_core::template::Renderer;
use runbook_step_http::Tls;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value as Json, json};
use std::time::Duration;

pub mod backtest;
mod http_config;
pub mod query;
pub mod verdict;

use query::{Ask, Series};
use verdict::{Limits, Measurement, Rules, Tally, Verdict};

/// What to do with an inconclusive verdict.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum OnInconclusive {
    /// Wait for a person: approving goes on, rejecting fails the step.
    #[default]
    Pause,
    /// Fail the step.
    Fail,
}

/// A canary judged against a baseline.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Compare {
    /// The same measure over the baseline (the servers still on the old
    /// release), e.g. the error ratio of the other servers.
    pub baseline: String,
    /// The canary's value may exceed the baseline's by at most this much
    /// (absolute: `0.01` is one percentage point of an error ratio).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_increase: Option<f64>,
    /// The canary's value may be at most this many times the baseline's
    /// (`1.2`: 20% slower); a baseline of 0 admits only 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ratio: Option<f64>,
}

/// The parameters of `prometheus`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PrometheusParams {
    /// The Prometheus server, e.g. `http://prometheus:9090` (its HTTP API is
    /// under `/api/v1/`; a path prefix is kept).
    pub url: String,
    /// The PromQL query. Measure one thing per series: an error ratio, a
    /// latency quantile.
    pub query: String,
    /// Evaluate over a range ending now (`5m`), every `step`; every point
    /// counts. Default: an instant query (one point per series).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "duration"))]
    pub range: Option<String>,
    /// The resolution of a range query (default: the range / 30).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "duration"))]
    pub step: Option<String>,
    /// A failure when any value is above this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    /// A failure when any value is below this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    /// A condition that says success, over `value` (the first series'
    /// newest value), `values`, `series` (`metric`, `value`, `values`),
    /// `samples` and, with `compare`, `baseline`: `"{{lt value 0.01}}"`.
    /// With both `success` and `failure`, a value where neither holds is
    /// inconclusive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success: Option<String>,
    /// A condition that says failure (checked before `success`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
    /// Points needed (over all series) for a measurement to count; fewer is
    /// inconclusive (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub min_samples: Option<u64>,
    /// Judge the canary (`query`) against a baseline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compare: Option<Compare>,
    /// Measurements to take (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub count: Option<u32>,
    /// Time between measurements (default `30s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "duration"))]
    pub interval: Option<String>,
    /// Time before the first (default none): let the new release take traffic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "duration"))]
    pub initial_delay: Option<String>,
    /// Failed measurements tolerated (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_limit: Option<u32>,
    /// Inconclusive measurements tolerated (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inconclusive_limit: Option<u32>,
    /// Failed queries in a row tolerated before the verdict is inconclusive
    /// (default 4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_error_limit: Option<u32>,
    /// What an inconclusive verdict does (default `pause`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_inconclusive: Option<OnInconclusive>,
    /// Request headers, e.g. `Authorization: "Bearer {{secrets.PROM_TOKEN}}"`.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub headers: IndexMap<String, String>,
    /// TLS options, as `http-check`'s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<Tls>,
    /// A file in Prometheus's HTTP client format (promtool's
    /// `--http.config.file`): `basic_auth`, `authorization` or `bearer_token`
    /// (each with a `_file` form) and `tls_config` (`ca_file`,
    /// `insecure_skip_verify`); relative paths from the file's folder. Empty
    /// means none. `headers` and `tls` given here win over it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_config: Option<String>,
    /// The longest one query may take (default `10s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "duration"))]
    pub timeout: Option<String>,
}

impl PrometheusParams {
    /// These parameters with their `http_config` file read into `headers`
    /// and `tls` (what they give themselves wins).
    pub fn connection(mut self) -> Result<Self, String> {
        let Some(path) = self.http_config.take().filter(|p| !p.is_empty()) else {
            return Ok(self);
        };
        let http = http_config::load(&path)?;
        if let Some(value) = http.authorization {
            if self.headers.keys().any(|k| k.eq_ignore_ascii_case("authorization")) {
                return Err(format!(
                    "both `headers` and `http_config` `{path}` give an Authorization header: keep one"
                ));
            }
            self.headers.insert("Authorization".to_owned(), value);
        }
        let given = self
            .tls
            .as_ref()
            .is_some_and(|t| t.insecure || t.ca_file.as_deref().is_some_and(|f| !f.is_empty()));
        if !given && http.tls.is_some() {
            self.tls = http.tls;
        }
        Ok(self)
    }
}

/// The `prometheus` kind.
#[derive(Debug, Default)]
pub struct Prometheus {
    clients: runbook_step_http::Clients,
}

const OUTPUTS: &[OutputDecl] = &[
    OutputDecl::new(
        "verdict",
        OutputType::String,
        "`success`, or `inconclusive` when a person approved going on",
    ),
    OutputDecl::new(
        "value",
        OutputType::Number,
        "the last measurement's value (the first series' newest)",
    ),
    OutputDecl::new(
        "baseline",
        OutputType::Number,
        "with `compare`: the baseline's last value",
    ),
    OutputDecl::new(
        "difference",
        OutputType::Number,
        "with `compare`: the canary's last value minus the baseline's",
    ),
    OutputDecl::new(
        "measurements",
        OutputType::List,
        "each measurement: `at`, `verdict` (absent for a failed query), `value`, `samples`, `note`",
    ),
    OutputDecl::new("successes", OutputType::Integer, "successful measurements"),
    OutputDecl::new("failures", OutputType::Integer, "failed measurements"),
    OutputDecl::new("inconclusive", OutputType::Integer, "inconclusive measurements"),
    OutputDecl::new("errors", OutputType::Integer, "queries that failed"),
    OutputDecl::new("reason", OutputType::String, "why the verdict is what it is"),
];

fn duration(field: &str, text: Option<&str>, default: Duration) -> Result<Duration, StepError> {
    match text {
        None => Ok(default),
        Some(t) => parse_duration(t).map_err(|e| StepError::new(format!("`{field}`: {e}"))),
    }
}

/// Sleeps, unless the run is stopped first.
async fn pause(ctx: &StepContext, d: Duration) -> Result<(), StepError> {
    if d.is_zero() {
        return Ok(());
    }
    tokio::select! {
        () = tokio::time::sleep(d) => Ok(()),
        () = ctx.cancel.cancelled() => Err(StepError::cancelled()),
    }
}

/// One measurement's numbers, beside its verdict.
struct Taken {
    measurement: Measurement,
    baseline: Option<f64>,
}

impl Prometheus {
    /// Takes one measurement.
    /// Takes one measurement; its conditions read `data` (the step's
    /// template data) besides what the queries returned.
    async fn measure(
        &self,
        data: &runbook_core::template::Data,
        client: &reqwest::Client,
        p: &PrometheusParams,
    ) -> Result<Taken, StepError> {
        let timeout = duration("timeout", p.timeout.as_deref(), Duration::from_secs(10))?;
        let range = match p.range.as_deref() {
            None => None,
            Some(r) => {
                let range = duration("range", Some(r), Duration::ZERO)?;
                let step = duration("step", p.step.as_deref(), range / 30)?;
                Some((range, step.max(Duration::from_millis(1))))
            }
        };
        let ask = |query| Ask {
            url: &p.url,
            query,
            range,
            end: None,
            headers: &p.headers,
            timeout,
        };
        let at = humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
        let errored = |note: String| Taken {
            measurement: Measurement {
                at: at.clone(),
                verdict: None,
                value: None,
                samples: 0,
                note,
            },
            baseline: None,
        };
        let canary = match query::run(client, &ask(&p.query)).await {
            Ok(s) => s,
            Err(e) => return Ok(errored(e)),
        };
        let baseline = match &p.compare {
            None => None,
            Some(c) => match query::run(client, &ask(&c.baseline)).await {
                Ok(s) => Some(s),
                Err(e) => return Ok(errored(format!("baseline: {e}"))),
            },
        };
        let value = canary.first().and_then(Series::last);
        let samples = canary.iter().map(|s| s.values.len()).sum();
        let (verdict, note) = decide(&p_rules(p), p.compare.as_ref(), data, &canary, baseline.as_deref())?;
        Ok(Taken {
            measurement: Measurement {
                at,
                verdict: Some(verdict),
                value,
                samples,
                note,
            },
            baseline: baseline.as_ref().and_then(|b| b.first().and_then(Series::last)),
        })
    }
}

/// The rules of a step's parameters.
fn p_rules(p: &PrometheusParams) -> Rules {
    Rules {
        max: p.max,
        min: p.min,
        success: p.success.clone(),
        failure: p.failure.clone(),
        min_samples: usize::try_from(p.min_samples.unwrap_or(1)).unwrap_or(usize::MAX),
    }
}

/// The verdict on what the queries returned: the canary's series (and the
/// baseline's, with `compare`), its conditions read over `data` and
/// [`verdict::condition_data`].
pub fn decide(
    rules: &Rules,
    compare: Option<&Compare>,
    data: &runbook_core::template::Data,
    canary: &[Series],
    baseline: Option<&[Series]>,
) -> Result<(Verdict, String), StepError> {
    let mut data = data.clone();
    if let (Json::Object(m), Json::Object(extra)) = (data.json_mut(), verdict::condition_data(canary)) {
        m.extend(extra);
        let base = baseline.and_then(|b| b.first().and_then(Series::last));
        m.insert("baseline".into(), json!(base));
    }
    let renderer = Renderer::new();
    let holds = |cond: &str| renderer.condition(cond, &data).map_err(|e| format!("`{cond}`: {e}"));
    Ok(match (compare, baseline) {
        (Some(c), Some(b)) => compared(canary, b, c, rules, &holds),
        _ => verdict::judge(canary, rules, &holds).map_err(StepError::new)?,
    })
}

/// A canary against its baseline: both need data; then the canary's own
/// rules, then the tolerance.
fn compared(
    canary: &[Series],
    baseline: &[Series],
    c: &Compare,
    rules: &Rules,
    holds: &dyn Fn(&str) -> Result<bool, String>,
) -> (Verdict, String) {
    let base_samples: usize = baseline.iter().map(|s| s.values.len()).sum();
    let (Some(value), Some(base)) = (
        canary.first().and_then(Series::last),
        baseline.first().and_then(Series::last),
    ) else {
        return (
            Verdict::Inconclusive,
            "no data for the canary or the baseline".to_owned(),
        );
    };
    if base_samples < rules.min_samples {
        return (
            Verdict::Inconclusive,
            format!(
                "the baseline has {base_samples} points, fewer than min_samples {}",
                rules.min_samples
            ),
        );
    }
    let own = match verdict::judge(canary, rules, holds) {
        Ok(v) => v,
        Err(e) => return (Verdict::Inconclusive, e),
    };
    if own.0 != Verdict::Success {
        return own;
    }
    let diff = value - base;
    let said = format!("canary {value:.6} against baseline {base:.6} (difference {diff:+.6})");
    if let Some(max) = c.max_increase {
        if diff > max {
            return (Verdict::Failure, format!("{said}: more than max_increase {max}"));
        }
    }
    if let Some(ratio) = c.max_ratio {
        if value > base * ratio {
            return (
                Verdict::Failure,
                format!("{said}: more than max_ratio {ratio} times the baseline"),
            );
        }
    }
    (Verdict::Success, format!("{said}: within the tolerance"))
}

#[async_trait::async_trait]
impl StepKind for Prometheus {
    fn name(&self) -> &'static str {
        "prometheus"
    }

    fn summary(&self) -> &'static str {
        "judge a release by PromQL measurements: success, failure or inconclusive (a pause), against a baseline or not"
    }

    fn params_schema(&self) -> Json {
        schema_for::<PrometheusParams>()
    }

    fn extra_roots(&self) -> &'static [&'static str] {
        &["value", "values", "series", "samples", "baseline"]
    }

    fn deferred_fields(&self) -> &'static [&'static str] {
        &["/success", "/failure"]
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

    fn describe(&self, with: &Json) -> String {
        let Some(p) = plan_params::<PrometheusParams>(with) else {
            return format!("measure with PromQL {UNKNOWN_YET}");
        };
        let count = p.count.unwrap_or(1);
        let times = if count == 1 {
            "once".to_owned()
        } else {
            format!("{count} times, {} apart", p.interval.as_deref().unwrap_or("30s"))
        };
        let against = p.compare.as_ref().map_or("", |_| " against a baseline");
        let after = p
            .initial_delay
            .as_deref()
            .filter(|d| parse_duration(d).is_ok_and(|d| !d.is_zero()))
            .map(|d| format!(", the first after {d},"))
            .unwrap_or_default();
        format!("measure `{}`{against} {times}{after} at {}", p.query, p.url)
    }

    fn can_preview(&self, _with: &Json) -> bool {
        true
    }

    /// `plan --live`: one measurement now, as the step's first would be.
    async fn preview(
        &self,
        with: Json,
        cancel: &runbook_core::kind::CancellationToken,
    ) -> Result<Option<Vec<String>>, StepError> {
        let p = params::<PrometheusParams>(with)?.connection().map_err(StepError::new)?;
        let client = self.clients.get(&p.tls.clone().unwrap_or_default())?;
        let data = runbook_core::template::Data::new(json!({}));
        let look = self.measure(&data, &client, &p);
        let m = tokio::select! {
            t = look => t?.measurement,
            () = cancel.cancelled() => return Err(StepError::cancelled()),
        };
        Ok(Some(vec![format!(
            "now: {}: {}",
            m.verdict.map_or("the query failed", Verdict::as_str),
            m.note
        )]))
    }

    async fn run(&self, ctx: &StepContext, with: Json) -> Result<Outputs, StepError> {
        let p: PrometheusParams = params(with)?;
        // An inconclusive verdict a person answered: going on is theirs.
        if let Some(d) = &ctx.approval.decision {
            let said = d.comment.as_deref().map(|c| format!(": {c}")).unwrap_or_default();
            if !d.approved {
                return Err(StepError::new(format!(
                    "inconclusive, and {} rejected going on{said}",
                    d.who
                )));
            }
            let mut out = Outputs::new();
            out.insert("verdict".into(), json!("inconclusive"));
            out.insert(
                "reason".into(),
                json!(format!("inconclusive; {} approved going on{said}", d.who)),
            );
            return Ok(out);
        }
        let p = p.connection().map_err(StepError::new)?;
        let client = self.clients.get(&p.tls.clone().unwrap_or_default())?;
        let count = p.count.unwrap_or(1).max(1);
        let interval = duration("interval", p.interval.as_deref(), Duration::from_secs(30))?;
        let limits = Limits {
            failures: p.failure_limit.unwrap_or(0),
            inconclusive: p.inconclusive_limit.unwrap_or(0),
            consecutive_errors: p.consecutive_error_limit.unwrap_or(4),
        };
        pause(
            ctx,
            duration("initial_delay", p.initial_delay.as_deref(), Duration::ZERO)?,
        )
        .await?;
        let mut tally = Tally::default();
        let mut taken: Vec<Measurement> = Vec::new();
        let mut baseline = None;
        let mut decided = None;
        for i in 0..count {
            if i > 0 {
                pause(ctx, interval).await?;
            }
            let t = self.measure(&ctx.data, &client, &p).await?;
            let m = t.measurement;
            let what = m.verdict.map_or("error", Verdict::as_str);
            ctx.log.line(
                runbook_core::kind::LogStream::Stdout,
                &format!("measurement {}/{count}: {what}: {}", i + 1, m.note),
            );
            baseline = t.baseline.or(baseline);
            decided = tally.add(m.verdict, &limits);
            taken.push(m);
            if decided.is_some() {
                break;
            }
        }
        let (verdict, reason) = decided.unwrap_or_else(|| tally.end());
        let value = taken.iter().rev().find_map(|m| m.value);
        let mut out = Outputs::new();
        out.insert("verdict".into(), json!(verdict.as_str()));
        out.insert("value".into(), json!(value));
        if p.compare.is_some() {
            out.insert("baseline".into(), json!(baseline));
            out.insert("difference".into(), json!(value.zip(baseline).map(|(v, b)| v - b)));
        }
        out.insert("measurements".into(), json!(taken));
        out.insert("successes".into(), json!(tally.successes));
        out.insert("failures".into(), json!(tally.failures));
        out.insert("inconclusive".into(), json!(tally.inconclusive));
        out.insert("errors".into(), json!(tally.errors));
        out.insert("reason".into(), json!(reason));
        let fail = |message: String| StepError {
            outputs: out.clone(),
            ..StepError::new(message)
        };
        match verdict {
            Verdict::Success => Ok(out),
            Verdict::Failure => Err(fail(format!("failure: {reason} (query `{}`)", p.query))),
            Verdict::Inconclusive => match p.on_inconclusive.unwrap_or_default() {
                OnInconclusive::Fail => Err(fail(format!("inconclusive: {reason} (query `{}`)", p.query))),
                OnInconclusive::Pause => Err(StepError {
                    outputs: out.clone(),
                    ..StepError::waiting(
                        format!(
                            "the analysis is inconclusive: {reason}; approve to go on as if it passed, reject to \
                             fail it (query `{}`)",
                            p.query
                        ),
                        None,
                    )
                }),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_schema_takes_the_documented_fields_and_refuses_others() {
        let schema = Prometheus::default().params_schema();
        let v = jsonschema_like(&schema);
        assert!(v.contains(&"compare".to_owned()) && v.contains(&"consecutive_error_limit".to_owned()));
        let p: Result<PrometheusParams, _> =
            serde_json::from_value(json!({"url": "http://p", "query": "up", "thresold": 1}));
        assert!(p.is_err(), "an unknown field is refused");
    }

    fn jsonschema_like(schema: &Json) -> Vec<String> {
        schema["properties"]
            .as_object()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default()
    }

    #[test]
    fn a_canary_is_judged_by_how_much_worse_it_is_than_its_baseline() {
        let s = |v: f64| {
            vec![Series {
                metric: serde_json::Map::new(),
                values: vec![v],
                times: vec![0.0],
            }]
        };
        let c = Compare {
            baseline: "b".into(),
            max_increase: Some(0.01),
            max_ratio: None,
        };
        let rules = Rules::default();
        let never = |_: &str| Ok(false);
        assert_eq!(compared(&s(0.011), &s(0.005), &c, &rules, &never).0, Verdict::Success);
        let (v, why) = compared(&s(0.2), &s(0.005), &c, &rules, &never);
        assert_eq!(v, Verdict::Failure);
        assert!(why.contains("difference +0.195"), "{why}");
        assert_eq!(compared(&s(0.2), &[], &c, &rules, &never).0, Verdict::Inconclusive);
        let ratio = Compare {
            max_ratio: Some(1.5),
            max_increase: None,
            ..c
        };
        assert_eq!(compared(&s(0.14), &s(0.1), &ratio, &rules, &never).0, Verdict::Success);
        assert_eq!(compared(&s(0.16), &s(0.1), &ratio, &rules, &never).0, Verdict::Failure);
    }
}
