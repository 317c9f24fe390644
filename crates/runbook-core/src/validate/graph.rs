//! Step ids, `needs`, cycles and the order steps are guaranteed to run in:
//! the lists of steps (steps, handlers, groups, for_each) walked with their
//! scopes.

use super::*;

/// A small fixed-size bit set: which siblings come before a step.
#[derive(Debug, Clone, Default)]
pub(super) struct BitSet(Vec<u64>);

impl BitSet {
    fn new(n: usize) -> Self {
        BitSet(vec![0; n.div_ceil(64)])
    }
    fn insert(&mut self, i: usize) {
        if let Some(w) = self.0.get_mut(i / 64) {
            *w |= 1 << (i % 64);
        }
    }
    fn contains(&self, i: usize) -> bool {
        self.0.get(i / 64).is_some_and(|w| w & (1 << (i % 64)) != 0)
    }
    fn union(&mut self, other: &BitSet) {
        for (a, b) in self.0.iter_mut().zip(&other.0) {
            *a |= b;
        }
    }
}

/// One list of sibling steps and where it is.
pub(super) struct List<'n> {
    pub(super) pointer: String,
    pub(super) items: &'n [Node],
    /// `undo: {step}` written as one mapping: the item's pointer is the list's.
    pub(super) single: bool,
}

impl List<'_> {
    fn item_pointer(&self, i: usize) -> String {
        if self.single {
            self.pointer.clone()
        } else {
            format!("{}/{i}", self.pointer)
        }
    }
}

impl<'a> Check<'a> {
    /// Records every step id (with duplicates reported) and every list of
    /// siblings, in source order, before references are checked.
    pub(super) fn collect_ids(&mut self) {
        let root = self.root;
        for key in ["steps", "on_failure", "finally"] {
            if let Some(items) = root.get(key).and_then(Node::items) {
                self.collect_list(&format!("/{key}"), items, false, None, None);
            }
        }
    }

    pub(super) fn collect_list(
        &mut self,
        ptr: &str,
        items: &'a [Node],
        single: bool,
        in_for_each: Option<String>,
        parent: Option<String>,
    ) {
        let list = self.before.len();
        self.before.push(Vec::new());
        self.list_ids.insert(ptr.to_owned(), list);
        for (i, step) in items.iter().enumerate() {
            let sp = if single { ptr.to_owned() } else { format!("{ptr}/{i}") };
            let id = step.get("id").and_then(Node::as_str).map(str::to_owned);
            let for_each = step.get("for_each").is_some();
            let inner = if for_each {
                id.clone().or_else(|| in_for_each.clone())
            } else {
                in_for_each.clone()
            };
            if let Some(id) = &id {
                if let Some(prev) = self.steps.get(id) {
                    let line = self
                        .root
                        .pointer(&prev.pointer)
                        .and_then(|n| n.get("id"))
                        .map_or(0, |n| n.span.line);
                    let span = step.get("id").map(|n| n.span);
                    self.diags.push(
                        Diagnostic::error("duplicate-id", format!("duplicate step id `{id}`"), span)
                            .label("used again here")
                            .hint(format!(
                                "ids are unique across the playbook; `{id}` is first used on line {line}"
                            )),
                    );
                } else {
                    let mut declared_outputs: Vec<String> = step
                        .get("outputs")
                        .and_then(Node::entries)
                        .map(|m| m.iter().map(|(k, _)| k.name.clone()).collect())
                        .unwrap_or_default();
                    declared_outputs.extend(self.resolve_call(step, &sp));
                    let info = StepInfo {
                        pointer: sp.clone(),
                        list,
                        index: i,
                        parent: parent.clone(),
                        uses: step.get("uses").and_then(Node::as_str).map(str::to_owned),
                        declared_outputs,
                        in_for_each: if for_each {
                            Some(id.clone())
                        } else {
                            in_for_each.clone()
                        },
                    };
                    self.steps.insert(id.clone(), info);
                }
            }
            if let Some(children) = step.get("steps").and_then(Node::items) {
                self.collect_list(&format!("{sp}/steps"), children, false, inner.clone(), id.clone());
            }
            if let Some(handlers) = step.get("on_failure").and_then(Node::items) {
                self.collect_list(&format!("{sp}/on_failure"), handlers, false, inner.clone(), id.clone());
            }
            if let Some(u) = step.get("undo") {
                let (items, single) = match u.items() {
                    Some(items) => (items, false),
                    None => (std::slice::from_ref(u), true),
                };
                if single && u.entries().is_none() {
                    continue;
                }
                self.collect_list(&format!("{sp}/undo"), items, single, inner.clone(), id.clone());
            }
        }
    }

    /// Checks one list of sibling steps: ordering, cycles, then each step.
    pub(super) fn list(&mut self, list: &List<'_>, outer: &Scope, ids_required: bool) {
        let ids: Vec<Option<&str>> = list.items.iter().map(|s| s.get("id").and_then(Node::as_str)).collect();
        let sibling_ids: Vec<&str> = ids.iter().flatten().copied().collect();
        // Edges: i depends on j.
        let mut graph: DiGraphMap<usize, ()> = DiGraphMap::new();
        for (i, step) in list.items.iter().enumerate() {
            graph.add_node(i);
            if ids_required && ids[i].is_none() && step.entries().is_some() {
                self.diags.push(
                    Diagnostic::error(
                        "missing-id",
                        "this step has no `id`",
                        step.entries().and_then(|m| m.first()).map(|(k, _)| k.span),
                    )
                    .label("add `id:` to this step")
                    .hint("every step needs an id for `needs`, templates, logs and resume, e.g. `id: deploy`"),
                );
            }
            match step.get("needs") {
                Some(needs) => {
                    for n in needs.items().unwrap_or_default() {
                        let Some(name) = n.as_str() else { continue };
                        match ids.iter().position(|x| *x == Some(name)) {
                            Some(j) => {
                                graph.add_edge(i, j, ());
                            }
                            None => {
                                let (msg, hint) = if self.steps.contains_key(name) {
                                    (
                                        format!("`needs` names `{name}`, which is not in the same list of steps"),
                                        Some("`needs` orders steps of one list; to wait for a step elsewhere, make the enclosing group need it".to_owned()),
                                    )
                                } else {
                                    (
                                        format!("`needs` names an unknown step `{name}`"),
                                        suggestion(name, sibling_ids.iter().copied()),
                                    )
                                };
                                self.diags.push(
                                    Diagnostic::error("unknown-need", msg, Some(n.span))
                                        .label("no such step here")
                                        .maybe_hint(hint),
                                );
                            }
                        }
                    }
                }
                None if i > 0 => {
                    graph.add_edge(i, i - 1, ());
                }
                None => {}
            }
        }
        let mut cyclic = HashSet::new();
        for scc in petgraph::algo::tarjan_scc(&graph) {
            let self_loop = scc.len() == 1 && graph.contains_edge(scc[0], scc[0]);
            if scc.len() > 1 || self_loop {
                let mut members: Vec<usize> = scc.clone();
                members.sort_unstable();
                let names: Vec<String> = members
                    .iter()
                    .map(|&i| format!("`{}`", ids[i].unwrap_or("?")))
                    .collect();
                let first = members[0];
                let span = list.items[first].get("needs").map(|n| n.span);
                self.diags.push(
                    Diagnostic::error(
                        "cycle",
                        format!("`needs` makes a cycle: {} -> {}", names.join(" -> "), names[0]),
                        span,
                    )
                    .label("part of the cycle")
                    .hint("remove one of these `needs` so the steps can be ordered"),
                );
                cyclic.extend(members);
            }
        }
        // What each sibling is guaranteed to come after: reachability over the
        // `needs` graph, as bit sets built in topological order (linear in the
        // number of edges times n/64, so a 10,000-step chain stays fast).
        let n = list.items.len();
        let mut before: Vec<BitSet> = vec![BitSet::new(n); n];
        if cyclic.is_empty() {
            if let Ok(order) = petgraph::algo::toposort(&graph, None) {
                // Edges point from a step to what it waits for, so the reverse of
                // a topological order visits what is waited for first.
                for &i in order.iter().rev() {
                    let mut b = BitSet::new(n);
                    for j in graph.neighbors(i) {
                        b.insert(j);
                        b.union(&before[j]);
                    }
                    before[i] = b;
                }
            }
        }
        let lid = self.list_ids.get(&list.pointer).copied();
        if let Some(slot) = lid.and_then(|l| self.before.get_mut(l)) {
            *slot = before;
        }
        for (i, step) in list.items.iter().enumerate() {
            let mut scope = outer.clone();
            if let Some(list) = lid {
                scope.levels.insert(
                    0,
                    Level {
                        list,
                        index: i,
                        include_self: false,
                    },
                );
            }
            self.step(step, &list.item_pointer(i), &scope);
        }
    }

    pub(super) fn step(&mut self, step: &Node, ptr: &str, scope: &Scope) {
        let Some(entries) = step.entries() else { return };
        let head = entries.first().map(|(k, _)| k.span);
        let id = step.get("id").and_then(Node::as_str).map(str::to_owned);
        let uses = step.get("uses");
        let group = step.get("steps");
        match (uses, group) {
            (None, None) => self.diags.push(
                Diagnostic::error(
                    "no-action",
                    "a step needs `uses` (a step kind) or `steps` (a group)",
                    head,
                )
                .label("this step does nothing")
                .hint("add e.g. `uses: shell` with `with: { run: ... }`"),
            ),
            (Some(u), Some(_)) => self.diags.push(
                Diagnostic::error(
                    "uses-and-steps",
                    "a step has either `uses` or `steps`, not both",
                    Some(u.span),
                )
                .label("`uses` here")
                .hint("move the call into the group as its own step"),
            ),
            _ => {}
        }
        if step.get("for_each").is_none() {
            for key in ["as", "concurrency", "max_failures"] {
                if let Some((k, _)) = step.entry(key) {
                    self.diags.push(
                        Diagnostic::error(
                            "needs-for-each",
                            format!("`{key}` only applies with `for_each`"),
                            Some(k.span),
                        )
                        .label("no `for_each` on this step")
                        .hint(format!("add `for_each:` or remove `{key}`")),
                    );
                }
            }
        }
        let calls_playbook = step.get("uses").and_then(Node::as_str) == Some(crate::calls::KIND);
        if group.is_none() && !calls_playbook {
            if let Some((k, _)) = step.entry("resume") {
                self.diags.push(
                    Diagnostic::error(
                        "resume-on-call",
                        "`resume` applies to groups (`steps:`) and called playbooks",
                        Some(k.span),
                    )
                    .label("on a call")
                    .hint("a call that failed always runs again on resume; remove `resume`"),
                );
            }
        }
        if let (Some((k, _)), Some(_)) = (step.entry("secret_outputs"), step.get("for_each")) {
            self.diags.push(
                Diagnostic::error(
                    "secret-outputs-fan-out",
                    "`secret_outputs` applies to a single call, not to a `for_each`",
                    Some(k.span),
                )
                .label("on a fan-out")
                .hint("produce the secret in a step of its own before the fan-out, and read it there"),
            );
        }
        if group.is_some() {
            if let Some((k, _)) = step.entry("with") {
                self.diags.push(
                    Diagnostic::error(
                        "with-on-group",
                        "`with` applies to `uses`; a group has no parameters",
                        Some(k.span),
                    )
                    .label("on a group"),
                );
            }
            // A group is not retried or timed as a unit: say so rather than
            // accept and ignore it.
            for (key, hint) in [
                (
                    "timeout",
                    "put `timeout` on the steps inside, or set `defaults: { timeout: ... }` for all of them",
                ),
                (
                    "retry",
                    "put `retry` on the steps inside that may fail; to run the whole group again, use `resume: restart`",
                ),
                (
                    "secret_outputs",
                    "put `secret_outputs` on the call inside that produces the value",
                ),
            ] {
                if let Some((k, _)) = step.entry(key) {
                    self.diags.push(
                        Diagnostic::error(
                            "group-policy",
                            format!("`{key}` applies to calls (`uses`), not to a group (`steps:`)"),
                            Some(k.span),
                        )
                        .label("on a group")
                        .hint(hint),
                    );
                }
            }
        }

        // Templates that run before the step, with the step's own scope.
        if let Some(f) = step.get("for_each") {
            // A template, or a list whose items may be templates.
            self.strings(f, scope, false);
        }
        let mut inner = scope.clone();
        if step.get("for_each").is_some() {
            let var = step.get("as").and_then(Node::as_str).unwrap_or("item").to_owned();
            // `batch`: the items started with this one (a ramp's batch).
            inner.items.push(("batch".to_owned(), id.clone().unwrap_or_default()));
            inner.items.push((var, id.clone().unwrap_or_default()));
            if let Some(id) = &id {
                inner.for_each.push(id.clone());
            }
        }
        for key in ["when", "concurrency", "max_failures"] {
            if let Some(n) = step.get(key) {
                self.strings(n, &inner, false);
            }
        }
        if let Some(c) = step.get("concurrency") {
            self.count_or_percent(c, "concurrency");
        }
        if let Some(c) = step.get("max_failures") {
            self.count_or_percent(c, "max_failures");
        }
        if let Some(t) = step.get("timeout") {
            self.duration(t);
            self.template_field(t, &inner, false);
        }
        if let Some(r) = step.get("retry") {
            let own = Self::after_self(&inner);
            self.retry(r, &own);
        }

        if let Some(kind_node) = uses {
            if let Some(kind) = kind_node.as_str() {
                self.call(step, ptr, kind, kind_node, &inner);
            }
        }
        if let Some(children) = group.and_then(Node::items) {
            if children.is_empty() {
                self.diags.push(
                    Diagnostic::error(
                        "empty-group",
                        "a group needs at least one step",
                        Some(group.map_or(Span::default(), |g| g.span)),
                    )
                    .label("empty"),
                );
            }
            self.list(
                &List {
                    pointer: format!("{ptr}/steps"),
                    items: children,
                    single: false,
                },
                &inner,
                true,
            );
        }

        let after = Self::after_self(&inner);
        if let Some(outputs) = step.get("outputs") {
            self.strings(outputs, &after, false);
        }
        if let Some(items) = step.get("on_failure").and_then(Node::items) {
            let handlers = Scope {
                lenient: true,
                ..after.clone()
            };
            let list = List {
                pointer: format!("{ptr}/on_failure"),
                items,
                single: false,
            };
            self.list(&list, &handlers, false);
        }
        if let Some(u) = step.get("undo") {
            let (items, single) = match u.items() {
                Some(items) => (items, false),
                None => (std::slice::from_ref(u), true),
            };
            let list = List {
                pointer: format!("{ptr}/undo"),
                items,
                single,
            };
            self.list(&list, &after, false);
        }
    }

    /// The scope of what runs after the step itself finished (its handlers,
    /// `retry.until`, `outputs:`): the step and what is inside it are done.
    pub(super) fn after_self(scope: &Scope) -> Scope {
        let mut s = scope.clone();
        if let Some(own) = s.levels.first_mut() {
            own.include_self = true;
        }
        s
    }

    /// True if step `id` is guaranteed to have finished where the reader stands:
    /// at some level of the reader's position, the target (or the group holding
    /// it) is a sibling that the reader's position comes after.
    pub(super) fn finished_before(&self, id: &str, scope: &Scope) -> bool {
        let mut chain = Vec::new();
        let mut cur = self.steps.get(id);
        while let Some(info) = cur {
            chain.push((info.list, info.index));
            cur = info.parent.as_deref().and_then(|p| self.steps.get(p));
            if chain.len() > MAX_NESTING {
                break;
            }
        }
        for level in &scope.levels {
            if let Some(&(_, index)) = chain.iter().find(|(l, _)| *l == level.list) {
                return (level.include_self && index == level.index)
                    || self
                        .before
                        .get(level.list)
                        .and_then(|b| b.get(level.index))
                        .is_some_and(|b| b.contains(index));
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::BitSet;
    use crate::validate::testkit::{HEAD, codes};

    #[test]
    fn a_bit_set_holds_what_was_put_in_and_what_it_joined() {
        let mut a = BitSet::new(130);
        a.insert(0);
        a.insert(129);
        let mut b = BitSet::new(130);
        b.insert(64);
        a.union(&b);
        assert!(a.contains(0) && a.contains(64) && a.contains(129));
        assert!(!a.contains(1) && !a.contains(63) && !a.contains(128));
    }

    #[test]
    fn needs_must_name_an_earlier_step_of_the_same_list_and_never_loop() {
        let step = |id: &str, needs: &str| {
            format!("  - {{ id: {id}, uses: shell, needs: [{needs}], with: {{ run: \"true\" }} }}\n")
        };
        let cycle = format!("{HEAD}steps:\n{}{}", step("a", "b"), step("b", "a"));
        assert!(codes(&cycle).contains(&"cycle"), "{:?}", codes(&cycle));
        let unknown = format!("{HEAD}steps:\n{}", step("a", "nowhere"));
        assert_eq!(codes(&unknown), ["unknown-need"]);
        let fine = format!(
            "{HEAD}steps:\n  - {{ id: a, uses: shell, with: {{ run: \"true\" }} }}\n{}",
            step("b", "a")
        );
        assert!(codes(&fine).is_empty(), "{:?}", codes(&fine));
    }
}
