//! `runbook report RUN --format ...` and `--report FORMAT=PATH`: reads a run's
//! record, journal and log from the store and writes what runbook-report
//! makes of them (the playbook's objectives come from the text the run
//! recorded).

use crate::Exit;
use crate::args::ReportFormat;
use crate::fail::Done;
use crate::session::{open_run, runtime};
use runbook_core::kind::Registry;
use runbook_core::model::Objectives;
use runbook_report::{Format, Report};
use runbook_state::{LogLine, Recorded, RunRecord, Store};
use std::path::PathBuf;

/// The playbook's objectives, read from the text the run recorded.
fn objectives(record: &RunRecord, registry: &Registry) -> Option<Objectives> {
    let source = runbook_core::diag::Source::new(format!("run {}", record.id), record.text.clone());
    runbook_core::validate::load(source, &runbook_core::validate::Expected::default(), registry)
        .ok()
        .and_then(|loaded| loaded.playbook.objectives)
}

impl From<ReportFormat> for Format {
    fn from(f: ReportFormat) -> Format {
        match f {
            ReportFormat::Json => Format::Json,
            ReportFormat::Junit => Format::Junit,
            ReportFormat::Markdown => Format::Markdown,
            ReportFormat::Html => Format::Html,
        }
    }
}

/// The report of a run.
fn build(record: &RunRecord, events: &[Recorded], logs: &[LogLine], registry: &Registry) -> Report {
    Report::build(record, events, logs, objectives(record, registry).as_ref())
}

/// `runbook report RUN --format ...`: prints the report.
pub(crate) fn report(state: Option<PathBuf>, registry: &Registry, id: &str, format: ReportFormat) -> Done {
    runtime()?.block_on(async {
        let (store, record) = open_run(state, id).await?;
        let events = store.events(&record.id).await?;
        let logs: Vec<LogLine> = store
            .logs(&record.id, None, 0)
            .await?
            .into_iter()
            .map(|(_, l)| l)
            .collect();
        print!("{}", build(&record, &events, &logs, registry).render(format.into()));
        Ok(Exit::Ok)
    })
}

/// `--report FORMAT=PATH`: writes the reports once the run stops.
pub(crate) async fn write_all(
    store: &dyn Store,
    registry: &Registry,
    run_id: &str,
    wanted: &[(ReportFormat, PathBuf)],
) {
    if wanted.is_empty() {
        return;
    }
    let (record, events, logs) = match (
        store.run(run_id).await,
        store.events(run_id).await,
        store.logs(run_id, None, 0).await,
    ) {
        (Ok(r), Ok(e), Ok(l)) => (r, e, l),
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
            eprintln!("warning: no report: {e}");
            return;
        }
    };
    let logs: Vec<LogLine> = logs.into_iter().map(|(_, l)| l).collect();
    let report = build(&record, &events, &logs, registry);
    for (format, path) in wanted {
        if let Err(e) = std::fs::write(path, report.render((*format).into())) {
            eprintln!("warning: cannot write the report {}: {e}", path.display());
        }
    }
}

/// Parses `--report FORMAT=PATH`.
pub(crate) fn parse_spec(spec: &str) -> Result<(ReportFormat, PathBuf), String> {
    let (format, path) = spec
        .split_once('=')
        .ok_or_else(|| format!("--report {spec}: write FORMAT=PATH, e.g. junit=report.xml"))?;
    let format = match format {
        "junit" => ReportFormat::Junit,
        "json" => ReportFormat::Json,
        "markdown" => ReportFormat::Markdown,
        "html" => ReportFormat::Html,
        other => {
            return Err(format!(
                "--report {spec}: unknown format `{other}` (junit, json, markdown, html)"
            ));
        }
    };
    Ok((format, PathBuf::from(path)))
}
