//! Per-client-IP token buckets in front of the credential endpoints (in each replica's memory,
//! by design), and the per-client bucket for `/authn`, whose callers are a few back-ends.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use ipnet::IpNet;

use crate::app::AppState;

/// The client's address, as decided by `client_ip`.
#[derive(Debug, Clone, Copy)]
pub struct ClientIp(pub IpAddr);

pub struct RateLimits {
    per_ip: Option<DefaultKeyedRateLimiter<IpAddr>>,
    per_client: Option<DefaultKeyedRateLimiter<String>>,
    trusted: Vec<IpNet>,
}

fn quota(rate: u32, burst: u32) -> Option<Quota> {
    let rate = NonZeroU32::new(rate)?;
    Some(Quota::per_second(rate).allow_burst(NonZeroU32::new(burst.max(1)).expect("max(1)")))
}

impl RateLimits {
    pub fn new(config: &crate::Config) -> Self {
        RateLimits {
            per_ip: quota(config.ip_rate_per_second, config.ip_rate_burst).map(RateLimiter::keyed),
            per_client: quota(config.client_rate_per_second, config.client_rate_burst).map(RateLimiter::keyed),
            trusted: config.trusted_proxies.clone(),
        }
    }

    /// The rightmost `X-Forwarded-For` hop that is not a trusted proxy; the TCP peer when it
    /// is not itself a trusted proxy.
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let trusted = |ip: &IpAddr| self.trusted.iter().any(|n| n.contains(ip));
        if !trusted(&peer) {
            return peer;
        }
        let hops: Vec<IpAddr> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|h| h.trim().parse().ok())
            .collect();
        hops.iter().rev().find(|ip| !trusted(ip)).copied().unwrap_or(peer)
    }

    /// `Err(seconds to wait)` when `client_id` is over its `/authn` budget.
    pub fn check_client(&self, client_id: &str) -> Result<(), u64> {
        match &self.per_client {
            Some(l) => l.check_key(&client_id.to_string()).map_err(|n| wait_secs(&n)),
            None => Ok(()),
        }
    }

    /// Forgets idle buckets (called periodically).
    pub fn shrink(&self) {
        if let Some(l) = &self.per_ip {
            l.retain_recent();
        }
        if let Some(l) = &self.per_client {
            l.retain_recent();
        }
    }
}

fn wait_secs(n: &governor::NotUntil<<DefaultClock as Clock>::Instant>) -> u64 {
    n.wait_time_from(DefaultClock::default().now()).as_secs().max(1)
}

pub fn too_many(retry_after: u64) -> Response {
    let body = serde_json::json!({"error": "rate_limited", "error_description": "too many requests, retry later"});
    let mut r = (StatusCode::TOO_MANY_REQUESTS, axum::Json(body)).into_response();
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// Middleware for credential endpoints: records the client IP and spends one token of its bucket.
pub async fn per_ip(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    mut req: Request,
    next: Next,
) -> Response {
    let ip = state.limits.client_ip(peer.ip(), req.headers());
    req.extensions_mut().insert(ClientIp(ip));
    if let Some(l) = &state.limits.per_ip
        && let Err(n) = l.check_key(&ip)
    {
        metrics::counter!("unicred_rate_limited_total", "by" => "ip").increment(1);
        return too_many(wait_secs(&n));
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rightmost_untrusted_hop_is_the_client() {
        let cfg = crate::Config {
            trusted_proxies: vec!["10.0.0.0/8".parse().unwrap()],
            ..Default::default()
        };
        let l = RateLimits::new(&cfg);
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", "1.2.3.4, 5.6.7.8, 10.1.1.1".parse().unwrap());
        assert_eq!(l.client_ip("10.0.0.2".parse().unwrap(), &h).to_string(), "5.6.7.8");
        // An untrusted peer's header is ignored.
        assert_eq!(l.client_ip("9.9.9.9".parse().unwrap(), &h).to_string(), "9.9.9.9");
    }
}
