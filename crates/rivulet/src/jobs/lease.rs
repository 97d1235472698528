//! Lease renewal (J-11): the leases a worker holds are extended every renewal period
//! from a thread and runtime of its own (the bus's keep-alive mechanism, see
//! [`crate::maintenance`]), so a handler that blocks or burns its runtime's threads
//! never loses its job to the stalled-job check while its process lives. The renewal
//! also reads the cancel flag, so a cancel whose Pub/Sub hint was lost still arrives.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::job::Activation;
use crate::backend::Backend;
use crate::backend::jobs::Renewal;
use crate::log_limit::FailureLog;
use crate::name::{JobId, QueueName};

/// The most leases renewed in one round trip.
const RENEW_BATCH: usize = 500;

/// The activations a worker holds.
#[derive(Default)]
pub(crate) struct Leases {
    held: Mutex<HashMap<JobId, Arc<Activation>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

impl Leases {
    pub(crate) fn hold(&self, act: Arc<Activation>) {
        lock(&self.held).insert(act.id.clone(), act);
    }

    pub(crate) fn release(&self, id: &JobId, token: u64) {
        let mut held = lock(&self.held);
        if held.get(id).is_some_and(|a| a.token == token) {
            held.remove(id);
        }
    }

    pub(crate) fn len(&self) -> usize {
        lock(&self.held).len()
    }

    /// Fires the cancellation token of the activation of `id`, if held.
    pub(crate) fn cancel(&self, id: &JobId) {
        if let Some(a) = lock(&self.held).get(id) {
            a.cancel.cancel();
        }
    }

    /// Fires every held activation's cancellation token.
    pub(crate) fn cancel_all(&self) {
        for a in lock(&self.held).values() {
            a.cancel.cancel();
        }
    }

    pub(crate) fn snapshot(&self) -> Vec<Arc<Activation>> {
        lock(&self.held).values().cloned().collect()
    }
}

/// What the renewal thread needs.
pub(crate) struct Renewer {
    pub(crate) backend: Arc<dyn Backend>,
    pub(crate) queue: QueueName,
    pub(crate) lease: Duration,
    pub(crate) every: Duration,
    /// Cancelled when the worker has stopped for good.
    pub(crate) stop: CancellationToken,
}

impl Renewer {
    /// Starts renewing `leases` on a thread of its own until `stop` fires or the leases
    /// are dropped.
    pub(crate) fn start(self, leases: &Arc<Leases>) {
        let weak = Arc::downgrade(leases);
        if let Err(e) =
            crate::maintenance::spawn_on_own_thread("rivulet-lease", move || self.run(weak))
        {
            tracing::error!(error = %e, "could not start the lease renewal thread; long jobs may stall");
        }
    }

    async fn run(self, leases: Weak<Leases>) {
        let mut conn: Option<Arc<dyn Backend>> = None;
        let mut failures = FailureLog::new();
        let lease_ms = crate::deadline::millis(self.lease);
        loop {
            tokio::select! {
                _ = self.stop.cancelled() => return,
                _ = tokio::time::sleep(self.every) => {}
            }
            let Some(leases) = leases.upgrade() else {
                return;
            };
            let held = leases.snapshot();
            drop(leases);
            if held.is_empty() {
                continue;
            }
            let backend = match &conn {
                Some(b) => b.clone(),
                None => match self.backend.detach().await {
                    Ok(b) => {
                        conn = Some(b.clone());
                        b
                    }
                    Err(e) => {
                        failures.failed("the lease renewal's connection", &e);
                        continue;
                    }
                },
            };
            let store: &dyn crate::backend::jobs::JobQueues = backend.as_ref();
            let mut failed = false;
            for chunk in held.chunks(RENEW_BATCH) {
                let ids: Vec<(JobId, u64)> =
                    chunk.iter().map(|a| (a.id.clone(), a.token)).collect();
                match store.renew(&self.queue, &ids, lease_ms).await {
                    Ok(renewals) => {
                        for (act, r) in chunk.iter().zip(renewals) {
                            apply(act, r);
                        }
                    }
                    Err(e) => {
                        failed = true;
                        failures.failed("the lease renewal", &e);
                    }
                }
            }
            if failed {
                conn = None;
            } else {
                failures.succeeded("the lease renewal");
            }
        }
    }
}

fn apply(act: &Activation, r: Renewal) {
    match r {
        Renewal::Renewed => {}
        Renewal::Cancel => act.cancel.cancel(),
        Renewal::Lost => {
            if !act.lost.swap(true, Ordering::Relaxed) {
                metrics::counter!("rivulet_job_leases_lost_total", "queue" => act.shared.name.to_string())
                    .increment(1);
                tracing::warn!(queue = %act.shared.name, job = %act.id, "a job's lease was lost while it ran; its result will be refused");
            }
            act.cancel.cancel();
        }
    }
}
