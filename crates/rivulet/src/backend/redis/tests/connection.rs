//! Constructors, errors, redaction, closing, the idempotency store.

use std::time::Duration;

use super::*;
use crate::backend::redis::RedisBackendBuilder;
use crate::backend::redis::RedisIdempotencyStore;
use crate::error::Error;
use crate::idempotency::{Claim, IdempotencyStore};

#[tokio::test]
async fn bad_urls_and_unreachable_servers_are_typed_errors() {
    for bad in ["", "http://localhost", "redis://:pw@host:notaport"] {
        match RedisBackend::connect(bad).await {
            Err(Error::Config(msg)) => assert!(!msg.contains("pw@"), "{msg}"),
            other => panic!("{bad:?}: unexpected {other:?}"),
        }
    }
    // A port nobody listens on (a server we started and stopped).
    let mut server = RedisServer::start().unwrap();
    let url = server.url().replace("redis://", "redis://:s3cret@");
    server.stop().unwrap();
    let err = RedisBackend::builder(url)
        .connect_timeout(Duration::from_millis(200))
        .build()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Connection(_)), "{err:?}");
    assert!(!err.to_string().contains("s3cret"), "{err}");
    assert!(err.is_transient());
    assert!(matches!(
        RedisBackend::builder("redis://127.0.0.1:1")
            .prefix("bad{prefix}")
            .build()
            .await,
        Err(Error::Config(_))
    ));
}

#[tokio::test]
async fn passwords_never_show() {
    let server = RedisServer::builder()
        .password("hunter2-secret")
        .start()
        .unwrap();
    let backend = RedisBackend::connect(&server.url()).await.unwrap();
    assert!(!format!("{backend:?}").contains("hunter2"));
    let builder = RedisBackendBuilder::new(server.url());
    assert!(!format!("{builder:?}").contains("hunter2"));
    let store = RedisIdempotencyStore::open(&server.url()).unwrap();
    assert!(!format!("{store:?}").contains("hunter2"));
    // It works, too.
    publish(&backend, "t", &["x"]).await;
    let wrong = server.url().replace("hunter2-secret", "wrong-pass");
    let err = RedisBackend::connect(&wrong).await.unwrap_err();
    assert!(!err.to_string().contains("wrong-pass"), "{err}");
}

#[tokio::test]
async fn from_client_and_prefix() {
    let server = RedisServer::start().unwrap();
    let client = redis::Client::open(server.url()).unwrap();
    let backend = RedisBackendBuilder::from_client(client)
        .prefix("app2")
        .build()
        .await
        .unwrap();
    publish(&backend, "t", &["x"]).await;
    let len: u64 = raw(&server, redis::cmd("XLEN").arg("{app2/topic/t}/stream"));
    assert_eq!(len, 1);
    assert_eq!(backend.prefix(), "app2");
}

#[tokio::test]
async fn a_detached_handle_works_on_another_runtime_and_the_original_keeps_working() {
    let (_server, backend) = start().await;
    let (key, mut reader) = subscribed(&backend, "t", "g", "c").await;
    publish(&backend, "t", &["x"]).await;
    let got = read_n(&mut reader, 1).await;
    let b = backend.clone();
    let entries = refs(&got);
    // The keep-alive runs on a runtime of its own with a detached handle.
    let refreshed = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let detached = b.detach().await.unwrap();
            detached
                .keep_alive(&key, &group("g"), &consumer("c"), &entries)
                .await
        })
    })
    .join()
    .unwrap();
    assert!(refreshed.is_ok(), "{refreshed:?}");
    // The detached handle (and its runtime) are gone; the original still works.
    publish(&backend, "t", &["y"]).await;
    assert_eq!(read_n(&mut reader, 1).await.len(), 1);
}

#[tokio::test]
async fn dropping_a_reader_interrupts_its_blocking_read() {
    let (server, backend) = start().await;
    let (_key, mut reader) = subscribed(&backend, "t", "g", "c").await;
    let blocked = tokio::spawn(async move {
        let _ = reader.read(1, Duration::from_secs(30)).await;
    });
    let clients = || -> u64 {
        let info: String = raw(&server, redis::cmd("INFO").arg("clients"));
        info.lines()
            .find_map(|l| l.strip_prefix("blocked_clients:"))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0)
    };
    eventually("the read to block", || async {
        (clients() == 1).then_some(())
    })
    .await;
    blocked.abort();
    let _ = blocked.await;
    eventually("the blocked connection to close", || async {
        (clients() == 0).then_some(())
    })
    .await;
}

#[tokio::test]
async fn commands_recover_after_a_restart() {
    let (mut server, backend) = start().await;
    let (key, mut reader) = subscribed(&backend, "t", "g", "c").await;
    server.restart().unwrap();
    // Calls fail fast with a transient error or succeed; they never hang.
    let published = eventually("publish after the restart", || async {
        match tokio::time::timeout(
            Duration::from_secs(3),
            backend.publish(
                &topic("t"),
                vec![envelope("after")],
                &PublishOpts::default(),
            ),
        )
        .await
        {
            Ok(Ok(p)) => Some(p),
            Ok(Err(e)) => {
                assert!(e.is_transient(), "{e:?}");
                None
            }
            Err(_) => panic!("publish hung after a restart"),
        }
    })
    .await;
    assert_eq!(published.len(), 1);
    // The server lost everything (no persistence): the reader re-creates its group.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let got = loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the reader did not resume"
        );
        match reader.read(1, BLOCK).await {
            Ok(got) if !got.is_empty() => break got,
            Ok(_) => {
                let _ = backend
                    .publish(
                        &topic("t"),
                        vec![envelope("after")],
                        &PublishOpts::default(),
                    )
                    .await;
            }
            Err(e) => assert!(e.is_transient(), "{e:?}"),
        }
    };
    assert_eq!(payload(&got[0]), "after");
    backend.ack(&key, &group("g"), &refs(&got)).await.unwrap();
}

#[tokio::test]
async fn idempotency_store_claims_expire_by_themselves() {
    let server = RedisServer::start().unwrap();
    let store = RedisIdempotencyStore::open(&server.url())
        .unwrap()
        .prefix("svc:idem:");
    let ttl = Duration::from_millis(150);
    assert_eq!(store.claim("k", ttl).await.unwrap(), Claim::Acquired);
    assert_eq!(store.claim("k", ttl).await.unwrap(), Claim::Busy);
    let exists: u64 = raw(&server, redis::cmd("EXISTS").arg("svc:idem:k"));
    assert_eq!(exists, 1);
    // The claimer crashed: the claim expires and the key runs again.
    eventually("the claim to expire", || async {
        (store.claim("k", ttl).await.unwrap() == Claim::Acquired).then_some(())
    })
    .await;
    store.complete("k", Duration::from_secs(60)).await.unwrap();
    assert_eq!(store.claim("k", ttl).await.unwrap(), Claim::Done);
    store.release("k").await.unwrap();
    assert_eq!(store.claim("k", ttl).await.unwrap(), Claim::Done);
    // A failed handler releases its claim so the retry runs.
    assert_eq!(store.claim("k2", ttl).await.unwrap(), Claim::Acquired);
    store.release("k2").await.unwrap();
    assert_eq!(store.claim("k2", ttl).await.unwrap(), Claim::Acquired);

    // Sharing a backend's connection.
    let backend = RedisBackend::connect(&server.url()).await.unwrap();
    let shared = RedisIdempotencyStore::from_backend(&backend).prefix("svc:idem:");
    assert_eq!(shared.claim("k", ttl).await.unwrap(), Claim::Done);
}

#[tokio::test]
async fn tricky_passwords_never_show_in_debug_or_connect_errors() {
    let closed = rivulet_testkit::PortLease::reserve().unwrap();
    let port = closed.port();
    // (URL, secret fragments that must not show). The first ones parse (percent-encoded
    // passwords) and fail to connect; the others are refused as configuration.
    let cases = [
        (
            format!("redis://app:qz1%2Fkx7@127.0.0.1:{port}"),
            vec!["qz1", "kx7"],
        ),
        (
            format!("redis://:qz1%3Fkx7%23wv3@127.0.0.1:{port}/0"),
            vec!["qz1", "kx7", "wv3"],
        ),
        (
            format!("redis://u:qz1%40kx7@127.0.0.1:{port}"),
            vec!["qz1", "kx7"],
        ),
        (
            format!("redis://user:qz1/kx7@127.0.0.1:{port}"),
            vec!["qz1", "kx7"],
        ),
        (
            format!("redis://:qz1?kx7#wv3@127.0.0.1:{port}/0"),
            vec!["qz1", "kx7", "wv3"],
        ),
        (
            format!("redis://u:12/kx7@127.0.0.1:{port}"),
            vec!["12/", "kx7"],
        ),
    ];
    for (url, secrets) in &cases {
        let debug = format!("{:?}", RedisBackendBuilder::new(url.clone()));
        let err = RedisBackend::builder(url.clone())
            .connect_timeout(Duration::from_millis(200))
            .build()
            .await
            .unwrap_err();
        assert!(
            matches!(err, Error::Connection(_) | Error::Config(_)),
            "{url}: {err:?}"
        );
        let shown = [debug, err.to_string(), format!("{err:?}")];
        for s in &shown {
            assert!(s.contains("127.0.0.1"), "host lost: {s}");
            for secret in secrets {
                assert!(!s.contains(secret), "{secret:?} of {url:?} shown in {s}");
            }
        }
    }
}
