//! Who a request is counted against, for rate limits and fair shares of
//! the execution slots: its token when access control is on, else the
//! address it came from (behind a trusted proxy, the address the proxy
//! forwards, which the front service puts in place of the proxy's:
//! `api::proxies`).

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::Extensions;
use axum::http::request::Parts;

use super::auth::Caller;

/// A client, as limits and shares count it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ClientId {
    Token(usize),
    /// A token known by its fingerprint: the client of a job recovered
    /// after a restart.
    Owner(String),
    Address(IpAddr),
    /// A request without a peer address (only in-process callers).
    Unknown,
}

impl ClientId {
    /// The client of a request with these extensions, once the token check
    /// has recorded its [`Caller`].
    pub fn of(extensions: &Extensions) -> Self {
        match Caller::of(extensions) {
            Caller::Token { id, .. } => ClientId::Token(*id),
            _ => match extensions.get::<ConnectInfo<SocketAddr>>() {
                Some(ConnectInfo(addr)) => ClientId::Address(addr.ip()),
                None => ClientId::Unknown,
            },
        }
    }
}

/// Worked out when a handler asks for it, so that requests that run no
/// code (probes, reads) pay nothing for it.
impl<S: Send + Sync> FromRequestParts<S> for ClientId {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(ClientId::of(&parts.extensions))
    }
}

impl ClientId {
    /// The client as the instance table counts it.
    pub fn tenant(&self) -> crate::instances::Tenant {
        crate::instances::Tenant {
            key: format!("{self:?}"),
            name: self.to_string(),
        }
    }
}

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientId::Token(_) | ClientId::Owner(_) => f.write_str("this token"),
            ClientId::Address(ip) => write!(f, "this client ({ip})"),
            ClientId::Unknown => f.write_str("this client"),
        }
    }
}
