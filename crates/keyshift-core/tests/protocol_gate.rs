//! The order gate on hand-written scenarios: parking, local and observed barriers, chains,
//! fences, commit offsets, duplicates and revocation.

use keyshift_core::protocol::{GateRecord, Offered, OrderGate, Released, RouteHeader};

const A: u32 = 0;
const B: u32 = 1;
const C: u32 = 2;

fn rec(partition: u32, offset: i64, key: &str) -> GateRecord {
    GateRecord {
        partition,
        offset,
        key: key.as_bytes().into(),
        route: None,
        fence: false,
    }
}

fn routed(partition: u32, offset: i64, key: &str, from: u32, fence_offset: i64) -> GateRecord {
    GateRecord {
        route: Some(RouteHeader::new(1, from, fence_offset).unwrap()),
        ..rec(partition, offset, key)
    }
}

fn fence(partition: u32, offset: i64, key: &str) -> GateRecord {
    GateRecord {
        fence: true,
        ..rec(partition, offset, key)
    }
}

fn drain(g: &mut OrderGate) -> Vec<(u32, i64)> {
    std::iter::from_fn(|| g.poll())
        .map(|r: Released| (r.partition, r.offset))
        .collect()
}

#[test]
fn routed_record_parks_only_its_key_until_the_barrier_is_committed() {
    let mut g = OrderGate::new();
    g.assign(B, 0);
    assert_eq!(g.offer(routed(B, 0, "k", A, 5)), Offered::Accepted);
    assert_eq!(g.offer(rec(B, 1, "other")), Offered::Accepted);
    assert_eq!(g.offer(rec(B, 2, "k")), Offered::Accepted);
    assert_eq!(drain(&mut g), [(B, 1)], "only the other key flows");
    assert_eq!(g.parked(), 2);
    assert_eq!(g.barriers(), [(A, 5)]);
    assert!(g.processed(B, 1));
    assert_eq!(
        g.commit_offset(B),
        Some(0),
        "commit stays at the parked record"
    );

    g.observe_committed(A, 5);
    assert!(
        g.poll().is_none(),
        "committed 5 means the fence at 5 is not done"
    );
    g.observe_committed(A, 6);
    let r = g.poll().unwrap();
    assert_eq!((r.partition, r.offset, r.parked), (B, 0, true));
    assert!(
        g.poll().is_none(),
        "the next record of k waits for the first (per-key FIFO)"
    );
    assert!(g.processed(B, 0));
    let r = g.poll().unwrap();
    assert_eq!((r.offset, r.parked), (2, true));
    assert!(g.processed(B, 2));
    assert_eq!(g.commit_offset(B), Some(3));
    assert_eq!(g.parked(), 0);
    assert!(g.barriers().is_empty());
}

#[test]
fn owned_barrier_partition_is_checked_locally_and_the_fence_is_consumed() {
    let mut g = OrderGate::new();
    g.assign(A, 0);
    g.assign(B, 0);
    g.offer(rec(A, 0, "k"));
    g.offer(rec(A, 1, "x"));
    g.offer(fence(A, 2, "k"));
    g.offer(routed(B, 0, "k", A, 2));
    assert!(g.barriers().is_empty(), "A is owned: nothing to poll");
    assert_eq!(drain(&mut g), [(A, 0), (A, 1)]);
    assert!(g.processed(A, 0));
    // The fence passed k's queue on A, but x at offset 1 keeps A's prefix below the fence.
    let f = g.poll_fence().unwrap();
    assert_eq!((f.partition, f.offset, &*f.key), (A, 2, &b"k"[..]));
    assert!(g.poll().is_none());
    assert_eq!(g.commit_offset(A), Some(1));
    assert!(g.processed(A, 1));
    assert_eq!(g.commit_offset(A), Some(3));
    assert_eq!(drain(&mut g), [(B, 0)]);
}

#[test]
fn chain_a_b_c_holds_transitively_through_a_routed_fence() {
    // k moved A -> B -> C before any record of it reached B: B holds only the fence, which
    // carries the route of the set it closes.
    let mut g = OrderGate::new();
    for p in [A, B, C] {
        g.assign(p, 0);
    }
    g.offer(rec(A, 0, "k"));
    g.offer(fence(A, 1, "k"));
    g.offer(GateRecord {
        fence: true,
        ..routed(B, 0, "k", A, 1)
    });
    g.offer(routed(C, 0, "k", B, 0));
    assert_eq!(drain(&mut g), [(A, 0)]);
    assert_eq!(g.commit_offset(B), Some(0), "B's fence waits for A");
    assert!(g.processed(A, 0));
    let fences: Vec<_> = std::iter::from_fn(|| g.poll_fence())
        .map(|f| (f.partition, f.offset))
        .collect();
    assert_eq!(fences, [(A, 1), (B, 0)]);
    assert_eq!(drain(&mut g), [(C, 0)]);
}

#[test]
fn fence_waits_for_earlier_records_of_its_key() {
    let mut g = OrderGate::new();
    g.assign(A, 10);
    g.offer(rec(A, 10, "k"));
    g.offer(fence(A, 11, "k"));
    assert!(g.poll_fence().is_none());
    assert_eq!(drain(&mut g), [(A, 10)]);
    assert!(g.processed(A, 10));
    assert_eq!(g.poll_fence().map(|f| f.offset), Some(11));
    assert_eq!(g.commit_offset(A), Some(12));
}

#[test]
fn duplicates_unassigned_and_bogus_reports_are_ignored() {
    let mut g = OrderGate::new();
    assert_eq!(g.offer(rec(A, 0, "k")), Offered::Unassigned);
    g.assign(A, 5);
    assert_eq!(g.commit_offset(A), Some(5));
    assert_eq!(g.offer(rec(A, 4, "k")), Offered::Duplicate);
    assert_eq!(g.offer(rec(A, 5, "k")), Offered::Accepted);
    assert_eq!(g.offer(rec(A, 6, "k")), Offered::Accepted);
    assert_eq!(g.offer(rec(A, 6, "k")), Offered::Duplicate);
    assert_eq!(g.duplicates(), 2);
    assert!(!g.processed(A, 6), "not released yet");
    assert!(!g.processed(A, 99), "never offered");
    assert_eq!(drain(&mut g), [(A, 5)]);
    assert!(g.processed(A, 5));
    assert!(!g.processed(A, 5), "already processed");
    assert_eq!(g.pending(), 1);
}

#[test]
fn gaps_in_offsets_commit_past_the_last_offered() {
    let mut g = OrderGate::new();
    g.assign(A, 0);
    g.offer(rec(A, 3, "k"));
    g.offer(rec(A, 9, "j"));
    assert_eq!(g.commit_offset(A), Some(3));
    assert_eq!(drain(&mut g), [(A, 3), (A, 9)]);
    assert!(g.processed(A, 9));
    assert_eq!(g.commit_offset(A), Some(3));
    assert!(g.processed(A, 3));
    assert_eq!(g.commit_offset(A), Some(10));
}

#[test]
fn revoke_forgets_the_partition_but_keeps_what_was_processed_as_known_done() {
    let mut g = OrderGate::new();
    g.assign(A, 0);
    g.assign(B, 0);
    g.offer(rec(A, 0, "k"));
    g.offer(fence(A, 1, "k"));
    g.offer(routed(B, 0, "k", A, 1));
    g.offer(routed(B, 1, "k", A, 1));
    assert_eq!(drain(&mut g), [(A, 0)]);
    g.revoke(B);
    assert_eq!(g.parked(), 0);
    assert_eq!(g.commit_offset(B), None);
    assert!(g.processed(A, 0));
    assert!(g.poll().is_none(), "B's records left with B");
    g.revoke(A);
    assert_eq!(g.commit_offset(A), None);
    // B comes back from its committed offset: A's fence is known done from local processing.
    g.assign(B, 0);
    g.offer(routed(B, 0, "k", A, 1));
    assert_eq!(drain(&mut g), [(B, 0)]);
    assert!(g.barriers().is_empty());
}

#[test]
fn revoked_released_record_cannot_be_reported() {
    let mut g = OrderGate::new();
    g.assign(A, 0);
    g.offer(rec(A, 0, "k"));
    assert_eq!(drain(&mut g), [(A, 0)]);
    g.revoke(A);
    assert!(!g.processed(A, 0));
    g.assign(A, 0);
    assert_eq!(
        g.offer(rec(A, 0, "k")),
        Offered::Accepted,
        "redelivered after reassignment"
    );
    assert_eq!(drain(&mut g), [(A, 0)]);
}
