//! The conformance suite over TLS with a server-name override: the server certificate
//! names `redis.example` only, the URL says `127.0.0.1`, and rivulet sets up every TLS
//! session itself, verifying `redis.example` (`TlsOptions::server_name`). As in
//! `conformance_tls.rs`, the server serves TLS only (its plain port
//! is off), with a CA and certificates generated at test time, reached through a
//! `rediss://` URL and [`TlsOptions`] with that CA. Every connection the bus opens
//! (shared, readers, live channels, the idempotency store) goes through it.

#![cfg(feature = "redis")]

#[macro_use]
mod conformance;

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
                .tls(TlsOptions::new().ca_pem(ca).server_name("redis.example"))
                .await
                .expect("connect to the TLS redis-server")
                .into()
        })
    }
}

async fn fixture() -> Tls {
    let server = tokio::task::spawn_blocking(|| {
        RedisServer::builder()
            .tls_server_names(&["redis.example"])
            .start()
    })
    .await
    .expect("spawn_blocking")
    .expect("start a TLS redis-server");
    Tls { server }
}

conformance_suite!(fixture());
