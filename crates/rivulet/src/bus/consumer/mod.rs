//! The consumer engine of a subscription, one concept per file: `read` (the read loops
//! and their leftovers), `process` (running a handler and turning its outcome into a
//! settlement), `reclaim` (taking over idle entries), `heartbeat` (broadcast groups).
//! The keep-alive of held entries is the bus's (`bus/keep_alive.rs`).
//!
//! Every task runs under a supervisor: a panic inside rivulet's own code (user closures
//! are already caught where they run) is logged, counted, recorded on the subscription
//! and the task restarted after a pause, so a subscription never dies silently.

mod heartbeat;
mod process;
mod read;
mod reclaim;

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;

use super::Shared;
use super::subscription::SubState;
use crate::backend::Reader;
use crate::error::Result;
use crate::outcome::panic_message;

/// Opens the readers and starts every task of a subscription.
pub(crate) async fn start(shared: &Arc<Shared>, sub: &Arc<SubState>) -> Result<()> {
    let count = match sub.dispatch {
        super::Dispatch::Batch => sub.concurrency,
        super::Dispatch::Sliding => 1,
    };
    let mut readers = Vec::with_capacity(sub.readers.len());
    for consumer in &sub.readers {
        let reader = shared
            .backend
            .reader(&sub.key, &sub.group, consumer)
            .await?;
        readers.push((reader, consumer.clone()));
    }
    for (reader, consumer) in readers {
        let mut first: Option<Box<dyn Reader>> = Some(reader);
        let (sh, su) = (shared.clone(), sub.clone());
        spawn(shared, sub, "read", move || {
            read::run(
                sh.clone(),
                su.clone(),
                first.take(),
                consumer.clone(),
                count,
            )
        });
    }
    let (sh, su) = (shared.clone(), sub.clone());
    spawn(shared, sub, "reclaim", move || {
        reclaim::run(sh.clone(), su.clone())
    });
    if sub.broadcast {
        let (sh, su) = (shared.clone(), sub.clone());
        spawn(shared, sub, "heartbeat", move || {
            heartbeat::run(sh.clone(), su.clone())
        });
    }
    Ok(())
}

/// Spawns the task `make()` builds on the bus, supervised (see [`supervised`]).
fn spawn<F, Fut>(shared: &Arc<Shared>, sub: &Arc<SubState>, task: &'static str, make: F)
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let state = sub.clone();
    let fut = supervised(
        sub.stop.clone(),
        move |error: String| state.task_failed(task, &error),
        make,
    );
    shared.tasks.spawn(sub.tasks.track_future(fut));
}

/// Runs the task `make()` builds until it returns; when it panics, reports the panic
/// through `failed` and runs a fresh one after a pause, unless `stop` is cancelled.
async fn supervised<F, Fut>(
    stop: tokio_util::sync::CancellationToken,
    failed: impl Fn(String),
    mut make: F,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    let mut backoff = ErrorBackoff::new();
    loop {
        match AssertUnwindSafe(make()).catch_unwind().await {
            Ok(()) => return,
            Err(panic) => {
                failed(panic_message(panic.as_ref()));
                let wait = backoff.next();
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        }
    }
}

/// Bounded exponential backoff for errors talking to the backend: no busy loops.
pub(crate) struct ErrorBackoff(Duration);

impl ErrorBackoff {
    const MIN: Duration = Duration::from_millis(50);
    const MAX: Duration = Duration::from_secs(5);

    pub(crate) fn new() -> Self {
        ErrorBackoff(Self::MIN)
    }

    pub(crate) fn next(&mut self) -> Duration {
        let d = self.0;
        self.0 = (self.0 * 2).min(Self::MAX);
        d
    }

    pub(crate) fn reset(&mut self) {
        self.0 = Self::MIN;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicU32, Ordering};

    use tokio_util::sync::CancellationToken;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_task_that_panics_is_reported_and_restarted() {
        let runs = Arc::new(AtomicU32::new(0));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let (r, f) = (runs.clone(), failures.clone());
        supervised(
            CancellationToken::new(),
            move |e| f.lock().expect("lock").push(e),
            move || {
                let r = r.clone();
                async move {
                    // Dies twice, then ends normally.
                    assert!(r.fetch_add(1, Ordering::SeqCst) >= 2, "loop bug");
                }
            },
        )
        .await;
        assert_eq!(runs.load(Ordering::SeqCst), 3);
        assert_eq!(*failures.lock().expect("lock"), ["loop bug", "loop bug"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stopped_task_is_not_restarted() {
        let stop = CancellationToken::new();
        stop.cancel();
        let runs = Arc::new(AtomicU32::new(0));
        let r = runs.clone();
        supervised(
            stop,
            |_| {},
            move || {
                r.fetch_add(1, Ordering::SeqCst);
                async { panic!("always") }
            },
        )
        .await;
        assert_eq!(runs.load(Ordering::SeqCst), 1);
    }
}
