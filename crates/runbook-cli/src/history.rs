//! `status`, `logs` and `history`: reading runs back from the journal.

use crate::Exit;
use crate::args::Output;
use crate::fail::Done;
use crate::session::{open_store, runtime};
use runbook_report::steps;
use runbook_state::{Event, Recorded, RunRecord, RunStatus, Stream};
use std::path::PathBuf;
use std::time::Duration;

fn ms(d: Option<u64>) -> String {
    d.map(|m| runbook_report::short(Duration::from_millis(m)))
        .unwrap_or_default()
}

fn table(runs: &[RunRecord]) {
    table_with(runs, &[], &[]);
}

/// The workers that ran a run, in the order they took it.
fn runners(events: &[Recorded]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for rec in events {
        if let Event::RunStarted { runner: Some(r), .. } | Event::RunResumed { runner: Some(r), .. } = &rec.event {
            if out.last() != Some(r) {
                out.push(r.clone());
            }
        }
    }
    out
}

/// The runs, with a column of measured RTO (DR drills) when any run has one,
/// and of the workers that ran them when any did.
fn table_with(runs: &[RunRecord], rto: &[Option<f64>], by: &[Vec<String>]) {
    use crate::table::Column;
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
                row.push(
                    rto.get(i)
                        .copied()
                        .flatten()
                        .map_or("-".to_owned(), |v| format!("{v:.1}s")),
                );
            }
            row.push(r.user.clone());
            if with_runners {
                row.push(by.get(i).map(|n| n.join(" → ")).unwrap_or_default());
            }
            row
        })
        .collect();
    crate::table::print(&columns, rows);
}

pub(crate) fn status(state: Option<PathBuf>, run: Option<&str>, output: Output) -> Done {
    runtime()?.block_on(async {
        let store = open_store(state).await?;
        let Some(id) = run else {
            let runs = store.runs(None, 20).await?;
            if output == Output::Json {
                println!("{}", serde_json::to_string_pretty(&runs).unwrap_or_default());
            } else {
                table(&runs);
            }
            return Ok(Exit::Ok);
        };
        let record = store.run(id).await?;
        let events = store.events(&record.id).await?;
        if output == Output::Json {
            crate::json_out::print(&runbook_runner::catalog::Status::of(record, &events));
            return Ok(Exit::Ok);
        }
        let rows = steps(&events);
        let last_error = runbook_report::last_error(&events);
        let plan = runbook_report::plan_hash(&record);
        println!(
            "run {}  {} v{}  {}",
            record.id,
            record.playbook,
            record.version,
            record.status.as_str()
        );
        println!("started {} by {}", record.created_at, record.user);
        println!(
            "plan hash {plan} (the text {} and the inputs {})",
            record.hash, record.inputs
        );
        let by = runners(&events);
        if !by.is_empty() {
            println!("workers: {}", by.join(" → "));
        }
        match (record.status, record.pid, runbook_runner::held_by_worker(&record)) {
            (_, _, Some(worker)) => println!(
                "runner: worker {worker} (lease until {})",
                record.lease_until.as_deref().unwrap_or("?")
            ),
            (RunStatus::Running | RunStatus::Interrupted, _, _) if record.submitted => {
                println!("its worker is gone: another worker takes it over when its lease expires (`runbook worker`)")
            }
            (RunStatus::Queued, _, _) => println!("queued: the next free `runbook worker` runs it"),
            (RunStatus::Running, Some(pid), _) if runbook_runner::alive(pid) => println!("runner: process {pid}"),
            (RunStatus::Running, _, _) => {
                println!(
                    "its runner is gone (killed or crashed): `runbook resume {}` continues it",
                    record.id
                );
            }
            _ => {}
        }
        println!();
        let width = rows.iter().map(|r| r.step.len()).max().unwrap_or(4).max(4);
        // Which worker ran each step, for runs of the queue.
        let by = rows.iter().filter_map(|r| r.runner.as_ref()).map(String::len).max();
        let runner_head = by
            .map(|w| format!("{:w$}  ", "RUNNER", w = w.max(6)))
            .unwrap_or_default();
        println!(
            "{:width$}  {:11}  {:>8}  {:>8}  {runner_head}NOTE",
            "STEP", "STATE", "ATTEMPTS", "TOOK"
        );
        for r in &rows {
            let runner = by
                .map(|w| format!("{:w$}  ", r.runner.as_deref().unwrap_or("-"), w = w.max(6)))
                .unwrap_or_default();
            println!(
                "{:width$}  {:11}  {:>8}  {:>8}  {runner}{}",
                r.step,
                r.state,
                r.attempts,
                ms(r.duration_ms),
                r.error.as_deref().unwrap_or("")
            );
        }
        for rec in &events {
            if let Event::OperatorAction {
                action,
                step,
                who,
                comment,
                ..
            } = &rec.event
            {
                println!(
                    "{}  {who}: {action}{}{}",
                    rec.at,
                    step.as_deref().map(|s| format!(" {s}")).unwrap_or_default(),
                    comment.as_deref().map(|c| format!(" ({c})")).unwrap_or_default()
                );
            }
        }
        if let Some(e) = last_error {
            println!("\n{}: {e}", record.status.as_str());
        }
        Ok(Exit::Ok)
    })
}

pub(crate) fn logs(state: Option<PathBuf>, run: &str, (step, follow): (Option<&str>, bool), output: Output) -> Done {
    let print = |l: &runbook_state::LogLine| match output {
        Output::Json => runbook_engine::exec::Observer::log(&crate::observe::JsonLines, l),
        Output::Text => {
            let mark = if l.stream == Stream::Stderr { "┃" } else { "│" };
            println!("{} {mark} {}", l.step, l.line);
        }
    };
    runtime()?.block_on(async {
        let (store, record) = crate::session::open_run(state, run).await?;
        let mut after = 0;
        loop {
            for (seq, l) in store.logs(&record.id, step, after).await? {
                after = seq;
                print(&l);
            }
            if !follow {
                return Ok(Exit::Ok);
            }
            match store.run(&record.id).await {
                Ok(r) if r.status == RunStatus::Running => {}
                // One last read for lines written just before the end.
                _ => {
                    if let Ok(lines) = store.logs(&record.id, step, after).await {
                        for (_, l) in lines {
                            print(&l);
                        }
                    }
                    return Ok(Exit::Ok);
                }
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    })
}

pub(crate) fn history(state: Option<PathBuf>, playbook: &str, limit: u32, output: Output) -> Done {
    runtime()?.block_on(async {
        let store = open_store(state).await?;
        let runs = store.runs(Some(playbook), limit).await?;
        if output == Output::Json {
            println!("{}", serde_json::to_string_pretty(&runs).unwrap_or_default());
        } else if runs.is_empty() {
            println!("no runs of `{playbook}` yet");
        } else {
            // The recovery time each run measured: a drill's trend.
            let (mut rto, mut by) = (Vec::new(), Vec::new());
            for r in &runs {
                let events = store.events(&r.id).await.unwrap_or_default();
                rto.push(runbook_report::measured(&events, "rto_seconds"));
                by.push(runners(&events));
            }
            table_with(&runs, &rto, &by);
        }
        Ok(Exit::Ok)
    })
}
