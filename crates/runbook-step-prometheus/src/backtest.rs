//! `runbook gate backtest`: a `prometheus` step's conditions judged over the
//! past (one range query for the canary, one for the baseline), to see when
//! the gate would have fired and how often it flaps before trusting it.

use crate::query::{self, Ask, Series};
use crate::verdict::Verdict;
use crate::{PrometheusParams, decide, p_rules};
use runbook_core::template::Data;
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// One evaluation time.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Point {
    /// When (RFC 3339).
    pub at: String,
    /// What the gate would have said.
    pub verdict: Verdict,
    /// The canary's value (the first series').
    pub value: Option<f64>,
    /// Why.
    pub note: String,
}

/// A stretch of failures in a row: the gate would have fired there.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Fired {
    /// The first failing point.
    pub from: String,
    /// The last one.
    pub to: String,
    /// How many points failed in a row.
    pub points: usize,
    /// The highest value seen among them.
    pub worst: Option<f64>,
}

/// A backtest's result.
#[derive(Debug, Clone, Serialize)]
pub struct Backtest {
    /// The canary's query.
    pub query: String,
    /// The first evaluation time.
    pub from: String,
    /// The last.
    pub to: String,
    /// Time between evaluations, in seconds.
    pub every_seconds: f64,
    /// Points that would have passed.
    pub successes: usize,
    /// Points that would have failed.
    pub failures: usize,
    /// Points with no data or too little.
    pub inconclusive: usize,
    /// Changes between success and failure (inconclusive points skipped): a
    /// gate that flaps is noisy.
    pub flips: usize,
    /// Where it would have fired.
    pub fired: Vec<Fired>,
    /// Every point.
    pub points: Vec<Point>,
}

fn rfc3339(secs: f64) -> String {
    let t = UNIX_EPOCH + Duration::from_secs_f64(secs.max(0.0));
    humantime::format_rfc3339_seconds(t).to_string()
}

/// Each series' value at each time, by time in milliseconds.
fn at_times(series: &[Series]) -> BTreeMap<i64, Vec<Series>> {
    let mut out: BTreeMap<i64, Vec<Series>> = BTreeMap::new();
    for s in series {
        for (t, v) in s.times.iter().zip(&s.values) {
            #[allow(clippy::cast_possible_truncation)]
            let key = (t * 1000.0).round() as i64;
            out.entry(key).or_default().push(Series {
                metric: s.metric.clone(),
                values: vec![*v],
                times: vec![*t],
            });
        }
    }
    out
}

/// Judges the step's conditions at every `every` over the `since` before
/// now, as an instant query at each point would have (a `range:` of the step
/// is not applied: the query's own `[window]` smooths).
pub async fn run(
    client: &reqwest::Client,
    p: &PrometheusParams,
    data: &Data,
    since: Duration,
    every: Duration,
) -> Result<Backtest, String> {
    let timeout = runbook_core::inputs::parse_duration(p.timeout.as_deref().unwrap_or("30s"))
        .map_err(|e| format!("`timeout`: {e}"))?;
    let end = SystemTime::now();
    let ask = |query| Ask {
        url: &p.url,
        query,
        range: Some((since, every)),
        end: Some(end),
        headers: &p.headers,
        timeout,
    };
    let canary = at_times(&query::run(client, &ask(&p.query)).await?);
    let baseline = match &p.compare {
        Some(c) => Some(at_times(
            &query::run(client, &ask(&c.baseline))
                .await
                .map_err(|e| format!("baseline: {e}"))?,
        )),
        None => None,
    };
    let rules = p_rules(p);
    let start = end.checked_sub(since).unwrap_or(UNIX_EPOCH);
    let secs = |t: SystemTime| t.duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
    // Every evaluation time of the range, data or not.
    let step_ms = i64::try_from(every.as_millis()).unwrap_or(i64::MAX).max(1);
    #[allow(clippy::cast_possible_truncation)]
    let (first, last) = (
        (secs(start) * 1000.0).round() as i64,
        (secs(end) * 1000.0).round() as i64,
    );
    let mut points = Vec::new();
    let mut t = first;
    while t <= last {
        // Prometheus aligns the points to `start + k * step`, within a ms.
        let near = |m: &BTreeMap<i64, Vec<Series>>| m.range(t - 1..=t + 1).next().map(|(_, s)| s.clone());
        let c = near(&canary).unwrap_or_default();
        let b = baseline.as_ref().map(|b| near(b).unwrap_or_default());
        let (verdict, note) = decide(&rules, p.compare.as_ref(), data, &c, b.as_deref()).map_err(|e| e.message)?;
        #[allow(clippy::cast_precision_loss)]
        points.push(Point {
            at: rfc3339(t as f64 / 1000.0),
            verdict,
            value: c.first().and_then(Series::last),
            note,
        });
        t += step_ms;
    }
    Ok(summarize(p.query.clone(), every, points))
}

/// Backtests a step from its rendered `with:` (as `plan` renders it, secrets
/// in place): its parameters read, a client with its TLS options.
pub async fn from_with(
    with: serde_json::Value,
    data: &Data,
    since: Duration,
    every: Duration,
) -> Result<Backtest, String> {
    let p: PrometheusParams =
        serde_json::from_value(with).map_err(|e| format!("its `with:` is not a prometheus call: {e}"))?;
    let p = p.connection()?;
    let client = runbook_step_http::client(&p.tls.clone().unwrap_or_default()).map_err(|e| e.message)?;
    run(&client, &p, data, since, every).await
}

impl Backtest {
    /// The report, for people.
    pub fn text(&self, title: &str) -> String {
        use std::fmt::Write;
        let show = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.4}"));
        let mut out = String::new();
        let _ = writeln!(
            out,
            "backtest: {title}, {} to {} every {}s",
            self.from, self.to, self.every_seconds
        );
        let _ = writeln!(out, "query: {}", self.query);
        let _ = writeln!(
            out,
            "{} points: {} success, {} failure, {} inconclusive (no data); {} change(s) of mind",
            self.points.len(),
            self.successes,
            self.failures,
            self.inconclusive,
            self.flips
        );
        if self.fired.is_empty() {
            let _ = writeln!(out, "it would not have fired");
        } else {
            let _ = writeln!(out, "it would have fired {} time(s):", self.fired.len());
            for f in &self.fired {
                let _ = writeln!(
                    out,
                    "  {} to {}  ({} points, worst {})",
                    f.from,
                    f.to,
                    f.points,
                    show(f.worst)
                );
            }
        }
        out
    }
}

/// Counts, flips and the stretches that would have fired.
pub fn summarize(query: String, every: Duration, points: Vec<Point>) -> Backtest {
    let count = |v| points.iter().filter(|p| p.verdict == v).count();
    let mut flips = 0;
    let mut last = None;
    for p in points.iter().filter(|p| p.verdict != Verdict::Inconclusive) {
        if last.is_some_and(|l| l != p.verdict) {
            flips += 1;
        }
        last = Some(p.verdict);
    }
    let mut fired: Vec<Fired> = Vec::new();
    let mut open: Option<Fired> = None;
    for p in &points {
        match (p.verdict, open.as_mut()) {
            (Verdict::Failure, Some(f)) => {
                f.to = p.at.clone();
                f.points += 1;
                f.worst = match (f.worst, p.value) {
                    (Some(a), Some(b)) => Some(a.max(b)),
                    (a, b) => a.or(b),
                };
            }
            (Verdict::Failure, None) => {
                open = Some(Fired {
                    from: p.at.clone(),
                    to: p.at.clone(),
                    points: 1,
                    worst: p.value,
                });
            }
            (_, _) => fired.extend(open.take()),
        }
    }
    fired.extend(open);
    Backtest {
        query,
        from: points.first().map(|p| p.at.clone()).unwrap_or_default(),
        to: points.last().map(|p| p.at.clone()).unwrap_or_default(),
        every_seconds: every.as_secs_f64(),
        successes: count(Verdict::Success),
        failures: count(Verdict::Failure),
        inconclusive: count(Verdict::Inconclusive),
        flips,
        fired,
        points,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_in_a_row_fire_once_and_flips_skip_the_inconclusive() {
        let v = |verdict, value: f64| Point {
            at: format!("t{value}"),
            verdict,
            value: Some(value),
            note: String::new(),
        };
        use Verdict::{Failure as F, Inconclusive as I, Success as S};
        let b = summarize(
            "q".into(),
            Duration::from_secs(60),
            vec![
                v(S, 1.0),
                v(F, 2.0),
                v(F, 5.0),
                v(I, 3.0),
                v(F, 4.0),
                v(S, 6.0),
                v(F, 7.0),
            ],
        );
        assert_eq!((b.successes, b.failures, b.inconclusive), (2, 4, 1));
        assert_eq!(b.flips, 3, "S F F (I) F S F: three changes");
        let fired: Vec<(usize, Option<f64>)> = b.fired.iter().map(|f| (f.points, f.worst)).collect();
        assert_eq!(fired, [(2, Some(5.0)), (1, Some(4.0)), (1, Some(7.0))]);
    }
}
