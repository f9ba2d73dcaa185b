//! A sudden hot key: from one arrival on, a share of all records carries a key never seen
//! before, the rest follow the configured key distribution.
//!
//! It models a new customer, a viral item or a misbehaving client appearing mid-run, the
//! disturbance a balancer must absorb without help from its history. [`HotKey`] says from which
//! arrival (by index) and with which share; [`super::Workload::with_hot_key`] applies it.
//!
//! Which arrivals carry the hot key is drawn from its own ChaCha stream ([`HOT_KEY_STREAM`]),
//! and the key distribution is only asked for the other arrivals, so those carry exactly the
//! keys the workload draws without the event (a stateful distribution such as the targeted
//! generator counts only its own records). The hot key's index is the distribution's key space
//! ([`super::KeyDist::key_space`]), one past every index it can draw, so it is new by
//! construction.

use super::KeyDist;
use crate::ParamError;

/// The ChaCha stream that decides which arrivals carry the hot key; the workload's keys use
/// stream 0, arrival gaps stream 1 and the simulator's service times stream 2.
pub const HOT_KEY_STREAM: u64 = 3;

/// A key that appears at arrival `from` and then carries `share` of all arrivals.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HotKey {
    from: u64,
    share: f64,
    key: u64,
}

impl HotKey {
    /// A hot key appearing at arrival index `from` (0-based) with `share` (in (0, 1]) of the
    /// arrivals from then on, whose index lies outside what `keys` can draw. Errors name
    /// `hot-key-share`, or `keys` when the key space leaves no index free.
    pub fn new(from: u64, share: f64, keys: &KeyDist) -> Result<HotKey, ParamError> {
        HotKey::check_share(share)?;
        let key = keys.key_space();
        if key == u64::MAX {
            return Err(ParamError::new(
                "keys",
                "the key space is unbounded, so no key index is left for the hot key",
            ));
        }
        Ok(HotKey { from, share, key })
    }

    /// Checks a share of arrivals: a fraction in (0, 1]; the error names `hot-key-share`.
    pub fn check_share(share: f64) -> Result<f64, ParamError> {
        if share.is_finite() && share > 0.0 && share <= 1.0 {
            Ok(share)
        } else {
            Err(ParamError::new(
                "hot-key-share",
                format!("{share} is not a fraction in (0, 1] of the arrivals"),
            ))
        }
    }

    /// The arrival index at which the key appears.
    pub fn from(&self) -> u64 {
        self.from
    }

    /// The share of arrivals carrying the key from then on.
    pub fn share(&self) -> f64 {
        self.share
    }

    /// The key's index ([`super::key_name`] names it).
    pub fn key(&self) -> u64 {
        self.key
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hot_key_lies_outside_the_key_space() {
        let keys = KeyDist::uniform(40).unwrap();
        let h = HotKey::new(10, 0.1, &keys).unwrap();
        assert_eq!(h.key(), 40);
        assert_eq!((h.from(), h.share()), (10, 0.1));
    }

    #[test]
    fn a_share_outside_the_unit_interval_is_named() {
        let keys = KeyDist::uniform(40).unwrap();
        for share in [0.0, -0.1, 1.5, f64::NAN] {
            assert_eq!(
                HotKey::new(0, share, &keys).unwrap_err().name,
                "hot-key-share",
                "{share}"
            );
        }
        assert!(HotKey::new(0, 1.0, &keys).is_ok());
    }
}
