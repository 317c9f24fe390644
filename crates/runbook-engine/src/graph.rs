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
