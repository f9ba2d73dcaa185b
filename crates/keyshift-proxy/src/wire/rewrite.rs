//! Broker addresses in responses, swapped for proxy listeners so that clients reach every
//! broker through the proxy: Metadata brokers, FindCoordinator (v0–3 single coordinator and
//! v4+ batched coordinators), DescribeCluster brokers, and the leader hints (`node_endpoints`)
//! of Produce v10+ and Fetch v16+ responses.

use kafka_protocol::messages::ResponseKind;
use kafka_protocol::protocol::StrBytes;

/// Maps a broker's advertised host and port to the listener clients should use instead.
pub type AddressMap<'a> = dyn FnMut(&str, i32) -> Option<(String, i32)> + 'a;

/// Swaps every broker address in `body` through `map` (advertised host and port → the
/// listener's host and port); `map` returning `None` leaves that address alone. Returns whether
/// anything changed (the frame must then be re-encoded).
pub fn rewrite_addresses(body: &mut ResponseKind, map: &mut AddressMap<'_>) -> bool {
    let mut changed = false;
    let mut swap = |host: &mut StrBytes, port: &mut i32| {
        if host.is_empty() {
            return;
        }
        if let Some((h, p)) = map(host.as_str(), *port) {
            if h != host.as_str() || p != *port {
                *host = StrBytes::from_string(h);
                *port = p;
                changed = true;
            }
        }
    };
    match body {
        ResponseKind::Metadata(r) => {
            for b in &mut r.brokers {
                swap(&mut b.host, &mut b.port);
            }
        }
        ResponseKind::FindCoordinator(r) => {
            if r.error_code == 0 && r.node_id.0 >= 0 {
                swap(&mut r.host, &mut r.port);
            }
            for c in &mut r.coordinators {
                if c.error_code == 0 && c.node_id.0 >= 0 {
                    swap(&mut c.host, &mut c.port);
                }
            }
        }
        ResponseKind::DescribeCluster(r) => {
            for b in &mut r.brokers {
                swap(&mut b.host, &mut b.port);
            }
        }
        ResponseKind::Produce(r) => {
            for n in &mut r.node_endpoints {
                swap(&mut n.host, &mut n.port);
            }
        }
        ResponseKind::Fetch(r) => {
            for n in &mut r.node_endpoints {
                swap(&mut n.host, &mut n.port);
            }
        }
        _ => {}
    }
    changed
}

/// Whether responses of this kind may carry broker addresses (so they must be decoded even
/// when nothing else needs them).
pub fn may_carry_addresses(body: &ResponseKind) -> bool {
    matches!(
        body,
        ResponseKind::Metadata(_)
            | ResponseKind::FindCoordinator(_)
            | ResponseKind::DescribeCluster(_)
            | ResponseKind::Produce(_)
            | ResponseKind::Fetch(_)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::codec::{decode_response, encode_response};
    use kafka_protocol::messages::find_coordinator_response::Coordinator;
    use kafka_protocol::messages::metadata_response::MetadataResponseBroker;
    use kafka_protocol::messages::{
        ApiKey, BrokerId, FindCoordinatorResponse, MetadataResponse, ResponseHeader,
    };

    fn map(host: &str, port: i32) -> Option<(String, i32)> {
        match (host, port) {
            ("broker-1", 9092) => Some(("127.0.0.1".to_string(), 19092)),
            ("broker-2", 9092) => Some(("127.0.0.1".to_string(), 19093)),
            _ => None,
        }
    }

    #[test]
    fn metadata_brokers_every_version() {
        let mut r = MetadataResponse::default();
        for (id, host) in [(1, "broker-1"), (2, "broker-2")] {
            let mut b = MetadataResponseBroker::default();
            b.node_id = BrokerId(id);
            b.host = StrBytes::from_static_str(host);
            b.port = 9092;
            r.brokers.push(b);
        }
        let range = ApiKey::Metadata.valid_versions();
        for v in range.min..=range.max {
            let mut body = ResponseKind::Metadata(r.clone());
            assert!(rewrite_addresses(&mut body, &mut map));
            let frame =
                encode_response(&ResponseHeader::default(), &body, ApiKey::Metadata, v).unwrap();
            let (_, back) = decode_response(&frame, ApiKey::Metadata, v)
                .unwrap()
                .unwrap();
            let ResponseKind::Metadata(back) = back else {
                panic!("not metadata")
            };
            let addrs: Vec<_> = back
                .brokers
                .iter()
                .map(|b| (b.host.to_string(), b.port))
                .collect();
            assert_eq!(
                addrs,
                vec![
                    ("127.0.0.1".to_string(), 19092),
                    ("127.0.0.1".to_string(), 19093)
                ],
                "v{v}"
            );
        }
    }

    #[test]
    fn find_coordinator_single_and_batched() {
        let range = ApiKey::FindCoordinator.valid_versions();
        for v in range.min..=range.max {
            let mut r = FindCoordinatorResponse::default();
            if v < 4 {
                r.node_id = BrokerId(1);
                r.host = StrBytes::from_static_str("broker-1");
                r.port = 9092;
            } else {
                for (key, host) in [("g1", "broker-2"), ("g2", "broker-1")] {
                    let mut c = Coordinator::default();
                    c.key = StrBytes::from_static_str(key);
                    c.node_id = BrokerId(1);
                    c.host = StrBytes::from_static_str(host);
                    c.port = 9092;
                    r.coordinators.push(c);
                }
                // An errored entry keeps its (empty) address.
                let mut c = Coordinator::default();
                c.error_code = 15;
                c.node_id = BrokerId(-1);
                r.coordinators.push(c);
            }
            let mut body = ResponseKind::FindCoordinator(r);
            assert!(rewrite_addresses(&mut body, &mut map), "v{v}");
            let frame = encode_response(
                &ResponseHeader::default(),
                &body,
                ApiKey::FindCoordinator,
                v,
            )
            .unwrap();
            let (_, back) = decode_response(&frame, ApiKey::FindCoordinator, v)
                .unwrap()
                .unwrap();
            let ResponseKind::FindCoordinator(back) = back else {
                panic!("not find coordinator")
            };
            if v < 4 {
                assert_eq!((back.host.as_str(), back.port), ("127.0.0.1", 19092));
            } else {
                assert_eq!(back.coordinators[0].port, 19093);
                assert_eq!(back.coordinators[1].port, 19092);
                assert_eq!(back.coordinators[2].host.as_str(), "");
            }
        }
    }

    #[test]
    fn describe_cluster_brokers_every_version() {
        use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
        use kafka_protocol::messages::DescribeClusterResponse;
        let range = ApiKey::DescribeCluster.valid_versions();
        for v in range.min..=range.max {
            let mut r = DescribeClusterResponse::default();
            let mut b = DescribeClusterBroker::default();
            b.broker_id = BrokerId(2);
            b.host = StrBytes::from_static_str("broker-2");
            b.port = 9092;
            r.brokers.push(b);
            let mut body = ResponseKind::DescribeCluster(r);
            assert!(rewrite_addresses(&mut body, &mut map), "v{v}");
            let frame = encode_response(
                &ResponseHeader::default(),
                &body,
                ApiKey::DescribeCluster,
                v,
            )
            .unwrap();
            let (_, back) = decode_response(&frame, ApiKey::DescribeCluster, v)
                .unwrap()
                .unwrap();
            let ResponseKind::DescribeCluster(back) = back else {
                panic!("not describe cluster")
            };
            assert_eq!(
                (back.brokers[0].host.as_str(), back.brokers[0].port),
                ("127.0.0.1", 19093),
                "v{v}"
            );
        }
    }

    #[test]
    fn unknown_broker_is_left_alone() {
        let mut r = MetadataResponse::default();
        let mut b = MetadataResponseBroker::default();
        b.host = StrBytes::from_static_str("elsewhere");
        b.port = 1;
        r.brokers.push(b);
        let mut body = ResponseKind::Metadata(r);
        assert!(!rewrite_addresses(&mut body, &mut map));
    }
}
