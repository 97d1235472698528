//! The jobs conformance suite: job behaviours every backend must show (J-1 … J-16).
//!
//! Each behaviour is an `async fn(&dyn Fixture)`; `jobs_suite!` turns the list into
//! `#[tokio::test]`s for one backend. The fixture is the bus suite's
//! ([`conformance::Fixture`](super::conformance::Fixture)): each backend's test file
//! runs both suites against it, and it hands out backends sharing one store, so several
//! queue handles and workers can play several processes.
//!
//! Timing: workers block at most 200 ms, leases are short where a test needs them to
//! expire; waits poll with a deadline; nothing sleeps to wait for readiness.

#![allow(dead_code, unreachable_pub)]

#[macro_use]
pub mod flows;
#[macro_use]
pub mod schedulers;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

pub use super::conformance::{Fixture, wait_until_async};
use rivulet::{
    CancelOutcome, ErrorKind, HandlerError, Job, JobEventKind, JobState, Keep, Queue, RetryPolicy,
    WorkerBuilder,
};
use serde::{Deserialize, Serialize};

/// Generates one `#[tokio::test]` per behaviour, each with a fresh fixture from `$make`.
macro_rules! jobs_suite {
    ($make:expr) => {
        jobs_suite!(@tests $make;
            states_from_add_to_each_end,
            priorities_order_fifo_and_lifo,
            delayed_and_run_at_jobs_never_run_early,
            dedup_holds_under_eight_concurrent_adders,
            dedup_until_finished_and_dedup_for_a_ttl,
            caller_ids_make_adding_idempotent,
            pause_and_resume_a_queue_and_a_name,
            retries_with_backoff_then_failed,
            permanent_errors_and_bad_data_fail_at_once,
            a_panic_is_a_retryable_failure,
            a_timeout_cancels_the_handler_and_counts_as_an_attempt,
            cancel_waiting_delayed_and_active_jobs,
            an_active_job_that_ignores_cancel_ends_cancelled_when_its_lease_is_revoked,
            progress_logs_and_results_are_readable,
            counts_equal_the_jobs_in_each_state_after_a_mixed_workload,
            retention_bounds_hold,
            events_are_replayable_and_carry_no_data,
            shutdown_gives_running_jobs_back_without_counting_an_attempt,
            bulk_add_is_decided_per_job,
            bad_input_gets_typed_errors_and_writes_nothing,
            many_jobs_many_workers_each_runs_once,
        );
    };
    (@tests $make:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let fixture = $make.await;
                jobs::$name(&fixture).await;
            }
        )*
    };
}

/// Limits and groups (J-7, J-8): their own suite, `limits_suite!`.
#[macro_use]
pub mod limits;

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A queue name unique to this test run.
pub fn queue_name(name: &str) -> String {
    format!(
        "jobs.{name}.{}.{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// A queue with fast retries (20 ms, no growth).
pub async fn queue(f: &dyn Fixture, name: &str) -> Queue {
    Queue::builder(f.backend().await, name)
        .retry(
            RetryPolicy::default()
                .backoff(Duration::from_millis(20))
                .multiplier(1.0),
        )
        .build()
        .expect("queue")
}

/// Worker options for tests: short blocking, short stall checks.
pub fn fast(w: WorkerBuilder) -> WorkerBuilder {
    w.block_timeout(Duration::from_millis(200))
        .stall_check_every(Duration::from_millis(200))
}

pub const WAIT: Duration = Duration::from_secs(20);

/// Waits until the job is in `state`.
pub async fn wait_state(q: &Queue, id: &rivulet::JobId, state: JobState) {
    wait_until_async(&format!("job {id} {state}"), WAIT, || async {
        q.job(id)
            .await
            .expect("job")
            .is_some_and(|j| j.state == state)
    })
    .await;
}

/// Waits until the queue has no unfinished job.
pub async fn wait_finished(q: &Queue) {
    wait_until_async("every job finished", WAIT, || async {
        q.counts().await.expect("counts").unfinished() == 0
    })
    .await;
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Invoice {
    pub order: u32,
    pub kind: String,
}

fn invoice(order: u32) -> Invoice {
    Invoice {
        order,
        kind: "ok".into(),
    }
}

type Log = Arc<Mutex<Vec<(u32, u32, Instant)>>>;

// ---------------------------------------------------------------------------------------

pub async fn states_from_add_to_each_end(f: &dyn Fixture) {
    let q = queue(f, &queue_name("states")).await;
    let ok = q.add("ok", &invoice(1)).await.expect("add");
    let later = q
        .add("ok", &invoice(2))
        .delay(Duration::from_secs(3600))
        .await
        .expect("add");
    let bad = q.add("bad", &invoice(3)).attempts(1).await.expect("add");
    assert_eq!(ok.state, Some(JobState::Waiting));
    assert_eq!(later.state, Some(JobState::Delayed));
    let c = q.counts().await.expect("counts");
    assert_eq!((c.waiting, c.delayed, c.active), (2, 1, 0));

    let gate = Arc::new(tokio::sync::Notify::new());
    let g = gate.clone();
    let worker = fast(q.worker(move |job: Job<Invoice>| {
        let g = g.clone();
        async move {
            if job.name().as_str() == "bad" {
                return Err(HandlerError::permanent("no such customer"));
            }
            g.notified().await;
            Ok(job.data().order * 10)
        }
    }))
    .concurrency(2)
    .await
    .expect("worker");
    wait_state(&q, &ok.id, JobState::Active).await;
    wait_state(&q, &bad.id, JobState::Failed).await;
    let active = q.job(&ok.id).await.expect("job").expect("exists");
    assert_eq!(active.attempt, 1);
    assert!(active.worker.is_some(), "an active job names its worker");
    gate.notify_one();
    wait_state(&q, &ok.id, JobState::Completed).await;
    let done = q.job(&ok.id).await.expect("job").expect("exists");
    assert_eq!(done.result::<u32>().expect("decode"), Some(10));
    assert!(done.finished_at_ms.is_some());
    let failed = q.job(&bad.id).await.expect("job").expect("exists");
    assert!(
        failed
            .error
            .as_deref()
            .is_some_and(|e| e.contains("no such customer")),
        "{failed:?}"
    );
    assert_eq!(
        q.cancel(&later.id).await.expect("cancel"),
        CancelOutcome::Cancelled
    );
    let c = q.counts().await.expect("counts");
    assert_eq!(
        (
            c.waiting,
            c.delayed,
            c.active,
            c.completed,
            c.failed,
            c.cancelled
        ),
        (0, 0, 0, 1, 1, 1)
    );
    worker.shutdown().await;
}

pub async fn priorities_order_fifo_and_lifo(f: &dyn Fixture) {
    let q = queue(f, &queue_name("prio")).await;
    q.pause().await.expect("pause");
    // (order, priority, lifo)
    let plan = [
        (1, 5, false),
        (2, 1, false),
        (3, 5, false),
        (4, 0, false),
        (5, 1, true),
        (6, 1, true),
        (7, 1, false),
        (8, 0, false),
    ];
    for (order, priority, lifo) in plan {
        let add = q.add("p", &invoice(order)).priority(priority);
        let add = if lifo { add.lifo() } else { add };
        add.await.expect("add");
    }
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    let worker = fast(q.worker(move |job: Job<Invoice>| {
        let s = s.clone();
        async move {
            s.lock().expect("lock").push(job.data().order);
            Ok(())
        }
    }))
    .concurrency(1)
    .await
    .expect("worker");
    q.resume().await.expect("resume");
    wait_finished(&q).await;
    // Priority 0 FIFO (4, 8); priority 1: LIFO newest first (6, 5) then FIFO (2, 7);
    // priority 5 FIFO (1, 3).
    assert_eq!(*seen.lock().expect("lock"), vec![4, 8, 6, 5, 2, 7, 1, 3]);
    worker.shutdown().await;
}

pub async fn delayed_and_run_at_jobs_never_run_early(f: &dyn Fixture) {
    let q = queue(f, &queue_name("delay")).await;
    let started: Log = Arc::new(Mutex::new(Vec::new()));
    let s = started.clone();
    let worker = fast(q.worker(move |job: Job<Invoice>| {
        let s = s.clone();
        async move {
            s.lock()
                .expect("lock")
                .push((job.data().order, job.attempt(), Instant::now()));
            Ok(())
        }
    }))
    .concurrency(4)
    .await
    .expect("worker");
    let t0 = Instant::now();
    let mut due = HashMap::new();
    for (order, ms) in [(1u32, 700u64), (2, 300), (3, 0), (4, 1100)] {
        q.add("d", &invoice(order))
            .delay(Duration::from_millis(ms))
            .await
            .expect("add");
        due.insert(order, ms);
    }
    let at = SystemTime::now() + Duration::from_millis(500);
    q.add("d", &invoice(5)).run_at(at).await.expect("add");
    due.insert(5, 500);
    q.add("d", &invoice(6))
        .run_at(SystemTime::now() - Duration::from_secs(60))
        .await
        .expect("run_at in the past is now");
    due.insert(6, 0);
    wait_finished(&q).await;
    let started = started.lock().expect("lock").clone();
    assert_eq!(started.len(), 6);
    for (order, _, when) in &started {
        let early = Duration::from_millis(due[order]);
        let waited = when.duration_since(t0);
        assert!(
            waited + Duration::from_millis(5) >= early,
            "job {order} ran after {waited:?}, due after {early:?}"
        );
        assert!(
            waited < early + Duration::from_millis(1500),
            "job {order} ran {waited:?} after add, due after {early:?}: too late"
        );
    }
    worker.shutdown().await;
}

pub async fn dedup_holds_under_eight_concurrent_adders(f: &dyn Fixture) {
    let name = queue_name("dedup8");
    let mut queues = Vec::new();
    for _ in 0..8 {
        queues.push(queue(f, &name).await);
    }
    let barrier = Arc::new(tokio::sync::Barrier::new(8));
    let mut tasks = Vec::new();
    for (i, q) in queues.into_iter().enumerate() {
        let b = barrier.clone();
        tasks.push(tokio::spawn(async move {
            b.wait().await;
            let mut out = Vec::new();
            for round in 0..20u32 {
                let e = q
                    .add("d", &invoice(i as u32))
                    .dedup(&format!("order-{round}"))
                    .await
                    .expect("add");
                out.push((round, e));
            }
            out
        }));
    }
    let mut by_key: HashMap<u32, Vec<rivulet::Enqueued>> = HashMap::new();
    for t in tasks {
        for (round, e) in t.await.expect("task") {
            by_key.entry(round).or_default().push(e);
        }
    }
    for (round, adds) in &by_key {
        let ids: HashSet<_> = adds.iter().map(|e| e.id.clone()).collect();
        assert_eq!(ids.len(), 1, "key order-{round}: several ids {ids:?}");
        assert_eq!(
            adds.iter().filter(|e| !e.duplicate).count(),
            1,
            "key order-{round}: one add writes"
        );
    }
    let q = queue(f, &name).await;
    assert_eq!(q.counts().await.expect("counts").waiting, 20);
}

pub async fn dedup_until_finished_and_dedup_for_a_ttl(f: &dyn Fixture) {
    let q = queue(f, &queue_name("dedup")).await;
    let first = q.add("d", &invoice(1)).dedup("k1").await.expect("add");
    let again = q.add("d", &invoice(2)).dedup("k1").await.expect("add");
    assert!(again.duplicate);
    assert_eq!(again.id, first.id);
    let ttl1 = q
        .add("d", &invoice(3))
        .dedup_for("k2", Duration::from_millis(1500))
        .await
        .expect("add");
    let worker = fast(q.worker(|_job: Job<Invoice>| async { Ok(()) }))
        .concurrency(2)
        .await
        .expect("worker");
    wait_finished(&q).await;
    // Until finished: the key is free once its job completed.
    let after = q.add("d", &invoice(4)).dedup("k1").await.expect("add");
    assert!(
        !after.duplicate,
        "the key is released when its job finishes"
    );
    assert_ne!(after.id, first.id);
    // For a TTL: still held after the job completed, free after the TTL.
    let held = q
        .add("d", &invoice(5))
        .dedup_for("k2", Duration::from_millis(1500))
        .await
        .expect("add");
    assert!(held.duplicate, "a TTL key outlives its finished job");
    assert_eq!(held.id, ttl1.id);
    wait_until_async("the TTL ends", WAIT, || async {
        !q.add("d", &invoice(6))
            .dedup_for("k2", Duration::from_millis(1500))
            .await
            .expect("add")
            .duplicate
    })
    .await;
    // Removing the holder frees the key at once.
    q.pause().await.expect("pause");
    let held = q.add("d", &invoice(7)).dedup("k3").await.expect("add");
    q.remove(&held.id).await.expect("remove");
    let fresh = q.add("d", &invoice(8)).dedup("k3").await.expect("add");
    assert!(!fresh.duplicate, "removing the job frees its key");
    worker.shutdown().await;
}

pub async fn caller_ids_make_adding_idempotent(f: &dyn Fixture) {
    let q = queue(f, &queue_name("ids")).await;
    let a = q
        .add("x", &invoice(1))
        .job_id("invoice-1")
        .await
        .expect("add");
    let b = q
        .add("x", &invoice(2))
        .job_id("invoice-1")
        .await
        .expect("add");
    assert!(!a.duplicate);
    assert!(b.duplicate);
    assert_eq!(a.id.as_str(), "invoice-1");
    let job = q.job(&a.id).await.expect("job").expect("exists");
    assert_eq!(
        job.data::<Invoice>().expect("decode").order,
        1,
        "the first add's data stands"
    );
    assert_eq!(q.counts().await.expect("counts").waiting, 1);
}

pub async fn pause_and_resume_a_queue_and_a_name(f: &dyn Fixture) {
    let q = queue(f, &queue_name("pause")).await;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    let worker = fast(q.worker(move |job: Job<Invoice>| {
        let s = s.clone();
        async move {
            s.lock()
                .expect("lock")
                .push((job.name().to_string(), job.data().order));
            Ok(())
        }
    }))
    .concurrency(1)
    .await
    .expect("worker");
    q.pause().await.expect("pause");
    assert!(q.paused().await.expect("paused").0);
    for i in 0..3 {
        q.add("a", &invoice(i)).await.expect("add");
    }
    tokio::time::sleep(Duration::from_millis(600)).await; // a paused queue leases nothing
    assert!(
        seen.lock().expect("lock").is_empty(),
        "a paused queue ran a job"
    );
    q.resume().await.expect("resume");
    wait_finished(&q).await;
    assert_eq!(seen.lock().expect("lock").len(), 3);

    // Pause one name: others run, its jobs wait (counted as waiting and parked).
    q.pause_name("slow").await.expect("pause name");
    assert_eq!(q.paused().await.expect("paused").1.len(), 1);
    for i in 10..14 {
        q.add("slow", &invoice(i)).await.expect("add");
        q.add("fast", &invoice(i)).await.expect("add");
    }
    wait_until_async("the other name ran", WAIT, || async {
        seen.lock()
            .expect("lock")
            .iter()
            .filter(|(n, _)| n == "fast")
            .count()
            == 4
    })
    .await;
    let c = q.counts().await.expect("counts");
    assert_eq!(c.waiting, 4, "{c:?}");
    assert!(!seen.lock().expect("lock").iter().any(|(n, _)| n == "slow"));
    q.resume_name("slow").await.expect("resume name");
    wait_finished(&q).await;
    let slow: Vec<u32> = seen
        .lock()
        .expect("lock")
        .iter()
        .filter(|(n, _)| n == "slow")
        .map(|(_, o)| *o)
        .collect();
    assert_eq!(slow, vec![10, 11, 12, 13], "resumed jobs keep their order");
    worker.shutdown().await;
}

pub async fn retries_with_backoff_then_failed(f: &dyn Fixture) {
    let q = queue(f, &queue_name("retry")).await;
    let runs: Log = Arc::new(Mutex::new(Vec::new()));
    let r = runs.clone();
    let worker = fast(q.worker(move |job: Job<Invoice>| {
        let r = r.clone();
        async move {
            r.lock()
                .expect("lock")
                .push((job.data().order, job.attempt(), Instant::now()));
            Err::<(), _>(HandlerError::retryable("gateway down"))
        }
    }))
    .concurrency(2)
    .await
    .expect("worker");
    let id = q
        .add("r", &invoice(1))
        .backoff(
            RetryPolicy::default()
                .max_attempts(3)
                .backoff(Duration::from_millis(300))
                .multiplier(2.0),
        )
        .await
        .expect("add")
        .id;
    wait_state(&q, &id, JobState::Failed).await;
    let runs = runs.lock().expect("lock").clone();
    let attempts: Vec<u32> = runs.iter().map(|(_, a, _)| *a).collect();
    assert_eq!(attempts, vec![1, 2, 3], "exactly max_attempts runs");
    let gap1 = runs[1].2.duration_since(runs[0].2);
    let gap2 = runs[2].2.duration_since(runs[1].2);
    assert!(gap1 >= Duration::from_millis(290), "first backoff {gap1:?}");
    assert!(
        gap2 >= Duration::from_millis(590),
        "second backoff {gap2:?}"
    );
    let job = q.job(&id).await.expect("job").expect("exists");
    assert_eq!(job.attempt, 3);
    assert!(
        job.error
            .as_deref()
            .is_some_and(|e| e.contains("gateway down"))
    );
    worker.shutdown().await;
}

pub async fn permanent_errors_and_bad_data_fail_at_once(f: &dyn Fixture) {
    let q = queue(f, &queue_name("perm")).await;
    let runs = Arc::new(AtomicU32::new(0));
    let r = runs.clone();
    let worker = fast(q.worker(move |_job: Job<Invoice>| {
        let r = r.clone();
        async move {
            r.fetch_add(1, Ordering::Relaxed);
            Err::<(), _>(HandlerError::permanent("invalid address"))
        }
    }))
    .await
    .expect("worker");
    let perm = q.add("p", &invoice(1)).attempts(5).await.expect("add").id;
    let undecodable = q
        .add("p", &"not an invoice")
        .attempts(5)
        .await
        .expect("add")
        .id;
    wait_state(&q, &perm, JobState::Failed).await;
    wait_state(&q, &undecodable, JobState::Failed).await;
    assert_eq!(
        runs.load(Ordering::Relaxed),
        1,
        "one run of the permanent failure, none of the bad data"
    );
    let job = q.job(&undecodable).await.expect("job").expect("exists");
    assert!(
        job.error
            .as_deref()
            .is_some_and(|e| e.starts_with("decode")),
        "{:?}",
        job.error
    );
    let job = q.job(&perm).await.expect("job").expect("exists");
    assert!(
        job.error
            .as_deref()
            .is_some_and(|e| e.starts_with("permanent")),
        "{:?}",
        job.error
    );
    worker.shutdown().await;
}

pub async fn a_panic_is_a_retryable_failure(f: &dyn Fixture) {
    let q = queue(f, &queue_name("panic")).await;
    let worker = fast(q.worker(|job: Job<Invoice>| async move {
        if job.attempt() == 1 {
            panic!("boom on attempt 1");
        }
        Ok(job.attempt())
    }))
    .await
    .expect("worker");
    let id = q.add("p", &invoice(1)).await.expect("add").id;
    wait_state(&q, &id, JobState::Completed).await;
    let job = q.job(&id).await.expect("job").expect("exists");
    assert_eq!(job.result::<u32>().expect("decode"), Some(2));
    assert!(
        worker.is_running(),
        "a panicking handler does not stop the worker"
    );
    worker.shutdown().await;
}

pub async fn a_timeout_cancels_the_handler_and_counts_as_an_attempt(f: &dyn Fixture) {
    let q = queue(f, &queue_name("timeout")).await;
    let cancelled = Arc::new(AtomicU32::new(0));
    let c = cancelled.clone();
    let worker = fast(q.worker(move |job: Job<Invoice>| {
        let c = c.clone();
        async move {
            if job.attempt() == 1 {
                let token = job.cancellation().clone();
                let guard = CountOnDrop(c, token);
                tokio::time::sleep(Duration::from_secs(30)).await;
                drop(guard);
            }
            Ok(job.attempt())
        }
    }))
    .await
    .expect("worker");
    let id = q
        .add("t", &invoice(1))
        .timeout(Duration::from_millis(300))
        .attempts(2)
        .await
        .expect("add")
        .id;
    wait_state(&q, &id, JobState::Completed).await;
    let job = q.job(&id).await.expect("job").expect("exists");
    assert_eq!(job.attempt, 2, "the timed-out run counted as attempt 1");
    assert_eq!(
        cancelled.load(Ordering::Relaxed),
        1,
        "the handler saw its token fire"
    );
    worker.shutdown().await;
}

/// Counts, when dropped, whether the token had fired.
struct CountOnDrop(Arc<AtomicU32>, tokio_util::sync::CancellationToken);

impl Drop for CountOnDrop {
    fn drop(&mut self) {
        if self.1.is_cancelled() {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }
}

pub async fn cancel_waiting_delayed_and_active_jobs(f: &dyn Fixture) {
    let q = queue(f, &queue_name("cancel")).await;
    q.pause_name("never").await.expect("pause name");
    let waiting = q.add("never", &invoice(1)).await.expect("add").id;
    let delayed = q
        .add("never", &invoice(2))
        .delay(Duration::from_secs(3600))
        .await
        .expect("add")
        .id;
    let worker = fast(q.worker(|job: Job<Invoice>| async move {
        // Stops when cancelled.
        job.cancellation().cancelled().await;
        Ok(())
    }))
    .await
    .expect("worker");
    let active = q.add("run", &invoice(3)).await.expect("add").id;
    wait_state(&q, &active, JobState::Active).await;
    assert_eq!(
        q.cancel(&waiting).await.expect("cancel"),
        CancelOutcome::Cancelled
    );
    assert_eq!(
        q.cancel(&delayed).await.expect("cancel"),
        CancelOutcome::Cancelled
    );
    assert_eq!(
        q.cancel(&active).await.expect("cancel"),
        CancelOutcome::Requested
    );
    wait_state(&q, &active, JobState::Cancelled).await;
    assert_eq!(
        q.cancel(&active).await.expect("cancel"),
        CancelOutcome::AlreadyFinished(JobState::Cancelled)
    );
    let missing = rivulet::JobId::new("no-such-job").expect("id");
    assert_eq!(
        q.cancel(&missing).await.expect_err("missing").kind(),
        ErrorKind::JobNotFound
    );
    let c = q.counts().await.expect("counts");
    assert_eq!((c.cancelled, c.waiting, c.delayed, c.active), (3, 0, 0, 0));
    worker.shutdown().await;
}

pub async fn an_active_job_that_ignores_cancel_ends_cancelled_when_its_lease_is_revoked(
    f: &dyn Fixture,
) {
    let q = queue(f, &queue_name("revoke")).await;
    let release = Arc::new(tokio::sync::Notify::new());
    let r = release.clone();
    let worker = fast(q.worker(move |_job: Job<Invoice>| {
        let r = r.clone();
        async move {
            // Ignores its cancellation token.
            r.notified().await;
            Ok("finished anyway")
        }
    }))
    .lease(Duration::from_millis(600))
    .renew_every(Duration::from_millis(100))
    .await
    .expect("worker");
    let id = q.add("x", &invoice(1)).await.expect("add").id;
    wait_state(&q, &id, JobState::Active).await;
    assert_eq!(
        q.cancel(&id).await.expect("cancel"),
        CancelOutcome::Requested
    );
    // The renewal stops renewing it; the stalled check revokes the lease.
    wait_state(&q, &id, JobState::Cancelled).await;
    release.notify_one();
    wait_until_async("the late completion is fenced off", WAIT, || async {
        worker.stats().lease_lost == 1
    })
    .await;
    let job = q.job(&id).await.expect("job").expect("exists");
    assert_eq!(job.state, JobState::Cancelled);
    assert_eq!(job.result, None, "the late result was not written");
    worker.shutdown().await;
}

pub async fn progress_logs_and_results_are_readable(f: &dyn Fixture) {
    let q = Queue::builder(f.backend().await, &queue_name("progress"))
        .log_cap(3)
        .build()
        .expect("queue");
    let worker = fast(q.worker(|job: Job<Invoice>| async move {
        job.progress(&10).await.map_err(HandlerError::retryable)?;
        for i in 0..5 {
            job.log(format!("line {i}"))
                .await
                .map_err(HandlerError::retryable)?;
        }
        job.progress(&serde_json::json!({"pages": 3}))
            .await
            .map_err(HandlerError::retryable)?;
        assert_eq!(
            job.progress(&150).await.expect_err("out of range").kind(),
            ErrorKind::Config
        );
        Ok(Invoice {
            order: job.data().order,
            kind: "sent".into(),
        })
    }))
    .await
    .expect("worker");
    let id = q.add("p", &invoice(7)).await.expect("add").id;
    wait_state(&q, &id, JobState::Completed).await;
    let job = q.job(&id).await.expect("job").expect("exists");
    assert_eq!(job.progress, Some(serde_json::json!({"pages": 3})));
    assert_eq!(
        job.result::<Invoice>().expect("decode"),
        Some(Invoice {
            order: 7,
            kind: "sent".into()
        })
    );
    let logs = q.logs(&id, 0, 100).await.expect("logs");
    assert_eq!(
        logs,
        vec!["line 2", "line 3", "line 4"],
        "logs are capped, newest kept"
    );
    worker.shutdown().await;
}

pub async fn counts_equal_the_jobs_in_each_state_after_a_mixed_workload(f: &dyn Fixture) {
    let q = queue(f, &queue_name("counts")).await;
    let worker = fast(q.worker(|job: Job<Invoice>| async move {
        match job.data().kind.as_str() {
            "fail" => Err(HandlerError::permanent("no")),
            "flaky" if job.attempt() < 2 => Err(HandlerError::retryable("later")),
            _ => Ok(()),
        }
    }))
    .concurrency(8)
    .await
    .expect("worker");
    let mut ids = Vec::new();
    for i in 0..60u32 {
        let kind = match i % 4 {
            0 => "fail",
            1 => "flaky",
            _ => "ok",
        };
        let add = q.add(
            "m",
            &Invoice {
                order: i,
                kind: kind.into(),
            },
        );
        let add = if i % 10 == 9 {
            add.delay(Duration::from_secs(3600))
        } else {
            add
        };
        ids.push(add.await.expect("add").id);
    }
    for id in ids.iter().step_by(7) {
        let _ = q.cancel(id).await;
    }
    // Settled: every job finished but those delayed by an hour (a retry's short
    // backoff is not settled yet).
    wait_until_async("only the long-delayed jobs left", WAIT, || async {
        for (i, id) in ids.iter().enumerate() {
            let job = q.job(id).await.expect("job").expect("exists");
            let long_delayed = i % 10 == 9 && job.state == JobState::Delayed && job.attempt == 0;
            if !(job.state.is_terminal() || long_delayed) {
                return false;
            }
        }
        true
    })
    .await;
    let counts = q.counts().await.expect("counts");
    let mut real: HashMap<JobState, u64> = HashMap::new();
    for id in &ids {
        let job = q.job(id).await.expect("job").expect("exists");
        *real.entry(job.state).or_default() += 1;
    }
    for state in JobState::ALL {
        let mut listed = 0u64;
        let mut cursor: Option<String> = None;
        loop {
            let page = q.jobs(state, cursor.as_deref(), 7).await.expect("page");
            listed += page.jobs.len() as u64;
            assert!(page.jobs.iter().all(|j| j.state == state));
            match page.next {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        let want = real.get(&state).copied().unwrap_or(0);
        assert_eq!(counts.of(state), want, "count of {state}: {counts:?}");
        assert_eq!(listed, want, "listed {state}");
    }
    assert_eq!(ids.len() as u64, real.values().sum::<u64>());
    worker.shutdown().await;
}

pub async fn retention_bounds_hold(f: &dyn Fixture) {
    let q = Queue::builder(f.backend().await, &queue_name("retention"))
        .keep_completed(Keep::new(5, Duration::from_secs(3600)))
        .keep_failed(Keep::new(3, Duration::from_secs(3600)))
        .retry(RetryPolicy::default().max_attempts(1))
        .build()
        .expect("queue");
    let worker = fast(q.worker(|job: Job<Invoice>| async move {
        if job.data().kind == "fail" {
            Err(HandlerError::permanent("no"))
        } else {
            Ok(())
        }
    }))
    .concurrency(4)
    .await
    .expect("worker");
    let mut ids = Vec::new();
    for i in 0..40u32 {
        let kind = if i % 2 == 0 { "ok" } else { "fail" };
        ids.push(
            q.add(
                "r",
                &Invoice {
                    order: i,
                    kind: kind.into(),
                },
            )
            .dedup(&format!("r-{i}"))
            .await
            .expect("add")
            .id,
        );
    }
    let gone = q
        .add("r", &invoice(99))
        .remove_on_complete()
        .await
        .expect("add")
        .id;
    wait_finished(&q).await;
    let c = q.counts().await.expect("counts");
    assert_eq!((c.completed, c.failed), (5, 3), "{c:?}");
    let mut present = 0;
    for id in &ids {
        if q.job(id).await.expect("job").is_some() {
            present += 1;
        }
    }
    assert_eq!(present, 8, "removed jobs are gone, not just unlisted");
    assert!(
        q.job(&gone).await.expect("job").is_none(),
        "remove_on_complete"
    );
    // The dedup key of a removed job is free.
    assert!(
        !q.add("r", &invoice(0))
            .dedup("r-0")
            .await
            .expect("add")
            .duplicate
    );
    worker.shutdown().await;
}

pub async fn events_are_replayable_and_carry_no_data(f: &dyn Fixture) {
    let q = Queue::builder(f.backend().await, &queue_name("events"))
        .events_cap(50)
        .build()
        .expect("queue");
    let mut live = q.events(None).await.expect("events");
    let worker = fast(q.worker(|job: Job<Invoice>| async move {
        job.progress(&50).await.map_err(HandlerError::retryable)?;
        Ok("a result that must not be in events")
    }))
    .await
    .expect("worker");
    let id = q
        .add(
            "e",
            &Invoice {
                order: 1,
                kind: "secret-data".into(),
            },
        )
        .await
        .expect("add")
        .id;
    let mut kinds = Vec::new();
    while kinds.last() != Some(&JobEventKind::Completed) {
        let e = live
            .next_within(WAIT)
            .await
            .expect("read")
            .expect("an event in time");
        if e.job == id {
            assert!(!format!("{e:?}").contains("secret-data"));
            assert!(!format!("{e:?}").contains("must not be"));
            kinds.push(e.kind);
        }
    }
    assert_eq!(
        kinds,
        vec![
            JobEventKind::Added,
            JobEventKind::Active,
            JobEventKind::Progress,
            JobEventKind::Completed
        ]
    );
    // Replay from the start, and from an id.
    let mut replay = q.events(None).await.expect("events");
    let all = replay.drain_now().await.expect("drain");
    assert!(all.len() >= 4);
    let mut from_second = q.events(Some(&all[0].id)).await.expect("events");
    let rest = from_second.drain_now().await.expect("drain");
    assert_eq!(rest.len(), all.len() - 1);
    // Capped: many more jobs than the cap leave at most about the cap.
    for i in 0..100 {
        q.add("e", &invoice(i)).await.expect("add");
    }
    wait_finished(&q).await;
    let mut replay = q.events(None).await.expect("events");
    let all = replay.drain_now().await.expect("drain");
    assert!(all.len() <= 50 + 100, "the stream is capped: {}", all.len());
    assert!(all.len() < 300, "the stream is capped: {}", all.len());
    worker.shutdown().await;
}

pub async fn shutdown_gives_running_jobs_back_without_counting_an_attempt(f: &dyn Fixture) {
    let q = queue(f, &queue_name("shutdown")).await;
    let w1 = fast(q.worker(|_job: Job<Invoice>| async move {
        tokio::time::sleep(Duration::from_secs(60)).await;
        Ok(())
    }))
    .drain_timeout(Duration::from_millis(200))
    .await
    .expect("worker");
    let id = q.add("s", &invoice(1)).await.expect("add").id;
    wait_state(&q, &id, JobState::Active).await;
    let t = Instant::now();
    w1.shutdown().await;
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "shutdown waits only the drain timeout"
    );
    let job = q.job(&id).await.expect("job").expect("exists");
    assert_eq!(
        job.state,
        JobState::Waiting,
        "given back at once, not left to its lease"
    );
    assert_eq!(job.stalls, 0);
    let w2 = fast(q.worker(|job: Job<Invoice>| async move { Ok(job.attempt()) }))
        .await
        .expect("worker");
    wait_state(&q, &id, JobState::Completed).await;
    let job = q.job(&id).await.expect("job").expect("exists");
    assert_eq!(
        job.result::<u32>().expect("decode"),
        Some(1),
        "the given-back run was not counted"
    );
    w2.shutdown().await;
}

pub async fn bulk_add_is_decided_per_job(f: &dyn Fixture) {
    let q = queue(f, &queue_name("bulk")).await;
    q.add("b", &invoice(0)).dedup("taken").await.expect("add");
    let added = q
        .add_bulk((1..=50u32).map(|i| {
            let add = q.add("b", &invoice(i));
            if i == 10 { add.dedup("taken") } else { add }
        }))
        .await
        .expect("bulk");
    assert_eq!(added.len(), 50);
    assert_eq!(added.iter().filter(|e| e.duplicate).count(), 1);
    assert_eq!(q.counts().await.expect("counts").waiting, 50);
    // One invalid job: nothing is written.
    let err = q
        .add_bulk(vec![
            q.add("b", &invoice(1)),
            q.add("bad name", &invoice(2)),
        ])
        .await
        .expect_err("invalid");
    assert_eq!(err.kind(), ErrorKind::InvalidName);
    assert_eq!(q.counts().await.expect("counts").waiting, 50);
}

pub async fn bad_input_gets_typed_errors_and_writes_nothing(f: &dyn Fixture) {
    let backend = f.backend().await;
    assert_eq!(
        Queue::new(backend.clone(), "bad/name")
            .expect_err("name")
            .kind(),
        ErrorKind::InvalidName
    );
    let q = Queue::builder(backend, &queue_name("bad"))
        .max_payload(64)
        .build()
        .expect("queue");
    let big = "x".repeat(100);
    let cases: Vec<(ErrorKind, rivulet::Result<rivulet::Enqueued>)> = vec![
        (ErrorKind::PayloadTooLarge, q.add("a", &big).await),
        (ErrorKind::InvalidName, q.add("", &1).await),
        (
            ErrorKind::Config,
            q.add("a", &1)
                .priority(rivulet::jobs::MAX_PRIORITY + 1)
                .await,
        ),
        (ErrorKind::Config, q.add("a", &1).attempts(0).await),
        (
            ErrorKind::Config,
            q.add("a", &1).timeout(Duration::ZERO).await,
        ),
        (ErrorKind::Config, q.add("a", &1).dedup("has space").await),
        (
            ErrorKind::Config,
            q.add("a", &1).dedup_for("k", Duration::ZERO).await,
        ),
        (ErrorKind::InvalidName, q.add("a", &1).job_id("a{b}").await),
        (
            ErrorKind::Config,
            q.add("a", &1)
                .delay(Duration::MAX)
                .backoff(RetryPolicy::default().backoff(Duration::MAX))
                .await,
        ),
    ];
    for (i, (want, got)) in cases.into_iter().enumerate() {
        assert_eq!(got.expect_err("refused").kind(), want, "case {i}");
    }
    // Duration::MAX as a delay alone is accepted (cut to about 30 years): no panic.
    let far = q
        .add("a", &1)
        .delay(Duration::MAX)
        .await
        .expect("far delay");
    assert_eq!(far.state, Some(JobState::Delayed));
    let c = q.counts().await.expect("counts");
    assert_eq!(c.unfinished(), 1);
    let w = q
        .worker(|_j: Job<u32>| async { Ok(()) })
        .concurrency(0)
        .await;
    assert_eq!(w.expect_err("zero concurrency").kind(), ErrorKind::Config);
    let w = q
        .worker(|_j: Job<u32>| async { Ok(()) })
        .lease(Duration::from_secs(1))
        .renew_every(Duration::from_secs(2))
        .await;
    assert_eq!(
        w.expect_err("renewal slower than lease").kind(),
        ErrorKind::Config
    );
}

pub async fn many_jobs_many_workers_each_runs_once(f: &dyn Fixture) {
    let name = queue_name("many");
    let q = queue(f, &name).await;
    let runs: Arc<Mutex<HashMap<u32, u32>>> = Arc::new(Mutex::new(HashMap::new()));
    let mut workers = Vec::new();
    for _ in 0..3 {
        let r = runs.clone();
        let wq = queue(f, &name).await;
        workers.push(
            fast(wq.worker(move |job: Job<Invoice>| {
                let r = r.clone();
                async move {
                    *r.lock().expect("lock").entry(job.data().order).or_default() += 1;
                    Ok(())
                }
            }))
            .concurrency(16)
            .await
            .expect("worker"),
        );
    }
    for chunk in (0..600u32).collect::<Vec<_>>().chunks(100) {
        q.add_bulk(chunk.iter().map(|i| q.add("m", &invoice(*i))))
            .await
            .expect("bulk");
    }
    wait_until_async("every job completed", WAIT, || async {
        q.counts().await.expect("counts").completed == 600
    })
    .await;
    let runs = runs.lock().expect("lock").clone();
    assert_eq!(runs.len(), 600);
    assert!(
        runs.values().all(|n| *n == 1),
        "a job ran twice in a healthy run"
    );
    for w in workers {
        w.shutdown().await;
    }
}
