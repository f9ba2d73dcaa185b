//! The targeted generator: the seed's exact key table, its rotation, and general shapes.

use keyshift_core::hash::Hasher;
use keyshift_core::workload::{key_name, KeyDist, Targeted};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// `partitionKeyMap` as hard-coded in the seed (MSrvComm/SLOPS, SLOPSClient/cmd/main.go).
const SEED_TABLE: [&[u64]; 3] = [
    &[3, 18, 25, 34, 11, 26, 28, 33, 39, 10, 27, 29, 32, 38],
    &[4, 13, 20, 31, 5, 12, 21, 30, 6, 8, 15, 22],
    &[7, 9, 14, 23, 0, 17, 37, 1, 16, 36, 2, 19, 24, 35],
];

#[test]
fn seed_shape_reproduces_the_seed_table() {
    let t = Targeted::seed();
    let sets: Vec<&[u64]> = t.sets().iter().map(Vec::as_slice).collect();
    assert_eq!(sets, SEED_TABLE);
    assert_eq!(t.partition_ranges(), &[(0, 3), (3, 6), (6, 10)]);
    assert_eq!(t.period(), 3000);
}

#[test]
fn rotation_follows_the_seed_counter() {
    // The seed bumps the set when count % 3000 == 0 *before* sending, starting at set 0: so
    // messages 0..3000 come from set 1, 3000..6000 from set 2, 6000..9000 from set 0, ...
    let mut t = Targeted::seed();
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    for block in 0..7u64 {
        let want_set = ((block + 1) % 3) as usize;
        for i in 0..3000 {
            assert_eq!(t.next_set(), want_set, "block {block}, message {i}");
            let k = t.sample(&mut rng);
            assert!(
                SEED_TABLE[want_set].contains(&k),
                "block {block}: key {k} not in set {want_set}"
            );
        }
    }
}

#[test]
fn keys_land_only_on_the_active_partitions_and_cover_them() {
    for hasher in [Hasher::Murmur2, Hasher::Fnv1a] {
        let partitions = 12;
        let mut t = Targeted::with_shape(hasher, partitions, 500, 3, 100).unwrap();
        let ranges = t.partition_ranges().to_vec();
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        for block in 0..6usize {
            let (lo, hi) = ranges[(block + 1) % 3];
            let mut seen = vec![false; partitions as usize];
            for _ in 0..100 {
                let k = t.sample(&mut rng);
                let p = hasher.partition(key_name(k).as_bytes(), partitions);
                assert!(
                    (lo..hi).contains(&p),
                    "{hasher:?} block {block}: partition {p} outside {lo}..{hi}"
                );
                seen[p as usize] = true;
            }
            assert!(
                (lo..hi).all(|p| seen[p as usize]),
                "{hasher:?} block {block}: a partition of {lo}..{hi} got no load"
            );
        }
    }
}

#[test]
fn picks_are_uniform_within_the_set() {
    // 30 000 draws from set 1 of the seed (12 keys): each key expects 2500; a 6-sigma band
    // (sd ≈ 48) catches a biased index.
    let mut t = Targeted::with_shape(Hasher::Fnv1a, 10, 40, 3, 1_000_000).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let mut counts = std::collections::BTreeMap::new();
    for _ in 0..30_000 {
        *counts.entry(t.sample(&mut rng)).or_insert(0u32) += 1;
    }
    assert_eq!(counts.keys().copied().collect::<Vec<_>>(), {
        let mut v = SEED_TABLE[1].to_vec();
        v.sort_unstable();
        v
    });
    for (k, c) in counts {
        assert!((2210..=2790).contains(&c), "key {k}: {c} draws");
    }
}

#[test]
fn bad_shapes_are_named() {
    let err = |r: Result<Targeted, keyshift_core::ParamError>| r.unwrap_err().name;
    assert_eq!(err(Targeted::new(Hasher::Murmur2, 2, 40)), "partitions");
    assert_eq!(err(Targeted::new(Hasher::Murmur2, 10, 0)), "keys");
    // Two keys cannot cover three partition sets.
    assert_eq!(err(Targeted::new(Hasher::Murmur2, 30, 2)), "keys");
    assert_eq!(
        err(Targeted::with_shape(Hasher::Murmur2, 10, 40, 0, 3000)),
        "targeted-sets"
    );
    assert_eq!(
        err(Targeted::with_shape(Hasher::Murmur2, 10, 40, 3, 0)),
        "targeted-period"
    );
}

#[test]
fn key_dist_drives_the_targeted_state() {
    let mut d = KeyDist::Targeted(Targeted::seed());
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let first: Vec<u64> = (0..3000).map(|_| d.sample(&mut rng)).collect();
    let next = d.sample(&mut rng);
    assert!(first.iter().all(|k| SEED_TABLE[1].contains(k)));
    assert!(
        SEED_TABLE[2].contains(&next),
        "message 3000 must come from set 2, got {next}"
    );
    assert_eq!(d.key_space(), 40);
}
