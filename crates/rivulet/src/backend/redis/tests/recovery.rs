//! Reclaim, keep-alive, hand-back, vanished groups, broadcast orphans, script reload.

use std::time::Duration;

use super::*;
use crate::backend::Lane;
use crate::message::now_ms;

#[tokio::test]
async fn reclaim_takes_idle_entries_and_reports_missing_ones() {
    let (server, backend) = start().await;
    let (key, mut dead_reader) = subscribed(&backend, "t", "g", "crashed").await;
    publish(&backend, "t", &["a", "b", "c"]).await;
    let got = read_n(&mut dead_reader, 3).await;
    // Someone deletes "b" from the stream while it is pending.
    let _: u64 = raw(
        &server,
        redis::cmd("XDEL")
            .arg(stream_key("t"))
            .arg(got[1].entry.id.as_str()),
    );

    let min_idle = Duration::from_millis(150);
    // Not idle long enough yet: nothing is taken. (Redis reports entries whose data is
    // gone whatever their idle time.)
    let early = backend
        .reclaim(
            &key,
            &group("g"),
            &consumer("rescuer"),
            Duration::from_secs(60),
            10,
        )
        .await
        .unwrap();
    assert!(early.entries.is_empty());
    let mut missing = early.missing;

    let reclaimed = eventually("idle entries", || async {
        let r = backend
            .reclaim(&key, &group("g"), &consumer("rescuer"), min_idle, 10)
            .await
            .unwrap();
        (!r.entries.is_empty()).then_some(r)
    })
    .await;
    missing.extend(reclaimed.missing.iter().cloned());
    let ids: Vec<_> = reclaimed
        .entries
        .iter()
        .map(|e| e.entry.id.clone())
        .collect();
    assert_eq!(ids, vec![got[0].entry.id.clone(), got[2].entry.id.clone()]);
    assert!(reclaimed.entries.iter().all(|e| e.delivery_count == 2));
    assert_eq!(payload(&reclaimed.entries[0]), "a");
    // Reported exactly once, then gone from the pending list.
    assert_eq!(missing.len(), 1);
    assert_eq!(missing[0].id, got[1].entry.id);
    assert_eq!(missing[0].lane, Lane::Main);

    // A second reclaim by another consumer counts a third delivery.
    let third = eventually("idle again", || async {
        let r = backend
            .reclaim(&key, &group("g"), &consumer("other"), min_idle, 1)
            .await
            .unwrap();
        (!r.entries.is_empty()).then_some(r)
    })
    .await;
    assert_eq!(third.entries.len(), 1);
    assert_eq!(third.entries[0].delivery_count, 3);
}

#[tokio::test]
async fn lane_entries_are_reclaimed_too() {
    let (_server, backend) = start().await;
    let (key, mut reader) = subscribed(&backend, "t", "g", "c1").await;
    publish(&backend, "t", &["a"]).await;
    let got = read_n(&mut reader, 1).await;
    backend
        .requeue(&key, &group("g"), &got[0].entry, message(&got[0]))
        .await
        .unwrap();
    let lane_entry = read_n(&mut reader, 1).await;
    assert_eq!(lane_entry[0].entry.lane, Lane::Retry);
    let r = eventually("the lane entry", || async {
        let r = backend
            .reclaim(
                &key,
                &group("g"),
                &consumer("c2"),
                Duration::from_millis(100),
                10,
            )
            .await
            .unwrap();
        (!r.entries.is_empty()).then_some(r)
    })
    .await;
    assert_eq!(r.entries[0].entry, lane_entry[0].entry);
    assert_eq!(r.entries[0].delivery_count, 2);
}

#[tokio::test]
async fn entries_kept_alive_are_not_reclaimed() {
    let (_server, backend) = start().await;
    let (key, mut reader) = subscribed(&backend, "t", "g", "slow").await;
    publish(&backend, "t", &["long job"]).await;
    let got = read_n(&mut reader, 1).await;
    let min_idle = Duration::from_millis(300);
    let until = tokio::time::Instant::now() + Duration::from_millis(900);
    while tokio::time::Instant::now() < until {
        backend
            .keep_alive(&key, &group("g"), &consumer("slow"), &refs(&got))
            .await
            .unwrap();
        let r = backend
            .reclaim(&key, &group("g"), &consumer("thief"), min_idle, 10)
            .await
            .unwrap();
        assert!(r.entries.is_empty(), "an entry kept alive was reclaimed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Once the handler stops extending, the entry is reclaimed, counting one more
    // delivery (the keep-alive itself never counted one).
    let r = eventually("the abandoned entry", || async {
        let r = backend
            .reclaim(&key, &group("g"), &consumer("thief"), min_idle, 10)
            .await
            .unwrap();
        (!r.entries.is_empty()).then_some(r)
    })
    .await;
    assert_eq!(r.entries[0].delivery_count, 2);
}

#[tokio::test]
async fn hand_back_requeues_the_given_entries_of_that_consumer_only() {
    let (server, backend) = start().await;
    let (key, mut stopping) = subscribed(&backend, "t", "g", "stopping").await;
    let published = publish(
        &backend,
        "t",
        &["in-flight", "read-not-started", "also-not-started"],
    )
    .await;
    let got = read_n(&mut stopping, 3).await;
    let unstarted = refs(&got[1..]);
    // Another consumer's hand-back of the same entries touches nothing.
    let handed = backend
        .hand_back(&key, &group("g"), &consumer("someone-else"), &unstarted)
        .await
        .unwrap();
    assert_eq!(handed, 0);
    let handed = backend
        .hand_back(&key, &group("g"), &consumer("stopping"), &unstarted)
        .await
        .unwrap();
    assert_eq!(handed, 2);

    let mut other = backend
        .reader(&key, &group("g"), &consumer("other"))
        .await
        .unwrap();
    let taken = read_n(&mut other, 2).await;
    assert_eq!(taken.len(), 2);
    for (e, p) in taken.iter().zip(&published[1..]) {
        assert_eq!(e.entry.lane, Lane::Retry);
        let env = message(e);
        assert_eq!(env.message_id, p.message_id);
        assert_eq!(env.attempt, 1);
        // The first-publish time survives the copy into the lane.
        assert_eq!(
            env.published_at_ms,
            crate::backend::redis::wire::id_ms(p.entry_id.as_str())
        );
    }
    let pending: Vec<redis::Value> = raw(
        &server,
        redis::cmd("XPENDING").arg(stream_key("t")).arg("g"),
    );
    assert_eq!(pending.first(), Some(&redis::Value::Int(1)));
    // Handed back once only; the started entry is still pending on its consumer.
    assert_eq!(
        backend
            .hand_back(&key, &group("g"), &consumer("stopping"), &unstarted)
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        backend
            .pending_of(&key, &group("g"), &consumer("stopping"), 10)
            .await
            .unwrap(),
        vec![got[0].entry.clone()]
    );
}

#[tokio::test]
async fn a_vanished_group_is_recreated_where_the_reader_was() {
    let (server, backend) = start().await;
    let (key, mut reader) = subscribed(&backend, "t", "g", "c").await;
    publish(&backend, "t", &["seen"]).await;
    let got = read_n(&mut reader, 1).await;
    backend.ack(&key, &group("g"), &refs(&got)).await.unwrap();
    // An admin deletes the group, and messages keep coming.
    let _: u64 = raw(
        &server,
        redis::cmd("XGROUP")
            .arg("DESTROY")
            .arg(stream_key("t"))
            .arg("g"),
    );
    publish(&backend, "t", &["while-gone-1", "while-gone-2"]).await;
    let got = read_n(&mut reader, 2).await;
    assert_eq!(
        got.iter().map(payload).collect::<Vec<_>>(),
        ["while-gone-1", "while-gone-2"]
    );
}

#[tokio::test]
async fn orphan_clean_up_removes_only_registered_broadcast_groups_without_heartbeat() {
    let (_server, backend) = start().await;
    let key = StreamKey::main(topic("t"));
    // A regular group whose name looks like a broadcast group of base `app:t__h`
    // (handler `h__warm`), the base itself, and two broadcast groups.
    for g in ["app:t__h__warm", "app:t__h", "other"] {
        backend
            .ensure_group(&key, &group(g), &StartFrom::New, GroupRole::Regular)
            .await
            .unwrap();
    }
    for g in ["app:t__h__alive_1", "app:t__h__dead_2"] {
        backend
            .ensure_group(&key, &group(g), &StartFrom::New, GroupRole::Broadcast)
            .await
            .unwrap();
    }
    backend
        .broadcast_heartbeat(&key, &group("app:t__h__alive_1"), Duration::from_secs(30))
        .await
        .unwrap();
    let removed = backend.remove_orphan_broadcast_groups(&key).await.unwrap();
    assert_eq!(removed, vec!["app:t__h__dead_2".to_owned()]);
    let mut conn = backend.conn().unwrap();
    let mut names = backend
        .group_names(&mut conn, &stream_key("t"))
        .await
        .unwrap();
    names.sort();
    assert_eq!(
        names,
        ["app:t__h", "app:t__h__alive_1", "app:t__h__warm", "other"]
    );
}

#[tokio::test]
async fn scripts_are_reloaded_after_script_flush() {
    let (server, backend) = start().await;
    let (key, mut reader) = subscribed(&backend, "t", "g", "c").await;
    publish(&backend, "t", &["a"]).await;
    let got = read_n(&mut reader, 1).await;
    let _: () = raw(&server, redis::cmd("SCRIPT").arg("FLUSH"));
    backend
        .retry_later(
            &key,
            &group("g"),
            &retry(&got[0].entry, message(&got[0]), now_ms() + 20),
        )
        .await
        .unwrap();
    let _: () = raw(&server, redis::cmd("SCRIPT").arg("FLUSH"));
    assert_eq!(
        backend
            .move_due_retries(&key, now_ms() + 20, 10, GRACE)
            .await
            .unwrap()
            .moved,
        1
    );
    // The pipelined path (idempotent publish) reloads too.
    let _: () = raw(&server, redis::cmd("SCRIPT").arg("FLUSH"));
    let opts = PublishOpts {
        dedup_window: Some(Duration::from_secs(5)),
        ..PublishOpts::default()
    };
    let p = backend
        .publish(&topic("t"), vec![envelope("b")], &opts)
        .await
        .unwrap();
    assert!(!p[0].duplicate);
}

#[tokio::test]
async fn calls_on_a_vanished_group_do_not_fail() {
    let (_server, backend) = start().await;
    let (key, mut reader) = subscribed(&backend, "t", "g", "c").await;
    // Creating an existing group again is fine, and keeps its position.
    backend
        .ensure_group(&key, &group("g"), &StartFrom::Beginning, GroupRole::Regular)
        .await
        .unwrap();
    publish(&backend, "t", &["a"]).await;
    let got = read_n(&mut reader, 1).await;
    backend.destroy_group(&key, &group("g")).await.unwrap();
    backend.destroy_group(&key, &group("g")).await.unwrap();
    backend
        .keep_alive(&key, &group("g"), &consumer("c"), &refs(&got))
        .await
        .unwrap();
    backend.ack(&key, &group("g"), &refs(&got)).await.unwrap();
    let none = backend
        .reclaim(&key, &group("g"), &consumer("c"), Duration::ZERO, 10)
        .await
        .unwrap();
    assert!(none.entries.is_empty());
    assert_eq!(
        backend
            .hand_back(&key, &group("g"), &consumer("c"), &[])
            .await
            .unwrap(),
        0
    );
    // Nothing exists on a topic nobody used.
    let fresh = StreamKey::main(topic("never-used"));
    assert_eq!(
        backend
            .move_due_retries(&fresh, now_ms(), 10, GRACE)
            .await
            .unwrap()
            .moved,
        0
    );
    assert!(
        backend
            .remove_orphan_broadcast_groups(&fresh)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        backend
            .trim(&topic("never-used"), &crate::topic::TopicOptions::default())
            .await
            .unwrap(),
        crate::topic::TrimReport::default()
    );
    assert_eq!(
        backend
            .dead_letter_count(&topic("never-used"))
            .await
            .unwrap(),
        0
    );
    assert!(
        backend
            .dead_letters(&topic("never-used"), None, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

/// A subscription stops holding entries it read and had not started; meanwhile their
/// group was deleted and re-created after them (by another process's reader). They are
/// pending nowhere: the orphan hand-back copies them to the lane, and only them.
#[tokio::test]
async fn orphans_of_a_recreated_group_are_handed_back_and_nothing_else() {
    let (server, backend) = start().await;
    let (key, mut reader) = subscribed(&backend, "t", "g", "c").await;
    publish(&backend, "t", &["orphan", "settled", "reclaimed"]).await;
    let got = read_n(&mut reader, 3).await;
    let old = got[0].generation;
    // "settled" is acknowledged in the old incarnation before the group vanishes.
    backend
        .ack(&key, &group("g"), &refs(&got[1..2]))
        .await
        .unwrap();
    let _: i64 = raw(
        &server,
        redis::cmd("XGROUP")
            .arg("DESTROY")
            .arg(stream_key("t"))
            .arg("g"),
    );
    // Another process's reader re-creates it where it had read (after all three).
    let mut conn = backend.conn().unwrap();
    let last = got[2].entry.id.as_str().to_owned();
    backend
        .create_group(
            &mut conn,
            &key,
            &group("g"),
            &last,
            GroupRole::Regular,
            true,
        )
        .await
        .unwrap();
    let handed = backend
        .hand_back_orphans(
            &key,
            &group("g"),
            &[(got[0].entry.clone(), old), (got[1].entry.clone(), old)],
        )
        .await
        .unwrap();
    // "settled" cannot be told from "orphan" once the group is gone (both are pending
    // nowhere): both are copied, a duplicate rather than a loss.
    assert_eq!(handed, 2);
    // Same incarnation: nothing is an orphan.
    let fresh = backend
        .hand_back_orphans(&key, &group("g"), &[(got[2].entry.clone(), old + 1)])
        .await
        .unwrap();
    assert_eq!(fresh, 0);
    let mut other = backend
        .reader(&key, &group("g"), &consumer("other"))
        .await
        .unwrap();
    let again = read_n(&mut other, 2).await;
    assert_eq!(
        again.iter().map(payload).collect::<Vec<_>>(),
        ["orphan", "settled"]
    );
}
