//! Judging: one measurement is a success, a failure or inconclusive (no data,
//! too little, or neither condition holds); a query that fails is an error,
//! kept apart. The measurements add up to the step's verdict, with limits on
//! failures, inconclusive measurements and errors in a row.

use crate::query::Series;
use serde::Serialize;
use serde_json::{Value as Json, json};

/// The three values of a verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// The release looks good.
    Success,
    /// The release looks bad.
    Failure,
    /// Nothing can be said: no data, too little, or a metrics server that
    /// does not answer. Never a reason to roll out, nor to roll back.
    Inconclusive,
}

impl Verdict {
    /// Its name.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Success => "success",
            Verdict::Failure => "failure",
            Verdict::Inconclusive => "inconclusive",
        }
    }
}

/// What decides a measurement.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    /// Every value at most this.
    pub max: Option<f64>,
    /// Every value at least this.
    pub min: Option<f64>,
    /// A condition (a template) that says success.
    pub success: Option<String>,
    /// A condition that says failure (checked first).
    pub failure: Option<String>,
    /// Points needed, over all series, for a measurement to count.
    pub min_samples: usize,
}

/// One measurement: its verdict (`None`: the query failed), the first
/// series' newest value, the points seen, and what was found, in words.
#[derive(Debug, Clone, Serialize)]
pub struct Measurement {
    /// When it was taken (RFC 3339).
    pub at: String,
    /// Its verdict; absent when the query failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verdict: Option<Verdict>,
    /// The first series' newest value.
    pub value: Option<f64>,
    /// Points over all series.
    pub samples: usize,
    /// What was found.
    pub note: String,
}

/// What conditions read: `value` (the first series' newest value), `values`
/// (each series' newest), `series` (each with its labels, `value` and
/// `values`) and `samples`.
pub fn condition_data(series: &[Series]) -> Json {
    let samples: usize = series.iter().map(|s| s.values.len()).sum();
    json!({
        "value": series.first().and_then(Series::last),
        "values": series.iter().filter_map(Series::last).collect::<Vec<_>>(),
        "series": series.iter().map(|s| json!({
            "metric": s.metric, "value": s.last(), "values": s.values,
        })).collect::<Vec<_>>(),
        "samples": samples,
    })
}

fn show(v: f64) -> String {
    let s = format!("{v:.6}");
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// Judges what a query returned. `holds` evaluates a condition over
/// [`condition_data`]; an error in it is the measurement's error.
pub fn judge(
    series: &[Series],
    rules: &Rules,
    holds: &dyn Fn(&str) -> Result<bool, String>,
) -> Result<(Verdict, String), String> {
    let samples: usize = series.iter().map(|s| s.values.len()).sum();
    if samples == 0 {
        return Ok((Verdict::Inconclusive, "no data".to_owned()));
    }
    if samples < rules.min_samples {
        return Ok((
            Verdict::Inconclusive,
            format!("{samples} points, fewer than min_samples {}", rules.min_samples),
        ));
    }
    let all = || series.iter().flat_map(|s| s.values.iter().copied());
    if let Some(max) = rules.max {
        if let Some(worst) = all().filter(|v| *v > max).reduce(f64::max) {
            return Ok((Verdict::Failure, format!("{} > max {}", show(worst), show(max))));
        }
    }
    if let Some(min) = rules.min {
        if let Some(worst) = all().filter(|v| *v < min).reduce(f64::min) {
            return Ok((Verdict::Failure, format!("{} < min {}", show(worst), show(min))));
        }
    }
    if let Some(f) = &rules.failure {
        if holds(f)? {
            return Ok((Verdict::Failure, format!("`failure: {f}` holds")));
        }
    }
    let value = series.first().and_then(Series::last).map_or("-".to_owned(), show);
    match (&rules.success, &rules.failure) {
        (Some(s), failure) => Ok(if holds(s)? {
            (Verdict::Success, format!("{value}: `success: {s}` holds"))
        } else if failure.is_some() {
            (
                Verdict::Inconclusive,
                format!("{value}: neither `success` nor `failure` holds"),
            )
        } else {
            (Verdict::Failure, format!("{value}: `success: {s}` does not hold"))
        }),
        (None, _) => Ok((Verdict::Success, format!("{value}: within the limits"))),
    }
}

/// The limits of an analysis.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Failed measurements tolerated.
    pub failures: u32,
    /// Inconclusive measurements tolerated.
    pub inconclusive: u32,
    /// Failed queries in a row tolerated (a metrics server that is down).
    pub consecutive_errors: u32,
}

/// The measurements so far, and the verdict they force, if any.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Tally {
    /// Successful measurements.
    pub successes: u32,
    /// Failed ones.
    pub failures: u32,
    /// Inconclusive ones.
    pub inconclusive: u32,
    /// Failed queries.
    pub errors: u32,
    /// Failed queries since the last answer.
    pub consecutive_errors: u32,
}

impl Tally {
    /// Counts a measurement; the verdict, and why, once a limit is passed.
    pub fn add(&mut self, verdict: Option<Verdict>, limits: &Limits) -> Option<(Verdict, String)> {
        match verdict {
            None => {
                self.errors += 1;
                self.consecutive_errors += 1;
                if self.consecutive_errors > limits.consecutive_errors {
                    return Some((
                        Verdict::Inconclusive,
                        format!(
                            "{} queries in a row failed (consecutive_error_limit {}): the metrics cannot be read, \
                             which says nothing about the release",
                            self.consecutive_errors, limits.consecutive_errors
                        ),
                    ));
                }
                return None;
            }
            Some(v) => {
                self.consecutive_errors = 0;
                match v {
                    Verdict::Success => self.successes += 1,
                    Verdict::Failure => self.failures += 1,
                    Verdict::Inconclusive => self.inconclusive += 1,
                }
            }
        }
        if self.failures > limits.failures {
            return Some((
                Verdict::Failure,
                format!(
                    "{} failed measurement(s) (failure_limit {})",
                    self.failures, limits.failures
                ),
            ));
        }
        if self.inconclusive > limits.inconclusive {
            return Some((
                Verdict::Inconclusive,
                format!(
                    "{} inconclusive measurement(s) (inconclusive_limit {})",
                    self.inconclusive, limits.inconclusive
                ),
            ));
        }
        None
    }

    /// The verdict once every measurement was taken and no limit passed:
    /// success, unless not one measurement succeeded.
    pub fn end(&self) -> (Verdict, String) {
        if self.successes == 0 {
            return (
                Verdict::Inconclusive,
                "no measurement succeeded (only errors or inconclusive ones)".to_owned(),
            );
        }
        (
            Verdict::Success,
            format!(
                "{} successful, {} failed, {} inconclusive measurement(s), {} query error(s)",
                self.successes, self.failures, self.inconclusive, self.errors
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(values: &[f64]) -> Vec<Series> {
        vec![Series {
            metric: serde_json::Map::new(),
            values: values.to_vec(),
            times: (0..values.len()).map(|i| i as f64).collect(),
        }]
    }

    fn never(_: &str) -> Result<bool, String> {
        Ok(false)
    }

    #[test]
    fn no_data_and_too_little_are_inconclusive_never_success_or_failure() {
        let rules = Rules {
            max: Some(0.01),
            min_samples: 3,
            ..Rules::default()
        };
        assert_eq!(judge(&[], &rules, &never).map(|v| v.0), Ok(Verdict::Inconclusive));
        assert_eq!(judge(&one(&[]), &rules, &never).map(|v| v.0), Ok(Verdict::Inconclusive));
        assert_eq!(
            judge(&one(&[0.5, 0.5]), &rules, &never).map(|v| v.0),
            Ok(Verdict::Inconclusive)
        );
        assert_eq!(
            judge(&one(&[0.0, 0.0, 0.2]), &rules, &never).map(|v| v.0),
            Ok(Verdict::Failure)
        );
        assert_eq!(
            judge(&one(&[0.0, 0.0, 0.001]), &rules, &never).map(|v| v.0),
            Ok(Verdict::Success)
        );
    }

    #[test]
    fn with_both_conditions_a_value_between_them_is_inconclusive() {
        let rules = Rules {
            success: Some("ok".into()),
            failure: Some("bad".into()),
            ..Rules::default()
        };
        let says = |ok: bool, bad: bool| move |c: &str| Ok(if c == "ok" { ok } else { bad });
        assert_eq!(
            judge(&one(&[1.0]), &rules, &says(true, false)).map(|v| v.0),
            Ok(Verdict::Success)
        );
        assert_eq!(
            judge(&one(&[1.0]), &rules, &says(true, true)).map(|v| v.0),
            Ok(Verdict::Failure)
        );
        assert_eq!(
            judge(&one(&[1.0]), &rules, &says(false, false)).map(|v| v.0),
            Ok(Verdict::Inconclusive)
        );
        let only_success = Rules {
            success: Some("ok".into()),
            ..Rules::default()
        };
        assert_eq!(
            judge(&one(&[1.0]), &only_success, &says(false, false)).map(|v| v.0),
            Ok(Verdict::Failure)
        );
    }

    #[test]
    fn limits_decide_early_and_errors_in_a_row_are_inconclusive_not_failure() {
        let limits = Limits {
            failures: 1,
            inconclusive: 0,
            consecutive_errors: 2,
        };
        let mut t = Tally::default();
        assert_eq!(t.add(Some(Verdict::Failure), &limits), None, "one failure is tolerated");
        assert_eq!(t.add(Some(Verdict::Success), &limits), None);
        assert_eq!(
            t.add(Some(Verdict::Failure), &limits).map(|v| v.0),
            Some(Verdict::Failure)
        );
        let mut t = Tally::default();
        assert_eq!(t.add(None, &limits), None);
        assert_eq!(t.add(None, &limits), None);
        assert_eq!(
            t.add(Some(Verdict::Success), &limits),
            None,
            "an answer resets the run of errors"
        );
        assert_eq!(t.add(None, &limits), None);
        assert_eq!(t.add(None, &limits), None);
        assert_eq!(t.add(None, &limits).map(|v| v.0), Some(Verdict::Inconclusive));
        let mut t = Tally::default();
        assert_eq!(t.add(None, &limits), None);
        assert_eq!(t.end().0, Verdict::Inconclusive, "errors alone are not a success");
        let mut t = Tally::default();
        assert_eq!(
            t.add(Some(Verdict::Inconclusive), &limits).map(|v| v.0),
            Some(Verdict::Inconclusive)
        );
    }
}
