//! The CouchDB `_changes` listener against a CouchDB-compatible server (pouchdb-server, started
//! by the fixture) and a Kafka-protocol broker (tansu): only metadata is forwarded, the
//! checkpoint makes a second run pick up where the first stopped, an unreachable server is
//! waited for; and the recorded responses of real CouchDB parse.

#![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

use std::path::Path;
use std::time::Duration;

use vigil_pipelines::jobs::couchdb::{ChangeOut, Checkpoint, Feed, Listener};
use vigil_pipelines::runtime::stop::Stop;
use vigil_pipelines::sources::couchdb::{ChangeMeta, FeedLine, parse_line, parse_response};
use vigil_tests::couchdb::{PouchServer, free_port};
use vigil_tests::kafka::Broker;

fn listener(server: &str, db: &str, checkpoint: &Path) -> Listener {
    Listener {
        server: server.into(),
        db: db.into(),
        feed: Feed::Longpoll,
        poll: Duration::from_millis(100),
        checkpoint: Checkpoint::new(checkpoint),
        once: true,
        metrics: vigil_pipelines::runtime::metrics::Metrics::default(),
    }
}

#[test]
fn recorded_couchdb_responses_parse() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../datasets/changefeeds/couchdb");
    let body = std::fs::read_to_string(dir.join("changes_style_all_docs.json")).unwrap();
    let (changes, last) = parse_response(&body, 1).unwrap();
    let kinds: Vec<(String, String)> = changes
        .into_iter()
        .map(|c| c.unwrap())
        .map(|c| (c.id, c.kind))
        .collect();
    assert_eq!(
        kinds,
        [
            ("6478c2ae800dfc387396d14e1fc39626".into(), "updated".into()),
            ("5bbc9ca465f1b0fcd62362168a7c8831".into(), "deleted".into()),
            ("729eb57437745e506b333068fff665ae".into(), "conflict".into()),
        ]
    );
    assert!(last.starts_with("5-g1AAAAIr"));

    let feed = std::fs::read_to_string(dir.join("changes_feed_continuous.ndjson")).unwrap();
    let lines: Vec<FeedLine> = feed.lines().map(|l| parse_line(l, 1)).collect();
    let ids: Vec<(&str, &str)> = lines
        .iter()
        .filter_map(|l| match l {
            FeedLine::Change(c) => Some((c.id.as_str(), c.kind.as_str())),
            _ => None,
        })
        .collect();
    assert_eq!(ids, [("deleted", "deleted"), ("updated", "updated")]);
}

#[test]
fn changes_reach_kafka_as_metadata_and_the_checkpoint_resumes() {
    let couch = PouchServer::start();
    couch.create_db("vehicles");
    let secret = serde_json::json!({"type": "vehicle", "secret": "launch codes"});
    let mut revs = Vec::new();
    for i in 0..30 {
        revs.push(couch.put("vehicles", &format!("veh-{i}"), None, secret.clone()));
    }
    for (i, rev) in revs.iter_mut().enumerate().take(10) {
        *rev = couch.put("vehicles", &format!("veh-{i}"), Some(rev), secret.clone());
    }
    for (i, rev) in revs.iter().enumerate().skip(25) {
        couch.delete("vehicles", &format!("veh-{i}"), rev);
    }

    let broker = Broker::start();
    broker.create_topic("couchdb-changes", 2);
    let tmp = tempfile::tempdir().unwrap();
    let checkpoint = tmp.path().join("vehicles.seq");
    let to = format!("kafka://{}/couchdb-changes", broker.address());
    let mut out = ChangeOut::open(&to).unwrap();
    let first = listener(&couch.url(), "vehicles", &checkpoint);
    let stats = first.run(&mut out, &Stop::default()).unwrap();
    assert_eq!((stats.forwarded, stats.bad), (30, 0));
    // The same, as `--metrics` serves it; and every CouchDB figure the dashboard shows.
    let exposed = first.metrics.render();
    assert!(
        exposed.contains("vigil_couchdb_changes_forwarded_total 30\n"),
        "{exposed}"
    );
    assert_eq!(
        first.metrics.waiting(),
        Vec::<&str>::new(),
        "ready once read"
    );
    let missing =
        vigil_tests::dashboard::missing_from(&exposed, |n| n.starts_with("vigil_couchdb_"));
    assert!(missing.is_empty(), "the dashboard names {missing:?}");

    let consumed = broker.consume_all("couchdb-changes");
    assert_eq!(consumed.len(), 30);
    let mut kinds = std::collections::BTreeMap::new();
    for message in &consumed {
        assert!(!message.value.contains("launch codes"), "{}", message.value);
        let change: ChangeMeta = serde_json::from_str(&message.value).unwrap();
        assert_eq!(message.key.as_deref(), Some(change.id.as_str()));
        let fields: serde_json::Value = serde_json::from_str(&message.value).unwrap();
        let mut names: Vec<&String> = fields.as_object().unwrap().keys().collect();
        names.sort();
        assert_eq!(names, ["id", "seq", "ts", "type"]);
        *kinds.entry(change.kind).or_insert(0) += 1;
    }
    let expected: std::collections::BTreeMap<String, i32> =
        [("created", 15), ("updated", 10), ("deleted", 5)]
            .into_iter()
            .map(|(k, n)| (k.to_owned(), n))
            .collect();
    assert_eq!(kinds, expected);
    let position = std::fs::read_to_string(&checkpoint).unwrap();
    assert!(!position.is_empty() && position != "0");

    // Four more documents: a second run forwards only those.
    for i in 30..34 {
        couch.put("vehicles", &format!("veh-{i}"), None, secret.clone());
    }
    let stats = listener(&couch.url(), "vehicles", &checkpoint)
        .run(&mut out, &Stop::default())
        .unwrap();
    assert_eq!(stats.forwarded, 4);
    assert_eq!(broker.consume_all("couchdb-changes").len(), 34);
}

#[test]
fn an_unreachable_couchdb_is_retried_until_it_answers() {
    let port = free_port();
    let tmp = tempfile::tempdir().unwrap();
    let checkpoint = tmp.path().join("late.seq");
    let out_path = tmp.path().join("changes.ndjson");
    let server = format!("http://127.0.0.1:{port}");
    let following = std::thread::spawn({
        let (checkpoint, out_path) = (checkpoint.clone(), out_path.clone());
        move || {
            let mut out = ChangeOut::open(&out_path.display().to_string()).unwrap();
            listener(&server, "late", &checkpoint).run(&mut out, &Stop::default())
        }
    });
    // Nothing listens yet: the listener backs off and retries.
    std::thread::sleep(Duration::from_millis(1500));
    let couch = PouchServer::start_on(port);
    couch.create_db("late");
    for i in 0..3 {
        couch.put(
            "late",
            &format!("doc-{i}"),
            None,
            serde_json::json!({"n": i}),
        );
    }
    let stats = following.join().unwrap().unwrap();
    assert!(stats.retries > 0, "{stats:?}");
    assert_eq!(stats.forwarded, 3);
    let lines = std::fs::read_to_string(&out_path).unwrap();
    assert_eq!(lines.lines().count(), 3);
}

/// Waits until `done` holds, failing the test after `bound`.
fn wait_for(bound: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + bound;
    while !done() {
        assert!(
            std::time::Instant::now() < deadline,
            "{what} within {bound:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// How many times each document id reached the topic.
fn deliveries(broker: &Broker, topic: &str) -> std::collections::BTreeMap<String, usize> {
    let mut counts = std::collections::BTreeMap::new();
    for message in broker.consume_all(topic) {
        *counts.entry(message.key.unwrap_or_default()).or_insert(0) += 1;
    }
    counts
}

#[test]
fn a_batch_the_broker_did_not_take_is_sent_again_and_later_ones_follow() {
    let couch = PouchServer::start();
    couch.create_db("fleet");
    let broker = Broker::start();
    broker.create_topic("fleet-changes", 1);
    let tmp = tempfile::tempdir().unwrap();
    let checkpoint = tmp.path().join("fleet.seq");
    let to = format!("kafka://{}/fleet-changes", broker.address());
    let stop = Stop::default();
    let following = std::thread::spawn({
        let (checkpoint, stop, server) = (checkpoint.clone(), stop.clone(), couch.url());
        move || {
            let mut out = ChangeOut::kafka(&to, Duration::from_secs(2)).unwrap();
            let listener = Listener {
                once: false,
                ..listener(&server, "fleet", &checkpoint)
            };
            listener.run(&mut out, &stop)
        }
    });
    let put = |range: std::ops::Range<i32>| {
        for i in range {
            couch.put(
                "fleet",
                &format!("car-{i:02}"),
                None,
                serde_json::json!({"n": i}),
            );
        }
    };
    put(0..5);
    wait_for(
        Duration::from_secs(30),
        "the first changes reach Kafka",
        || deliveries(&broker, "fleet-changes").len() == 5,
    );
    let before = std::fs::read_to_string(&checkpoint).unwrap();

    // The broker hangs while changes come in: their delivery times out, and the checkpoint
    // must not pass them.
    broker.pause();
    put(5..10);
    std::thread::sleep(Duration::from_secs(8));
    assert_eq!(std::fs::read_to_string(&checkpoint).unwrap(), before);
    broker.resume();

    // Once the broker answers, the batch goes through and so does every later one.
    wait_for(
        Duration::from_secs(60),
        "the held-back changes reach Kafka",
        || deliveries(&broker, "fleet-changes").len() == 10,
    );
    put(10..13);
    wait_for(Duration::from_secs(60), "later changes reach Kafka", || {
        deliveries(&broker, "fleet-changes").len() == 13
    });
    wait_for(Duration::from_secs(10), "the checkpoint moves on", || {
        std::fs::read_to_string(&checkpoint).unwrap() != before
    });
    stop.trigger();
    // A change ends the long poll the listener waits in, so that it sees the stop at once.
    put(13..14);
    let stats = following.join().unwrap().unwrap();
    assert!(stats.retries > 0, "the outage was retried: {stats:?}");

    // Exactly once, except that the batch sent during the outage may have arrived twice.
    for (id, count) in deliveries(&broker, "fleet-changes") {
        let n: i32 = id.trim_start_matches("car-").parse().unwrap();
        match n {
            5..10 => assert!((1..=2).contains(&count), "{id} arrived {count} times"),
            _ => assert_eq!(count, 1, "{id} arrived {count} times"),
        }
    }
}
