//! Idempotency stores: at most one run of a handler per key within a time window
//! (B-IDEM-1/2/3).
//!
//! A claim is a claim with a **time to live**: it expires by itself, so a consumer that crashes after claiming
//! does not turn its message into a skip. Only [`IdempotencyStore::complete`] records the
//! key as done for the full TTL.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use crate::deadline;
use crate::error::Result;

/// The answer to a claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Claim {
    /// The caller holds the claim and should run the handler.
    Acquired,
    /// The key was already completed: the handler ran; skip it.
    Done,
    /// Another run holds an unexpired claim on the key.
    Busy,
}

/// Where idempotency keys are kept. Usable with any backend.
#[async_trait]
pub trait IdempotencyStore: Send + Sync + fmt::Debug + 'static {
    /// Claims `key` for `claim_ttl` unless it is already claimed or done.
    async fn claim(&self, key: &str, claim_ttl: Duration) -> Result<Claim>;
    /// Records `key` as done for `ttl`, replacing the claim.
    async fn complete(&self, key: &str, ttl: Duration) -> Result<()>;
    /// Drops a claim so the next delivery runs (after a failed handler).
    async fn release(&self, key: &str) -> Result<()>;
    /// Extends a claim that is still held to `claim_ttl` from now, while its handler runs
    /// (the bus's keep-alive calls it). Returns `false` when the key is no longer
    /// claimed (expired, released or done). The default does nothing and returns
    /// `false`: a store that cannot renew lets a claim expire after its first time to live.
    async fn renew(&self, key: &str, claim_ttl: Duration) -> Result<bool> {
        let _ = (key, claim_ttl);
        Ok(false)
    }
}

#[async_trait]
impl<S: IdempotencyStore + ?Sized> IdempotencyStore for std::sync::Arc<S> {
    async fn claim(&self, key: &str, claim_ttl: Duration) -> Result<Claim> {
        (**self).claim(key, claim_ttl).await
    }
    async fn complete(&self, key: &str, ttl: Duration) -> Result<()> {
        (**self).complete(key, ttl).await
    }
    async fn release(&self, key: &str) -> Result<()> {
        (**self).release(key).await
    }
    async fn renew(&self, key: &str, claim_ttl: Duration) -> Result<bool> {
        (**self).renew(key, claim_ttl).await
    }
}

#[derive(Debug, Clone, Copy)]
enum Entry {
    Claimed(Instant),
    Done(Instant),
}

/// An in-process [`IdempotencyStore`]: for tests, development and single-process apps.
/// Expired keys are swept as new ones arrive, so memory stays bounded by the live keys.
#[derive(Clone, Default)]
pub struct MemoryIdempotencyStore {
    keys: Arc<Mutex<HashMap<String, Entry>>>,
}

impl fmt::Debug for MemoryIdempotencyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.keys.lock().map(|k| k.len()).unwrap_or(0);
        f.debug_struct("MemoryIdempotencyStore")
            .field("keys", &n)
            .finish()
    }
}

impl MemoryIdempotencyStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn with<R>(&self, f: impl FnOnce(&mut HashMap<String, Entry>) -> R) -> R {
        let mut guard = match self.keys.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        f(&mut guard)
    }
}

#[async_trait]
impl IdempotencyStore for MemoryIdempotencyStore {
    async fn claim(&self, key: &str, claim_ttl: Duration) -> Result<Claim> {
        let now = Instant::now();
        Ok(self.with(|keys| {
            if keys.len() > 1024 && keys.len().is_power_of_two() {
                keys.retain(|_, e| match e {
                    Entry::Claimed(t) | Entry::Done(t) => *t > now,
                });
            }
            match keys.get(key) {
                Some(Entry::Done(until)) if *until > now => Claim::Done,
                Some(Entry::Claimed(until)) if *until > now => Claim::Busy,
                _ => {
                    keys.insert(
                        key.to_owned(),
                        Entry::Claimed(deadline::after(now, claim_ttl)),
                    );
                    Claim::Acquired
                }
            }
        }))
    }

    async fn complete(&self, key: &str, ttl: Duration) -> Result<()> {
        let until = deadline::from_now(ttl);
        self.with(|keys| keys.insert(key.to_owned(), Entry::Done(until)));
        Ok(())
    }

    async fn renew(&self, key: &str, claim_ttl: Duration) -> Result<bool> {
        let now = Instant::now();
        let until = deadline::after(now, claim_ttl);
        Ok(self.with(|keys| match keys.get_mut(key) {
            Some(Entry::Claimed(t)) if *t > now => {
                *t = until;
                true
            }
            _ => false,
        }))
    }

    async fn release(&self, key: &str) -> Result<()> {
        self.with(|keys| {
            if matches!(keys.get(key), Some(Entry::Claimed(_))) {
                keys.remove(key);
            }
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_claim_expires_by_itself() {
        let s = MemoryIdempotencyStore::new();
        let claim_ttl = Duration::from_secs(5);
        assert_eq!(s.claim("k", claim_ttl).await.ok(), Some(Claim::Acquired));
        assert_eq!(s.claim("k", claim_ttl).await.ok(), Some(Claim::Busy));
        tokio::time::advance(Duration::from_secs(6)).await;
        // The first claimer crashed: its claim_ttl expired, the key runs again.
        assert_eq!(s.claim("k", claim_ttl).await.ok(), Some(Claim::Acquired));
        s.complete("k", Duration::from_secs(60)).await.ok();
        assert_eq!(s.claim("k", claim_ttl).await.ok(), Some(Claim::Done));
        s.release("k").await.ok();
        assert_eq!(s.claim("k", claim_ttl).await.ok(), Some(Claim::Done));
        tokio::time::advance(Duration::from_secs(61)).await;
        assert_eq!(s.claim("k", claim_ttl).await.ok(), Some(Claim::Acquired));
        s.release("k").await.ok();
        assert_eq!(s.claim("k", claim_ttl).await.ok(), Some(Claim::Acquired));
    }
}
