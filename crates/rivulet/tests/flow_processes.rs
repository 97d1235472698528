//! A flow across worker processes on a 3-master Redis Cluster (J-9): a parent with 100
//! children spread over 3 queues (in different slots, so every child's note travels
//! through its queue's outbox and a mover) completes exactly once, after all children,
//! while worker processes are killed with SIGKILL throughout; the parent sees all 100
//! results.
//!
//! The worker processes are this test binary run again with `RIVULET_FLOW_CHILD` set: the
//! `child_worker` test below does nothing otherwise.

#![cfg(feature = "redis")]

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use rivulet::{Job, JobEventKind, JobState, Queue, RedisBackend};
use rivulet_testkit::{RedisCluster, key_slot};

use common::child::ChildProcess;

const CHILD_ENV: &str = "RIVULET_FLOW_CHILD";
const KIDS: [&str; 3] = ["fp.kids.a", "fp.kids.b", "fp.kids.c"];
const PARENTS: &str = "fp.parents";

fn worker_opts(w: rivulet::WorkerBuilder) -> rivulet::WorkerBuilder {
    w.lease(Duration::from_secs(1))
        .renew_every(Duration::from_millis(200))
        .stall_check_every(Duration::from_millis(200))
        .block_timeout(Duration::from_millis(200))
}

/// The worker process: a worker on each children's queue, until it is killed.
#[test]
fn child_worker() {
    if std::env::var(CHILD_ENV).is_err() {
        return;
    }
    let urls: Vec<String> = std::env::var("RIVULET_URLS")
        .expect("RIVULET_URLS")
        .split(',')
        .map(str::to_owned)
        .collect();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async move {
        let backend = RedisBackend::cluster(&urls).await.expect("connect");
        let mut workers = Vec::new();
        for name in KIDS {
            let q = Queue::new(backend.clone(), name).expect("queue");
            let w = worker_opts(q.worker(|job: Job<u32>| async move {
                tokio::time::sleep(Duration::from_millis(250)).await;
                Ok(job.data() * 10)
            }))
            .concurrency(1)
            .await
            .expect("worker");
            workers.push(w);
        }
        println!("ready");
        std::future::pending::<()>().await;
    });
}

/// A worker process on the cluster's seed `urls` (killed when dropped).
fn worker_process(urls: &str) -> ChildProcess {
    ChildProcess::spawn("child_worker", &[(CHILD_ENV, "1"), ("RIVULET_URLS", urls)])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parent_of_100_children_in_3_queues_completes_once_while_workers_are_killed() {
    let cluster = tokio::task::spawn_blocking(|| RedisCluster::start(3))
        .await
        .expect("spawn_blocking")
        .expect("start a 3-master cluster");
    let urls = cluster.urls();
    let slots: HashSet<u16> = KIDS
        .iter()
        .chain(std::iter::once(&PARENTS))
        .map(|q| key_slot(format!("{{rivulet/queue/{q}}}/meta").as_bytes()))
        .collect();
    assert_eq!(slots.len(), 4, "every queue in a slot of its own");
    let backend = RedisBackend::cluster(&urls).await.expect("connect");
    let parents = Queue::new(backend.clone(), PARENTS).expect("queue");
    let kids: Vec<Queue> = KIDS
        .iter()
        .map(|n| Queue::new(backend.clone(), n).expect("queue"))
        .collect();
    let mut flow = parents.flow("gather", &0u32).job_id("root");
    for i in 0..100u32 {
        flow = flow.child(kids[(i % 3) as usize].add("part", &i));
    }
    let added = flow.await.expect("add the flow");
    assert_eq!(added.nodes.len(), 101);

    let runs = Arc::new(AtomicU32::new(0));
    let seen = Arc::new(AtomicU32::new(0));
    let (r, s) = (runs.clone(), seen.clone());
    let pw = worker_opts(parents.worker(move |job: Job<u32>| {
        let (r, s) = (r.clone(), s.clone());
        async move {
            r.fetch_add(1, Ordering::Relaxed);
            let results = job
                .children_results::<u32>()
                .await
                .map_err(rivulet::HandlerError::retryable)?;
            s.store(results.len() as u32, Ordering::Relaxed);
            Ok(results.values().sum::<u32>())
        }
    }))
    .await
    .expect("parent worker");

    let joined = urls.join(",");
    let mut procs: Vec<ChildProcess> = (0..2).map(|_| worker_process(&joined)).collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut kills = 0;
    let mut next_kill = Instant::now() + Duration::from_millis(400);
    loop {
        let p = parents
            .job(&added.root.id)
            .await
            .expect("job")
            .expect("exists");
        if p.state == JobState::Completed {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the parent never completed: {p:?}"
        );
        if kills < 6 && Instant::now() >= next_kill {
            procs.remove(0).kill();
            procs.push(worker_process(&joined));
            kills += 1;
            next_kill = Instant::now() + Duration::from_millis(500);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let done = parents
        .job(&added.root.id)
        .await
        .expect("job")
        .expect("exists");
    assert_eq!(
        done.result::<u32>().expect("decode"),
        Some((0..100u32).sum::<u32>() * 10)
    );
    assert_eq!(
        seen.load(Ordering::Relaxed),
        100,
        "the parent saw every result"
    );
    assert_eq!(runs.load(Ordering::Relaxed), 1, "the parent ran once");
    assert!(
        kills >= 3,
        "only {kills} kills landed before the parent completed"
    );
    let mut completed = 0;
    for q in &kids {
        completed += q.counts().await.expect("counts").completed;
    }
    assert_eq!(completed, 100);
    let mut events = parents.events(None).await.expect("events");
    let became_waiting = events
        .drain_now()
        .await
        .expect("events")
        .into_iter()
        .filter(|e| e.kind == JobEventKind::ChildrenCompleted)
        .count();
    assert_eq!(became_waiting, 1, "the parent became waiting once");
    println!("{kills} worker processes killed; parent completed once with 100 results");
    pw.shutdown().await;
    drop(procs);
}
