//! The job queues under faults: forgotten scripts, a restarted server, tampered records,
//! and an ACL user limited to the key prefix.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::jobs::*;
use super::*;
use crate::error::Error;

#[tokio::test]
async fn job_scripts_are_reloaded_after_the_server_forgot_them() {
    let (server, b) = start().await;
    add(&b, "fl", &[job("a", "n")]).await;
    let _: String = raw(&server, redis::cmd("SCRIPT").arg("FLUSH"));
    // The pipelined add and the single-script calls both load what they need.
    add(&b, "fl", &[job("b", "n"), job("c", "n")]).await;
    let _: String = raw(&server, redis::cmd("SCRIPT").arg("FLUSH"));
    assert_eq!(ids(&lease(&b, "fl", 5, 30_000).await), ["a", "b", "c"]);
}

#[tokio::test]
async fn the_waiter_and_the_event_reader_reconnect_after_a_restart() {
    let (mut server, b) = start().await;
    let q = queue("rs");
    let mut waiter = b.job_waiter(&q).await.unwrap();
    let mut events = b.event_reader(&q).await.unwrap();
    assert!(!waiter.wait(Duration::from_millis(50)).await.unwrap());
    server.restart().unwrap();
    // Errors while the connection is gone, then the next calls reopen it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let w = tokio::time::timeout(
            Duration::from_secs(3),
            waiter.wait(Duration::from_millis(50)),
        )
        .await;
        let e = tokio::time::timeout(Duration::from_secs(3), events.read(None, 10, None)).await;
        if matches!(w, Ok(Ok(_))) && matches!(e, Ok(Ok(_))) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no recovery: {w:?} {e:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let added = eventually("an add after the restart", || async {
        b.add_jobs(&q, &[job("j", "n")], &settings()).await.ok()
    })
    .await;
    assert_eq!(added, vec![Added::New(jid("j"), JobState::Waiting)]);
    assert!(waiter.wait(Duration::from_secs(5)).await.unwrap());
    let got = events.read(None, 10, None).await.unwrap();
    assert!(got.iter().any(|e| e.job == jid("j")));
}

#[tokio::test]
async fn tampered_job_records_are_protocol_errors() {
    let (server, b) = start().await;
    let q = queue("bad");
    add(&b, "bad", &[job("p", "n"), job("s", "n"), job("m", "n")]).await;
    let _: i64 = raw(
        &server,
        redis::cmd("HSET")
            .arg(qkey("bad", "job/p"))
            .arg("priority")
            .arg("high"),
    );
    let _: i64 = raw(
        &server,
        redis::cmd("HSET")
            .arg(qkey("bad", "job/s"))
            .arg("state")
            .arg("limbo"),
    );
    let _: i64 = raw(
        &server,
        redis::cmd("HDEL").arg(qkey("bad", "job/m")).arg("added_at"),
    );
    for id in ["p", "s", "m"] {
        match b.job(&q, &jid(id)).await {
            Err(Error::Protocol(msg)) => assert!(!msg.is_empty()),
            other => panic!("{id}: {other:?}"),
        }
    }
    assert!(matches!(
        b.list_jobs(&q, JobState::Waiting, None, 10).await,
        Err(Error::Protocol(_))
    ));
    // A leased job whose record is broken fails the fetch with a protocol error.
    let _: i64 = raw(
        &server,
        redis::cmd("HSET")
            .arg(qkey("bad", "job/p"))
            .arg("max_attempts")
            .arg("many"),
    );
    assert!(matches!(
        b.fetch(&q, &fetch_of(1, 30_000, vec![]), &settings()).await,
        Err(Error::Protocol(_))
    ));
    // A broken event too.
    let _: String = raw(
        &server,
        redis::cmd("XADD")
            .arg(qkey("bad", "events"))
            .arg("*")
            .arg("kind")
            .arg("exploded"),
    );
    let mut reader = b.event_reader(&q).await.unwrap();
    assert!(matches!(
        reader.read(Some("0-0"), 1000, None).await,
        Err(Error::Protocol(_))
    ));
}

#[tokio::test]
async fn an_acl_user_limited_to_the_prefix_runs_jobs() {
    let (server, _admin) = start().await;
    let _: String = raw(
        &server,
        redis::cmd("ACL")
            .arg("SETUSER")
            .arg("jobs")
            .arg("on")
            .arg(">s3cret")
            .arg("resetkeys")
            .arg("~{rivulet/*")
            .arg("~rivulet/*")
            .arg("resetchannels")
            .arg("&rivulet/*")
            .arg("+@all"),
    );
    let url = format!("redis://jobs:s3cret@127.0.0.1:{}", server.port());
    let b = RedisBackend::connect(&url).await.unwrap();
    let q = queue("acl");
    let mut hints = b.cancel_hints(&q, CancellationToken::new()).await.unwrap();
    let mut waiter = b.job_waiter(&q).await.unwrap();
    let mut dedup = job("a", "n");
    dedup.dedup = Some(Dedup {
        key: "k".into(),
        ttl_ms: None,
    });
    add(&b, "acl", &[dedup, job("b", "n")]).await;
    assert!(waiter.wait(Duration::from_secs(2)).await.unwrap());
    let l = lease(&b, "acl", 2, 30_000).await;
    assert_eq!(
        settle_one(&b, "acl", complete(&l[0], "1")).await,
        Settled::Applied(JobState::Completed)
    );
    assert_eq!(
        b.cancel(&q, &jid("b"), &settings()).await.unwrap(),
        Cancelled::Requested
    );
    let hint = tokio::time::timeout(Duration::from_secs(5), hints.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(hint, jid("b"));
    assert_eq!(b.counts(&q).await.unwrap().completed, 1);
    assert_eq!(b.queues().await.unwrap(), vec![q.clone()]);
    // Outside the prefix it is refused: the limit is real.
    let mut conn = server.client().unwrap().get_connection().unwrap();
    let _: () = redis::cmd("AUTH")
        .arg("jobs")
        .arg("s3cret")
        .query(&mut conn)
        .unwrap();
    let denied: redis::RedisResult<()> = redis::cmd("SET").arg("other").arg("1").query(&mut conn);
    assert!(denied.is_err());
}
