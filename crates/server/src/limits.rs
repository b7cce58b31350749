//! Per-address limits: which clients count as one address ([`AddrKey`]) and the request rate
//! each address may use ([`RateLimiter`], a token bucket).
//!
//! **Rate limiting delays, then refuses.** Every request that starts something (a session's
//! `Hello`, `Auth`, `Get`, `Stat`, `List`, `PutBegin`, `Mkdir`, `SetPriority`, an original
//! request) takes one token from its address's bucket, which holds at most `burst` tokens and
//! refills at `rate` per second. A request that finds the bucket empty *waits* for its token
//! (the connection's worker sleeps; well-behaved clients that pipeline a large tree are slowed,
//! not failed). Only a request that would have to wait longer than [`MAX_DELAY`] (many
//! connections of one address all queuing) is refused with `busy`, and takes no token. The
//! parts of an upload (`PutChunk`, `PutCommit`, `PutAbort`) are not counted: they belong to a
//! `PutBegin` that was, and their cost is the bytes, which the connection limits bound.
//! Nor are the `Get`s that follow a `List` on the same connection, one per listed entry (see
//! `Native::listed_get`): a client fetching the tree it just listed is not throttled, while
//! a flood of requests for names it never listed still is.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The longest a request waits for its token before it is refused instead.
pub const MAX_DELAY: Duration = Duration::from_secs(1);

/// Buckets kept before idle ones (full again) are forgotten.
const PRUNE_AT: usize = 4096;

/// The address a per-address limit applies to: an IPv4 address (an IPv4-mapped IPv6 address
/// counts as its IPv4 address), or the /64 network of an IPv6 address, since one IPv6 host
/// usually holds a whole /64 and could otherwise use a new address per connection. IPv6
/// loopback stays itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AddrKey(IpAddr);

impl AddrKey {
    /// The key of a client address.
    pub fn of(ip: IpAddr) -> AddrKey {
        match ip.to_canonical() {
            IpAddr::V6(v6) if !v6.is_loopback() => {
                let bits = u128::from(v6) & !((1u128 << 64) - 1);
                AddrKey(IpAddr::V6(Ipv6Addr::from(bits)))
            }
            other => AddrKey(other),
        }
    }
}

impl fmt::Display for AddrKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            IpAddr::V6(v6) if !v6.is_loopback() => write!(f, "{v6}/64"),
            ip => write!(f, "{ip}"),
        }
    }
}

/// What a request must do about the rate limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Go ahead now.
    Go,
    /// Go ahead after this wait (its token is reserved).
    Wait(Duration),
    /// Refuse it: the address is too far over its rate.
    Refuse,
}

/// One address's bucket.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// Tokens left; negative while requests wait for reserved ones.
    tokens: f64,
    at: Instant,
}

/// Token buckets by address.
#[derive(Debug)]
pub struct RateLimiter {
    /// Tokens per second; 0 turns the limiter off.
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<AddrKey, Bucket>>,
}

impl RateLimiter {
    /// `rate` requests per second (0: no limit), bursts of `2 × rate`.
    pub fn new(rate: u32) -> RateLimiter {
        RateLimiter {
            rate: f64::from(rate),
            burst: f64::from(rate) * 2.0,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes a token for a request from `key` at `now`.
    pub fn take(&self, key: AddrKey, now: Instant) -> Verdict {
        if self.rate <= 0.0 {
            return Verdict::Go;
        }
        let mut map = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= PRUNE_AT {
            let (rate, burst) = (self.rate, self.burst);
            map.retain(|_, b| b.tokens + now.duration_since(b.at).as_secs_f64() * rate < burst);
        }
        let b = map.entry(key).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * self.rate).min(self.burst);
        b.at = now.max(b.at);
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            return Verdict::Go;
        }
        let wait = Duration::from_secs_f64((1.0 - b.tokens) / self.rate);
        if wait > MAX_DELAY {
            return Verdict::Refuse;
        }
        b.tokens -= 1.0;
        Verdict::Wait(wait)
    }

    /// Requests per second allowed (0: no limit).
    pub fn rate(&self) -> u32 {
        self.rate as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str) -> AddrKey {
        AddrKey::of(s.parse().unwrap())
    }

    #[test]
    fn addresses_and_ipv6_networks() {
        assert_eq!(key("::ffff:10.0.0.1"), key("10.0.0.1"));
        assert_ne!(key("127.0.0.1"), key("127.0.0.2"));
        assert_ne!(key("127.0.0.1"), key("::1"));
        assert_eq!(key("2001:db8::1"), key("2001:db8::ffff:2"));
        assert_ne!(key("2001:db8::1"), key("2001:db8:0:1::1"));
        assert_eq!(key("2001:db8::7").to_string(), "2001:db8::/64");
        assert_eq!(key("::1").to_string(), "::1");
        assert_eq!(key("::ffff:10.0.0.1").to_string(), "10.0.0.1");
    }

    #[test]
    fn a_burst_then_waits_then_refusals() {
        let limiter = RateLimiter::new(10);
        let t0 = Instant::now();
        let a = key("192.0.2.1");
        for _ in 0..20 {
            assert_eq!(limiter.take(a, t0), Verdict::Go);
        }
        // The 21st waits a tenth of a second, the next two tenths, ... up to a second.
        let waits: Vec<Verdict> = (0..11).map(|_| limiter.take(a, t0)).collect();
        assert_eq!(waits[0], Verdict::Wait(Duration::from_millis(100)));
        assert_eq!(waits[9], Verdict::Wait(Duration::from_secs(1)));
        assert_eq!(waits[10], Verdict::Refuse);
        // Another address has its own bucket.
        assert_eq!(limiter.take(key("192.0.2.2"), t0), Verdict::Go);
        // Two seconds later the debt is paid and 10 tokens are back.
        let later = t0 + Duration::from_secs(2);
        for _ in 0..10 {
            assert_eq!(limiter.take(a, later), Verdict::Go);
        }
        assert!(matches!(limiter.take(a, later), Verdict::Wait(_)));
    }

    #[test]
    fn zero_means_no_limit_and_idle_buckets_are_forgotten() {
        let off = RateLimiter::new(0);
        let now = Instant::now();
        for _ in 0..10_000 {
            assert_eq!(off.take(key("192.0.2.1"), now), Verdict::Go);
        }
        let limiter = RateLimiter::new(1);
        for i in 0..PRUNE_AT as u32 {
            limiter.take(AddrKey::of(IpAddr::from(i.to_be_bytes())), now);
        }
        let later = now + Duration::from_secs(10);
        limiter.take(key("192.0.2.1"), later);
        assert_eq!(limiter.buckets.lock().unwrap().len(), 1);
    }
}
