//! The aggregator state machine against the seed's documented events (kafka-tracing-aggregator
//! README) and its over-consumption, expiry and replay rules.

use keyshift_trace::aggregate::{Aggregator, AggregatorConfig, Output, Position};
use keyshift_trace::events::{EventKind, TraceEvent};
use serde_json::{json, Value};

/// The four aggregated records of the seed README (test/0/0), verbatim.
fn documented() -> Vec<Value> {
    vec![
        json!({"date": "2020-03-25T15:41:01.365287Z", "type": "SEND", "topic": "test",
               "partition": 0, "offset": 0,
               "correlationId": "af8074bc-a042-46ef-8064-203fa26cd9b3", "clientId": "myProducer"}),
        json!({"date": "2020-03-25T15:41:01.966082Z", "type": "ACK", "topic": "test",
               "partition": 0, "offset": 0,
               "correlationId": "af8074bc-a042-46ef-8064-203fa26cd9b3", "clientId": "myProducer",
               "durationMs": 600}),
        json!({"date": "2020-03-25T15:41:37.844039Z", "type": "CONSUME", "topic": "test",
               "partition": 0, "offset": 0,
               "correlationId": "af8074bc-a042-46ef-8064-203fa26cd9b3", "clientId": "myConsumer",
               "groupId": "myGroup", "durationMs": 36478}),
        json!({"date": "2020-03-25T15:41:37.851339Z", "type": "COMMIT", "topic": "test",
               "partition": 0, "offset": 0,
               "correlationId": "af8074bc-a042-46ef-8064-203fa26cd9b3", "clientId": "myConsumer",
               "groupId": "myGroup", "durationMs": 7}),
    ]
}

const TPO_KEY: &str = r#"{"topic":"test","partition":0,"offset":0}"#;
const CORR: &str = "af8074bc-a042-46ef-8064-203fa26cd9b3";

/// The same events as the Java interceptor writes them to `_tracing`, before aggregation:
/// SEND keyed by correlation id without position, ACK and COMMIT without correlation id, no
/// durations anywhere (field sets from the interceptor's onSend/onAcknowledgement/onConsume/
/// onCommit).
fn raw_interceptor_events() -> Vec<(String, Value)> {
    vec![
        (
            format!(r#"{{"correlationId":"{CORR}"}}"#),
            json!({"topic": "test", "correlationId": CORR,
                   "date": "2020-03-25T15:41:01.365287Z", "type": "SEND", "clientId": "myProducer"}),
        ),
        (
            TPO_KEY.to_owned(),
            json!({"topic": "test", "partition": 0, "offset": 0,
                   "date": "2020-03-25T15:41:01.966082Z", "type": "ACK", "clientId": "myProducer"}),
        ),
        (
            TPO_KEY.to_owned(),
            json!({"topic": "test", "partition": 0, "offset": 0, "correlationId": CORR,
                   "date": "2020-03-25T15:41:37.844039Z", "type": "CONSUME",
                   "clientId": "myConsumer", "groupId": "myGroup"}),
        ),
        (
            TPO_KEY.to_owned(),
            json!({"topic": "test", "partition": 0, "offset": 0,
                   "date": "2020-03-25T15:41:37.851339Z", "type": "COMMIT",
                   "clientId": "myConsumer", "groupId": "myGroup"}),
        ),
    ]
}

fn aggregator() -> Aggregator {
    Aggregator::new(AggregatorConfig::default()).unwrap()
}

fn feed(agg: &mut Aggregator, offset: i64, key: &str, value: &Value) -> Vec<Output> {
    let event = TraceEvent::decode(Some(key.as_bytes()), value.to_string().as_bytes()).unwrap();
    let mut out = Vec::new();
    agg.process(Position::new("_tracing", 0, offset), event, &mut out)
        .unwrap();
    out
}

/// Output as JSON values, each checked to be keyed `{topic,partition,offset}`.
fn values(outputs: &[Output]) -> Vec<Value> {
    outputs
        .iter()
        .map(|o| {
            let (key, value) = o.event.encode();
            let key: Value = serde_json::from_slice(&key).unwrap();
            let expected_key = json!({"topic": o.event.value.topic, "partition": o.event.value.partition,
                                      "offset": o.event.value.offset});
            assert_eq!(key, expected_key);
            serde_json::from_slice(&value).unwrap()
        })
        .collect()
}

#[test]
fn raw_interceptor_events_yield_the_documented_records() {
    let mut agg = aggregator();
    let mut outputs = Vec::new();
    for (offset, (key, value)) in raw_interceptor_events().iter().enumerate() {
        outputs.extend(feed(&mut agg, offset as i64, key, value));
    }
    // The SEND is located (and the ACK joined) only when the CONSUME brings the correlation
    // id together with the offset, so they come out then, in documented order.
    assert_eq!(values(&outputs), documented());
    let sources: Vec<i64> = outputs.iter().map(|o| o.source.offset).collect();
    assert_eq!(
        sources,
        vec![0, 1, 2, 3],
        "each output names its input event"
    );
    assert_eq!(agg.stats().over_consumed.len(), 0);
}

#[test]
fn located_by_the_data_record_header_as_the_seed_topology_does() {
    let mut agg = aggregator();
    let events = raw_interceptor_events();
    let mut outputs = feed(&mut agg, 0, &events[0].0, &events[0].1);
    assert!(outputs.is_empty(), "a SEND is held until located");
    // The record on `test` with header correlationId = CORR, read from the data topic.
    let send_nanos = 1_585_150_861_365_287_000;
    agg.locate(
        Position::new("test", 0, 0),
        CORR,
        ("test", 0, 0),
        send_nanos,
        &mut outputs,
    );
    assert_eq!(values(&outputs), documented()[..1]);
    for (offset, (key, value)) in events.iter().enumerate().skip(1) {
        let out = feed(&mut agg, offset as i64, key, value);
        assert_eq!(
            values(&out),
            documented()[offset..=offset],
            "event {offset}"
        );
    }
}

#[test]
fn documented_records_fed_back_reproduce_themselves() {
    // The README's records as input (keyed by position, durations present): the aggregator
    // recomputes every duration and emits each record as documented, as soon as it arrives.
    let mut agg = aggregator();
    for (offset, value) in documented().iter().enumerate() {
        let out = feed(&mut agg, offset as i64, TPO_KEY, value);
        assert_eq!(values(&out), vec![value.clone()], "record {offset}");
    }
}

#[test]
fn keyshift_acks_with_correlation_id_join_without_the_data_topic() {
    let mut agg = aggregator();
    let events = raw_interceptor_events();
    assert!(feed(&mut agg, 0, &events[0].0, &events[0].1).is_empty());
    let mut ack = events[1].1.clone();
    ack["correlationId"] = json!(CORR);
    let out = feed(&mut agg, 1, TPO_KEY, &ack);
    assert_eq!(values(&out), documented()[..2]);
}

fn consume(offset_in_tracing: i64, date: &str) -> (i64, Value) {
    (
        offset_in_tracing,
        json!({"topic": "test", "partition": 0, "offset": 0, "correlationId": CORR,
               "date": date, "type": "CONSUME", "clientId": "myConsumer", "groupId": "myGroup"}),
    )
}

#[test]
fn replayed_consume_after_commit_is_over_consumption() {
    let mut agg = aggregator();
    for (offset, (key, value)) in raw_interceptor_events().iter().enumerate() {
        feed(&mut agg, offset as i64, key, value);
    }
    // The group is rewound and reads test/0/0 again after having committed it.
    let (offset, replay) = consume(4, "2020-03-25T15:42:00Z");
    let out = values(&feed(&mut agg, offset, TPO_KEY, &replay));
    assert_eq!(out.len(), 1);
    assert_eq!(out[0]["type"], "CONSUME");
    assert_eq!(out[0]["overConsumption"], "afterCommit");
    assert_eq!(out[0]["durationMs"], 58_634);
    let counted = agg.stats().over_consumed[&("test".to_owned(), "myGroup".to_owned())];
    assert_eq!(counted, 1);
    // Another group reading the same offset is not over-consumption.
    let mut other = replay.clone();
    other["groupId"] = json!("otherGroup");
    let out = values(&feed(&mut agg, 5, TPO_KEY, &other));
    assert!(out[0].get("overConsumption").is_none());
}

#[test]
fn consumed_twice_before_commit_is_a_duplicate() {
    let mut agg = aggregator();
    let events = raw_interceptor_events();
    feed(&mut agg, 0, &events[0].0, &events[0].1);
    let (o1, first) = consume(1, "2020-03-25T15:41:37.844039Z");
    let (o2, second) = consume(2, "2020-03-25T15:41:38Z");
    assert!(values(&feed(&mut agg, o1, TPO_KEY, &first))
        .iter()
        .all(|v| v.get("overConsumption").is_none()));
    let out = values(&feed(&mut agg, o2, TPO_KEY, &second));
    assert_eq!(out[0]["overConsumption"], "duplicate");
}

#[test]
fn unmatched_events_expire_and_are_counted() {
    let mut agg = Aggregator::new(AggregatorConfig {
        unmatched_ttl_nanos: 60 * 1_000_000_000,
        ..AggregatorConfig::default()
    })
    .unwrap();
    // An ACK whose SEND never comes, then traffic two minutes later.
    let events = raw_interceptor_events();
    feed(&mut agg, 0, TPO_KEY, &events[1].1);
    assert_eq!(agg.low_water("_tracing", 0), Some(0));
    let later = json!({"topic": "other", "correlationId": "x", "date": "2020-03-25T15:44:00Z",
                       "type": "SEND", "clientId": "p"});
    feed(&mut agg, 1, r#"{"correlationId":"x"}"#, &later);
    assert_eq!(agg.stats().dropped.get(&EventKind::Ack), Some(&1));
    assert_eq!(
        agg.low_water("_tracing", 0),
        Some(1),
        "the expired ACK no longer pins the replay point"
    );
}

#[test]
fn bad_events_are_rejected_with_the_reason() {
    let mut agg = aggregator();
    let bad_date =
        json!({"topic": "t", "partition": 0, "offset": 1, "date": "yesterday", "type": "ACK"});
    let event = TraceEvent::decode(None, bad_date.to_string().as_bytes()).unwrap();
    let err = agg
        .process(Position::new("_tracing", 0, 0), event, &mut Vec::new())
        .unwrap_err();
    assert!(err.to_string().contains("yesterday"), "{err}");
    let no_group = json!({"topic": "t", "partition": 0, "offset": 1, "date": "2020-03-25T15:41:01Z", "type": "CONSUME"});
    let event = TraceEvent::decode(None, no_group.to_string().as_bytes()).unwrap();
    let err = agg
        .process(Position::new("_tracing", 0, 1), event, &mut Vec::new())
        .unwrap_err();
    assert_eq!(err.to_string(), "CONSUME event without groupId");
    assert_eq!(agg.stats().rejected, 2);
    assert!(TraceEvent::decode(None, b"{\"type\":\"SENT\"}").is_err());
}

/// Replay from the low-water mark rebuilds the state: the outputs of a run split at any
/// point, with the second half replayed from the committed low water and outputs of already
/// emitted sources suppressed, equal those of one uninterrupted run.
#[test]
fn replay_from_low_water_loses_and_duplicates_nothing() {
    // Ten records, each SEND/ACK/CONSUME/COMMIT, interleaved as a busy `_tracing` would be.
    let mut input: Vec<(String, Value)> = Vec::new();
    for i in 0..10i64 {
        let corr = format!("c{i}");
        let second = |s: i64| format!("2020-03-25T15:41:{:02}Z", s.min(59));
        input.push((
            format!(r#"{{"correlationId":"{corr}"}}"#),
            json!({"topic": "test", "correlationId": corr, "date": second(i), "type": "SEND", "clientId": "p"}),
        ));
        input.push((
            String::new(),
            json!({"topic": "test", "partition": 0, "offset": i, "correlationId": corr,
                   "date": second(i + 1), "type": "ACK", "clientId": "p"}),
        ));
        if i >= 2 {
            let c = i - 2;
            input.push((
                String::new(),
                json!({"topic": "test", "partition": 0, "offset": c, "correlationId": format!("c{c}"),
                       "date": second(i + 2), "type": "CONSUME", "clientId": "c", "groupId": "g"}),
            ));
            input.push((
                String::new(),
                json!({"topic": "test", "partition": 0, "offset": c, "date": second(i + 3),
                       "type": "COMMIT", "clientId": "c", "groupId": "g"}),
            ));
        }
    }
    let run = |agg: &mut Aggregator, range: std::ops::Range<usize>| -> Vec<Output> {
        let mut out = Vec::new();
        for i in range {
            let (key, value) = &input[i];
            let key = (!key.is_empty()).then_some(key.as_bytes());
            let event = TraceEvent::decode(key, value.to_string().as_bytes()).unwrap();
            agg.process(Position::new("_tracing", 0, i as i64), event, &mut out)
                .unwrap();
        }
        out
    };
    let whole = run(&mut aggregator(), 0..input.len());
    assert_eq!(whole.len(), input.len(), "every event is emitted once");
    for split in 1..input.len() {
        let mut first = aggregator();
        let mut emitted = run(&mut first, 0..split);
        let low = first.low_water("_tracing", 0).unwrap_or(split as i64) as usize;
        let mut second = aggregator();
        let already: Vec<Position> = emitted.iter().map(|o| o.source.clone()).collect();
        emitted.extend(
            run(&mut second, low..input.len())
                .into_iter()
                .filter(|o| !already.contains(&o.source)),
        );
        assert_eq!(emitted, whole, "split at {split}, replay from {low}");
    }
}

#[test]
fn a_commit_read_before_an_earlier_consume_is_not_over_consumption() {
    // COMMIT of test/0/5 (dated 15:41:40) read from one `_tracing` partition before the
    // CONSUME of test/0/0 (dated 15:41:37) from another: the dates decide, not the order.
    let mut agg = aggregator();
    let events = raw_interceptor_events();
    feed(&mut agg, 0, &events[0].0, &events[0].1);
    let commit = json!({"topic": "test", "partition": 0, "offset": 5, "date": "2020-03-25T15:41:40Z",
                        "type": "COMMIT", "clientId": "myConsumer", "groupId": "myGroup"});
    feed(
        &mut agg,
        1,
        r#"{"topic":"test","partition":0,"offset":5}"#,
        &commit,
    );
    let out = values(&feed(&mut agg, 2, TPO_KEY, &events[2].1));
    let first = out.iter().find(|v| v["type"] == "CONSUME").unwrap();
    assert!(first.get("overConsumption").is_none(), "{first}");
    // A CONSUME of offset 0 dated after that commit is.
    let (offset, late) = consume(3, "2020-03-25T15:41:41Z");
    let out = values(&feed(&mut agg, offset, TPO_KEY, &late));
    assert_eq!(out[0]["overConsumption"], "afterCommit");
}
