//! Requests the proxy's codec cannot decode are relayed, not refused: raw frames the embedded
//! broker answers although the codec has no decoder for them (Metadata v14, above the codec's
//! v13; ApiVersions v5, above its v4; Metadata v−1, no version at all) get, through the proxy,
//! the very bytes the broker sends a direct connection, and the connection keeps working for
//! the next, decodable request. An API key the codec does not know (999) is relayed too: the
//! broker (tansu 0.6 closes a connection on an API it does not route) decides, not the proxy.
//! Each is counted by API key and reason, read back from the Prometheus text.

mod support;

use std::collections::BTreeMap;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;

use keyshift_proxy::metrics::MetricsConfig;
use support::{wait_for, Setup, PATIENCE};

/// A request frame: header v1 (key, version, correlation id, client id), or v2 when
/// `flexible` (an empty tagged-field section after it), then `body`.
fn request(key: i16, version: i16, correlation_id: i32, flexible: bool, body: &[u8]) -> Vec<u8> {
    let client = b"newer-client";
    let mut b = Vec::new();
    b.extend_from_slice(&key.to_be_bytes());
    b.extend_from_slice(&version.to_be_bytes());
    b.extend_from_slice(&correlation_id.to_be_bytes());
    b.extend_from_slice(&(client.len() as i16).to_be_bytes());
    b.extend_from_slice(client);
    if flexible {
        b.push(0);
    }
    b.extend_from_slice(body);
    let mut f = (b.len() as i32).to_be_bytes().to_vec();
    f.extend_from_slice(&b);
    f
}

fn connect(addr: &str) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    s
}

/// The next response frame on `s` (length prefix included), `None` if the peer closed.
fn response(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut len = [0u8; 4];
    match s.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::UnexpectedEof => return None,
        Err(e) if e.kind() == ErrorKind::ConnectionReset => return None,
        Err(e) => panic!("no response within {PATIENCE:?}: {e}"),
    }
    let mut frame = len.to_vec();
    frame.resize(4 + i32::from_be_bytes(len) as usize, 0);
    s.read_exact(&mut frame[4..]).expect("response body");
    Some(frame)
}

/// The Prometheus samples of `keyshift_proxy_opaque_requests_total`, parsed back from the
/// text exposition: (api_key, api, reason) → count.
fn opaque_counts(setup: &Setup) -> BTreeMap<(String, String, String), f64> {
    let mut registry = prometheus_client::registry::Registry::default();
    setup.metrics.register(&mut registry);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    text.lines()
        .filter_map(|l| l.strip_prefix("keyshift_proxy_opaque_requests_total{"))
        .map(|l| {
            let (labels, value) = l.rsplit_once("} ").expect("labels and value");
            let label = |name: &str| {
                labels
                    .split(',')
                    .find_map(|kv| kv.strip_prefix(&format!("{name}=\"")))
                    .and_then(|v| v.strip_suffix('"'))
                    .unwrap_or_else(|| panic!("no {name} in {l}"))
                    .to_owned()
            };
            (
                (label("api_key"), label("api"), label("reason")),
                value.parse().expect("a number"),
            )
        })
        .collect()
}

#[test]
fn undecodable_requests_are_relayed_and_answered_as_the_broker_answers_them() {
    let setup = Setup::start(|_| {}, MetricsConfig::default());
    let proxy = setup.bootstrap();
    let broker = setup.broker.bootstrap_servers().to_owned();
    // Metadata v12+ body: topics (compact nullable array: null), allow_auto_topic_creation,
    // include_topic_authorized_operations, no tagged fields.
    let metadata_body = [0u8, 0, 0, 0];
    // ApiVersions v3+ body: client software name and version (compact strings), no tags.
    let api_versions_body = [2u8, b'k', 2, b'1', 0];
    let cases: [(&str, Vec<u8>); 3] = [
        ("Metadata v14", request(3, 14, 7, true, &metadata_body)),
        (
            "ApiVersions v5",
            request(18, 5, 8, true, &api_versions_body),
        ),
        ("Metadata v-1", request(3, -1, 9, false, &metadata_body)),
    ];
    // A request the codec decodes, sent before each case on the same connection (so the
    // stream is recognised as Kafka from its first frame: a negative version as the very
    // first bytes would be relayed as non-Kafka traffic) and again after it.
    let decodable = |correlation_id: i32| request(18, 0, correlation_id, false, &[]);
    let answered = |s: &mut TcpStream, name: &str, correlation_id: i32| {
        let r = response(s).unwrap_or_else(|| panic!("{name}: connection closed"));
        assert_eq!(
            &r[4..8],
            &correlation_id.to_be_bytes(),
            "{name}: correlation id"
        );
        assert_eq!(&r[8..10], &[0, 0], "{name}: ApiVersions error code");
    };

    for (name, frame) in &cases {
        let mut direct = connect(&broker);
        direct.write_all(frame).unwrap();
        let expected = response(&mut direct)
            .unwrap_or_else(|| panic!("{name}: the broker itself does not answer"));

        let mut through = connect(&proxy);
        through.write_all(&decodable(99)).unwrap();
        answered(&mut through, name, 99);
        through.write_all(frame).unwrap();
        through.write_all(&decodable(100)).unwrap();
        let got = response(&mut through)
            .unwrap_or_else(|| panic!("{name}: the proxy closed the connection"));
        assert_eq!(got, expected, "{name}: relayed byte for byte");
        answered(&mut through, name, 100);
    }

    // An API key neither the codec nor tansu knows: the broker closes a direct connection,
    // and through the proxy it is the broker that closes it, after the proxy relayed it.
    let unknown = request(999, 0, 11, false, &[]);
    let mut direct = connect(&broker);
    direct.write_all(&unknown).unwrap();
    assert_eq!(response(&mut direct), None, "tansu answers API key 999 now");
    let mut through = connect(&proxy);
    through.write_all(&decodable(99)).unwrap();
    answered(&mut through, "before API key 999", 99);
    through.write_all(&unknown).unwrap();
    assert_eq!(response(&mut through), None);

    let counts = wait_for("the unknown API key to be counted", || {
        let c = opaque_counts(&setup);
        c.contains_key(&("999".into(), "Unknown".into(), "unknown_api_key".into()))
            .then_some(c)
    });
    let want: BTreeMap<(String, String, String), f64> = [
        (("18", "ApiVersions", "unsupported_version"), 1.0),
        (("3", "Metadata", "unsupported_version"), 2.0),
        (("999", "Unknown", "unknown_api_key"), 1.0),
    ]
    .into_iter()
    .map(|((k, a, r), n)| ((k.to_owned(), a.to_owned(), r.to_owned()), n))
    .collect();
    assert_eq!(counts, want);
    // The proxy half-closes the client's side before it reports the close: wait for it.
    let closed = wait_for("the broker's close to be reported", || {
        let closed = setup.metrics.snapshot().connections.closed;
        closed
            .iter()
            .any(|c| c.name == "upstream_closed")
            .then_some(closed)
    });
    assert!(
        !closed.iter().any(|c| c.name == "unknown_api_key"),
        "the proxy refused a frame itself: {closed:?}"
    );
    assert!(
        closed
            .iter()
            .any(|c| c.name == "upstream_closed" && c.count == 1),
        "{closed:?}"
    );
}
