//! The conformance suites (bus and jobs) against a real `redis-server` started by the test kit.

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
use rivulet_testkit::RedisServer;

struct Redis {
    server: RedisServer,
}

impl conformance::Fixture for Redis {
    fn backend(&self) -> Pin<Box<dyn Future<Output = AnyBackend> + Send + '_>> {
        let url = self.server.url();
        Box::pin(async move {
            RedisBackend::connect(&url)
                .await
                .expect("connect to the test redis-server")
                .into()
        })
    }
}

async fn fixture() -> Redis {
    let server = tokio::task::spawn_blocking(RedisServer::start)
        .await
        .expect("spawn_blocking")
        .expect("start redis-server");
    Redis { server }
}

conformance_suite!(fixture());
admin_suite!(fixture());
jobs_suite!(fixture());
schedulers_suite!(fixture());
flows_suite!(fixture());
limits_suite!(fixture());
