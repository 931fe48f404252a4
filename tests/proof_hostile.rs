//! Proof: hostile trigger metadata. Every case goes through the real gRPC client to the real
//! server, on every RPC that takes metadata, and must come back `INVALID_ARGUMENT` naming the
//! offending key in a short message. Afterwards the server still answers correctly and is
//! SERVING. Also runs the fuzz target's body (`fuzz/check.rs`) over its seed corpus, so the
//! fuzz target cannot rot without CI noticing.

#[path = "../fuzz/check.rs"]
mod fuzz_check;

use std::{collections::HashMap, time::Duration};

use airflow_keda_scaler::{
    scaler::grpc::proto::externalscaler::{
        GetMetricsRequest, ScaledObjectRef, external_scaler_client::ExternalScalerClient,
    },
    scaler::model::worker_queue::excerpt,
};
use testkit::airflow::{AirflowVersion, FixtureRow};
use testkit::{
    db::TestDb,
    scaler::{create, health_of, metric, object, start, wait_ready},
};
use tonic::{Code, transport::Channel};
use tonic_health::pb::health_check_response::ServingStatus;

/// One hostile input: a name, the metadata, and the key the error must name.
struct Case {
    name: &'static str,
    metadata: HashMap<String, String>,
    key: String,
}

fn case(name: &'static str, pairs: &[(&str, &str)], key: &str) -> Case {
    Case {
        name,
        metadata: pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        key: key.to_string(),
    }
}

fn owned_case(name: &'static str, pairs: Vec<(String, String)>, key: &str) -> Case {
    Case {
        name,
        metadata: pairs.into_iter().collect(),
        key: key.to_string(),
    }
}

const MB: usize = 1 << 20;

fn cases() -> Vec<Case> {
    let mtpw = "maxTasksPerWorker";
    let mut cases = vec![
        // Numbers: out of range, wrong type, overflow, odd notations.
        case("zero", &[(mtpw, "0")], mtpw),
        case("negative", &[(mtpw, "-4")], mtpw),
        case("i64 min", &[(mtpw, "-9223372036854775808")], mtpw),
        case("above the maximum", &[(mtpw, "1000001")], mtpw),
        case("u64 overflow", &[(mtpw, "18446744073709551616")], mtpw),
        case("float", &[(mtpw, "2.5")], mtpw),
        case("exponent", &[(mtpw, "1e3")], mtpw),
        case("NaN", &[(mtpw, "NaN")], mtpw),
        case("infinity", &[(mtpw, "inf")], mtpw),
        case("hex", &[(mtpw, "0x10")], mtpw),
        case("blank", &[(mtpw, "   ")], mtpw),
        case("Arabic-Indic digits", &[(mtpw, "١٦")], mtpw),
        case("Unicode minus", &[(mtpw, "\u{2212}16")], mtpw),
        case("emoji", &[(mtpw, "🚀")], mtpw),
        case(
            "SQL in a number",
            &[(mtpw, "16; DROP TABLE task_instance; --")],
            mtpw,
        ),
        case("quoted number", &[(mtpw, "'16'")], mtpw),
        case(
            "FromEnv alias, not a number",
            &[("maxTasksPerWorkerFromEnv", "abc")],
            mtpw,
        ),
        case("maxWorkers zero", &[("maxWorkers", "0")], "maxWorkers"),
        case(
            "min above max",
            &[("minWorkers", "5"), ("maxWorkers", "2")],
            "minWorkers",
        ),
        case(
            "activation negative",
            &[("activationTasks", "-1")],
            "activationTasks",
        ),
        case(
            "activation overflow",
            &[("activationTasks", "99999999999999999999999")],
            "activationTasks",
        ),
        // Booleans.
        case("bool yes", &[("defaultExecutor", "yes")], "defaultExecutor"),
        case("bool 1", &[("defaultExecutor", "1")], "defaultExecutor"),
        // Lists.
        case("empty queue list", &[("queues", "")], "queues"),
        case("only commas", &[("queues", ",,,")], "queues"),
        case("NUL in a queue name", &[("queues", "a\0b")], "queues"),
        case("newline in a queue name", &[("queues", "a\nb")], "queues"),
        case(
            "executor name too long",
            &[("executorNames", &"E".repeat(1001))],
            "executorNames",
        ),
        case(
            "queue name too long",
            &[("queues", &"q".repeat(257))],
            "queues",
        ),
        // Worker-queue names.
        case(
            "undeclared worker queue",
            &[("workerQueue", "nope")],
            "workerQueue",
        ),
        case(
            "SQL as a worker-queue name",
            &[("workerQueue", "x'; DROP TABLE task_instance; --")],
            "workerQueue",
        ),
        case(
            "Unicode worker-queue name",
            &[("workerQueue", "ünïcødé-队列")],
            "workerQueue",
        ),
        // Keys.
        case(
            "misspelled key",
            &[("maxTaskPerWorker", "4")],
            "maxTaskPerWorker",
        ),
        case(
            "SQL as a key",
            &[("'; DROP TABLE task_instance; --", "1")],
            "'; DROP TABLE task_instance; --",
        ),
        case("empty key", &[("", "1")], ""),
        case(
            "Unicode key",
            &[("maxTasksPerWörker", "4")],
            "maxTasksPerWörker",
        ),
        case(
            "both key and FromEnv",
            &[(mtpw, "4"), ("maxTasksPerWorkerFromEnv", "4")],
            mtpw,
        ),
        case(
            "valid KEDA keys around a bad one",
            &[
                ("scalerAddress", "x:9090"),
                ("enableTLS", "true"),
                (mtpw, "0"),
            ],
            mtpw,
        ),
    ];
    // Megabyte values.
    cases.push(owned_case(
        "1 MB number",
        vec![(mtpw.into(), "9".repeat(MB))],
        mtpw,
    ));
    cases.push(owned_case(
        "1 MB queue name",
        vec![("queues".into(), "é".repeat(MB / 2))],
        "queues",
    ));
    cases.push(owned_case(
        "1 MB of escapes",
        vec![("defaultExecutor".into(), "\u{1}\u{e0001}".repeat(MB / 5))],
        "defaultExecutor",
    ));
    cases.push(owned_case(
        "1 MB worker-queue name",
        vec![("workerQueue".into(), "w".repeat(MB))],
        "workerQueue",
    ));
    cases.push(owned_case(
        "70 000 list entries",
        vec![("queues".into(), "q,".repeat(70_000))],
        "queues",
    ));
    let long_key = format!("k{}", "\u{7}".repeat(MB / 2));
    // Long unknown keys are echoed as an excerpt: the first 64 characters, escaped.
    let long_key_excerpt = excerpt(&long_key);
    cases.push(owned_case(
        "1 MB key",
        vec![(long_key, "1".into())],
        &long_key_excerpt,
    ));
    // Many keys.
    cases.push(owned_case(
        "65 keys",
        (0..65).map(|i| (format!("k{i}"), "v".into())).collect(),
        "scalerMetadata",
    ));
    cases.push(owned_case(
        "5000 keys",
        (0..5000)
            .map(|i| (format!("key-{i}"), format!("value-{i}")))
            .collect(),
        "scalerMetadata",
    ));
    cases.push(owned_case(
        "3000 keys with 1 KB values",
        (0..3000)
            .map(|i| (format!("k{i}"), "x".repeat(1024)))
            .collect(),
        "scalerMetadata",
    ));
    cases
}

fn scaled_object(metadata: &HashMap<String, String>) -> ScaledObjectRef {
    ScaledObjectRef {
        name: "hostile".into(),
        namespace: "airflow".into(),
        scaler_metadata: metadata.clone(),
    }
}

/// Every RPC that reads metadata, with `metadata`: the status of each (the streams fail when
/// they are opened).
async fn statuses(
    client: &mut ExternalScalerClient<Channel>,
    metadata: &HashMap<String, String>,
) -> Vec<(&'static str, Result<(), tonic::Status>)> {
    let r = || scaled_object(metadata);
    vec![
        ("IsActive", client.is_active(r()).await.map(drop)),
        ("GetMetricSpec", client.get_metric_spec(r()).await.map(drop)),
        (
            "GetMetrics",
            client
                .get_metrics(GetMetricsRequest {
                    scaled_object_ref: Some(r()),
                    metric_name: "airflow-tasks-default".into(),
                })
                .await
                .map(drop),
        ),
        (
            "StreamIsActive",
            client.stream_is_active(r()).await.map(drop),
        ),
        (
            "StreamMetricSpec",
            client.stream_metric_spec(r()).await.map(drop),
        ),
    ]
}

/// The number of hostile cases README and docs/proof.md state (both must say the same).
fn documented_case_count() -> usize {
    let count_before = |file: &str, marker: &str| -> usize {
        let text =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/").to_owned() + file)
                .unwrap();
        let at = text
            .find(marker)
            .unwrap_or_else(|| panic!("{file} no longer says `N{marker}`"));
        let digits: String = text[..at]
            .chars()
            .rev()
            .take_while(char::is_ascii_digit)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        digits.parse().unwrap()
    };
    let readme = count_before("README.md", " hostile metadata cases");
    let proof = count_before("docs/proof.md", " cases, each sent through the");
    assert_eq!(readme, proof, "README and docs/proof.md disagree");
    readme
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_metadata_is_invalid_argument_and_harmless() {
    let db = TestDb::sqlite().await;
    let rows: Vec<FixtureRow> = (0..5)
        .map(|i| FixtureRow::new("dag", &format!("t{i}"), "run", Some("queued"), "default"))
        .collect();
    create(&db, AirflowVersion::V3, &rows).await;
    let mut r = start(
        db.url(),
        Duration::from_millis(100),
        Duration::from_secs(30),
    )
    .await;
    wait_ready(&mut r.health).await;
    assert_eq!(metric(&mut r.client, "default").await.unwrap(), 5);

    let cases = cases();
    // README and docs/proof.md state how many cases this proof runs; they must stay true.
    assert_eq!(
        cases.len(),
        documented_case_count(),
        "cases run vs documented"
    );
    let mut longest = (0, "");
    let mut calls = 0;
    for case in &cases {
        for (rpc, result) in statuses(&mut r.client, &case.metadata).await {
            calls += 1;
            let status = result.expect_err(&format!("{}: {rpc} accepted it", case.name));
            assert_eq!(
                status.code(),
                Code::InvalidArgument,
                "{}: {rpc}: {status:?}",
                case.name
            );
            let message = status.message();
            assert!(
                message.contains(&format!("`{}`", case.key)),
                "{}: {rpc}: the message does not name `{}`: {message}",
                case.name,
                case.key
            );
            assert!(
                message.len() < 1024,
                "{}: {rpc}: {} bytes of message",
                case.name,
                message.len()
            );
            if message.len() > longest.0 {
                longest = (message.len(), case.name);
            }
        }
    }

    // Beyond gRPC's 4 MiB decode limit tonic refuses the message before our code sees it.
    let huge = HashMap::from([("queues".to_string(), "q".repeat(5 * MB))]);
    let err = r.client.is_active(scaled_object(&huge)).await.unwrap_err();
    assert!(
        matches!(err.code(), Code::OutOfRange | Code::ResourceExhausted),
        "{err:?}"
    );

    // The server is unaffected: same answers, SERVING.
    assert_eq!(metric(&mut r.client, "default").await.unwrap(), 5);
    let active = r
        .client
        .is_active(object(&[("workerQueue", "default")]))
        .await
        .unwrap()
        .into_inner();
    assert!(active.result);
    assert_eq!(
        health_of(&mut r.health, "readiness").await,
        ServingStatus::Serving
    );
    assert_eq!(health_of(&mut r.health, "").await, ServingStatus::Serving);
    eprintln!(
        "proof_hostile: {} cases x 5 RPCs = {calls} calls, all INVALID_ARGUMENT naming the key; \
         longest message {} bytes ({}); 5 MiB request refused by tonic ({:?}); server then \
         answered correctly and stayed SERVING",
        cases.len(),
        longest.0,
        longest.1,
        err.code()
    );
    r.scaler.stop().await.unwrap();
}

/// The fuzz target's body over its seed corpus (`fuzz/seeds/metadata`) and a few inputs built
/// here: CI proves that the target compiles and that the seeds hold the invariants.
#[test]
fn fuzz_body_runs_on_seed_corpus() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/metadata");
    let mut seeds: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.unwrap().path();
            (path.display().to_string(), std::fs::read(&path).unwrap())
        })
        .collect();
    assert!(seeds.len() >= 20, "{} seeds", seeds.len());
    seeds.push((
        "built: valid".into(),
        fuzz_check::encode_metadata(&[("workerQueue", "ml"), ("maxWorkers", "4")]),
    ));
    seeds.push((
        "built: raw key".into(),
        fuzz_check::encode_metadata(&[("maxTaskPerWorker", "4")]),
    ));
    seeds.push((
        "built: file".into(),
        fuzz_check::encode_file(fuzz_check::DECLARED),
    ));
    seeds.push(("empty".into(), Vec::new()));
    for (name, data) in &seeds {
        let run = std::panic::catch_unwind(|| fuzz_check::run(data));
        assert!(run.is_ok(), "fuzz body failed on {name}");
    }
    // The layout decodes what it encodes.
    let pairs = [
        ("queues", "a,b"),
        ("scalerAddress", "x:1"),
        ("other", "v=w"),
    ];
    let decoded = fuzz_check::decode_metadata(&fuzz_check::encode_metadata(&pairs)[1..]);
    let want: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    assert_eq!(decoded, want);
}
