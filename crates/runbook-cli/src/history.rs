//! `status`, `logs` and `history`: reading runs back from the journal.

use crate::Exit;
use crate::args::Output;
use crate::fail::Done;
use crate::session::{open_store, runtime};
use runbook_state::{RunStatus, Stream};
use std::path::PathBuf;
use std::time::Duration;

pub(crate) fn status(state: Option<PathBuf>, run: Option<&str>, output: Output) -> Done {
    runtime()?.block_on(async {
        let store = open_store(state).await?;
        let Some(id) = run else {
            let runs = store.runs(None, 20).await?;
            if output == Output::Json {
                println!("{}", serde_json::to_string_pretty(&runs).unwrap_or_default());
            } else {
                print!("{}", runbook_runner::text::runs(&runs, &[], &[]));
            }
            return Ok(Exit::Ok);
        };
        let record = store.run(id).await?;
        let events = store.events(&record.id).await?;
        if output == Output::Json {
            crate::json_out::print(&runbook_runner::catalog::Status::of(record, &events));
            return Ok(Exit::Ok);
        }
        print!("{}", runbook_runner::text::status(&record, &events));
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
                by.push(runbook_report::runners(&events));
            }
            print!("{}", runbook_runner::text::runs(&runs, &rto, &by));
        }
        Ok(Exit::Ok)
    })
}
