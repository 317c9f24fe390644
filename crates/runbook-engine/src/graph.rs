//! `graph`: the step DAG as Graphviz DOT or Mermaid, for docs and reviews.
//!
//! Groups become clusters (subgraphs); a `for_each` group is labelled with what
//! it iterates over. Edges follow the ordering rules (`needs`, else the step
//! before); an edge into or out of a group attaches to its first or last steps.

use crate::order::dependencies;
use runbook_core::model::{ForEach, Playbook, Step};
use std::fmt::Write;

/// The output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Graphviz DOT.
    Dot,
    /// Mermaid flowchart.
    Mermaid,
}

struct Node {
    key: String,
    label: String,
}

struct Cluster {
    key: String,
    label: String,
    nodes: Vec<Node>,
    clusters: Vec<Cluster>,
}

/// Renders the playbook's step graph.
pub fn render(playbook: &Playbook, format: Format) -> String {
    let mut edges = Vec::new();
    let root = cluster(&playbook.steps, "", &playbook.name, &mut edges);
    let mut out = String::new();
    match format {
        Format::Dot => {
            let _ = writeln!(
                out,
                "digraph \"{}\" {{\n  rankdir=TB;\n  node [shape=box, style=rounded];",
                esc(&playbook.name)
            );
            dot_cluster(&root, &mut out, 1, true);
            for (a, b) in &edges {
                let _ = writeln!(out, "  \"{}\" -> \"{}\";", esc(a), esc(b));
            }
            out.push_str("}\n");
        }
        Format::Mermaid => {
            out.push_str("flowchart TD\n");
            mermaid_cluster(&root, &mut out, 1, true);
            for (a, b) in &edges {
                let _ = writeln!(out, "  {} --> {}", mid(a), mid(b));
            }
        }
    }
    out
}

fn key(prefix: &str, step: &Step, i: usize) -> String {
    let id = step.id.clone().unwrap_or_else(|| format!("#{}", i + 1));
    if prefix.is_empty() {
        id
    } else {
        format!("{prefix}.{id}")
    }
}

/// Builds the cluster for a list, adding edges; returns it.
fn cluster(steps: &[Step], prefix: &str, label: &str, edges: &mut Vec<(String, String)>) -> Cluster {
    let mut c = Cluster {
        key: if prefix.is_empty() {
            "root".to_owned()
        } else {
            prefix.to_owned()
        },
        label: label.to_owned(),
        nodes: Vec::new(),
        clusters: Vec::new(),
    };
    let deps = dependencies(steps);
    for (i, step) in steps.iter().enumerate() {
        let k = key(prefix, step, i);
        if let Some(children) = &step.steps {
            let label = match &step.for_each {
                Some(ForEach::Template(t)) => format!(
                    "{} (for each {} in {t})",
                    step.display_name(),
                    step.as_.as_deref().unwrap_or("item")
                ),
                Some(ForEach::List(l)) => format!("{} (for each of {} items)", step.display_name(), l.len()),
                None => step.display_name().to_owned(),
            };
            c.clusters.push(cluster(children, &k, &label, edges));
        } else {
            let kind = step.uses.as_deref().unwrap_or("?");
            let mut label = format!("{}\\n{kind}", step.display_name());
            if step.for_each.is_some() {
                label.push_str(&format!(" (for each {})", step.as_.as_deref().unwrap_or("item")));
            }
            c.nodes.push(Node { key: k.clone(), label });
        }
        for &j in &deps[i] {
            for from in exits(&steps[j], &key(prefix, &steps[j], j)) {
                for to in entries(step, &k) {
                    edges.push((from.clone(), to));
                }
            }
        }
    }
    c
}

/// The nodes an edge into this step attaches to: a group's first steps.
fn entries(step: &Step, k: &str) -> Vec<String> {
    ends(step, k, &|deps, i| deps[i].is_empty())
}

/// The nodes an edge out of this step leaves from: a group's last steps.
fn exits(step: &Step, k: &str) -> Vec<String> {
    ends(step, k, &|deps, i| !deps.iter().any(|d| d.contains(&i)))
}

/// The leaf nodes at one end of a step: itself, or, for a group, recursively
/// the children that `is_end` picks.
fn ends(step: &Step, k: &str, is_end: &dyn Fn(&[Vec<usize>], usize) -> bool) -> Vec<String> {
    match &step.steps {
        Some(children) => {
            let deps = dependencies(children);
            children
                .iter()
                .enumerate()
                .filter(|(i, _)| is_end(&deps, *i))
                .flat_map(|(i, c)| ends(c, &key(k, c, i), is_end))
                .collect()
        }
        None => vec![k.to_owned()],
    }
}

fn esc(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace("\\\\n", "\\n")
}

fn mid(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' })
        .collect()
}

fn dot_cluster(c: &Cluster, out: &mut String, depth: usize, root: bool) {
    let pad = "  ".repeat(depth);
    if !root {
        let _ = writeln!(
            out,
            "{pad}subgraph \"cluster_{}\" {{\n{pad}  label=\"{}\";",
            esc(&c.key),
            esc(&c.label)
        );
    }
    let inner = if root { depth } else { depth + 1 };
    let ipad = "  ".repeat(inner);
    for n in &c.nodes {
        let _ = writeln!(out, "{ipad}\"{}\" [label=\"{}\"];", esc(&n.key), esc(&n.label));
    }
    for sub in &c.clusters {
        dot_cluster(sub, out, inner, false);
    }
    if !root {
        let _ = writeln!(out, "{pad}}}");
    }
}

fn mermaid_cluster(c: &Cluster, out: &mut String, depth: usize, root: bool) {
    let pad = "  ".repeat(depth);
    if !root {
        let _ = writeln!(out, "{pad}subgraph {}[\"{}\"]", mid(&c.key), c.label.replace('"', "'"));
    }
    let inner = if root { depth } else { depth + 1 };
    let ipad = "  ".repeat(inner);
    for n in &c.nodes {
        let _ = writeln!(
            out,
            "{ipad}{}[\"{}\"]",
            mid(&n.key),
            n.label.replace("\\n", "<br/>").replace('"', "'")
        );
    }
    for sub in &c.clusters {
        mermaid_cluster(sub, out, inner, false);
    }
    if !root {
        let _ = writeln!(out, "{pad}end");
    }
}

/// The fill of a node in `state` (a step row's state, or none yet).
fn fill(state: Option<&str>) -> &'static str {
    match state {
        Some("succeeded") => "#dafbe1",
        Some("failed" | "refused") => "#ffebe9",
        Some("running" | "retrying") => "#ddf4ff",
        Some("waiting") => "#fff8c5",
        Some("interrupted" | "undone") => "#fbefff",
        Some("skipped") => "#f6f8fa",
        _ => "#ffffff",
    }
}

/// The playbook's top-level step DAG as SVG, each step a box in the column
/// of its stage (steps of one column may run at once), coloured by its
/// state in `states` (step path to state, e.g. from a run's journal); a
/// group or fan-out is one box, its state the group's. Edges follow the
/// ordering rules (`needs`, else the step before). Every text is escaped.
pub fn svg(playbook: &Playbook, states: &std::collections::HashMap<String, String>) -> String {
    let steps = &playbook.steps;
    let deps = dependencies(steps);
    let stage = crate::order::stages(&deps);
    let (w, h, col_gap, row_gap, pad) = (180u64, 34u64, 56u64, 12u64, 10u64);
    // Each step's place: its column (stage) and its row within it.
    let mut rows_in = std::collections::HashMap::<usize, u64>::new();
    let place: Vec<(u64, u64)> = stage
        .iter()
        .map(|&st| {
            let row = rows_in.entry(st).or_default();
            let at = (st.saturating_sub(1) as u64, *row);
            *row += 1;
            at
        })
        .collect();
    let columns = stage.iter().copied().max().unwrap_or(0) as u64;
    let tallest = rows_in.values().copied().max().unwrap_or(0);
    let width = pad * 2 + columns * w + columns.saturating_sub(1) * col_gap;
    let height = pad * 2 + tallest * h + tallest.saturating_sub(1) * row_gap;
    let xy = |i: usize| {
        let (c, r) = place[i];
        (pad + c * (w + col_gap), pad + r * (h + row_gap))
    };
    let mut out = String::new();
    let _ = write!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" class="dag" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="system-ui, sans-serif" font-size="12" role="img" aria-label="the steps of {}">"#,
        runbook_report::xml(&playbook.name)
    );
    for (i, d) in deps.iter().enumerate() {
        let (x2, y2) = xy(i);
        for &j in d {
            let (x1, y1) = xy(j);
            let (sx, sy, ex, ey) = (x1 + w, y1 + h / 2, x2, y2 + h / 2);
            let mid = (sx + ex) / 2;
            let _ = write!(
                out,
                r##"<path d="M{sx},{sy} C{mid},{sy} {mid},{ey} {ex},{ey}" fill="none" stroke="#8c959f" stroke-width="1.2"/>"##
            );
        }
    }
    for (i, s) in steps.iter().enumerate() {
        let (x, y) = xy(i);
        let id = key("", s, i);
        let state = states.get(&id).map(String::as_str);
        let what = match (&s.uses, &s.for_each, s.children().len()) {
            (Some(u), None, _) => u.clone(),
            (Some(u), Some(_), _) => format!("{u}, for each"),
            (None, Some(_), n) => format!("for each: {n} step(s)"),
            (None, None, n) => format!("group: {n} step(s)"),
        };
        let name: String = s.display_name().chars().take(24).collect();
        let _ = write!(
            out,
            r##"<g data-step="{id}"><title>{id} ({what}): {state}</title><rect x="{x}" y="{y}" width="{w}" height="{h}" rx="6" fill="{fill}" stroke="#8c959f"/><text x="{tx}" y="{ty}" fill="#1d2125">{name}</text><text x="{tx}" y="{sy}" fill="#5f6b76" font-size="10">{small}</text></g>"##,
            id = runbook_report::xml(&id),
            what = runbook_report::xml(&what),
            state = state.unwrap_or("not started"),
            fill = fill(state),
            tx = x + 8,
            ty = y + 14,
            sy = y + 27,
            name = runbook_report::xml(&name),
            small = runbook_report::xml(&format!("{what} · {}", state.unwrap_or("-"))),
        );
    }
    out.push_str("</svg>");
    out
}

#[cfg(test)]
mod svg_tests {
    use super::*;

    #[test]
    fn steps_of_one_stage_share_a_column_and_states_colour_them() {
        let yaml = "apiVersion: runbook/v1\nname: p\nversion: 1\nsteps:\n  - { id: a, uses: test.ok }\n  - { id: b, uses: test.ok, needs: [a] }\n  - { id: c, uses: test.ok, needs: [a] }\n  - { id: \"d<x>\", uses: test.ok, needs: [b, c] }\n";
        let pb: Playbook = serde_json::from_value(
            runbook_core::parse::parse(yaml)
                .map(|n| n.to_json())
                .unwrap_or_default(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let states = std::collections::HashMap::from([
            ("a".to_owned(), "succeeded".to_owned()),
            ("b".to_owned(), "running".to_owned()),
        ]);
        let svg = svg(&pb, &states);
        assert_eq!(svg.matches("<path").count(), 4, "a→b, a→c, b→d, c→d");
        // b and c are both in the second column, one above the other.
        assert!(
            svg.contains(r#"<rect x="246" y="10""#) && svg.contains(r#"<rect x="246" y="56""#),
            "{svg}"
        );
        assert!(svg.contains(r##"fill="#dafbe1""##) && svg.contains(r##"fill="#ddf4ff""##));
        assert!(svg.contains("d&lt;x&gt;") && !svg.contains("d<x>"));
    }
}
