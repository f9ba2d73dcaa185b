//! Trace events in the JSON format of kafka-tracing-interceptor.
//!
//! The Java interceptors of kafka-tracing-aggregator write one record per SEND, ACK, CONSUME
//! and COMMIT to the `_tracing` topic; the aggregator joins them and writes enriched copies
//! (same shape, plus `correlationId`/`durationMs`) to `_aggregatedTrace`. A [`TraceEvent`] is
//! one such record: a [`TraceKey`] (JSON record key) and a [`TraceValue`] (JSON record value).
//! keyshift's producer and worker emit them, `keyshift trace aggregate` reads ours and the
//! Java interceptor's alike.
//!
//! What each kind carries, as the interceptor writes it:
//!
//! | kind | key | value |
//! |---|---|---|
//! | SEND | `{correlationId}` | topic, correlationId, date, type, clientId |
//! | ACK | `{topic,partition,offset}` | topic, partition, offset, date, type, clientId |
//! | CONSUME | `{topic,partition,offset}` | topic, partition, offset, correlationId, date, type, clientId, groupId |
//! | COMMIT | `{topic,partition,offset}` | topic, partition, offset (committed offset − 1), date, type, clientId, groupId |
//!
//! Absent fields are omitted, never `null` (Jackson `NON_NULL`), and unknown fields are
//! ignored when decoding (Jackson `ignoreUnknown`), so either side can add fields. keyshift's
//! producer also puts `correlationId` on its ACKs when it knows it, which lets the aggregator
//! join SEND and ACK without reading the data topic.
//!
//! Dates are `java.time.Instant::toString` text (`2020-03-25T15:41:01.365287Z`, UTC, 0/3/6/9
//! fraction digits): [`format_instant`] writes it, [`parse_instant`] reads it.

use serde::{Deserialize, Serialize};

/// The topic the interceptors write raw events to.
pub const TRACE_TOPIC: &str = "_tracing";
/// The topic the aggregator writes enriched events to.
pub const AGGREGATED_TRACE_TOPIC: &str = "_aggregatedTrace";
/// The record header that carries the correlation id on the traced records themselves.
pub const CORRELATION_ID_HEADER: &str = "correlationId";

/// What happened to the record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum EventKind {
    /// The producer was handed the record (partition and offset not yet known).
    Send,
    /// The broker acknowledged the record.
    Ack,
    /// A consumer received the record.
    Consume,
    /// A consumer committed the offset after the record.
    Commit,
}

impl EventKind {
    /// The JSON spelling: `SEND`, `ACK`, `CONSUME`, `COMMIT`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Send => "SEND",
            EventKind::Ack => "ACK",
            EventKind::Consume => "CONSUME",
            EventKind::Commit => "COMMIT",
        }
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The JSON record key: `{topic,partition,offset}`, or `{correlationId}` for a raw SEND.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TraceKey {
    /// Topic of the traced record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    /// Partition of the traced record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<i32>,
    /// Offset of the traced record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<i64>,
    /// Correlation id (raw SEND events only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
}

impl TraceKey {
    /// The `{topic,partition,offset}` key.
    pub fn at(topic: &str, partition: i32, offset: i64) -> Self {
        TraceKey {
            topic: Some(topic.to_owned()),
            partition: Some(partition),
            offset: Some(offset),
            correlation_id: None,
        }
    }

    /// The `{correlationId}` key of a raw SEND.
    pub fn correlation(correlation_id: &str) -> Self {
        TraceKey {
            correlation_id: Some(correlation_id.to_owned()),
            ..TraceKey::default()
        }
    }
}

/// The JSON record value; field order is the interceptor's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TraceValue {
    /// Topic of the traced record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    /// Partition of the traced record (absent on a raw SEND).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<i32>,
    /// Offset of the traced record (absent on a raw SEND).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<i64>,
    /// The `correlationId` header of the traced record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    /// When it happened, as `Instant::toString` text (kept verbatim so output matches input).
    pub date: String,
    /// What happened.
    #[serde(rename = "type")]
    pub kind: EventKind,
    /// `client.id` of the producer or consumer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// `group.id` of the consumer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_id: Option<String>,
    /// Filled in by the aggregator: send→ack, send→consume or consume→commit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<i64>,
    /// Filled in by keyshift's aggregator on a CONSUME that is over-consumption (`duplicate`:
    /// the group consumed this offset before; `afterCommit`: the group had already committed
    /// past it). Absent otherwise, so ordinary records match the seed's format exactly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub over_consumption: Option<String>,
}

/// A trace event that cannot be decoded.
#[derive(Debug, thiserror::Error)]
pub enum EventError {
    /// The key is not the expected JSON.
    #[error("trace event key is not valid JSON ({key}): {source}")]
    Key {
        /// The key as text (lossy).
        key: String,
        /// What serde_json said.
        source: serde_json::Error,
    },
    /// The value is not the expected JSON.
    #[error("trace event value is not valid JSON ({value}): {source}")]
    Value {
        /// The value as text (lossy).
        value: String,
        /// What serde_json said.
        source: serde_json::Error,
    },
    /// The date is not an ISO-8601 UTC instant.
    #[error(
        "invalid trace event date '{0}': expected an instant like 2020-03-25T15:41:01.365287Z"
    )]
    Date(String),
}

/// One `_tracing` / `_aggregatedTrace` record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceEvent {
    /// The record key.
    pub key: TraceKey,
    /// The record value.
    pub value: TraceValue,
}

impl TraceEvent {
    /// A SEND, as the producer writes it when handed a record: keyed by correlation id, no
    /// partition or offset yet. `unix_nanos` is the wall-clock time.
    pub fn send(topic: &str, correlation_id: &str, client_id: &str, unix_nanos: i64) -> Self {
        TraceEvent {
            key: TraceKey::correlation(correlation_id),
            value: TraceValue {
                topic: Some(topic.to_owned()),
                correlation_id: Some(correlation_id.to_owned()),
                client_id: Some(client_id.to_owned()),
                ..TraceValue::new(EventKind::Send, unix_nanos)
            },
        }
    }

    /// An ACK for the record the broker stored at `topic/partition/offset`. The interceptor
    /// writes no correlation id here; pass it when known (keyshift's producer does) so the
    /// aggregator can join without reading the data topic.
    pub fn ack(
        topic: &str,
        partition: i32,
        offset: i64,
        correlation_id: Option<&str>,
        client_id: &str,
        unix_nanos: i64,
    ) -> Self {
        TraceEvent {
            key: TraceKey::at(topic, partition, offset),
            value: TraceValue {
                correlation_id: correlation_id.map(str::to_owned),
                client_id: Some(client_id.to_owned()),
                ..TraceValue::at(EventKind::Ack, topic, partition, offset, unix_nanos)
            },
        }
    }

    /// A CONSUME of `topic/partition/offset` by `group_id`.
    pub fn consume(
        topic: &str,
        partition: i32,
        offset: i64,
        correlation_id: Option<&str>,
        client_id: &str,
        group_id: &str,
        unix_nanos: i64,
    ) -> Self {
        TraceEvent {
            key: TraceKey::at(topic, partition, offset),
            value: TraceValue {
                correlation_id: correlation_id.map(str::to_owned),
                client_id: Some(client_id.to_owned()),
                group_id: Some(group_id.to_owned()),
                ..TraceValue::at(EventKind::Consume, topic, partition, offset, unix_nanos)
            },
        }
    }

    /// A COMMIT of `committed_offset` (the next offset to consume, as Kafka stores it) on
    /// `topic/partition` by `group_id`. Like the interceptor, the event names the last
    /// consumed record, `committed_offset − 1`.
    pub fn commit(
        topic: &str,
        partition: i32,
        committed_offset: i64,
        client_id: &str,
        group_id: &str,
        unix_nanos: i64,
    ) -> Self {
        let offset = committed_offset - 1;
        TraceEvent {
            key: TraceKey::at(topic, partition, offset),
            value: TraceValue {
                client_id: Some(client_id.to_owned()),
                group_id: Some(group_id.to_owned()),
                ..TraceValue::at(EventKind::Commit, topic, partition, offset, unix_nanos)
            },
        }
    }

    /// Encodes as (key JSON, value JSON), the bytes of the Kafka record.
    pub fn encode(&self) -> (Vec<u8>, Vec<u8>) {
        // Serializing these plain structs cannot fail (string keys, no maps, no floats).
        let key = serde_json::to_vec(&self.key).expect("TraceKey serializes");
        let value = serde_json::to_vec(&self.value).expect("TraceValue serializes");
        (key, value)
    }

    /// Decodes a Kafka record's key and value. A missing key is allowed (the value carries
    /// everything the aggregator needs).
    pub fn decode(key: Option<&[u8]>, value: &[u8]) -> Result<Self, EventError> {
        let key = match key {
            None | Some(b"") => TraceKey::default(),
            Some(bytes) => serde_json::from_slice(bytes).map_err(|source| EventError::Key {
                key: String::from_utf8_lossy(bytes).into_owned(),
                source,
            })?,
        };
        let value: TraceValue =
            serde_json::from_slice(value).map_err(|source| EventError::Value {
                value: String::from_utf8_lossy(value).into_owned(),
                source,
            })?;
        Ok(TraceEvent { key, value })
    }
}

impl TraceValue {
    /// A value of `kind` at `unix_nanos` with every optional field absent.
    pub fn new(kind: EventKind, unix_nanos: i64) -> Self {
        TraceValue {
            topic: None,
            partition: None,
            offset: None,
            correlation_id: None,
            date: format_instant(unix_nanos),
            kind,
            client_id: None,
            group_id: None,
            duration_ms: None,
            over_consumption: None,
        }
    }

    fn at(kind: EventKind, topic: &str, partition: i32, offset: i64, unix_nanos: i64) -> Self {
        TraceValue {
            topic: Some(topic.to_owned()),
            partition: Some(partition),
            offset: Some(offset),
            ..TraceValue::new(kind, unix_nanos)
        }
    }

    /// The date as nanoseconds since the Unix epoch.
    pub fn unix_nanos(&self) -> Result<i64, EventError> {
        parse_instant(&self.date)
    }
}

const NANOS_PER_SEC: i64 = 1_000_000_000;

/// Formats nanoseconds since the Unix epoch as `java.time.Instant::toString` does: UTC, `Z`,
/// and the fraction in groups of three digits (none, millis, micros or nanos) as needed.
pub fn format_instant(unix_nanos: i64) -> String {
    let secs = unix_nanos.div_euclid(NANOS_PER_SEC);
    let nanos = unix_nanos.rem_euclid(NANOS_PER_SEC);
    let days = secs.div_euclid(86_400);
    let second_of_day = secs.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    let (h, m, s) = (
        second_of_day / 3600,
        (second_of_day % 3600) / 60,
        second_of_day % 60,
    );
    let fraction = if nanos == 0 {
        String::new()
    } else if nanos % 1_000_000 == 0 {
        format!(".{:03}", nanos / 1_000_000)
    } else if nanos % 1_000 == 0 {
        format!(".{:06}", nanos / 1_000)
    } else {
        format!(".{nanos:09}")
    };
    format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}{fraction}Z")
}

/// Parses an ISO-8601 instant (`YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)`, 1–9 fraction
/// digits) into nanoseconds since the Unix epoch.
pub fn parse_instant(text: &str) -> Result<i64, EventError> {
    let bad = || EventError::Date(text.to_owned());
    let b = text.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't') {
        return Err(bad());
    }
    if b[13] != b':' || b[16] != b':' {
        return Err(bad());
    }
    let num = |range: std::ops::Range<usize>| -> Result<i64, EventError> {
        let part = text.get(range).ok_or_else(bad)?;
        if !part.bytes().all(|c| c.is_ascii_digit()) {
            return Err(bad());
        }
        part.parse().map_err(|_| bad())
    };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return Err(bad());
    }
    let mut rest = &text[19..];
    let mut nanos = 0i64;
    if let Some(fraction) = rest.strip_prefix('.') {
        let digits = fraction.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 || digits > 9 {
            return Err(bad());
        }
        nanos =
            fraction[..digits].parse::<i64>().map_err(|_| bad())? * 10i64.pow(9 - digits as u32);
        rest = &fraction[digits..];
    }
    let offset_secs = match rest {
        "Z" | "z" => 0,
        _ if rest.len() == 6 && matches!(&rest[..1], "+" | "-") && &rest[3..4] == ":" => {
            let sign = if rest.starts_with('-') { -1 } else { 1 };
            let (oh, om) = (
                num_at(rest, 1..3).ok_or_else(bad)?,
                num_at(rest, 4..6).ok_or_else(bad)?,
            );
            sign * (oh * 3600 + om * 60)
        }
        _ => return Err(bad()),
    };
    let secs = days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second
        - offset_secs;
    // In i128: the whole second before the earliest representable instant is out of i64.
    let total = i128::from(secs) * i128::from(NANOS_PER_SEC) + i128::from(nanos);
    i64::try_from(total).map_err(|_| bad())
}

fn num_at(text: &str, range: std::ops::Range<usize>) -> Option<i64> {
    let part = text.get(range)?;
    part.bytes()
        .all(|c| c.is_ascii_digit())
        .then(|| part.parse().ok())
        .flatten()
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

// Howard Hinnant's days_from_civil / civil_from_days: exact for the proleptic Gregorian
// calendar, no tables, no floating point.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instant_text_matches_java() {
        let nanos = parse_instant("2020-03-25T15:41:01.365287Z").unwrap();
        assert_eq!(nanos, 1_585_150_861_365_287_000);
        assert_eq!(format_instant(nanos), "2020-03-25T15:41:01.365287Z");
        assert_eq!(format_instant(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_instant(1_500_000_000), "1970-01-01T00:00:01.500Z");
        assert_eq!(format_instant(-1), "1969-12-31T23:59:59.999999999Z");
        assert_eq!(
            parse_instant("2020-03-25T16:41:01.5+01:00").unwrap(),
            parse_instant("2020-03-25T15:41:01.500Z").unwrap()
        );
        for bad in [
            "",
            "2020-02-30T00:00:00Z",
            "2020-03-25 15:41:01Z",
            "2020-03-25T15:41:01",
        ] {
            assert!(parse_instant(bad).is_err(), "{bad}");
        }
    }
}
