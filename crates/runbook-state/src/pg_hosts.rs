//! libpq's multi-host connection strings for the PostgreSQL store, and the
//! failover they are for: `postgresql://u:p@db1:5432,db2:5432/runbook?target_session_attrs=read-write`
//! names a primary and its standbys; the store connects to the first host
//! that accepts writes, and when that connection is lost (the server went
//! away, or a demoted primary refuses writes) it looks again, in order, so
//! that the promoted standby takes over.
//!
//! Unlike libpq, whose default is `any`, the store asks for a writable
//! session unless told otherwise: runbook's state is written, so a standby
//! is never what it wants. `target_session_attrs=any` keeps libpq's choice
//! (the first host that answers).

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgConnection, PgPool, Row};
use std::str::FromStr;
use std::time::Duration;

/// Which server a session must reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Attrs {
    /// The first that answers (libpq's `any`).
    Any,
    /// One that accepts writes (`read-write`, the default, or `primary`).
    ReadWrite,
}

/// The hosts of one connection string, in order, and what a session needs.
#[derive(Debug, Clone)]
pub(crate) struct Targets {
    hosts: Vec<PgConnectOptions>,
    attrs: Attrs,
    /// How long one host may take to answer (`connect_timeout`, seconds;
    /// 10 unless given).
    connect_timeout: Duration,
    /// `postgres://h1:p1,h2:p2/db`: for messages (never the password).
    pub(crate) shown: String,
}

impl Targets {
    /// Parses `url`: one host, or several separated by commas (each with an
    /// optional port), and `target_session_attrs` among the parameters.
    pub(crate) fn parse(url: &str) -> Result<Targets, String> {
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| "not a postgres:// URL".to_owned())?;
        let end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(end);
        let (userinfo, hostlist) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        let (path, query) = match tail.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (tail, None),
        };
        let mut attrs = Attrs::ReadWrite;
        let mut connect_timeout = Duration::from_secs(10);
        let mut params = Vec::new();
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some(("target_session_attrs", value)) => {
                    attrs = match value {
                        "any" => Attrs::Any,
                        "read-write" | "primary" => Attrs::ReadWrite,
                        other => {
                            return Err(format!(
                                "target_session_attrs={other}: runbook's state is written; use read-write (the default), primary or any"
                            ));
                        }
                    };
                }
                Some(("connect_timeout", value)) => {
                    let seconds: u64 = value
                        .parse()
                        .map_err(|_| format!("connect_timeout={value}: a whole number of seconds"))?;
                    connect_timeout = Duration::from_secs(seconds.max(1));
                }
                _ => params.push(pair),
            }
        }
        let query = if params.is_empty() {
            String::new()
        } else {
            format!("?{}", params.join("&"))
        };
        let mut hosts = Vec::new();
        for host in hostlist.split(',') {
            let one = match userinfo {
                Some(u) => format!("{scheme}://{u}@{host}{path}{query}"),
                None => format!("{scheme}://{host}{path}{query}"),
            };
            hosts.push(PgConnectOptions::from_str(&one).map_err(|e| format!("host `{host}`: {e}"))?);
        }
        let shown = format!(
            "postgres://{}/{}",
            hosts
                .iter()
                .map(|o| format!("{}:{}", o.get_host(), o.get_port()))
                .collect::<Vec<_>>()
                .join(","),
            hosts.first().and_then(PgConnectOptions::get_database).unwrap_or("")
        );
        Ok(Targets {
            hosts,
            attrs,
            connect_timeout,
            shown,
        })
    }

    /// A pool on the first host, in order, that answers and (unless `any`)
    /// accepts writes; why each refused, otherwise.
    pub(crate) async fn connect(&self) -> Result<PgPool, sqlx::Error> {
        let mut why = Vec::new();
        for options in &self.hosts {
            let at = format!("{}:{}", options.get_host(), options.get_port());
            // One attempt per host, bounded: a refused or silent host must
            // not hold up the next one (a pool would retry it until its
            // acquire timeout).
            let probe = tokio::time::timeout(self.connect_timeout, PgConnection::connect_with(options)).await;
            let mut conn = match probe {
                Ok(Ok(conn)) => conn,
                Ok(Err(e)) if self.hosts.len() == 1 => return Err(e),
                Ok(Err(e)) => {
                    why.push(format!("{at}: {e}"));
                    continue;
                }
                Err(_) => {
                    why.push(format!("{at}: no answer within {:?}", self.connect_timeout));
                    continue;
                }
            };
            let read_only = match self.attrs {
                Attrs::Any => Ok(false),
                Attrs::ReadWrite => {
                    sqlx::query("SELECT pg_is_in_recovery() OR current_setting('transaction_read_only') = 'on'")
                        .fetch_one(&mut conn)
                        .await
                        .and_then(|row| row.try_get::<bool, _>(0))
                }
            };
            let _ = conn.close().await;
            match read_only {
                Ok(false) => {
                    return Ok(PgPoolOptions::new()
                        .max_connections(4)
                        .acquire_timeout(Duration::from_secs(10))
                        .connect_lazy_with(options.clone()));
                }
                Ok(true) => why.push(format!("{at}: read-only (a standby, or fenced)")),
                Err(e) => why.push(format!("{at}: {e}")),
            }
        }
        let wanted = match self.attrs {
            Attrs::Any => "answers",
            Attrs::ReadWrite => "accepts writes",
        };
        Err(sqlx::Error::Configuration(
            format!("no server {wanted}: {}", why.join("; ")).into(),
        ))
    }
}

/// An error after which the connection's server may be gone or no longer
/// the primary: the store looks for its server again before the next call.
pub(crate) fn lost(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        // 08: connection exception; 57P01-03: the server shuts down or is
        // starting; 25006: a read-only transaction (a demoted primary).
        sqlx::Error::Database(d) => d
            .code()
            .is_some_and(|c| c.starts_with("08") || matches!(&*c, "57P01" | "57P02" | "57P03" | "25006")),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn several_hosts_share_the_user_database_and_parameters() {
        let t = Targets::parse(
            "postgresql://u:secret@db1:5433,db2,10.0.0.3:6000/state?sslmode=disable&target_session_attrs=read-write",
        )
        .unwrap();
        assert_eq!(t.attrs, Attrs::ReadWrite);
        let hosts: Vec<_> = t
            .hosts
            .iter()
            .map(|o| (o.get_host().to_owned(), o.get_port()))
            .collect();
        assert_eq!(
            hosts,
            [("db1".into(), 5433), ("db2".into(), 5432), ("10.0.0.3".into(), 6000)]
        );
        assert!(
            t.hosts
                .iter()
                .all(|o| o.get_database() == Some("state") && o.get_username() == "u")
        );
        assert_eq!(t.shown, "postgres://db1:5433,db2:5432,10.0.0.3:6000/state");
        assert!(!t.shown.contains("secret"));
    }

    #[test]
    fn one_host_is_one_target_and_writable_is_the_default() {
        let t = Targets::parse("postgres://localhost:5432/runbook").unwrap();
        assert_eq!((t.hosts.len(), t.attrs), (1, Attrs::ReadWrite));
        let any = Targets::parse("postgres://a,b/runbook?target_session_attrs=any&connect_timeout=3").unwrap();
        assert_eq!((any.hosts.len(), any.attrs), (2, Attrs::Any));
        assert_eq!(any.connect_timeout, Duration::from_secs(3));
    }

    #[test]
    fn a_session_that_cannot_write_is_refused_by_name() {
        let e = Targets::parse("postgres://a,b/runbook?target_session_attrs=standby").unwrap_err();
        assert!(
            e.contains("target_session_attrs=standby") && e.contains("read-write"),
            "{e}"
        );
        assert!(Targets::parse("db1:5432/runbook").is_err());
    }
}
