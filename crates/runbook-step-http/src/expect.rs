//! Expectations on an HTTP answer: status, a JSON subset, a body pattern, headers.

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

/// What an answer must be.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// The status: a code (`200`), a list (`[200, 204]`), a class (`2xx`) or a
    /// range (`200-299`). Default `2xx`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<StatusExpect>,
    /// A JSON subset the body must contain: `{ status: healthy }` matches
    /// `{"status": "healthy", "checks": {...}}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json: Option<Json>,
    /// A regular expression the body must match somewhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// Headers that must be present, each with a regular expression its value must match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<IndexMap<String, String>>,
    /// Values at paths of the JSON body, for a path that an input names: each
    /// `{ path: build.release, equals: v42 }` (a dotted path; a number selects
    /// a list item).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<FieldExpect>,
}

/// A value the JSON body must have at a path.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FieldExpect {
    /// A dotted path into the body: `version`, `build.release`, `items.0.tag`.
    pub path: String,
    /// The value it must have (numbers by value; a text matches a number or a boolean written the same way).
    pub equals: Json,
}

/// An expected status.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum StatusExpect {
    /// One code.
    Code(u16),
    /// Any of these codes.
    List(Vec<u16>),
    /// `2xx`, `200-299` or `200`.
    Text(String),
}

/// Compiled expectations.
pub(crate) struct Checker {
    status: Vec<(u16, u16)>,
    shown: String,
    json: Option<Json>,
    body: Option<regex::Regex>,
    headers: Vec<(String, regex::Regex)>,
    fields: Vec<FieldExpect>,
}

fn range(text: &str) -> Result<(u16, u16), String> {
    let t = text.trim();
    if let Some(class) = t.strip_suffix("xx").and_then(|c| c.parse::<u16>().ok()) {
        return Ok((class * 100, class * 100 + 99));
    }
    if let Some((a, b)) = t.split_once('-') {
        let a = a.trim().parse().map_err(|_| format!("`{t}` is not a status range"))?;
        let b = b.trim().parse().map_err(|_| format!("`{t}` is not a status range"))?;
        return Ok((a, b));
    }
    let c = t
        .parse()
        .map_err(|_| format!("`{t}` is not a status (write `200`, `2xx` or `200-299`)"))?;
    Ok((c, c))
}

impl Expect {
    pub(crate) fn compile(&self) -> Result<Checker, String> {
        let (status, shown) = match &self.status {
            None => (vec![(200, 299)], "2xx".to_owned()),
            Some(StatusExpect::Code(c)) => (vec![(*c, *c)], c.to_string()),
            Some(StatusExpect::List(l)) => (
                l.iter().map(|c| (*c, *c)).collect(),
                l.iter().map(u16::to_string).collect::<Vec<_>>().join(" or "),
            ),
            Some(StatusExpect::Text(t)) => (vec![range(t)?], t.clone()),
        };
        let body = self
            .body
            .as_deref()
            .map(|b| regex::Regex::new(b).map_err(|e| format!("`expect.body` is not a valid regular expression: {e}")))
            .transpose()?;
        let headers = self
            .headers
            .iter()
            .flatten()
            .map(|(k, v)| {
                regex::Regex::new(v)
                    .map(|r| (k.to_lowercase(), r))
                    .map_err(|e| format!("`expect.headers.{k}` is not a valid regular expression: {e}"))
            })
            .collect::<Result<_, _>>()?;
        Ok(Checker {
            status,
            shown,
            json: self.json.clone(),
            body,
            headers,
            fields: self.fields.clone(),
        })
    }
}

fn snippet(body: &str) -> String {
    let one: String = body.split_whitespace().collect::<Vec<_>>().join(" ");
    if one.chars().count() > 200 {
        format!("{}…", one.chars().take(200).collect::<String>())
    } else {
        one
    }
}

impl Checker {
    /// Why the answer does not meet the expectations, if it does not.
    pub(crate) fn check(
        &self,
        status: u16,
        headers: &serde_json::Map<String, Json>,
        body: &str,
        json: &Json,
    ) -> Result<(), String> {
        if !self.status.iter().any(|(a, b)| (*a..=*b).contains(&status)) {
            return Err(format!(
                "expected status {}, got {status}: {}",
                self.shown,
                snippet(body)
            ));
        }
        if let Some(want) = &self.json {
            if json.is_null() && !want.is_null() {
                return Err(format!("expected a JSON body, got: {}", snippet(body)));
            }
            subset(want, json, "")?;
        }
        for f in &self.fields {
            if json.is_null() {
                return Err(format!("expected a JSON body, got: {}", snippet(body)));
            }
            let got = f
                .path
                .split('.')
                .filter(|s| !s.is_empty())
                .try_fold(json, |v, seg| match v {
                    Json::Array(a) => seg.parse::<usize>().ok().and_then(|i| a.get(i)),
                    other => other.get(seg),
                });
            match got {
                None => return Err(format!("JSON has no `{}` (expected {})", f.path, show(&f.equals))),
                Some(g) if same(&f.equals, g) => {}
                Some(g) => {
                    return Err(format!(
                        "JSON at `{}` is {}, expected {}",
                        f.path,
                        show(g),
                        show(&f.equals)
                    ));
                }
            }
        }
        if let Some(re) = &self.body {
            if !re.is_match(body) {
                return Err(format!("body does not match /{}/: {}", re.as_str(), snippet(body)));
            }
        }
        for (name, re) in &self.headers {
            match headers.get(name).and_then(Json::as_str) {
                None => return Err(format!("header `{name}` is missing")),
                Some(v) if !re.is_match(v) => {
                    return Err(format!(
                        "header `{name}` is `{v}`, which does not match /{}/",
                        re.as_str()
                    ));
                }
                Some(_) => {}
            }
        }
        Ok(())
    }
}

fn show(v: &Json) -> String {
    let s = v.to_string();
    if s.chars().count() > 120 {
        format!("{}…", s.chars().take(120).collect::<String>())
    } else {
        s
    }
}

/// Equal as an operator means it: numbers by value, and a text equal to a
/// scalar written the same way (`"42"` and `42`, from a templated input).
fn same(want: &Json, got: &Json) -> bool {
    match (want, got) {
        (Json::Number(a), Json::Number(b)) => a.as_f64() == b.as_f64(),
        (Json::String(a), Json::Number(_) | Json::Bool(_)) => a.as_str() == got.to_string().as_str(),
        (a, b) => a == b,
    }
}

/// `want` is contained in `got`: objects by key, lists item by item, scalars equal
/// (numbers by value).
pub(crate) fn subset(want: &Json, got: &Json, at: &str) -> Result<(), String> {
    let here = if at.is_empty() {
        "the top".to_owned()
    } else {
        format!("`{at}`")
    };
    match (want, got) {
        (Json::Object(w), Json::Object(g)) => {
            for (k, wv) in w {
                let path = if at.is_empty() { k.clone() } else { format!("{at}.{k}") };
                match g.get(k) {
                    Some(gv) => subset(wv, gv, &path)?,
                    None => return Err(format!("JSON has no `{path}` (expected {})", show(wv))),
                }
            }
            Ok(())
        }
        (Json::Array(w), Json::Array(g)) => {
            if w.len() != g.len() {
                return Err(format!("JSON at {here} has {} items, expected {}", g.len(), w.len()));
            }
            for (i, (wv, gv)) in w.iter().zip(g).enumerate() {
                subset(wv, gv, &format!("{at}[{i}]"))?;
            }
            Ok(())
        }
        (Json::Number(a), Json::Number(b)) if a.as_f64() == b.as_f64() => Ok(()),
        (a, b) if a == b => Ok(()),
        (a, b) => Err(format!("JSON at {here} is {}, expected {}", show(b), show(a))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(e: serde_json::Value, status: u16, body: &str) -> Result<(), String> {
        let e: Expect = serde_json::from_value(e).expect("expect");
        let json = serde_json::from_str(body).unwrap_or(Json::Null);
        let mut h = serde_json::Map::new();
        h.insert("content-type".into(), json!("application/json"));
        e.compile()?.check(status, &h, body, &json)
    }

    #[test]
    fn fields_at_a_path() {
        let body = r#"{"build": {"release": "v42", "n": 3}, "items": [{"tag": "a"}]}"#;
        let e = |path: &str, v: Json| json!({ "fields": [{ "path": path, "equals": v }] });
        assert!(check(e("build.release", json!("v42")), 200, body).is_ok());
        assert!(check(e("build.n", json!("3")), 200, body).is_ok());
        assert!(check(e("items.0.tag", json!("a")), 200, body).is_ok());
        assert_eq!(
            check(e("build.release", json!("v41")), 200, body),
            Err("JSON at `build.release` is \"v42\", expected \"v41\"".into())
        );
        assert_eq!(
            check(e("version", json!("v42")), 200, body),
            Err("JSON has no `version` (expected \"v42\")".into())
        );
    }

    #[test]
    fn statuses() {
        assert!(check(json!({}), 204, "").is_ok());
        assert_eq!(
            check(json!({}), 503, "down"),
            Err("expected status 2xx, got 503: down".into())
        );
        assert!(check(json!({"status": [200, 301]}), 301, "").is_ok());
        assert!(check(json!({"status": "400-499"}), 404, "").is_ok());
        assert!(check(json!({"status": 200}), 201, "").is_err());
        assert!(check(json!({"status": "2x"}), 200, "").is_err());
    }

    #[test]
    fn json_subset_says_where() {
        let body = r#"{"status": "degraded", "checks": {"db": "ok", "redis": "down"}, "n": 2.0}"#;
        assert!(check(json!({"json": {"checks": {"db": "ok"}, "n": 2}}), 200, body).is_ok());
        assert_eq!(
            check(json!({"json": {"status": "healthy"}}), 200, body),
            Err("JSON at `status` is \"degraded\", expected \"healthy\"".into())
        );
        assert_eq!(
            check(json!({"json": {"checks": {"cache": "ok"}}}), 200, body),
            Err("JSON has no `checks.cache` (expected \"ok\")".into())
        );
        assert!(check(json!({"json": {"a": 1}}), 200, "not json").is_err());
    }

    #[test]
    fn body_and_headers() {
        assert!(check(json!({"body": "heal+thy"}), 200, "all healthy").is_ok());
        assert!(check(json!({"body": "^ok$"}), 200, "not ok").is_err());
        assert!(check(json!({"headers": {"Content-Type": "json"}}), 200, "").is_ok());
        assert_eq!(
            check(json!({"headers": {"x-release": "v4"}}), 200, ""),
            Err("header `x-release` is missing".into())
        );
    }
}
