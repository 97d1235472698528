//! Micro-benchmarks of the per-message CPU path that needs no Redis: encoding and
//! decoding stream entries, retry bookkeeping. `cargo bench -p rivulet`.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::Duration;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use rivulet::__bench::{decode, encode, retry_member};
use rivulet::RetryPolicy;

fn headers() -> BTreeMap<String, String> {
    let mut h = BTreeMap::new();
    h.insert(
        "traceparent".to_owned(),
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_owned(),
    );
    h.insert("tenant".to_owned(), "acme".to_owned());
    h
}

fn entries(c: &mut Criterion) {
    for (name, size) in [("100B", 100usize), ("1KiB", 1024)] {
        let payload = Bytes::from(vec![b'x'; size]);
        c.bench_function(&format!("encode/{name}"), |b| {
            b.iter(|| encode(black_box(payload.clone()), BTreeMap::new(), 1))
        });
        let fields = encode(payload.clone(), BTreeMap::new(), 1);
        c.bench_function(&format!("decode/{name}"), |b| {
            b.iter(|| decode(black_box("1700000000000-0"), black_box(&fields)))
        });
    }
    let payload = Bytes::from(vec![b'x'; 100]);
    let with_headers = encode(payload.clone(), headers(), 3);
    c.bench_function("encode/100B+headers+retry", |b| {
        b.iter(|| encode(black_box(payload.clone()), headers(), 3))
    });
    c.bench_function("decode/100B+headers+retry", |b| {
        b.iter(|| decode(black_box("1700000000000-0"), black_box(&with_headers)))
    });
}

fn retries(c: &mut Criterion) {
    let fields = encode(Bytes::from(vec![b'x'; 100]), headers(), 2);
    c.bench_function("retry/member", |b| {
        b.iter(|| retry_member(black_box("app:orders__billing"), black_box(&fields)))
    });
    let policy = RetryPolicy::default()
        .max_delay(Duration::from_secs(60))
        .jitter(0.2);
    c.bench_function("retry/delay_after", |b| {
        b.iter(|| policy.delay_after(black_box(4)))
    });
}

criterion_group!(benches, entries, retries);
criterion_main!(benches);
