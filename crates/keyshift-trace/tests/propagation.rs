//! Trace headers round-trip any valid context: W3C `traceparent` and Zipkin `b3` written by
//! `inject` are read back by `extract` with the same trace id, span id and sampled flag; and
//! arbitrary header bytes never panic the parsers.

use keyshift_trace::propagation::{
    extract_consumed, extract_owned, format_b3, inject, parse_b3, parse_traceparent, B3,
    TRACEPARENT,
};
use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};
use proptest::prelude::*;

fn context(trace: u128, span: u64, sampled: bool) -> SpanContext {
    let flags = if sampled {
        TraceFlags::SAMPLED
    } else {
        TraceFlags::default()
    };
    SpanContext::new(
        TraceId::from(trace),
        SpanId::from(span),
        flags,
        false,
        TraceState::default(),
    )
}

proptest! {
    #[test]
    fn traceparent_and_b3_round_trip(trace in 1u128.., span in 1u64.., sampled: bool, b3: bool) {
        let cx = context(trace, span, sampled);
        let mut headers = vec![("other".to_owned(), b"x".to_vec())];
        inject(&cx, b3, &mut headers);
        prop_assert_eq!(headers.iter().filter(|(k, _)| k == TRACEPARENT).count(), 1);
        prop_assert_eq!(headers.iter().any(|(k, _)| k == B3), b3);
        let back = extract_owned(&headers).expect("context");
        prop_assert_eq!(back.trace_id(), cx.trace_id());
        prop_assert_eq!(back.span_id(), cx.span_id());
        prop_assert_eq!(back.is_sampled(), sampled);
        prop_assert!(back.is_remote());

        // b3 alone (what a Brave service writes) gives the same context.
        let only_b3 = vec![(B3.to_owned(), Some(format_b3(&cx).into_bytes()))];
        let back = extract_consumed(&only_b3).expect("b3 context");
        prop_assert_eq!(back.trace_id(), cx.trace_id());
        prop_assert_eq!(back.span_id(), cx.span_id());
        prop_assert_eq!(back.is_sampled(), sampled);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
        let _ = parse_traceparent(&bytes);
        let _ = parse_b3(&bytes);
        let headers = vec![
            (TRACEPARENT.to_owned(), Some(bytes.clone())),
            (B3.to_owned(), Some(bytes)),
        ];
        let _ = extract_consumed(&headers);
    }
}
