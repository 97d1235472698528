//! A read loop: one per reader (one for batch dispatch, `concurrency` for sliding).
//!
//! Each read carries the previous batch's settlements (one round trip per batch) and
//! asks for what the consumer can start now. A read may bring back more than that (up to
//! `count` from the retry lane plus up to `count` from the topic): those **leftovers**
//! are held — kept alive like running entries — and started first by the next batch,
//! which then reads without blocking to top itself up.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::ErrorBackoff;
use super::process::{apply, batch};
use crate::backend::{EntryRef, ReadEntry, Reader, Settlements};
use crate::bus::Shared;
use crate::bus::subscription::SubState;
use crate::log_limit::FailureLog;
use crate::name::ConsumerName;

/// How long a read waits when retries of the last batch are about to be scheduled: the
/// retry mover is woken once the read returns, so a short retry is not held back by an
/// idle topic.
const BLOCK_WITH_RETRIES: Duration = Duration::from_millis(5);

pub(super) async fn run(
    shared: Arc<Shared>,
    sub: Arc<SubState>,
    reader: Option<Box<dyn Reader>>,
    consumer: ConsumerName,
    count: usize,
) {
    let mut backoff = ErrorBackoff::new();
    let mut reader = match reader {
        Some(r) => r,
        None => match reopen(&shared, &sub, &consumer, &mut backoff).await {
            Some(r) => r,
            None => return,
        },
    };
    // Read but not started yet (held).
    let mut waiting: VecDeque<ReadEntry> = VecDeque::new();
    // The last batch's settlements, which travel with the next read, and the entries
    // they settle (held until that read returned).
    let mut settle = Settlements::default();
    let mut settling: Vec<EntryRef> = Vec::new();
    // Settlements that failed (a broken key, a full Redis): their entries stay held and
    // kept alive, and they are applied again after a pause, so a fault in Redis never
    // turns into a re-run of the handler through reclaim.
    let mut unsettled = Settlements::default();
    let mut unsettled_due = Instant::now();
    let mut settle_backoff = ErrorBackoff::new();
    let settle_what = format!("settlements of topic {} group {}", sub.key.topic, sub.group);
    let mut settle_failures = FailureLog::new();
    let what = format!("reads of topic {} group {}", sub.key.topic, sub.group);
    let mut failures = FailureLog::new();
    loop {
        if !unsettled.is_empty() && Instant::now() >= unsettled_due {
            settling.extend(unsettled.entries().cloned());
            settle.extend(std::mem::take(&mut unsettled));
        }
        let want = count.saturating_sub(waiting.len());
        let block = if !waiting.is_empty() {
            Duration::ZERO
        } else if !settle.retries.is_empty() {
            shared.cfg.block_timeout.min(BLOCK_WITH_RETRIES)
        } else {
            shared.cfg.block_timeout
        };
        let read = if want == 0 && settle.is_empty() {
            Ok(Vec::new())
        } else {
            sub.held.reading(&consumer);
            let r = tokio::select! {
                biased;
                _ = sub.stop.cancelled() => None,
                r = reader.settle_and_read(&settle, want, block) => Some(r),
            };
            sub.held.read_done(&consumer);
            match r {
                Some(r) => r,
                None => break,
            }
        };
        match read {
            Ok(entries) => {
                backoff.reset();
                failures.succeeded(&what);
                if !settle.retries.is_empty() {
                    shared.wake_retry_mover(&sub.key);
                }
                settle = Settlements::default();
                let failed = reader.take_unsettled();
                let done = std::mem::take(&mut settling);
                if failed.is_empty() {
                    if settle_failures.succeeded(&settle_what) {
                        settle_backoff.reset();
                    }
                    sub.held.release(&done);
                } else {
                    keep_unsettled(
                        &sub,
                        done,
                        Settlements {
                            acks: Vec::new(),
                            retries: failed,
                        },
                        &mut unsettled,
                    );
                    unsettled_due = Instant::now() + settle_backoff.next();
                    settle_failures.failed(
                        &settle_what,
                        &crate::error::Error::Indeterminate(format!(
                            "{} retries could not be scheduled",
                            unsettled.retries.len()
                        )),
                    );
                }
                sub.held.hold(&consumer, &entries);
                waiting.extend(entries);
            }
            Err(e) => {
                // The settlements may not have reached the server: apply them again on
                // the shared connection (a second application is harmless).
                let failed = apply(&shared, &sub, std::mem::take(&mut settle)).await;
                let done = std::mem::take(&mut settling);
                if failed.is_empty() {
                    sub.held.release(&done);
                } else {
                    keep_unsettled(&sub, done, failed, &mut unsettled);
                    unsettled_due = Instant::now() + settle_backoff.next();
                }
                let wait = backoff.next();
                failures.failed(&what, &e);
                tokio::select! {
                    _ = sub.stop.cancelled() => break,
                    _ = tokio::time::sleep(wait) => {}
                }
                // The reader's connection may be broken: open a fresh one.
                match shared.backend.reader(&sub.key, &sub.group, &consumer).await {
                    Ok(r) => reader = r,
                    Err(e) => tracing::debug!(error = %e, "could not reopen reader"),
                }
                continue;
            }
        }
        if waiting.is_empty() {
            continue;
        }
        let now: Vec<ReadEntry> = waiting.drain(..count.min(waiting.len())).collect();
        (settling, settle) = batch(&shared, &sub, now).await;
    }
    drop(reader);
    // Stopped between a batch and the read carrying its settlements, or while that read
    // was in flight: settle here, with any that failed before. Entries still waiting stay
    // pending on this consumer and are handed back when the subscription finishes; those
    // whose settlement fails again stay pending and are redelivered after `min_idle`.
    settling.extend(unsettled.entries().cloned());
    settle.extend(unsettled);
    let failed = apply(&shared, &sub, settle).await;
    if !failed.is_empty() {
        tracing::warn!(group = %sub.group, n = failed.acks.len() + failed.retries.len(), "settlements failed at shutdown; those entries will be redelivered after min_idle");
    }
    sub.held.release(&settling);
}

/// Keeps the failed settlements `failed` (held, applied again later) and releases the
/// other entries of `done`.
fn keep_unsettled(
    sub: &SubState,
    done: Vec<EntryRef>,
    failed: Settlements,
    unsettled: &mut Settlements,
) {
    let kept: std::collections::HashSet<EntryRef> = failed.entries().cloned().collect();
    let released: Vec<EntryRef> = done.into_iter().filter(|e| !kept.contains(e)).collect();
    sub.held.release(&released);
    unsettled.extend(failed);
}

/// Opens a reader, retrying with backoff until it works or the subscription stops.
async fn reopen(
    shared: &Shared,
    sub: &SubState,
    consumer: &ConsumerName,
    backoff: &mut ErrorBackoff,
) -> Option<Box<dyn Reader>> {
    loop {
        match shared.backend.reader(&sub.key, &sub.group, consumer).await {
            Ok(r) => return Some(r),
            Err(e) => tracing::debug!(error = %e, "could not open reader"),
        }
        tokio::select! {
            _ = sub.stop.cancelled() => return None,
            _ = tokio::time::sleep(backoff.next()) => {}
        }
    }
}
