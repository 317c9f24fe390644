//! `runbook token create | list | revoke`: the server's API tokens
//! (runbook-runner's `access`), kept in the state store.

use crate::Exit;
use crate::args::{Output, TokenAction};
use crate::fail::{Done, Failure};
use crate::session::{open_store, runtime, user};
use runbook_runner::access::{Role, TokenError, create_token};
use std::path::PathBuf;

pub(crate) fn token(state: Option<PathBuf>, action: TokenAction) -> Done {
    match action {
        TokenAction::Create { name, role, expires } => {
            // Flags are checked before the store opens: a typo writes nothing.
            let role: Role = role.parse().map_err(Failure::invalid)?;
            let ttl = expires
                .as_deref()
                .map(runbook_core::inputs::parse_duration)
                .transpose()
                .map_err(|e| Failure::invalid(format!("--expires: {e}")))?;
            runtime()?.block_on(async {
                let store = open_store(state).await?;
                let (secret, t) = create_token(store.as_ref(), &name, role, ttl, &user())
                    .await
                    .map_err(refused)?;
                println!("{secret}");
                let until = t.expires_at.map(|e| format!(", until {e}")).unwrap_or_default();
                eprintln!("token `{name}` ({role}{until}): shown once; keep it in a secret store");
                Ok(Exit::Ok)
            })
        }
        TokenAction::List { output } => runtime()?.block_on(async {
            let tokens = open_store(state).await?.tokens().await?;
            match output {
                Output::Json => crate::json_out::print(&tokens),
                Output::Text => print!("{}", runbook_runner::text::tokens(&tokens)),
            }
            Ok(Exit::Ok)
        }),
        TokenAction::Revoke { name } => runtime()?.block_on(async {
            if !open_store(state)
                .await?
                .revoke_token(&name, &runbook_state::now())
                .await?
            {
                let refused = Failure::invalid(format!("no live token `{name}`"));
                return Err(refused.hint("`runbook token list` shows them"));
            }
            println!("revoked token `{name}`");
            Ok(Exit::Ok)
        }),
    }
}

/// A token that cannot be made: a bad name or a taken one is the caller's
/// to fix (exit 2); the store's failure is the store's.
fn refused(e: TokenError) -> Failure {
    match e {
        TokenError::Store(e) => e.into(),
        other => Failure::invalid(other.to_string()),
    }
}
