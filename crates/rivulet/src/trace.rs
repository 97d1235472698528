//! Trace context across processes (B-PUB-3, O-OBS-1): the W3C `traceparent` and
//! `tracestate` of the span that published a message or added a job travel with it — in
//! the message's headers, in the job's record — and the span that handles it becomes
//! its child. Retries, dead letters and replays keep the headers, so every attempt and
//! the dead letter belong to the publisher's trace.
//!
//! With the `otel` feature the current span's OpenTelemetry context (through
//! `tracing-opentelemetry`) is written and read; without it nothing is written and the
//! values are only recorded as span fields. The header values follow the W3C Trace
//! Context format, written here from OpenTelemetry's span context (so no global
//! propagator has to be installed for rivulet's own hops).

use crate::message::{Headers, TRACEPARENT, TRACESTATE};

/// A W3C trace context: `traceparent`, and `tracestate` when not empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TraceContext {
    pub(crate) traceparent: String,
    pub(crate) tracestate: Option<String>,
}

impl TraceContext {
    /// The trace context a message's headers carry.
    pub(crate) fn from_headers(headers: &Headers) -> Option<TraceContext> {
        Some(TraceContext {
            traceparent: headers.get(TRACEPARENT)?.clone(),
            tracestate: headers.get(TRACESTATE).cloned(),
        })
    }

    /// The context of the current span, when it has a valid one (`otel` only).
    pub(crate) fn current() -> Option<TraceContext> {
        #[cfg(feature = "otel")]
        {
            otel::current()
        }
        #[cfg(not(feature = "otel"))]
        {
            None
        }
    }

    /// Makes `span` a child of this context (`otel` only; a malformed `traceparent` is
    /// ignored: the span starts a trace of its own).
    pub(crate) fn adopt(&self, span: &tracing::Span) {
        #[cfg(feature = "otel")]
        otel::adopt(self, span);
        #[cfg(not(feature = "otel"))]
        let _ = span;
    }
}

/// Writes the current span's context into `headers`, unless the caller set a
/// `traceparent` of their own (theirs is kept).
pub(crate) fn inject(headers: &mut Headers) {
    if headers.contains_key(TRACEPARENT) {
        return;
    }
    if let Some(cx) = TraceContext::current() {
        headers.insert(TRACEPARENT.to_owned(), cx.traceparent);
        if let Some(state) = cx.tracestate {
            headers.insert(TRACESTATE.to_owned(), state);
        }
    }
}

#[cfg(feature = "otel")]
mod otel {
    use std::str::FromStr;

    use opentelemetry::Context;
    use opentelemetry::trace::{
        SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState,
    };
    use tracing_opentelemetry::OpenTelemetrySpanExt;

    use super::TraceContext;

    pub(super) fn current() -> Option<TraceContext> {
        let cx = tracing::Span::current().context();
        let span = cx.span();
        let sc = span.span_context();
        if !sc.is_valid() {
            return None;
        }
        let state = sc.trace_state().header();
        Some(TraceContext {
            traceparent: format!(
                "00-{}-{}-{:02x}",
                sc.trace_id(),
                sc.span_id(),
                sc.trace_flags().to_u8()
            ),
            tracestate: (!state.is_empty()).then_some(state),
        })
    }

    pub(super) fn adopt(cx: &TraceContext, span: &tracing::Span) {
        let Some(sc) = parse(&cx.traceparent, cx.tracestate.as_deref()) else {
            return;
        };
        // Without the tracing-opentelemetry layer there is nothing to attach to.
        let _ = span.set_parent(Context::new().with_remote_span_context(sc));
    }

    /// Parses a W3C `traceparent` (`version-traceid-spanid-flags`): version 00 exactly,
    /// or a later version's first four fields; never `ff`, never all-zero ids.
    pub(super) fn parse(traceparent: &str, tracestate: Option<&str>) -> Option<SpanContext> {
        let mut parts = traceparent.trim().split('-');
        let version = parts.next()?;
        let trace = parts.next()?;
        let span = parts.next()?;
        let flags = parts.next()?;
        let rest = parts.next();
        let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
        if !hex(version, 2) || version.eq_ignore_ascii_case("ff") || !hex(flags, 2) {
            return None;
        }
        if version == "00" && rest.is_some() {
            return None;
        }
        if !hex(trace, 32) || !hex(span, 16) {
            return None;
        }
        let trace_id = TraceId::from_hex(trace).ok()?;
        let span_id = SpanId::from_hex(span).ok()?;
        if trace_id == TraceId::INVALID || span_id == SpanId::INVALID {
            return None;
        }
        let flags = u8::from_str_radix(flags, 16).ok()? & TraceFlags::SAMPLED.to_u8();
        let state = tracestate
            .and_then(|s| TraceState::from_str(s).ok())
            .unwrap_or_default();
        Some(SpanContext::new(
            trace_id,
            span_id,
            TraceFlags::new(flags),
            true,
            state,
        ))
    }

    #[cfg(test)]
    #[allow(clippy::unwrap_used)]
    mod tests {
        use super::*;

        #[test]
        fn traceparents_are_parsed_by_the_w3c_rules() {
            let sc = parse(
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                Some("congo=t61rcWkgMzE"),
            )
            .unwrap();
            assert_eq!(
                sc.trace_id().to_string(),
                "4bf92f3577b34da6a3ce929d0e0e4736"
            );
            assert_eq!(sc.span_id().to_string(), "00f067aa0ba902b7");
            assert!(sc.is_sampled() && sc.is_remote());
            assert_eq!(sc.trace_state().header(), "congo=t61rcWkgMzE");
            for bad in [
                "",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
                "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
                "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
                "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
            ] {
                assert!(parse(bad, None).is_none(), "{bad:?} accepted");
            }
            // A later version may add fields.
            assert!(
                parse(
                    "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-x",
                    None
                )
                .is_some()
            );
        }
    }
}
