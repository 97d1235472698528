//! The job queues on a 3-master Redis Cluster: queues on different slots, every script
//! within its queue's slot.

use std::time::Duration;

use rivulet_testkit::{RedisCluster, key_slot};
use tokio_util::sync::CancellationToken;

use super::jobs::*;
use super::*;

#[tokio::test]
async fn the_core_round_trip_works_on_a_cluster() {
    let cluster = tokio::task::spawn_blocking(|| RedisCluster::start(3))
        .await
        .unwrap()
        .unwrap();
    let b = RedisBackend::cluster(&cluster.urls()).await.unwrap();
    let names = ["mail", "pay", "users", "stock", "audit", "jobs"];
    let slots: Vec<u16> = names
        .iter()
        .map(|q| key_slot(qkey(q, "meta").as_bytes()))
        .collect();
    let mut distinct = slots.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert!(distinct.len() >= 3, "slots {slots:?}");

    for name in names {
        let q = queue(name);
        let mut waiter = b.job_waiter(&q).await.unwrap();
        let mut hints = b.cancel_hints(&q, CancellationToken::new()).await.unwrap();
        let mut dedup = job("a", "n");
        dedup.dedup = Some(Dedup {
            key: "k".into(),
            ttl_ms: None,
        });
        let mut twin = job("a2", "n");
        twin.dedup = dedup.dedup.clone();
        assert_eq!(
            add(&b, name, &[dedup, twin, job("b", "n")]).await,
            vec![
                Added::New(jid("a"), JobState::Waiting),
                Added::Existing(jid("a")),
                Added::New(jid("b"), JobState::Waiting)
            ],
            "{name}"
        );
        assert!(waiter.wait(Duration::from_secs(2)).await.unwrap(), "{name}");
        let l = lease(&b, name, 2, 30_000).await;
        assert_eq!(ids(&l), ["a", "b"], "{name}");
        assert_eq!(
            settle_one(&b, name, complete(&l[0], "\"r\"")).await,
            Settled::Applied(JobState::Completed)
        );
        let info = b.job(&q, &jid("a")).await.unwrap().unwrap();
        assert_eq!(info.result, Some(Bytes::from_static(b"\"r\"")));
        assert_eq!(
            b.cancel(&q, &jid("b"), &settings()).await.unwrap(),
            Cancelled::Requested
        );
        let hint = tokio::time::timeout(Duration::from_secs(5), hints.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(hint, jid("b"), "{name}");
        assert_eq!(
            b.renew(&q, &[(l[1].id.clone(), l[1].token)], 30_000)
                .await
                .unwrap(),
            vec![Renewal::Cancel]
        );
        let c = b.counts(&q).await.unwrap();
        assert_eq!((c.completed, c.active), (1, 1), "{name}");
        let page = b
            .list_jobs(&q, JobState::Completed, None, 10)
            .await
            .unwrap();
        assert_eq!(page.jobs.len(), 1);
        let mut events = b.event_reader(&q).await.unwrap();
        assert!(
            events.read(None, 100, None).await.unwrap().len() >= 5,
            "{name}"
        );
    }
    let mut queues = b.queues().await.unwrap();
    queues.sort();
    assert_eq!(queues.len(), names.len());
}
