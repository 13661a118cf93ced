//! Per-client rate limiting: `429 rate_limited` with `Retry-After`.
//!
//! A client ([`ClientId`]) is its token when access control is on, else
//! its IP address.
//! Each gets a token bucket (GCRA, from `governor`) of `--rate-limit`
//! requests per second with a burst of twice that; the always-open pages
//! and probes ([`super::auth::is_public`]) are not counted. Off by default: on loopback, a limit
//! would only get in the way of benchmarks and local tools.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

use super::client::ClientId;
use super::error::{ApiError, ErrorCode};

/// The keyed limiter, or nothing when rate limiting is off.
#[derive(Clone, Default)]
pub struct RateLimits {
    limiter: Option<Arc<DefaultKeyedRateLimiter<ClientId>>>,
}

impl RateLimits {
    /// `per_second` requests a second per client (0 turns limiting off),
    /// with a burst of twice that.
    pub fn new(per_second: u32) -> Self {
        let Some(rate) = NonZeroU32::new(per_second) else {
            return RateLimits::default();
        };
        let burst = NonZeroU32::new(per_second.saturating_mul(2)).unwrap_or(rate);
        let limiter = Arc::new(DefaultKeyedRateLimiter::keyed(
            Quota::per_second(rate).allow_burst(burst),
        ));
        // Forget idle clients now and then, so the key map stays small.
        let weak = Arc::downgrade(&limiter);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            loop {
                tick.tick().await;
                match weak.upgrade() {
                    Some(limiter) => limiter.retain_recent(),
                    None => break,
                }
            }
        });
        RateLimits { limiter: Some(limiter) }
    }
}

/// Counts the request against its client's bucket; the `429` response, if
/// the bucket is empty. Called by the front middleware (`api::logging`),
/// after the token check has recorded the caller.
pub fn check_rate(limits: &RateLimits, request: &Request) -> Option<Response> {
    let Some(limiter) = &limits.limiter else {
        return None;
    };
    let path = request.uri().path();
    if super::auth::is_public(request.method(), path) {
        return None;
    }
    match limiter.check_key(&ClientId::of(request.extensions())) {
        Ok(()) => None,
        Err(not_until) => {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            let mut response = ApiError::new(
                ErrorCode::RateLimited,
                format!("too many requests from this client; retry in {seconds} s"),
            )
            .into_response();
            if let Ok(value) = HeaderValue::from_str(&seconds.max(1).to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
            Some(response)
        }
    }
}
