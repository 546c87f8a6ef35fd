//! Rate limits on subscribe and registration storms (docs/SECURITY.md): a token bucket per
//! peer IP and per principal for each kind of attempt, and a cap on open subscription
//! streams. Pure over time (`now` is a parameter); the edge calls it with the clock.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// How many attempts a key may make: `burst` at once, then `per_second` on average.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    pub per_second: f64,
    pub burst: u32,
}

impl Rate {
    /// A usable rate: positive and finite, at least one attempt of burst.
    pub fn new(per_second: f64, burst: u32) -> Option<Rate> {
        (per_second.is_finite() && per_second > 0.0 && burst >= 1)
            .then_some(Rate { per_second, burst })
    }

    /// Time to refill one token.
    fn interval(&self) -> Duration {
        Duration::from_secs_f64((1.0 / self.per_second).min(86_400.0))
    }
}

/// A token bucket: starts full (`burst` tokens), refills continuously at `per_second`.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenBucket {
    tokens: f64,
    updated: Instant,
}

impl TokenBucket {
    pub fn full(rate: &Rate, now: Instant) -> TokenBucket {
        TokenBucket {
            tokens: f64::from(rate.burst),
            updated: now,
        }
    }

    fn refill(&mut self, rate: &Rate, now: Instant) {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate.per_second).min(f64::from(rate.burst));
        self.updated = self.updated.max(now);
    }

    /// Takes a token, or says how long until one is available.
    pub fn take(&mut self, rate: &Rate, now: Instant) -> Result<(), Duration> {
        self.refill(rate, now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Ok(());
        }
        let missing = 1.0 - self.tokens;
        Err(Duration::from_secs_f64(missing / rate.per_second).max(Duration::from_millis(1)))
    }

    /// Whether the bucket is back to full (forgetting it loses nothing).
    fn is_full(&self, rate: &Rate, now: Instant) -> bool {
        let mut b = self.clone();
        b.refill(rate, now);
        b.tokens >= f64::from(rate.burst)
    }
}

/// One bucket per key (peer IP, principal), with a bounded number of keys.
#[derive(Debug)]
pub struct Limiter<K> {
    rate: Rate,
    buckets: HashMap<K, TokenBucket>,
    max_keys: usize,
}

impl<K: Hash + Eq + Clone> Limiter<K> {
    pub fn new(rate: Rate, max_keys: usize) -> Limiter<K> {
        Limiter {
            rate,
            buckets: HashMap::new(),
            max_keys: max_keys.max(1),
        }
    }

    /// Takes a token from `key`'s bucket, or says how long until it has one.
    pub fn take(&mut self, key: &K, now: Instant) -> Result<(), Duration> {
        if !self.buckets.contains_key(key) && self.buckets.len() >= self.max_keys {
            self.forget_full(now);
            if self.buckets.len() >= self.max_keys {
                // Every tracked key is mid-storm: refuse new keys too rather than grow
                // without bound (a spoofed-address flood cannot eat the master's memory).
                return Err(self.rate.interval());
            }
        }
        let rate = self.rate;
        self.buckets
            .entry(key.clone())
            .or_insert_with(|| TokenBucket::full(&rate, now))
            .take(&rate, now)
    }

    /// Drops the buckets that are full again.
    pub fn forget_full(&mut self, now: Instant) {
        let rate = self.rate;
        self.buckets.retain(|_, b| !b.is_full(&rate, now));
    }

    pub fn tracked(&self) -> usize {
        self.buckets.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(per_second: f64, burst: u32) -> Rate {
        Rate::new(per_second, burst).expect("valid rate")
    }

    #[test]
    fn invalid_rates_are_refused() {
        assert!(Rate::new(0.0, 5).is_none());
        assert!(Rate::new(-1.0, 5).is_none());
        assert!(Rate::new(f64::NAN, 5).is_none());
        assert!(Rate::new(1.0, 0).is_none());
    }

    #[test]
    fn a_bucket_allows_its_burst_then_refills_at_the_rate() {
        let r = rate(2.0, 3);
        let t0 = Instant::now();
        let mut b = TokenBucket::full(&r, t0);
        for _ in 0..3 {
            assert_eq!(b.take(&r, t0), Ok(()));
        }
        // Empty: the next token comes in 1/2 s.
        assert_eq!(b.take(&r, t0), Err(Duration::from_millis(500)));
        // A quarter second later, a quarter second more to wait.
        assert_eq!(
            b.take(&r, t0 + Duration::from_millis(250)),
            Err(Duration::from_millis(250))
        );
        assert_eq!(b.take(&r, t0 + Duration::from_millis(500)), Ok(()));
        // A long pause refills to the burst, not beyond.
        let later = t0 + Duration::from_secs(100);
        for _ in 0..3 {
            assert_eq!(b.take(&r, later), Ok(()));
        }
        assert!(b.take(&r, later).is_err());
    }

    #[test]
    fn time_going_backwards_does_not_mint_tokens() {
        let r = rate(1.0, 1);
        let t0 = Instant::now() + Duration::from_secs(10);
        let mut b = TokenBucket::full(&r, t0);
        assert_eq!(b.take(&r, t0), Ok(()));
        assert!(b.take(&r, t0 - Duration::from_secs(5)).is_err());
        assert!(b.take(&r, t0).is_err());
    }

    #[test]
    fn keys_have_their_own_buckets() {
        let mut l = Limiter::new(rate(1.0, 2), 100);
        let t0 = Instant::now();
        assert!(l.take(&"a", t0).is_ok());
        assert!(l.take(&"a", t0).is_ok());
        assert!(l.take(&"a", t0).is_err());
        assert!(l.take(&"b", t0).is_ok(), "another key is not affected");
        assert_eq!(l.tracked(), 2);
    }

    #[test]
    fn the_number_of_keys_is_bounded() {
        let mut l = Limiter::new(rate(1.0, 1), 2);
        let t0 = Instant::now();
        assert!(l.take(&1, t0).is_ok());
        assert!(l.take(&2, t0).is_ok());
        // Both buckets are empty: a third key is refused instead of tracked.
        assert_eq!(l.take(&3, t0), Err(Duration::from_secs(1)));
        assert_eq!(l.tracked(), 2);
        // Once they refilled they are forgotten and the new key gets a bucket.
        let later = t0 + Duration::from_secs(5);
        assert!(l.take(&3, later).is_ok());
        assert_eq!(l.tracked(), 1);
    }
}

/// What a client is attempting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Attempt {
    /// A framework subscribing (gRPC or the Mesos HTTP API).
    Subscribe,
    /// An agent opening its stream to register.
    Register,
}

impl Attempt {
    pub fn name(self) -> &'static str {
        match self {
            Attempt::Subscribe => "subscribe",
            Attempt::Register => "register",
        }
    }
}

/// The master's limits; `None` turns one off. The library default is off (like the rest
/// of [`crate::MasterSecurity`]); `brim master` turns them on ([`RateLimits::recommended`]).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct RateLimits {
    /// Framework subscriptions, per peer IP and (separately) per principal.
    pub subscribe: Option<Rate>,
    /// Agent registrations, per peer IP and per principal.
    pub register: Option<Rate>,
    /// Subscription streams (gRPC and Mesos HTTP) open at once.
    pub max_subscriptions: Option<usize>,
}

impl RateLimits {
    /// `brim master`'s defaults: far above what a healthy cluster does (a framework
    /// subscribes once per connection; an agent registers once per master), low enough that
    /// one misbehaving client cannot keep the master busy.
    pub fn recommended() -> RateLimits {
        RateLimits {
            subscribe: Rate::new(10.0, 50),
            register: Rate::new(20.0, 200),
            max_subscriptions: Some(10_000),
        }
    }
}

/// How many distinct IPs / principals a limiter tracks at most.
const MAX_KEYS: usize = 65_536;

/// Why an attempt was refused, and when to try again.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    pub attempt: &'static str,
    pub retry_after: Duration,
    pub why: String,
}

struct Buckets {
    by_ip: Limiter<std::net::IpAddr>,
    by_principal: Limiter<String>,
}

impl Buckets {
    fn new(rate: Rate) -> Buckets {
        Buckets {
            by_ip: Limiter::new(rate, MAX_KEYS),
            by_principal: Limiter::new(rate, MAX_KEYS),
        }
    }
}

/// The limiters of one master and its count of open subscription streams.
pub struct Throttle {
    limits: RateLimits,
    subscribe: Option<std::sync::Mutex<Buckets>>,
    register: Option<std::sync::Mutex<Buckets>>,
    open: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

/// A place among the open subscription streams, given back when dropped.
#[derive(Debug)]
pub struct StreamSlot(std::sync::Arc<std::sync::atomic::AtomicUsize>);

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

impl Throttle {
    pub fn new(limits: RateLimits) -> Throttle {
        let buckets = |r: Option<Rate>| r.map(|r| std::sync::Mutex::new(Buckets::new(r)));
        Throttle {
            limits,
            subscribe: buckets(limits.subscribe),
            register: buckets(limits.register),
            open: Default::default(),
        }
    }

    pub fn limits(&self) -> RateLimits {
        self.limits
    }

    /// Counts an attempt from `ip` by `principal` against both buckets of its kind.
    pub fn admit(
        &self,
        attempt: Attempt,
        ip: Option<std::net::IpAddr>,
        principal: Option<&str>,
        now: Instant,
    ) -> Result<(), Refusal> {
        let limiter = match attempt {
            Attempt::Subscribe => &self.subscribe,
            Attempt::Register => &self.register,
        };
        let Some(limiter) = limiter else {
            return Ok(());
        };
        let mut b = limiter
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let refuse = |retry_after: Duration, who: String| Refusal {
            attempt: attempt.name(),
            retry_after,
            why: format!(
                "too many {} attempts from {who}; retry in {:.1}s",
                attempt.name(),
                retry_after.as_secs_f64()
            ),
        };
        if let Some(ip) = ip {
            b.by_ip
                .take(&ip, now)
                .map_err(|d| refuse(d, format!("{ip}")))?;
        }
        if let Some(p) = principal {
            b.by_principal
                .take(&p.to_string(), now)
                .map_err(|d| refuse(d, format!("principal `{p}`")))?;
        }
        Ok(())
    }

    /// A place for one more subscription stream, unless `max_subscriptions` are open.
    pub fn open_stream(&self) -> Result<StreamSlot, Refusal> {
        use std::sync::atomic::Ordering;
        let before = self.open.fetch_add(1, Ordering::AcqRel);
        let slot = StreamSlot(self.open.clone());
        match self.limits.max_subscriptions {
            Some(max) if before >= max => Err(Refusal {
                attempt: "streams",
                retry_after: Duration::from_secs(5),
                why: format!(
                    "this master already serves {max} subscription streams (--max-subscriptions); retry later or use another cluster"
                ),
            }),
            _ => Ok(slot),
        }
    }

    /// Subscription streams open now.
    pub fn open_streams(&self) -> usize {
        self.open.load(std::sync::atomic::Ordering::Acquire)
    }
}

#[cfg(test)]
mod throttle_tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr};

    const A: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
    const B: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2));

    fn limits() -> RateLimits {
        RateLimits {
            subscribe: Rate::new(1.0, 2),
            register: None,
            max_subscriptions: Some(2),
        }
    }

    #[test]
    fn a_storm_from_one_ip_spares_other_ips_and_principals() {
        let t = Throttle::new(limits());
        let now = Instant::now();
        let mut refused = 0;
        for _ in 0..100 {
            if t.admit(Attempt::Subscribe, Some(A), Some("storm"), now)
                .is_err()
            {
                refused += 1;
            }
        }
        assert_eq!(refused, 98);
        assert!(t
            .admit(Attempt::Subscribe, Some(B), Some("calm"), now)
            .is_ok());
        // The storm's principal is throttled from anywhere.
        let r = t.admit(Attempt::Subscribe, Some(B), Some("storm"), now);
        let r = r.expect_err("the principal's bucket is empty");
        assert!(r.why.contains("principal `storm`"), "{r:?}");
        assert_eq!(r.retry_after, Duration::from_secs(1));
        assert_eq!(r.attempt, "subscribe");
    }

    #[test]
    fn an_unlimited_kind_is_always_admitted() {
        let t = Throttle::new(limits());
        let now = Instant::now();
        for _ in 0..1000 {
            assert!(t
                .admit(Attempt::Register, Some(A), Some("agent"), now)
                .is_ok());
        }
        let off = Throttle::new(RateLimits::default());
        for _ in 0..1000 {
            assert!(off.admit(Attempt::Subscribe, Some(A), None, now).is_ok());
        }
    }

    #[test]
    fn open_streams_are_capped_and_given_back() {
        let t = Throttle::new(limits());
        let a = t.open_stream().expect("first");
        let _b = t.open_stream().expect("second");
        assert!(t.open_stream().is_err());
        assert_eq!(t.open_streams(), 2, "a refused slot is given back at once");
        drop(a);
        assert!(t.open_stream().is_ok());
    }
}
