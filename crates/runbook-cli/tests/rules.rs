//! The book's rules and their tests: every rule listed under "Rules, each with
//! its test" in language.md, runs.md, templates.md and server.md names at least one test,
//! and every test it names exists. A rule added without a test, or a test
//! renamed away from its rule, fails here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;
use std::path::Path;

/// Every `fn NAME(` in the workspace's Rust sources.
fn functions(dir: &Path, out: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if path.is_dir() && name != "target" && !name.starts_with('.') {
            functions(&path, out);
        } else if name.ends_with(".rs") {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            for line in text.lines() {
                let line = line.trim_start();
                let line = line.strip_prefix("async ").unwrap_or(line);
                if let Some(rest) = line.strip_prefix("fn ") {
                    out.push(rest.split(['(', '<']).next().unwrap_or("").to_owned());
                }
            }
        }
    }
}

#[test]
fn every_rule_in_the_book_names_tests_that_exist() {
    let root = support::workspace();
    let mut fns = Vec::new();
    functions(&root.join("crates"), &mut fns);
    let mut rules = 0;
    for page in ["language.md", "runs.md", "templates.md", "server.md"] {
        let text = std::fs::read_to_string(root.join("book/src").join(page)).unwrap();
        let section = text
            .split("\n## Rules, each with its test\n")
            .nth(1)
            .unwrap_or_else(|| panic!("{page} has no `## Rules, each with its test` section"));
        let section = section.split("\n## ").next().unwrap_or(section);
        for rule in section.lines().filter(|l| l.starts_with("- ")) {
            rules += 1;
            let tests = rule
                .rsplit_once("(tests: ")
                .map(|(_, t)| t.trim_end_matches(')'))
                .unwrap_or_else(|| panic!("{page}: a rule without tests: {rule}"));
            let names: Vec<&str> = tests.split(", ").map(|t| t.trim_matches('`')).collect();
            assert!(!names.is_empty(), "{page}: a rule without tests: {rule}");
            for name in names {
                assert!(
                    fns.iter().any(|f| f == name),
                    "{page}: the rule `{rule}` names test `{name}`, which does not exist"
                );
            }
        }
    }
    assert!(rules >= 30, "only {rules} rules found");
}
