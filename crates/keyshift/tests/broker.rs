//! `keyshift broker` through the real binary: it prints a bootstrap address that real rdkafka
//! clients can produce to and consume from, creates the requested topic, and exits 0 on
//! SIGINT; bad flags exit 2 naming the flag.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::TopicPartitionList;

fn keyshift() -> Command {
    Command::new(env!("CARGO_BIN_EXE_keyshift"))
}

/// Kills the broker if a test fails before stopping it, so no process outlives the test.
struct Guard(Option<Child>);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(child) = self.0.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn wait_exit(child: &mut Child, within: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait on the broker") {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "keyshift broker did not exit within {within:?} after SIGINT"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn serves_real_clients_and_exits_zero_on_sigint() {
    let mut child = keyshift()
        .args([
            "broker",
            "--listen",
            "127.0.0.1:0",
            "--topic",
            "t",
            "--partitions",
            "3",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn keyshift broker");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut guard = Guard(Some(child));

    // The first line is the bootstrap address (printed only once the broker is ready).
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("read the bootstrap line");
    let bootstrap = line.trim().to_string();
    assert!(
        bootstrap.starts_with("127.0.0.1:") && !bootstrap.ends_with(":0"),
        "first stdout line should be a concrete loopback address, got {line:?}"
    );

    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .create()
        .expect("producer");
    producer
        .send(
            BaseRecord::to("t")
                .partition(2)
                .key("location_1")
                .payload("hello"),
        )
        .map_err(|(e, _)| e)
        .expect("enqueue");
    producer
        .flush(Duration::from_secs(10))
        .expect("the record is delivered to the topic the broker created");

    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("group.id", "broker-test")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("t", 2, rdkafka::Offset::Beginning)
        .unwrap();
    consumer.assign(&tpl).expect("assign partition 2");
    let deadline = Instant::now() + Duration::from_secs(20);
    let record = loop {
        assert!(Instant::now() < deadline, "no record consumed within 20 s");
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => break (m.key().map(<[u8]>::to_vec), m.payload().map(<[u8]>::to_vec)),
            Some(Err(e)) => panic!("consume failed: {e}"),
            None => {}
        }
    };
    assert_eq!(record.0.as_deref(), Some(&b"location_1"[..]));
    assert_eq!(record.1.as_deref(), Some(&b"hello"[..]));
    drop(consumer);
    drop(producer);

    let mut child = guard.0.take().expect("child still owned");
    let pid = child.id().to_string();
    let killed = Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .expect("run kill");
    assert!(killed.success(), "kill -INT {pid} failed");
    let status = wait_exit(&mut child, Duration::from_secs(20));
    assert!(status.success(), "broker exited with {status} after SIGINT");
}

#[test]
fn bad_flags_exit_2_naming_the_flag() {
    let out = keyshift()
        .args(["broker", "--listen", "not-an-address"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--listen"));

    let out = keyshift()
        .args(["broker", "--topic", "t"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--partitions"));

    let out = keyshift()
        .args(["broker", "--topic", "t", "--partitions", "0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--partitions"));

    // A users file that is missing, or has a line without a password, names the flag and the
    // line, never a password.
    let users = std::env::temp_dir().join(format!("keyshift-users-{}", std::process::id()));
    std::fs::write(&users, "alice:alice-pw-1\nbob\n").unwrap();
    for (file, says) in [
        (users.clone(), "line 2"),
        (users.with_extension("missing"), "cannot read"),
    ] {
        let out = keyshift()
            .args(["broker", "--listen", "127.0.0.1:0", "--sasl-users"])
            .arg(&file)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(err.contains("--sasl-users") && err.contains(says), "{err}");
        assert!(!err.contains("alice-pw-1"), "{err}");
    }
    std::fs::remove_file(&users).unwrap();
}
