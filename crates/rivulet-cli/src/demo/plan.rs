//! The demo's workload: which orders exist, which fail and how, which are sent twice.
//!
//! Everything is drawn from one seeded generator, so a seed reproduces the same pattern.

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

/// Share of orders whose billing fails once with a retryable error.
const TRANSIENT_PERCENT: usize = 5;
/// Share of orders published a second time (same order id, new message).
const DUPLICATE_PERCENT: usize = 3;
/// How many messages later, at most, a duplicate follows its original.
const DUPLICATE_MAX_LAG: usize = 64;

/// The failure an order carries into the pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Fault {
    /// Billing fails on the first attempt with a retryable error, then succeeds.
    Transient,
    /// Billing refuses it with a permanent error: it ends in the dead-letter queue.
    Poison,
}

/// The message published on the topic.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Order {
    pub(crate) id: u64,
    pub(crate) customer: String,
    pub(crate) amount_cents: u64,
    /// When the demo published it, in microseconds since the Unix epoch: the origin of
    /// the publish → handle latency (wall clock, so it also works across processes).
    pub(crate) sent_at_us: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) fault: Option<Fault>,
}

/// The messages to publish, in order, and what was injected into them.
#[derive(Debug)]
pub(crate) struct Plan {
    pub(crate) messages: Vec<Order>,
    pub(crate) orders: u64,
    pub(crate) poison: u64,
    /// Orders with a transient fault.
    pub(crate) transient_orders: u64,
    /// Messages with a transient fault (a duplicated order counts twice): billing,
    /// which is not idempotent, retries each of them once.
    pub(crate) transient_messages: u64,
    /// Orders published a second time.
    pub(crate) duplicates: u64,
}

/// `percent`% of `n`, rounded up, so any non-empty run injects at least one.
fn share(n: usize, percent: usize) -> usize {
    (n * percent).div_ceil(100)
}

impl Plan {
    pub(crate) fn new(orders: u64, poison: u64, seed: u64) -> Plan {
        let mut rng = StdRng::seed_from_u64(seed);
        let n = usize::try_from(orders).unwrap_or(usize::MAX);
        let poison = usize::try_from(poison).unwrap_or(usize::MAX).min(n);
        let transient = share(n, TRANSIENT_PERCENT).min(n - poison);
        // Poison orders are never duplicated: each must be dead-lettered exactly once.
        let duplicates = share(n, DUPLICATE_PERCENT).min(n - poison);

        let mut base: Vec<Order> = (0..n)
            .map(|i| Order {
                id: 100_000 + i as u64,
                customer: format!("customer-{}", rng.random_range(1..=500)),
                amount_cents: rng.random_range(199..=49_999),
                sent_at_us: 0,
                fault: None,
            })
            .collect();

        let mut picks: Vec<usize> = (0..n).collect();
        picks.shuffle(&mut rng);
        for &i in &picks[..poison] {
            base[i].fault = Some(Fault::Poison);
        }
        for &i in &picks[poison..poison + transient] {
            base[i].fault = Some(Fault::Transient);
        }
        let mut healthy: Vec<usize> = picks[poison..].to_vec();
        healthy.shuffle(&mut rng);

        // Each message gets a sort key: originals in order, a duplicate a little after
        // its original.
        let mut keyed: Vec<((usize, u8), usize)> = (0..n).map(|i| ((i, 0), i)).collect();
        let mut transient_messages = transient;
        for &i in &healthy[..duplicates] {
            let lag = rng.random_range(1..=DUPLICATE_MAX_LAG);
            keyed.push(((i + lag, 1), i));
            if base[i].fault == Some(Fault::Transient) {
                transient_messages += 1;
            }
        }
        keyed.sort_unstable_by_key(|(k, _)| *k);
        let messages = keyed.into_iter().map(|(_, i)| base[i].clone()).collect();

        Plan {
            messages,
            orders,
            poison: poison as u64,
            transient_orders: transient as u64,
            transient_messages: transient_messages as u64,
            duplicates: duplicates as u64,
        }
    }

    /// How many messages the plan publishes.
    pub(crate) fn len(&self) -> u64 {
        self.messages.len() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn counts_match_the_messages() {
        let plan = Plan::new(1000, 5, 7);
        assert_eq!(plan.poison, 5);
        assert_eq!(plan.transient_orders, 50);
        assert_eq!(plan.duplicates, 30);
        assert_eq!(plan.len(), 1030);
        let mut seen: HashMap<u64, usize> = HashMap::new();
        for m in &plan.messages {
            *seen.entry(m.id).or_default() += 1;
        }
        assert_eq!(seen.len(), 1000);
        assert_eq!(seen.values().filter(|&&c| c == 2).count(), 30);
        let poison = plan
            .messages
            .iter()
            .filter(|m| m.fault == Some(Fault::Poison))
            .count();
        assert_eq!(poison, 5, "poison orders are never duplicated");
        let transient = plan
            .messages
            .iter()
            .filter(|m| m.fault == Some(Fault::Transient))
            .count() as u64;
        assert_eq!(transient, plan.transient_messages);
    }

    #[test]
    fn a_seed_reproduces_the_plan() {
        let a = Plan::new(200, 3, 42);
        let b = Plan::new(200, 3, 42);
        let ids = |p: &Plan| {
            p.messages
                .iter()
                .map(|m| (m.id, m.fault))
                .collect::<Vec<_>>()
        };
        assert_eq!(ids(&a), ids(&b));
    }

    #[test]
    fn tiny_and_all_poison_runs_are_consistent() {
        let plan = Plan::new(3, 5, 1);
        assert_eq!(plan.poison, 3);
        assert_eq!(plan.duplicates, 0);
        assert_eq!(plan.len(), 3);
        let empty = Plan::new(0, 5, 1);
        assert_eq!(empty.len(), 0);
    }
}
