//! The corpus of broken playbooks: each file holds one mistake (one holds five)
//! and names, on its first line, the diagnostic codes it must produce. Every one
//! must exit 2 with those diagnostics, each located, and run nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;
use support::{Run, workspace};

fn corpus() -> Vec<std::path::PathBuf> {
    let dir = workspace().join("tests/corpus/broken");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("corpus folder")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

#[test]
fn corpus_is_large_enough() {
    assert!(corpus().len() >= 30, "the issue asks for at least 30 broken playbooks");
}

#[test]
fn every_broken_playbook_gets_its_diagnostics_and_exit_2() {
    let mut failures = Vec::new();
    for path in corpus() {
        let rel = path.strip_prefix(workspace()).expect("inside").display().to_string();
        let text = std::fs::read_to_string(&path).expect("read");
        let expected: Vec<&str> = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# expect: "))
            .expect("first line names the expected codes")
            .split(',')
            .map(str::trim)
            .collect();
        let out = Run::new().cwd(workspace()).args(["validate", &rel]).run();
        if out.code != 2 {
            failures.push(format!("{rel}: exit {} (expected 2)", out.code));
        }
        for code in &expected {
            if !out.stderr.lines().any(|l| l.trim() == *code) {
                failures.push(format!("{rel}: no `{code}` diagnostic in\n{}", out.stderr));
            }
        }
        // Every diagnostic points at a location: the rendered box names file:line:col.
        let boxes = out.stderr.matches(&format!("╭─[{rel}:")).count();
        let headlines = out.stderr.lines().filter(|l| l.trim_start().starts_with('×')).count();
        if boxes != headlines {
            failures.push(format!(
                "{rel}: {headlines} diagnostics but {boxes} locations\n{}",
                out.stderr
            ));
        }
        if expected.len() > 1 && headlines < expected.len() {
            failures.push(format!(
                "{rel}: expected at least {} diagnostics, got {headlines}",
                expected.len()
            ));
        }
        let name = path.file_stem().expect("stem").to_string_lossy().into_owned();
        insta::assert_snapshot!(name, out.stderr);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// A playbook with thousands of mistakes gets the first ones and a count, not
/// hundreds of thousands of lines; a diagnostic on a very long line shows the
/// part around its span, with the true line and column.
#[test]
fn many_diagnostics_are_capped_and_long_lines_clipped() {
    let mut yaml = String::from("apiVersion: runbook/v1\nname: t\nversion: 1\nsteps:\n");
    yaml.push_str(&format!(
        "  - {{ id: long, uses: shell, with: {{ run: \"{}\", bogus: 1 }} }}\n",
        "x".repeat(20_000)
    ));
    for i in 0..3000 {
        yaml.push_str(&format!(
            "  - {{ id: s{i}, uses: shelll, with: {{ run: \"true\" }} }}\n"
        ));
    }
    let out = support::Run::new().playbook("t", &yaml).exec(["validate", "t"]).exit(2);
    assert!(
        out.stderr.contains("t/v1.yaml:5:20047: error: unknown key `bogus`"),
        "{}",
        &out.stderr[..2000.min(out.stderr.len())]
    );
    assert!(
        out.stderr
            .contains("(a line of 20058 characters, shown around the error)")
    );
    assert!(
        out.stderr
            .contains("2951 more diagnostics in playbooks/t/v1.yaml, not shown"),
        "{}",
        out.stderr.lines().last().unwrap_or("")
    );
    assert!(
        out.stderr.lines().count() < 1000,
        "{} lines",
        out.stderr.lines().count()
    );
    assert!(
        out.stderr.lines().all(|l| l.chars().count() < 400),
        "no line is printed whole"
    );
}
