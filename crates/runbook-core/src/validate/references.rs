//! Templates and references: each template's syntax and helpers, every
//! reference against declared inputs and secrets, item variables and steps
//! guaranteed to have run before the reader; durations, counts and retries
//! in step fields.

use super::*;

fn field_check(second: Option<&str>, fields: &[&str], root: &str) -> Option<(String, Option<String>)> {
    let name = second?;
    (!fields.contains(&name)).then(|| {
        (
            format!("`{root}` has no `{name}`"),
            suggestion(name, fields.iter().copied()).or_else(|| Some(format!("`{root}` has: {}", fields.join(", ")))),
        )
    })
}

impl<'a> Check<'a> {
    /// A call of a kind: the kind exists, `with` matches its schema, templates are sound.
    pub(super) fn call(&mut self, step: &Node, ptr: &str, kind: &str, kind_node: &Node, scope: &Scope) {
        let Some(k) = self.registry.get(kind).cloned() else {
            let broken = self.registry.problem(kind).map(str::to_owned);
            let hint = broken.or_else(|| suggestion(kind, self.registry.names())).or_else(|| {
                Some(format!(
                    "known kinds: {}",
                    self.registry.names().collect::<Vec<_>>().join(", ")
                ))
            });
            self.diags.push(
                Diagnostic::error(
                    "unknown-kind",
                    format!("unknown step kind `{kind}`"),
                    Some(kind_node.span),
                )
                .label("not a known kind")
                .maybe_hint(hint),
            );
            // Still check the templates inside `with`.
            if let Some(with) = step.get("with") {
                self.strings(with, scope, false);
            }
            return;
        };
        if let Some(granted) = step.get("secrets") {
            self.granted_secrets(granted, kind, k.takes_secrets());
        }
        let granted: Vec<&str> = step
            .get("secrets")
            .and_then(Node::items)
            .map(|items| items.iter().filter_map(Node::as_str).collect())
            .unwrap_or_default();
        for wanted in k.wants_secrets().iter().filter(|w| !granted.contains(&w.as_str())) {
            self.diags.push(
                Diagnostic::warning(
                    "secret-not-granted",
                    format!("`{kind}` expects the secret `{wanted}`, which this step does not grant"),
                    Some(kind_node.span),
                )
                .label("no `secrets:` for it")
                .hint(format!(
                    "grant it: `secrets: [{wanted}]` on the step (declared under the playbook's `secrets:`)"
                )),
            );
        }
        if let Some(secret) = step.get("secret_outputs") {
            let mut known: Vec<&str> = k.outputs().iter().map(|o| &*o.name).collect();
            if let Some(Value::Map(declared)) = step.get("outputs").map(|n| &n.value) {
                known.extend(declared.iter().map(|(key, _)| key.name.as_str()));
            }
            for n in secret.items().unwrap_or_default() {
                let Some(name) = n.as_str().filter(|name| !known.contains(name)) else {
                    continue;
                };
                self.diags.push(
                    Diagnostic::error(
                        "unknown-output",
                        format!("`{kind}` has no output `{name}`"),
                        Some(n.span),
                    )
                    .label("not an output of this step")
                    .maybe_hint(
                        suggestion(name, known.iter().copied())
                            .or_else(|| Some(format!("its outputs: {}", known.join(", ")))),
                    ),
                );
            }
        }
        let with = step.get("with");
        let with_json = with.map_or(Json::Object(Default::default()), Node::to_json);
        if let Some(v) = self.registry.validator(kind) {
            let schema = self.registry.params_schema(kind).cloned().unwrap_or(Json::Null);
            let errors: Vec<_> = v.iter_errors(&with_json).map(|e| e.to_owned()).collect();
            for e in errors {
                if with.is_none() {
                    if let jsonschema::error::ValidationErrorKind::Required { property } = e.kind() {
                        let name = property.as_str().unwrap_or("?");
                        self.diags.push(
                            Diagnostic::error(
                                "missing-key",
                                format!("`{kind}` needs `with: {{ {name}: ... }}`"),
                                Some(kind_node.span),
                            )
                            .label(format!("`{name}` is missing")),
                        );
                        continue;
                    }
                }
                self.schema_error(&e, &schema, &format!("{ptr}/with"));
            }
        }
        if kind == crate::calls::KIND {
            self.call_site(step, ptr);
        }
        if let Some(with) = with {
            let shell: Vec<String> = k.shell_fields().iter().map(|f| format!("{ptr}/with{f}")).collect();
            let mut own = scope.clone();
            own.items
                .extend(k.extra_roots().iter().map(|r| ((*r).to_owned(), String::new())));
            self.with_templates(with, &format!("{ptr}/with"), &shell, &own);
            for nested in k.nested_steps() {
                if let Some(n) = with.pointer(nested) {
                    let nested_ptr = format!("{ptr}/with{nested}");
                    if let Some(kn) = n.get("uses") {
                        if let Some(kname) = kn.as_str() {
                            self.call(n, &nested_ptr, kname, kn, scope);
                        }
                    }
                }
            }
        }
    }

    /// A step's `secrets:`: declared ones, granted to a kind that takes them.
    fn granted_secrets(&mut self, granted: &Node, kind: &str, takes: bool) {
        if !takes {
            self.diags.push(
                Diagnostic::error(
                    "secrets-not-taken",
                    format!("`{kind}` takes no granted secrets (only plugins do)"),
                    Some(granted.span),
                )
                .label("not taken by this kind")
                .hint("write `{{secrets.NAME}}` where the value goes (for a command, through `env:`)"),
            );
            return;
        }
        for n in granted.items().unwrap_or_default() {
            let Some(name) = n.as_str() else { continue };
            if !self.secrets.iter().any(|s| s == name) {
                let hint = suggestion(name, self.secrets.iter().map(String::as_str))
                    .unwrap_or_else(|| format!("declare it under `secrets:`, e.g. `secrets: [{name}]`"));
                self.diags.push(
                    Diagnostic::error("undefined-secret", format!("undefined secret `{name}`"), Some(n.span))
                        .label("not declared")
                        .hint(hint),
                );
            }
        }
    }

    pub(super) fn with_templates(&mut self, node: &Node, ptr: &str, shell: &[String], scope: &Scope) {
        match &node.value {
            Value::Str(_) => self.template_field(node, scope, shell.iter().any(|s| s == ptr)),
            Value::Seq(items) => {
                for (i, n) in items.iter().enumerate() {
                    self.with_templates(n, &format!("{ptr}/{i}"), shell, scope);
                }
            }
            Value::Map(m) => {
                for (k, v) in m {
                    // nested step calls are checked by `call`
                    if v.get("uses").is_some() && v.get("with").is_some() {
                        continue;
                    }
                    self.with_templates(v, &format!("{ptr}/{}", k.name), shell, scope);
                }
            }
            _ => {}
        }
    }

    pub(super) fn strings(&mut self, node: &Node, scope: &Scope, shell: bool) {
        match &node.value {
            Value::Str(_) => self.template_field(node, scope, shell),
            Value::Seq(items) => items.iter().for_each(|n| self.strings(n, scope, shell)),
            Value::Map(m) => m.iter().for_each(|(_, n)| self.strings(n, scope, shell)),
            _ => {}
        }
    }

    pub(super) fn retry(&mut self, r: &Node, scope: &Scope) {
        for key in ["delay", "max_delay"] {
            if let Some(n) = r.get(key) {
                self.duration(n);
            }
        }
        if let Some(u) = r.get("until") {
            self.template_field(u, scope, false);
        }
    }

    pub(super) fn duration(&mut self, n: &Node) {
        match &n.value {
            Value::Str(s) if template::is_template(s) => {}
            Value::Str(s) => {
                if let Err(m) = crate::inputs::parse_duration(s) {
                    self.diags.push(
                        Diagnostic::error("duration", m, Some(n.span))
                            .label("not a duration")
                            .hint("durations look like `30s`, `5m`, `1h30m`, `250ms`"),
                    );
                }
            }
            // A bare number is a type error, reported (with a hint) by the schema pass.
            _ => {}
        }
    }

    pub(super) fn count_or_percent(&mut self, n: &Node, key: &str) {
        let check = |s: &str| -> bool {
            template::is_template(s)
                || s.strip_suffix('%')
                    .and_then(|p| p.trim().parse::<f64>().ok())
                    .is_some_and(|p| p > 0.0 && p <= 100.0)
        };
        let bad: Vec<&Node> = match &n.value {
            Value::Str(s) if !check(s) => vec![n],
            Value::Seq(items) => items.iter().filter(|i| i.as_str().is_some_and(|s| !check(s))).collect(),
            _ => vec![],
        };
        for b in bad {
            self.diags.push(
                Diagnostic::error(
                    "count",
                    format!(
                        "`{key}` must be a count or a percentage, found `{}`",
                        b.as_str().unwrap_or("")
                    ),
                    Some(b.span),
                )
                .label("here")
                .hint("write a count such as `2` or a percentage such as `25%`"),
            );
        }
    }

    /// A string that may be a template: syntax, helpers, references, raw insertions.
    pub(super) fn template_field(&mut self, node: &Node, scope: &Scope, shell: bool) {
        let Some(text) = node.as_str() else { return };
        if !template::is_template(text) {
            return;
        }
        let tpl = match template::compile(text) {
            Ok(t) => t,
            Err(template::TemplateError::Syntax { message, .. }) => {
                let msg = message.lines().next().unwrap_or("invalid template").trim().to_owned();
                self.diags.push(
                    Diagnostic::error("template-syntax", format!("invalid template: {msg}"), Some(node.span))
                        .label("in this template")
                        .hint(
                            "templates look like `{{inputs.name}}` or `{{eq inputs.env \"prod\"}}`; check the braces",
                        ),
                );
                return;
            }
            Err(e) => {
                self.diags
                    .push(Diagnostic::error("template-syntax", e.to_string(), Some(node.span)));
                return;
            }
        };
        let usage = template::usage(&tpl);
        if usage.raw_insertion && shell {
            self.diags.push(
                Diagnostic::warning(
                    "raw-in-shell",
                    "`{{{...}}}` inserts text unquoted into a shell command",
                    Some(self.sub_span(node, "{{{")),
                )
                .label("runs as shell code")
                .hint("use `{{...}}` to insert the value as one quoted word, unless the playbook means to run it"),
            );
        }
        if shell {
            for (r, written) in crate::shell::refusals(text) {
                let at = self.sub_span(node, written);
                self.diags.push(
                    Diagnostic::error("unsafe-in-shell", r.message, Some(at))
                        .label("a value here would not stay data")
                        .hint(r.hint),
                );
            }
        }
        for h in &usage.helpers {
            if !template::helper_names().any(|x| x == h) {
                self.diags.push(
                    Diagnostic::error(
                        "unknown-helper",
                        format!("unknown template helper `{h}`"),
                        Some(self.sub_span(node, h)),
                    )
                    .label("not a helper")
                    .maybe_hint(suggestion(h, template::helper_names())),
                );
            }
        }
        for r in &usage.references {
            if let Some((msg, hint)) = self.reference(r, scope) {
                let label = if msg.contains("not guaranteed") {
                    "may not have run yet"
                } else if msg.contains("once per item") {
                    "per-item result"
                } else {
                    "not defined"
                };
                self.diags.push(
                    Diagnostic::error("undefined", msg, Some(self.sub_span(node, &r.raw)))
                        .label(label)
                        .maybe_hint(hint),
                );
            }
        }
    }

    /// Why a reference is wrong, if it is.
    pub(super) fn reference(&self, r: &template::Reference, scope: &Scope) -> Option<(String, Option<String>)> {
        let segs = &r.segments;
        let root = segs[0].as_str();
        let second = segs.get(1).map(String::as_str);
        if scope.items.iter().any(|(v, _)| v == root) {
            return None;
        }
        match root {
            "inputs" => {
                let name = second?;
                (!self.inputs.iter().any(|i| i == name)).then(|| {
                    (
                        format!("undefined input `{name}`"),
                        suggestion(name, self.inputs.iter().map(String::as_str))
                            .or_else(|| Some(format!("declare it under `inputs:`, e.g. `{name}: {{ type: string }}`"))),
                    )
                })
            }
            "secrets" => {
                let name = second?;
                (!self.secrets.iter().any(|i| i == name)).then(|| {
                    (
                        format!("undefined secret `{name}`"),
                        suggestion(name, self.secrets.iter().map(String::as_str))
                            .or_else(|| Some(format!("declare it under `secrets:`, e.g. `secrets: [{name}]`"))),
                    )
                })
            }
            // The environment and the inventory are only known when the run starts.
            "env" | "inventory" => None,
            "run" => field_check(second, RUN_FIELDS, "run"),
            "playbook" => field_check(second, PLAYBOOK_FIELDS, "playbook"),
            "steps" => self.step_reference(segs, scope),
            _ if r.in_block => None,
            _ => {
                let mut names: Vec<&str> = ROOTS.to_vec();
                names.extend(scope.items.iter().map(|(v, _)| v.as_str()));
                let hint = suggestion(root, names.iter().copied()).or_else(|| {
                    Some(format!(
                        "templates read `inputs.*`, `steps.<id>.outputs.*`, `secrets.*`, `env.*`, `run.*`, `playbook.*`{}",
                        if scope.items.is_empty() { String::new() } else { format!(" or `{}`", scope.items.iter().map(|(v, _)| v.as_str()).collect::<Vec<_>>().join("`, `")) }
                    ))
                });
                Some((format!("undefined name `{root}` in template"), hint))
            }
        }
    }

    pub(super) fn step_reference(&self, segs: &[String], scope: &Scope) -> Option<(String, Option<String>)> {
        let id = segs.get(1)?;
        let Some(info) = self.steps.get(id) else {
            return Some((
                format!("unknown step `{id}`"),
                suggestion(id, self.steps.keys().map(String::as_str)),
            ));
        };
        if let Some(fe) = &info.in_for_each {
            if fe != id && !scope.for_each.contains(fe) {
                return Some((
                    format!("step `{id}` runs once per item of `{fe}`; its results cannot be read outside that group"),
                    Some(format!(
                        "give the group `{fe}` an `outputs:` mapping, or read the step from inside the group"
                    )),
                ));
            }
        }
        if !scope.lenient && !self.finished_before(id, scope) {
            return Some((
                format!("step `{id}` is not guaranteed to have run before this one"),
                Some(format!("add `needs: [{id}]` (or move the step after `{id}`)")),
            ));
        }
        let field = segs.get(2)?;
        if !STEP_FIELDS.contains(&field.as_str()) {
            return Some((
                format!("steps have no `{field}`"),
                suggestion(field, STEP_FIELDS.iter().copied())
                    .or_else(|| Some("use `steps.<id>.outputs.<name>` or `steps.<id>.status`".to_owned())),
            ));
        }
        let (Some(out), "outputs") = (segs.get(3), field.as_str()) else {
            return None;
        };
        let mut known: Vec<&str> = info.declared_outputs.iter().map(String::as_str).collect();
        // A fan-out's result, read from outside it, is its declared outputs
        // (a list each) and `items` (each item and how it ended).
        if info.in_for_each.as_deref() == Some(id.as_str()) && !scope.for_each.contains(id) {
            known.push("items");
            return (!known.contains(&out.as_str())).then(|| {
                (
                    format!("step `{id}` (a `for_each`) has no output `{out}` outside its items"),
                    Some(format!(
                        "outside the fan-out it has: {} (each declared output is a list, one value per item)",
                        known.join(", ")
                    )),
                )
            });
        }
        if let Some(k) = info.uses.as_deref().and_then(|u| self.registry.get(u)) {
            known.extend(k.outputs().iter().map(|o| &*o.name));
        } else if info.uses.is_some() {
            return None; // unknown kind, already reported
        }
        (!known.contains(&out.as_str())).then(|| {
            let what = info.uses.as_deref().map_or("group".to_owned(), |u| format!("`{u}`"));
            (
                format!("step `{id}` ({what}) has no output `{out}`"),
                suggestion(out, known.iter().copied()).or_else(|| {
                    Some(if known.is_empty() {
                        "declare it in the step's `outputs:`".to_owned()
                    } else {
                        format!("its outputs are: {}", known.join(", "))
                    })
                }),
            )
        })
    }

    /// The span of `needle` inside the source text of `node`, or the node's span.
    pub(super) fn sub_span(&self, node: &Node, needle: &str) -> Span {
        let s = node.span;
        let end = (s.offset + s.len.max(1)).min(self.text.len());
        let Some(hay) = self.text.get(s.offset..end) else {
            return s;
        };
        match hay.find(needle) {
            Some(i) if !hay[..i].contains('\n') => Span {
                offset: s.offset + i,
                len: needle.len(),
                line: s.line,
                col: s.col + hay[..i].chars().count(),
            },
            _ => s,
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::validate::testkit::{HEAD, check, codes};

    #[test]
    fn a_template_reads_only_what_exists_before_its_step() {
        let text = format!(
            "{HEAD}inputs:\n  release: {{ type: string }}\nsteps:\n  - {{ id: a, uses: shell, with: {{ run: \"echo {{{{inputs.relase}}}} {{{{steps.b.outputs.stdout}}}}\" }} }}\n  - {{ id: b, uses: shell, needs: [a], with: {{ run: \"true\" }} }}\n"
        );
        let found = check(&text);
        let messages: Vec<&str> = found.iter().map(|(_, _, m)| m.as_str()).collect();
        assert_eq!(
            messages,
            [
                "undefined input `relase`",
                "step `b` is not guaranteed to have run before this one"
            ]
        );
    }

    #[test]
    fn a_declared_secret_in_a_command_text_travels_in_the_environment_so_nothing_warns() {
        let inline = format!(
            "{HEAD}secrets: [PW]\nsteps:\n  - {{ id: a, uses: shell, with: {{ run: \"login -p {{{{secrets.PW}}}}\" }} }}\n"
        );
        assert!(codes(&inline).is_empty(), "{:?}", codes(&inline));
    }
}
