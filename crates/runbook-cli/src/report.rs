//! `runbook report RUN --format ...` and `--report FORMAT=PATH`: the report
//! runbook-runner's `catalog::report` makes of a run, printed or written.

use crate::Exit;
use crate::args::ReportFormat;
use crate::fail::Done;
use crate::session::{open_store, runtime};
use runbook_core::kind::Registry;
use runbook_report::Format;
use runbook_state::Store;
use std::path::PathBuf;

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

/// `runbook report RUN --format ...`: prints the report.
pub(crate) fn report(state: Option<PathBuf>, registry: &Registry, id: &str, format: ReportFormat) -> Done {
    runtime()?.block_on(async {
        let store = open_store(state).await?;
        let report = runbook_runner::catalog::report(store.as_ref(), registry, id).await?;
        print!("{}", report.render(format.into()));
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
    let report = match runbook_runner::catalog::report(store, registry, run_id).await {
        Ok(r) => r,
        Err(e) => return eprintln!("warning: no report: {e}"),
    };
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
