//! The job queues on one server: pause, cancel, remove, retention, counts, listing,
//! logs, events and the waiter.

use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::jobs::*;
use super::*;
use crate::jobs::record::JobEventKind;

#[tokio::test]
async fn a_paused_queue_leases_nothing_and_a_paused_name_parks_its_jobs() {
    let (_server, b) = start().await;
    let q = queue("p");
    add(
        &b,
        "p",
        &[
            job("a1", "a"),
            job("b1", "b"),
            job("a2", "a"),
            job("b2", "b"),
        ],
    )
    .await;

    b.pause(&q, None).await.unwrap();
    let f = b
        .fetch(&q, &fetch_of(10, 30_000, vec![]), &settings())
        .await
        .unwrap();
    assert!(f.paused && f.jobs.is_empty());
    assert_eq!(b.counts(&q).await.unwrap().active, 0);
    assert_eq!(b.paused(&q).await.unwrap(), (true, vec![]));
    b.resume(&q, None).await.unwrap();

    let a = JobName::new("a").unwrap();
    b.pause(&q, Some(&a)).await.unwrap();
    assert_eq!(b.paused(&q).await.unwrap(), (false, vec![a.clone()]));
    let got = lease(&b, "p", 10, 30_000).await;
    assert_eq!(ids(&got), ["b1", "b2"]);
    let c = b.counts(&q).await.unwrap();
    assert_eq!((c.waiting, c.parked, c.active), (2, 2, 2));
    assert_eq!(state_of(&b, "p", "a1").await, Some(JobState::Waiting));
    // A job of the paused name added now is parked too; cancelling a parked job
    // un-counts it.
    add(&b, "p", &[job("a3", "a"), job("a4", "a")]).await;
    assert!(lease(&b, "p", 10, 30_000).await.is_empty());
    assert_eq!(
        b.cancel(&q, &jid("a4"), &settings()).await.unwrap(),
        Cancelled::Cancelled
    );
    let c = b.counts(&q).await.unwrap();
    assert_eq!((c.waiting, c.parked), (3, 3));

    b.resume(&q, Some(&a)).await.unwrap();
    assert_eq!(b.paused(&q).await.unwrap(), (false, vec![]));
    let c = b.counts(&q).await.unwrap();
    assert_eq!((c.waiting, c.parked), (3, 0));
    assert_eq!(ids(&lease(&b, "p", 10, 30_000).await), ["a1", "a2", "a3"]);
}

#[tokio::test]
async fn resuming_a_name_puts_back_more_than_a_batch() {
    let (_server, b) = start().await;
    let q = queue("big");
    let n = JobName::new("n").unwrap();
    b.pause(&q, Some(&n)).await.unwrap();
    let jobs: Vec<NewJob> = (0..1200).map(|i| job(&format!("j{i:04}"), "n")).collect();
    add(&b, "big", &jobs).await;
    assert_eq!(b.counts(&q).await.unwrap().parked, 1200);
    b.resume(&q, Some(&n)).await.unwrap();
    let c = b.counts(&q).await.unwrap();
    assert_eq!((c.waiting, c.parked), (1200, 0));
    let first = lease(&b, "big", 3, 30_000).await;
    assert_eq!(ids(&first), ["j0000", "j0001", "j0002"]);
}

#[tokio::test]
async fn cancelling_waiting_delayed_and_active_jobs() {
    let (_server, b) = start().await;
    let q = queue("x");
    let mut delayed = job("d", "n");
    delayed.delay_ms = 60_000;
    add(&b, "x", &[job("w", "n"), delayed]).await;
    assert_eq!(
        b.cancel(&q, &jid("w"), &settings()).await.unwrap(),
        Cancelled::Cancelled
    );
    assert_eq!(
        b.cancel(&q, &jid("d"), &settings()).await.unwrap(),
        Cancelled::Cancelled
    );
    assert_eq!(
        b.cancel(&q, &jid("w"), &settings()).await.unwrap(),
        Cancelled::Finished(JobState::Cancelled)
    );
    assert_eq!(
        b.cancel(&q, &jid("nope"), &settings()).await.unwrap(),
        Cancelled::NotFound
    );
    let c = b.counts(&q).await.unwrap();
    assert_eq!((c.waiting, c.delayed, c.cancelled), (0, 0, 2));

    let mut hints = b.cancel_hints(&q, CancellationToken::new()).await.unwrap();
    add(&b, "x", &[job("a", "n"), job("r", "n")]).await;
    let l = lease(&b, "x", 2, 30_000).await;
    assert_eq!(
        b.cancel(&q, &jid("a"), &settings()).await.unwrap(),
        Cancelled::Requested
    );
    let hint = tokio::time::timeout(Duration::from_secs(5), hints.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(hint, jid("a"));
    assert_eq!(
        b.renew(
            &q,
            &[(l[0].id.clone(), l[0].token), (l[1].id.clone(), l[1].token)],
            30_000
        )
        .await
        .unwrap(),
        vec![Renewal::Cancel, Renewal::Renewed]
    );
    let info = b.job(&q, &jid("a")).await.unwrap().unwrap();
    assert!(info.cancel_requested);
    assert_eq!(info.state, JobState::Active);
    // Whatever the settlement says, it ends cancelled; a release too.
    assert_eq!(
        settle_one(&b, "x", complete(&l[0], "1")).await,
        Settled::Applied(JobState::Cancelled)
    );
    b.cancel(&q, &jid("r"), &settings()).await.unwrap();
    let release = Settle {
        id: l[1].id.clone(),
        token: l[1].token,
        how: Settlement::Release,
    };
    assert_eq!(
        settle_one(&b, "x", release).await,
        Settled::Applied(JobState::Cancelled)
    );
    assert_eq!(b.counts(&q).await.unwrap().cancelled, 4);
    // A cancel-requested job whose lease runs out is cancelled by the stalled check.
    add(&b, "x", &[job("s", "n")]).await;
    lease(&b, "x", 1, 30).await;
    b.cancel(&q, &jid("s"), &settings()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(60)).await;
    let st = b.check_stalled(&q, 5, 10, &settings()).await.unwrap();
    assert_eq!(st.cancelled, vec![jid("s")]);
}

#[tokio::test]
async fn removing_a_job_removes_its_record_logs_and_dedup_key() {
    let (server, b) = start().await;
    let q = queue("rm");
    let mut j = job("j", "n");
    j.dedup = Some(Dedup {
        key: "k".into(),
        ttl_ms: None,
    });
    add(&b, "rm", &[j]).await;
    let l = lease(&b, "rm", 1, 30_000).await.remove(0);
    b.log(&q, &l.id, l.token, "line", &settings())
        .await
        .unwrap();
    assert_eq!(
        b.remove_job(&q, &jid("j"), &settings()).await.unwrap(),
        Removed::Active
    );
    let release = Settle {
        id: l.id.clone(),
        token: l.token,
        how: Settlement::Release,
    };
    settle_one(&b, "rm", release).await;
    assert_eq!(
        b.remove_job(&q, &jid("j"), &settings()).await.unwrap(),
        Removed::Removed(JobState::Waiting)
    );
    assert_eq!(
        b.remove_job(&q, &jid("j"), &settings()).await.unwrap(),
        Removed::NotFound
    );
    for key in [
        qkey("rm", "job/j"),
        qkey("rm", "logs/j"),
        qkey("rm", "dedup/k"),
    ] {
        let n: i64 = raw(&server, redis::cmd("EXISTS").arg(&key));
        assert_eq!(n, 0, "{key}");
    }
    assert_eq!(b.counts(&q).await.unwrap().waiting, 0);
}

#[tokio::test]
async fn retention_keeps_the_newest_finished_jobs_within_bounds() {
    let (server, b) = start().await;
    let q = queue("ret");
    let s = QueueSettings {
        keep_completed: Keep::new(5, Duration::from_secs(3600)),
        ..settings()
    };
    let jobs: Vec<NewJob> = (0..20).map(|i| job(&format!("j{i:02}"), "n")).collect();
    b.add_jobs(&q, &jobs, &s).await.unwrap();
    for _ in 0..20 {
        let l = lease(&b, "ret", 1, 30_000).await.remove(0);
        b.settle(&q, &[complete(&l, "1")], &s).await.unwrap();
    }
    let n: i64 = raw(&server, redis::cmd("ZCARD").arg(qkey("ret", "completed")));
    assert_eq!(n, 5);
    for i in 0..20 {
        let exists: i64 = raw(
            &server,
            redis::cmd("EXISTS").arg(qkey("ret", &format!("job/j{i:02}"))),
        );
        assert_eq!(exists, i64::from(i >= 15), "j{i:02}");
    }
    assert_eq!(b.counts(&q).await.unwrap().completed, 5);

    // Removed as they finish, when asked.
    let mut gone = job("gone", "n");
    gone.remove_on_fail = true;
    b.add_jobs(&q, &[gone], &s).await.unwrap();
    let l = lease(&b, "ret", 1, 30_000).await.remove(0);
    let fail = Settle {
        id: l.id.clone(),
        token: l.token,
        how: Settlement::Fail { error: "no".into() },
    };
    assert_eq!(
        b.settle(&q, &[fail], &s).await.unwrap(),
        vec![Settled::Applied(JobState::Failed)]
    );
    assert!(b.job(&q, &jid("gone")).await.unwrap().is_none());
    assert_eq!(b.counts(&q).await.unwrap().failed, 0);

    // By age: keep none older than 0 ms (and at most 1000).
    let aged = QueueSettings {
        keep_failed: Keep::new(1000, Duration::ZERO),
        ..settings()
    };
    b.add_jobs(&q, &[job("f1", "n"), job("f2", "n")], &aged)
        .await
        .unwrap();
    for _ in 0..2 {
        let l = lease(&b, "ret", 1, 30_000).await.remove(0);
        tokio::time::sleep(Duration::from_millis(5)).await;
        let fail = Settle {
            id: l.id.clone(),
            token: l.token,
            how: Settlement::Fail { error: "no".into() },
        };
        b.settle(&q, &[fail], &aged).await.unwrap();
    }
    assert!(
        b.job(&q, &jid("f1")).await.unwrap().is_none(),
        "f1 is past the age"
    );
    assert!(b.counts(&q).await.unwrap().failed <= 1);
}

#[tokio::test]
async fn counts_match_the_states_after_a_mixed_workload() {
    let (_server, b) = start().await;
    let q = queue("mix");
    let mut jobs: Vec<NewJob> = (0..9).map(|i| job(&format!("j{i}"), "n")).collect();
    for j in jobs.iter_mut().skip(7) {
        j.delay_ms = 60_000;
    }
    add(&b, "mix", &jobs).await;
    let l = lease(&b, "mix", 5, 30_000).await;
    let s = vec![
        complete(&l[0], "1"),
        complete(&l[1], "2"),
        Settle {
            id: l[2].id.clone(),
            token: l[2].token,
            how: Settlement::Fail { error: "x".into() },
        },
    ];
    b.settle(&q, &s, &settings()).await.unwrap();
    b.cancel(&q, &jid("j5"), &settings()).await.unwrap();
    let c = b.counts(&q).await.unwrap();
    let mut real = std::collections::HashMap::new();
    for i in 0..9 {
        *real
            .entry(state_of(&b, "mix", &format!("j{i}")).await.unwrap())
            .or_insert(0u64) += 1;
    }
    for st in JobState::ALL {
        assert_eq!(c.of(st), real.get(&st).copied().unwrap_or(0), "{st}");
        let page = b.list_jobs(&q, st, None, 100).await.unwrap();
        assert_eq!(page.jobs.len() as u64, c.of(st), "{st}");
        assert!(page.jobs.iter().all(|j| j.state == st));
    }
    assert_eq!(
        (
            c.waiting,
            c.delayed,
            c.active,
            c.completed,
            c.failed,
            c.cancelled
        ),
        (1, 2, 2, 2, 1, 1)
    );
    assert_eq!(c.unfinished(), 5);
}

#[tokio::test]
async fn pages_cover_every_job_once_in_order() {
    let (_server, b) = start().await;
    let q = queue("pg");
    let jobs: Vec<NewJob> = (0..25).map(|i| job(&format!("j{i:02}"), "n")).collect();
    add(&b, "pg", &jobs).await;
    let l = lease(&b, "pg", 25, 30_000).await;
    let done: Vec<Settle> = l.iter().map(|l| complete(l, "1")).collect();
    b.settle(&q, &done, &settings()).await.unwrap();
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..10 {
        let page = b
            .list_jobs(&q, JobState::Completed, cursor.as_deref(), 10)
            .await
            .unwrap();
        seen.extend(page.jobs.iter().map(|j| j.id.as_str().to_owned()));
        match page.next {
            Some(n) => cursor = Some(n),
            None => break,
        }
    }
    let mut want: Vec<String> = (0..25).map(|i| format!("j{i:02}")).collect();
    let mut sorted = seen.clone();
    sorted.sort();
    want.sort();
    assert_eq!(sorted, want, "every job once");
    // The cursor survives its job being removed.
    let page = b.list_jobs(&q, JobState::Completed, None, 3).await.unwrap();
    let third = page.jobs[2].id.clone();
    b.remove_job(&q, &third, &settings()).await.unwrap();
    let next = b
        .list_jobs(&q, JobState::Completed, page.next.as_deref(), 100)
        .await
        .unwrap();
    assert_eq!(next.jobs.len(), 22);
    assert_eq!(
        next.jobs[0].id.as_str(),
        seen[3].as_str(),
        "continues after the removed cursor job"
    );
    assert!(
        b.list_jobs(&q, JobState::Completed, Some("x"), 3)
            .await
            .is_err()
    );
}

#[tokio::test]
async fn logs_keep_the_last_lines() {
    let (_server, b) = start().await;
    let q = queue("lg");
    add(&b, "lg", &[job("j", "n")]).await;
    let l = lease(&b, "lg", 1, 30_000).await.remove(0);
    let s = QueueSettings {
        log_cap: 3,
        ..settings()
    };
    for i in 0..5 {
        assert!(
            b.log(&q, &l.id, l.token, &format!("line {i}"), &s)
                .await
                .unwrap()
        );
    }
    assert_eq!(
        b.job_logs(&q, &jid("j"), 0, 10).await.unwrap(),
        ["line 2", "line 3", "line 4"]
    );
    assert_eq!(b.job_logs(&q, &jid("j"), 1, 1).await.unwrap(), ["line 3"]);
}

#[tokio::test]
async fn events_are_capped_and_carry_no_data() {
    let (server, b) = start().await;
    let q = queue("ev");
    let s = QueueSettings {
        events_cap: 50,
        ..settings()
    };
    let jobs: Vec<NewJob> = (0..100)
        .map(|i| {
            let mut j = job(&format!("j{i}"), "n");
            j.data = Bytes::from_static(b"\"SECRET-DATA\"");
            j
        })
        .collect();
    b.add_jobs(&q, &jobs, &s).await.unwrap();
    let l = b
        .fetch(&q, &fetch_of(1, 30_000, vec![]), &s)
        .await
        .unwrap()
        .jobs;
    b.settle(&q, &[complete(&l[0], "\"SECRET-RESULT\"")], &s)
        .await
        .unwrap();
    let len: u64 = raw(&server, redis::cmd("XLEN").arg(qkey("ev", "events")));
    assert!(len <= 50, "{len} events");
    let all: redis::Value = raw(
        &server,
        redis::cmd("XRANGE")
            .arg(qkey("ev", "events"))
            .arg("-")
            .arg("+"),
    );
    let shown = format!("{all:?}");
    assert!(!shown.contains("SECRET"), "{shown}");
    let mut reader = b.event_reader(&q).await.unwrap();
    let events = reader.read(None, 1000, None).await.unwrap();
    assert_eq!(events.len() as u64, len);
    let kinds: Vec<JobEventKind> = events.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds[kinds.len() - 2..],
        [JobEventKind::Active, JobEventKind::Completed]
    );
    assert_eq!(events.last().unwrap().job, l[0].id);
    assert_eq!(events.last().unwrap().attempt, 1);
    // Reading on from the last one blocks until the next event.
    let last = events.last().unwrap().id.clone();
    let started = Instant::now();
    assert!(
        reader
            .read(Some(&last), 10, Some(Duration::from_millis(200)))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(started.elapsed() >= Duration::from_millis(150));
    let b2 = b.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        b2.cancel(&queue("ev"), &jid("j5"), &settings())
            .await
            .unwrap();
    });
    let next = reader
        .read(Some(&last), 10, Some(Duration::from_secs(5)))
        .await
        .unwrap();
    assert_eq!(next.len(), 1);
    assert_eq!(
        (next[0].kind, next[0].job.as_str()),
        (JobEventKind::Cancelled, "j5")
    );
}

#[tokio::test]
async fn the_waiter_wakes_on_an_add_and_times_out_otherwise() {
    let (_server, b) = start().await;
    let q = queue("wt");
    let mut waiter = b.job_waiter(&q).await.unwrap();
    let started = Instant::now();
    assert!(!waiter.wait(Duration::from_millis(300)).await.unwrap());
    assert!(started.elapsed() >= Duration::from_millis(250));
    assert!(!waiter.wait(Duration::ZERO).await.unwrap());

    let b2 = b.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(150)).await;
        add(&b2, "wt", &[job("j", "n")]).await;
    });
    let started = Instant::now();
    assert!(waiter.wait(Duration::from_secs(10)).await.unwrap());
    assert!(started.elapsed() < Duration::from_secs(3));
    // The marker was taken: the next wait times out.
    assert!(!waiter.wait(Duration::from_millis(100)).await.unwrap());
    // A fetch that leaves work behind wakes the next idle worker.
    add(&b, "wt", &[job("k", "n")]).await;
    assert!(waiter.wait(Duration::from_millis(100)).await.unwrap());
    assert_eq!(lease(&b, "wt", 1, 30_000).await.len(), 1);
    assert!(waiter.wait(Duration::from_millis(100)).await.unwrap());
}

#[tokio::test]
async fn long_errors_are_cut_on_a_character_boundary_in_events() {
    let (_server, b) = start().await;
    let q = queue("utf");
    add(&b, "utf", &[job("j", "n")]).await;
    let l = lease(&b, "utf", 1, 30_000).await.remove(0);
    // 'é' is two bytes: byte 200 falls inside one when the text starts with 'x'.
    let error = format!("x{}", "é".repeat(300));
    let fail = Settle {
        id: l.id.clone(),
        token: l.token,
        how: Settlement::Fail {
            error: error.clone(),
        },
    };
    settle_one(&b, "utf", fail).await;
    let events = b
        .event_reader(&q)
        .await
        .unwrap()
        .read(None, 100, None)
        .await
        .unwrap();
    let failed = events
        .iter()
        .find(|e| e.kind == JobEventKind::Failed)
        .unwrap();
    let detail = failed.detail.clone().unwrap();
    assert_eq!(detail, crate::jobs::record::short_detail(&error));
    assert_eq!(detail.len(), 199);
    // The record keeps the whole error.
    let info = b.job(&q, &jid("j")).await.unwrap().unwrap();
    assert_eq!(info.error.as_deref(), Some(error.as_str()));
}
