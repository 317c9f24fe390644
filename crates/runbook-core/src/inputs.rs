//! Input values: parsing `--set name=value`, and checking values against their
//! declared type, pattern, range and allowed values before anything runs.
//!
//! Values given on the command line are read as YAML scalars or flow lists
//! (`--set batch=2`, `--set hosts=[web1,web2]`), then coerced to the declared
//! type where that is unambiguous (`--set release=42` for a `string` input is
//! the string `"42"`). Everything else is an error naming the input and what was
//! expected.

use crate::model::{Bound, InputSpec, InputType, Playbook};
use indexmap::IndexMap;
use serde_json::Value as Json;
use std::time::Duration;

/// A problem with one input value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputError {
    /// The input's name.
    pub name: String,
    /// What is wrong.
    pub message: String,
    /// How to fix it.
    pub hint: Option<String>,
}

impl std::fmt::Display for InputError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "input `{}`: {}", self.name, self.message)?;
        if let Some(h) = &self.hint {
            write!(f, " (hint: {h})")?;
        }
        Ok(())
    }
}

impl std::error::Error for InputError {}

fn err(name: &str, message: impl Into<String>) -> InputError {
    InputError {
        name: name.to_owned(),
        message: message.into(),
        hint: None,
    }
}

/// Splits `name=value` and reads the value as a YAML scalar or flow collection.
pub fn parse_set(arg: &str) -> Result<(String, Json), String> {
    let (name, raw) = arg
        .split_once('=')
        .ok_or_else(|| format!("`--set {arg}` is not `name=value`"))?;
    let name = name.trim();
    if name.is_empty() {
        return Err(format!("`--set {arg}` has no input name before `=`"));
    }
    Ok((name.to_owned(), yaml_value(raw)))
}

/// Reads text as YAML (a scalar, `[a, b]` or `{k: v}`); unparsable text is a string.
pub fn yaml_value(raw: &str) -> Json {
    let trimmed = raw.trim_start();
    if trimmed.starts_with('[') || trimmed.starts_with('{') {
        if let Ok(node) = crate::parse::parse(raw) {
            return node.to_json();
        }
    }
    match crate::parse::resolve_plain(raw) {
        crate::parse::Value::Null if raw.is_empty() => Json::String(String::new()),
        v => crate::parse::Node {
            value: v,
            span: Default::default(),
        }
        .to_json(),
    }
}

/// Parses a duration such as `30s`, `5m`, `1h30m`, `250ms`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim()).map_err(|e| format!("`{s}` is not a duration ({e})"))
}

/// A short description of a JSON value's type, for messages.
pub fn json_type(v: &Json) -> &'static str {
    match v {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(n) if n.is_i64() || n.is_u64() => "an integer",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "a list",
        Json::Object(_) => "a mapping",
    }
}

fn show(v: &Json) -> String {
    match v {
        Json::String(s) => format!("`{s}`"),
        other => format!("`{other}`"),
    }
}

/// Checks one value against its spec, returning the value coerced to the type.
pub fn check(name: &str, spec: &InputSpec, value: &Json) -> Result<Json, InputError> {
    let mut v = coerce(name, spec.ty, value)?;
    // Each item takes the item type, as a `--set` value does (`[1, 2]` for a
    // list of strings is `["1", "2"]`).
    if let (Some(items), Json::Array(list)) = (spec.items, &mut v) {
        for (i, item) in list.iter_mut().enumerate() {
            *item = coerce(name, items, item).map_err(|e| InputError {
                message: format!("item {} {}", i + 1, e.message),
                ..e
            })?;
        }
    }
    if let Some(allowed) = &spec.values {
        let matches = |a: &Json| {
            a == &v
                || (a.is_string() != v.is_string()
                    && crate::template::scalar_text(a) == crate::template::scalar_text(&v))
        };
        if !allowed.iter().any(matches) {
            let list = allowed.iter().map(show).collect::<Vec<_>>().join(", ");
            let mut e = err(name, format!("{} is not one of the allowed values: {list}", show(&v)));
            if let Json::String(s) = &v {
                let names: Vec<String> = allowed.iter().map(crate::template::scalar_text).collect();
                e.hint = crate::diag::suggestion(s, names.iter().map(String::as_str));
            }
            return Err(e);
        }
    }
    if let (Some(pattern), Json::String(s)) = (&spec.pattern, &v) {
        let re = regex::Regex::new(pattern)
            .map_err(|e| err(name, format!("its `pattern` is not a valid regular expression: {e}")))?;
        if !re.is_match(s) {
            return Err(err(name, format!("`{s}` does not match the pattern `{pattern}`")));
        }
    }
    check_bounds(name, spec, &v)?;
    Ok(v)
}

fn coerce(name: &str, ty: InputType, value: &Json) -> Result<Json, InputError> {
    let wrong = || {
        let mut e = err(
            name,
            format!("expected {}, found {} {}", describe(ty), json_type(value), show(value)),
        );
        e.hint = match (ty, value) {
            (InputType::List, Json::String(_)) => Some("write a list, e.g. `--set hosts=[web1,web2]`".to_owned()),
            (InputType::Duration, Json::Number(_)) => Some("durations have a unit: `30s`, `5m`, `1h`".to_owned()),
            _ => None,
        };
        e
    };
    Ok(match (ty, value) {
        (InputType::String | InputType::Enum, Json::String(_)) => value.clone(),
        (InputType::String, Json::Number(_) | Json::Bool(_)) => Json::String(crate::template::scalar_text(value)),
        (InputType::Enum, Json::Number(_) | Json::Bool(_)) => value.clone(),
        (InputType::Integer, Json::Number(n)) => match (n.as_i64(), n.as_f64()) {
            (Some(_), _) => value.clone(),
            (None, Some(f)) if f.fract() == 0.0 && f.abs() < 9.0e15 => Json::from(f as i64),
            _ => return Err(wrong()),
        },
        (InputType::Number, Json::Number(_)) => value.clone(),
        (InputType::Boolean, Json::Bool(_)) => value.clone(),
        (InputType::Duration, Json::String(s)) => {
            parse_duration(s).map_err(|m| InputError {
                hint: Some("durations look like `30s`, `5m`, `1h30m`".to_owned()),
                ..err(name, m)
            })?;
            value.clone()
        }
        (InputType::List, Json::Array(_)) => value.clone(),
        (InputType::Map, Json::Object(_)) => value.clone(),
        _ => return Err(wrong()),
    })
}

fn describe(ty: InputType) -> &'static str {
    match ty {
        InputType::String => "a string",
        InputType::Integer => "an integer",
        InputType::Number => "a number",
        InputType::Boolean => "`true` or `false`",
        InputType::Duration => "a duration such as `30s`",
        InputType::List => "a list",
        InputType::Map => "a mapping",
        InputType::Enum => "one of the listed values",
    }
}

/// A bound as a number, in the unit of the input's type (seconds for durations).
pub fn bound_value(ty: InputType, b: &Bound) -> Result<f64, String> {
    match (ty, b) {
        (InputType::Duration, Bound::Duration(s)) => parse_duration(s).map(|d| d.as_secs_f64()),
        (InputType::Duration, Bound::Number(_)) => {
            Err("a bound of a duration input is a duration, such as `1s`".to_owned())
        }
        (_, Bound::Number(n)) => Ok(*n),
        (_, Bound::Duration(s)) => Err(format!("`{s}` is not a number")),
    }
}

fn check_bounds(name: &str, spec: &InputSpec, v: &Json) -> Result<(), InputError> {
    let measure = match (spec.ty, v) {
        (InputType::Duration, Json::String(s)) => parse_duration(s).ok().map(|d| (d.as_secs_f64(), "")),
        (_, Json::Number(n)) => n.as_f64().map(|f| (f, "")),
        (_, Json::Array(a)) => Some((a.len() as f64, " items")),
        _ => None,
    };
    let Some((x, unit)) = measure else { return Ok(()) };
    for (bound, is_min) in [(&spec.min, true), (&spec.max, false)] {
        let Some(b) = bound else { continue };
        let limit = bound_value(spec.ty, b).map_err(|m| err(name, m))?;
        let out = if is_min { x < limit } else { x > limit };
        if out {
            let shown = match b {
                Bound::Number(n) => format!("{n}{unit}"),
                Bound::Duration(s) => s.clone(),
            };
            let word = if is_min { "at least" } else { "at most" };
            return Err(err(name, format!("{} must be {word} {shown}", show(v))));
        }
    }
    Ok(())
}

/// Checks every given value and applies defaults: the inputs a run starts with.
/// Unknown names, missing required inputs and bad values are all reported.
pub fn resolve(playbook: &Playbook, given: &IndexMap<String, Json>) -> Result<IndexMap<String, Json>, Vec<InputError>> {
    let mut errors = Vec::new();
    let mut out = IndexMap::new();
    for name in given.keys() {
        if !playbook.inputs.contains_key(name) {
            let mut e = err(name, format!("`{}` declares no input `{name}`", playbook.name));
            e.hint = crate::diag::suggestion(name, playbook.inputs.keys().map(String::as_str)).or_else(|| {
                let names: Vec<&str> = playbook.inputs.keys().map(String::as_str).collect();
                Some(if names.is_empty() {
                    "this playbook takes no inputs".to_owned()
                } else {
                    format!("its inputs are: {}", names.join(", "))
                })
            });
            errors.push(e);
        }
    }
    for (name, spec) in &playbook.inputs {
        let value = match (given.get(name), &spec.default) {
            (Some(v), _) => v,
            (None, Some(d)) => d,
            (None, None) if spec.is_required() => {
                let what = match &spec.description {
                    Some(d) => format!("{}: {d}", describe(spec.ty)),
                    None => describe(spec.ty).to_owned(),
                };
                let mut e = err(name, format!("is required ({what})"));
                e.hint = Some(format!("pass `--set {name}=...`"));
                errors.push(e);
                continue;
            }
            (None, None) => continue,
        };
        match check(name, spec, value) {
            Ok(v) => {
                out.insert(name.clone(), v);
            }
            Err(e) => errors.push(e),
        }
    }
    if errors.is_empty() { Ok(out) } else { Err(errors) }
}

/// A size: `16MB`, `512kB`, `1GB` (powers of 1024, as PostgreSQL writes
/// them) or a number of bytes.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (n, unit) = t.split_at(split);
    let n: u64 = n.parse().map_err(|_| format!("`{text}` is not a size like 16MB"))?;
    let mult = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" | "k" | "kib" => 1 << 10,
        "mb" | "m" | "mib" => 1 << 20,
        "gb" | "g" | "gib" => 1 << 30,
        other => return Err(format!("unknown size unit `{other}` (use B, kB, MB or GB)")),
    };
    Ok(n.saturating_mul(mult))
}

/// JSON writes a character beyond U+FFFF as a surrogate pair (`"\ud83d\ude00"`),
/// which YAML does not accept; this rewrites each pair as YAML's `\U0001f600`
/// so that an inputs file written by a JSON tool reads as it was meant.
pub fn join_surrogate_escapes(text: &str) -> std::borrow::Cow<'_, str> {
    static PAIR: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(r"\\u([dD][89abAB][0-9a-fA-F]{2})\\u([dD][c-fC-F][0-9a-fA-F]{2})")
            .expect("a constant pattern")
    });
    PAIR.replace_all(text, |c: &regex::Captures<'_>| {
        let hi = u32::from_str_radix(&c[1], 16).unwrap_or(0xD800);
        let lo = u32::from_str_radix(&c[2], 16).unwrap_or(0xDC00);
        let code = 0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00);
        format!("\\U{code:08x}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(ty: InputType) -> InputSpec {
        InputSpec {
            ty,
            description: None,
            required: Some(false),
            default: None,
            pattern: None,
            min: None,
            max: None,
            values: None,
            items: None,
        }
    }

    #[test]
    fn set_values_are_yaml() {
        assert_eq!(parse_set("batch=2"), Ok(("batch".into(), json!(2))));
        assert_eq!(
            parse_set("hosts=[web1, web2]"),
            Ok(("hosts".into(), json!(["web1", "web2"])))
        );
        assert_eq!(parse_set("flag=no"), Ok(("flag".into(), json!("no"))));
        assert_eq!(parse_set("cmd=a=b"), Ok(("cmd".into(), json!("a=b"))));
        assert_eq!(parse_set("msg="), Ok(("msg".into(), json!(""))));
        assert!(parse_set("novalue").is_err());
    }

    #[test]
    fn types_are_checked_and_coerced() {
        assert_eq!(check("r", &spec(InputType::String), &json!(42)), Ok(json!("42")));
        assert!(check("b", &spec(InputType::Integer), &json!("two")).is_err());
        assert_eq!(check("d", &spec(InputType::Duration), &json!("30s")), Ok(json!("30s")));
        let e = check("d", &spec(InputType::Duration), &json!(30)).expect_err("unitless");
        assert!(e.hint.is_some());
        let e = check("h", &spec(InputType::List), &json!("web1")).expect_err("not a list");
        assert_eq!(e.hint.as_deref(), Some("write a list, e.g. `--set hosts=[web1,web2]`"));
    }

    #[test]
    fn pattern_range_and_values() {
        let mut s = spec(InputType::String);
        s.pattern = Some("^v[0-9]+$".into());
        assert!(check("release", &s, &json!("v42")).is_ok());
        assert_eq!(
            check("release", &s, &json!("42; rm -rf /")).map_err(|e| e.message),
            Err("`42; rm -rf /` does not match the pattern `^v[0-9]+$`".into())
        );
        let mut n = spec(InputType::Integer);
        n.min = Some(Bound::Number(1.0));
        assert_eq!(
            check("batch", &n, &json!(0)).map_err(|e| e.message),
            Err("`0` must be at least 1".into())
        );
        let mut d = spec(InputType::Duration);
        d.max = Some(Bound::Duration("5m".into()));
        assert!(check("drain", &d, &json!("10m")).is_err());
        let mut e = spec(InputType::Enum);
        e.values = Some(vec![json!("staging"), json!("prod")]);
        let err = check("env", &e, &json!("prd")).expect_err("not allowed");
        assert_eq!(err.hint.as_deref(), Some("did you mean `prod`?"));
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("16MB"), Ok(16 << 20));
        assert_eq!(parse_size("512kB"), Ok(512 << 10));
        assert_eq!(parse_size("100"), Ok(100));
        assert!(parse_size("12 parsecs").is_err());
        assert!(parse_size("MB").is_err());
    }

    #[test]
    fn surrogate_pairs_from_json_read_as_one_character() {
        let text = join_surrogate_escapes(r#"{"x": "\ud83d\ude00!"}"#);
        let node = crate::parse::parse(&text).expect("parses");
        assert_eq!(node.to_json()["x"], "\u{1F600}!");
    }
}
