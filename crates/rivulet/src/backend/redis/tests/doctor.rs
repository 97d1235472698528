//! The doctor's reads that the public tests cannot reach on their own.

use std::time::Duration;

use super::*;
use crate::backend::Diagnostics;

/// A hand-back repair takes only entries still stale: one kept alive since the
/// examination stays with its consumer.
#[tokio::test]
async fn stale_pending_leaves_entries_kept_alive() {
    let (_server, backend) = start().await;
    let (key, mut reader) = subscribed(&backend, "t", "g", "slow").await;
    publish(&backend, "t", &["a", "b", "c"]).await;
    let got = read_n(&mut reader, 3).await;
    let idle = Duration::from_millis(200);
    eventually("three stale entries", || async {
        let stale = backend
            .stale_pending(&key, &group("g"), &consumer("slow"), idle, 10)
            .await
            .unwrap();
        (stale.len() == 3).then_some(())
    })
    .await;
    backend
        .keep_alive(&key, &group("g"), &consumer("slow"), &refs(&got[..1]))
        .await
        .unwrap();
    let stale = backend
        .stale_pending(&key, &group("g"), &consumer("slow"), idle, 10)
        .await
        .unwrap();
    assert_eq!(stale, refs(&got[1..]));
    // Another consumer's entries are never listed.
    let other = backend
        .stale_pending(&key, &group("g"), &consumer("other"), idle, 10)
        .await
        .unwrap();
    assert!(other.is_empty());
}
