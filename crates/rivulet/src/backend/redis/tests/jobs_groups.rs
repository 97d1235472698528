//! Job groups at the store level (J-8): a stalled grouped job gives its group's place
//! back; a queue with limits or groups leaves the keys the docs name.

use super::jobs::*;
use super::*;
use crate::jobs::limits::Limits;
use crate::name::JobGroup;

fn grouped(id: &str, g: &str) -> NewJob {
    let mut j = job(id, "n");
    j.group = Some(JobGroup::new(g).unwrap());
    j
}

#[tokio::test]
async fn a_stalled_grouped_job_frees_its_groups_place() {
    let (_server, b) = start().await;
    let q = "gstall";
    let g = JobGroup::new("t").unwrap();
    b.set_limits(&queue(q), &Limits::new().group_concurrency(1))
        .await
        .unwrap();
    add(&b, q, &[grouped("a", "t"), grouped("b", "t")]).await;
    let first = lease(&b, q, 5, 1).await;
    assert_eq!(ids(&first), ["a"], "the group's cap is 1");
    assert_eq!(b.group_counts(&queue(q), &g).await.unwrap().active, 1);
    // The 1 ms lease runs out; the check takes it back to the group's waiting set.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let s = b
            .check_stalled(&queue(q), 1, 10, &settings())
            .await
            .unwrap();
        if !s.returned.is_empty() {
            assert_eq!(s.returned, vec![jid("a")]);
            break;
        }
        assert!(Instant::now() < deadline, "the lease never ran out");
        tokio::task::yield_now().await;
    }
    let c = b.group_counts(&queue(q), &g).await.unwrap();
    assert_eq!((c.waiting, c.active), (2, 0));
    // Its place in the group is free: it runs again (first, by its place).
    let again = lease(&b, q, 5, 30_000).await;
    assert_eq!(ids(&again), ["a"]);
    let counts = b.counts(&queue(q)).await.unwrap();
    assert_eq!((counts.waiting, counts.active), (1, 1));
    let ready: Vec<String> = redis::cmd("ZRANGE")
        .arg(qkey(q, "groups-ready"))
        .arg(0)
        .arg(-1)
        .query_async(&mut b.conn().unwrap())
        .await
        .unwrap();
    assert!(
        ready.is_empty(),
        "a group at its cap is out of the rotation"
    );
}
