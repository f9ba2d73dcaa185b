//! Hot keys the proxy reports from produce batches are the true top-k of a Zipf load (the
//! seed's s = 1.1, v = 2.72 over 2800 `location_<n>` keys), with counts inside the
//! Space-Saving bounds — through a real rdkafka producer, compressed batches, a real broker.

mod support;

use std::collections::HashMap;

use keyshift_core::workload::{key_name, Zipf};
use keyshift_kafka::ClientSettings;
use keyshift_proxy::metrics::MetricsConfig;
use rand::SeedableRng;
use rdkafka::producer::{FutureProducer, FutureRecord};
use support::Setup;

const TOP_K: usize = 10;

#[test]
fn hot_keys_are_the_true_top_k_of_a_zipf_load() {
    let setup = Setup::start(
        |_| {},
        MetricsConfig {
            hot_keys: TOP_K,
            hot_key_capacity: 500,
            // Rates rank the keys; a half-life far longer than the test makes them
            // proportional to counts, so the order is the count order.
            hot_key_half_life_secs: 1e6,
            ..MetricsConfig::default()
        },
    );
    let topic = "zipf";
    setup.broker.create_topic(topic, 4).unwrap();

    let zipf = Zipf::new(1.1, 2.72, 2800).unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
    let keys: Vec<String> = (0..20_000)
        .map(|_| key_name(zipf.sample(&mut rng)))
        .collect();
    let mut truth: HashMap<&str, u64> = HashMap::new();
    for k in &keys {
        *truth.entry(k.as_str()).or_default() += 1;
    }
    let mut ranked: Vec<(&str, u64)> = truth.iter().map(|(k, c)| (*k, *c)).collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    assert!(
        ranked[TOP_K - 1].1 > ranked[TOP_K].1,
        "the seed must give a top-{TOP_K} without a tie at its edge: {:?}",
        &ranked[..=TOP_K]
    );

    let producer: FutureProducer = ClientSettings::new(setup.bootstrap())
        .client_id("zipf-producer")
        .producer_config()
        .set("linger.ms", "20")
        .set("compression.type", "lz4")
        .create()
        .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let pending: Vec<_> = keys
            .iter()
            .map(|k| {
                producer
                    .send_result(FutureRecord::to(topic).key(k).payload("x"))
                    .map_err(|(e, _)| e)
                    .expect("enqueue")
            })
            .collect();
        for p in pending {
            p.await.expect("report").expect("delivered");
        }
    });

    let stats = setup.metrics.snapshot();
    let hot = stats.hot_keys.iter().find(|h| h.topic == topic).unwrap();
    assert_eq!(hot.keyed_records, keys.len() as u64);
    let reported: Vec<&str> = hot.keys.iter().map(|k| k.key.as_str()).collect();
    let expected: Vec<&str> = ranked[..TOP_K].iter().map(|r| r.0).collect();
    println!("true top-{TOP_K}: {:?}", &ranked[..TOP_K]);
    println!(
        "proxy top-{TOP_K}: {:?}",
        hot.keys
            .iter()
            .map(|k| (k.key.as_str(), k.count, k.error))
            .collect::<Vec<_>>()
    );
    assert_eq!(reported, expected, "the proxy's top-{TOP_K} in order");
    for k in &hot.keys {
        let t = truth[k.key.as_str()];
        assert!(
            k.count - k.error <= t && t <= k.count,
            "{}: true {t} outside [{}, {}]",
            k.key,
            k.count - k.error,
            k.count
        );
    }
    let produced: u64 = stats
        .partitions
        .iter()
        .filter(|p| p.topic == topic)
        .map(|p| p.produced_records)
        .sum();
    assert_eq!(produced, keys.len() as u64);
}
