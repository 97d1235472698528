//! Work that must not starve when the application's runtime does: the bus's keep-alive
//! (B-REC-2) and the job worker's lease renewal (J-11) each run on a thread of their own
//! with a small current-thread runtime, talking to the backend through a
//! [detached](crate::backend::Backend::detach) handle. A handler that blocks its
//! thread, burns CPU or panics under a slow panic hook cannot stop them: only a dead or
//! stopped process loses what it holds.

use std::future::Future;

/// Runs the future `make()` returns to completion on a new thread named `name` with a
/// current-thread runtime of its own. Fails only when the thread cannot be spawned.
pub(crate) fn spawn_on_own_thread<F, Fut>(name: &str, make: F) -> std::io::Result<()>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    let label = name.to_owned();
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt.block_on(make()),
                Err(e) => {
                    tracing::error!(error = %e, thread = %label, "could not build a maintenance runtime; held work may be taken over by others")
                }
            }
        })
        .map(|_| ())
}
