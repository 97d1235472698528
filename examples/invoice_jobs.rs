//! Jobs: an invoice queue with priorities, a delayed job, a duplicate add, a transient
//! failure and a poison job, run by a worker with a concurrency.
//!
//! Run it with
//!
//! ```sh
//! cargo run -p rivulet --example invoice_jobs                                    # memory
//! RIVULET_REDIS_URL=redis://127.0.0.1:6380 cargo run -p rivulet --example invoice_jobs
//! ```
//!
//! It exits with status 0 when the queue's own counts show every job finished as
//! planned: 5 completed (one after a retry), 1 failed, and the duplicate add not written.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rivulet::{AnyBackend, HandlerError, Job, JobState, MemoryBackend, Queue, RetryPolicy};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
struct Invoice {
    order: u64,
    customer: String,
}

#[tokio::main]
async fn main() -> rivulet::Result<()> {
    let backend: AnyBackend = match std::env::var("RIVULET_REDIS_URL") {
        #[cfg(feature = "redis")]
        Ok(url) => {
            println!("backend: redis");
            rivulet::RedisBackend::connect(&url).await?.into()
        }
        _ => {
            println!("backend: memory (set RIVULET_REDIS_URL to use Redis)");
            MemoryBackend::new().into()
        }
    };
    let queue = Queue::builder(backend, &format!("invoices-{}", std::process::id()))
        .retry(
            RetryPolicy::default()
                .max_attempts(3)
                .backoff(Duration::from_millis(50)),
        )
        .build()?;

    let flaky_once = Arc::new(AtomicBool::new(true));
    let flaky = flaky_once.clone();
    let worker = queue
        .worker(move |job: Job<Invoice>| {
            let flaky = flaky.clone();
            async move {
                let inv = job.data();
                job.log(format!("attempt {} for order {}", job.attempt(), inv.order))
                    .await
                    .map_err(HandlerError::retryable)?;
                if inv.customer == "unknown" {
                    return Err(HandlerError::permanent("no such customer"));
                }
                if inv.order == 3 && flaky.swap(false, Ordering::Relaxed) {
                    return Err(HandlerError::retryable("mail server busy"));
                }
                println!("invoiced order {} (attempt {})", inv.order, job.attempt());
                Ok(format!("INV-{}", inv.order))
            }
        })
        .concurrency(4)
        .block_timeout(Duration::from_millis(200))
        .await?;

    let invoice = |order: u64, customer: &str| Invoice {
        order,
        customer: customer.into(),
    };
    let urgent = queue
        .add("invoice", &invoice(1, "acme"))
        .priority(0)
        .await?;
    queue
        .add("invoice", &invoice(2, "acme"))
        .priority(5)
        .await?;
    queue
        .add("invoice", &invoice(3, "globex"))
        .priority(5)
        .await?;
    queue
        .add("invoice", &invoice(4, "initech"))
        .delay(Duration::from_millis(300))
        .await?;
    let first = queue
        .add("invoice", &invoice(5, "acme"))
        .dedup("order-5")
        .await?;
    let again = queue
        .add("invoice", &invoice(5, "acme"))
        .dedup("order-5")
        .await?;
    queue.add("invoice", &invoice(6, "unknown")).await?;

    let deadline = Instant::now() + Duration::from_secs(30);
    let counts = loop {
        let c = queue.counts().await?;
        if c.unfinished() == 0 {
            break c;
        }
        if Instant::now() > deadline {
            println!("not finished in time: {c:?}");
            std::process::exit(1);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    worker.shutdown().await;

    let result = queue
        .job(&urgent.id)
        .await?
        .and_then(|j| j.result::<String>().ok().flatten());
    println!(
        "completed={} failed={} duplicate_add={} result_of_order_1={:?}",
        counts.completed, counts.failed, again.duplicate, result
    );
    let ok = counts.completed == 5
        && counts.failed == 1
        && again.duplicate
        && again.id == first.id
        && result.as_deref() == Some("INV-1")
        && queue
            .job(&first.id)
            .await?
            .is_some_and(|j| j.state == JobState::Completed);
    if ok {
        println!(
            "ok: 5 invoices completed (one after a retry), 1 poison job failed, 1 duplicate not added"
        );
        Ok(())
    } else {
        println!("unexpected outcome");
        std::process::exit(1);
    }
}
