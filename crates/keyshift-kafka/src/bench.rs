//! Helpers shared by the workspace's custom bench harnesses (the producer, lag, proxy and
//! tracing benches), so that every bench sends the same key stream and reports its figures
//! the same way.

use std::time::Duration;

use keyshift_core::workload::{key_name, Zipf};

/// The key stream the benches send: Zipf over the seed's 2800 `location_<n>` keys (s = 1.1,
/// v = 2.72), from a fixed xorshift seed so every run and every bench sends the same keys.
pub fn zipf_keys(records: usize) -> Vec<Vec<u8>> {
    let zipf = Zipf::new(1.1, 2.72, 2800).expect("the seed's Zipf parameters are valid");
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let mut uniform = move || {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        (state.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    };
    (0..records)
        .map(|_| key_name(zipf.sample_with(&mut uniform)).into_bytes())
        .collect()
}

/// User + system CPU time of this process (all threads), from `getrusage` (µs resolution).
pub fn cpu_time() -> Duration {
    // SAFETY: getrusage only writes the struct we pass, which is zero-initialised plain data.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        let rc = libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        assert_eq!(rc, 0, "getrusage failed");
        usage
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// The median (mean of the middle two for an even count; NaN when empty).
pub fn median(values: impl IntoIterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = values.into_iter().collect();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// A bench knob from the environment (`KEYSHIFT_BENCH_*`), or `default` when unset or not a
/// number.
pub fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_even_and_empty() {
        assert_eq!(median([3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median([4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(std::iter::empty()).is_nan());
    }

    #[test]
    fn key_stream_is_fixed_and_skewed() {
        let keys = zipf_keys(10_000);
        assert_eq!(keys, zipf_keys(10_000));
        let hottest = keys
            .iter()
            .filter(|k| k.as_slice() == b"location_0")
            .count();
        assert!(
            hottest > 10_000 / 2800 * 20,
            "location_0 seen {hottest} times"
        );
    }
}
