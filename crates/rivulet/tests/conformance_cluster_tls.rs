//! The conformance suite against a 3-master Redis Cluster whose nodes serve TLS only
//! (client connections, the cluster bus and replication), one CA for all of them.

#![cfg(feature = "redis")]

#[macro_use]
mod conformance;

use std::future::Future;
use std::pin::Pin;

use rivulet::{AnyBackend, RedisBackendBuilder, TlsOptions};
use rivulet_testkit::RedisCluster;

struct Cluster {
    cluster: RedisCluster,
}

impl conformance::Fixture for Cluster {
    fn backend(&self) -> Pin<Box<dyn Future<Output = AnyBackend> + Send + '_>> {
        let urls = self.cluster.urls();
        assert!(urls.iter().all(|u| u.starts_with("rediss://")), "{urls:?}");
        let ca = self.cluster.nodes()[0]
            .tls_ca()
            .expect("TLS nodes")
            .ca_pem
            .clone();
        Box::pin(async move {
            RedisBackendBuilder::cluster(&urls)
                .tls(TlsOptions::new().ca_pem(ca))
                .await
                .expect("connect to the TLS cluster")
                .into()
        })
    }
}

async fn fixture() -> Cluster {
    let cluster = tokio::task::spawn_blocking(|| {
        RedisCluster::builder()
            .masters(3)
            .tls()
            .and_then(|b| b.start())
    })
    .await
    .expect("spawn_blocking")
    .expect("start a 3-master TLS cluster");
    Cluster { cluster }
}

conformance_suite!(fixture());
