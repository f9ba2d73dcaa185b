//! Fuzzes the decoders of keyshift's own bytes, which arrive from any producer or from a topic
//! anyone may write to: the `keyshift-route` and `keyshift-fence` record headers, the route-state
//! value, the growth epoch, the control-log record and the per-key state changelog entry. Each must answer a named error, never panic, and whatever
//! it accepts must survive encoding and decoding again unchanged (varints may arrive in a
//! longer form than the encoder writes, so the bytes themselves may differ).
//!
//! Input: one selector byte, then the value.
#![no_main]

use keyshift_core::keystate::StateEntry;
use keyshift_core::protocol::control::Control;
use keyshift_core::protocol::epoch::Epoch;
use keyshift_core::protocol::{FenceHeader, RouteEntry, RouteHeader};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 6 {
        0 => {
            if let Ok(h) = RouteHeader::decode(rest) {
                assert_eq!(RouteHeader::decode(&h.encode()), Ok(h));
            }
        }
        1 => {
            if let Ok(h) = FenceHeader::decode(rest) {
                assert_eq!(FenceHeader::decode(&h.encode()), Ok(h));
            }
        }
        2 => {
            if let Ok(e) = RouteEntry::decode(rest) {
                assert_eq!(RouteEntry::decode(&e.encode()), Ok(e));
            }
        }
        3 => {
            if let Ok(c) = Control::decode(rest) {
                assert_eq!(Control::decode(&c.encode()), Ok(c));
            }
        }
        4 => {
            if let Ok(e) = Epoch::decode(rest) {
                assert_eq!(Epoch::decode(&e.encode()), Ok(e));
            }
        }
        _ => {
            // Fixed-width fields: what decodes is exactly what the encoder writes.
            if let Ok(e) = StateEntry::decode(rest) {
                assert_eq!(e.encode(), rest);
            }
        }
    }
});
