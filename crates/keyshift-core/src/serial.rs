//! Per-key serial processing, checked: no key is processed by two workers at the same time.
//!
//! Kafka's hash partitioning gives each key one partition, hence one consumer and one total
//! order: its records are processed one after another. A fenced migration must keep that
//! (the new partition's owner starts on the key only after the old partition is committed past
//! the fence, and a commit only passes records that were processed), and so must any way of
//! running several producers. Sequence numbers alone do not show it: two workers could process
//! records 7 and 8 of a key at once, finishing in order by luck.
//!
//! A [`SerialCheck`] shared by every worker of a group (in one process, behind a mutex) is told
//! when a worker starts and finishes a record of a key ([`SerialCheck::begin`],
//! [`SerialCheck::end`]); a start while another worker is inside a record of the same key is an
//! overlap, counted and remembered. The check is a witness, not a lock: it never makes a worker
//! wait. Keys that never overlap cost one map entry while a record of theirs is in progress.

use rustc_hash::FxHashMap;

/// Two workers inside records of one key at the same time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Overlap {
    /// The key (lossy UTF-8).
    pub key: String,
    /// The worker already processing it.
    pub holder: u64,
    /// The worker that started on it meanwhile.
    pub intruder: u64,
}

/// Witness of per-key serial processing across workers; see the module docs.
#[derive(Debug, Default)]
pub struct SerialCheck {
    /// Workers inside a record of the key now, in the order they started.
    busy: FxHashMap<Box<[u8]>, Vec<u64>>,
    overlaps: u64,
    first: Option<Overlap>,
}

impl SerialCheck {
    /// A check that has seen nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// `worker` starts processing a record of `key`. Returns false (and counts an overlap)
    /// when another worker is inside a record of `key` now.
    pub fn begin(&mut self, key: &[u8], worker: u64) -> bool {
        let inside = self.busy.entry(key.into()).or_default();
        let other = inside.iter().copied().find(|&w| w != worker);
        inside.push(worker);
        match other {
            None => true,
            Some(holder) => {
                self.overlaps += 1;
                self.first.get_or_insert_with(|| Overlap {
                    key: String::from_utf8_lossy(key).into_owned(),
                    holder,
                    intruder: worker,
                });
                false
            }
        }
    }

    /// `worker` finished the record of `key` it began. An end without a begin is ignored.
    pub fn end(&mut self, key: &[u8], worker: u64) {
        if let Some(inside) = self.busy.get_mut(key) {
            if let Some(i) = inside.iter().position(|&w| w == worker) {
                inside.remove(i);
            }
            if inside.is_empty() {
                self.busy.remove(key);
            }
        }
    }

    /// Starts that found another worker inside the same key, so far.
    pub fn overlaps(&self) -> u64 {
        self.overlaps
    }

    /// The first overlap seen, for the report.
    pub fn first_overlap(&self) -> Option<&Overlap> {
        self.first.as_ref()
    }

    /// Keys with a record in progress now.
    pub fn keys_in_progress(&self) -> usize {
        self.busy.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_worker_after_another_is_serial() {
        let mut c = SerialCheck::new();
        assert!(c.begin(b"k", 1));
        c.end(b"k", 1);
        assert!(
            c.begin(b"k", 2),
            "the key moved to worker 2 after 1 finished"
        );
        assert!(c.begin(b"other", 1), "other keys are independent");
        c.end(b"k", 2);
        c.end(b"other", 1);
        assert_eq!(c.overlaps(), 0);
        assert_eq!(c.keys_in_progress(), 0, "finished keys are forgotten");
    }

    #[test]
    fn a_second_worker_inside_the_same_key_is_an_overlap() {
        let mut c = SerialCheck::new();
        assert!(c.begin(b"k", 1));
        assert!(!c.begin(b"k", 2));
        assert!(!c.begin(b"k", 3));
        c.end(b"k", 1);
        assert!(!c.begin(b"k", 1), "2 and 3 are still inside");
        c.end(b"k", 2);
        c.end(b"k", 3);
        c.end(b"k", 1);
        assert!(c.begin(b"k", 4));
        assert_eq!(c.overlaps(), 3);
        assert_eq!(
            c.first_overlap(),
            Some(&Overlap {
                key: "k".into(),
                holder: 1,
                intruder: 2
            })
        );
    }

    #[test]
    fn ends_without_a_begin_are_ignored() {
        let mut c = SerialCheck::new();
        c.end(b"k", 1);
        assert!(c.begin(b"k", 1));
        c.end(b"k", 2);
        assert!(!c.begin(b"k", 2), "worker 1 is still inside");
    }
}
