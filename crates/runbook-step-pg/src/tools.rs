//! `dump`, `verify-dump` and `restore`: the real pg_dump and pg_restore. The
//! connection reaches them through `PG*` variables, never the command line, so
//! the password does not show in `ps` or in the log.

use crate::conn::{Db, parse_dsn, shown};
use crate::{Action, PgParams};
use runbook_core::kind::{LogStream, Outputs, StepContext, StepError};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use tokio::io::{AsyncBufReadExt, BufReader};

/// How long a stopped tool gets between SIGTERM and SIGKILL (as every kind).
const GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// `name` in `bin_dir`, else on PATH, else in the newest /usr/lib/postgresql/*/bin.
fn find_tool(name: &str, bin_dir: Option<&str>) -> Result<PathBuf, StepError> {
    if let Some(dir) = bin_dir {
        let p = Path::new(dir).join(name);
        return if p.exists() {
            Ok(p)
        } else {
            Err(StepError::new(format!("{name} is not in `bin_dir` {dir}")))
        };
    }
    let on_path = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).map(|d| d.join(name)).find(|p| p.exists()))
        .unwrap_or_default();
    if let Some(p) = on_path {
        return Ok(p);
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin").join(name))))
        .filter(|(_, p)| p.exists())
        .collect();
    versions.sort();
    versions.pop().map(|(_, p)| p).ok_or_else(|| {
        StepError::new(format!(
            "{name} not found on PATH or in /usr/lib/postgresql/*/bin: install postgresql-client, or set `bin_dir`"
        ))
    })
}

fn size_of(path: &Path) -> u64 {
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => std::fs::read_dir(path)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| size_of(&e.path()))
            .sum(),
        Ok(m) => m.len(),
        Err(_) => 0,
    }
}

pub(crate) async fn run(ctx: &StepContext, p: &PgParams) -> Result<Outputs, StepError> {
    let file = p
        .file
        .clone()
        .ok_or_else(|| StepError::new(format!("`{}` needs `file`", p.action.as_str())))?;
    let mut config = parse_dsn(&p.dsn)?;
    if let Some(d) = crate::connect_to(p) {
        config.dbname(d);
    }
    // With `counts_file`, the dump and the counts see one snapshot: a
    // transaction of ours exports it, counts in it, and pg_dump reads it.
    let snapshot = match (&p.action, &p.counts_file) {
        (Action::Dump, Some(counts_file)) => {
            let db = Db::connect(&p.dsn, crate::connect_to(p), p.ca_file.as_deref(), &ctx.cancel).await?;
            let id = db.export_snapshot().await?;
            let counts = db.guard(db.table_counts(), None, &ctx.cancel).await?;
            Some((db, id, counts, counts_file.clone()))
        }
        _ => None,
    };
    let (tool, args): (&str, Vec<String>) = match p.action {
        Action::Dump => {
            let mut a = vec!["--no-password".into(), "-f".into(), file.clone()];
            if let Some((_, id, _, _)) = &snapshot {
                a.push(format!("--snapshot={id}"));
            }
            match p.jobs {
                Some(j) if j > 1 => a.extend(["-Fd".into(), "-j".into(), j.to_string()]),
                _ => a.push("-Fc".into()),
            }
            ("pg_dump", a)
        }
        Action::VerifyDump => ("pg_restore", vec!["--list".into(), file.clone()]),
        _ => {
            let db = config
                .get_dbname()
                .ok_or_else(|| StepError::new("`restore` needs a database in `dsn` (the target)"))?;
            let mut a: Vec<String> = vec![
                "--no-password".into(),
                "--clean".into(),
                "--if-exists".into(),
                "--no-owner".into(),
                "--exit-on-error".into(),
                "-d".into(),
                db.to_owned(),
            ];
            if let Some(j) = p.jobs.filter(|j| *j > 1) {
                a.extend(["-j".into(), j.to_string()]);
            }
            if let Some(role) = &p.role {
                a.push(format!("--role={role}"));
            }
            a.push(file.clone());
            ("pg_restore", a)
        }
    };
    let path = find_tool(tool, p.bin_dir.as_deref())?;
    let mut cmd = tokio::process::Command::new(&path);
    cmd.args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for k in [
        "PGHOST",
        "PGPORT",
        "PGUSER",
        "PGPASSWORD",
        "PGDATABASE",
        "PGSERVICE",
        "PGSSLMODE",
    ] {
        cmd.env_remove(k);
    }
    if let Some(h) = config.get_hosts().first() {
        match h {
            tokio_postgres::config::Host::Tcp(h) => cmd.env("PGHOST", h),
            tokio_postgres::config::Host::Unix(p) => cmd.env("PGHOST", p),
        };
    }
    if let Some(port) = config.get_ports().first() {
        cmd.env("PGPORT", port.to_string());
    }
    if let Some(u) = config.get_user() {
        cmd.env("PGUSER", u);
    }
    if let Some(pw) = config.get_password() {
        cmd.env("PGPASSWORD", String::from_utf8_lossy(pw).into_owned());
    }
    if let Some(d) = config.get_dbname() {
        cmd.env("PGDATABASE", d);
    }
    let mode = match config.get_ssl_mode() {
        tokio_postgres::config::SslMode::Disable => "disable",
        tokio_postgres::config::SslMode::Require => "require",
        _ => "prefer",
    };
    cmd.env("PGSSLMODE", mode);
    if let Some(ca) = &p.ca_file {
        cmd.env("PGSSLROOTCERT", ca);
    }
    ctx.log.line(
        LogStream::Stdout,
        &format!("{} {} (connection {})", path.display(), args.join(" "), shown(&config)),
    );
    // Not the variables runbook read the run's secrets from: the
    // connection is given above.
    ctx.withhold_secrets(cmd.as_std_mut());
    // Held like a shell step's command: in a cgroup of its own, dying with
    // its runner.
    let slot = ctx
        .contain
        .as_deref()
        .and_then(|run| runbook_contain::Slot::create(run).ok());
    runbook_contain::prepare(cmd.as_std_mut(), slot.as_ref());
    let mut child = cmd
        .spawn()
        .map_err(|e| StepError::new(format!("cannot start {}: {e}", path.display())))?;
    let leader = child.id().and_then(|id| i32::try_from(id).ok());
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let read_out = async {
        let mut lines = Vec::new();
        if let Some(o) = stdout {
            let mut r = BufReader::new(o).lines();
            while let Ok(Some(l)) = r.next_line().await {
                lines.push(l);
            }
        }
        lines
    };
    let read_err = async {
        let mut tail: Vec<String> = Vec::new();
        if let Some(e) = stderr {
            let mut r = BufReader::new(e).lines();
            while let Ok(Some(l)) = r.next_line().await {
                ctx.log.line(LogStream::Stderr, &l);
                tail.push(l);
            }
        }
        tail
    };
    let work = async {
        let (out, err) = tokio::join!(read_out, read_err);
        (child.wait().await, out, err)
    };
    let mut work = std::pin::pin!(work);
    let (status, out, err) = tokio::select! {
        r = &mut work => r,
        () = ctx.cancel.cancelled() => {
            // SIGTERM once (the tool stops cleanly), then the grace; what is
            // left is killed as the slot and the child drop.
            let term = nix::sys::signal::Signal::SIGTERM;
            match (&slot, leader) {
                (Some(slot), _) => slot.signal(term),
                (None, Some(pid)) => {
                    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), term);
                }
                (None, None) => {}
            }
            let _ = tokio::time::timeout(GRACE, &mut work).await;
            return Err(StepError::cancelled());
        }
    };
    let status = status.map_err(|e| StepError::new(format!("{tool}: {e}")))?;
    if !status.success() {
        return Err(StepError::new(format!(
            "{tool} {}",
            runbook_core::kind::exit_message(status.code().unwrap_or(-1), &err.join("\n"))
        )));
    }
    let mut outputs = Outputs::new();
    let size = size_of(Path::new(&file));
    outputs.insert("file".into(), json!(file));
    outputs.insert("size_bytes".into(), json!(size));
    match p.action {
        Action::Dump => {
            ctx.log.line(LogStream::Stdout, &format!("wrote {file} ({size} bytes)"));
            if let Some((db, _, counts, counts_file)) = snapshot {
                db.exec("COMMIT").await?;
                let total: i64 = counts.values().sum();
                let manifest = json!({
                    "database": config.get_dbname(),
                    "dump": file,
                    "tables": counts,
                });
                let text = serde_json::to_string_pretty(&manifest).unwrap_or_default();
                std::fs::write(&counts_file, text + "\n")
                    .map_err(|e| StepError::new(format!("cannot write `counts_file` {counts_file}: {e}")))?;
                ctx.log.line(
                    LogStream::Stdout,
                    &format!(
                        "{} tables, {total} rows, counted in the dump's snapshot: {counts_file}",
                        counts.len()
                    ),
                );
                outputs.insert("counts".into(), json!(counts));
                outputs.insert("total_rows".into(), json!(total));
                outputs.insert("counts_file".into(), json!(counts_file));
            }
        }
        Action::VerifyDump => {
            let entries: Vec<&String> = out
                .iter()
                .filter(|l| !l.starts_with(';') && !l.trim().is_empty())
                .collect();
            let tables = entries.iter().filter(|l| l.contains(" TABLE DATA ")).count();
            if entries.is_empty() {
                return Err(StepError::new(format!("{file} is a dump with nothing in it")).with_outputs(outputs));
            }
            ctx.log.line(
                LogStream::Stdout,
                &format!(
                    "{file}: {} entries, {tables} tables with data, {size} bytes",
                    entries.len()
                ),
            );
            outputs.insert("entries".into(), json!(entries.len()));
            outputs.insert("tables".into(), json!(tables));
            let identity = dump_identity(&out);
            outputs.insert("dump_database".into(), json!(identity.database));
            if let Err(e) = check_identity(&file, &identity, p.database.as_deref(), p.counts_file.as_deref()) {
                return Err(StepError::new(e).with_outputs(outputs));
            }
            if let Some(c) = &p.counts_file {
                ctx.log.line(
                    LogStream::Stdout,
                    &format!(
                        "a dump of {}, its tables those {c} counts",
                        identity.database.as_deref().unwrap_or("?")
                    ),
                );
            }
        }
        _ => {
            ctx.log
                .line(LogStream::Stdout, &format!("restored {file} into {}", shown(&config)));
        }
    }
    Ok(outputs)
}

/// What `pg_restore --list` says a dump is: the database it was taken of
/// and the tables it holds data for (`schema.table`).
struct DumpIdentity {
    database: Option<String>,
    tables: std::collections::BTreeSet<String>,
}

fn dump_identity(list: &[String]) -> DumpIdentity {
    let database = list.iter().find_map(|l| {
        l.strip_prefix(';')
            .map(str::trim_start)
            .and_then(|l| l.strip_prefix("dbname:"))
            .map(|d| d.trim().to_owned())
    });
    let tables = list
        .iter()
        .filter(|l| !l.starts_with(';'))
        .filter_map(|l| l.split_once(" TABLE DATA ").map(|(_, rest)| rest))
        .filter_map(|rest| {
            let mut w = rest.split_whitespace();
            Some(format!("{}.{}", w.next()?, w.next()?))
        })
        .collect();
    DumpIdentity { database, tables }
}

/// verify-dump with `database`: the dump is of that database; with
/// `counts_file` (as `backup` writes it): the counts are of this dump, of the
/// same database, and count exactly the tables the dump holds.
fn check_identity(
    file: &str,
    id: &DumpIdentity,
    database: Option<&str>,
    counts_file: Option<&str>,
) -> Result<(), String> {
    let of = id.database.as_deref().unwrap_or("an unnamed database");
    if let Some(want) = database {
        if id.database.as_deref() != Some(want) {
            return Err(format!(
                "{file} is a dump of {of}, not of {want}: restoring it would replace {want}'s tables with another database's"
            ));
        }
    }
    let Some(counts_file) = counts_file else {
        return Ok(());
    };
    let text = std::fs::read_to_string(counts_file).map_err(|e| {
        format!("cannot read {counts_file} ({e}): without the counts `backup` writes beside a dump, nothing says what a restore of it must hold")
    })?;
    let manifest: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("{counts_file} is not the counts `backup` writes: {e}"))?;
    if let Some(db) = manifest["database"].as_str() {
        if id.database.as_deref() != Some(db) {
            return Err(format!(
                "{counts_file} counts database {db}, but {file} is a dump of {of}"
            ));
        }
    }
    let base = |p: &str| Path::new(p).file_name().map(|n| n.to_string_lossy().into_owned());
    if let Some(dump) = manifest["dump"].as_str() {
        if base(dump) != base(file) {
            return Err(format!("{counts_file} counts the dump {dump}, not {file}"));
        }
    }
    let counted: std::collections::BTreeSet<String> = manifest["tables"]
        .as_object()
        .ok_or_else(|| format!("{counts_file} has no `tables`"))?
        .keys()
        .cloned()
        .collect();
    if counted != id.tables {
        let missing: Vec<&String> = counted.difference(&id.tables).collect();
        let extra: Vec<&String> = id.tables.difference(&counted).collect();
        return Err(format!(
            "{file} does not hold the tables {counts_file} counts (not in the dump: {missing:?}; not counted: {extra:?})"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dump_names_its_database_and_tables() {
        let list: Vec<String> = [
            ";     dbname: finance",
            "; Selected TOC Entries:",
            "3375; 0 16396 TABLE DATA public accounts app",
            "3376; 0 16400 TABLE DATA public transactions app",
            "215; 1259 16396 TABLE public accounts app",
        ]
        .map(str::to_owned)
        .to_vec();
        let id = dump_identity(&list);
        assert_eq!(id.database.as_deref(), Some("finance"));
        assert_eq!(
            id.tables.iter().collect::<Vec<_>>(),
            ["public.accounts", "public.transactions"]
        );
        assert!(check_identity("f.dump", &id, Some("finance"), None).is_ok());
        let wrong = check_identity("f.dump", &id, Some("ledger"), None).unwrap_err();
        assert!(wrong.contains("is a dump of finance, not of ledger"), "{wrong}");
    }
}
