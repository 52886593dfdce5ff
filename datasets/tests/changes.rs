//! Change-feed loaders on the real samples in `datasets/changefeeds/`.

#![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::{Value, json};
use vigil_datasets::changes::{CollectedChanges, FeedFormat, FeedParams, parse_feed};
use vigil_operators::{Change, ChangeOp};

fn sample(path: &str) -> (String, Vec<u8>) {
    let full = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("changefeeds")
        .join(path);
    (path.to_owned(), std::fs::read(&full).unwrap())
}

fn read(path: &str, options: &FeedParams) -> CollectedChanges {
    let (name, bytes) = sample(path);
    let mut out = CollectedChanges::default();
    parse_feed(&bytes, &name, FeedFormat::Auto, options, &mut out);
    out
}

/// (key, op) of every change, in order.
fn keys(out: &CollectedChanges) -> Vec<(&str, ChangeOp)> {
    out.changes.iter().map(|c| (c.key.as_str(), c.op)).collect()
}

fn row(text: &Option<String>) -> Value {
    serde_json::from_str(text.as_deref().unwrap()).unwrap()
}

/// The wal2json tests' tables: keys by table, as the regression tests create them.
fn wal2json_options() -> FeedParams {
    FeedParams {
        origin: "pg".into(),
        table_keys: BTreeMap::from([
            (
                "table_with_pk".into(),
                vec!["b".into(), "c".into(), "d".into()],
            ),
            ("table_with_unique".into(), vec!["g".into(), "n".into()]),
        ]),
        ..FeedParams::default()
    }
}

#[test]
fn debezium_envelopes_with_and_without_schema() {
    let options = FeedParams {
        origin: "mysql".into(),
        ..FeedParams::default()
    };
    let bare = read("debezium/serde-without-schema.json", &options);
    let wrapped = read("debezium/serde-with-schema.json", &options);
    assert!(bare.dead_letters.is_empty() && wrapped.dead_letters.is_empty());
    assert_eq!(bare.changes.len(), 1);
    let insert = &bare.changes[0];
    assert_eq!(
        (insert.table.as_str(), insert.key.as_str(), insert.op),
        ("inventory.customers", "[1004]", ChangeOp::Insert)
    );
    assert_eq!(row(&insert.after)["first_name"], "Anne");
    assert_eq!(insert.before, None);
    // The source's own ts_ms is 0 (unknown) in the sample, so the envelope's is used.
    assert_eq!(insert.updated_at, Some(1_465_491_411_815));
    assert_eq!(insert.position, "mysql-bin.000003:154");
    assert_eq!(insert.origin, "mysql");
    // The Kafka Connect schema changes nothing about the change.
    let mut from_schema = wrapped.changes.clone();
    from_schema
        .iter_mut()
        .for_each(|c| c.position.clone_from(&insert.position));
    assert_eq!(wrapped.changes.len(), 1);
    assert_eq!(
        (
            &from_schema[0].table,
            &from_schema[0].key,
            from_schema[0].op
        ),
        (&insert.table, &insert.key, insert.op)
    );

    let update = read("debezium/serde-update.json", &options);
    let update = &update.changes[0];
    assert_eq!(
        (update.key.as_str(), update.op),
        ("[1004]", ChangeOp::Update)
    );
    assert_eq!(row(&update.before)["first_name"], "Anne-Marie");
    assert_eq!(row(&update.after)["first_name"], "Anne");
}

#[test]
fn wal2json_versions_one_and_two_agree() {
    let options = wal2json_options();
    for (v1, v2) in [
        (
            "wal2json/insert1.q1.v1.ndjson",
            "wal2json/insert1.q2.v2.ndjson",
        ),
        (
            "wal2json/update1.q1.v1.ndjson",
            "wal2json/update1.q2.v2.ndjson",
        ),
    ] {
        let (one, two) = (read(v1, &options), read(v2, &options));
        let what = |c: &Change| (c.table.clone(), c.key.clone(), c.op, c.after.clone());
        let one_changes: Vec<_> = one.changes.iter().map(what).collect();
        let two_changes: Vec<_> = two.changes.iter().map(what).collect();
        assert!(!one_changes.is_empty(), "{v1}");
        assert_eq!(one_changes, two_changes, "{v1} and {v2}");
        // A table without a key: a dead letter that says what to do, in both versions alike.
        assert_eq!(one.dead_letters.len(), two.dead_letters.len());
        for (_, reason) in one.dead_letters.iter().chain(&two.dead_letters) {
            assert!(reason.contains("--key"), "{reason}");
        }
    }

    let inserts = read("wal2json/insert1.q2.v2.ndjson", &options);
    let tables: Vec<&str> = inserts.changes.iter().map(|c| c.table.as_str()).collect();
    assert_eq!(
        tables,
        [
            "public.table_with_pk",
            "public.table_with_unique",
            "test \"schema.test \" with 'quotes'"
        ]
    );
    assert_eq!(inserts.changes[0].key, "[1,2,3]");
    assert_eq!(inserts.changes[2].key, "[1]");
    let after = row(&inserts.changes[0].after);
    assert_eq!(after["h"], "teste     ");
    assert_eq!(after["n"], true);
    assert_eq!(inserts.dead_letters.len(), 1, "table_without_pk has no key");
    assert!(
        inserts.dead_letters[0].0.ends_with(":3"),
        "{:?}",
        inserts.dead_letters
    );

    // The second update sets b = -1, part of the key: the row moves, the old key is gone.
    let updates = read("wal2json/update1.q2.v2.ndjson", &options);
    assert_eq!(
        keys(&updates),
        [
            ("[1,2,3]", ChangeOp::Update),
            ("[1,2,3]", ChangeOp::Delete),
            ("[-1,2,3]", ChangeOp::Update)
        ]
    );
    assert_eq!(
        row(&updates.changes[0].before),
        json!({"b": 1, "c": 2, "d": 3})
    );

    let deletes = read("wal2json/delete1.q2.v2.ndjson", &options);
    assert_eq!(deletes.changes.len(), 1);
    let delete = &deletes.changes[0];
    assert_eq!(
        (delete.key.as_str(), delete.op),
        ("[1,2,3]", ChangeOp::Delete)
    );
    assert_eq!(delete.after, None);
}

#[test]
fn wal2json_timestamps_positions_and_a_moved_key() {
    let feed = concat!(
        r#"{"action":"B","xid":7,"timestamp":"2024-01-02 03:04:05.678+00"}"#,
        "\n",
        r#"{"action":"U","lsn":"0/16B3748","schema":"public","table":"t","columns":[{"name":"id","type":"integer","value":2},{"name":"v","type":"text","value":"x"}],"identity":[{"name":"id","type":"integer","value":1}]}"#,
        "\n",
        r#"{"action":"C","xid":7,"nextlsn":"0/16B3800"}"#,
        "\n"
    );
    let mut out = CollectedChanges::default();
    parse_feed(
        feed.as_bytes(),
        "slot",
        FeedFormat::Wal2Json,
        &FeedParams::default(),
        &mut out,
    );
    assert!(out.dead_letters.is_empty(), "{:?}", out.dead_letters);
    assert_eq!(
        keys(&out),
        [("[1]", ChangeOp::Delete), ("[2]", ChangeOp::Update)]
    );
    assert!(
        out.changes
            .iter()
            .all(|c| c.updated_at == Some(1_704_164_645_678))
    );
    assert!(out.changes.iter().all(|c| c.position == "0/16B3748"));
    assert_eq!(out.resolved, ["0/16B3800"]);
}

#[test]
fn cockroachdb_changefeeds_with_hlc_times_duplicates_and_resolved() {
    let options = FeedParams {
        origin: "crdb".into(),
        ..FeedParams::default()
    };
    let employees = read(
        "cockroachdb/employees_updated_per_key_order.ndjson",
        &options,
    );
    assert!(employees.dead_letters.is_empty());
    assert_eq!(employees.changes.len(), 8);
    let first = &employees.changes[0];
    assert_eq!(
        first.table, "employees_updated_per_key_order",
        "named after the file"
    );
    assert_eq!((first.key.as_str(), first.op), ("[1]", ChangeOp::Update));
    assert_eq!(first.updated_at, Some(1_701_102_296_662));
    assert_eq!(first.position, "1701102296662969433.0000000000");
    let terry: Vec<String> = employees
        .changes
        .iter()
        .filter(|c| c.key == "[1]")
        .map(|c| row(&c.after)["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(terry, ["Terry", "Terri", "Terrence"]);

    let vehicles = read("cockroachdb/vehicles_wrapped_cloudstorage.json", &options);
    assert_eq!(
        vehicles.changes[0].key,
        r#"["seattle","68ee1f95-3137-48e2-8ce3-34ac2d18c7c8"]"#
    );

    // A delete, a repeated message (at least once), a bare-envelope row, a resolved line.
    let feed = concat!(
        r#"{"after": null, "key": [3], "updated": "1701102400000000000.0000000000"}"#,
        "\n",
        r#"{"after": null, "key": [3], "updated": "1701102400000000000.0000000000"}"#,
        "\n",
        r#"{"id": 9, "name": "Sam", "__crdb__": {"updated": "1701102500000000000.0000000001"}}"#,
        "\n",
        r#"{"resolved": "1701102600000000000.0000000000"}"#,
        "\n"
    );
    let mut out = CollectedChanges::default();
    let options = FeedParams {
        table: Some("employees".into()),
        ..options
    };
    parse_feed(
        feed.as_bytes(),
        "feed",
        FeedFormat::Auto,
        &options,
        &mut out,
    );
    assert!(out.dead_letters.is_empty(), "{:?}", out.dead_letters);
    assert_eq!(
        out.changes[0], out.changes[1],
        "a repeat is the same change"
    );
    assert_eq!(out.changes[0].op, ChangeOp::Delete);
    let bare = &out.changes[2];
    assert_eq!(
        (bare.key.as_str(), bare.table.as_str()),
        ("[9]", "employees")
    );
    assert_eq!(row(&bare.after), json!({"id": 9, "name": "Sam"}));
    assert_eq!(out.resolved, ["1701102600000000000.0000000000"]);
}

#[test]
fn couchdb_changes_with_deletes_and_conflicts() {
    let options = FeedParams {
        origin: "couch".into(),
        table: Some("vehicles".into()),
        ..FeedParams::default()
    };
    let all = read("couchdb/changes_style_all_docs.json", &options);
    assert!(all.dead_letters.is_empty());
    let ops: Vec<ChangeOp> = all.changes.iter().map(|c| c.op).collect();
    assert_eq!(ops, [ChangeOp::Update, ChangeOp::Delete, ChangeOp::Update]);
    assert_eq!(
        all.changes[1].key,
        r#"["5bbc9ca465f1b0fcd62362168a7c8831"]"#
    );
    assert_eq!(all.changes[1].after, None);
    let conflicted = row(&all.changes[2].after);
    assert_eq!(conflicted["_rev"], "6-460637e73a6288cb24d532bf91f32969");
    assert_eq!(
        conflicted["_conflicts"],
        json!(["5-eeaa298781f60b7bcae0c91bdedd1b87"])
    );
    assert!(
        all.changes
            .iter()
            .all(|c| c.table == "vehicles" && c.position.len() > 10)
    );
    assert_eq!(all.resolved.len(), 1, "last_seq");

    let continuous = read("couchdb/changes_feed_continuous.ndjson", &options);
    assert_eq!(
        keys(&continuous),
        [
            (r#"["deleted"]"#, ChangeOp::Delete),
            (r#"["updated"]"#, ChangeOp::Update)
        ]
    );
}

#[test]
fn malformed_documents_become_dead_letters_and_the_rest_is_read() {
    let feed = concat!(
        "not json at all\n",
        r#"{"op": "x", "after": {"id": 1}}"#,
        "\n",
        r#"{"op": "c", "after": {"name": "no id"}, "source": {"table": "t"}}"#,
        "\n",
        r#"{"action": "I", "schema": "public", "table": "t", "columns": "oops"}"#,
        "\n",
        r#"{"hello": "world"}"#,
        "\n",
        r#"{"op": "d", "before": {"id": 5}, "source": {"table": "t"}, "ts_ms": 1000}"#,
        "\n"
    );
    let mut out = CollectedChanges::default();
    parse_feed(
        feed.as_bytes(),
        "feed.ndjson",
        FeedFormat::Auto,
        &FeedParams::default(),
        &mut out,
    );
    assert_eq!(out.changes.len(), 1, "the good delete is read");
    assert_eq!(out.changes[0].key, "[5]");
    let reasons: Vec<String> = out
        .dead_letters
        .iter()
        .map(|(origin, reason)| format!("{origin} {reason}"))
        .collect();
    assert_eq!(reasons.len(), 5, "{reasons:#?}");
    assert!(
        reasons[0].starts_with("feed.ndjson:1 not JSON"),
        "{reasons:#?}"
    );
    assert!(reasons[1].contains("unknown op"), "{reasons:#?}");
    assert!(reasons[2].contains("no key column id"), "{reasons:#?}");
    assert!(reasons[3].contains("not an array"), "{reasons:#?}");
    assert!(reasons[4].contains("--format"), "{reasons:#?}");
}

#[test]
fn a_composite_key_keeps_the_key_order_not_the_alphabet() {
    let feed = concat!(
        r#"{"action":"D","schema":"public","table":"t","identity":[{"name":"region","type":"text","value":"eu"},{"name":"id","type":"integer","value":7}]}"#,
        "\n",
        r#"{"action":"I","schema":"public","table":"t","columns":[{"name":"id","type":"integer","value":8},{"name":"region","type":"text","value":"us"}],"pk":[{"name":"region","type":"text"},{"name":"id","type":"integer"}]}"#,
        "\n"
    );
    let mut out = CollectedChanges::default();
    parse_feed(
        feed.as_bytes(),
        "slot",
        FeedFormat::Wal2Json,
        &FeedParams::default(),
        &mut out,
    );
    assert!(out.dead_letters.is_empty(), "{:?}", out.dead_letters);
    assert_eq!(
        keys(&out),
        [
            (r#"["eu",7]"#, ChangeOp::Delete),
            (r#"["us",8]"#, ChangeOp::Insert)
        ]
    );
}
