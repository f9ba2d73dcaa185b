//! `keyshift autoscale` as a user runs it: the real binary reading real lag from the embedded
//! broker, acting on a fake Kubernetes API server that checks every request against the
//! `scale` subresource's shape (method, path, content type, body, token, field manager),
//! serving its decision over real HTTP, and rejecting bad input with exit status 2.
//!
//! Not proved here: behaviour against a live Kubernetes cluster (none is reachable from this
//! machine); the fake server answers what the API server documents, nothing more.

mod autoscale_support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use autoscale_support::FakeApi;
use keyshift_kafka::broker::BrokerOptions;
use keyshift_kafka::EmbeddedBroker;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::Value;

const PATIENCE: Duration = Duration::from_secs(90);
const GROUP: &str = "orders-workers";
const TOPIC: &str = "orders";

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

/// `per_partition` records into each of `partitions` partitions of [`TOPIC`], then commits
/// `committed[p]` for [`GROUP`] without joining it: lag = Σ (per_partition − committed[p]).
fn broker_with_lag(per_partition: usize, committed: &[i64]) -> EmbeddedBroker {
    broker_with_lag_in(BrokerOptions::default(), per_partition, committed)
}

fn broker_with_lag_in(
    options: BrokerOptions,
    per_partition: usize,
    committed: &[i64],
) -> EmbeddedBroker {
    let broker = EmbeddedBroker::start_with(options).expect("embedded broker starts");
    broker
        .create_topic(TOPIC, committed.len() as u32)
        .expect("topic");
    let producer: FutureProducer = broker.client_settings().producer_config().create().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    for p in 0..committed.len() as i32 {
        let pending: Vec<_> = (0..per_partition)
            .map(|i| {
                let key = format!("k{i}");
                producer
                    .send_result(FutureRecord::to(TOPIC).partition(p).key(&key).payload("v"))
                    .map_err(|(e, _)| e)
                    .unwrap()
            })
            .collect();
        for f in pending {
            rt.block_on(f).unwrap().map_err(|(e, _)| e).unwrap();
        }
    }
    let consumer: BaseConsumer = broker
        .client_settings()
        .consumer_config(GROUP)
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for (p, &o) in committed.iter().enumerate() {
        tpl.add_partition_offset(TOPIC, p as i32, Offset::Offset(o))
            .unwrap();
    }
    consumer.commit(&tpl, CommitMode::Sync).expect("commit");
    broker
}

fn keyshift(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_keyshift"))
        .arg("autoscale")
        .args(args)
        .env_remove("KEYSHIFT_BOOTSTRAP_SERVERS")
        .env_remove("KUBECONFIG")
        .output()
        .expect("keyshift runs")
}

fn temp_dir(name: &str) -> PathBuf {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let dir = std::env::temp_dir().join(format!(
        "keyshift-autoscale-{name}-{}-{nanos}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The JSON decision lines of a `--json` run.
fn decisions(out: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

fn describe(out: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn kubernetes_actuator_patches_the_deployment_scale_subresource() {
    // Lag 60 + 50 + 40 + 30 = 180 records over 4 partitions.
    let broker = broker_with_lag(100, &[40, 50, 60, 70]);
    let rt = runtime();
    let api = FakeApi::start(&rt);
    api.add("deployments", "streaming", "orders-worker", 1);
    let dir = temp_dir("deploy");
    let kubeconfig = api.kubeconfig(&dir);

    // HPA rule on records: ceil(1 × (180 / 1) / 60) = 3. The namespace comes from the
    // kubeconfig's context.
    let out = keyshift(&[
        "--bootstrap-servers",
        broker.bootstrap_servers(),
        "--group",
        GROUP,
        "--topic",
        TOPIC,
        "--target",
        "60",
        "--iterations",
        "1",
        "--json",
        "--kubernetes",
        "--kubeconfig",
        kubeconfig.to_str().unwrap(),
        "--name",
        "orders-worker",
    ]);
    assert!(out.status.success(), "{}", describe(&out));
    let d = decisions(&out);
    assert_eq!(d.len(), 1, "{}", describe(&out));
    assert_eq!(d[0]["current"], 1);
    assert_eq!(d[0]["desired"], 3);
    assert_eq!(d[0]["changed"], true);
    assert_eq!(d[0]["observation"]["lag_records"], 180);
    assert_eq!(d[0]["observation"]["partitions"], 4);
    assert_eq!(d[0]["reasons"][0]["reason"], "metric");
    assert_eq!(d[0]["reasons"][0]["value"], 180.0);

    assert_eq!(api.violations(), Vec::<String>::new());
    let seen = api.seen();
    let path = "/apis/apps/v1/namespaces/streaming/deployments/orders-worker/scale";
    let methods: Vec<_> = seen
        .iter()
        .map(|s| (s.method.as_str(), s.path.as_str()))
        .collect();
    // Read at start (to fail fast), read at the evaluation, then one patch.
    assert_eq!(methods, [("GET", path), ("GET", path), ("PATCH", path)]);
    let patch = &seen[2];
    assert_eq!(patch.content_type, "application/merge-patch+json");
    assert_eq!(patch.body, serde_json::json!({"spec": {"replicas": 3}}));
    assert!(
        patch.query.contains("fieldManager=keyshift-autoscale"),
        "{}",
        patch.query
    );
    assert_eq!(
        api.replicas("deployments", "streaming", "orders-worker"),
        Some(3)
    );

    // Already at the count the rule wants: read, no patch.
    let before = api.seen().len();
    let out = keyshift(&[
        "--bootstrap-servers",
        broker.bootstrap_servers(),
        "--group",
        GROUP,
        "--target",
        "60",
        "--iterations",
        "1",
        "--json",
        "--kubernetes",
        "--kubeconfig",
        kubeconfig.to_str().unwrap(),
        "--name",
        "orders-worker",
    ]);
    assert!(out.status.success(), "{}", describe(&out));
    let d = decisions(&out);
    assert_eq!(
        (d[0]["current"].clone(), d[0]["desired"].clone()),
        (3.into(), 3.into())
    );
    let after: Vec<_> = api.seen()[before..]
        .iter()
        .map(|s| s.method.clone())
        .collect();
    assert_eq!(after, ["GET", "GET"]);
    assert_eq!(api.violations(), Vec::<String>::new());
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn statefulset_scale_is_capped_at_the_partition_count_and_api_errors_are_clear() {
    // Lag 4 × 90 = 360 records; target 10 per replica would want 36.
    let broker = broker_with_lag(100, &[10, 10, 10, 10]);
    let rt = runtime();
    let api = FakeApi::start(&rt);
    api.add("statefulsets", "batch", "orders-worker", 2);
    let dir = temp_dir("sts");
    let kubeconfig = api.kubeconfig(&dir);
    let kc = kubeconfig.to_str().unwrap();
    let base = [
        "--bootstrap-servers",
        broker.bootstrap_servers(),
        "--group",
        GROUP,
        "--target",
        "10",
        "--iterations",
        "1",
        "--kubernetes",
        "--kubeconfig",
        kc,
    ];
    let mut args = base.to_vec();
    args.extend([
        "--kind",
        "statefulset",
        "--namespace",
        "batch",
        "--name",
        "orders-worker",
    ]);
    let out = keyshift(&args);
    assert!(out.status.success(), "{}", describe(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("scale 2 -> 4") && text.contains("capped at 4 partitions"),
        "{text}"
    );
    // The growth the lag asks for is proposed, not made (no --allow-expand).
    assert!(text.contains("expand the topic to 36 partitions"), "{text}");
    assert_eq!(
        api.replicas("statefulsets", "batch", "orders-worker"),
        Some(4)
    );
    let patch = api
        .seen()
        .into_iter()
        .find(|s| s.method == "PATCH")
        .expect("a patch");
    assert_eq!(
        patch.path,
        "/apis/apps/v1/namespaces/batch/statefulsets/orders-worker/scale"
    );
    assert_eq!(patch.body, serde_json::json!({"spec": {"replicas": 4}}));
    assert_eq!(api.violations(), Vec::<String>::new());

    // A workload that does not exist: exit 1 at start, naming it, and nothing patched.
    let patches = || api.seen().iter().filter(|s| s.method == "PATCH").count();
    let before = patches();
    let mut args = base.to_vec();
    args.extend(["--namespace", "batch", "--name", "nope"]);
    let out = keyshift(&args);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("deployments/nope") && err.contains("404") && err.contains("--namespace"),
        "{err}"
    );

    // RBAC missing: the 403 is reported with where the role is.
    api.force_status(403);
    let mut args = base.to_vec();
    args.extend([
        "--kind",
        "statefulset",
        "--namespace",
        "batch",
        "--name",
        "orders-worker",
    ]);
    let out = keyshift(&args);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("403") && err.contains("deploy/rbac.yaml"),
        "{err}"
    );
    assert_eq!(patches(), before);
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn bad_input_is_a_usage_error_naming_it() {
    // Flags checked before anything connects.
    let offline = ["--bootstrap-servers", "127.0.0.1:1", "--group", GROUP];
    let cases: &[(&[&str], &str)] = &[
        (&["--target", "0"], "--target"),
        (&["--target", "-5"], "--target"),
        (
            &["--mode", "predictive", "--drain-target", "0"],
            "--drain-target",
        ),
        (
            &["--min-replicas", "5", "--max-replicas", "2"],
            "--min-replicas",
        ),
        (&["--max-replicas", "0"], "--max-replicas"),
        (&["--tolerance", "1.5"], "--tolerance"),
        (&["--interval", "0"], "--interval"),
        (&["--scale-up-limit", "4/0"], "--scale-up-limit"),
        (
            &["--mode", "predictive", "--metric", "lag-seconds"],
            "--metric",
        ),
        (&["--kubernetes"], "--name"),
    ];
    for (extra, flag) in cases {
        let mut args = offline.to_vec();
        args.extend_from_slice(extra);
        let out = keyshift(&args);
        assert_eq!(out.status.code(), Some(2), "{extra:?}: {}", describe(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(flag), "{extra:?}: {err}");
    }

    // Checked against the cluster on the first collection.
    let broker = broker_with_lag(10, &[5, 5]);
    broker.create_topic("empty-for-others", 1).unwrap();
    let b = broker.bootstrap_servers();
    let cases: &[(&[&str], &str, &str)] = &[
        (&["--group", "no-such-group"], "--group", "no-such-group"),
        (
            &["--group", GROUP, "--topic", "no-such-topic"],
            "--topic",
            "no-such-topic",
        ),
        // Exists, but this group does not consume it.
        (
            &["--group", GROUP, "--topic", "empty-for-others"],
            "--topic",
            "it consumes: orders",
        ),
    ];
    for (extra, flag, detail) in cases {
        let mut args = vec!["--bootstrap-servers", b, "--iterations", "1"];
        args.extend_from_slice(extra);
        let out = keyshift(&args);
        assert_eq!(out.status.code(), Some(2), "{extra:?}: {}", describe(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(flag) && err.contains(detail),
            "{extra:?}: {err}"
        );
    }
}

/// A plain HTTP/1.1 GET; returns (status code, body).
fn get(addr: &str, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connect");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|x| x.1).unwrap_or_default();
    (code, body.to_owned())
}

/// The value of `name{group="orders-workers"}` in an OpenMetrics exposition.
fn sample(body: &str, name: &str) -> Option<f64> {
    let prefix = format!("{name}{{group=\"{GROUP}\"}} ");
    body.lines()
        .find_map(|l| l.strip_prefix(&prefix)?.trim().parse().ok())
}

/// Polls until `f` is true or [`PATIENCE`] ends.
fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn serve_answers_keda_and_prometheus_and_survives_a_broker_outage() {
    let data = temp_dir("outage");
    let options = BrokerOptions {
        data_dir: Some(data.clone()),
        ..BrokerOptions::default()
    };
    // Lag 20 + 30 = 50 over 2 partitions; one replica assumed running at start.
    let broker = broker_with_lag_in(options, 40, &[20, 10]);
    let addr = broker.addr();
    let mut child = Running(
        Command::new(env!("CARGO_BIN_EXE_keyshift"))
            .args([
                "autoscale",
                "--bootstrap-servers",
                broker.bootstrap_servers(),
                "--group",
                GROUP,
                "--target",
                "10",
                "--replicas",
                "1",
                "--interval",
                "0.2",
                "--serve",
                "127.0.0.1:0",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("keyshift autoscale starts"),
    );
    let mut lines = BufReader::new(child.0.stdout.take().unwrap()).lines();
    let banner = lines.next().unwrap().unwrap();
    let http = banner
        .split("http://")
        .nth(1)
        .and_then(|r| r.split('/').next())
        .unwrap_or_else(|| panic!("no address in {banner:?}"))
        .to_owned();
    // Keep draining stdout so the child never blocks on a full pipe.
    let printed = std::thread::spawn(move || lines.map_while(Result::ok).collect::<Vec<_>>());

    let mut scale = Value::Null;
    wait_until("a first evaluation", || {
        let (code, body) = get(&http, "/api/v1/scale");
        if code == 200 {
            scale = serde_json::from_str(&body).unwrap();
        }
        code == 200
    });
    // ceil(1 × 50 / 10) = 5, capped at the 2 partitions.
    assert_eq!(scale["group"], GROUP);
    assert_eq!(scale["desiredReplicas"], 2, "{scale}");
    assert_eq!(scale["lagRecords"], 50);
    assert_eq!(scale["partitions"], 2);
    assert!(
        scale["reason"]
            .as_str()
            .unwrap()
            .contains("capped at 2 partitions"),
        "{scale}"
    );
    let (code, metrics) = get(&http, "/metrics");
    assert_eq!(code, 200);
    assert_eq!(
        sample(&metrics, "keyshift_autoscale_desired_replicas"),
        Some(2.0),
        "{metrics}"
    );
    assert_eq!(
        sample(&metrics, "keyshift_autoscale_lag_records"),
        Some(50.0)
    );
    assert_eq!(sample(&metrics, "keyshift_autoscale_kafka_up"), Some(1.0));
    assert_eq!(
        sample(&metrics, "keyshift_autoscale_scale_ups_total"),
        Some(1.0),
        "{metrics}"
    );

    // Broker down: KEDA gets 503 (its fallback applies), Prometheus sees kafka_up 0.
    broker.shutdown();
    wait_until("the outage to show", || {
        let (_, m) = get(&http, "/metrics");
        sample(&m, "keyshift_autoscale_kafka_up") == Some(0.0)
    });
    let (code, body) = get(&http, "/api/v1/scale");
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("unavailable"), "{body}");
    let (_, m) = get(&http, "/metrics");
    assert!(
        sample(&m, "keyshift_autoscale_collect_errors_total").unwrap() >= 1.0,
        "{m}"
    );

    // Same address, same data: recovered without a restart.
    let broker = EmbeddedBroker::start_with(BrokerOptions {
        listen: Some(addr),
        data_dir: Some(data.clone()),
        ..BrokerOptions::default()
    })
    .expect("broker restarts");
    wait_until("recovery", || {
        let (code, _) = get(&http, "/api/v1/scale");
        let (_, m) = get(&http, "/metrics");
        code == 200 && sample(&m, "keyshift_autoscale_kafka_up") == Some(1.0)
    });
    let (_, body) = get(&http, "/api/v1/scale");
    let scale: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(scale["lagRecords"], 50);
    assert_eq!(scale["desiredReplicas"], 2);

    let killed = Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = child.0.wait().unwrap();
    assert!(status.success(), "exit status {status}");
    let printed = printed.join().unwrap();
    assert!(
        printed.iter().any(|l| l.contains("scale 1 -> 2")),
        "{printed:?}"
    );
    broker.shutdown();
    std::fs::remove_dir_all(data).ok();
}

/// Every document of `deploy/<file>`, as JSON values.
fn manifests(file: &str) -> Vec<Value> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../deploy")
        .join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_saphyr::from_multiple::<Value>(&text).unwrap_or_else(|e| panic!("{file}: {e}"))
}

/// The document of `kind` in `docs`, deserialized as the Kubernetes type `T` (which checks
/// required fields and value types).
fn typed<T: serde::de::DeserializeOwned>(docs: &[Value], kind: &str) -> T {
    let doc = docs
        .iter()
        .find(|d| d["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind}"));
    serde_json::from_value(doc.clone()).unwrap_or_else(|e| panic!("{kind}: {e}"))
}

/// The value of `--flag=value` in a container's args.
fn arg<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
    args.iter()
        .find_map(|a| a.strip_prefix(flag)?.strip_prefix('='))
}

/// The consumers' `--client-config` names a file of the mounted ConfigMap, whose
/// `client.properties` translates (as `keyshift` reads it) and takes its password from the
/// mounted Secret, never from the manifest.
fn check_client_config(consumers: &k8s_openapi::api::apps::v1::Deployment, docs: &[Value]) {
    use k8s_openapi::api::core::v1::ConfigMap;
    let pod = consumers
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap();
    let container = &pod.containers[0];
    let path = arg(container.args.as_ref().unwrap(), "--client-config").expect("--client-config");
    let mounts = container.volume_mounts.as_ref().unwrap();
    let volumes = pod.volumes.as_ref().unwrap();
    let (dir, file) = path.rsplit_once('/').unwrap();
    let mount = mounts
        .iter()
        .find(|m| m.mount_path == dir)
        .expect("the file's directory is mounted");
    let volume = volumes.iter().find(|v| v.name == mount.name).unwrap();
    let map: ConfigMap = typed(docs, "ConfigMap");
    assert_eq!(
        volume.config_map.as_ref().unwrap().name,
        map.metadata.name.clone().unwrap()
    );
    let properties = &map.data.as_ref().unwrap()[file];
    let secret_dir = mounts
        .iter()
        .find(|m| {
            volumes
                .iter()
                .any(|v| v.name == m.name && v.secret.is_some())
        })
        .expect("a Secret is mounted")
        .mount_path
        .clone();
    assert!(
        properties.contains(&format!("password=\"${{file:{secret_dir}/")),
        "the password comes from the Secret: {properties}"
    );
    let translated = keyshift_kafka::ClientFile::parse(
        &properties
            .replace("${file:", "${env:")
            .replace(&format!("{secret_dir}/password"), "PW"),
        std::path::Path::new(file),
        &|name| (name == "PW").then(|| "from-the-secret".to_owned()),
    )
    .expect("client.properties translates");
    let keys: Vec<&str> = translated.properties.iter().map(|p| p.key()).collect();
    assert!(
        keys.contains(&"sasl.username") && keys.contains(&"sasl.password"),
        "{keys:?}"
    );
}

#[test]
fn deploy_manifests_are_valid_and_agree_with_the_binary() {
    use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
    use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
    use k8s_openapi::api::core::v1::{Service, ServiceAccount};
    use k8s_openapi::api::rbac::v1::{Role, RoleBinding};

    let rbac = manifests("rbac.yaml");
    let sa: ServiceAccount = typed(&rbac, "ServiceAccount");
    let role: Role = typed(&rbac, "Role");
    let binding: RoleBinding = typed(&rbac, "RoleBinding");
    let autoscaler_docs = manifests("autoscaler.yaml");
    let autoscaler: Deployment = typed(&autoscaler_docs, "Deployment");
    let service: Service = typed(&autoscaler_docs, "Service");
    let consumer_docs = manifests("consumer-deployment.yaml");
    let consumers: Deployment = typed(&consumer_docs, "Deployment");
    check_client_config(&consumers, &consumer_docs);
    let sts: StatefulSet = typed(&manifests("consumer-statefulset.yaml"), "StatefulSet");
    let hpa_docs = manifests("hpa-external.yaml");
    let hpa: HorizontalPodAutoscaler = typed(&hpa_docs, "HorizontalPodAutoscaler");
    let keda = manifests("keda-scaledobject.yaml");
    let scaled = keda
        .iter()
        .find(|d| d["kind"] == "ScaledObject")
        .expect("ScaledObject");

    let pod = autoscaler
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap();
    let args = pod.containers[0].args.clone().unwrap();
    let name = sa.metadata.name.clone().unwrap();
    assert_eq!(pod.service_account_name.as_deref(), Some(name.as_str()));
    assert_eq!(args[0], "autoscale");

    // Every flag in the manifest is one the binary has.
    let help = Command::new(env!("CARGO_BIN_EXE_keyshift"))
        .args(["autoscale", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for a in &args[1..] {
        let flag = a.split('=').next().unwrap();
        assert!(
            help.contains(&format!("{flag} ")) || help.contains(&format!("{flag}\n")),
            "{flag} not in --help"
        );
    }

    // RBAC: exactly the scale subresource, get and patch, of the workload scaled.
    let target = arg(&args, "--name").unwrap();
    assert_eq!(consumers.metadata.name.as_deref(), Some(target));
    assert_eq!(sts.metadata.name.as_deref(), Some(target));
    let rules = role.rules.unwrap();
    assert_eq!(rules.len(), 1);
    let rule = &rules[0];
    assert_eq!(rule.api_groups.as_deref(), Some(&["apps".to_owned()][..]));
    let mut resources = rule.resources.clone().unwrap();
    resources.sort();
    assert_eq!(resources, ["deployments/scale", "statefulsets/scale"]);
    let mut verbs = rule.verbs.clone();
    verbs.sort();
    assert_eq!(verbs, ["get", "patch"]);
    assert_eq!(
        rule.resource_names.as_deref(),
        Some(&[target.to_owned()][..])
    );
    assert_eq!(binding.role_ref.name, role.metadata.name.clone().unwrap());
    assert_eq!(binding.subjects.unwrap()[0].name, name);
    let ns = arg(&args, "--namespace").unwrap();
    for m in [
        &role.metadata,
        &sa.metadata,
        &consumers.metadata,
        &autoscaler.metadata,
        &hpa.metadata,
    ] {
        assert_eq!(m.namespace.as_deref(), Some(ns));
    }

    // --serve's port is the Service's, and KEDA polls the path the binary serves.
    let port: i32 = arg(&args, "--serve")
        .unwrap()
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(service.spec.unwrap().ports.unwrap()[0].port, port);
    let trigger = &scaled["spec"]["triggers"][0];
    assert_eq!(trigger["type"], "metrics-api");
    let url = trigger["metadata"]["url"].as_str().unwrap();
    assert!(url.ends_with(&format!(":{port}/api/v1/scale")), "{url}");
    assert_eq!(trigger["metadata"]["valueLocation"], "desiredReplicas");
    assert_eq!(trigger["metadata"]["targetValue"], "1");
    assert_eq!(scaled["spec"]["scaleTargetRef"]["name"], target);

    // The HPA's External metric is the gauge the binary exports, selected by the group.
    let metric = &hpa.spec.as_ref().unwrap().metrics.as_ref().unwrap()[0];
    let ext = metric.external.as_ref().unwrap();
    assert_eq!(ext.metric.name, "keyshift_autoscale_desired_replicas");
    let labels = ext
        .metric
        .selector
        .as_ref()
        .unwrap()
        .match_labels
        .clone()
        .unwrap();
    assert_eq!(labels["group"], arg(&args, "--group").unwrap());
    assert_eq!(hpa.spec.unwrap().scale_target_ref.name, target);
}

/// A Kubernetes quantity as the manifests write them (`"1"`, `"0"`, `"0.05"`, `"50m"`), in
/// milli-units, the unit the HPA controller computes in.
fn milli(q: &str) -> i64 {
    let (number, scale) = match q.strip_suffix('m') {
        Some(n) => (n, 1.0),
        None => (q, 1000.0),
    };
    let v: f64 = number
        .parse()
        .unwrap_or_else(|e| panic!("quantity {q:?}: {e}"));
    (v * scale).round() as i64
}

/// The settings of one HPA that act on keyshift's decision: an External metric with an
/// `AverageValue` target, replica bounds, and `behavior`.
struct Hpa {
    target_milli: i64,
    min: i32,
    max: i32,
    behavior: k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscalerBehavior,
}

/// The kube-controller-manager's `--horizontal-pod-autoscaler-tolerance` default, used where
/// an HPA sets none (or the cluster drops the field: HPAConfigurableTolerance off).
const CLUSTER_TOLERANCE: f64 = 0.1;

impl Hpa {
    /// One evaluation of the HPA controller (pkg/controller/podautoscaler, Kubernetes 1.33+)
    /// with keyshift's desired count `metric` as the External metric and `current` replicas:
    ///
    /// 1. `GetExternalPerPodMetricReplicas`: values in milli-units;
    ///    `ratio = metric / (target × current)`; no change while `Tolerances.isWithin(ratio)`,
    ///    i.e. `1 − scaleDown.tolerance ≤ ratio ≤ 1 + scaleUp.tolerance`; otherwise
    ///    `ceil(metric / target)`.
    /// 2. `normalizeDesiredReplicasWithBehaviors`: stabilization windows (0 s in the
    ///    manifests: the recommendation itself), then the rate limits of the first change
    ///    in a period (`calculateScaleUpLimitWithScalingRules`: Percent `ceil(current × (1 +
    ///    v/100))`, Pods `current + v`, largest by default; scale-down: Percent
    ///    `trunc(current × (1 − v/100))`, Pods `current − v`, smallest by default), then
    ///    min/max replicas.
    fn step(&self, current: i32, metric: i32, cluster_tolerance: Option<f64>) -> i32 {
        use k8s_openapi::api::autoscaling::v2::HPAScalingRules;
        let tolerance = |rules: &Option<HPAScalingRules>| {
            cluster_tolerance.unwrap_or_else(|| {
                rules
                    .as_ref()
                    .and_then(|r| r.tolerance.as_ref())
                    .map_or(CLUSTER_TOLERANCE, |q| milli(&q.0) as f64 / 1000.0)
            })
        };
        let (up, down) = (&self.behavior.scale_up, &self.behavior.scale_down);
        let usage = i64::from(metric) * 1000;
        let ratio = usage as f64 / (self.target_milli as f64 * f64::from(current));
        let within = (1.0 - tolerance(down)) <= ratio && ratio <= (1.0 + tolerance(up));
        let desired = if within {
            current
        } else {
            (usage as f64 / self.target_milli as f64).ceil() as i32
        };
        let limit = |rules: &Option<HPAScalingRules>, scale_up: bool| -> i32 {
            let rules = rules.as_ref().expect("the manifests set both directions");
            assert_eq!(rules.stabilization_window_seconds, Some(0));
            let proposals = rules.policies.iter().flatten().map(|p| {
                let c = f64::from(current);
                let v = f64::from(p.value);
                match (p.type_.as_str(), scale_up) {
                    ("Pods", true) => current + p.value,
                    ("Pods", false) => current - p.value,
                    ("Percent", true) => (c * (1.0 + v / 100.0)).ceil() as i32,
                    ("Percent", false) => (c * (1.0 - v / 100.0)) as i32,
                    (other, _) => panic!("policy type {other}"),
                }
            });
            match (rules.select_policy.as_deref().unwrap_or("Max"), scale_up) {
                ("Disabled", _) => current,
                ("Max", true) | ("Min", false) => proposals.max().unwrap_or(current),
                ("Max", false) | ("Min", true) => proposals.min().unwrap_or(current),
                (other, _) => panic!("selectPolicy {other}"),
            }
        };
        if desired > current {
            desired.min(self.max.min(limit(up, true).max(current)))
        } else if desired < current {
            desired.max(self.min.max(limit(down, false).min(current)))
        } else {
            desired
        }
    }

    /// The one-evaluation steps `current → keyshift's count` (both within the replica bounds,
    /// the HPA never below 1) that the HPA does not apply as they are.
    fn skipped(&self, cluster_tolerance: Option<f64>) -> Vec<(i32, i32)> {
        let range = self.min.max(1)..=self.max;
        let mut out = Vec::new();
        for current in range.clone() {
            for want in range.clone() {
                if self.step(current, want, cluster_tolerance) != want {
                    out.push((current, want));
                }
            }
        }
        out
    }
}

/// The HPA of `deploy/hpa-external.yaml` and the one KEDA creates from
/// `deploy/keda-scaledobject.yaml`.
fn shipped_hpas() -> Vec<(&'static str, Hpa)> {
    use k8s_openapi::api::autoscaling::v2::{
        HorizontalPodAutoscaler, HorizontalPodAutoscalerBehavior,
    };
    let hpa: HorizontalPodAutoscaler =
        typed(&manifests("hpa-external.yaml"), "HorizontalPodAutoscaler");
    let spec = hpa.spec.unwrap();
    let target = spec.metrics.unwrap()[0]
        .external
        .as_ref()
        .unwrap()
        .target
        .clone();
    assert_eq!(target.type_, "AverageValue");
    let plain = Hpa {
        target_milli: milli(&target.average_value.unwrap().0),
        min: spec.min_replicas.unwrap_or(1),
        max: spec.max_replicas,
        behavior: spec.behavior.expect("behavior"),
    };
    let keda = manifests("keda-scaledobject.yaml");
    let scaled = keda
        .iter()
        .find(|d| d["kind"] == "ScaledObject")
        .expect("ScaledObject")["spec"]
        .clone();
    let trigger = &scaled["triggers"][0];
    assert_eq!(trigger["metricType"], "AverageValue");
    let behavior: HorizontalPodAutoscalerBehavior = serde_json::from_value(
        scaled["advanced"]["horizontalPodAutoscalerConfig"]["behavior"].clone(),
    )
    .expect("KEDA's behavior is an HPA behavior");
    let keda = Hpa {
        target_milli: milli(trigger["metadata"]["targetValue"].as_str().unwrap()),
        min: scaled["minReplicaCount"].as_i64().unwrap() as i32,
        max: scaled["maxReplicaCount"].as_i64().unwrap() as i32,
        behavior,
    };
    vec![
        ("hpa-external.yaml", plain),
        ("keda-scaledobject.yaml", keda),
    ]
}

/// docs/autoscale.md says the HPA applies keyshift's count as it is where the per-HPA
/// tolerance is honoured, and lists the steps skipped where it is not. Both are computed here
/// with the HPA controller's arithmetic on the shipped manifests' settings.
#[test]
fn shipped_hpa_settings_apply_every_step_and_the_docs_list_the_exceptions() {
    let docs = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/autoscale.md"),
    )
    .unwrap();
    for (file, hpa) in shipped_hpas() {
        // The arithmetic itself, on numbers the HPA documentation gives: ratio 1.1 is within
        // a 0.1 tolerance, 1.2 is not.
        assert_eq!(hpa.step(10, 11, Some(0.1)), 10, "{file}");
        assert_eq!(hpa.step(10, 12, Some(0.1)), 12, "{file}");
        assert_eq!(hpa.step(5, 6, Some(0.1)), 6, "{file}");

        // With the manifest's own tolerance every step lands in one evaluation.
        let skipped = hpa.skipped(None);
        assert!(skipped.is_empty(), "{file}: the HPA skips {skipped:?}");

        // Where the cluster ignores the field, its 0.1 applies: the docs name the steps.
        let skipped = hpa.skipped(Some(CLUSTER_TOLERANCE));
        let listed = skipped
            .iter()
            .map(|(c, d)| format!("{c}→{d}"))
            .collect::<Vec<_>>()
            .join(", ");
        assert_eq!(listed, "10→9, 10→11, 11→10, 11→12, 12→11", "{file}");
        assert!(
            docs.contains(&listed),
            "docs/autoscale.md does not list the skipped steps {listed}"
        );
    }
}

/// `--allow-expand`: a decision whose replicas the partitions cap grows the topic — here on
/// the embedded broker, which has no CreatePartitions, so the growth fails, the failure is
/// reported in the decision with the broker's reason and the way around it, and the
/// autoscaler keeps running (exit 0 after its iterations). Without one --topic, or without
/// --gateway, the flag is refused.
#[test]
fn allow_expand_grows_the_topic_or_says_why_it_cannot() {
    let broker = broker_with_lag(100, &[10, 10, 10, 10]);
    let base = [
        "--bootstrap-servers",
        broker.bootstrap_servers(),
        "--group",
        GROUP,
        "--target",
        "10",
        "--replicas",
        "2",
        "--iterations",
        "1",
        "--json",
    ];
    let mut args = base.to_vec();
    args.extend([
        "--topic",
        TOPIC,
        "--allow-expand",
        "--gateway",
        "http://127.0.0.1:9",
    ]);
    let out = keyshift(&args);
    assert!(out.status.success(), "{}", describe(&out));
    let d = &decisions(&out)[0];
    assert_eq!(d["expand_to"], 36, "{d}");
    let expanded = d["expanded"].as_str().unwrap_or_default();
    assert!(
        expanded.contains("growth to 36 partitions failed")
            && expanded.contains("cannot add partitions to topic 'orders'")
            && expanded.contains("--active-partitions"),
        "{d}"
    );

    // Without --allow-expand the growth is only proposed.
    let out = keyshift(&base);
    let d = &decisions(&out)[0];
    assert_eq!(d["expand_to"], 36, "{d}");
    assert!(d["expanded"].is_null(), "{d}");

    let mut no_topic = base.to_vec();
    no_topic.extend(["--allow-expand", "--gateway", "http://127.0.0.1:9"]);
    let out = keyshift(&no_topic);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--allow-expand"));
    let mut no_gateway = base.to_vec();
    no_gateway.extend(["--topic", TOPIC, "--allow-expand"]);
    let out = keyshift(&no_gateway);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--gateway"));
}
