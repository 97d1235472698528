//! Moves due retries back into their groups' retry lanes (B-RET-3).
//!
//! One task per stream in each bus that subscribes to it. It sleeps until the next due
//! retry (bounded by `retry_scheduler_interval`, since other processes schedule retries
//! too) and is woken early when this process schedules one. The move is atomic in the
//! backend, so several processes may run it at once without duplicating entries.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use super::Shared;
use crate::backend::StreamKey;
use crate::message::now_ms;

/// How many retries one pass moves at most.
const MOVE_BATCH: usize = 512;

/// The shortest gap between two passes when woken early. Under a stream of failures
/// every batch wakes the mover; coalescing the wake-ups keeps its Redis cost per retry
/// low, at the price of at most this much extra delay.
const MIN_GAP: Duration = Duration::from_millis(5);

pub(crate) async fn run(shared: Arc<Shared>, key: StreamKey, wake: Arc<Notify>) {
    let max_wait = shared.cfg.retry_scheduler_interval;
    loop {
        let started = tokio::time::Instant::now();
        let wait = match shared
            .backend
            .move_due_retries(&key, now_ms(), MOVE_BATCH)
            .await
        {
            Ok(sweep) if sweep.moved >= MOVE_BATCH => Duration::ZERO,
            Ok(sweep) => sweep
                .next_due_ms
                .map(|due| Duration::from_millis(due.saturating_sub(now_ms()).max(1)))
                .unwrap_or(max_wait)
                .min(max_wait),
            Err(e) => {
                tracing::warn!(topic = %key.topic, error = %e, "moving due retries failed");
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
