//! Schema changes, applied by sqlx's migrator (its `_sqlx_migrations` table:
//! version, checksum, when, how long) from the SQL each backend embeds.
//!
//! Both backends run the migrator inside one transaction of their own that
//! serializes runners starting at once (SQLite: `BEGIN IMMEDIATE`, the file's
//! write lock; PostgreSQL: a transaction-scoped advisory lock), so two
//! processes opening a fresh state never both migrate. State written by
//! runbook before it used sqlx's migrator kept its versions in
//! `schema_migrations`: those are recorded as applied (with the checksums of
//! the same SQL) and the old table dropped, once.

use sqlx::error::BoxDynError;
use sqlx::migrate::{MigrateError, Migration, MigrationSource, MigrationType, Migrator};
use std::future::Future;
use std::pin::Pin;

/// One backend's schema changes: (version, description, SQL), in order.
pub(crate) type Changes = &'static [(i64, &'static str, &'static str)];

#[derive(Debug)]
struct Embedded(Changes);

impl MigrationSource<'static> for Embedded {
    fn resolve(self) -> Pin<Box<dyn Future<Output = Result<Vec<Migration>, BoxDynError>> + Send + 'static>> {
        Box::pin(async move { Ok(migrations(self.0)) })
    }
}

/// `changes` as sqlx migrations (each with the checksum of its SQL).
pub(crate) fn migrations(changes: Changes) -> Vec<Migration> {
    changes
        .iter()
        .map(|(version, description, sql)| {
            Migration::new(
                *version,
                (*description).into(),
                MigrationType::Simple,
                (*sql).into(),
                false,
            )
        })
        .collect()
}

/// The migrator of `changes`, without its own lock (the caller's
/// transaction serializes).
pub(crate) async fn migrator(changes: Changes) -> Result<Migrator, MigrateError> {
    let mut m = Migrator::new(Embedded(changes)).await?;
    m.set_locking(false);
    Ok(m)
}

/// The newest version of `changes`.
pub(crate) fn latest(changes: Changes) -> i64 {
    changes.iter().map(|(v, _, _)| *v).max().unwrap_or(0)
}
