//! Moves due retries back into their groups' retry lanes (B-RET-3).
//!
//! One task per stream in each bus that subscribes to it. It sleeps until the next due
//! retry (bounded by `retry_mover_interval`, since other processes schedule retries
//! too) and is woken early when this process schedules one. The move is atomic in the
//! backend, so several processes may run it at once without duplicating entries.
//!
//! Retries of a group that no longer exists are never dropped: they wait up to
//! `vanished_group_grace` for the group to come back, then are dead-lettered with reason
//! `group_gone` (counted and logged).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use super::Shared;
use crate::backend::StreamKey;
use crate::log_limit::FailureLog;
use crate::message::now_ms;

/// How many retries one pass moves at most.
const MOVE_BATCH: usize = 512;

/// The shortest gap between two passes when woken early. Under a stream of failures
/// every batch wakes the mover; coalescing the wake-ups keeps its Redis cost per retry
/// low, at the price of at most this much extra delay.
const MIN_GAP: Duration = Duration::from_millis(5);

pub(crate) async fn run(shared: Arc<Shared>, key: StreamKey, wake: Arc<Notify>) {
    let max_wait = shared.cfg.retry_mover_interval;
    let grace = shared.cfg.vanished_group_grace;
    let what = format!("moving due retries of topic {}", key.topic);
    let mut failures = FailureLog::new();
    let mut waiting_reported = 0usize;
    loop {
        let started = tokio::time::Instant::now();
        let sweep = shared
            .backend
            .move_due_retries(&key, now_ms(), MOVE_BATCH, grace)
            .await;
        if let Ok(s) = &sweep {
            failures.succeeded(&what);
            if s.dead_lettered > 0 {
                tracing::error!(topic = %key.topic, n = s.dead_lettered, "dead-lettered scheduled retries of groups that no longer exist (reason group_gone)");
                metrics::counter!("rivulet_retries_group_gone_total", "topic" => key.topic.to_string())
                    .increment(s.dead_lettered as u64);
            }
            if s.waiting != waiting_reported {
                if s.waiting > 0 {
                    tracing::warn!(topic = %key.topic, n = s.waiting, ?grace, "scheduled retries are waiting for their group to come back");
                }
                waiting_reported = s.waiting;
            }
        }
        let wait = match sweep {
            Ok(sweep) if sweep.moved + sweep.dead_lettered >= MOVE_BATCH => Duration::ZERO,
            Ok(sweep) => sweep
                .next_due_ms
                .map(|due| Duration::from_millis(due.saturating_sub(now_ms()).max(1)))
                .unwrap_or(max_wait)
                .min(max_wait),
            Err(e) => {
                failures.failed(&what, &e);
                max_wait
            }
        };
        if wait.is_zero() {
            if shared.stop.is_cancelled() {
                break;
            }
            continue;
        }
        tokio::select! {
            _ = shared.stop.cancelled() => break,
            _ = wake.notified() => {
                tokio::select! {
                    _ = shared.stop.cancelled() => break,
                    _ = tokio::time::sleep_until(started + MIN_GAP) => {}
                }
            }
            _ = tokio::time::sleep(wait) => {}
        }
    }
}
