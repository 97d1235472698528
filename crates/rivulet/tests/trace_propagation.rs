//! Trace context end to end (B-PUB-3, O-OBS-1, feature `otel`): with the OpenTelemetry
//! SDK's in-memory exporter behind `tracing-opentelemetry`, one trace id spans publish →
//! handle → retry → dead letter → replay → handle, and a job add → every run of the
//! job, on the memory backend and on a real `redis-server`.

#![cfg(feature = "otel")]

mod common;

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use common::wait_until;
use opentelemetry::trace::{SpanId, TraceId, TracerProvider as _};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use rivulet::{AnyBackend, Bus, Delivery, HandlerError, Job, MemoryBackend, Queue, RetryPolicy};
use tracing::Instrument;
use tracing_subscriber::layer::SubscriberExt;

/// The process-wide exporter: one subscriber for the whole test binary (handlers run
/// on runtime threads, so a thread-local default would miss them). Tests tell their
/// spans apart by trace id.
fn exporter() -> &'static InMemorySpanExporter {
    static EXPORTER: OnceLock<InMemorySpanExporter> = OnceLock::new();
    EXPORTER.get_or_init(|| {
        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build();
        let tracer = provider.tracer("rivulet-tests");
        let subscriber =
            tracing_subscriber::registry().with(tracing_opentelemetry::layer().with_tracer(tracer));
        tracing::subscriber::set_global_default(subscriber).expect("the only subscriber");
        exporter
    })
}

fn spans_of(trace: TraceId) -> Vec<SpanData> {
    exporter()
        .get_finished_spans()
        .expect("finished spans")
        .into_iter()
        .filter(|s| s.span_context.trace_id() == trace)
        .collect()
}

fn named<'a>(spans: &'a [SpanData], name: &str) -> Vec<&'a SpanData> {
    spans.iter().filter(|s| s.name == name).collect()
}

fn attr(span: &SpanData, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.to_string())
}

/// A root span of the test's own, and its trace id.
fn root(name: &'static str) -> (tracing::Span, TraceId) {
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    exporter();
    let span = tracing::info_span!("test.root", test = name);
    let trace = {
        use opentelemetry::trace::TraceContextExt;
        span.context().span().span_context().trace_id()
    };
    assert_ne!(trace, TraceId::INVALID, "the root span has a trace id");
    (span, trace)
}

/// Publish → attempt 1 fails → attempt 2 fails → dead letter → replay → attempt 1 of
/// the replay succeeds: every handle span and the dead-letter span are in the
/// publisher's trace, children of its `rivulet.publish` span.
async fn one_trace_across_retries_dead_letter_and_replay(backend: AnyBackend, topic: &str) {
    let bus = Bus::builder(backend)
        .app("otel")
        .block_timeout(Duration::from_millis(200))
        .retry_mover_interval(Duration::from_millis(50))
        .retry(
            RetryPolicy::default()
                .max_attempts(2)
                .backoff(Duration::from_millis(20)),
        )
        .build()
        .expect("bus");
    let healed = Arc::new(AtomicBool::new(false));
    let runs = Arc::new(AtomicU32::new(0));
    let (h, r) = (healed.clone(), runs.clone());
    let _sub = bus
        .subscribe(topic, "h", move |_d: Delivery<u32>| {
            let (healed, runs) = (h.clone(), r.clone());
            async move {
                runs.fetch_add(1, Ordering::SeqCst);
                if healed.load(Ordering::SeqCst) {
                    Ok(())
                } else {
                    Err(HandlerError::retryable("not yet"))
                }
            }
        })
        .group("g")
        .await
        .expect("subscribe");
    let (span, trace) = root("bus");
    // Awaited inside the root span, as an application's instrumented code would.
    async { bus.publish(topic, &7u32).await }
        .instrument(span)
        .await
        .expect("publish");
    let dead = bus.dead_letters(topic).expect("dead letters");
    wait_until(
        "the message is dead-lettered",
        Duration::from_secs(10),
        || named(&spans_of(trace), "rivulet.dead_letter").len() == 1,
    )
    .await;
    let letters = dead.list(None, 10).await.expect("list");
    assert_eq!(letters.len(), 1);
    assert_eq!(runs.load(Ordering::SeqCst), 2, "two attempts");
    healed.store(true, Ordering::SeqCst);
    assert!(dead.replay(&letters[0].id).await.expect("replay"));
    wait_until("the replay is handled", Duration::from_secs(10), || {
        named(&spans_of(trace), "rivulet.handle").len() == 3
    })
    .await;

    let spans = spans_of(trace);
    let publish = named(&spans, "rivulet.publish");
    assert_eq!(publish.len(), 1, "one publish span in the trace");
    let publish_id = publish[0].span_context.span_id();
    assert!(attr(publish[0], "message_id").is_some());
    assert_eq!(named(&spans, "test.root").len(), 1);
    assert_eq!(
        publish[0].parent_span_id,
        named(&spans, "test.root")[0].span_context.span_id(),
        "the publish is the caller's child"
    );
    let handles = named(&spans, "rivulet.handle");
    let attempts: Vec<String> = handles
        .iter()
        .map(|s| attr(s, "attempt").unwrap_or_default())
        .collect();
    assert_eq!(attempts, ["1", "2", "1"], "two attempts, then the replay");
    for s in &handles {
        assert_eq!(
            s.parent_span_id, publish_id,
            "a handle span is the publish's child"
        );
        assert_eq!(attr(s, "topic").as_deref(), Some(topic));
        assert_eq!(attr(s, "group").as_deref(), Some("g"));
    }
    let dead_span = named(&spans, "rivulet.dead_letter");
    assert_eq!(dead_span[0].parent_span_id, publish_id);
    assert_eq!(attr(dead_span[0], "reason").as_deref(), Some("attempts"));
    // The header itself is the W3C form of the publish span.
    let tp = attr(handles[0], "traceparent").expect("traceparent recorded");
    assert_eq!(tp, format!("00-{trace}-{publish_id}-01"));
    bus.shutdown().await;
}

/// A job added inside a span: each of its runs (a failed one and the retry) is a child
/// of that span, in its trace.
async fn one_trace_from_job_add_to_every_run(backend: AnyBackend, queue: &str) {
    let queue = Queue::builder(backend, queue)
        .retry(
            RetryPolicy::default()
                .max_attempts(2)
                .backoff(Duration::from_millis(20)),
        )
        .build()
        .expect("queue");
    let worker = queue
        .worker(|job: Job<u32>| async move {
            if job.attempt() == 1 {
                Err(HandlerError::retryable("once"))
            } else {
                Ok(*job.data())
            }
        })
        .block_timeout(Duration::from_millis(200))
        .await
        .expect("worker");
    let (span, trace) = root("job");
    let parent: SpanId = {
        use opentelemetry::trace::TraceContextExt;
        use tracing_opentelemetry::OpenTelemetrySpanExt;
        span.context().span().span_context().span_id()
    };
    let added = async { queue.add("n", &5u32).await }
        .instrument(span)
        .await
        .expect("add");
    wait_until("both runs ended", Duration::from_secs(10), || {
        named(&spans_of(trace), "rivulet.job").len() == 2
    })
    .await;
    let spans = spans_of(trace);
    let add = named(&spans, "rivulet.job_add");
    assert_eq!(add.len(), 1, "one add span in the trace");
    assert_eq!(
        add[0].parent_span_id, parent,
        "the add is the caller's child"
    );
    assert_eq!(
        attr(add[0], "job_id").as_deref(),
        Some(added.id.to_string().as_str())
    );
    let add_id = add[0].span_context.span_id();
    let runs = named(&spans, "rivulet.job");
    assert_eq!(runs.len(), 2);
    for (s, attempt) in runs.iter().zip(["1", "2"]) {
        assert_eq!(s.parent_span_id, add_id, "a run is the add's child");
        assert_eq!(attr(s, "attempt").as_deref(), Some(attempt));
        assert_eq!(
            attr(s, "job_id").as_deref(),
            Some(added.id.to_string().as_str())
        );
    }
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_one_trace_across_retries_dead_letter_and_replay() {
    one_trace_across_retries_dead_letter_and_replay(MemoryBackend::new().into(), "otel.bus").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_one_trace_from_job_add_to_every_run() {
    one_trace_from_job_add_to_every_run(MemoryBackend::new().into(), "otel-jobs").await;
}

#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_one_trace_across_retries_dead_letter_and_replay() {
    let server = common::server().await;
    let backend = common::backend(&server.url()).await;
    one_trace_across_retries_dead_letter_and_replay(backend.into(), "otel.bus").await;
}

#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_one_trace_from_job_add_to_every_run() {
    let server = common::server().await;
    let backend = common::backend(&server.url()).await;
    one_trace_from_job_add_to_every_run(backend.into(), "otel-jobs").await;
}
