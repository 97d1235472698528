//! Live channels over Pub/Sub.

use std::time::Duration;
use tokio_util::sync::CancellationToken;

use super::*;

#[tokio::test]
async fn pattern_subscriptions_receive_matching_channels() {
    let (_server, backend) = start().await;
    let mut rx = backend
        .live_subscribe(
            &["news.*".to_owned(), "alerts:[ab]".to_owned()],
            CancellationToken::new(),
        )
        .await
        .unwrap();
    let got = backend
        .live_publish("news.sport", Bytes::from_static(b"goal"))
        .await
        .unwrap();
    assert_eq!(got, 1);
    assert_eq!(
        backend
            .live_publish("weather.today", Bytes::from_static(b"rain"))
            .await
            .unwrap(),
        0
    );
    backend
        .live_publish("alerts:b", Bytes::from_static(b"\x00\xff"))
        .await
        .unwrap();
    let first = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.channel, "news.sport");
    assert_eq!(first.pattern, "news.*");
    assert_eq!(first.payload, Bytes::from_static(b"goal"));
    let second = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(second.channel, "alerts:b");
    assert_eq!(second.pattern, "alerts:[ab]");
    assert_eq!(second.payload, Bytes::from_static(b"\x00\xff"));
}

#[tokio::test]
async fn dropping_the_receiver_ends_the_subscription() {
    let (_server, backend) = start().await;
    let rx = backend
        .live_subscribe(&["x.*".to_owned()], CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(backend.live_publish("x.1", Bytes::new()).await.unwrap(), 1);
    drop(rx);
    eventually("the subscription to end", || async {
        (backend.live_publish("x.1", Bytes::new()).await.unwrap() == 0).then_some(())
    })
    .await;
}

#[tokio::test]
async fn subscriptions_resubscribe_after_a_restart() {
    let (mut server, backend) = start().await;
    let mut rx = backend
        .live_subscribe(&["r.*".to_owned()], CancellationToken::new())
        .await
        .unwrap();
    server.restart().unwrap();
    // Publish until the resubscribed connection receives (the shared connection
    // reconnects by itself too; its first call after the restart may fail).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let msg = loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no message after the restart"
        );
        let _ = backend
            .live_publish("r.1", Bytes::from_static(b"back"))
            .await;
        if let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(100), rx.recv()).await {
            break m;
        }
    };
    assert_eq!(msg.payload, Bytes::from_static(b"back"));
}
