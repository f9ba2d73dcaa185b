//! The fence and route header codec: the documented test vector, round trips, and clear errors
//! for every malformed input; the same for the growth epoch of the route state.

use keyshift_core::protocol::epoch::Epoch;
use keyshift_core::protocol::{
    is_fence, FenceHeader, HeaderError, RouteHeader, FENCE_HEADER, FENCE_VALUE, ROUTE_HEADER,
};
use proptest::prelude::*;

#[test]
fn documented_test_vectors() {
    let route = RouteHeader {
        set_index: 3,
        from_partition: 7,
        fence_offset: 300,
    };
    assert_eq!(route.encode(), [0x01, 0x03, 0x07, 0xAC, 0x02]);
    assert_eq!(
        RouteHeader::decode(&[0x01, 0x03, 0x07, 0xAC, 0x02]),
        Ok(route)
    );

    let fence = FenceHeader {
        set_index: 3,
        to_partition: 7,
    };
    assert_eq!(fence.encode(), [0x01, 0x03, 0x07]);
    assert_eq!(FenceHeader::decode(&[0x01, 0x03, 0x07]), Ok(fence));
}

#[test]
fn encode_into_appends() {
    let mut buf = vec![0xFF];
    RouteHeader::new(1, 2, 3).unwrap().encode_into(&mut buf);
    FenceHeader {
        set_index: 4,
        to_partition: 5,
    }
    .encode_into(&mut buf);
    assert_eq!(buf, [0xFF, 0x01, 0x01, 0x02, 0x03, 0x01, 0x04, 0x05]);
}

#[test]
fn malformed_input_gives_named_errors() {
    assert_eq!(
        RouteHeader::decode(&[]),
        Err(HeaderError::Empty {
            header: ROUTE_HEADER
        })
    );
    assert_eq!(
        FenceHeader::decode(&[2, 0, 0]),
        Err(HeaderError::UnknownVersion {
            header: FENCE_HEADER,
            version: 2
        })
    );
    assert_eq!(
        RouteHeader::decode(&[1, 3, 7]),
        Err(HeaderError::Truncated {
            header: ROUTE_HEADER,
            field: "fence_offset"
        })
    );
    assert_eq!(
        RouteHeader::decode(&[1, 3, 7, 0xAC]),
        Err(HeaderError::Truncated {
            header: ROUTE_HEADER,
            field: "fence_offset"
        })
    );
    assert_eq!(
        FenceHeader::decode(&[1, 3, 7, 0]),
        Err(HeaderError::TrailingBytes {
            header: FENCE_HEADER,
            extra: 1
        })
    );
    // u64::MAX as a fence offset is a negative i64.
    let mut neg = vec![1, 0, 0];
    neg.extend([0xFF; 9]);
    neg.push(0x01);
    assert_eq!(
        RouteHeader::decode(&neg),
        Err(HeaderError::NegativeOffset(-1))
    );
    assert_eq!(
        RouteHeader::new(0, 0, -5),
        Err(HeaderError::NegativeOffset(-5))
    );
    // Eleven varint bytes cannot be a u64.
    let mut long = vec![1, 0, 0];
    long.extend([0x80; 10]);
    long.push(0);
    assert_eq!(
        RouteHeader::decode(&long),
        Err(HeaderError::Overflow {
            header: ROUTE_HEADER,
            field: "fence_offset"
        })
    );

    let msg = HeaderError::UnknownVersion {
        header: ROUTE_HEADER,
        version: 9,
    }
    .to_string();
    assert!(msg.contains("keyshift-route") && msg.contains('9'), "{msg}");
    let msg = HeaderError::Truncated {
        header: FENCE_HEADER,
        field: "to_partition",
    }
    .to_string();
    assert!(
        msg.contains("keyshift-fence") && msg.contains("to_partition"),
        "{msg}"
    );
}

#[test]
fn typical_route_header_is_compact() {
    let h = RouteHeader::new(2, 11, 1_500_000).unwrap();
    assert_eq!(h.encode().len(), 6);
}

fn route() -> impl Strategy<Value = RouteHeader> {
    (any::<u32>(), any::<u32>(), 0..=i64::MAX).prop_map(|(s, p, f)| RouteHeader {
        set_index: s,
        from_partition: p,
        fence_offset: f,
    })
}

fn fence() -> impl Strategy<Value = FenceHeader> {
    (any::<u32>(), any::<u32>()).prop_map(|(s, p)| FenceHeader {
        set_index: s,
        to_partition: p,
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4000, ..ProptestConfig::default() })]

    #[test]
    fn route_round_trips(h in route()) {
        let bytes = h.encode();
        prop_assert!(bytes.len() <= 21);
        prop_assert_eq!(RouteHeader::decode(&bytes), Ok(h));
    }

    #[test]
    fn fence_round_trips(h in fence()) {
        prop_assert_eq!(FenceHeader::decode(&h.encode()), Ok(h));
    }

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..24)) {
        let r = RouteHeader::decode(&bytes);
        let f = FenceHeader::decode(&bytes);
        // Whatever decodes re-encodes to a value that decodes the same.
        if let Ok(h) = r {
            prop_assert_eq!(RouteHeader::decode(&h.encode()), Ok(h));
        }
        if let Ok(h) = f {
            prop_assert_eq!(FenceHeader::decode(&h.encode()), Ok(h));
        }
    }

    #[test]
    fn random_bytes_never_panic_the_epoch_decoder(
        bytes in proptest::collection::vec(any::<u8>(), 0..40),
    ) {
        if let Ok(e) = Epoch::decode(&bytes) {
            prop_assert_eq!(Epoch::decode(&e.encode()), Ok(e));
        }
    }

    #[test]
    fn epochs_round_trip_and_every_strict_prefix_is_refused(
        from in 1u32..40,
        more in 1u32..40,
        fences in proptest::collection::vec(0i64..i64::MAX, 40),
        earlier in proptest::collection::vec(1u32..1000, 0..4),
    ) {
        let e = Epoch {
            number: earlier.len() as u32 + 1,
            from,
            to: from + more,
            fences: fences[..from as usize].to_vec(),
            earlier,
        };
        let bytes = e.encode();
        prop_assert_eq!(Epoch::decode(&bytes), Ok(e));
        for cut in 0..bytes.len() {
            prop_assert!(Epoch::decode(&bytes[..cut]).is_err(), "prefix of {} bytes", cut);
        }
    }

    #[test]
    fn every_strict_prefix_is_truncated(r in route(), f in fence()) {
        let bytes = r.encode();
        prop_assert_eq!(RouteHeader::decode(&bytes[..0]), Err(HeaderError::Empty { header: ROUTE_HEADER }));
        for n in 1..bytes.len() {
            let is_truncated = matches!(RouteHeader::decode(&bytes[..n]), Err(HeaderError::Truncated { header: ROUTE_HEADER, .. }));
            prop_assert!(is_truncated, "prefix {} of {:?}", n, bytes);
        }
        let bytes = f.encode();
        for n in 1..bytes.len() {
            let is_truncated = matches!(FenceHeader::decode(&bytes[..n]), Err(HeaderError::Truncated { header: FENCE_HEADER, .. }));
            prop_assert!(is_truncated, "prefix {} of {:?}", n, bytes);
        }
    }

    #[test]
    fn appended_bytes_are_trailing(r in route(), extra in proptest::collection::vec(any::<u8>(), 1..4)) {
        let mut bytes = r.encode();
        bytes.extend_from_slice(&extra);
        prop_assert_eq!(RouteHeader::decode(&bytes), Err(HeaderError::TrailingBytes { header: ROUTE_HEADER, extra: extra.len() }));
    }
}

#[test]
fn fence_value_is_the_documented_marker_and_recognised_without_headers() {
    // The bytes a plain consumer sees as a fence's value (documented in the README's limits).
    assert_eq!(
        FENCE_VALUE.as_slice(),
        &[
            0x00, b'k', b'e', b'y', b's', b'h', b'i', b'f', b't', b'-', b'f', b'e', b'n', b'c',
            b'e', 0x01
        ]
    );
    assert!(
        is_fence(false, Some(FENCE_VALUE.as_slice())),
        "marker alone"
    );
    assert!(
        is_fence(true, None),
        "header alone (fences written before the marker)"
    );
    assert!(is_fence(true, Some(b"")), "header with the old empty value");
    assert!(
        !is_fence(false, Some(b"")),
        "an application's empty value is not a fence"
    );
    assert!(!is_fence(false, None), "nor is a null value");
    assert!(
        !is_fence(false, Some(&FENCE_VALUE[..15])),
        "a prefix is not the marker"
    );
    let mut longer = FENCE_VALUE.to_vec();
    longer.push(0);
    assert!(!is_fence(false, Some(&longer)), "nor is a longer value");
}
