//! Optional bearer-token access control with two scopes.
//!
//! With no tokens configured every endpoint is open (and the server binds
//! loopback by default). With tokens, every endpoint but the public pages
//! (`GET /` and its assets, `/docs`, `/openapi.json`) and the operator's
//! (`/healthz`, `/readyz`, `/metrics`) needs `Authorization: Bearer <token>`: `execute` tokens
//! may run code, read the registry and use instances; `admin` tokens may
//! also register and delete modules. A missing or unknown token is `401`,
//! a token without the needed scope `403`.
//!
//! Tokens are kept only as SHA-256 digests and compared in constant time,
//! every configured token checked on every request, so neither timing nor
//! early exit tells an attacker how close a guess was. They are never
//! logged.

use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderValue, Method, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::error::{ApiError, ErrorCode};
use crate::engine::encode_hex;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    /// Run code, read the registry, use instances.
    Execute,
    /// Everything `execute` may, plus register and delete modules.
    Admin,
}

impl Scope {
    fn parse(s: &str) -> Option<Scope> {
        match s {
            "execute" => Some(Scope::Execute),
            "admin" => Some(Scope::Admin),
            _ => None,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Scope::Execute => "execute",
            Scope::Admin => "admin",
        }
    }
}

/// Who made a request, as far as access control knows. A caller with a
/// token is put into the request's extensions for handlers (instances are
/// owned by the token that made them); no entry means [`Caller::Anonymous`],
/// which spares every request without a token an extension of its own (an
/// allocation, and often the growth of the extensions' table).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// No tokens are configured: everyone is the same anonymous caller.
    Anonymous,
    /// A caller that presented token number `id` with `scope`.
    /// `fingerprint` is a stable, non-secret name for the token (a prefix of
    /// its digest), stored with the modules it registers.
    Token {
        id: usize,
        scope: Scope,
        fingerprint: String,
    },
}

impl Caller {
    /// The token's fingerprint; `None` when access control is off.
    pub fn fingerprint(&self) -> Option<String> {
        match self {
            Caller::Token { fingerprint, .. } => Some(fingerprint.clone()),
            Caller::Anonymous => None,
        }
    }

    /// The caller recorded in a request's extensions.
    pub fn of(extensions: &axum::http::Extensions) -> &Caller {
        extensions.get::<Caller>().unwrap_or(&Caller::Anonymous)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(Caller::of(&parts.extensions).clone())
    }
}

impl Caller {
    /// Whether this caller may see everything (no access control, or admin).
    pub fn sees_all(&self) -> bool {
        matches!(
            self,
            Caller::Anonymous
                | Caller::Token {
                    scope: Scope::Admin,
                    ..
                }
        )
    }
}

/// The configured tokens.
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    digests: Vec<([u8; 32], Scope)>,
}

impl Tokens {
    /// Parses `scope:secret` entries (from flags, the environment, or lines
    /// of a tokens file, where blank lines and `#` comments are skipped).
    pub fn parse<'a>(entries: impl IntoIterator<Item = &'a str>) -> Result<Self, String> {
        let mut digests = Vec::new();
        for entry in entries
            .into_iter()
            .map(str::trim)
            .filter(|e| !e.is_empty() && !e.starts_with('#'))
        {
            let (scope, secret) = entry
                .split_once(':')
                .ok_or_else(|| "a token is written `scope:secret`, with scope `admin` or `execute`".to_string())?;
            let scope = Scope::parse(scope.trim())
                .ok_or_else(|| format!("unknown token scope `{}`: use `admin` or `execute`", scope.trim()))?;
            if secret.len() < 16 {
                return Err(format!(
                    "a `{}` token is shorter than 16 characters; use a long random secret",
                    scope.as_str()
                ));
            }
            digests.push((Sha256::digest(secret.as_bytes()).into(), scope));
        }
        Ok(Tokens { digests })
    }

    pub fn is_empty(&self) -> bool {
        self.digests.is_empty()
    }

    pub fn len(&self) -> usize {
        self.digests.len()
    }

    /// The token matching `presented`, checking all of them in constant time.
    fn find(&self, presented: &str) -> Option<(usize, Scope)> {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let mut found = None;
        for (id, (known, scope)) in self.digests.iter().enumerate() {
            if bool::from(known.ct_eq(&digest)) {
                found = Some((id, *scope));
            }
        }
        found
    }
}

/// The public pages (playground, docs) and the operator's endpoints
/// (health, readiness, metrics): open to all, and not rate-limited.
pub fn is_public(method: &Method, path: &str) -> bool {
    method == Method::GET
        && (matches!(
            path,
            "/" | "/healthz" | "/readyz" | "/metrics" | "/openapi.json" | "/docs"
        ) || path.starts_with("/docs/")
            || path.starts_with("/assets/"))
}

/// The scope an endpoint needs; `None` for the open ones.
fn needed_scope(method: &Method, path: &str) -> Option<Scope> {
    match (method, path) {
        (m, p) if is_public(m, p) => None,
        (&Method::POST, "/register") => Some(Scope::Admin),
        (&Method::DELETE, p) if p.starts_with("/modules/") => Some(Scope::Admin),
        _ => Some(Scope::Execute),
    }
}

/// Checks the bearer token against the endpoint's scope and records a
/// token's [`Caller`] for handlers; the refusal's response, if refused.
/// Called by the front service (`api::logging`).
pub fn check_token(tokens: &Tokens, request: &mut Request) -> Option<Response> {
    if tokens.is_empty() {
        return None;
    }
    // An open endpoint needs no token.
    let needed = needed_scope(request.method(), request.uri().path())?;
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let Some((id, scope)) = presented.and_then(|token| tokens.find(token)) else {
        let message = if presented.is_some() {
            "the bearer token is not valid"
        } else {
            "this endpoint needs `Authorization: Bearer <token>`"
        };
        let mut response = ApiError::new(ErrorCode::Unauthorized, message).into_response();
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return Some(response);
    };
    if scope < needed {
        return Some(
            ApiError::new(
                ErrorCode::Forbidden,
                format!(
                    "this endpoint needs a token with the `{}` scope; this one has `{}`",
                    needed.as_str(),
                    scope.as_str()
                ),
            )
            .into_response(),
        );
    }
    let fingerprint = encode_hex(&tokens.digests[id].0[..8]);
    request
        .extensions_mut()
        .insert(Caller::Token { id, scope, fingerprint });
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_parse_and_match_by_secret() {
        let tokens = Tokens::parse([
            "# ops",
            "admin:0123456789abcdef-admin",
            "",
            "execute:0123456789abcdef-exec",
        ])
        .unwrap();
        assert_eq!(tokens.len(), 2);
        assert_eq!(tokens.find("0123456789abcdef-exec"), Some((1, Scope::Execute)));
        assert_eq!(tokens.find("0123456789abcdef-admin"), Some((0, Scope::Admin)));
        assert_eq!(tokens.find("0123456789abcdef"), None);
    }

    #[test]
    fn bad_token_entries_are_refused() {
        assert!(
            Tokens::parse(["root:0123456789abcdef"])
                .unwrap_err()
                .contains("unknown token scope")
        );
        assert!(Tokens::parse(["admin:short"]).unwrap_err().contains("shorter than 16"));
        assert!(Tokens::parse(["justasecretwithoutscope"]).is_err());
    }

    #[test]
    fn scopes_follow_the_endpoints() {
        assert_eq!(needed_scope(&Method::GET, "/healthz"), None);
        assert_eq!(needed_scope(&Method::POST, "/register"), Some(Scope::Admin));
        assert_eq!(needed_scope(&Method::DELETE, "/modules/x"), Some(Scope::Admin));
        assert_eq!(needed_scope(&Method::POST, "/"), Some(Scope::Execute));
        assert_eq!(needed_scope(&Method::DELETE, "/instances/x"), Some(Scope::Execute));
    }
}
