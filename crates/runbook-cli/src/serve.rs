//! `runbook serve`: runbook-server's API on a listener, over this command
//! line's state, library and inventory. SIGINT/SIGTERM: a run executing here
//! that an operator cancelled (`runbook cancel` signals the process that
//! executes it) is stopped; otherwise the server stops, and its runs stop
//! gracefully and stay resumable.

use crate::Exit;
use crate::fail::{Done, Failure};
use crate::runs::env;
use crate::session::{open_store, runtime, user};
use runbook_core::inventory::Inventory;
use runbook_core::kind::{CancellationToken, Registry};
use runbook_core::library::Library;
use runbook_runner::Runner;
use runbook_server::{ServeOptions, Server};
use std::path::PathBuf;
use std::sync::Arc;

pub(crate) fn serve(
    state: Option<PathBuf>,
    library: Library,
    registry: &Registry,
    inventory: &Inventory,
    (listen, options, tls): (&str, ServeOptions, Option<runbook_server::Tls>),
) -> Done {
    runtime()?.block_on(async {
        let runner = Runner {
            store: open_store(state).await?,
            registry: registry.clone(),
            watcher: Arc::new(crate::observe::JsonLines),
            user: user(),
            env: env(),
            inventory: inventory.to_template(),
        };
        // Refused before anything listens when the address says where.
        if let Ok(addr) = listen.parse() {
            options.identity.check_listener(addr).map_err(Failure::invalid)?;
        }
        if options.queue {
            // The queue needs shared state: refused before anything listens.
            runner.store.workers().await?;
        }
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|e| Failure::invalid(format!("cannot listen on {listen}: {e}")))?;
        if let Ok(addr) = listener.local_addr() {
            options.identity.check_listener(addr).map_err(Failure::invalid)?;
        }
        let shown = listener.local_addr().map_or(listen.to_owned(), |a| a.to_string());
        let scheme = if tls.is_some() { "https" } else { "http" };
        eprintln!("serve: the API on {scheme}://{shown}/api/v1/, the web UI on {scheme}://{shown}/");
        let server = Server::new(runner, library, options);
        let stop = CancellationToken::new();
        tokio::spawn(on_signals(server.clone(), stop.clone()));
        server.serve(listener, tls, stop).await.map_err(|e| Failure::Message {
            exit: Exit::Failed,
            message: format!("the server stopped: {e}"),
            hint: None,
        })?;
        eprintln!("serve: stopped");
        Ok(Exit::Ok)
    })
}

/// Each SIGINT/SIGTERM: the cancels it carries, else the server's stop.
async fn on_signals(server: Server, stop: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) else {
        return;
    };
    loop {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        let cancelled = server.stop_cancelled().await;
        if cancelled == 0 {
            eprintln!("serve: stopping; runs executing here stop gracefully and stay resumable");
            stop.cancel();
            return;
        }
        eprintln!("serve: {cancelled} cancelled run(s) stopping");
    }
}
