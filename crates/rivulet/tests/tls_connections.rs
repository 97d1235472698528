//! TLS failures are typed errors that say what failed (issue 14 item 1), mutual TLS
//! works, and the idempotency store and live channels connect over TLS too.

#![cfg(feature = "redis")]

use std::time::Duration;

use rivulet::{
    Error, ErrorKind, IdempotencyStore, RedisBackend, RedisIdempotencyStore, TlsFailure, TlsOptions,
};
use rivulet_testkit::{RedisServer, RedisServerBuilder, TestCa};

async fn start(builder: RedisServerBuilder) -> RedisServer {
    tokio::task::spawn_blocking(move || builder.start())
        .await
        .expect("spawn_blocking")
        .expect("start redis-server")
}

fn ca_of(server: &RedisServer) -> TestCa {
    server.tls_ca().expect("a TLS server").clone()
}

async fn connect_err(url: String, tls: TlsOptions) -> Error {
    RedisBackend::builder(url)
        .tls(tls)
        .connect_timeout(Duration::from_millis(500))
        .await
        .expect_err("the connection must fail")
}

#[tokio::test]
async fn a_certificate_of_an_unknown_ca_is_not_trusted() {
    let server = start(RedisServer::builder().tls()).await;
    let other = TestCa::generate(&["localhost"]).expect("another CA");
    let e = connect_err(server.url(), TlsOptions::new().ca_pem(other.ca_pem)).await;
    assert_eq!(e.kind(), ErrorKind::Tls, "{e}");
    assert!(
        matches!(
            &e,
            Error::Tls {
                failure: TlsFailure::CertificateNotTrusted(_),
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("certificate not trusted"), "{e}");
    assert!(!e.is_transient());
    // The public roots do not know the test CA either.
    let e = connect_err(server.url(), TlsOptions::new()).await;
    assert!(e.to_string().contains("certificate not trusted"), "{e}");
}

#[tokio::test]
async fn a_certificate_for_another_name_is_a_host_name_mismatch() {
    let server = start(RedisServer::builder().tls_server_names(&["redis.example"])).await;
    let e = connect_err(
        server.url(),
        TlsOptions::new().ca_pem(ca_of(&server).ca_pem),
    )
    .await;
    assert!(
        matches!(
            &e,
            Error::Tls {
                failure: TlsFailure::HostNameMismatch(_),
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("host name mismatch"), "{e}");
}

#[tokio::test]
async fn a_plain_text_server_does_not_speak_tls() {
    let server = start(RedisServer::builder()).await;
    let url = server.url().replacen("redis://", "rediss://", 1);
    let e = connect_err(url, TlsOptions::new()).await;
    assert!(
        matches!(
            &e,
            Error::Tls {
                failure: TlsFailure::ServerNotTls,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("server does not speak TLS"), "{e}");
}

#[tokio::test]
async fn mutual_tls_needs_the_client_certificate() {
    let server = start(RedisServer::builder().tls_require_client_cert(true)).await;
    let ca = ca_of(&server);
    let e = connect_err(server.url(), TlsOptions::new().ca_pem(ca.ca_pem.clone())).await;
    assert_eq!(e.kind(), ErrorKind::Tls, "{e:?}");

    let tls = TlsOptions::new()
        .ca_pem(ca.ca_pem.clone())
        .client_cert(ca.client.cert_pem.clone(), ca.client.key_pem.clone());
    let backend = RedisBackend::builder(server.url())
        .tls(tls.clone())
        .await
        .expect("mutual TLS connects");
    let bus = rivulet::Bus::builder(backend.clone())
        .app("mtls")
        .build()
        .expect("a bus");
    bus.publish("mtls.topic", &1u32)
        .await
        .expect("publish over mutual TLS");

    // The idempotency store opens its own TLS connection.
    let store = RedisIdempotencyStore::open_with_tls(&server.url(), &tls).expect("a store");
    let claim = store
        .claim("k1", Duration::from_secs(5))
        .await
        .expect("claim over TLS");
    assert_eq!(claim, rivulet::Claim::Acquired);
    bus.shutdown().await;
}

#[tokio::test]
async fn tls_options_without_tls_are_a_configuration_error() {
    // No server at all: the error comes before any connection attempt.
    let e = RedisBackend::builder("redis://127.0.0.1:1")
        .tls(TlsOptions::new())
        .await
        .expect_err("TLS options for a redis:// URL");
    assert_eq!(e.kind(), ErrorKind::Config, "{e}");
    assert!(e.to_string().contains("use rediss://"), "{e}");
}

/// Connecting by address to a server whose certificate names another host: with the
/// override, every connection (shared, reader, live, the idempotency store) verifies
/// that name; a wrong override is a host-name mismatch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_name_override_verifies_that_name_on_every_connection() {
    let server = start(RedisServer::builder().tls_server_names(&["redis.example"])).await;
    let ca = ca_of(&server).ca_pem;
    let tls = TlsOptions::new()
        .ca_pem(ca.clone())
        .server_name("redis.example");
    let backend = RedisBackend::builder(server.url())
        .tls(tls.clone())
        .await
        .expect("connects with the override");
    let bus = rivulet::Bus::builder(backend)
        .app("named")
        .block_timeout(Duration::from_millis(200))
        .build()
        .expect("a bus");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let _sub = bus
        .subscribe("named.topic", "h", move |d: rivulet::Delivery<u32>| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(*d.payload());
                Ok::<(), rivulet::HandlerError>(())
            }
        })
        .await
        .expect("subscribe");
    let mut live = bus.live().subscribe("named.live").await.expect("live");
    bus.publish("named.topic", &7u32).await.expect("publish");
    let got = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("a delivery in time");
    assert_eq!(got, Some(7));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        bus.live()
            .publish("named.live", &1u32)
            .await
            .expect("live publish");
        if let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(200), live.next()).await {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no live message");
    }
    let store = RedisIdempotencyStore::open_with_tls(&server.url(), &tls).expect("a store");
    assert_eq!(
        store
            .claim("k", Duration::from_secs(5))
            .await
            .expect("claim"),
        rivulet::Claim::Acquired
    );
    bus.shutdown().await;

    let wrong = TlsOptions::new().ca_pem(ca).server_name("other.example");
    let e = connect_err(server.url(), wrong).await;
    assert!(
        matches!(
            &e,
            Error::Tls {
                failure: TlsFailure::HostNameMismatch(_),
                ..
            }
        ),
        "{e:?}"
    );
}

#[tokio::test]
async fn a_server_name_override_needs_a_single_tls_endpoint() {
    let named = TlsOptions::new().server_name("redis.example");
    let e = RedisBackend::builder("redis://127.0.0.1:1")
        .tls(named.clone())
        .await
        .expect_err("not TLS");
    assert_eq!(e.kind(), ErrorKind::Config, "{e}");
    let e = rivulet::RedisBackendBuilder::cluster(&["rediss://127.0.0.1:1"])
        .tls(named.clone())
        .await
        .expect_err("a cluster");
    assert!(e.to_string().contains("single endpoint"), "{e}");
    let e = RedisBackend::builder("redis+sentinel://127.0.0.1:1/m")
        .tls(named)
        .await
        .expect_err("Sentinel");
    assert!(e.to_string().contains("single endpoint"), "{e}");
}
