//! Who is asking. By default every request acts as the user the server runs
//! as. Behind an authenticating reverse proxy (oauth2-proxy, a corporate
//! SSO gateway), [`Identity::TrustedProxy`] takes the name the proxy puts in
//! a header, and only from the proxy's addresses: a request from anywhere
//! else is refused (403), and one the proxy sent without a name too (401).
//! The name is who starts, approves, rejects, resumes and cancels, as the
//! journal records it.

use crate::Shared;
use crate::error::ApiError;
use crate::tls::TlsListener;
use axum::extract::connect_info::Connected;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::serve::IncomingStream;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use tokio::net::TcpListener;

/// How a request's user is known.
#[derive(Debug, Clone, Default)]
pub enum Identity {
    /// Every request acts as the server's own user.
    #[default]
    Process,
    /// The user is what an authenticating proxy says in `header`; requests
    /// come only from the proxy's addresses.
    TrustedProxy {
        /// The header the proxy sets (e.g. `X-Forwarded-User`).
        header: String,
        /// The proxy's addresses.
        from: Vec<IpAddr>,
    },
}

/// The user a request acts as.
#[derive(Debug, Clone)]
pub(crate) struct Who(pub(crate) String);

/// The address a connection came from.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Peer(pub(crate) SocketAddr);

impl Connected<IncomingStream<'_, TcpListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, TcpListener>) -> Peer {
        Peer(*stream.remote_addr())
    }
}

impl Connected<IncomingStream<'_, TlsListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, TlsListener>) -> Peer {
        Peer(*stream.remote_addr())
    }
}

/// The longest name taken from a proxy's header.
const LONGEST: usize = 200;

/// Says who the request acts as, or refuses it.
pub(crate) async fn identify(
    State(s): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    mut req: Request,
    next: Next,
) -> Response {
    let who = match &s.options.identity {
        Identity::Process => s.runner.user.clone(),
        Identity::TrustedProxy { header, from } => {
            if !from.contains(&peer.0.ip()) {
                let mut e = ApiError::new(
                    StatusCode::FORBIDDEN,
                    format!(
                        "requests are taken only from the authenticating proxy, not from {}",
                        peer.0.ip()
                    ),
                );
                e.hint = Some("go through the proxy's address".into());
                return e.into_response();
            }
            let name = req
                .headers()
                .get(header.as_str())
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
                .filter(|n| !n.is_empty() && n.len() <= LONGEST && !n.chars().any(char::is_control));
            match name {
                Some(n) => n.to_owned(),
                None => {
                    let message = format!("the proxy did not say who is asking (no `{header}` header)");
                    return ApiError::new(StatusCode::UNAUTHORIZED, message).into_response();
                }
            }
        }
    };
    req.extensions_mut().insert(Who(who));
    next.run(req).await
}
