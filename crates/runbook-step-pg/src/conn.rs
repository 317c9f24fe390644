//! One connection per step, with the queries the actions need. A query that is
//! cancelled or times out is cancelled on the server too.

use runbook_core::kind::{CancellationToken, StepError};
use serde_json::{Value as Json, json};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;
use tokio_postgres::config::SslMode;
use tokio_postgres::{CancelToken, Client, NoTls, SimpleQueryMessage};
use tokio_postgres_rustls::MakeRustlsConnect;

/// A live connection and what it takes to cancel its query.
pub(crate) struct Db {
    client: Client,
    cancel: CancelToken,
    tls: Option<MakeRustlsConnect>,
    /// `host:port/db`, for messages (never the password).
    shown: String,
}

/// A double-quoted SQL identifier.
pub(crate) fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Where a DSN points, without its password: `host:port/db`.
pub(crate) fn shown(config: &tokio_postgres::Config) -> String {
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
        None => "localhost".to_owned(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!("{host}:{port}/{}", config.get_dbname().unwrap_or("(default db)"))
}

/// Reads a DSN the way libpq does: a `service=` (or `$PGSERVICE`) from the
/// service file, then `$PGHOST`, `$PGPORT`, `$PGUSER`, `$PGDATABASE`,
/// `$PGPASSWORD` and `$PGSSLMODE` for what it leaves out, then the password
/// file (`$PGPASSFILE`, else `~/.pgpass`) when there is still no password.
pub(crate) fn parse_dsn(dsn: &str) -> Result<tokio_postgres::Config, StepError> {
    let bad = || {
        StepError::new(
            "`dsn` is not a PostgreSQL connection string (postgres://user:pass@host:port/db or `host=... dbname=...`)",
        )
    };
    let uri = dsn.starts_with("postgres://") || dsn.starts_with("postgresql://");
    let text = if uri {
        dsn.to_owned()
    } else {
        crate::libpq::with_service(dsn).map_err(StepError::new)?
    };
    // tokio-postgres' own message may quote the text: never show it.
    let mut config = tokio_postgres::Config::from_str(&text).map_err(|_| bad())?;
    crate::libpq::apply_env(&mut config, &text);
    if config.get_password().is_none() {
        if let Some(pw) = crate::libpq::passfile_password(&config) {
            config.password(pw);
        }
    }
    Ok(config)
}

/// True if every host is a unix socket: libpq never uses TLS there.
fn unix_only(config: &tokio_postgres::Config) -> bool {
    let hosts = config.get_hosts();
    !hosts.is_empty() && hosts.iter().all(|h| matches!(h, tokio_postgres::config::Host::Unix(_)))
}

fn tls_config(ca_file: Option<&str>) -> Result<MakeRustlsConnect, StepError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    if let Some(path) = ca_file {
        use rustls::pki_types::pem::PemObject;
        let certs = rustls::pki_types::CertificateDer::pem_file_iter(path)
            .map_err(|e| StepError::new(format!("cannot read `ca_file` {path}: {e}")))?;
        let mut added = 0;
        for cert in certs.flatten() {
            if roots.add(cert).is_ok() {
                added += 1;
            }
        }
        if added == 0 {
            return Err(StepError::new(format!("`ca_file` {path} holds no PEM certificate")));
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| StepError::new(format!("TLS set-up failed: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}

fn pg_error(what: &str, e: &tokio_postgres::Error) -> StepError {
    if let Some(db) = e.as_db_error() {
        let mut m = format!("{what}: {} ({})", db.message(), db.code().code());
        if let Some(h) = db.hint() {
            m.push_str(&format!("; hint: {h}"));
        }
        return StepError::new(m);
    }
    let all = runbook_core::kind::error_chain(e);
    let hint = if all.contains("certificate") {
        " (the server's certificate is not trusted: pass `ca_file` with its CA, or put sslmode=disable in the DSN to connect without TLS)"
    } else {
        ""
    };
    StepError::new(format!("{what}: {all}{hint}"))
}

/// Lag as measured from a primary (every streaming standby) or a standby.
pub(crate) struct Lag {
    pub(crate) in_recovery: bool,
    pub(crate) lsn: String,
    pub(crate) bytes: u64,
    pub(crate) seconds: f64,
    pub(crate) standbys: Vec<Json>,
}

impl Db {
    pub(crate) async fn connect(
        dsn: &str,
        database: Option<&str>,
        ca_file: Option<&str>,
        cancel: &CancellationToken,
    ) -> Result<Db, StepError> {
        let mut config = parse_dsn(dsn)?;
        if let Some(d) = database {
            config.dbname(d);
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(10));
        }
        if config.get_application_name().is_none() {
            config.application_name("runbook");
        }
        let shown = shown(&config);
        let what = format!("cannot connect to PostgreSQL at {shown}");
        let work = async {
            if config.get_ssl_mode() == SslMode::Disable || unix_only(&config) {
                let (client, connection) = config.connect(NoTls).await.map_err(|e| pg_error(&what, &e))?;
                tokio::spawn(connection);
                Ok::<_, StepError>((client, None))
            } else {
                let tls = tls_config(ca_file)?;
                let (client, connection) = config.connect(tls.clone()).await.map_err(|e| pg_error(&what, &e))?;
                tokio::spawn(connection);
                Ok((client, Some(tls)))
            }
        };
        let (client, tls) = tokio::select! {
            r = work => r?,
            () = cancel.cancelled() => return Err(StepError::cancelled()),
        };
        Ok(Db {
            cancel: client.cancel_token(),
            client,
            tls,
            shown,
        })
    }

    /// Runs `work`; on cancellation or after `limit`, cancels the query on the
    /// server as well, and waits for the server to confirm.
    pub(crate) async fn guard<T>(
        &self,
        work: impl std::future::Future<Output = Result<T, StepError>>,
        limit: Option<Duration>,
        cancel: &CancellationToken,
    ) -> Result<T, StepError> {
        let deadline = async {
            match limit {
                Some(l) => tokio::time::sleep(l).await,
                None => std::future::pending().await,
            }
        };
        let mut work = std::pin::pin!(work);
        let stop = tokio::select! {
            r = &mut work => return r,
            () = cancel.cancelled() => StepError::cancelled(),
            () = deadline => StepError::new(format!(
                "timed out after {:?}; the query was cancelled on the server",
                limit.unwrap_or_default()
            )),
        };
        let sent = match &self.tls {
            None => self.cancel.cancel_query(NoTls).await,
            Some(t) => self.cancel.cancel_query(t.clone()).await,
        };
        if sent.is_ok() {
            // The query ends with "canceling statement due to user request".
            let _ = tokio::time::timeout(Duration::from_secs(5), &mut work).await;
        }
        Err(stop)
    }

    /// The rows of `sql` as JSON objects (at most `cap`), and how many there were.
    pub(crate) async fn rows(&self, sql: &str, cap: u64) -> Result<(Vec<Json>, u64), StepError> {
        let sql = sql.trim().trim_end_matches(';');
        let wrapped = format!(
            "WITH q AS ({sql}\n) SELECT (SELECT count(*) FROM q)::int8, \
             (SELECT coalesce(json_agg(t), '[]')::text FROM (SELECT * FROM q LIMIT {cap}) t)"
        );
        let row = self
            .client
            .query_one(&wrapped, &[])
            .await
            .map_err(|e| pg_error("query failed", &e))?;
        let total: i64 = row.get(0);
        let text: String = row.get(1);
        let rows: Vec<Json> = serde_json::from_str(&text).map_err(|e| StepError::new(format!("rows: {e}")))?;
        Ok((rows, u64::try_from(total).unwrap_or(0)))
    }

    /// Runs statements; the rows they changed.
    pub(crate) async fn exec(&self, sql: &str) -> Result<u64, StepError> {
        let msgs = self
            .client
            .simple_query(sql)
            .await
            .map_err(|e| pg_error("statement failed", &e))?;
        Ok(msgs
            .iter()
            .map(|m| match m {
                SimpleQueryMessage::CommandComplete(n) => *n,
                _ => 0,
            })
            .sum())
    }

    async fn one<T: for<'a> tokio_postgres::types::FromSql<'a>>(&self, sql: &str) -> Result<T, StepError> {
        let row = self
            .client
            .query_one(sql, &[])
            .await
            .map_err(|e| pg_error(&format!("`{sql}` failed on {}", self.shown), &e))?;
        Ok(row.get(0))
    }

    /// The row count of every table of the connected database, keyed
    /// `schema.table` (quoted where SQL needs it), in the transaction in
    /// progress if there is one.
    pub(crate) async fn table_counts(&self) -> Result<std::collections::BTreeMap<String, i64>, StepError> {
        let tables = self
            .client
            .query(
                "SELECT format('%I.%I', schemaname, tablename) FROM pg_tables \
                 WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1",
                &[],
            )
            .await
            .map_err(|e| pg_error("cannot list the tables", &e))?;
        let mut counts = std::collections::BTreeMap::new();
        for row in tables {
            let table: String = row.get(0);
            // `table` is quoted by format('%I'): safe to put in the statement.
            let n: i64 = self.one(&format!("SELECT count(*) FROM {table}")).await?;
            counts.insert(table, n);
        }
        Ok(counts)
    }

    /// Begins a repeatable-read, read-only transaction and exports its
    /// snapshot (for `pg_dump --snapshot`): the snapshot's id. The snapshot
    /// lives until this connection commits or closes.
    pub(crate) async fn export_snapshot(&self) -> Result<String, StepError> {
        self.exec("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY").await?;
        self.one("SELECT pg_export_snapshot()").await
    }

    pub(crate) async fn in_recovery(&self) -> Result<bool, StepError> {
        self.one("SELECT pg_is_in_recovery()").await
    }

    pub(crate) async fn database_exists(&self, name: &str) -> Result<bool, StepError> {
        let row = self
            .client
            .query_one("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", &[&name])
            .await
            .map_err(|e| pg_error("cannot list databases", &e))?;
        Ok(row.get(0))
    }

    /// Promotes a standby: (changed, timeline, lsn).
    pub(crate) async fn promote(&self, wait: Duration) -> Result<(bool, u64, String), StepError> {
        let was_standby = self.in_recovery().await?;
        if was_standby {
            let secs = i32::try_from(wait.as_secs().max(1)).unwrap_or(i32::MAX);
            let row = self
                .client
                .query_one("SELECT pg_promote(true, $1)", &[&secs])
                .await
                .map_err(|e| pg_error("pg_promote failed", &e))?;
            let done: bool = row.get(0);
            if !done {
                return Err(StepError::new(format!(
                    "{}: promotion did not finish within {secs}s (see the server log)",
                    self.shown
                )));
            }
            if self.in_recovery().await? {
                return Err(StepError::new(format!(
                    "{}: pg_promote returned but the server is still in recovery",
                    self.shown
                )));
            }
        }
        let lsn: String = self.one("SELECT pg_current_wal_lsn()::text").await?;
        let file: String = self.one("SELECT pg_walfile_name(pg_current_wal_lsn())").await?;
        let timeline = u64::from_str_radix(file.get(..8).unwrap_or("0"), 16).unwrap_or(0);
        Ok((was_standby, timeline, lsn))
    }

    pub(crate) async fn replication(&self) -> Result<Lag, StepError> {
        let in_recovery = self.in_recovery().await?;
        if in_recovery {
            let row = self
                .client
                .query_one(
                    "SELECT coalesce(pg_wal_lsn_diff(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn()), 0)::int8, \
                     CASE WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0 \
                          ELSE coalesce(extract(epoch FROM now() - pg_last_xact_replay_timestamp()), 0) END::float8, \
                     pg_is_wal_replay_paused(), coalesce(pg_last_wal_replay_lsn()::text, ''), \
                     (SELECT status FROM pg_stat_wal_receiver)",
                    &[],
                )
                .await
                .map_err(|e| pg_error("cannot read the standby's replay position", &e))?;
            let bytes = u64::try_from(row.get::<_, i64>(0)).unwrap_or(0);
            let seconds: f64 = row.get(1);
            let receiver: Option<String> = row.get(4);
            let me = json!({
                "name": "this standby",
                "lag_bytes": bytes,
                "lag_seconds": seconds,
                "replay_paused": row.get::<_, bool>(2),
                "receiver": receiver,
            });
            return Ok(Lag {
                in_recovery,
                lsn: row.get(3),
                bytes,
                seconds,
                standbys: vec![me],
            });
        }
        let rows = self
            .client
            .query(
                "SELECT application_name, coalesce(client_addr::text, 'local'), state, \
                 coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn), 0)::int8, \
                 coalesce(extract(epoch FROM replay_lag), 0)::float8, \
                 coalesce(sent_lsn::text, ''), coalesce(replay_lsn::text, '') \
                 FROM pg_stat_replication ORDER BY application_name",
                &[],
            )
            .await
            .map_err(|e| pg_error("cannot read pg_stat_replication", &e))?;
        if rows.is_empty() {
            return Err(StepError::new(format!(
                "{}: no standby is streaming from this primary (pg_stat_replication is empty)",
                self.shown
            )));
        }
        let standbys: Vec<Json> = rows
            .iter()
            .map(|r| {
                let bytes = u64::try_from(r.get::<_, i64>(3)).unwrap_or(0);
                // replay_lag keeps its last value while idle: no bytes behind is no lag.
                let secs: f64 = if bytes == 0 { 0.0 } else { r.get(4) };
                json!({
                    "name": r.get::<_, String>(0),
                    "client": r.get::<_, String>(1),
                    "state": r.get::<_, String>(2),
                    "lag_bytes": bytes,
                    "lag_seconds": secs,
                    "sent_lsn": r.get::<_, String>(5),
                    "replay_lsn": r.get::<_, String>(6),
                })
            })
            .collect();
        // A standby still starting or catching up is connected but not
        // following: its replay position says nothing of the writes to come.
        if !standbys.iter().any(|s| s["state"] == "streaming") {
            let states: Vec<String> = standbys
                .iter()
                .map(|s| {
                    format!(
                        "{} {}",
                        s["name"].as_str().unwrap_or("?"),
                        s["state"].as_str().unwrap_or("?")
                    )
                })
                .collect();
            return Err(StepError::new(format!(
                "{}: no standby is streaming from this primary ({})",
                self.shown,
                states.join(", ")
            )));
        }
        let bytes = standbys
            .iter()
            .filter_map(|s| s["lag_bytes"].as_u64())
            .max()
            .unwrap_or(0);
        let seconds = standbys
            .iter()
            .filter_map(|s| s["lag_seconds"].as_f64())
            .fold(0.0, f64::max);
        Ok(Lag {
            in_recovery,
            lsn: self.one("SELECT pg_current_wal_lsn()::text").await?,
            bytes,
            seconds,
            standbys,
        })
    }

    /// Client sessions idle longer than `older`; terminated unless `dry_run`.
    pub(crate) async fn terminate_idle(
        &self,
        older: Duration,
        database: Option<&str>,
        user: Option<&str>,
        dry_run: bool,
    ) -> Result<Vec<Json>, StepError> {
        let secs = older.as_secs_f64();
        let rows = self
            .client
            .query(
                "SELECT pid, usename::text, datname::text, coalesce(client_addr::text, 'local'), \
                 extract(epoch FROM now() - state_change)::float8, left(query, 200), application_name \
                 FROM pg_stat_activity \
                 WHERE state = 'idle' AND backend_type = 'client backend' AND pid <> pg_backend_pid() \
                   AND now() - state_change > make_interval(secs => $1) \
                   AND ($2::text IS NULL OR datname = $2) AND ($3::text IS NULL OR usename = $3) \
                 ORDER BY state_change",
                &[&secs, &database, &user],
            )
            .await
            .map_err(|e| pg_error("cannot read pg_stat_activity", &e))?;
        let mut out = Vec::new();
        for r in rows {
            let pid: i32 = r.get(0);
            let ended = if dry_run {
                false
            } else {
                self.client
                    .query_one("SELECT pg_terminate_backend($1)", &[&pid])
                    .await
                    .map_err(|e| pg_error("pg_terminate_backend failed", &e))?
                    .get(0)
            };
            out.push(json!({
                "pid": pid,
                "user": r.get::<_, Option<String>>(1),
                "database": r.get::<_, Option<String>>(2),
                "client": r.get::<_, String>(3),
                "idle_seconds": r.get::<_, f64>(4),
                "last_query": r.get::<_, Option<String>>(5),
                "application": r.get::<_, Option<String>>(6),
                "terminated": ended,
            }));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(ident("app"), "\"app\"");
        assert_eq!(ident("a\"; DROP"), "\"a\"\"; DROP\"");
    }

    #[test]
    fn shown_dsn_has_no_password() {
        let c = parse_dsn("postgres://app:s3cret@127.0.0.1:5433/finance").unwrap();
        assert_eq!(shown(&c), "127.0.0.1:5433/finance");
        let err = parse_dsn("postgres://app:s3cret@[bad").err().unwrap();
        assert!(!err.message.contains("s3cret"));
    }
}
