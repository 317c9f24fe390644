//! Pass 2's words: each JSON Schema violation of the tree (or of a step's
//! `with:` against its kind) as a diagnostic at the offending key or value,
//! with the allowed keys, values or types and a hint.

use super::*;

fn type_kind(kind: &jsonschema::error::TypeKind) -> String {
    use jsonschema::error::TypeKind;
    let name = |t: &str| match t {
        "integer" => "an integer",
        "number" => "a number",
        "string" => "a string",
        "boolean" => "`true` or `false`",
        "array" => "a list",
        "object" => "a mapping",
        "null" => "null",
        _ => "a value",
    };
    match kind {
        TypeKind::Single(t) => name(&t.to_string()).to_owned(),
        TypeKind::Multiple(set) => {
            let names: Vec<&str> = set
                .iter()
                .map(|t| t.to_string())
                .filter(|t| t != "null")
                .map(|t| name(&t))
                .collect();
            names.join(" or ")
        }
    }
}

/// The allowed values when every alternative is a single constant (how schemars
/// writes an enum whose variants have doc comments).
fn one_of_constants(context: &[Vec<jsonschema::ValidationError<'static>>]) -> Option<Vec<String>> {
    use jsonschema::error::ValidationErrorKind as K;
    context
        .iter()
        .map(|errs| match errs.as_slice() {
            [e] => match e.kind() {
                K::Constant { expected_value } => Some(template::scalar_text(expected_value)),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

fn alternatives(context: &[Vec<jsonschema::ValidationError<'static>>]) -> String {
    use jsonschema::error::ValidationErrorKind as K;
    let mut out: Vec<String> = Vec::new();
    for errs in context {
        for e in errs {
            if let K::Type { kind } = e.kind() {
                let t = type_kind(kind);
                if !out.contains(&t) {
                    out.push(t);
                }
            }
        }
    }
    if out.is_empty() {
        "valid".to_owned()
    } else {
        out.join(" or ")
    }
}

fn duration_hint(key: &str, node: Option<&Node>) -> Option<String> {
    let durationish = [
        "timeout",
        "delay",
        "max_delay",
        "rto",
        "rpo",
        "p50",
        "p95",
        "p99",
        "duration",
        "interval",
    ];
    match node.map(|n| &n.value) {
        Some(Value::Int(i)) if durationish.contains(&key) => Some(format!("durations have a unit: `{i}s`, `{i}m`")),
        Some(Value::Map(_))
            if node
                .and_then(|n| n.entries())
                .is_some_and(|m| m.len() == 1 && m[0].1.value == Value::Null) =>
        {
            Some("a template must be quoted: `\"{{...}}\"`".to_owned())
        }
        _ => None,
    }
}

fn required_hint(name: &str) -> Option<String> {
    Some(match name {
        "apiVersion" => "start the file with `apiVersion: runbook/v1`".to_owned(),
        "steps" => "add `steps:` with at least one step".to_owned(),
        "version" => "add `version: 1` (matching the file name `v1.yaml`)".to_owned(),
        "name" => "add `name:` (the playbook's folder name)".to_owned(),
        "type" => "give the input a type: string, integer, number, boolean, duration, list, map or enum".to_owned(),
        _ => return None,
    })
}

/// "in a step", "in input `x`", for messages about a location.
fn describe_location(ptr: &str) -> String {
    let segs: Vec<&str> = ptr.split('/').skip(1).collect();
    match segs.as_slice() {
        [] => "at the top level".to_owned(),
        ["inputs", name] => format!("in input `{name}`"),
        [.., "with"] => "in `with`".to_owned(),
        [.., "retry"] => "in `retry`".to_owned(),
        [.., "objectives"] | [.., "latency"] => "in `objectives`".to_owned(),
        [.., "defaults"] => "in `defaults`".to_owned(),
        [.., list, i] if i.parse::<usize>().is_ok() && matches!(*list, "steps" | "on_failure" | "finally" | "undo") => {
            "in a step".to_owned()
        }
        [.., "undo"] => "in a step".to_owned(),
        [.., last] => format!("in `{last}`"),
    }
}

/// The property names allowed where an `additionalProperties` error was raised,
/// following `$ref`s through the schema path.
fn allowed_keys(schema: &Json, schema_path: &str) -> Vec<String> {
    let mut node = schema;
    let segs: Vec<&str> = schema_path.split('/').skip(1).collect();
    let Some((_, parents)) = segs.split_last() else {
        return Vec::new();
    };
    for seg in parents {
        if *seg == "$ref" {
            let Some(target) = node.get("$ref").and_then(Json::as_str) else {
                return Vec::new();
            };
            let Some(found) = target.strip_prefix('#').and_then(|p| schema.pointer(p)) else {
                return Vec::new();
            };
            node = found;
            continue;
        }
        let next = match node {
            Json::Object(m) => m.get(*seg),
            Json::Array(a) => seg.parse::<usize>().ok().and_then(|i| a.get(i)),
            _ => None,
        };
        match next {
            Some(n) => node = n,
            None => return Vec::new(),
        }
    }
    if let Some(target) = node.get("$ref").and_then(Json::as_str) {
        if let Some(found) = target.strip_prefix('#').and_then(|p| schema.pointer(p)) {
            node = found;
        }
    }
    node.get("properties")
        .and_then(Json::as_object)
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default()
}

impl<'a> Check<'a> {
    pub(super) fn schema(&mut self) {
        let (schema, validator) = playbook_schema();
        let Some(validator) = validator else { return };
        let json = self.root.to_json();
        let errors: Vec<_> = validator.iter_errors(&json).map(|e| e.to_owned()).collect();
        for e in errors {
            self.schema_error(&e, schema, "");
        }
    }

    pub(super) fn schema_error(&mut self, e: &jsonschema::ValidationError<'_>, schema: &Json, prefix: &str) {
        use jsonschema::error::ValidationErrorKind as K;
        let at = format!("{prefix}{}", e.instance_path().as_str());
        // A template where a number or a choice is expected is checked at run time.
        if let Json::String(s) = &**e.instance() {
            if template::is_template(s)
                && matches!(
                    e.kind(),
                    K::Type { .. } | K::Enum { .. } | K::Pattern { .. } | K::Minimum { .. } | K::Maximum { .. }
                )
            {
                return;
            }
        }
        let node = self.root.pointer(&at);
        let span = node.map(|n| n.span);
        let key = at.rsplit('/').next().unwrap_or("").to_owned();
        let field = if key.is_empty() || key.parse::<usize>().is_ok() {
            "this value".to_owned()
        } else {
            format!("`{key}`")
        };
        let found = node.map_or("nothing", Node::type_name);
        let d = match e.kind() {
            K::AnyOf { context } | K::OneOfNotValid { context } if one_of_constants(context).is_some() => {
                let opts = one_of_constants(context).unwrap_or_default();
                self.not_allowed(&field, node, span, &opts)
            }
            K::AnyOf { context } | K::OneOfNotValid { context } => {
                // Report the errors of the alternative that came closest: the one
                // whose type matches, with the fewest complaints.
                let best = context
                    .iter()
                    .filter(|errs| {
                        !errs
                            .iter()
                            .any(|x| x.instance_path() == e.instance_path() && matches!(x.kind(), K::Type { .. }))
                    })
                    .min_by_key(|errs| errs.len());
                if let Some(errs) = best {
                    for x in errs {
                        self.schema_error(x, schema, prefix);
                    }
                    return;
                }
                let expected = alternatives(context);
                Diagnostic::error("type", format!("{field} must be {expected}, found {found}"), span)
                    .label(format!("{found} here"))
                    .maybe_hint(duration_hint(&key, node))
            }
            K::AdditionalProperties { unexpected } => {
                let allowed = allowed_keys(schema, e.schema_path().as_str());
                for name in unexpected {
                    let ptr = format!("{at}/{}", name.replace('~', "~0").replace('/', "~1"));
                    let kspan = self.root.pointer_key_span(&ptr);
                    let context = describe_location(&at);
                    let hint = suggestion(name, allowed.iter().map(String::as_str)).or_else(|| {
                        (!allowed.is_empty() && allowed.len() <= 12)
                            .then(|| format!("expected one of: {}", allowed.join(", ")))
                    });
                    self.diags.push(
                        Diagnostic::error("unknown-key", format!("unknown key `{name}` {context}"), kspan)
                            .label("not a known key")
                            .maybe_hint(hint),
                    );
                }
                return;
            }
            K::Required { property } => {
                let name = property.as_str().unwrap_or("?");
                let context = describe_location(&at);
                let span = match node {
                    Some(n) if at.is_empty() => Some(Span { len: 0, ..n.span }),
                    Some(n) => n
                        .entries()
                        .and_then(|m| m.first())
                        .map(|(k, _)| k.span)
                        .or(Some(n.span)),
                    None => None,
                };
                Diagnostic::error("missing-key", format!("missing required key `{name}` {context}"), span)
                    .label(format!("`{name}` is missing"))
                    .maybe_hint(required_hint(name))
            }
            K::Format { format } => {
                let text = template::scalar_text(e.instance());
                let (what, hint) = match format.as_str() {
                    "duration" => ("a duration", "write a duration such as `30s`, `5m`, `1h30m` or `250ms`"),
                    "size" => ("a size", "write a size such as `16MB`, `512kB` or a number of bytes"),
                    _ => ("valid", "check the value"),
                };
                Diagnostic::error("format", format!("{field}: `{text}` is not {what}"), span)
                    .label(format!("not {what}"))
                    .hint(hint)
            }
            K::Type { kind } => {
                let expected = type_kind(kind);
                Diagnostic::error("type", format!("{field} must be {expected}, found {found}"), span)
                    .label(format!("{found} here"))
                    .maybe_hint(duration_hint(&key, node))
            }
            K::Enum { options } => {
                let opts: Vec<String> = options
                    .as_array()
                    .map(|a| a.iter().map(template::scalar_text).collect())
                    .unwrap_or_default();
                self.not_allowed(&field, node, span, &opts)
            }
            K::Pattern { pattern } => {
                let given = node.and_then(Node::as_str).unwrap_or_default();
                let (msg, hint) = match key.as_str() {
                    "id" | "name" => (
                        format!("invalid {} `{given}`", if key == "id" { "step id" } else { "name" }),
                        "use letters, digits, `-` and `_`, starting with a letter or digit".to_owned(),
                    ),
                    "as" => (
                        format!("invalid variable name `{given}`"),
                        "use letters, digits and `_`".to_owned(),
                    ),
                    _ => (format!("{field} `{given}` does not match `{pattern}`"), String::new()),
                };
                Diagnostic::error("pattern", msg, span)
                    .label("here")
                    .maybe_hint((!hint.is_empty()).then_some(hint))
            }
            K::Minimum { limit } => {
                Diagnostic::error("range", format!("{field} must be at least {limit}"), span).label("too small")
            }
            K::Maximum { limit } => {
                Diagnostic::error("range", format!("{field} must be at most {limit}"), span).label("too large")
            }
            _ => Diagnostic::error("schema", format!("{field} is invalid: {e}"), span).label("here"),
        };
        self.diags.push(d);
    }

    pub(super) fn not_allowed(
        &self,
        field: &str,
        node: Option<&Node>,
        span: Option<Span>,
        opts: &[String],
    ) -> Diagnostic {
        let given = node.map(|n| template::scalar_text(&n.to_json())).unwrap_or_default();
        let list = opts.iter().map(|o| format!("`{o}`")).collect::<Vec<_>>().join(", ");
        Diagnostic::error(
            "not-allowed",
            format!("{field} must be one of {list}, found `{given}`"),
            span,
        )
        .label("not an allowed value")
        .maybe_hint(suggestion(&given, opts.iter().map(String::as_str)))
    }

    // ---- pass 3: meaning ---------------------------------------------------
}

#[cfg(test)]
mod tests {
    use super::{describe_location, required_hint};
    use crate::validate::testkit::{HEAD, check};

    #[test]
    fn a_location_is_said_in_the_words_of_the_playbook() {
        assert_eq!(describe_location(""), "at the top level");
        assert_eq!(describe_location("/inputs/release"), "in input `release`");
        assert_eq!(describe_location("/steps/0"), "in a step");
        assert_eq!(describe_location("/steps/0/with"), "in `with`");
        assert_eq!(describe_location("/steps/2/retry"), "in `retry`");
        assert!(required_hint("steps").is_some_and(|h| h.contains("add `steps:`")));
        assert!(required_hint("whatever").is_none());
    }

    #[test]
    fn a_kinds_params_are_checked_against_its_schema_with_the_key_named() {
        let text = format!("{HEAD}steps:\n  - {{ id: a, uses: shell, with: {{ run: \"true\", rnu: 1 }} }}\n");
        let found = check(&text);
        assert!(
            found
                .iter()
                .any(|(c, e, m)| *c == "unknown-key" && *e && m.contains("`rnu`")),
            "{found:?}"
        );
        let wrong = format!("{HEAD}steps:\n  - {{ id: a, uses: shell, with: {{ run: 5 }} }}\n");
        assert!(
            check(&wrong).iter().any(|(c, _, _)| *c == "type"),
            "{:?}",
            check(&wrong)
        );
    }
}
