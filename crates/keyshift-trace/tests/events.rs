//! The kafka-tracing-interceptor JSON codec: exact bytes for the interceptor's field sets,
//! round trips of arbitrary events, and Java `Instant` text for arbitrary instants.

use keyshift_trace::events::{
    format_instant, parse_instant, EventKind, TraceEvent, TraceKey, TraceValue,
};
use proptest::prelude::*;

#[test]
fn constructors_write_the_interceptor_fields_and_nothing_else() {
    let t = 1_585_150_861_365_287_000; // 2020-03-25T15:41:01.365287Z
    let json = |e: &TraceEvent| {
        let (k, v) = e.encode();
        (String::from_utf8(k).unwrap(), String::from_utf8(v).unwrap())
    };
    assert_eq!(
        json(&TraceEvent::send("test", "c-1", "myProducer", t)),
        (
            r#"{"correlationId":"c-1"}"#.to_owned(),
            r#"{"topic":"test","correlationId":"c-1","date":"2020-03-25T15:41:01.365287Z","type":"SEND","clientId":"myProducer"}"#.to_owned()
        )
    );
    assert_eq!(
        json(&TraceEvent::ack("test", 0, 0, None, "myProducer", t)).1,
        r#"{"topic":"test","partition":0,"offset":0,"date":"2020-03-25T15:41:01.365287Z","type":"ACK","clientId":"myProducer"}"#
    );
    assert_eq!(
        json(&TraceEvent::consume("test", 0, 0, Some("c-1"), "myConsumer", "myGroup", t)),
        (
            r#"{"topic":"test","partition":0,"offset":0}"#.to_owned(),
            r#"{"topic":"test","partition":0,"offset":0,"correlationId":"c-1","date":"2020-03-25T15:41:01.365287Z","type":"CONSUME","clientId":"myConsumer","groupId":"myGroup"}"#.to_owned()
        )
    );
    // A commit of offset 1 (the next to read) names record 0, as the interceptor does.
    let commit = TraceEvent::commit("test", 0, 1, "myConsumer", "myGroup", t);
    assert_eq!(commit.key, TraceKey::at("test", 0, 0));
    assert_eq!(
        json(&commit).1,
        r#"{"topic":"test","partition":0,"offset":0,"date":"2020-03-25T15:41:01.365287Z","type":"COMMIT","clientId":"myConsumer","groupId":"myGroup"}"#
    );
}

#[test]
fn decoding_ignores_unknown_fields_and_names_bad_input() {
    let value = br#"{"type":"ACK","date":"2020-03-25T15:41:01Z","topic":"t","partition":1,"offset":2,"extra":{"x":1}}"#;
    let e = TraceEvent::decode(None, value).unwrap();
    assert_eq!(e.value.kind, EventKind::Ack);
    assert_eq!(e.key, TraceKey::default());
    let err = TraceEvent::decode(Some(b"not json"), value).unwrap_err();
    assert!(err.to_string().contains("not json"), "{err}");
    let err = TraceEvent::decode(None, br#"{"type":"SENT","date":"x"}"#).unwrap_err();
    assert!(err.to_string().contains("SENT"), "{err}");
}

fn kind() -> impl Strategy<Value = EventKind> {
    prop_oneof![
        Just(EventKind::Send),
        Just(EventKind::Ack),
        Just(EventKind::Consume),
        Just(EventKind::Commit)
    ]
}

// Every instant an i64 of nanoseconds holds (years 1677..2262).
const MIN_NANOS: i64 = i64::MIN;
const MAX_NANOS: i64 = i64::MAX;

proptest! {
    #[test]
    fn instants_round_trip(nanos in MIN_NANOS..MAX_NANOS) {
        let text = format_instant(nanos);
        prop_assert_eq!(parse_instant(&text).unwrap(), nanos, "{}", text);
        // Java prints the fraction in whole groups of three digits.
        let fraction = text.trim_end_matches('Z').split('.').nth(1).unwrap_or("");
        prop_assert!([0, 3, 6, 9].contains(&fraction.len()), "{}", text);
    }

    #[test]
    fn events_round_trip(
        kind in kind(),
        topic in proptest::option::of("[a-zA-Z0-9._-]{1,20}"),
        partition in proptest::option::of(0i32..1000),
        offset in proptest::option::of(-1i64..i64::MAX),
        correlation in proptest::option::of("\\PC{0,40}"),
        client in proptest::option::of("\\PC{0,20}"),
        group in proptest::option::of("\\PC{0,20}"),
        duration in proptest::option::of(any::<i64>()),
        nanos in 0i64..4_102_444_800_000_000_000,
    ) {
        let event = TraceEvent {
            key: TraceKey { topic: topic.clone(), partition, offset, correlation_id: correlation.clone() },
            value: TraceValue {
                topic, partition, offset, correlation_id: correlation, client_id: client,
                group_id: group, duration_ms: duration,
                ..TraceValue::new(kind, nanos)
            },
        };
        let (k, v) = event.encode();
        prop_assert_eq!(TraceEvent::decode(Some(&k), &v).unwrap(), event);
    }
}
