//! YAML text to a located tree of [`Node`]s.
//!
//! A key design decision: we do not deserialize playbooks straight from YAML with
//! serde. serde stops at the first error and loses positions; we want every
//! mistake in a playbook reported at once, each with its line and column. So this
//! module turns the YAML 1.2 event stream of `saphyr-parser` into a tree where
//! every node knows its span, and the rest of the crate checks that tree.
//!
//! The YAML rules enforced here:
//! - YAML 1.2 core schema for plain scalars: `yes`, `no`, `on`, `off` stay strings;
//!   only `true`/`false` (and their capitalised forms) are booleans.
//! - Duplicate keys are errors; keys must be strings.
//! - Aliases are expanded with a budget, so an anchor bomb is an error, not an
//!   out-of-memory.
//! - An unquoted `{{template}}` (which YAML reads as a nested flow mapping) gets a
//!   hint to quote it.
//! - One document per file.

use crate::diag::{Diagnostic, Span};
use saphyr_parser::{Event, Marker, Parser, ScalarStyle};
use std::collections::HashMap;

/// The most nodes a document may expand to, aliases included.
pub const NODE_BUDGET: usize = 250_000;
/// The deepest nesting accepted.
pub const MAX_DEPTH: usize = 128;

/// A YAML value and where it was written.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// The value.
    pub value: Value,
    /// Where it is in the source.
    pub span: Span,
}

/// A YAML value after YAML 1.2 core-schema resolution.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `~`, `null`, or nothing.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// A plain integer.
    Int(i64),
    /// A plain float.
    Float(f64),
    /// Any string, quoted or not.
    Str(String),
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping with string keys, in source order.
    Map(Vec<(Key, Node)>),
}

/// A mapping key and its span.
#[derive(Debug, Clone, PartialEq)]
pub struct Key {
    /// The key text.
    pub name: String,
    /// Where the key is written.
    pub span: Span,
}

impl Node {
    /// The value under `key` if this is a mapping that has it.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.entries()?.iter().find(|(k, _)| k.name == key).map(|(_, v)| v)
    }

    /// The key/value pairs if this is a mapping.
    pub fn entries(&self) -> Option<&[(Key, Node)]> {
        match &self.value {
            Value::Map(m) => Some(m),
            _ => None,
        }
    }

    /// The entry for `key`, with the key's own span.
    pub fn entry(&self, key: &str) -> Option<&(Key, Node)> {
        self.entries()?.iter().find(|(k, _)| k.name == key)
    }

    /// The string, if this is one.
    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The items, if this is a sequence.
    pub fn items(&self) -> Option<&[Node]> {
        match &self.value {
            Value::Seq(s) => Some(s),
            _ => None,
        }
    }

    /// Follows a JSON pointer (`/steps/2/with/run`) down the tree.
    pub fn pointer(&self, pointer: &str) -> Option<&Node> {
        let mut node = self;
        for raw in pointer.split('/').skip(1) {
            let seg = raw.replace("~1", "/").replace("~0", "~");
            node = match &node.value {
                Value::Map(m) => m.iter().find(|(k, _)| k.name == seg).map(|(_, v)| v)?,
                Value::Seq(s) => s.get(seg.parse::<usize>().ok()?)?,
                _ => return None,
            };
        }
        Some(node)
    }

    /// The key span of the last segment of `pointer`, when it names a mapping key;
    /// otherwise the span of the node itself.
    pub fn pointer_key_span(&self, pointer: &str) -> Option<Span> {
        let (parent, last) = pointer.rsplit_once('/')?;
        let parent = self.pointer(parent)?;
        let last = last.replace("~1", "/").replace("~0", "~");
        match parent.entry(&last) {
            Some((k, _)) => Some(k.span),
            None => self.pointer(pointer).map(|n| n.span),
        }
    }

    /// The tree as JSON (for schema checks and deserialization).
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match &self.value {
            Value::Null => J::Null,
            Value::Bool(b) => J::Bool(*b),
            Value::Int(i) => J::from(*i),
            Value::Float(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
            Value::Str(s) => J::String(s.clone()),
            Value::Seq(items) => J::Array(items.iter().map(Node::to_json).collect()),
            Value::Map(m) => J::Object(m.iter().map(|(k, v)| (k.name.clone(), v.to_json())).collect()),
        }
    }

    /// A short name of the node's type, for messages.
    pub fn type_name(&self) -> &'static str {
        match self.value {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Int(_) => "an integer",
            Value::Float(_) => "a number",
            Value::Str(_) => "a string",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }
}

/// Converts the parser's character-indexed markers to byte spans.
struct Positions<'a> {
    text: &'a str,
    /// Byte offset of each char index, only built for non-ASCII text.
    char_bytes: Option<Vec<usize>>,
}

impl<'a> Positions<'a> {
    fn new(text: &'a str) -> Self {
        let char_bytes = (!text.is_ascii()).then(|| {
            let mut v: Vec<usize> = text.char_indices().map(|(b, _)| b).collect();
            v.push(text.len());
            v
        });
        Positions { text, char_bytes }
    }

    fn byte(&self, m: &Marker) -> usize {
        match &self.char_bytes {
            Some(v) => v.get(m.index()).copied().unwrap_or(self.text.len()),
            None => m.index().min(self.text.len()),
        }
    }

    fn span(&self, start: &Marker, end: &Marker) -> Span {
        let offset = self.byte(start);
        let end = self.byte(end).max(offset);
        Span {
            offset,
            len: end - offset,
            line: start.line(),
            col: start.col() + 1,
        }
    }

    fn point(&self, m: &Marker) -> Span {
        self.span(m, m)
    }
}

/// Parses one YAML document into a located tree. On failure, returns every
/// problem found (the YAML syntax error stops the scan, so that is at most one
/// syntax error plus the structural errors before it).
pub fn parse(text: &str) -> Result<Node, Vec<Diagnostic>> {
    let mut b = Builder {
        pos: Positions::new(text),
        text,
        anchors: HashMap::new(),
        budget: NODE_BUDGET,
        errors: Vec::new(),
    };
    let root = b.document();
    if b.errors.is_empty() {
        Ok(root.unwrap_or(Node {
            value: Value::Null,
            span: Span {
                offset: 0,
                len: 0,
                line: 1,
                col: 1,
            },
        }))
    } else {
        Err(b.errors)
    }
}

struct Builder<'a> {
    pos: Positions<'a>,
    text: &'a str,
    anchors: HashMap<usize, Node>,
    budget: usize,
    errors: Vec<Diagnostic>,
}

/// Why building stopped early: the event stream is no longer usable.
struct Abort;

type Events<'a> = Parser<'a, saphyr_parser::StrInput<'a>>;

impl<'a> Builder<'a> {
    fn document(&mut self) -> Option<Node> {
        let mut parser = Parser::new_from_str(self.text);
        let mut root = None;
        let mut documents = 0;
        loop {
            let (ev, span) = match self.next(&mut parser) {
                Ok(e) => e,
                Err(Abort) => return None,
            };
            match ev {
                Event::StreamStart | Event::DocumentEnd | Event::Nothing => {}
                Event::StreamEnd => return root,
                Event::DocumentStart(_) => {
                    documents += 1;
                    if documents > 1 {
                        self.errors.push(
                            Diagnostic::error(
                                "yaml",
                                "a playbook file holds exactly one YAML document",
                                Some(self.pos.point(&span.start)),
                            )
                            .label("a second document starts here")
                            .hint("put each playbook in its own file"),
                        );
                        return None;
                    }
                }
                other => match self.node(&mut parser, other, span, 0) {
                    Ok(n) => root = Some(n),
                    Err(Abort) => return None,
                },
            }
        }
    }

    fn next(&mut self, parser: &mut Events<'a>) -> Result<(Event<'a>, saphyr_parser::Span), Abort> {
        match parser.next_event() {
            Some(Ok(e)) => Ok(e),
            Some(Err(e)) => {
                let span = self.pos.point(e.marker());
                let mut d = Diagnostic::error("yaml", format!("invalid YAML: {}", e.info()), Some(span)).label("here");
                if e.info().contains("tab") {
                    d = d.hint("indent with spaces; YAML does not allow tabs for indentation");
                }
                self.errors.push(d);
                Err(Abort)
            }
            None => {
                self.errors
                    .push(Diagnostic::error("yaml", "unexpected end of YAML", None));
                Err(Abort)
            }
        }
    }

    fn spend(&mut self, span: Span) -> Result<(), Abort> {
        if self.budget == 0 {
            self.errors.push(
                Diagnostic::error(
                    "yaml-too-large",
                    format!("the document expands to more than {NODE_BUDGET} nodes"),
                    Some(span),
                )
                .label("expanding this alias exceeds the budget")
                .hint("aliases that refer to aliases multiply; write the values out or split the playbook"),
            );
            return Err(Abort);
        }
        self.budget -= 1;
        Ok(())
    }

    fn node(
        &mut self,
        parser: &mut Events<'a>,
        ev: Event<'a>,
        span: saphyr_parser::Span,
        depth: usize,
    ) -> Result<Node, Abort> {
        let start = self.pos.span(&span.start, &span.end);
        if depth > MAX_DEPTH {
            self.errors.push(Diagnostic::error(
                "yaml-too-deep",
                format!("nesting deeper than {MAX_DEPTH} levels"),
                Some(start),
            ));
            return Err(Abort);
        }
        self.spend(start)?;
        match ev {
            Event::Scalar(text, style, anchor, tag) => {
                let value = self.scalar(&text, style, tag.as_deref(), start);
                let node = Node { value, span: start };
                self.remember(anchor, &node);
                Ok(node)
            }
            Event::Alias(id) => match self.anchors.get(&id).cloned() {
                Some(n) => {
                    let count = count_nodes(&n);
                    if count > self.budget {
                        self.budget = 0;
                        self.spend(start)?;
                    }
                    self.budget -= count;
                    Ok(Node { span: start, ..n })
                }
                None => {
                    self.errors
                        .push(Diagnostic::error("yaml", "unknown alias", Some(start)));
                    Err(Abort)
                }
            },
            Event::SequenceStart(anchor, _) => {
                let mut items = Vec::new();
                loop {
                    let (ev, sp) = self.next(parser)?;
                    if let Event::SequenceEnd = ev {
                        let node = Node {
                            value: Value::Seq(items),
                            span: self.pos.span(&span.start, &sp.end),
                        };
                        self.remember(anchor, &node);
                        return Ok(node);
                    }
                    items.push(self.node(parser, ev, sp, depth + 1)?);
                }
            }
            Event::MappingStart(anchor, _) => {
                let mut entries: Vec<(Key, Node)> = Vec::new();
                let unquoted_template = self.text[start.offset..].starts_with("{{");
                loop {
                    let (ev, sp) = self.next(parser)?;
                    if let Event::MappingEnd = ev {
                        break;
                    }
                    let key = self.node(parser, ev, sp, depth + 1)?;
                    let (ev, sp) = self.next(parser)?;
                    let value = self.node(parser, ev, sp, depth + 1)?;
                    if unquoted_template {
                        continue;
                    }
                    let name = match key.value {
                        Value::Str(s) => s,
                        Value::Int(i) => i.to_string(),
                        Value::Bool(b) => b.to_string(),
                        Value::Float(f) => f.to_string(),
                        _ => {
                            self.errors.push(
                                Diagnostic::error(
                                    "yaml-key",
                                    format!("a mapping key must be a string, found {}", key.type_name()),
                                    Some(key.span),
                                )
                                .label("this key"),
                            );
                            continue;
                        }
                    };
                    if let Some((first, _)) = entries.iter().find(|(k, _)| k.name == name) {
                        self.errors.push(
                            Diagnostic::error("duplicate-key", format!("duplicate key `{name}`"), Some(key.span))
                                .label("written again here")
                                .hint(format!("`{name}` is already set on line {}; keep one", first.span.line)),
                        );
                        continue;
                    }
                    entries.push((Key { name, span: key.span }, value));
                }
                if unquoted_template {
                    let end = self.text[start.offset..]
                        .find("}}")
                        .map_or(start.offset + 2, |e| start.offset + e + 2);
                    let written = &self.text[start.offset..end];
                    self.errors.push(
                        Diagnostic::error(
                            "unquoted-template",
                            "a template must be quoted",
                            Some(Span {
                                len: end - start.offset,
                                ..start
                            }),
                        )
                        .label("YAML reads this as a nested mapping")
                        .hint(format!("write `\"{written}\"` with quotes")),
                    );
                }
                let node = Node {
                    value: Value::Map(entries),
                    span: start,
                };
                self.remember(anchor, &node);
                Ok(node)
            }
            _ => {
                self.errors
                    .push(Diagnostic::error("yaml", "unexpected YAML structure", Some(start)));
                Err(Abort)
            }
        }
    }

    fn remember(&mut self, anchor: usize, node: &Node) {
        if anchor != 0 {
            self.anchors.insert(anchor, node.clone());
        }
    }

    fn scalar(&mut self, text: &str, style: ScalarStyle, tag: Option<&saphyr_parser::Tag>, span: Span) -> Value {
        if let Some(tag) = tag {
            let core = tag.handle == "tag:yaml.org,2002:" || tag.handle == "!!";
            return match (core, tag.suffix.as_str()) {
                (true, "str") => Value::Str(text.to_owned()),
                (true, "int" | "float" | "bool" | "null") => resolve_plain(text),
                _ => {
                    self.errors.push(
                        Diagnostic::error(
                            "yaml-tag",
                            format!("YAML tag `{}{}` is not supported", tag.handle, tag.suffix),
                            Some(span),
                        )
                        .hint("remove the tag; only `!!str` and the core tags are understood"),
                    );
                    Value::Null
                }
            };
        }
        match style {
            ScalarStyle::Plain => resolve_plain(text),
            _ => Value::Str(text.to_owned()),
        }
    }
}

fn count_nodes(n: &Node) -> usize {
    1 + match &n.value {
        Value::Seq(items) => items.iter().map(count_nodes).sum(),
        Value::Map(m) => m.iter().map(|(_, v)| 1 + count_nodes(v)).sum(),
        _ => 0,
    }
}

/// YAML 1.2 core-schema resolution of a plain scalar.
pub fn resolve_plain(s: &str) -> Value {
    match s {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => return Value::Float(f64::INFINITY),
        "-.inf" | "-.Inf" | "-.INF" => return Value::Float(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return Value::Float(f64::NAN),
        _ => {}
    }
    if let Some(oct) = s.strip_prefix("0o") {
        if let Ok(i) = i64::from_str_radix(oct, 8) {
            return Value::Int(i);
        }
    }
    if let Some(hex) = s.strip_prefix("0x") {
        if let Ok(i) = i64::from_str_radix(hex, 16) {
            return Value::Int(i);
        }
    }
    let digits = s.strip_prefix(['-', '+']).unwrap_or(s);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        if let Ok(i) = s.parse::<i64>() {
            return Value::Int(i);
        }
    }
    if is_yaml_float(digits) {
        if let Ok(f) = s.parse::<f64>() {
            return Value::Float(f);
        }
    }
    Value::Str(s.to_owned())
}

/// `(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?` without a sign.
fn is_yaml_float(s: &str) -> bool {
    let (mantissa, exp) = match s.find(['e', 'E']) {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    };
    let mantissa_ok = match mantissa.split_once('.') {
        Some((int, frac)) => {
            (!int.is_empty() || !frac.is_empty())
                && int.bytes().all(|b| b.is_ascii_digit())
                && frac.bytes().all(|b| b.is_ascii_digit())
                && (!int.is_empty() || !frac.is_empty())
        }
        None => !mantissa.is_empty() && mantissa.bytes().all(|b| b.is_ascii_digit()),
    };
    let exp_ok = exp.is_none_or(|e| {
        let e = e.strip_prefix(['-', '+']).unwrap_or(e);
        !e.is_empty() && e.bytes().all(|b| b.is_ascii_digit())
    });
    mantissa_ok && exp_ok && mantissa != "."
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(yaml: &str) -> Value {
        parse(yaml).expect("parses").value
    }

    #[test]
    fn yaml_12_scalars() {
        assert_eq!(resolve_plain("yes"), Value::Str("yes".into()));
        assert_eq!(resolve_plain("no"), Value::Str("no".into()));
        assert_eq!(resolve_plain("on"), Value::Str("on".into()));
        assert_eq!(resolve_plain("True"), Value::Bool(true));
        assert_eq!(resolve_plain("42"), Value::Int(42));
        assert_eq!(resolve_plain("-7"), Value::Int(-7));
        assert_eq!(resolve_plain("0x1f"), Value::Int(31));
        assert_eq!(resolve_plain("0o17"), Value::Int(15));
        assert_eq!(resolve_plain("1.5"), Value::Float(1.5));
        assert_eq!(resolve_plain("1e3"), Value::Float(1000.0));
        assert_eq!(resolve_plain("30s"), Value::Str("30s".into()));
        assert_eq!(resolve_plain("1.2.3"), Value::Str("1.2.3".into()));
        assert_eq!(resolve_plain("."), Value::Str(".".into()));
        assert_eq!(resolve_plain("~"), Value::Null);
    }

    #[test]
    fn quoted_scalars_stay_strings() {
        let v = value("a: '42'\nb: \"true\"\n");
        let Value::Map(m) = v else { panic!("map") };
        assert_eq!(m[0].1.value, Value::Str("42".into()));
        assert_eq!(m[1].1.value, Value::Str("true".into()));
    }

    #[test]
    fn spans_point_at_line_and_column() {
        let root = parse("a: 1\nsteps:\n  - id: x\n    uses: shell\n").expect("parses");
        let uses = root.pointer("/steps/0/uses").expect("uses");
        assert_eq!((uses.span.line, uses.span.col), (4, 11));
        let key = root.pointer_key_span("/steps/0/uses").expect("key");
        assert_eq!((key.line, key.col), (4, 5));
    }

    #[test]
    fn duplicate_keys_are_errors() {
        let errs = parse("a: 1\nb: 2\na: 3\n").expect_err("duplicate");
        assert_eq!(errs[0].code, "duplicate-key");
        assert_eq!(errs[0].span.map(|s| s.line), Some(3));
    }

    #[test]
    fn unquoted_template_gets_a_hint() {
        let errs = parse("host: {{host}}\n").expect_err("unquoted");
        assert_eq!(errs[0].code, "unquoted-template");
        assert_eq!(errs[0].hint.as_deref(), Some("write `\"{{host}}\"` with quotes"));
    }

    #[test]
    fn anchor_bomb_is_refused() {
        let mut y = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..9 {
            let p = i - 1;
            y.push_str(&format!(
                "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
            ));
        }
        let errs = parse(&y).expect_err("bomb");
        assert_eq!(errs[0].code, "yaml-too-large");
    }

    #[test]
    fn aliases_expand_within_budget() {
        let v = value("base: &b {x: 1}\nother: *b\n");
        let Value::Map(m) = v else { panic!("map") };
        assert_eq!(m[1].1.get("x").map(|n| &n.value), Some(&Value::Int(1)));
    }

    #[test]
    fn non_ascii_offsets_are_bytes() {
        let text = "name: \"héllo\"\nx: 1\n";
        let root = parse(text).expect("parses");
        let x = root.get("x").expect("x");
        assert_eq!(&text[x.span.offset..x.span.offset + x.span.len], "1");
    }

    #[test]
    fn syntax_error_has_location() {
        let errs = parse("a: [1, 2\nb: 3\n").expect_err("syntax");
        assert_eq!(errs[0].code, "yaml");
        assert!(errs[0].span.is_some());
    }
}
