//! Trace context in Kafka record headers: W3C Trace Context (`traceparent`, `tracestate`)
//! and Zipkin's single `b3` header.
//!
//! [`extract`] reads a record's headers and returns the [`SpanContext`] of the upstream span,
//! preferring `traceparent` (the W3C standard) over `b3` when both are present and valid, so a
//! record that went through a Brave-instrumented service and a keyshift one continues the same
//! trace either way. [`inject`] writes `traceparent` (and `tracestate` when there is one), and
//! `b3` too when asked, replacing any earlier copies so a record never carries two contexts.
//!
//! Malformed headers are never an error for the record: they are treated as absent (the record
//! starts a new trace), exactly as the W3C spec asks of a receiver. [`parse_traceparent`] and
//! [`parse_b3`] say why a value was rejected, for logs and tests.

use std::str::FromStr;

use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};

/// The W3C Trace Context header that carries trace id, parent span id and flags.
pub const TRACEPARENT: &str = "traceparent";
/// The W3C Trace Context vendor-specific state header.
pub const TRACESTATE: &str = "tracestate";
/// Zipkin's single-header format (`{trace}-{span}-{sampled}-{parent}`), used by Brave.
pub const B3: &str = "b3";

/// Why a trace header value was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PropagationError {
    /// A `traceparent` value that does not follow the W3C format.
    #[error("invalid traceparent '{value}': {reason}")]
    TraceParent {
        /// The value (lossy UTF-8).
        value: String,
        /// What was wrong.
        reason: &'static str,
    },
    /// A `b3` value that does not follow Zipkin's single-header format.
    #[error("invalid b3 header '{value}': {reason}")]
    B3 {
        /// The value (lossy UTF-8).
        value: String,
        /// What was wrong.
        reason: &'static str,
    },
}

/// The sampling state of a `b3` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum B3Sampling {
    /// `1`: sampled upstream.
    Accept,
    /// `0`: not sampled upstream.
    Deny,
    /// `d`: debug, always sampled.
    Debug,
    /// No flag: the upstream left the decision to the receiver.
    Deferred,
}

/// A decoded `b3` header with trace and span ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct B3Context {
    /// The trace id; a 64-bit id is left-padded with zeros to 128 bits, as Zipkin does.
    pub trace_id: TraceId,
    /// The upstream span's id (the parent of the span a receiver creates).
    pub span_id: SpanId,
    /// The sampling state.
    pub sampling: B3Sampling,
    /// The upstream span's own parent, if written.
    pub parent_span_id: Option<SpanId>,
}

impl B3Context {
    /// As a remote [`SpanContext`]. A deferred decision is taken as sampled: the upstream
    /// chose to propagate the trace, and a trace continued by some hops and dropped by others
    /// is worse than an extra sampled one; the head sampler still decides for new roots.
    pub fn span_context(&self) -> SpanContext {
        let flags = match self.sampling {
            B3Sampling::Deny => TraceFlags::default(),
            B3Sampling::Accept | B3Sampling::Debug | B3Sampling::Deferred => TraceFlags::SAMPLED,
        };
        SpanContext::new(
            self.trace_id,
            self.span_id,
            flags,
            true,
            TraceState::default(),
        )
    }
}

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

/// Lowercase hex of exactly `N` bytes (`2N` digits), as both formats require.
fn lower_hex<const N: usize>(text: &[u8]) -> Option<[u8; N]> {
    if text.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (i, pair) in text.chunks_exact(2).enumerate() {
        out[i] = hex_value(pair[0])? << 4 | hex_value(pair[1])?;
    }
    Some(out)
}

/// Parses a `traceparent` value (`00-<32 hex trace id>-<16 hex span id>-<2 hex flags>`).
///
/// Versions above `00` are accepted when they start with the version-00 layout (the spec's
/// forward compatibility rule); `ff`, all-zero ids and uppercase hex are rejected.
pub fn parse_traceparent(value: &[u8]) -> Result<SpanContext, PropagationError> {
    let err = |reason| PropagationError::TraceParent {
        value: String::from_utf8_lossy(value).into_owned(),
        reason,
    };
    let v = value.trim_ascii();
    if v.len() < 55 {
        return Err(err(
            "expected 55 characters: 00-<trace id>-<span id>-<flags>",
        ));
    }
    if v[2] != b'-' || v[35] != b'-' || v[52] != b'-' {
        return Err(err(
            "expected '-' separators after version, trace id and span id",
        ));
    }
    let [version] = lower_hex::<1>(&v[..2]).ok_or_else(|| err("version is not 2 hex digits"))?;
    if version == 0xff {
        return Err(err("version ff is invalid"));
    }
    if version == 0 && v.len() != 55 {
        return Err(err("version 00 must be exactly 55 characters"));
    }
    if version > 0 && v.len() > 55 && v[55] != b'-' {
        return Err(err(
            "a future version must continue with '-' after the flags",
        ));
    }
    let trace =
        lower_hex::<16>(&v[3..35]).ok_or_else(|| err("trace id is not 32 lowercase hex digits"))?;
    let span =
        lower_hex::<8>(&v[36..52]).ok_or_else(|| err("span id is not 16 lowercase hex digits"))?;
    let [flags] = lower_hex::<1>(&v[53..55]).ok_or_else(|| err("flags are not 2 hex digits"))?;
    if trace == [0; 16] {
        return Err(err("trace id is all zeros"));
    }
    if span == [0; 8] {
        return Err(err("span id is all zeros"));
    }
    Ok(SpanContext::new(
        TraceId::from_bytes(trace),
        SpanId::from_bytes(span),
        TraceFlags::new(flags) & TraceFlags::SAMPLED,
        true,
        TraceState::default(),
    ))
}

/// Formats a context as a version-00 `traceparent` value.
pub fn format_traceparent(context: &SpanContext) -> String {
    // Written byte by byte: this runs for every traced record, sampled or not.
    const HEX: &[u8; 16] = b"0123456789abcdef";
    fn hex(out: &mut Vec<u8>, bytes: &[u8]) {
        for b in bytes {
            out.push(HEX[usize::from(b >> 4)]);
            out.push(HEX[usize::from(b & 0xf)]);
        }
    }
    let mut out = Vec::with_capacity(55);
    out.extend_from_slice(b"00-");
    hex(&mut out, &context.trace_id().to_bytes());
    out.push(b'-');
    hex(&mut out, &context.span_id().to_bytes());
    out.extend_from_slice(if context.is_sampled() { b"-01" } else { b"-00" });
    String::from_utf8(out).expect("ASCII")
}

/// Parses a single `b3` header: `{trace id}-{span id}[-{sampling}[-{parent span id}]]`, or a
/// lone sampling state (`0`, `1`, `d`). Returns `Ok(None)` for a lone state, which carries no
/// ids to continue.
pub fn parse_b3(value: &[u8]) -> Result<Option<B3Context>, PropagationError> {
    let err = |reason| PropagationError::B3 {
        value: String::from_utf8_lossy(value).into_owned(),
        reason,
    };
    let v = value.trim_ascii();
    let sampling = |s: &[u8]| match s {
        b"1" => Ok(B3Sampling::Accept),
        b"0" => Ok(B3Sampling::Deny),
        b"d" => Ok(B3Sampling::Debug),
        _ => Err(err("sampling state must be 0, 1 or d")),
    };
    let parts: Vec<&[u8]> = v.split(|&c| c == b'-').collect();
    if parts.len() == 1 {
        sampling(parts[0])?;
        return Ok(None);
    }
    if parts.len() > 4 {
        return Err(err("expected at most 4 '-'-separated fields"));
    }
    let trace_id = match parts[0].len() {
        32 => lower_hex::<16>(parts[0]),
        16 => lower_hex::<8>(parts[0]).map(|low| {
            let mut full = [0u8; 16];
            full[8..].copy_from_slice(&low);
            full
        }),
        _ => None,
    }
    .ok_or_else(|| err("trace id must be 16 or 32 lowercase hex digits"))?;
    let span_id =
        lower_hex::<8>(parts[1]).ok_or_else(|| err("span id must be 16 lowercase hex digits"))?;
    if trace_id == [0; 16] || span_id == [0; 8] {
        return Err(err("trace id and span id must not be all zeros"));
    }
    let sampling = match parts.get(2) {
        Some(s) => sampling(s)?,
        None => B3Sampling::Deferred,
    };
    let parent_span_id = match parts.get(3) {
        Some(p) => {
            Some(SpanId::from_bytes(lower_hex::<8>(p).ok_or_else(|| {
                err("parent span id must be 16 lowercase hex digits")
            })?))
        }
        None => None,
    };
    Ok(Some(B3Context {
        trace_id: TraceId::from_bytes(trace_id),
        span_id: SpanId::from_bytes(span_id),
        sampling,
        parent_span_id,
    }))
}

/// Formats a context as a single `b3` header: 128-bit trace id, span id, sampling state.
pub fn format_b3(context: &SpanContext) -> String {
    let sampled = if context.is_sampled() { '1' } else { '0' };
    format!("{}-{}-{sampled}", context.trace_id(), context.span_id())
}

/// The upstream context carried by a record's headers: a valid `traceparent` (with its
/// `tracestate`), else a valid `b3`, else `None`.
pub fn extract<'a, I>(headers: I) -> Option<SpanContext>
where
    I: IntoIterator<Item = (&'a str, Option<&'a [u8]>)>,
{
    let (mut traceparent, mut tracestate, mut b3) = (None, None, None);
    for (name, value) in headers {
        let Some(value) = value else { continue };
        // Header names are matched case-insensitively, like HTTP's, since some clients
        // capitalise them; the last copy wins, as a later writer meant to replace it.
        if name.eq_ignore_ascii_case(TRACEPARENT) {
            traceparent = Some(value);
        } else if name.eq_ignore_ascii_case(TRACESTATE) {
            tracestate = Some(value);
        } else if name.eq_ignore_ascii_case(B3) {
            b3 = Some(value);
        }
    }
    if let Some(context) = traceparent.and_then(|v| parse_traceparent(v).ok()) {
        let state = tracestate
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(|v| TraceState::from_str(v).ok())
            .unwrap_or_default();
        return Some(SpanContext::new(
            context.trace_id(),
            context.span_id(),
            context.trace_flags(),
            true,
            state,
        ));
    }
    b3.and_then(|v| parse_b3(v).ok().flatten())
        .map(|b3| b3.span_context())
}

/// [`extract`] over the owned header list the keyshift producer takes.
pub fn extract_owned(headers: &[(String, Vec<u8>)]) -> Option<SpanContext> {
    extract(
        headers
            .iter()
            .map(|(k, v)| (k.as_str(), Some(v.as_slice()))),
    )
}

/// [`extract`] over the header list of a consumed record (values may be null).
pub fn extract_consumed(headers: &[(String, Option<Vec<u8>>)]) -> Option<SpanContext> {
    extract(headers.iter().map(|(k, v)| (k.as_str(), v.as_deref())))
}

/// Writes `context` into `headers` as `traceparent` (+ `tracestate` if non-empty, + `b3` when
/// `write_b3`), after removing any trace headers already there.
pub fn inject(context: &SpanContext, write_b3: bool, headers: &mut Vec<(String, Vec<u8>)>) {
    headers.retain(|(name, _)| {
        !(name.eq_ignore_ascii_case(TRACEPARENT)
            || name.eq_ignore_ascii_case(TRACESTATE)
            || name.eq_ignore_ascii_case(B3))
    });
    headers.push((
        TRACEPARENT.to_owned(),
        format_traceparent(context).into_bytes(),
    ));
    let state = context.trace_state().header();
    if !state.is_empty() {
        headers.push((TRACESTATE.to_owned(), state.into_bytes()));
    }
    if write_b3 {
        headers.push((B3.to_owned(), format_b3(context).into_bytes()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The example of the W3C Trace Context recommendation, section 3.2.
    const W3C_EXAMPLE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn traceparent_round_trips_the_spec_example() {
        let cx = parse_traceparent(W3C_EXAMPLE.as_bytes()).unwrap();
        assert_eq!(
            cx.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(cx.span_id().to_string(), "00f067aa0ba902b7");
        assert!(cx.is_sampled() && cx.is_remote());
        assert_eq!(format_traceparent(&cx), W3C_EXAMPLE);
    }

    #[test]
    fn traceparent_rejects_what_the_spec_rejects() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert!(parse_traceparent(bad.as_bytes()).is_err(), "{bad}");
        }
        // A future version may append fields.
        let future = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-ever";
        assert!(parse_traceparent(future.as_bytes()).is_ok());
    }

    #[test]
    fn b3_single_header_forms() {
        let full =
            parse_b3(b"80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90")
                .unwrap()
                .unwrap();
        assert_eq!(
            full.trace_id.to_string(),
            "80f198ee56343ba864fe8b2a57d3eff7"
        );
        assert_eq!(full.span_id.to_string(), "e457b5a2e4d86bd1");
        assert_eq!(full.sampling, B3Sampling::Accept);
        assert_eq!(full.parent_span_id.unwrap().to_string(), "05e3ac9a4f6e3b90");

        let short = parse_b3(b"64fe8b2a57d3eff7-e457b5a2e4d86bd1")
            .unwrap()
            .unwrap();
        assert_eq!(
            short.trace_id.to_string(),
            "000000000000000064fe8b2a57d3eff7"
        );
        assert_eq!(short.sampling, B3Sampling::Deferred);
        assert!(short.span_context().is_sampled());

        let denied = parse_b3(b"64fe8b2a57d3eff7-e457b5a2e4d86bd1-0")
            .unwrap()
            .unwrap();
        assert!(!denied.span_context().is_sampled());
        assert_eq!(parse_b3(b"0").unwrap(), None);
        for bad in [
            "x",
            "64fe8b2a57d3eff7",
            "64fe8b2a57d3eff7-e457b5a2e4d86bd1-2",
            "a-b-1",
        ] {
            assert!(parse_b3(bad.as_bytes()).is_err(), "{bad}");
        }
    }

    #[test]
    fn extract_prefers_traceparent_and_inject_replaces() {
        let b3 = "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1";
        let mut headers = vec![
            ("b3".to_owned(), b3.as_bytes().to_vec()),
            ("traceparent".to_owned(), W3C_EXAMPLE.as_bytes().to_vec()),
            ("tracestate".to_owned(), b"congo=t61rcWkgMzE".to_vec()),
        ];
        let cx = extract_owned(&headers).unwrap();
        assert_eq!(
            cx.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(cx.trace_state().header(), "congo=t61rcWkgMzE");
        // A malformed traceparent falls back to b3.
        headers[1].1 = b"garbage".to_vec();
        let cx = extract_owned(&headers).unwrap();
        assert_eq!(
            cx.trace_id().to_string(),
            "80f198ee56343ba864fe8b2a57d3eff7"
        );

        inject(&cx, true, &mut headers);
        let names: Vec<&str> = headers.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(names, ["traceparent", "b3"]);
        assert_eq!(
            headers[0].1,
            b"00-80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-01"
        );
        assert_eq!(headers[1].1, b3.as_bytes());
    }
}
