//! The conformance suites (bus and jobs) against a 3-master Redis Cluster started by the test kit (one
//! cluster per test, so every process is stopped when its test ends). Topic names differ
//! per test, so topics spread over the masters' slots.

#![cfg(feature = "redis")]

#[macro_use]
mod conformance;
#[macro_use]
mod jobs;
#[macro_use]
mod admin;

use std::future::Future;
use std::pin::Pin;

use rivulet::{AnyBackend, RedisBackend};
use rivulet_testkit::RedisCluster;

struct Cluster {
    cluster: RedisCluster,
}

impl conformance::Fixture for Cluster {
    fn backend(&self) -> Pin<Box<dyn Future<Output = AnyBackend> + Send + '_>> {
        let urls = self.cluster.urls();
        Box::pin(async move {
            RedisBackend::cluster(&urls)
                .await
                .expect("connect to the test cluster")
                .into()
        })
    }
}

async fn fixture() -> Cluster {
    let cluster = tokio::task::spawn_blocking(|| RedisCluster::start(3))
        .await
        .expect("spawn_blocking")
        .expect("start a 3-master cluster");
    Cluster { cluster }
}

conformance_suite!(fixture());
admin_suite!(fixture());
jobs_suite!(fixture());
schedulers_suite!(fixture());
flows_suite!(fixture());
limits_suite!(fixture());
