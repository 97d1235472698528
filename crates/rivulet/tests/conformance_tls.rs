//! The conformance suites (bus and jobs) over TLS: a `redis-server` that serves TLS only (its plain port
//! is off), with a CA and certificates generated at test time, reached through a
//! `rediss://` URL and [`TlsOptions`] with that CA. Every connection the bus opens
//! (shared, readers, live channels, the idempotency store) goes through it.

#![cfg(feature = "redis")]

#[macro_use]
mod conformance;
#[macro_use]
mod jobs;

use std::future::Future;
use std::pin::Pin;

use rivulet::{AnyBackend, RedisBackend, TlsOptions};
use rivulet_testkit::RedisServer;

struct Tls {
    server: RedisServer,
}

impl conformance::Fixture for Tls {
    fn backend(&self) -> Pin<Box<dyn Future<Output = AnyBackend> + Send + '_>> {
        let url = self.server.url();
        assert!(url.starts_with("rediss://"), "{url}");
        let ca = self.server.tls_ca().expect("a TLS server").ca_pem.clone();
        Box::pin(async move {
            RedisBackend::builder(url)
                .tls(TlsOptions::new().ca_pem(ca))
                .await
                .expect("connect to the TLS redis-server")
                .into()
        })
    }
}

async fn fixture() -> Tls {
    let server = tokio::task::spawn_blocking(|| RedisServer::builder().tls().start())
        .await
        .expect("spawn_blocking")
        .expect("start a TLS redis-server");
    Tls { server }
}

conformance_suite!(fixture());
jobs_suite!(fixture());
flows_suite!(fixture());
