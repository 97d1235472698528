//! Jobs across real processes, on a real `redis-server` (J-11):
//!
//! * a worker process killed with SIGKILL mid-job has its job run again once the lease
//!   has expired, not before;
//! * a worker process frozen with SIGSTOP past its lease, then continued, cannot record
//!   the job another worker now holds: its completion is refused and the other's result
//!   stands;
//! * a Redis killed with SIGKILL under a stream of adds and restarted (AOF, fsync always)
//!   has every job whose add was acknowledged.
//!
//! The worker processes are this test binary run again with `RIVULET_JOB_CHILD` set: the
//! `child_worker` test below does nothing otherwise.

#![cfg(feature = "redis")]

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rivulet::{Job, JobId, JobState, Queue, RedisBackend};
use rivulet_testkit::RedisServer;

use common::child::ChildProcess;

const CHILD_ENV: &str = "RIVULET_JOB_CHILD";
const WAIT: Duration = Duration::from_secs(20);

/// The worker process. Roles: `hang` (the handler never returns) and `slow` (it returns
/// "from-child" after 3 s, then the process reports its worker's stats and exits).
#[test]
fn child_worker() {
    let Ok(role) = std::env::var(CHILD_ENV) else {
        return;
    };
    let url = std::env::var("RIVULET_URL").expect("RIVULET_URL");
    let queue = std::env::var("RIVULET_QUEUE").expect("RIVULET_QUEUE");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async move {
        let backend = RedisBackend::connect(&url).await.expect("connect");
        let q = Queue::new(backend, &queue).expect("queue");
        let hang = role == "hang";
        let worker = q
            .worker(move |job: Job<u32>| async move {
                println!("started {}", job.id());
                if hang {
                    std::future::pending::<()>().await;
                }
                tokio::time::sleep(Duration::from_secs(3)).await;
                Ok("from-child")
            })
            .lease(Duration::from_secs(1))
            .renew_every(Duration::from_millis(200))
            // Only the other worker looks for stalled jobs.
            .stall_check_every(Duration::from_secs(3600))
            .block_timeout(Duration::from_millis(200))
            .await
            .expect("worker");
        let deadline = Instant::now() + WAIT;
        while worker.stats().lease_lost + worker.stats().completed == 0 && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let s = worker.stats();
        println!(
            "stats lease_lost={} completed={}",
            s.lease_lost, s.completed
        );
        worker.shutdown().await;
    });
}

/// A worker process playing `role` on `queue` (killed when dropped).
fn worker_process(role: &str, url: &str, queue: &str) -> ChildProcess {
    ChildProcess::spawn(
        "child_worker",
        &[
            (CHILD_ENV, role),
            ("RIVULET_URL", url),
            ("RIVULET_QUEUE", queue),
        ],
    )
}

async fn start_server(aof: bool) -> RedisServer {
    tokio::task::spawn_blocking(move || {
        RedisServer::builder()
            .aof(aof)
            .appendfsync("always")
            .start()
    })
    .await
    .expect("spawn_blocking")
    .expect("start redis-server")
}

async fn wait_state(q: &Queue, id: &JobId, state: JobState) -> rivulet::JobInfo {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(j) = q.job(id).await.expect("job")
            && j.state == state
        {
            return j;
        }
        assert!(Instant::now() < deadline, "job {id} never became {state}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_job_has_its_job_run_again_after_the_lease_expires() {
    let server = start_server(false).await;
    let q = Queue::new(
        RedisBackend::connect(&server.url()).await.expect("connect"),
        "killed",
    )
    .expect("queue");
    let id = q.add("work", &1u32).await.expect("add").id;
    let mut child = worker_process("hang", &server.url(), "killed");
    child.wait_said("started", WAIT).await;
    let active = wait_state(&q, &id, JobState::Active).await;
    assert!(
        active
            .worker
            .as_deref()
            .is_some_and(|w| w.contains(&format!(":{}:", child.pid()))),
        "the job is active in the child: {active:?}"
    );
    child.signal("KILL");
    child.wait();
    let killed = Instant::now();
    let worker = q
        .worker(|_job: Job<u32>| async { Ok("from-survivor") })
        .stall_check_every(Duration::from_millis(100))
        .block_timeout(Duration::from_millis(200))
        .await
        .expect("worker");
    let done = wait_state(&q, &id, JobState::Completed).await;
    let waited = killed.elapsed();
    assert_eq!(
        done.result::<String>().expect("decode").as_deref(),
        Some("from-survivor")
    );
    assert_eq!(done.stalls, 1, "the stall is counted");
    assert_eq!(
        done.attempt, 1,
        "one stall within max_stalled is not a failed attempt"
    );
    // The lease (1 s) was renewed at most 200 ms before the kill.
    assert!(
        waited >= Duration::from_millis(700),
        "ran again after {waited:?}, before the lease expired"
    );
    assert_eq!(worker.stats().stalled_found, 1);
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_worker_cannot_complete_the_job_another_worker_now_holds() {
    let server = start_server(false).await;
    let q = Queue::new(
        RedisBackend::connect(&server.url()).await.expect("connect"),
        "frozen",
    )
    .expect("queue");
    let id = q.add("work", &1u32).await.expect("add").id;
    let child = worker_process("slow", &server.url(), "frozen");
    child.wait_said("started", WAIT).await;
    wait_state(&q, &id, JobState::Active).await;
    child.signal("STOP");
    let worker = q
        .worker(|_job: Job<u32>| async { Ok("from-survivor") })
        .stall_check_every(Duration::from_millis(100))
        .block_timeout(Duration::from_millis(200))
        .await
        .expect("worker");
    let done = wait_state(&q, &id, JobState::Completed).await;
    assert_eq!(
        done.result::<String>().expect("decode").as_deref(),
        Some("from-survivor")
    );
    child.signal("CONT");
    // The child's handler finishes (its 3 s are long past) and its completion is refused.
    let stats = child.wait_said("stats", WAIT).await;
    assert_eq!(
        stats, "stats lease_lost=1 completed=0",
        "the frozen worker's write was fenced off"
    );
    let after = q.job(&id).await.expect("job").expect("exists");
    assert_eq!(after.state, JobState::Completed);
    assert_eq!(
        after.result::<String>().expect("decode").as_deref(),
        Some("from-survivor"),
        "the other's result stands"
    );
    assert_eq!(q.counts().await.expect("counts").completed, 1);
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_killed_under_adds_loses_no_acknowledged_job() {
    let mut server = start_server(true).await;
    let backend = RedisBackend::builder(server.url())
        .response_timeout(Duration::from_secs(2))
        .build()
        .await
        .expect("connect");
    let q = Queue::new(backend, "durable").expect("queue");
    let acked = Arc::new(Mutex::new(Vec::new()));
    let failures = Arc::new(Mutex::new(0u32));
    let stop = tokio_util::sync::CancellationToken::new();
    let adder = {
        let (q, acked, failures, stop) = (q.clone(), acked.clone(), failures.clone(), stop.clone());
        tokio::spawn(async move {
            let mut i = 0u32;
            while !stop.is_cancelled() {
                let id = format!("job-{i}");
                match q.add("work", &i).job_id(&id).await {
                    Ok(e) => acked.lock().expect("lock").push(e.id),
                    Err(_) => {
                        *failures.lock().expect("lock") += 1;
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
                i += 1;
            }
        })
    };
    let until = |n: usize| {
        let acked = acked.clone();
        async move {
            let deadline = Instant::now() + WAIT;
            while acked.lock().expect("lock").len() < n {
                assert!(Instant::now() < deadline, "adds stalled below {n}");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    };
    until(300).await;
    server.kill().expect("SIGKILL redis");
    let at_kill = acked.lock().expect("lock").len();
    let _server = tokio::task::spawn_blocking(move || {
        server.restart().expect("restart");
        server
    })
    .await
    .expect("restart task");
    until(at_kill + 200).await;
    stop.cancel();
    adder.await.expect("adder");
    let acked = acked.lock().expect("lock").clone();
    let mut missing = Vec::new();
    for id in &acked {
        if q.job(id).await.expect("job").is_none() {
            missing.push(id.clone());
        }
    }
    assert!(missing.is_empty(), "acknowledged adds lost: {missing:?}");
    let waiting = q.counts().await.expect("counts").waiting;
    assert!(
        waiting >= acked.len() as u64,
        "{waiting} waiting, {} acknowledged",
        acked.len()
    );
    assert!(
        *failures.lock().expect("lock") > 0,
        "the kill was felt by the adder"
    );
}
