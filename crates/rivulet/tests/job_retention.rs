//! J-14 on a real Redis: under a steady load with retention, the queue's footprint stays
//! flat — the number of keys, the finished sets and the event stream stop growing once
//! the bounds are reached, whatever number of jobs goes through.

#![cfg(feature = "redis")]

use std::time::{Duration, Instant};

use rivulet::{HandlerError, Job, Keep, Queue, RedisBackend};
use rivulet_testkit::RedisServer;

async fn run_through(q: &Queue, from: u32, n: u32) {
    for chunk in (from..from + n).collect::<Vec<_>>().chunks(100) {
        q.add_bulk(chunk.iter().map(|i| {
            let add = q.add("steady", i);
            if i % 10 == 0 {
                add.dedup(&format!("d-{i}"))
            } else {
                add
            }
        }))
        .await
        .expect("add");
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let c = q.counts().await.expect("counts");
        if c.unfinished() == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "not finished: {c:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn footprint(server: &RedisServer) -> (u64, u64) {
    let mut con = server.connection().expect("connection");
    let keys: u64 = redis::cmd("DBSIZE").query(&mut con).expect("DBSIZE");
    let events: u64 = redis::cmd("XLEN")
        .arg("{rivulet/queue/steady}/events")
        .query(&mut con)
        .expect("XLEN");
    (keys, events)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_steady_load_keeps_the_queue_footprint_flat() {
    let server = tokio::task::spawn_blocking(RedisServer::start)
        .await
        .expect("spawn_blocking")
        .expect("redis-server");
    let backend = RedisBackend::connect(&server.url()).await.expect("connect");
    let q = Queue::builder(backend, "steady")
        .keep_completed(Keep::new(200, Duration::from_secs(3600)))
        .keep_failed(Keep::new(50, Duration::from_secs(3600)))
        .events_cap(500)
        .build()
        .expect("queue");
    let worker = q
        .worker(|job: Job<u32>| async move {
            job.log("working").await.map_err(HandlerError::retryable)?;
            if job.data().is_multiple_of(7) {
                return Err(HandlerError::permanent("poison"));
            }
            Ok(job.data() * 2)
        })
        .concurrency(16)
        .block_timeout(Duration::from_millis(200))
        .await
        .expect("worker");
    run_through(&q, 0, 1_000).await;
    let (keys_1k, events_1k) = footprint(&server);
    run_through(&q, 1_000, 3_000).await;
    let (keys_4k, events_4k) = footprint(&server);
    let c = q.counts().await.expect("counts");
    assert_eq!((c.completed, c.failed), (200, 50), "{c:?}");
    // Job records, their data and their logs: 250 retained jobs, each with a log, plus
    // the queue's own keys; dedup keys of finished jobs are gone.
    assert_eq!(keys_4k, keys_1k, "keys grew from {keys_1k} to {keys_4k}");
    assert!(
        keys_4k <= 3 * 250 + 16,
        "{keys_4k} keys for 250 retained jobs"
    );
    assert!(
        events_1k <= 500 && events_4k <= 500,
        "events {events_1k}, {events_4k}"
    );
    worker.shutdown().await;
}

/// A job's 100-byte data lives beside its record, so the record stays a compact
/// listpack (a value over 64 bytes would make Redis store the whole hash as a hashtable,
/// about four times the memory); a record written before the data moved out still reads
/// and runs with the data it holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_records_stay_compact_and_old_records_still_run() {
    let server = tokio::task::spawn_blocking(RedisServer::start)
        .await
        .expect("spawn_blocking")
        .expect("redis-server");
    let backend = RedisBackend::builder(server.url())
        .build()
        .await
        .expect("backend");
    let q = Queue::new(backend, "layout").expect("queue");
    let big = "x".repeat(100);
    let added = q.add("big", &big).await.expect("add");
    let mut con = server.connection().expect("connection");
    let record = format!("{{rivulet/queue/layout}}/job/{}", added.id);
    let encoding: String = redis::cmd("OBJECT")
        .arg("ENCODING")
        .arg(&record)
        .query(&mut con)
        .expect("OBJECT ENCODING");
    assert_eq!(encoding, "listpack");
    let info = q.job(&added.id).await.expect("job").expect("a record");
    assert_eq!(info.data::<String>().expect("data"), big);

    // The old layout: the data in the record itself.
    let old = q.add("old", &0u8).await.expect("add");
    let old_record = format!("{{rivulet/queue/layout}}/job/{}", old.id);
    let _: () = redis::cmd("DEL")
        .arg(format!("{{rivulet/queue/layout}}/data/{}", old.id))
        .query(&mut con)
        .expect("DEL");
    let _: () = redis::cmd("HSET")
        .arg(&old_record)
        .arg("data")
        .arg("\"from the record\"")
        .query(&mut con)
        .expect("HSET");
    let info = q.job(&old.id).await.expect("job").expect("a record");
    assert_eq!(info.data::<String>().expect("data"), "from the record");
    let listed = q
        .jobs(rivulet::JobState::Waiting, None, 10)
        .await
        .expect("list");
    let data: Vec<String> = listed
        .jobs
        .iter()
        .map(|j| j.data::<String>().unwrap_or_default())
        .collect();
    assert!(data.contains(&"from the record".to_owned()), "{data:?}");
    assert!(data.contains(&big), "{data:?}");
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let s = seen.clone();
    let worker = q
        .worker(move |job: Job<serde_json::Value>| {
            let s = s.clone();
            async move {
                s.lock().expect("lock").push(job.data().clone());
                Ok::<_, HandlerError>(())
            }
        })
        .await
        .expect("worker");
    let deadline = Instant::now() + Duration::from_secs(10);
    while q.counts().await.expect("counts").completed < 2 {
        assert!(Instant::now() < deadline, "not completed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    worker.shutdown().await;
    let seen = seen.lock().expect("lock").clone();
    assert!(
        seen.contains(&serde_json::json!("from the record")),
        "{seen:?}"
    );
    assert!(seen.contains(&serde_json::json!(big)), "{seen:?}");
    // Removing a finished job removes its data too.
    q.remove(&added.id).await.expect("remove");
    let left: u64 = redis::cmd("EXISTS")
        .arg(format!("{{rivulet/queue/layout}}/data/{}", added.id))
        .query(&mut con)
        .expect("EXISTS");
    assert_eq!(left, 0);
}
