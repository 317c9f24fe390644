//! Properties of loading: arbitrary text and mutated playbooks never panic the
//! loader, the validator or the planner; they either load or give diagnostics
//! that point inside the text.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use indexmap::IndexMap;
use proptest::prelude::*;
use runbook_core::diag::Source;
use runbook_core::kind::Registry;
use runbook_core::kind::test_kit::Cmd;
use runbook_core::validate::{Expected, load};

const SEED: &str = r#"apiVersion: runbook/v1
name: seed
version: 1
inputs:
  hosts: { type: list, default: [a, b] }
  n: { type: integer, default: 2, min: 1 }
steps:
  - id: one
    uses: shell
    with: { run: "echo {{inputs.n}}" }
  - id: fan
    for_each: "{{inputs.hosts}}"
    as: h
    concurrency: "50%"
    steps:
      - { id: x, uses: shell, with: { run: "echo {{h}} {{steps.one.outputs.stdout}}" } }
    on_failure:
      - { uses: shell, with: { run: "echo failed {{h}}" } }
  - id: last
    needs: [one]
    when: '{{gt inputs.n 1}}'
    uses: shell
    with: { run: "echo 'done {{inputs.n}}'" }
finally:
  - { uses: shell, with: { run: "echo bye" } }
"#;

fn check(text: &str) {
    let registry = Registry::new().with(Cmd);
    let source = Source::new("p.yaml", text.to_owned());
    match load(source, &Expected::default(), &registry) {
        Ok(loaded) => {
            let inputs = runbook_core::inputs::resolve(&loaded.playbook, &IndexMap::new()).unwrap_or_default();
            let _ = runbook_engine::plan::plan(&loaded, &inputs, &registry, &Default::default());
            let _ = runbook_engine::graph::render(&loaded.playbook, runbook_engine::graph::Format::Dot);
        }
        Err(invalid) => {
            assert!(
                !invalid.diagnostics.is_empty(),
                "an invalid playbook has at least one diagnostic"
            );
            for d in &invalid.diagnostics {
                if let Some(s) = d.span {
                    assert!(s.offset + s.len <= text.len(), "span {s:?} outside the text for {d:?}");
                    assert!(text.is_char_boundary(s.offset), "span not on a char boundary: {d:?}");
                    assert!(s.line >= 1 && s.col >= 1);
                }
            }
        }
    }
}

#[test]
fn the_seed_is_valid() {
    let registry = Registry::new().with(Cmd);
    load(Source::new("p.yaml", SEED), &Expected::default(), &registry).expect("seed loads");
}

#[derive(Debug, Clone)]
enum Mutation {
    Delete(usize, usize),
    Insert(usize, String),
    DuplicateLine(usize),
    SwapLines(usize, usize),
    Replace(usize, char),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let tokens = prop_oneof![
        Just(":".to_owned()),
        Just("- ".to_owned()),
        Just("{".to_owned()),
        Just("}".to_owned()),
        Just("[".to_owned()),
        Just("]".to_owned()),
        Just("\"".to_owned()),
        Just("'".to_owned()),
        Just("{{".to_owned()),
        Just("}}".to_owned()),
        Just("\n".to_owned()),
        Just("  ".to_owned()),
        Just("&a ".to_owned()),
        Just("*a".to_owned()),
        Just("needs: [fan]".to_owned()),
        Just("é".to_owned()),
        Just("\t".to_owned()),
        Just("!!str ".to_owned()),
        Just("---\n".to_owned()),
        Just("~".to_owned()),
    ];
    prop_oneof![
        (0..SEED.len(), 0..40usize).prop_map(|(a, n)| Mutation::Delete(a, n)),
        (0..SEED.len(), tokens).prop_map(|(a, t)| Mutation::Insert(a, t)),
        (0..40usize).prop_map(Mutation::DuplicateLine),
        (0..40usize, 0..40usize).prop_map(|(a, b)| Mutation::SwapLines(a, b)),
        (0..SEED.len(), any::<char>()).prop_map(|(a, c)| Mutation::Replace(a, c)),
    ]
}

fn floor(s: &str, mut i: usize) -> usize {
    i = i.min(s.len());
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn apply(text: &str, m: &Mutation) -> String {
    let mut s = text.to_owned();
    match m {
        Mutation::Delete(a, n) => {
            let a = floor(&s, *a);
            let b = floor(&s, a + n);
            s.replace_range(a..b, "");
        }
        Mutation::Insert(a, t) => {
            let a = floor(&s, *a);
            s.insert_str(a, t);
        }
        Mutation::Replace(a, c) => {
            let a = floor(&s, *a);
            if let Some(old) = s[a..].chars().next() {
                s.replace_range(a..a + old.len_utf8(), &c.to_string());
            }
        }
        Mutation::DuplicateLine(i) => {
            let mut lines: Vec<&str> = s.lines().collect();
            if !lines.is_empty() {
                let i = i % lines.len();
                lines.insert(i, lines[i]);
            }
            s = lines.join("\n");
        }
        Mutation::SwapLines(a, b) => {
            let mut lines: Vec<&str> = s.lines().collect();
            if !lines.is_empty() {
                let (a, b) = (a % lines.len(), b % lines.len());
                lines.swap(a, b);
            }
            s = lines.join("\n");
        }
    }
    s
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,300}") {
        check(&text);
    }

    #[test]
    fn yaml_shaped_text_never_panics(text in "([a-z_]{1,8}: ?(\\{|\\[|\"|'|[a-z0-9{}]{0,6}|- )*\n {0,6}){0,12}") {
        check(&text);
    }

    #[test]
    fn mutated_playbooks_never_panic(ms in proptest::collection::vec(mutation(), 1..6)) {
        let mut text = SEED.to_owned();
        for m in &ms {
            text = apply(&text, m);
        }
        check(&text);
    }
}
