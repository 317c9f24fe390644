//! The text a terminal shows of the catalog's documents and of runs: the
//! plain-text forms of `list`, `show`, `inventory`, `status` and `history`,
//! as strings (the front end decides where they go). Plain tables without
//! borders, each column as wide as its longest value, numbers right-aligned.

use crate::catalog::{Inventory, List};
use runbook_core::model::{InputSpec, Playbook, Step};
use runbook_core::template::scalar_text;
use runbook_state::{Event, Recorded, RunRecord, RunStatus};
use std::time::Duration;

/// A column: its heading, and whether its values align right (numbers).
pub struct Column<'a>(pub &'a str, pub bool);

/// Rows under their headings, two spaces between columns; each line ends
/// with a newline.
pub fn table(columns: &[Column<'_>], rows: Vec<Vec<String>>) -> String {
    use comfy_table::{Cell, CellAlignment, ContentArrangement, Table};
    let mut t = Table::new();
    t.load_preset(comfy_table::presets::NOTHING)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(columns.iter().map(|c| Cell::new(c.0)));
    for row in rows {
        t.add_row(row);
    }
    for (i, c) in columns.iter().enumerate() {
        if let Some(col) = t.column_mut(i) {
            col.set_padding((0, 2));
            if c.1 {
                col.set_cell_alignment(CellAlignment::Right);
            }
        }
    }
    t.lines().map(|l| format!("{}\n", l.trim_end())).collect()
}

/// `runbook list`: each playbook with its versions and the first line of
/// its description, or why it cannot be run.
pub fn list(list: &List) -> String {
    let width = list.playbooks.iter().map(|p| p.name.len()).max().unwrap_or(4).max(4);
    let mut out = format!("{:width$}  {:8}  DESCRIPTION\n", "NAME", "VERSION");
    for p in &list.playbooks {
        let desc = match (&p.error, p.invalid) {
            (None, _) => p.description.clone().unwrap_or_default(),
            (Some(count), true) => format!("(invalid: {count}; see `runbook validate {}`)", p.name),
            (Some(err), false) => format!("({err})"),
        };
        let versions = match p.versions.len() {
            0 | 1 => format!("v{}", p.latest),
            n => format!("v{} (+{})", p.latest, n - 1),
        };
        out.push_str(&format!("{:width$}  {versions:8}  {desc}\n", p.name));
    }
    out
}

/// `runbook show`: a playbook's inputs, secrets, lock, objectives and the
/// outline of its steps, as read from `file`.
pub fn playbook(pb: &Playbook, file: &str) -> String {
    let mut out = format!("{} v{}  ({file})\n", pb.name, pb.version);
    if let Some(d) = &pb.description {
        out.push_str(&format!("\n{}\n", d.trim_end()));
    }
    if !pb.inputs.is_empty() {
        out.push_str("\ninputs:\n");
        let width = pb.inputs.keys().map(String::len).max().unwrap_or(0);
        for (name, spec) in &pb.inputs {
            out.push_str(&format!("  {name:width$}  {}\n", input(spec)));
        }
    }
    if !pb.secrets.is_empty() {
        let names: Vec<_> = pb.secrets.iter().map(|s| s.name()).collect();
        out.push_str(&format!("\nsecrets: {}\n", names.join(", ")));
    }
    if let Some(lock) = &pb.lock {
        out.push_str(&format!("\nlock: {}\n", lock.as_slice().join(", ")));
    }
    if let Some(o) = &pb.objectives {
        let mut parts = Vec::new();
        parts.extend(o.rto.as_ref().map(|r| format!("RTO {r}")));
        parts.extend(o.rpo.as_ref().map(|r| format!("RPO {r}")));
        if let Some(l) = &o.latency {
            for (k, v) in [("p50", &l.p50), ("p95", &l.p95), ("p99", &l.p99)] {
                parts.extend(v.as_ref().map(|v| format!("{k} {v}")));
            }
            parts.extend(l.max_error_rate.map(|e| format!("errors < {}%", e * 100.0)));
        }
        out.push_str(&format!("\nobjectives: {}\n", parts.join(", ")));
    }
    out.push_str("\nsteps:\n");
    outline(&mut out, &pb.steps, 1);
    for (label, steps) in [("on_failure", &pb.on_failure), ("finally", &pb.finally)] {
        if !steps.is_empty() {
            out.push_str(&format!("\n{label}:\n"));
            outline(&mut out, steps, 1);
        }
    }
    out
}

/// An input's type, whether it is required, its default and its rules.
fn input(spec: &InputSpec) -> String {
    let mut parts = vec![spec.ty.as_str().to_owned()];
    if spec.is_required() {
        parts.push("required".to_owned());
    }
    parts.extend(spec.default.as_ref().map(|d| format!("default {}", scalar_text(d))));
    parts.extend(spec.pattern.as_ref().map(|p| format!("pattern {p}")));
    if let Some(v) = &spec.values {
        let values: Vec<_> = v.iter().map(scalar_text).collect();
        parts.push(format!("one of {}", values.join("|")));
    }
    let mut line = parts.join(", ");
    if let Some(d) = &spec.description {
        line.push_str(&format!("  {d}"));
    }
    line
}

/// Each step with its kind (or `group`) and fan-out, nested by depth.
fn outline(out: &mut String, steps: &[Step], depth: usize) {
    for s in steps {
        let pad = "  ".repeat(depth);
        let item = || s.as_.as_deref().unwrap_or("item");
        let what = match (&s.uses, &s.for_each) {
            (Some(u), None) => u.clone(),
            (Some(u), Some(_)) => format!("{u}, for each {}", item()),
            (None, Some(_)) => format!("group, for each {}", item()),
            (None, None) => "group".to_owned(),
        };
        out.push_str(&format!("{pad}- {} ({what})\n", s.display_name()));
        outline(out, s.children(), depth + 1);
    }
}

/// `runbook inventory`: the hosts as runbook reaches them, then the groups.
pub fn inventory(inv: &Inventory) -> String {
    if inv.hosts.is_empty() {
        return "no hosts (hint: write inventory.yaml or pass `--inventory FILE`)\n".to_owned();
    }
    let dash = |v: Option<String>| v.unwrap_or_else(|| "-".to_owned());
    let rows = inv
        .hosts
        .iter()
        .map(|(name, h)| {
            vec![
                name.clone(),
                h.address.clone(),
                dash(h.user.clone()),
                dash(h.port.map(|p| p.to_string())),
                dash(h.jump.clone()),
                h.groups.join(", "),
            ]
        })
        .collect();
    let columns = [
        Column("HOST", false),
        Column("ADDRESS", false),
        Column("USER", false),
        Column("PORT", true),
        Column("JUMP", false),
        Column("GROUPS", false),
    ];
    let mut out = table(&columns, rows);
    if !inv.groups.is_empty() {
        out.push('\n');
        for (g, members) in &inv.groups {
            out.push_str(&format!("{g}: {}\n", members.join(", ")));
        }
    }
    out
}

/// Milliseconds as a short duration (`1.2s`), or nothing.
fn ms(d: Option<u64>) -> String {
    d.map(|m| runbook_report::short(Duration::from_millis(m)))
        .unwrap_or_default()
}

/// `runbook history` and `status` without a run: the runs, with a column
/// of measured RTO (DR drills) when any run has one (`rto`, by run), and of
/// the workers that ran them when any did (`by`, by run).
pub fn runs(runs: &[RunRecord], rto: &[Option<f64>], by: &[Vec<String>]) -> String {
    let with_rto = rto.iter().any(Option::is_some);
    let with_runners = by.iter().any(|r| !r.is_empty());
    let mut columns = vec![
        Column("RUN", false),
        Column("PLAYBOOK", false),
        Column("V", true),
        Column("STATUS", false),
        Column("STARTED", false),
        Column("TOOK", true),
    ];
    if with_rto {
        columns.push(Column("RTO", true));
    }
    columns.push(Column("USER", false));
    if with_runners {
        columns.push(Column("RUNNERS", false));
    }
    let rows = runs
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let took = if matches!(r.status, RunStatus::Running | RunStatus::Queued) {
                String::new()
            } else {
                ms(runbook_report::seconds_between(&r.created_at, &r.updated_at).map(|s| (s * 1000.0) as u64))
            };
            let mut row = vec![
                r.id.clone(),
                r.playbook.clone(),
                r.version.to_string(),
                r.status.as_str().to_owned(),
                r.created_at.clone(),
                took,
            ];
            if with_rto {
                let measured = rto.get(i).copied().flatten();
                row.push(measured.map_or("-".to_owned(), |v| format!("{v:.1}s")));
            }
            row.push(r.user.clone());
            if with_runners {
                row.push(by.get(i).map(|n| n.join(" → ")).unwrap_or_default());
            }
            row
        })
        .collect();
    table(&columns, rows)
}

/// `runbook status RUN`: the run, who or what runs it, each step's last
/// state, the operators' actions, and why it stopped.
pub fn status(record: &RunRecord, events: &[Recorded]) -> String {
    let mut out = format!(
        "run {}  {} v{}  {}\nstarted {} by {}\nplan hash {} (the text {} and the inputs {})\n",
        record.id,
        record.playbook,
        record.version,
        record.status.as_str(),
        record.created_at,
        record.user,
        runbook_report::plan_hash(record),
        record.hash,
        record.inputs
    );
    let by = runbook_report::runners(events);
    if !by.is_empty() {
        out.push_str(&format!("workers: {}\n", by.join(" → ")));
    }
    if let Some(runner) = runner(record) {
        out.push_str(&format!("{runner}\n"));
    }
    out.push('\n');
    let rows = runbook_report::steps(events);
    let width = rows.iter().map(|r| r.step.len()).max().unwrap_or(4).max(4);
    // Which worker ran each step, for runs of the queue.
    let by = rows.iter().filter_map(|r| r.runner.as_ref()).map(String::len).max();
    let cell = |text: &str| by.map(|w| format!("{text:w$}  ", w = w.max(6))).unwrap_or_default();
    out.push_str(&format!(
        "{:width$}  {:11}  {:>8}  {:>8}  {}NOTE\n",
        "STEP",
        "STATE",
        "ATTEMPTS",
        "TOOK",
        cell("RUNNER")
    ));
    for r in &rows {
        out.push_str(&format!(
            "{:width$}  {:11}  {:>8}  {:>8}  {}{}\n",
            r.step,
            r.state,
            r.attempts,
            ms(r.duration_ms),
            cell(r.runner.as_deref().unwrap_or("-")),
            r.error.as_deref().unwrap_or("")
        ));
    }
    for rec in events {
        if let Event::OperatorAction {
            action,
            step,
            who,
            comment,
            ..
        } = &rec.event
        {
            let step = step.as_deref().map(|s| format!(" {s}")).unwrap_or_default();
            let comment = comment.as_deref().map(|c| format!(" ({c})")).unwrap_or_default();
            out.push_str(&format!("{}  {who}: {action}{step}{comment}\n", rec.at));
        }
    }
    if let Some(e) = runbook_report::last_error(events) {
        out.push_str(&format!("\n{}: {e}\n", record.status.as_str()));
    }
    let replay = runbook_engine::replay::Replay::new(events);
    if let Some(again) =
        asks_again(&record.id, &replay, std::time::SystemTime::now()).filter(|_| record.status.resumable())
    {
        out.push_str(&format!("hint: {again}\n"));
    }
    out
}

/// What a resumed run says of an earlier runner's processes it stopped.
pub fn stopped_earlier(cgroup: &str) -> String {
    format!("stopped the processes an earlier runner of this run left running (cgroup {cgroup})")
}

/// What `runbook resume RUN` does with the questions it asks again (they
/// were rejected, or expired), in words for a hint; `None` when it asks
/// none.
pub fn asks_again(run_id: &str, replay: &runbook_engine::replay::Replay, now: std::time::SystemTime) -> Option<String> {
    let again = crate::decide::to_ask_again(replay, now);
    if again.is_empty() {
        return None;
    }
    let each: Vec<String> = again.iter().map(|q| format!("`{}` ({})", q.step, q.why)).collect();
    Some(format!(
        "`runbook resume {run_id}` asks again {}: a fresh question with a fresh expiry, for a person (`--yes` does \
         not answer it); the run waits for the answer",
        each.join("; ")
    ))
}

/// `runbook locks`: each lease of a `lock:` key, who holds it and until when.
pub fn locks(locks: &[runbook_state::Lock]) -> String {
    if locks.is_empty() {
        return "no locks held\n".to_owned();
    }
    let rows = locks
        .iter()
        .map(|l| {
            let expired = if l.expired { " (expired: free)" } else { "" };
            vec![
                l.key.clone(),
                l.run_id.clone(),
                l.user.clone(),
                l.pid.map(|p| p.to_string()).unwrap_or_default(),
                l.since.clone(),
                format!("{}{expired}", l.expires_at),
            ]
        })
        .collect();
    let columns = [
        Column("KEY", false),
        Column("RUN", false),
        Column("USER", false),
        Column("PID", true),
        Column("SINCE", false),
        Column("LEASE UNTIL", false),
    ];
    table(&columns, rows)
}

/// `runbook workers`: the workers of the shared state, whether each is
/// alive, and how many runs each holds.
pub fn workers(workers: &[runbook_state::WorkerRow]) -> String {
    if workers.is_empty() {
        return "no worker has served this state yet (hint: `runbook worker`)\n".to_owned();
    }
    let rows = workers
        .iter()
        .map(|w| {
            vec![
                w.name.clone(),
                w.state.to_string(),
                format!("{}/{}", w.running, w.concurrency),
                w.host.clone(),
                w.pid.to_string(),
                w.started_at.clone(),
                w.seen_at.clone(),
            ]
        })
        .collect();
    let columns = [
        Column("NAME", false),
        Column("STATE", false),
        Column("RUNS", true),
        Column("HOST", false),
        Column("PID", true),
        Column("STARTED", false),
        Column("LAST SEEN", false),
    ];
    table(&columns, rows)
}

/// `runbook token list`: each API token, never its secret.
pub fn tokens(tokens: &[runbook_state::Token]) -> String {
    if tokens.is_empty() {
        return "no API tokens (hint: `runbook token create NAME --role ROLE`)\n".to_owned();
    }
    let dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".to_owned());
    let rows = tokens
        .iter()
        .map(|t| {
            vec![
                t.name.clone(),
                t.role.clone(),
                t.created_by.clone(),
                t.created_at.clone(),
                dash(&t.expires_at),
                dash(&t.revoked_at),
            ]
        })
        .collect();
    let columns = [
        Column("NAME", false),
        Column("ROLE", false),
        Column("BY", false),
        Column("CREATED", false),
        Column("EXPIRES", false),
        Column("REVOKED", false),
    ];
    table(&columns, rows)
}

/// Who executes the run now, or what continues it.
fn runner(record: &RunRecord) -> Option<String> {
    Some(match (record.status, record.pid, crate::held_by_worker(record)) {
        (_, _, Some(worker)) => format!(
            "runner: worker {worker} (lease until {})",
            record.lease_until.as_deref().unwrap_or("?")
        ),
        (RunStatus::Running | RunStatus::Interrupted, _, _) if record.submitted => {
            "its worker is gone: another worker takes it over when its lease expires (`runbook worker`)".to_owned()
        }
        (RunStatus::Queued, _, _) => "queued: the next free `runbook worker` runs it".to_owned(),
        (RunStatus::Running, Some(pid), _) if crate::alive(pid) => format!("runner: process {pid}"),
        (RunStatus::Running, _, _) => format!(
            "its runner is gone (killed or crashed): `runbook resume {}` continues it",
            record.id
        ),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_pads_columns_and_aligns_numbers_right() {
        let rows = vec![
            vec!["web-1".to_owned(), "22".to_owned()],
            vec!["database".to_owned(), "2222".to_owned()],
        ];
        let text = table(&[Column("HOST", false), Column("PORT", true)], rows);
        assert_eq!(text, "HOST      PORT\nweb-1       22\ndatabase  2222\n");
    }

    #[test]
    fn show_outlines_inputs_fan_outs_and_handlers() {
        let yaml = r#"
apiVersion: runbook/v1
name: drain
version: 3
description: Take a host out of rotation.
inputs:
  host: { type: string, pattern: "^web-[0-9]+$" }
  wait: { type: duration, default: 30s }
steps:
  - id: each
    for_each: [a, b]
    as: h
    steps:
      - id: off
        uses: shell
        with: { run: "true" }
finally:
  - id: back
    uses: shell
    with: { run: "true" }
"#;
        let registry = runbook_core::kind::Registry::new().with(runbook_core::kind::test_kit::Cmd);
        let source = runbook_core::diag::Source::new("drain/v3.yaml", yaml.to_owned());
        let expected = runbook_core::validate::Expected::default();
        let pb = runbook_core::validate::load(source, &expected, &registry)
            .unwrap_or_else(|inv| panic!("{:?}", inv.diagnostics))
            .playbook;
        let text = playbook(&pb, "drain/v3.yaml");
        let expected = "drain v3  (drain/v3.yaml)\n\nTake a host out of rotation.\n\ninputs:\n  \
                        host  string, required, pattern ^web-[0-9]+$\n  wait  duration, default 30s\n\n\
                        steps:\n  - each (group, for each h)\n    - off (shell)\n\nfinally:\n  - back (shell)\n";
        assert_eq!(text, expected);
    }

    #[test]
    fn an_empty_inventory_says_how_to_write_one() {
        let inv = Inventory {
            hosts: Default::default(),
            groups: Default::default(),
        };
        assert!(inventory(&inv).contains("hint: write inventory.yaml"));
    }
}
