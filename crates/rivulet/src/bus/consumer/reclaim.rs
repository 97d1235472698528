//! Every `reclaim_interval`, takes over entries idle for `min_idle` on any consumer of
//! the group (crashed or stopped ones) and handles them as fresh deliveries (B-REC-1).

use std::sync::Arc;
use std::time::Duration;

use super::process::{apply, batch};
use crate::bus::Shared;
use crate::bus::subscription::{Counters, SubState};
use crate::log_limit::FailureLog;

/// How many idle entries one reclaim pass takes at most.
const RECLAIM_BATCH: usize = 100;

pub(super) async fn run(shared: Arc<Shared>, sub: Arc<SubState>) {
    let consumer = sub.consumer.clone();
    let mut wait = shared.cfg.reclaim_interval;
    let what = format!("reclaim of topic {} group {}", sub.key.topic, sub.group);
    let mut failures = FailureLog::new();
    loop {
        tokio::select! {
            _ = sub.stop.cancelled() => break,
            _ = tokio::time::sleep(wait) => {}
        }
        wait = shared.cfg.reclaim_interval;
        let res = shared
            .backend
            .reclaim(
                &sub.key,
                &sub.group,
                &consumer,
                shared.cfg.min_idle,
                RECLAIM_BATCH,
            )
            .await;
        let reclaimed = match res {
            Ok(r) => {
                failures.succeeded(&what);
                r
            }
            Err(e) => {
                failures.failed(&what, &e);
                continue;
            }
        };
        if !reclaimed.missing.is_empty() {
            let n = reclaimed.missing.len() as u64;
            Counters::add(&sub.counters.missing, n);
            sub.metrics.missing.increment(n);
            let ids: Vec<&str> = reclaimed.missing.iter().map(|e| e.id.as_str()).collect();
            tracing::error!(topic = %sub.key.topic, group = %sub.group, ?ids, "pending entries no longer exist in the topic (trimmed or deleted outside rivulet)");
        }
        if reclaimed.entries.is_empty() {
            continue;
        }
        let n = reclaimed.entries.len();
        if n == RECLAIM_BATCH {
            wait = Duration::ZERO;
        }
        // An entry this subscription already holds (its keep-alive was late) is being
        // handled here already: leave it to the loop that holds it.
        let entries = sub.held.not_held(reclaimed.entries);
        if entries.is_empty() {
            continue;
        }
        let n = entries.len();
        Counters::add(&sub.counters.reclaimed, n as u64);
        sub.metrics.reclaimed.increment(n as u64);
        tracing::info!(group = %sub.group, n, "reclaimed idle entries");
        let mut entries = entries;
        sub.held.hold(&consumer, &entries);
        while !entries.is_empty() {
            let rest = entries.split_off(entries.len().min(sub.concurrency));
            let (done, mut settle) = batch(&shared, &sub, entries).await;
            // Settlements that fail are applied again after a pause while their entries
            // stay held (kept alive), until they succeed or the subscription stops.
            let mut backoff = super::ErrorBackoff::new();
            loop {
                settle = apply(&shared, &sub, settle).await;
                if settle.is_empty() || sub.stop.is_cancelled() {
                    break;
                }
                tokio::select! {
                    _ = sub.stop.cancelled() => {}
                    _ = tokio::time::sleep(backoff.next()) => {}
                }
            }
            sub.held.release(&done);
            entries = rest;
        }
    }
}
