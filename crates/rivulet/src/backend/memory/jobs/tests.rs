//! The memory job queues at the store level: fencing and the stall limit.

use std::time::Duration;

use bytes::Bytes;

use crate::backend::jobs::{
    Fetch, JobQueues, NewJob, Renewal, Settle, Settled, Settlement, StoredBackoff,
};
use crate::backend::memory::MemoryBackend;
use crate::jobs::queue::default_settings;
use crate::jobs::record::JobState;
use crate::name::{JobId, JobName, QueueName};

fn new_job(id: &str) -> NewJob {
    NewJob {
        id: JobId::new(id).expect("id"),
        name: JobName::new("n").expect("name"),
        data: Bytes::from_static(b"1"),
        priority: 0,
        lifo: false,
        delay_ms: 0,
        run_at_ms: None,
        max_attempts: 3,
        backoff: StoredBackoff {
            base_ms: 10,
            multiplier: 1.0,
            max_ms: 10,
        },
        timeout_ms: None,
        dedup: None,
        remove_on_complete: false,
        remove_on_fail: false,
        trace: None,
        group: None,
    }
}

fn fetch(limit: usize, lease_ms: u64, settle: Vec<Settle>) -> Fetch {
    Fetch {
        worker: "w".into(),
        limit,
        lease_ms,
        promote_limit: 64,
        settle,
    }
}

/// J-11: an activation whose lease expired and was given to another cannot write.
#[tokio::test]
async fn a_stale_token_writes_nothing() {
    let b = MemoryBackend::new();
    let q = QueueName::new("q").expect("queue");
    let s = default_settings();
    b.add_jobs(&q, &[new_job("j")], &s).await.expect("add");
    let first = b.fetch(&q, &fetch(1, 1, vec![]), &s).await.expect("fetch");
    let old = first.jobs[0].token;
    tokio::time::sleep(Duration::from_millis(5)).await;
    let stalled = b.check_stalled(&q, 1, 10, &s).await.expect("stalled");
    assert_eq!(stalled.returned.len(), 1);
    let second = b
        .fetch(&q, &fetch(1, 60_000, vec![]), &s)
        .await
        .expect("fetch");
    let new = second.jobs[0].token;
    assert!(new > old, "tokens grow with each lease");
    let id = JobId::new("j").expect("id");
    let stale = |how| Settle {
        id: id.clone(),
        token: old,
        how,
    };
    let lost = b
        .settle(
            &q,
            &[
                stale(Settlement::Complete {
                    result: Bytes::from_static(b"\"old\""),
                }),
                stale(Settlement::Fail {
                    error: "old".into(),
                }),
                stale(Settlement::Release),
            ],
            &s,
        )
        .await
        .expect("settle");
    assert_eq!(lost, vec![Settled::LeaseLost; 3]);
    assert!(
        !b.progress(&q, &id, old, Bytes::from_static(b"5"), &s)
            .await
            .expect("progress")
    );
    assert!(!b.log(&q, &id, old, "old", &s).await.expect("log"));
    assert_eq!(
        b.renew(&q, &[(id.clone(), old)], 1000)
            .await
            .expect("renew"),
        vec![Renewal::Lost]
    );
    let done = b
        .settle(
            &q,
            &[Settle {
                id: id.clone(),
                token: new,
                how: Settlement::Complete {
                    result: Bytes::from_static(b"\"new\""),
                },
            }],
            &s,
        )
        .await
        .expect("settle");
    assert_eq!(done, vec![Settled::Applied(JobState::Completed)]);
    let job = b.job(&q, &id).await.expect("job").expect("exists");
    assert_eq!(job.result.as_deref(), Some(&b"\"new\""[..]));
    assert_eq!(job.progress, None);
    assert!(b.job_logs(&q, &id, 0, 10).await.expect("logs").is_empty());
    assert_eq!(job.stalls, 1);
}

/// J-11: past `max_stalled`, a stall is a failed attempt; without attempts left the
/// job fails.
#[tokio::test]
async fn stalls_past_the_limit_are_failed_attempts() {
    let b = MemoryBackend::new();
    let q = QueueName::new("q").expect("queue");
    let s = default_settings();
    let mut job = new_job("j");
    job.max_attempts = 2;
    b.add_jobs(&q, &[job], &s).await.expect("add");
    let id = JobId::new("j").expect("id");
    let mut states = Vec::new();
    for _ in 0..3 {
        let f = b.fetch(&q, &fetch(1, 1, vec![]), &s).await.expect("fetch");
        if f.jobs.is_empty() {
            // Delayed by the backoff (10 ms): wait for it.
            tokio::time::sleep(Duration::from_millis(15)).await;
            b.fetch(&q, &fetch(1, 1, vec![]), &s).await.expect("fetch");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
        b.check_stalled(&q, 1, 10, &s).await.expect("stalled");
        states.push(b.job(&q, &id).await.expect("job").expect("exists").state);
    }
    // Stall 1: back to waiting. Stall 2: attempt 1 failed, delayed. Stall 3: attempt 2
    // failed, none left.
    assert_eq!(
        states,
        vec![JobState::Waiting, JobState::Delayed, JobState::Failed]
    );
    let job = b.job(&q, &id).await.expect("job").expect("exists");
    assert_eq!((job.stalls, job.attempt), (3, 2));
}

/// J-8: a stalled grouped job gives its group's place back (the group cap counts it no
/// longer) and runs again.
#[tokio::test]
async fn a_stalled_grouped_job_frees_its_groups_place() {
    use crate::jobs::limits::Limits;
    use crate::name::JobGroup;
    let b = MemoryBackend::new();
    let q = QueueName::new("q").expect("queue");
    let s = default_settings();
    let g = JobGroup::new("t").expect("group");
    b.set_limits(&q, &Limits::new().group_concurrency(1))
        .await
        .expect("limits");
    let mut jobs = vec![new_job("a"), new_job("b")];
    for j in &mut jobs {
        j.group = Some(g.clone());
    }
    b.add_jobs(&q, &jobs, &s).await.expect("add");
    let first = b.fetch(&q, &fetch(5, 1, vec![]), &s).await.expect("fetch");
    assert_eq!(first.jobs.len(), 1, "the group's cap is 1");
    assert_eq!(b.group_counts(&q, &g).await.expect("counts").active, 1);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let st = b.check_stalled(&q, 1, 10, &s).await.expect("stalled");
        if !st.returned.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the lease never ran out"
        );
        tokio::task::yield_now().await;
    }
    let c = b.group_counts(&q, &g).await.expect("counts");
    assert_eq!((c.waiting, c.active), (2, 0));
    let again = b
        .fetch(&q, &fetch(5, 60_000, vec![]), &s)
        .await
        .expect("fetch");
    assert_eq!(again.jobs.len(), 1);
    assert_eq!(again.jobs[0].id.as_str(), "a");
}
