//! Helpers shared by the bus-level tests on a real `redis-server` (started by the test
//! kit on a free port, stopped on drop).

#![allow(dead_code, unreachable_pub)]

pub(crate) mod child;

use std::future::Future;
use std::time::{Duration, Instant};

#[cfg(feature = "redis")]
use rivulet::{Bus, BusBuilder, RedisBackend, RetryPolicy};
#[cfg(feature = "redis")]
use rivulet_testkit::RedisServer;

pub(crate) const MIN_IDLE: Duration = Duration::from_millis(1000);
pub(crate) const RECLAIM: Duration = Duration::from_millis(300);

#[cfg(feature = "redis")]
pub(crate) async fn server() -> RedisServer {
    tokio::task::spawn_blocking(|| RedisServer::builder().start())
        .await
        .expect("spawn_blocking")
        .expect("redis-server")
}

#[cfg(feature = "redis")]
pub(crate) async fn backend(url: &str) -> RedisBackend {
    RedisBackend::connect(url).await.expect("connect")
}

#[cfg(feature = "redis")]
/// A bus with short timings: reclaim after 1 s idle, checked every 300 ms.
pub(crate) fn builder(backend: RedisBackend) -> BusBuilder {
    Bus::builder(backend)
        .app("t")
        .block_timeout(Duration::from_millis(200))
        .min_idle(MIN_IDLE)
        .reclaim_interval(RECLAIM)
        .retry_mover_interval(Duration::from_millis(100))
        .retry(
            RetryPolicy::default()
                .max_attempts(3)
                .backoff(Duration::from_millis(50)),
        )
}

#[cfg(feature = "redis")]
pub(crate) async fn bus(url: &str) -> Bus {
    builder(backend(url).await).build().expect("bus")
}

#[cfg(feature = "redis")]
pub(crate) async fn raw(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("connect")
}

#[cfg(feature = "redis")]
/// Runs a raw command and returns its reply.
pub(crate) async fn cmd<T: redis::FromRedisValue>(url: &str, cmd: &mut redis::Cmd) -> T {
    let mut con = raw(url).await;
    cmd.query_async(&mut con).await.expect("raw command")
}

#[cfg(feature = "redis")]
pub(crate) fn key(topic: &str, suffix: &str) -> String {
    format!("{{rivulet/topic/{topic}}}/{suffix}")
}

#[cfg(feature = "redis")]
pub(crate) fn stream(topic: &str) -> String {
    key(topic, "stream")
}

/// Polls `cond` every 10 ms until it holds, or fails the test after `timeout`.
pub(crate) async fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Polls the async `cond` every 20 ms until it holds, or fails the test after `timeout`.
pub(crate) async fn wait_for<F, Fut>(what: &str, timeout: Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !cond().await {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[cfg(feature = "redis")]
/// How many entries of `group` are pending on `stream`.
pub(crate) async fn pending(url: &str, stream: &str, group: &str) -> i64 {
    let v: Vec<redis::Value> = cmd(url, redis::cmd("XPENDING").arg(stream).arg(group)).await;
    match v.first() {
        Some(redis::Value::Int(n)) => *n,
        _ => -1,
    }
}
