//! A small reader of the Prometheus / OpenMetrics text exposition, enough for what the keyshift
//! binaries (prometheus-client's encoder) and most exporters write.
//!
//! [`parse`] turns a scraped body into [`Sample`]s: metric name, labels (unescaped), value.
//! Comment lines (`# HELP`, `# TYPE`, `# EOF`) are skipped, an optional timestamp after the
//! value is ignored. A malformed line is an [`ParseError`] naming its line number and text, so
//! that the page can say which target sends what — the dashboard then shows that target as
//! down and keeps everything else.
//!
//! [`Samples`] indexes a parsed body for the lookups the dashboard makes: a value by name and
//! labels, every series of a name, and sums.

use std::collections::BTreeMap;

/// One series value of an exposition.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Metric name as written (with `_total`, `_bucket`, ... suffixes).
    pub name: String,
    /// Label pairs, values unescaped.
    pub labels: BTreeMap<String, String>,
    /// The value; `NaN`, `+Inf` and `-Inf` are accepted.
    pub value: f64,
}

impl Sample {
    /// The value of label `name`, if present.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels.get(name).map(String::as_str)
    }
}

/// Why a body is not a text exposition.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {reason}: {text:?}")]
pub struct ParseError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub reason: &'static str,
    /// The line, cut to 120 characters.
    pub text: String,
}

/// Parses a whole exposition body.
pub fn parse(body: &str) -> Result<Vec<Sample>, ParseError> {
    let mut out = Vec::new();
    for (i, raw) in body.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let err = |reason| ParseError {
            line: i + 1,
            reason,
            text: line.chars().take(120).collect(),
        };
        out.push(parse_line(line).map_err(err)?);
    }
    Ok(out)
}

fn parse_line(line: &str) -> Result<Sample, &'static str> {
    let name_end = line
        .find(|c: char| c == '{' || c.is_whitespace())
        .ok_or("no value")?;
    let name = &line[..name_end];
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    {
        return Err("bad metric name");
    }
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(after) = rest.strip_prefix('{') {
        rest = parse_labels(after, &mut labels)?;
    }
    let mut fields = rest.split_whitespace();
    let value = fields.next().ok_or("no value")?;
    let value = parse_value(value).ok_or("bad value")?;
    // An optional timestamp may follow; anything beyond it is malformed.
    if let Some(ts) = fields.next() {
        ts.parse::<f64>().map_err(|_| "bad timestamp")?;
    }
    if fields.next().is_some() {
        return Err("trailing text");
    }
    Ok(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

/// Reads `name="value",...}` and returns what follows the closing brace.
fn parse_labels<'a>(
    mut s: &'a str,
    labels: &mut BTreeMap<String, String>,
) -> Result<&'a str, &'static str> {
    loop {
        s = s.trim_start();
        if let Some(after) = s.strip_prefix('}') {
            return Ok(after);
        }
        let eq = s.find('=').ok_or("label without '='")?;
        let key = s[..eq].trim();
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err("bad label name");
        }
        s = s[eq + 1..]
            .trim_start()
            .strip_prefix('"')
            .ok_or("label value not quoted")?;
        let mut value = String::new();
        let mut chars = s.char_indices();
        let end = loop {
            match chars.next() {
                None => return Err("unterminated label value"),
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c @ ('\\' | '"'))) => value.push(c),
                    _ => return Err("bad escape in label value"),
                },
                Some((_, c)) => value.push(c),
            }
        };
        labels.insert(key.to_owned(), value);
        s = s[end + 1..].trim_start();
        if let Some(after) = s.strip_prefix(',') {
            s = after;
        } else if !s.starts_with('}') {
            return Err("expected ',' or '}' after a label");
        }
    }
}

fn parse_value(s: &str) -> Option<f64> {
    match s {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ => s.parse().ok(),
    }
}

/// A parsed exposition with lookups.
#[derive(Debug, Clone, Default)]
pub struct Samples {
    samples: Vec<Sample>,
}

impl From<Vec<Sample>> for Samples {
    fn from(samples: Vec<Sample>) -> Self {
        Samples { samples }
    }
}

impl Samples {
    /// Every series named `name`.
    pub fn series<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples.iter().filter(move |s| s.name == name)
    }

    /// The first series named `name` (the only one for an unlabelled metric).
    pub fn value(&self, name: &str) -> Option<f64> {
        self.series(name).next().map(|s| s.value)
    }

    /// The sum over every series named `name`; `None` if there is none.
    pub fn sum(&self, name: &str) -> Option<f64> {
        let mut it = self.series(name).peekable();
        it.peek()?;
        Some(it.map(|s| s.value).sum())
    }

    /// Whether any series name starts with `prefix`.
    pub fn has_prefix(&self, prefix: &str) -> bool {
        self.samples.iter().any(|s| s.name.starts_with(prefix))
    }

    /// The `q` quantile (0..1) of histogram `name` (its `_bucket` series summed over labels),
    /// interpolated linearly inside the bucket like PromQL's `histogram_quantile`; `None`
    /// without observations.
    pub fn histogram_quantile(&self, name: &str, q: f64) -> Option<f64> {
        let bucket = format!("{name}_bucket");
        let mut bounds: BTreeMap<u64, (f64, f64)> = BTreeMap::new();
        for s in self.series(&bucket) {
            let le = parse_value(s.label("le")?)?;
            // Keyed by the bits of a non-negative bound, which sort like the floats.
            let e = bounds.entry(le.max(0.0).to_bits()).or_insert((le, 0.0));
            e.1 += s.value;
        }
        let total = bounds.values().last()?.1;
        if total <= 0.0 {
            return None;
        }
        let rank = q * total;
        let (mut lower, mut below) = (0.0, 0.0);
        for (le, count) in bounds.values() {
            if *count >= rank {
                if le.is_infinite() {
                    return Some(lower);
                }
                let inside = count - below;
                let frac = if inside > 0.0 {
                    (rank - below) / inside
                } else {
                    1.0
                };
                return Some(lower + (le - lower) * frac);
            }
            lower = *le;
            below = *count;
        }
        Some(lower)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_prometheus_client_writes() {
        let body = "# HELP keyshift_gateway_hot_key_rate Decayed rate\n\
                    # TYPE keyshift_gateway_hot_key_rate gauge\n\
                    keyshift_gateway_hot_key_rate{key=\"a \\\"q\\\" \\\\ b\\nc\"} 12.5\n\
                    keyshift_producer_partition_records_total{partition=\"3\"} 42\n\
                    up 1 1700000000000\n\
                    x_bucket{le=\"+Inf\"} NaN\n\
                    # EOF\n";
        let s = parse(body).unwrap();
        assert_eq!(s.len(), 4);
        assert_eq!(s[0].label("key"), Some("a \"q\" \\ b\nc"));
        assert_eq!(s[0].value, 12.5);
        assert_eq!(s[1].name, "keyshift_producer_partition_records_total");
        assert_eq!(s[1].label("partition"), Some("3"));
        assert_eq!(s[2].value, 1.0);
        assert!(s[3].value.is_nan());
    }

    #[test]
    fn malformed_lines_are_named() {
        for (body, reason) in [
            ("x{a=\"1\" 2", "expected ',' or '}' after a label"),
            ("x{a=1} 2", "label value not quoted"),
            ("x{a=\"1} 2", "unterminated label value"),
            ("x 1 2 3", "trailing text"),
            ("x abc", "bad value"),
            ("x", "no value"),
            ("<html>", "no value"),
            ("-x 1", "bad metric name"),
        ] {
            let err = parse(&format!("ok 1\n{body}\n")).unwrap_err();
            assert_eq!((err.line, err.reason), (2, reason), "{body}");
        }
    }

    #[test]
    fn sums_and_quantiles() {
        let body = "h_bucket{le=\"0.1\",w=\"a\"} 5\nh_bucket{le=\"0.2\",w=\"a\"} 10\n\
                    h_bucket{le=\"+Inf\",w=\"a\"} 10\nh_bucket{le=\"0.1\",w=\"b\"} 5\n\
                    h_bucket{le=\"0.2\",w=\"b\"} 10\nh_bucket{le=\"+Inf\",w=\"b\"} 10\n\
                    c_total{p=\"0\"} 1\nc_total{p=\"1\"} 2\n";
        let s = Samples::from(parse(body).unwrap());
        assert_eq!(s.sum("c_total"), Some(3.0));
        assert_eq!(s.sum("nope"), None);
        // 20 observations, half at or under 0.1: the median is the first bucket's bound.
        assert!((s.histogram_quantile("h", 0.5).unwrap() - 0.1).abs() < 1e-12);
        assert!((s.histogram_quantile("h", 0.75).unwrap() - 0.15).abs() < 1e-12);
        assert_eq!(s.histogram_quantile("c", 0.5), None);
        assert!(s.has_prefix("c_"));
    }
}
