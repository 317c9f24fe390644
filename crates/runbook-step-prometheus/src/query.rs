//! Prometheus's HTTP API (`/api/v1/query`, `/api/v1/query_range`): one query,
//! its answer read into series of numbers.

use serde_json::Value as Json;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// One series of the answer: its labels and its numbers, oldest first
/// (one for an instant query). `NaN` and infinite points are left out: they
/// say "no data" (a ratio over no traffic), not a value.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// The labels.
    pub metric: serde_json::Map<String, Json>,
    /// The points' values.
    pub values: Vec<f64>,
    /// When each was taken (seconds since the epoch), beside `values`.
    pub times: Vec<f64>,
}

impl Series {
    /// The newest value, if any.
    pub fn last(&self) -> Option<f64> {
        self.values.last().copied()
    }
}

/// What to ask.
#[derive(Debug, Clone)]
pub struct Ask<'a> {
    /// The server's base URL (its API is under `/api/v1/`).
    pub url: &'a str,
    /// PromQL.
    pub query: &'a str,
    /// A range ending at `end` (now when absent), and its resolution;
    /// `None` for an instant query.
    pub range: Option<(Duration, Duration)>,
    /// The end of the range, or the instant (default: now).
    pub end: Option<SystemTime>,
    /// Request headers (authorization).
    pub headers: &'a indexmap::IndexMap<String, String>,
    /// The longest a query may take.
    pub timeout: Duration,
}

fn secs(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

/// Runs the query; the series, or why not (in words, with the server's own
/// error when it gave one).
pub async fn run(client: &reqwest::Client, ask: &Ask<'_>) -> Result<Vec<Series>, String> {
    let base = ask.url.trim_end_matches('/');
    let now = ask.end.unwrap_or_else(SystemTime::now);
    let mut form: Vec<(&str, String)> = vec![("query", ask.query.to_owned())];
    let path = match ask.range {
        None => {
            form.push(("time", format!("{:.3}", secs(now))));
            "query"
        }
        Some((range, step)) => {
            let start = now.checked_sub(range).unwrap_or(UNIX_EPOCH);
            form.push(("start", format!("{:.3}", secs(start))));
            form.push(("end", format!("{:.3}", secs(now))));
            form.push(("step", format!("{:.3}", step.as_secs_f64().max(0.001))));
            "query_range"
        }
    };
    let url = format!("{base}/api/v1/{path}");
    let mut req = client.post(&url).form(&form).timeout(ask.timeout);
    for (k, v) in ask.headers {
        req = req.header(k.as_str(), v.as_str());
    }
    let resp = req.send().await.map_err(|e| {
        if e.is_timeout() {
            format!("{url}: no answer within {}", humantime::format_duration(ask.timeout))
        } else if e.is_connect() && root_cause(&e).contains("certificate") {
            format!(
                "{url}: TLS: {} (hint: trust its CA with `tls.ca_file` or `http_config`'s `tls_config.ca_file`)",
                root_cause(&e)
            )
        } else if e.is_connect() {
            format!("{url}: cannot connect (is Prometheus up?): {}", root_cause(&e))
        } else {
            format!("{url}: {}", root_cause(&e))
        }
    })?;
    let status = resp.status();
    if matches!(status.as_u16(), 401 | 403) {
        return Err(format!(
            "{url}: HTTP {status}: Prometheus wants credentials (hint: `http_config` with `basic_auth` or \
             `authorization`, or an Authorization header in `headers`)"
        ));
    }
    let body = resp.bytes().await.map_err(|e| format!("{url}: {}", root_cause(&e)))?;
    let answer: Json = serde_json::from_slice(&body).map_err(|_| {
        let text = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
        format!("{url}: HTTP {status}, not Prometheus's JSON: {text}")
    })?;
    if answer["status"] != "success" {
        let kind = answer["errorType"].as_str().unwrap_or("error");
        let why = answer["error"].as_str().unwrap_or("no reason given");
        return Err(format!("{url}: HTTP {status}, {kind}: {why}"));
    }
    parse(&answer["data"])
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause: &dyn std::error::Error = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

/// A point's time and value: Prometheus writes values as strings (`"0.25"`,
/// `"NaN"`).
fn point(p: &Json) -> Option<(f64, f64)> {
    let v: f64 = p.get(1)?.as_str()?.parse().ok()?;
    Some((p.get(0)?.as_f64()?, v)).filter(|_| v.is_finite())
}

fn series(metric: &Json, points: impl Iterator<Item = (f64, f64)>) -> Series {
    let (times, values) = points.unzip();
    Series {
        metric: metric.as_object().cloned().unwrap_or_default(),
        values,
        times,
    }
}

/// The `data` of a successful answer, as series.
pub fn parse(data: &Json) -> Result<Vec<Series>, String> {
    let result = &data["result"];
    match data["resultType"].as_str() {
        Some("vector") => Ok(result
            .as_array()
            .into_iter()
            .flatten()
            .map(|s| series(&s["metric"], point(&s["value"]).into_iter()))
            .collect()),
        Some("matrix") => Ok(result
            .as_array()
            .into_iter()
            .flatten()
            .map(|s| {
                series(
                    &s["metric"],
                    s["values"].as_array().into_iter().flatten().filter_map(point),
                )
            })
            .collect()),
        Some("scalar") => Ok(vec![series(&Json::Null, point(result).into_iter())]),
        other => Err(format!(
            "the answer is a {}, not numbers (hint: query a vector, a matrix or a scalar)",
            other.unwrap_or("thing of no type")
        )),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    #[test]
    fn vectors_matrices_and_scalars_become_series_without_nan() {
        let v = parse(&json!({"resultType": "vector", "result": [
            {"metric": {"server": "web1"}, "value": [1.0, "0.25"]},
            {"metric": {"server": "web2"}, "value": [1.0, "NaN"]},
        ]}))
        .unwrap();
        assert_eq!(v[0].last(), Some(0.25));
        assert_eq!(v[1].values, Vec::<f64>::new(), "NaN is no data");
        let m = parse(&json!({"resultType": "matrix", "result": [
            {"metric": {}, "values": [[1.0, "1"], [2.0, "+Inf"], [3.0, "3"]]},
        ]}))
        .unwrap();
        assert_eq!(m[0].values, [1.0, 3.0]);
        let s = parse(&json!({"resultType": "scalar", "result": [1.0, "7"]})).unwrap();
        assert_eq!(s[0].last(), Some(7.0));
        assert!(parse(&json!({"resultType": "string", "result": [1.0, "x"]})).is_err());
    }
}
