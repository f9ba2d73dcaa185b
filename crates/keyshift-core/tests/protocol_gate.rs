//! The order gate on hand-written scenarios: parking, barriers passed only on committed
//! progress, chains, fences, commit offsets, duplicates, offsets below the start, unknown
//! starts, keys parked too long, null keys and revocation.

use keyshift_core::protocol::{GateRecord, Offered, OrderGate, Released, RouteHeader};

const A: u32 = 0;
const B: u32 = 1;
const C: u32 = 2;

fn rec(partition: u32, offset: i64, key: &str) -> GateRecord {
    GateRecord {
        partition,
        offset,
        key: Some(key.as_bytes().into()),
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
fn owned_barrier_partition_waits_for_its_own_commit_and_the_fence_is_consumed() {
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
    assert!(
        g.poll().is_none(),
        "processed past the fence is not enough: A's progress is not committed yet"
    );
    g.observe_committed(A, 3);
    assert_eq!(drain(&mut g), [(B, 0)]);
}

/// Issue 10, item 2: if the owner of A released k on B on its own processed prefix of A and
/// then lost that progress (the commit before a revoke failed), the next owner of A would
/// replay k's old records after k's new ones were processed on B.
#[test]
fn release_waits_for_committed_progress_not_local_progress() {
    let mut g = OrderGate::new();
    g.assign(A, 0);
    g.assign(B, 0);
    g.offer(rec(A, 0, "k"));
    g.offer(fence(A, 1, "k"));
    g.offer(routed(B, 0, "k", A, 1));
    assert_eq!(drain(&mut g), [(A, 0)]);
    assert!(g.processed(A, 0));
    assert_eq!(g.poll_fence().map(|f| f.offset), Some(1));
    assert_eq!(g.commit_offset(A), Some(2));
    assert!(g.poll().is_none(), "k on B waits for A's commit");
    assert_eq!(g.parked(), 1);
    // The commit of A fails and A is revoked: its progress is lost, not a barrier.
    g.revoke(A);
    assert!(g.poll().is_none());
    assert_eq!(g.barriers(), [(A, 1)], "now polled through OffsetFetch");
    g.observe_committed(A, 1);
    assert!(
        g.poll().is_none(),
        "the group's offset of A is still at the fence"
    );
    g.observe_committed(A, 2);
    assert_eq!(drain(&mut g), [(B, 0)]);
}

/// The stall CI saw (issue 11's restart test): a fence on owned A passes while an earlier
/// record of another key still holds A's commit offset below it, so the prompt commit after the
/// fence does not carry A past it; the progress that does comes with no fence. The gate lists A
/// as an unconfirmed barrier until a commit past the fence is reported — a runtime whose
/// interval commits are never reported would otherwise park K on B forever.
#[test]
fn progress_past_a_passed_fence_is_listed_until_its_commit_is_reported() {
    let mut g = OrderGate::new();
    g.assign(A, 0);
    g.assign(B, 0);
    // "y" at A/0 waits for C (not owned); K's fence at A/1 moves K to B.
    assert_eq!(g.offer(routed(A, 0, "y", C, 0)), Offered::Accepted);
    assert_eq!(g.offer(fence(A, 1, "K")), Offered::Accepted);
    assert_eq!(
        g.poll_fence().map(|f| f.offset),
        Some(1),
        "the fence passed"
    );
    assert_eq!(
        g.commit_offset(A),
        Some(0),
        "y still holds A's commit offset"
    );
    assert_eq!(g.offer(routed(B, 0, "K", A, 1)), Offered::Accepted);
    assert!(drain(&mut g).is_empty(), "K parked on B");
    assert!(
        g.unconfirmed_barriers().is_empty(),
        "A's own progress is not past the fence yet"
    );

    g.observe_committed(C, 1);
    assert_eq!(drain(&mut g), [(A, 0)]);
    assert!(g.processed(A, 0));
    assert_eq!(g.commit_offset(A), Some(2));
    assert!(g.poll_fence().is_none(), "no fence announces this progress");
    assert_eq!(g.unconfirmed_barriers(), [A], "commit A synchronously");
    assert!(
        drain(&mut g).is_empty(),
        "K waits for the commit, not for local progress"
    );

    g.observe_committed(A, 2);
    assert!(g.unconfirmed_barriers().is_empty());
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
    assert_eq!(
        g.poll_fence().map(|f| (f.partition, f.offset)),
        Some((A, 1))
    );
    assert!(g.poll_fence().is_none(), "B's fence waits for A's commit");
    g.observe_committed(A, 2);
    assert_eq!(
        g.poll_fence().map(|f| (f.partition, f.offset)),
        Some((B, 0))
    );
    assert!(g.poll().is_none(), "C waits for B's commit");
    g.observe_committed(B, 1);
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
    assert_eq!(g.offer(rec(A, 5, "k")), Offered::Accepted);
    assert_eq!(g.offer(rec(A, 6, "k")), Offered::Accepted);
    assert_eq!(g.offer(rec(A, 6, "k")), Offered::Duplicate);
    assert_eq!(g.offer(rec(A, 5, "k")), Offered::Duplicate);
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
fn revoke_forgets_the_partition_and_its_uncommitted_progress() {
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
    // B comes back from its committed offset: A's processing was never committed, so the
    // fence is not known passed.
    g.assign(B, 0);
    g.offer(routed(B, 0, "k", A, 1));
    assert!(g.poll().is_none());
    assert_eq!(g.barriers(), [(A, 1)]);
    g.observe_committed(A, 2);
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

/// Issue 10, item 3: after the log lost the committed offset (truncation), the client restarts
/// below it; those records are reported, not dropped as duplicates.
#[test]
fn offers_below_the_start_offset_are_reported_not_taken_as_duplicates() {
    let mut g = OrderGate::new();
    g.assign(A, 5);
    assert_eq!(g.offer(rec(A, 3, "k")), Offered::BelowStart);
    assert_eq!(g.offer(rec(A, 4, "k")), Offered::BelowStart);
    assert_eq!((g.below_start(), g.duplicates()), (2, 0));
    assert_eq!(g.pending(), 0);
    assert_eq!(
        g.commit_offset(A),
        Some(5),
        "nothing below the start is committed"
    );
    assert_eq!(g.offer(rec(A, 5, "k")), Offered::Accepted);
    assert_eq!(g.offer(rec(A, 5, "k")), Offered::Duplicate);
    assert_eq!((g.below_start(), g.duplicates()), (2, 1));
}

/// Issue 10, item 4: with the group's committed offset unknown, nothing is committed until the
/// client's own start shows up as the first offer.
#[test]
fn unknown_start_commits_nothing_until_the_first_offer() {
    let mut g = OrderGate::new();
    g.assign_unknown_start(A);
    assert!(g.owns(A));
    assert_eq!(g.commit_offset(A), None);
    assert_eq!(g.offer(rec(A, 7, "k")), Offered::Accepted);
    assert_eq!(g.commit_offset(A), Some(7));
    assert_eq!(g.offer(rec(A, 6, "k")), Offered::BelowStart);
    assert_eq!(drain(&mut g), [(A, 7)]);
    assert!(g.processed(A, 7));
    assert_eq!(g.commit_offset(A), Some(8));
}

/// Issue 10, item 5: a parked key is named with its barrier; the caller may give up on it, which
/// releases its records as order exceptions; other keys never wait for it.
#[test]
fn parked_keys_are_listed_and_can_be_released_as_order_exceptions() {
    let mut g = OrderGate::new();
    g.assign(B, 0);
    g.offer(rec(B, 0, "x"));
    g.offer(routed(B, 1, "k", A, 9));
    g.offer(routed(B, 2, "k", A, 9));
    g.offer(rec(B, 3, "x"));
    assert_eq!(drain(&mut g), [(B, 0)]);
    assert!(g.processed(B, 0));
    assert_eq!(drain(&mut g), [(B, 3)], "x flows past the parked key");
    assert_eq!((g.parked(), g.parked_on(B), g.parked_on(A)), (2, 2, 0));
    let parked = g.parked_keys();
    assert_eq!(parked.len(), 1);
    let p = &parked[0];
    assert_eq!(
        (p.partition, &*p.key, p.barrier_partition, p.fence_offset),
        (B, &b"k"[..], A, 9)
    );
    assert_eq!((p.first_offset, p.records), (1, 2));

    assert!(!g.release_parked(B, b"x"), "x is not parked");
    assert!(g.release_parked(B, b"k"));
    assert!(!g.release_parked(B, b"k"), "no longer parked");
    assert_eq!((g.parked(), g.parked_on(B)), (0, 0));
    assert!(g.parked_keys().is_empty() && g.barriers().is_empty());
    let r = g.poll().unwrap();
    assert_eq!((r.offset, r.parked, r.forced), (1, true, true));
    assert!(g.processed(B, 1));
    // Later records of the same set follow without parking; a newer move parks again.
    g.offer(routed(B, 4, "k", A, 9));
    g.offer(routed(B, 5, "k", A, 12));
    let r = g.poll().unwrap();
    assert_eq!((r.offset, r.forced), (2, true));
    assert!(g.processed(B, 2));
    let r = g.poll().unwrap();
    assert_eq!((r.offset, r.parked, r.forced), (4, false, true));
    assert!(g.processed(B, 4));
    assert!(g.poll().is_none());
    assert_eq!(g.parked_keys()[0].fence_offset, 12);
    assert_eq!(g.order_exceptions(), 3);
    g.observe_committed(A, 13);
    let r = g.poll().unwrap();
    assert_eq!((r.offset, r.forced), (5, false));
    assert_eq!(g.order_exceptions(), 3);
}

fn null_key(partition: u32, offset: i64) -> GateRecord {
    GateRecord {
        key: None,
        ..rec(partition, offset, "")
    }
}

/// Issue 10, item 8: records without a key have no order to keep and are not the empty key.
#[test]
fn null_key_records_are_released_at_once_and_are_not_the_empty_key() {
    let mut g = OrderGate::new();
    g.assign(B, 0);
    // The empty key is a key like any other: it moved here and parks.
    g.offer(routed(B, 0, "", A, 4));
    g.offer(null_key(B, 1));
    g.offer(null_key(B, 2));
    g.offer(GateRecord {
        route: Some(RouteHeader::new(1, A, 4).unwrap()),
        ..null_key(B, 3)
    });
    let released: Vec<_> = std::iter::from_fn(|| g.poll())
        .map(|r| (r.offset, r.key, r.parked))
        .collect();
    assert_eq!(
        released,
        [(1, None, false), (2, None, false), (3, None, false)],
        "null keys flow, none waits for another or for the parked empty key"
    );
    assert_eq!(g.parked(), 1);
    assert_eq!(g.commit_offset(B), Some(0));
    assert!(g.processed(B, 2));
    assert!(!g.processed(B, 2), "already processed");
    assert!(g.processed(B, 3));
    assert!(g.processed(B, 1));
    assert_eq!(
        g.commit_offset(B),
        Some(0),
        "the parked empty key holds the commit"
    );
    g.observe_committed(A, 5);
    let r = g.poll().unwrap();
    assert_eq!((r.offset, r.key.as_deref()), (0, Some(&b""[..])));
    assert!(g.processed(B, 0));
    assert_eq!(g.commit_offset(B), Some(4));
}
