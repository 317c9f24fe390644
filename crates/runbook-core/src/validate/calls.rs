//! Sub-playbook calls (`uses: playbook`): the callee exists and is valid, the
//! call's inputs are ones it declares, every required one is given, literal
//! values have the declared types; a playbook's own `outputs:`.

use super::*;
use crate::calls::{KIND, spec};

impl<'a> Check<'a> {
    /// Loads the playbook a step calls (once, by the step's pointer) and
    /// gives the names of its outputs, which the step's readers may use.
    pub(super) fn resolve_call(&mut self, step: &Node, ptr: &str) -> Vec<String> {
        if step.get("uses").and_then(Node::as_str) != Some(KIND) {
            return Vec::new();
        }
        let with = step.get("with");
        let Some(name) = with.and_then(|w| w.get("name")).and_then(Node::as_str) else {
            return Vec::new(); // the schema reports it
        };
        if !crate::library::is_valid_name(name) {
            return Vec::new(); // the schema's pattern reports it
        }
        let version = match with.and_then(|w| w.get("version")).map(|v| &v.value) {
            Some(Value::Int(v)) => match u32::try_from(*v) {
                Ok(v) if v > 0 => Some(v),
                _ => return Vec::new(),
            },
            Some(_) => return Vec::new(),
            None => None,
        };
        let found = self.callees.callee(name, version, self.registry);
        let outputs = found
            .as_ref()
            .map(|l| l.playbook.outputs.keys().cloned().collect())
            .unwrap_or_default();
        self.callee.insert(ptr.to_owned(), found);
        outputs
    }

    /// What is wrong with a call: fields that do not apply, the callee, and
    /// its inputs.
    pub(super) fn call_site(&mut self, step: &Node, ptr: &str) {
        for field in ["retry", "timeout", "idempotent", "secret_outputs", "secrets"] {
            if let Some((k, _)) = step.entry(field) {
                self.diags.push(
                    Diagnostic::error(
                        "not-for-calls",
                        format!("`{field}` does not apply to `uses: playbook`"),
                        Some(k.span),
                    )
                    .label("set on the call")
                    .hint(
                        "set it on the steps of the playbook called (or its `defaults:`); it runs each of them as \
                         declared",
                    ),
                );
            }
        }
        let Some(found) = self.callee.get(ptr).cloned() else {
            return;
        };
        let with = step.get("with");
        let name_node = with.and_then(|w| w.get("name"));
        let callee = match found {
            Ok(l) => l,
            Err(why) => {
                let (message, hint) = match why.split_once(" (hint: ") {
                    Some((m, h)) => (m.to_owned(), Some(h.trim_end_matches(')').to_owned())),
                    None => (why, None),
                };
                self.diags.push(
                    Diagnostic::error("bad-call", message, name_node.map(|n| n.span))
                        .label("the playbook called")
                        .maybe_hint(hint),
                );
                return;
            }
        };
        let pb = &callee.playbook;
        let key = spec(&pb.name, None);
        // The run resolves its secrets once, from the caller's declarations:
        // the caller says where each of the callee's comes from.
        for secret in pb.secrets.iter().map(|s| s.name()) {
            if !self.secrets.iter().any(|s| s == secret) {
                self.diags.push(
                    Diagnostic::error(
                        "undeclared-secret",
                        format!("`{key}` reads the secret `{secret}`, which this playbook does not declare"),
                        name_node.map(|n| n.span),
                    )
                    .label("the playbook called")
                    .hint(format!(
                        "declare it under `secrets:` (`{{ name: {secret}, env: VARIABLE }}` reads it from another \
                         variable)"
                    )),
                );
            }
        }
        let given = with.and_then(|w| w.get("inputs"));
        let entries = given.and_then(Node::entries).unwrap_or_default();
        for (k, value) in entries {
            let Some(declared) = pb.inputs.get(&k.name) else {
                let names: Vec<&str> = pb.inputs.keys().map(String::as_str).collect();
                self.diags.push(
                    Diagnostic::error(
                        "unknown-input",
                        format!("`{key}` declares no input `{}`", k.name),
                        Some(k.span),
                    )
                    .label("not an input of the playbook called")
                    .maybe_hint(suggestion(&k.name, names.iter().copied()).or_else(|| {
                        Some(if names.is_empty() {
                            format!("`{key}` takes no inputs")
                        } else {
                            format!("its inputs are: {}", names.join(", "))
                        })
                    })),
                );
                continue;
            };
            // A rendered value is checked when the step starts.
            if value.as_str().is_some_and(template::is_template) {
                continue;
            }
            if let Err(e) = crate::inputs::check(&k.name, declared, &value.to_json()) {
                self.diags.push(
                    Diagnostic::error(
                        "bad-input",
                        format!("`{key}` input `{}`: {}", k.name, e.message),
                        Some(value.span),
                    )
                    .label("the value given")
                    .maybe_hint(e.hint),
                );
            }
        }
        let missing: Vec<&str> = pb
            .inputs
            .iter()
            .filter(|(n, spec)| spec.is_required() && !entries.iter().any(|(k, _)| &k.name == *n))
            .map(|(n, _)| n.as_str())
            .collect();
        if !missing.is_empty() {
            let span = given.or(name_node).map(|n| n.span);
            let list = missing.iter().map(|m| format!("`{m}`")).collect::<Vec<_>>().join(", ");
            self.diags.push(
                Diagnostic::error("missing-input", format!("`{key}` needs the input(s) {list}"), span)
                    .label("not given")
                    .hint(format!(
                        "give them under `with: {{ inputs: {{ {}: ... }} }}`",
                        missing.first().copied().unwrap_or("name")
                    )),
            );
        }
    }

    /// A playbook's `outputs:`: templates over its steps, read when they
    /// have all ended.
    pub(super) fn playbook_outputs(&mut self) {
        let Some(entries) = self.root.get("outputs").and_then(Node::entries) else {
            return;
        };
        let scope = Scope {
            lenient: true,
            ..Scope::default()
        };
        for (_, value) in entries {
            self.template_field(value, &scope, false);
        }
    }

    /// Every playbook this one calls, directly or not, by call key.
    pub(super) fn calls(&self) -> IndexMap<String, Arc<Loaded>> {
        let mut out = IndexMap::new();
        for (ptr, found) in &self.callee {
            let (Ok(callee), Some(step)) = (found, self.root.pointer(ptr)) else {
                continue;
            };
            let with = step.get("with");
            let name = with
                .and_then(|w| w.get("name"))
                .and_then(Node::as_str)
                .unwrap_or_default();
            let version = match with.and_then(|w| w.get("version")).map(|v| &v.value) {
                Some(Value::Int(v)) => u32::try_from(*v).ok(),
                _ => None,
            };
            out.insert(spec(name, version), callee.clone());
            for (k, v) in &callee.calls {
                out.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
        out.sort_keys();
        out
    }
}
