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
    /// is not itself a trusted proxy. Each hop was written by the trusted proxy to its right;
    /// an entry that is not a bare IP (`ip:port`, `unknown`, an unreadable header) ends the
    /// walk at the last trusted hop, as nothing left of it can be trusted. IPv4-mapped IPv6
    /// addresses (a dual-stack listener's peers) count as their IPv4 address.
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let trusted = |ip: &IpAddr| self.trusted.iter().any(|n| n.contains(ip));
        let mut client = peer.to_canonical();
        if !trusted(&client) {
            return client;
        }
        // Right to left: the last header is the nearest proxy's, its last entry the newest.
        for value in headers.get_all("x-forwarded-for").iter().rev() {
            let Ok(value) = value.to_str() else { return client };
            for hop in value.rsplit(',') {
                match hop.trim().parse::<IpAddr>().map(|ip| ip.to_canonical()) {
                    Ok(ip) if trusted(&ip) => client = ip,
                    Ok(ip) => return ip,
                    Err(_) => return client,
                }
            }
        }
        client
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

/// The bucket a client address (canonical, from [`RateLimits::client_ip`]) spends from: its
/// own for IPv4, its /64 for IPv6 (one customer's usual allocation: per address, anyone with
/// a /64 would get a fresh bucket per request and fill the limiter's memory with them).
fn bucket(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
    }
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
        && let Err(n) = l.check_key(&bucket(ip))
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
    fn an_ipv6_slash_64_shares_one_bucket() {
        let cfg = crate::Config {
            ip_rate_per_second: 1,
            ip_rate_burst: 2,
            ..Default::default()
        };
        let l = RateLimits::new(&cfg);
        let per_ip = l.per_ip.as_ref().unwrap();
        let spend = |ip: &str| per_ip.check_key(&bucket(ip.parse().unwrap())).is_ok();
        assert!(spend("2001:db8:0:1::1"));
        assert!(spend("2001:db8:0:1::2"));
        assert!(!spend("2001:db8:0:1:ffff::3"), "same /64: the bucket is spent");
        assert!(spend("2001:db8:0:2::1"), "another /64 has its own");
        assert!(spend("192.0.2.1") && spend("192.0.2.1") && !spend("192.0.2.1"));
        assert!(spend("192.0.2.2"), "IPv4 addresses have their own");
        let mapped = l.client_ip("::ffff:192.0.2.1".parse().unwrap(), &HeaderMap::new());
        assert!(
            per_ip.check_key(&bucket(mapped)).is_err(),
            "an IPv4-mapped address is its IPv4 address"
        );
    }

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
        // A dual-stack listener's IPv4-mapped peer is the trusted proxy it is.
        assert_eq!(
            l.client_ip("::ffff:10.0.0.2".parse().unwrap(), &h).to_string(),
            "5.6.7.8"
        );
        // A hop the proxy wrote that is not a bare IP: the client cannot pick its address by
        // putting one further left; the walk stops at the last trusted hop.
        for garbage in [
            "7.7.7.7, 5.6.7.8:4711",
            "7.7.7.7, unknown",
            "7.7.7.7, [2001:db8::1]:443",
        ] {
            let mut h = HeaderMap::new();
            h.insert("x-forwarded-for", garbage.parse().unwrap());
            assert_eq!(
                l.client_ip("10.0.0.2".parse().unwrap(), &h).to_string(),
                "10.0.0.2",
                "{garbage}"
            );
        }
        // Two headers: the last one is the nearest proxy's.
        let mut h = HeaderMap::new();
        h.append("x-forwarded-for", "7.7.7.7".parse().unwrap());
        h.append("x-forwarded-for", "5.6.7.8, 10.1.1.1".parse().unwrap());
        assert_eq!(l.client_ip("10.0.0.2".parse().unwrap(), &h).to_string(), "5.6.7.8");
    }
}
