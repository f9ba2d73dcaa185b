//! An application built on keyshift's library: orders are produced with [`KeyshiftProducer`]
//! and summed per customer by ordered consumers with an asynchronous handler and per-key
//! state — the running total follows its customer when the customer's key is moved to another
//! partition and when a consumer leaves the group.
//!
//! Run it against the embedded broker (no setup):
//!
//! ```text
//! cargo run -p keyshift-kafka --example order_totals
//! ```
//!
//! or against a cluster: `cargo run -p keyshift-kafka --example order_totals -- localhost:9092`
//! (it creates the topics `order-totals` and `order-totals.keyshift-state`). It prints each
//! customer's total and checks it against what was sent; `cargo test --all-targets` runs it.

use std::collections::BTreeMap;
use std::time::Duration;

use keyshift_kafka::{
    DeliveredRecord, EmbeddedBroker, KeyshiftProducer, OrderedConsumerBuilder, Routes, StateChange,
    StateStore, WithState,
};

const TOPIC: &str = "order-totals";
const PARTITIONS: u32 = 4;
const CUSTOMERS: u32 = 8;
const ORDERS: u32 = 40;

/// The handler: adds the order's amount to the customer's running total (the key's state).
async fn add_order(
    record: DeliveredRecord,
    total: Option<Vec<u8>>,
) -> Result<StateChange, Box<dyn std::error::Error + Send + Sync>> {
    let amount: u64 = std::str::from_utf8(&record.value)?.parse()?;
    let so_far: u64 = match total {
        Some(bytes) => std::str::from_utf8(&bytes)?.parse()?,
        None => 0,
    };
    // A real handler would await its database here; the state write follows when it returns.
    tokio::time::sleep(Duration::from_millis(1)).await;
    Ok(StateChange::Set((so_far + amount).to_string().into_bytes()))
}

/// Runs the application; returns each customer's total as the changelog holds it.
fn run(bootstrap: Option<String>) -> Result<BTreeMap<String, u64>, Box<dyn std::error::Error>> {
    let broker = match bootstrap {
        Some(_) => None,
        None => Some(EmbeddedBroker::start()?),
    };
    let settings = match (&broker, bootstrap) {
        (Some(b), _) => b.client_settings(),
        (None, Some(servers)) => keyshift_kafka::ClientSettings::new(servers),
        (None, None) => unreachable!("one of the two is set"),
    };
    keyshift_kafka::Admin::new(&settings)?.create_topic(TOPIC, PARTITIONS)?;
    let state_topic = format!("{TOPIC}{}", keyshift_kafka::STATE_TOPIC_SUFFIX);
    let consumer = |name: &str| -> Result<_, Box<dyn std::error::Error>> {
        let store = StateStore::open(&settings, &state_topic, Duration::from_secs(10))?;
        let consumer = OrderedConsumerBuilder::new(&settings, "order-totals", TOPIC)
            .concurrency(8)
            .thread_name(name)
            .spawn_async(WithState::new(store, add_order))?;
        Ok(consumer)
    };
    let first = consumer("first")?;
    let second = consumer("second")?;

    let runtime = tokio::runtime::Runtime::new()?;
    let producer = KeyshiftProducer::builder(settings.clone(), TOPIC)
        .routes(Routes::Durable(None))
        .strategy("hash")
        .partitions(PARTITIONS)
        .build()?;
    let mut expected = BTreeMap::new();
    runtime.block_on(async {
        for order in 0..ORDERS {
            for c in 0..CUSTOMERS {
                let customer = format!("customer-{c}");
                if order == ORDERS / 2 && c < 2 {
                    // Move two customers to another partition mid-stream (a fenced migration).
                    let now = producer.current_partition(customer.as_bytes());
                    producer.move_key(customer.as_bytes(), (now + 1) % PARTITIONS)?;
                }
                let amount = u64::from(order * 10 + c);
                *expected.entry(customer.clone()).or_insert(0) += amount;
                producer
                    .send(
                        customer.as_bytes(),
                        amount.to_string().as_bytes(),
                        Vec::new(),
                    )
                    .await?;
            }
            if order == ORDERS / 4 {
                // Yield so both consumers join and the move above finds records in flight.
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        Ok::<(), Box<dyn std::error::Error>>(())
    })?;
    // One consumer leaves mid-run: the other takes its partitions and its customers' totals.
    first.stop()?;

    // Read the totals back from the changelog, as another service would.
    let reader = StateStore::open(&settings, &state_topic, Duration::from_secs(10))?;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let totals = runtime.block_on(totals(&reader, &expected))?;
        if totals == expected || std::time::Instant::now() > deadline {
            second.stop()?;
            return Ok(totals);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Each customer's current total, read through a store (as a consumer's handler would see it).
async fn totals(
    store: &StateStore,
    customers: &BTreeMap<String, u64>,
) -> Result<BTreeMap<String, u64>, Box<dyn std::error::Error>> {
    let mut out = BTreeMap::new();
    for customer in customers.keys() {
        if let Some(total) = store.current(customer.as_bytes()).await? {
            out.insert(customer.clone(), std::str::from_utf8(&total)?.parse()?);
        }
    }
    Ok(out)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let totals = run(std::env::args().nth(1))?;
    for (customer, total) in &totals {
        println!("{customer}: {total}");
    }
    let expected: u64 = (0..ORDERS)
        .flat_map(|o| (0..CUSTOMERS).map(move |c| u64::from(o * 10 + c)))
        .sum();
    let sum: u64 = totals.values().sum();
    if totals.len() != CUSTOMERS as usize || sum != expected {
        return Err(format!("totals {totals:?} do not add up to {expected}").into());
    }
    println!("every order counted once: {sum} in all");
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_example_runs_and_every_total_is_exact() {
        super::main().expect("order_totals");
    }
}
