//! A known state for the dashboard's tests: a topic whose group dead-letters a
//! `<script>` payload, and a queue with a failed job whose data and error hold markup.

#![allow(dead_code, unreachable_pub)]

use std::future::Future;
use std::time::{Duration, Instant};

use rivulet::admin::Admin;
use rivulet::{AnyBackend, Bus, Delivery, HandlerError, JobId, JobState, Queue, RetryPolicy};

pub const TOPIC: &str = "orders";
pub const GROUP: &str = "picky";
pub const QUEUE: &str = "invoices";
pub const TOKEN: &str = "test-token-0123456789";
/// What a payload would do if it ran: set the title and a global.
pub const SCRIPT: &str = "<script>document.title='pwned';window.pwned=1</script>";

/// Polls `check` until it holds, failing after `limit`.
pub async fn wait_until<F, Fut>(what: &str, limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    loop {
        if check().await {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Order {
    pub note: String,
}

/// The seeded state: one dead letter on `TOPIC` (group `GROUP`), one failed job on
/// `QUEUE`. Returns the bus (keep it alive) and the failed job's id.
pub struct Seeded {
    pub bus: Bus,
    pub failed_job: JobId,
}

pub async fn seed(backend: AnyBackend) -> Seeded {
    let bus = Bus::builder(backend.clone())
        .app("dash-test")
        .block_timeout(Duration::from_millis(100))
        .retry_mover_interval(Duration::from_millis(50))
        .build()
        .expect("bus");
    let sub = bus
        .subscribe(TOPIC, GROUP, |_d: Delivery<Order>| async {
            Err::<(), _>(HandlerError::permanent("bad <b>order</b> \"quoted\""))
        })
        .retry(RetryPolicy::default().max_attempts(1))
        .await
        .expect("subscribe");
    bus.publish(
        TOPIC,
        &Order {
            note: SCRIPT.to_owned(),
        },
    )
    .await
    .expect("publish");
    let admin = Admin::new(backend.clone());
    wait_until("a dead letter", Duration::from_secs(10), || {
        let admin = admin.clone();
        async move {
            admin
                .topic(TOPIC)
                .await
                .map(|t| t.dead_letters)
                .unwrap_or(0)
                == 1
        }
    })
    .await;
    sub.unsubscribe().await;

    let q = Queue::new(backend.clone(), QUEUE).expect("queue");
    let failed_job = q
        .add("invoice", &serde_json::json!({ "note": SCRIPT }))
        .attempts(1)
        .await
        .expect("add")
        .id;
    let worker = q
        .worker(|_job: rivulet::Job<serde_json::Value>| async move {
            Err::<(), _>(HandlerError::permanent("<img src=x onerror=alert(1)>"))
        })
        .block_timeout(Duration::from_millis(100))
        .await
        .expect("worker");
    wait_until("a failed job", Duration::from_secs(10), || {
        let q = q.clone();
        async move {
            q.counts()
                .await
                .map(|c| c.of(JobState::Failed))
                .unwrap_or(0)
                == 1
        }
    })
    .await;
    worker.shutdown().await;
    Seeded { bus, failed_job }
}
