//! The metrics collector and the Prometheus exporter (O-OBS-1, feature `prometheus`):
//! the sampled gauges mean the same on memory and on a real `redis-server`, and a tick
//! costs a fixed number of round trips, whatever the number of topics and queues.

#![cfg(feature = "prometheus")]

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use common::{wait_for, wait_until};
use rivulet::metrics::{Collector, Prometheus};
use rivulet::{
    AnyBackend, Bus, Delivery, Dispatch, HandlerError, MemoryBackend, Queue, RetryPolicy,
};
use tokio::sync::Semaphore;

/// The one recorder of this test binary.
fn prometheus() -> &'static Prometheus {
    static P: OnceLock<Prometheus> = OnceLock::new();
    P.get_or_init(|| Prometheus::install().expect("the only recorder"))
}

/// The rendered samples, `name{labels}` → value.
fn samples() -> BTreeMap<String, f64> {
    prometheus()
        .render()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_owned(), v.parse().ok()?))
        })
        .collect()
}

/// The value of `name` with exactly these labels, in any order.
fn value(name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut want: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    want.sort();
    samples().into_iter().find_map(|(k, v)| {
        let (n, rest) = k.split_once('{')?;
        let mut got: Vec<String> = rest
            .trim_end_matches('}')
            .split(',')
            .map(str::to_owned)
            .collect();
        got.sort();
        (n == name && got == want).then_some(v)
    })
}

/// A topic with a group holding two entries in its handlers (pending 2) and three not
/// yet delivered (lag 3); a topic with two dead letters; one with a retry scheduled far
/// ahead; a queue with two waiting jobs and one delayed.
async fn gauges_mean_what_the_docs_say(backend: AnyBackend, p: &str) {
    prometheus();
    let bus = Bus::builder(backend.clone())
        .app("mc")
        .block_timeout(Duration::from_millis(100))
        .build()
        .expect("bus");
    let gate = Arc::new(Semaphore::new(0));
    let started = Arc::new(AtomicU32::new(0));
    let (g, s) = (gate.clone(), started.clone());
    let held = format!("{p}.held");
    let _held = bus
        .subscribe(&held, "h", move |_d: Delivery<u32>| {
            let (gate, started) = (g.clone(), s.clone());
            async move {
                started.fetch_add(1, Ordering::SeqCst);
                let _permit = gate.acquire().await;
                Ok(())
            }
        })
        .group("g")
        .dispatch(Dispatch::Sliding)
        .concurrency(2)
        .await
        .expect("subscribe");
    let dead = format!("{p}.dead");
    let _dead = bus
        .subscribe(&dead, "h", |_d: Delivery<u32>| async {
            Err(HandlerError::permanent("no"))
        })
        .group("g")
        .await
        .expect("subscribe");
    let retry = format!("{p}.retry");
    let _retry = bus
        .subscribe(&retry, "h", |_d: Delivery<u32>| async {
            Err(HandlerError::retryable("later"))
        })
        .group("g")
        .retry(RetryPolicy::default().backoff(Duration::from_secs(600)))
        .await
        .expect("subscribe");
    bus.publish_batch(&held, &[1u32, 2, 3, 4, 5])
        .await
        .expect("publish");
    bus.publish_batch(&dead, &[1u32, 2]).await.expect("publish");
    bus.publish(&retry, &1u32).await.expect("publish");
    let queue_name = format!("{p}-q");
    let queue = Queue::builder(backend.clone(), &queue_name)
        .build()
        .expect("queue");
    queue.add("n", &1u32).await.expect("add");
    queue.add("n", &2u32).await.expect("add");
    queue
        .add("n", &3u32)
        .delay(Duration::from_secs(600))
        .await
        .expect("add");
    wait_until(
        "two handlers hold their entries",
        Duration::from_secs(10),
        || started.load(Ordering::SeqCst) == 2,
    )
    .await;
    let dead_letters = bus.dead_letters(&dead).expect("dead letters");
    wait_for("two dead letters", Duration::from_secs(10), || async {
        dead_letters.len().await.expect("len") == 2
    })
    .await;

    let mut collector = Collector::new(backend.clone());
    let retry_labels = [("topic", retry.as_str())];
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        collector.collect_once().await.expect("tick");
        if value("rivulet_retries_scheduled", &retry_labels) == Some(1.0) {
            break;
        }
        assert!(Instant::now() < deadline, "the retry is scheduled");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let tick = collector.collect_once().await.expect("tick");
    assert!(tick.topics >= 3 && tick.queues >= 1, "{tick:?}");

    let tg = |t: &str| [("group", "g".to_owned()), ("topic", t.to_owned())];
    let get = |name: &str, labels: &[(&str, String)]| {
        let l: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
        value(name, &l)
    };
    assert_eq!(
        value("rivulet_stream_length", &[("topic", &held)]),
        Some(5.0)
    );
    assert_eq!(get("rivulet_group_pending", &tg(&held)), Some(2.0));
    assert_eq!(get("rivulet_group_lag", &tg(&held)), Some(3.0));
    assert_eq!(get("rivulet_in_flight", &tg(&held)), Some(2.0));
    assert_eq!(
        value("rivulet_dead_letters", &[("topic", &dead)]),
        Some(2.0)
    );
    assert_eq!(get("rivulet_group_pending", &tg(&dead)), Some(0.0));
    assert_eq!(get("rivulet_group_lag", &tg(&dead)), Some(0.0));
    assert_eq!(
        value("rivulet_dead_letters", &[("topic", &held)]),
        Some(0.0)
    );
    let jobs = |state: &str| value("rivulet_jobs", &[("queue", &queue_name), ("state", state)]);
    assert_eq!(jobs("waiting"), Some(2.0));
    assert_eq!(jobs("delayed"), Some(1.0));
    assert_eq!(jobs("active"), Some(0.0));
    assert_eq!(jobs("completed"), Some(0.0));

    // Released, the held entries settle: pending and lag drain to zero.
    gate.add_permits(100);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        collector.collect_once().await.expect("tick");
        if get("rivulet_group_pending", &tg(&held)) == Some(0.0)
            && get("rivulet_group_lag", &tg(&held)) == Some(0.0)
        {
            break;
        }
        assert!(Instant::now() < deadline, "the held topic drains");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    bus.shutdown().await;
}

/// A job delayed by 400 ms waits from its run-at time, not from its add; its run's
/// duration is recorded too.
async fn job_wait_counts_from_the_run_at_time(backend: AnyBackend, queue_name: &str) {
    prometheus();
    let queue = Queue::builder(backend, queue_name).build().expect("queue");
    let worker = queue
        .worker(|_job: rivulet::Job<u32>| async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            Ok(())
        })
        .block_timeout(Duration::from_millis(100))
        .await
        .expect("worker");
    queue
        .add("n", &1u32)
        .delay(Duration::from_millis(400))
        .await
        .expect("add");
    let q = [("queue", queue_name)];
    wait_until("the job ran", Duration::from_secs(10), || {
        value("rivulet_job_duration_seconds_count", &q) == Some(1.0)
    })
    .await;
    assert_eq!(value("rivulet_job_wait_seconds_count", &q), Some(1.0));
    let waited = value("rivulet_job_wait_seconds_sum", &q).expect("wait sum");
    assert!(
        waited < 0.3,
        "waited {waited} s: counted from the add, not the run-at time"
    );
    let ran = value("rivulet_job_duration_seconds_sum", &q).expect("duration sum");
    assert!((0.05..5.0).contains(&ran), "ran {ran} s");
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_job_wait_counts_from_the_run_at_time() {
    job_wait_counts_from_the_run_at_time(MemoryBackend::new().into(), "mem-wait").await;
}

#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_job_wait_counts_from_the_run_at_time() {
    let server = common::server().await;
    let backend = common::backend(&server.url()).await;
    job_wait_counts_from_the_run_at_time(backend.into(), "redis-wait").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_gauges_mean_what_the_docs_say() {
    gauges_mean_what_the_docs_say(MemoryBackend::new().into(), "mem").await;
}

#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_gauges_mean_what_the_docs_say() {
    let server = common::server().await;
    let backend = common::backend(&server.url()).await;
    gauges_mean_what_the_docs_say(backend.into(), "redis").await;
}

/// On a cluster the topics and queues live in several slots: each is its own pipeline.
#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_gauges_mean_what_the_docs_say() {
    let cluster = tokio::task::spawn_blocking(|| rivulet_testkit::RedisCluster::start(3))
        .await
        .expect("spawn_blocking")
        .expect("start a 3-master cluster");
    let backend = rivulet::RedisBackend::cluster(&cluster.urls())
        .await
        .expect("connect to the test cluster");
    gauges_mean_what_the_docs_say(backend.into(), "cluster").await;
}

/// `INFO commandstats` calls per command.
#[cfg(feature = "redis")]
async fn command_calls(url: &str) -> BTreeMap<String, u64> {
    let info: String = common::cmd(url, redis::cmd("INFO").arg("commandstats")).await;
    info.lines()
        .filter_map(|l| {
            let (name, rest) = l.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = rest
                .strip_prefix("calls=")?
                .split(',')
                .next()?
                .parse()
                .ok()?;
            Some((name.to_owned(), calls))
        })
        .collect()
}

/// 120 topics and 30 queues, sampled through a proxy that delays every chunk by 25 ms
/// each way: a tick costs the round trips the collector says (2 registry reads + one
/// per batch of 50), which the wall time confirms, and 4 commands per topic and 8 per
/// queue, with no keyspace scan. Capped at 40 objects, a tick costs less and ticks go
/// round the registries, queues included.
#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tick_costs_a_fixed_number_of_round_trips() {
    use rivulet_testkit::{ProxyMode, TcpProxy};
    prometheus();
    let server = common::server().await;
    let url = server.url();
    let direct = common::backend(&url).await;
    let bus = Bus::builder(direct.clone()).build().expect("bus");
    for i in 0..120 {
        bus.publish(&format!("cost.t{i}"), &i)
            .await
            .expect("publish");
    }
    for i in 0..30 {
        let q = Queue::builder(direct.clone(), &format!("cost-q{i}"))
            .build()
            .expect("queue");
        q.add("n", &i).await.expect("add");
    }
    let proxy = TcpProxy::for_port(server.port()).expect("proxy");
    let backend = rivulet::RedisBackend::connect(&proxy.url())
        .await
        .expect("connect through the proxy");
    let delay = Duration::from_millis(25);
    proxy.set_mode(ProxyMode::Delay(delay)).expect("delay");
    let rtt = delay * 2;

    // Uncapped; then capped at 40: the first tick takes 40 topics, the fourth the
    // last 30 queues and 10 topics again.
    let capped = || Collector::new(backend.clone()).batch(20).max_objects(40);
    let mut round = capped();
    for _ in 0..3 {
        round.collect_once().await.expect("tick");
    }
    for (mut collector, expected, topics, queues) in [
        (
            Collector::new(backend.clone()).batch(50),
            2 + 3 + 1,
            120,
            30,
        ),
        (capped(), 2 + 2, 40, 0),
        (round, 2 + 1 + 2, 10, 30),
    ] {
        let before = command_calls(&url).await;
        let t0 = Instant::now();
        let tick = collector.collect_once().await.expect("tick");
        let took = t0.elapsed();
        let after = command_calls(&url).await;
        let delta = |c: &str| after.get(c).unwrap_or(&0) - before.get(c).unwrap_or(&0);
        eprintln!(
            "collector tick: {} topics + {} queues sampled of {}, {} round trips, {} ms \
             through a proxy adding {} ms per round trip",
            tick.topics,
            tick.queues,
            tick.registered,
            tick.round_trips,
            took.as_millis(),
            rtt.as_millis()
        );
        assert_eq!(tick.registered, 150);
        assert_eq!((tick.topics, tick.queues), (topics, queues));
        assert_eq!(tick.round_trips, expected);
        // The wall time confirms the round trips: each costs at least `rtt`, and
        // there is no room for even one per object.
        assert!(took >= rtt * expected as u32, "{took:?}");
        assert!(took < rtt * (expected as u32 + 3), "{took:?}");
        let (t, q) = (tick.topics as u64, tick.queues as u64);
        assert_eq!(delta("xlen"), 2 * t);
        assert_eq!(delta("xinfo|groups"), t);
        assert_eq!(delta("zcard"), t + 7 * q);
        assert_eq!(delta("hget"), 2 * q);
        // The two registry reads, and the INFO of this test.
        assert_eq!(delta("smembers"), 2);
        for scan in ["keys", "scan", "sscan", "zscan", "hscan"] {
            assert_eq!(delta(scan), 0, "{scan}");
        }
    }
    assert_eq!(
        value("rivulet_stream_length", &[("topic", "cost.t7")]),
        Some(1.0)
    );
    assert_eq!(
        value(
            "rivulet_jobs",
            &[("queue", "cost-q3"), ("state", "waiting")]
        ),
        Some(1.0)
    );
    bus.shutdown().await;
}

#[tokio::test]
async fn bad_collector_settings_are_typed_errors() {
    let backend = MemoryBackend::new();
    for c in [
        Collector::new(backend.clone()).every(Duration::ZERO),
        Collector::new(backend.clone()).batch(0),
        Collector::new(backend.clone()).batch(1001),
        Collector::new(backend.clone()).max_objects(0),
    ] {
        let e = c.spawn().expect_err("refused");
        assert_eq!(e.kind(), rivulet::ErrorKind::Config, "{e}");
    }
    prometheus();
    let e = Prometheus::install().expect_err("a second recorder is refused");
    assert_eq!(e.kind(), rivulet::ErrorKind::Config, "{e}");
}
