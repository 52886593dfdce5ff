//! Change capture from a real PostgreSQL server with logical decoding (a throwaway cluster with
//! `wal_level = logical` and wal2json): the slot gives every insert, update and delete with the
//! row's origin and time, gives them again until it is advanced, and after that only what is new.

#![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

use std::sync::Arc;

use vigil_datasets::changes::FeedParams;
use vigil_operators::ChangeOp;
use vigil_pipelines::connect::replica::{Replica, ReplicaUrl};
use vigil_pipelines::sources::pg_capture::LogicalSlot;
use vigil_tests::postgres::PgCluster;

#[test]
fn a_slot_gives_changes_until_advanced_and_survives_a_restart() {
    let cluster = PgCluster::start_logical();
    let runtime = Arc::new(tokio::runtime::Runtime::new().unwrap());
    let url = ReplicaUrl::parse(&cluster.url).unwrap();
    let mut db = Replica::connect(&url, &runtime).unwrap();
    db.execute_batch(
        "CREATE TABLE orders (id integer PRIMARY KEY, qty integer NOT NULL, \
         updated_at timestamptz NOT NULL, origin text NOT NULL); \
         CREATE TABLE other (id integer PRIMARY KEY)",
    )
    .unwrap();
    let slot = LogicalSlot::new("vigil_test", &["orders".into()]).unwrap();
    slot.ensure(&mut db).unwrap();
    slot.ensure(&mut db).unwrap(); // idempotent
    db.execute_batch(
        "INSERT INTO orders VALUES (1, 10, '2026-01-01T00:00:00Z', 'local'), \
                                   (2, 20, '2026-01-01T00:00:01Z', 'remote'); \
         INSERT INTO other VALUES (1)",
    )
    .unwrap();
    db.execute_batch(
        "UPDATE orders SET qty = 11, updated_at = '2026-01-01T00:01:00Z' WHERE id = 1",
    )
    .unwrap();
    db.execute_batch("DELETE FROM orders WHERE id = 2").unwrap();

    let options = FeedParams {
        origin: "local".into(),
        ..FeedParams::default()
    };
    let first = slot.peek(&mut db, 100, &options).unwrap();
    assert!(first.dead_letters.is_empty(), "{:?}", first.dead_letters);
    let seen: Vec<(&str, &str, ChangeOp, &str)> = first
        .changes
        .iter()
        .map(|c| (c.table.as_str(), c.key.as_str(), c.op, c.origin.as_str()))
        .collect();
    assert_eq!(
        seen,
        [
            ("public.orders", "[1]", ChangeOp::Insert, "local"),
            ("public.orders", "[2]", ChangeOp::Insert, "remote"),
            ("public.orders", "[1]", ChangeOp::Update, "local"),
            ("public.orders", "[2]", ChangeOp::Delete, "local"),
        ],
        "only the followed table; a row's origin column names who wrote it"
    );
    assert_eq!(first.changes[2].updated_at, Some(1_767_225_660_000));
    // The delete carries the commit time, so last-writer-wins can weigh it.
    assert!(
        first.changes[3]
            .updated_at
            .is_some_and(|t| t > 1_767_225_660_000)
    );

    // Not advanced: the same changes again.
    let again = slot.peek(&mut db, 100, &options).unwrap();
    assert_eq!(again.changes, first.changes);

    // Advanced: gone for good, across a server restart.
    slot.advance(&mut db, first.upto.as_deref().unwrap())
        .unwrap();
    drop(db);
    cluster.stop();
    cluster.start();
    let mut db = Replica::connect(&url, &runtime).unwrap();
    assert!(
        slot.peek(&mut db, 100, &options)
            .unwrap()
            .changes
            .is_empty()
    );
    db.execute_batch(
        "UPDATE orders SET qty = 12, updated_at = now(), origin = 'local' WHERE id = 1",
    )
    .unwrap();
    let next = slot.peek(&mut db, 100, &options).unwrap();
    assert_eq!(next.changes.len(), 1);
    assert_eq!(next.changes[0].op, ChangeOp::Update);
    slot.drop_slot(&mut db).unwrap();
    assert!(
        db.query_text("SELECT slot_name::text FROM pg_replication_slots", &[])
            .unwrap()
            .is_empty()
    );
}
