//! The job queues on one server: adding, ordering, delays, dedup, fencing, stalls,
//! settlements (shared helpers for `jobs_control.rs` and `jobs_cluster.rs` too).

use std::time::Duration;

use super::*;
pub(super) use crate::backend::jobs::{
    Added, Cancelled, Dedup, Fetch, JobQueues, Leased, NewJob, QueueSettings, Removed, Renewal,
    Settle, Settled, Settlement, StoredBackoff,
};
pub(super) use crate::jobs::record::{JobState, Keep};
pub(super) use crate::name::{JobId, JobName, QueueName};

pub(super) fn queue(s: &str) -> QueueName {
    QueueName::new(s).unwrap()
}

pub(super) fn jid(s: &str) -> JobId {
    JobId::new(s).unwrap()
}

pub(super) fn settings() -> QueueSettings {
    QueueSettings {
        keep_completed: Keep::completed_default(),
        keep_failed: Keep::failed_default(),
        events_cap: 10_000,
        log_cap: 100,
    }
}

pub(super) fn job(id: &str, name: &str) -> NewJob {
    NewJob {
        id: jid(id),
        name: JobName::new(name).unwrap(),
        data: Bytes::from(format!("{{\"id\":\"{id}\"}}")),
        priority: 0,
        lifo: false,
        delay_ms: 0,
        run_at_ms: None,
        max_attempts: 3,
        backoff: StoredBackoff {
            base_ms: 100,
            multiplier: 2.0,
            max_ms: 10_000,
        },
        timeout_ms: None,
        dedup: None,
        remove_on_complete: false,
        remove_on_fail: false,
        trace: None,
        group: None,
    }
}

pub(super) fn fetch_of(limit: usize, lease_ms: u64, settle: Vec<Settle>) -> Fetch {
    Fetch {
        worker: "w1".into(),
        limit,
        lease_ms,
        promote_limit: 100,
        settle,
    }
}

pub(super) async fn add(b: &RedisBackend, q: &str, jobs: &[NewJob]) -> Vec<Added> {
    b.add_jobs(&queue(q), jobs, &settings()).await.unwrap()
}

pub(super) async fn lease(b: &RedisBackend, q: &str, n: usize, lease_ms: u64) -> Vec<Leased> {
    b.fetch(&queue(q), &fetch_of(n, lease_ms, vec![]), &settings())
        .await
        .unwrap()
        .jobs
}

pub(super) fn ids(jobs: &[Leased]) -> Vec<String> {
    jobs.iter().map(|j| j.id.as_str().to_owned()).collect()
}

pub(super) fn complete(l: &Leased, result: &str) -> Settle {
    Settle {
        id: l.id.clone(),
        token: l.token,
        how: Settlement::Complete {
            result: Bytes::copy_from_slice(result.as_bytes()),
        },
    }
}

pub(super) async fn settle_one(b: &RedisBackend, q: &str, s: Settle) -> Settled {
    b.settle(&queue(q), &[s], &settings()).await.unwrap()[0]
}

pub(super) async fn state_of(b: &RedisBackend, q: &str, id: &str) -> Option<JobState> {
    b.job(&queue(q), &jid(id)).await.unwrap().map(|j| j.state)
}

pub(super) fn qkey(q: &str, rest: &str) -> String {
    format!("{{rivulet/queue/{q}}}/{rest}")
}

#[tokio::test]
async fn jobs_add_fetch_complete_and_read_the_result() {
    let (server, b) = start().await;
    let added = add(&b, "mail", &[job("j1", "send")]).await;
    assert_eq!(added, vec![Added::New(jid("j1"), JobState::Waiting)]);
    let info = b.job(&queue("mail"), &jid("j1")).await.unwrap().unwrap();
    assert_eq!(info.state, JobState::Waiting);
    assert_eq!(info.attempt, 0);
    assert_eq!(info.data, Bytes::from_static(b"{\"id\":\"j1\"}"));

    let got = lease(&b, "mail", 5, 30_000).await;
    assert_eq!(ids(&got), ["j1"]);
    assert_eq!(got[0].attempt, 1);
    assert_eq!(got[0].token, 1);
    assert_eq!(got[0].max_attempts, 3);
    assert_eq!(got[0].backoff.multiplier, 2.0);
    assert_eq!(got[0].name.as_str(), "send");
    let active = b.job(&queue("mail"), &jid("j1")).await.unwrap().unwrap();
    assert_eq!(active.state, JobState::Active);
    assert_eq!(active.worker.as_deref(), Some("w1"));
    assert!(active.started_at_ms.is_some());

    // Settling travels with the next fetch.
    let f = b
        .fetch(
            &queue("mail"),
            &fetch_of(1, 30_000, vec![complete(&got[0], "{\"ok\":42}")]),
            &settings(),
        )
        .await
        .unwrap();
    assert_eq!(f.settled, vec![Settled::Applied(JobState::Completed)]);
    assert!(f.jobs.is_empty() && !f.paused && f.next_due_ms.is_none());
    let done = b.job(&queue("mail"), &jid("j1")).await.unwrap().unwrap();
    assert_eq!(done.state, JobState::Completed);
    assert_eq!(
        done.result::<serde_json::Value>().unwrap().unwrap()["ok"],
        42
    );
    assert!(done.finished_at_ms.is_some());
    let counts = b.counts(&queue("mail")).await.unwrap();
    assert_eq!((counts.completed, counts.waiting, counts.active), (1, 0, 0));
    // Settling again is refused.
    assert_eq!(
        settle_one(&b, "mail", complete(&got[0], "1")).await,
        Settled::LeaseLost
    );
    assert_eq!(b.queues().await.unwrap(), vec![queue("mail")]);
    let members: Vec<String> = raw(&server, redis::cmd("SMEMBERS").arg("rivulet/queues"));
    assert_eq!(members, ["mail"]);
}

#[tokio::test]
async fn jobs_run_by_priority_then_fifo_with_lifo_first() {
    let (_server, b) = start().await;
    let mut jobs = Vec::new();
    for (id, prio, lifo) in [
        ("a", 5, false),
        ("b", 0, false),
        ("c", 0, false),
        ("d", 0, true),
        ("e", 0, true),
        ("f", 1, false),
        ("g", 9_999_999, false),
    ] {
        let mut j = job(id, "n");
        j.priority = prio;
        j.lifo = lifo;
        jobs.push(j);
    }
    add(&b, "q", &jobs).await;
    let page = b
        .list_jobs(&queue("q"), JobState::Waiting, None, 100)
        .await
        .unwrap();
    let listed: Vec<&str> = page.jobs.iter().map(|j| j.id.as_str()).collect();
    assert_eq!(listed, ["e", "d", "b", "c", "f", "a", "g"]);

    let first = lease(&b, "q", 1, 30_000).await;
    assert_eq!(ids(&first), ["e"]);
    // Released: back at its place, not an attempt.
    let released = Settle {
        id: first[0].id.clone(),
        token: first[0].token,
        how: Settlement::Release,
    };
    assert_eq!(
        settle_one(&b, "q", released).await,
        Settled::Applied(JobState::Waiting)
    );
    let all = lease(&b, "q", 10, 30_000).await;
    assert_eq!(ids(&all), ["e", "d", "b", "c", "f", "a", "g"]);
    assert_eq!(all[0].attempt, 1, "a release is not an attempt");
    assert_eq!(all[0].token, 2);
}

#[tokio::test]
async fn delayed_jobs_never_run_early() {
    let (_server, b) = start().await;
    let mut j = job("later", "n");
    j.delay_ms = 400;
    let added = add(&b, "d", &[j]).await;
    assert_eq!(added, vec![Added::New(jid("later"), JobState::Delayed)]);
    let run_at = b
        .job(&queue("d"), &jid("later"))
        .await
        .unwrap()
        .unwrap()
        .run_at_ms
        .unwrap();
    let f = b
        .fetch(&queue("d"), &fetch_of(5, 30_000, vec![]), &settings())
        .await
        .unwrap();
    assert!(f.jobs.is_empty(), "leased before its time");
    assert_eq!(f.next_due_ms, Some(run_at));
    assert_eq!(b.counts(&queue("d")).await.unwrap().delayed, 1);
    let got = eventually("the delayed job", || async {
        let got = lease(&b, "d", 5, 30_000).await;
        (!got.is_empty()).then_some(got)
    })
    .await;
    assert_eq!(ids(&got), ["later"]);
    let info = b.job(&queue("d"), &jid("later")).await.unwrap().unwrap();
    assert!(
        info.started_at_ms.unwrap() >= run_at,
        "started {:?} before {run_at}",
        info.started_at_ms
    );
    // A run-at in the past is now.
    let mut past = job("past", "n");
    past.run_at_ms = Some(1);
    assert_eq!(
        add(&b, "d", &[past]).await,
        vec![Added::New(jid("past"), JobState::Waiting)]
    );
}

#[tokio::test]
async fn dedup_keys_hold_until_finish_or_for_their_ttl() {
    let (_server, b) = start().await;
    let with = |id: &str, key: &str, ttl: Option<u64>| {
        let mut j = job(id, "n");
        j.dedup = Some(Dedup {
            key: key.into(),
            ttl_ms: ttl,
        });
        j
    };
    // Until the job finishes.
    assert_eq!(
        add(&b, "u", &[with("a1", "k", None), with("a2", "k", None)]).await,
        vec![
            Added::New(jid("a1"), JobState::Waiting),
            Added::Existing(jid("a1"))
        ]
    );
    let l = lease(&b, "u", 1, 30_000).await;
    assert_eq!(
        add(&b, "u", &[with("a3", "k", None)]).await,
        vec![Added::Existing(jid("a1"))],
        "held while active"
    );
    settle_one(&b, "u", complete(&l[0], "1")).await;
    assert_eq!(
        add(&b, "u", &[with("a4", "k", None)]).await,
        vec![Added::New(jid("a4"), JobState::Waiting)]
    );
    assert_eq!(
        b.job(&queue("u"), &jid("a4"))
            .await
            .unwrap()
            .unwrap()
            .dedup_key
            .as_deref(),
        Some("k")
    );
    // For a TTL, even after the job finished; or until the job is removed.
    assert_eq!(
        add(
            &b,
            "t",
            &[with("b1", "k", Some(300)), with("b2", "k", Some(300))]
        )
        .await,
        vec![
            Added::New(jid("b1"), JobState::Waiting),
            Added::Existing(jid("b1"))
        ]
    );
    let l = lease(&b, "t", 1, 30_000).await;
    settle_one(&b, "t", complete(&l[0], "1")).await;
    assert_eq!(
        add(&b, "t", &[with("b3", "k", Some(300))]).await,
        vec![Added::Existing(jid("b1"))]
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        add(&b, "t", &[with("b4", "k", Some(60_000))]).await,
        vec![Added::New(jid("b4"), JobState::Waiting)]
    );
    assert_eq!(
        b.remove_job(&queue("t"), &jid("b4"), &settings())
            .await
            .unwrap(),
        Removed::Removed(JobState::Waiting)
    );
    assert_eq!(
        add(&b, "t", &[with("b5", "k", Some(60_000))]).await,
        vec![Added::New(jid("b5"), JobState::Waiting)]
    );
}

#[tokio::test]
async fn concurrent_adds_with_one_dedup_key_get_one_id() {
    let server = RedisServer::start().unwrap();
    let url = server.url();
    let mut tasks = Vec::new();
    for i in 0..8 {
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let b = RedisBackend::connect(&url).await.unwrap();
            let mut j = job(&format!("c{i}"), "n");
            j.dedup = Some(Dedup {
                key: "same".into(),
                ttl_ms: if i % 2 == 0 { None } else { Some(60_000) },
            });
            add(&b, "c", &[j]).await.remove(0)
        }));
    }
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.unwrap());
    }
    let winners: Vec<&Added> = results
        .iter()
        .filter(|a| matches!(a, Added::New(..)))
        .collect();
    assert_eq!(winners.len(), 1, "{results:?}");
    let id = winners[0].id().clone();
    assert!(results.iter().all(|a| a.id() == &id), "{results:?}");
    let b = RedisBackend::connect(&url).await.unwrap();
    assert_eq!(b.counts(&queue("c")).await.unwrap().waiting, 1);
}

#[tokio::test]
async fn a_caller_chosen_id_makes_adding_idempotent() {
    let (_server, b) = start().await;
    let mut first = job("fixed", "n");
    first.data = Bytes::from_static(b"1");
    let mut second = job("fixed", "n");
    second.data = Bytes::from_static(b"2");
    second.delay_ms = 10_000;
    assert_eq!(
        add(&b, "i", &[first, second.clone()]).await,
        vec![
            Added::New(jid("fixed"), JobState::Waiting),
            Added::Existing(jid("fixed"))
        ]
    );
    assert_eq!(
        add(&b, "i", &[second]).await,
        vec![Added::Existing(jid("fixed"))]
    );
    let info = b.job(&queue("i"), &jid("fixed")).await.unwrap().unwrap();
    assert_eq!(info.data, Bytes::from_static(b"1"));
    let c = b.counts(&queue("i")).await.unwrap();
    assert_eq!((c.waiting, c.delayed), (1, 0));
}

#[tokio::test]
async fn a_stale_token_writes_nothing_after_the_job_was_taken_back() {
    let (_server, b) = start().await;
    add(&b, "f", &[job("j", "n")]).await;
    let old = lease(&b, "f", 1, 100).await.remove(0);
    tokio::time::sleep(Duration::from_millis(150)).await;
    let stalled = b
        .check_stalled(&queue("f"), 1, 10, &settings())
        .await
        .unwrap();
    assert_eq!(stalled.returned, vec![jid("j")]);
    let new = lease(&b, "f", 1, 30_000).await.remove(0);
    assert_eq!(new.token, old.token + 1);
    assert_eq!(
        new.attempt, 1,
        "a stall within max_stalled is not an attempt"
    );
    let q = queue("f");
    assert_eq!(
        settle_one(&b, "f", complete(&old, "\"old\"")).await,
        Settled::LeaseLost
    );
    let fail = Settle {
        id: old.id.clone(),
        token: old.token,
        how: Settlement::Fail { error: "x".into() },
    };
    assert_eq!(settle_one(&b, "f", fail).await, Settled::LeaseLost);
    assert!(
        !b.progress(
            &q,
            &old.id,
            old.token,
            Bytes::from_static(b"50"),
            &settings()
        )
        .await
        .unwrap()
    );
    assert!(
        !b.log(&q, &old.id, old.token, "old line", &settings())
            .await
            .unwrap()
    );
    assert_eq!(
        b.renew(&q, &[(old.id.clone(), old.token)], 30_000)
            .await
            .unwrap(),
        vec![Renewal::Lost]
    );
    assert!(
        b.progress(
            &q,
            &new.id,
            new.token,
            Bytes::from_static(b"{\"p\":7}"),
            &settings()
        )
        .await
        .unwrap()
    );
    assert!(
        b.log(&q, &new.id, new.token, "new line", &settings())
            .await
            .unwrap()
    );
    assert_eq!(
        settle_one(&b, "f", complete(&new, "\"new\"")).await,
        Settled::Applied(JobState::Completed)
    );
    let info = b.job(&q, &jid("j")).await.unwrap().unwrap();
    assert_eq!(info.result, Some(Bytes::from_static(b"\"new\"")));
    assert_eq!(info.progress, Some(serde_json::json!({"p": 7})));
    assert_eq!(info.stalls, 1);
    assert_eq!(
        b.job_logs(&q, &jid("j"), 0, 10).await.unwrap(),
        ["new line"]
    );
    // Invalid progress JSON is an error, and writes nothing.
    assert!(
        b.progress(
            &q,
            &new.id,
            new.token,
            Bytes::from_static(b"{"),
            &settings()
        )
        .await
        .is_err()
    );
}

#[tokio::test]
async fn stalls_return_jobs_then_count_as_failed_attempts() {
    let (_server, b) = start().await;
    let mut j = job("s", "n");
    j.max_attempts = 2;
    add(&b, "s", &[j]).await;
    let q = queue("s");
    let stall = || async {
        tokio::time::sleep(Duration::from_millis(80)).await;
        b.check_stalled(&q, 1, 10, &settings()).await.unwrap()
    };
    assert_eq!(lease(&b, "s", 1, 30).await[0].attempt, 1);
    assert_eq!(stall().await.returned, vec![jid("s")]);
    assert_eq!(state_of(&b, "s", "s").await, Some(JobState::Waiting));
    assert_eq!(lease(&b, "s", 1, 30).await[0].attempt, 1);
    // Second stall > max_stalled 1: a failed attempt, delayed by the backoff (100 ms).
    assert_eq!(stall().await.failed_attempt, vec![jid("s")]);
    let info = b.job(&q, &jid("s")).await.unwrap().unwrap();
    assert_eq!(info.state, JobState::Delayed);
    assert!(info.error.unwrap().contains("stalled 2 times"));
    let again = eventually("the retry", || async {
        let got = lease(&b, "s", 1, 30).await;
        (!got.is_empty()).then_some(got)
    })
    .await;
    assert_eq!(again[0].attempt, 2);
    assert_eq!(stall().await.failed_attempt, vec![jid("s")]);
    assert_eq!(state_of(&b, "s", "s").await, Some(JobState::Failed));
    // Nothing left expired.
    assert_eq!(stall().await, Default::default());
}

#[tokio::test]
async fn retries_wait_their_delay_and_end_failed_without_attempts_left() {
    let (_server, b) = start().await;
    let mut j = job("r", "n");
    j.max_attempts = 2;
    add(&b, "r", &[j]).await;
    let l = lease(&b, "r", 1, 30_000).await.remove(0);
    let retry = |l: &Leased, delay_ms| Settle {
        id: l.id.clone(),
        token: l.token,
        how: Settlement::Retry {
            delay_ms,
            error: "boom".into(),
        },
    };
    assert_eq!(
        settle_one(&b, "r", retry(&l, 0)).await,
        Settled::Applied(JobState::Waiting)
    );
    let l = lease(&b, "r", 1, 30_000).await.remove(0);
    assert_eq!(l.attempt, 2);
    assert_eq!(
        settle_one(&b, "r", retry(&l, 1_000)).await,
        Settled::Applied(JobState::Failed),
        "no attempts left"
    );
    let info = b.job(&queue("r"), &jid("r")).await.unwrap().unwrap();
    assert_eq!(info.error.as_deref(), Some("boom"));
    // A retry with a delay goes to delayed.
    add(&b, "r", &[job("r2", "n")]).await;
    let l = lease(&b, "r", 1, 30_000).await.remove(0);
    assert_eq!(
        settle_one(&b, "r", retry(&l, 60_000)).await,
        Settled::Applied(JobState::Delayed)
    );
    assert!(lease(&b, "r", 1, 30_000).await.is_empty());
}
