//! Limits and server-side refusals: OOM is transient.

use super::*;
use crate::Bus;
use crate::error::Error;

fn used_memory(server: &RedisServer) -> u64 {
    let info: String = raw(server, redis::cmd("INFO").arg("memory"));
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap()
}

/// Lets the server take about `room` more bytes, then refuses writes with OOM.
fn cap_memory(server: &RedisServer, room: u64) {
    let _: () = raw(
        server,
        redis::cmd("CONFIG")
            .arg("SET")
            .arg("maxmemory-policy")
            .arg("noeviction"),
    );
    let limit = used_memory(server) + room;
    let _: () = raw(
        server,
        redis::cmd("CONFIG").arg("SET").arg("maxmemory").arg(limit),
    );
}

const CHUNK: usize = 64 * 1024;

#[tokio::test]
async fn out_of_memory_is_a_transient_redis_error() {
    let (server, backend) = start().await;
    let bus = Bus::builder(backend).build().unwrap();
    cap_memory(&server, 256 * 1024);
    let payload = Bytes::from(vec![b'x'; CHUNK]);
    let mut refused = None;
    for _ in 0..200 {
        if let Err(e) = bus.publish_raw("t", payload.clone()).await {
            refused = Some(e);
            break;
        }
    }
    let e = refused.expect("the server never ran out of memory");
    match &e {
        Error::Redis(r) => assert_eq!(r.code(), Some("OOM"), "{e:?}"),
        other => panic!("expected a Redis error, got {other:?}"),
    }
    assert!(e.is_transient(), "{e:?}");
    assert!(!e.is_indeterminate(), "{e:?}");
    // It clears when memory is freed (consumers catch up, retention trims).
    let _: () = raw(&server, redis::cmd("DEL").arg(stream_key("t")));
    bus.publish_raw("t", payload).await.unwrap();
}
