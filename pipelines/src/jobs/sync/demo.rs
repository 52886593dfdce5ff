//! The demonstration `vigil-sync` runs with neither replica given: two SQLite files under
//! `./vigil-sync/` with a `vehicles` table, edited on both sides since they last agreed.

use std::path::Path;
use std::sync::Arc;

use serde_json::{Map, Value};
use tracing::info;
use vigil_datasets::changes::{key_of, row_text};

use crate::connect::migrations;
use crate::connect::replica::{Replica, ReplicaUrl};
use crate::jobs::sync::agreed::agreed_row;

/// The demonstration's table.
pub const DEMO_TABLE: &str = "vehicles";

/// Creates the demonstration's two SQLite replicas under `dir` unless they exist: a
/// `vehicles` table the replicas once agreed on, then edited on both sides — an edit on
/// each, an edit of the same row on both (a conflict), a row added on each, a row deleted
/// on the remote.
pub fn prepare_demo(dir: &Path) -> anyhow::Result<()> {
    let local_path = dir.join("local.db");
    if local_path.exists() {
        return Ok(());
    }
    let runtime = Arc::new(crate::runtime::io::current_thread("demonstration")?);
    let schema = format!(
        "CREATE TABLE {DEMO_TABLE} (id INTEGER PRIMARY KEY, name TEXT NOT NULL, status TEXT NOT NULL, \
         updated_at INTEGER NOT NULL, origin TEXT NOT NULL DEFAULT 'local')"
    );
    let base = 1_767_225_600_000i64; // 2026-01-01
    let agreed: Vec<(i64, &str, &str)> = vec![
        (1, "falcon-1", "parked"),
        (2, "falcon-2", "parked"),
        (3, "rover-3", "charging"),
        (4, "rover-4", "parked"),
        (5, "drone-5", "flying"),
    ];
    let insert = |rows: &[(i64, &str, &str, i64, &str)]| {
        rows.iter()
            .map(|(id, name, status, at, origin)| {
                format!(
                    "INSERT INTO {DEMO_TABLE} VALUES ({id}, '{name}', '{status}', {}, '{origin}');",
                    base + at
                )
            })
            .collect::<String>()
    };
    let seeded: Vec<(i64, &str, &str, i64, &str)> = agreed
        .iter()
        .map(|(id, n, s)| (*id, *n, *s, 0, "remote"))
        .collect();
    let mut replicas = Vec::new();
    for (file, edits) in [
        (
            "local.db",
            format!(
                "UPDATE {DEMO_TABLE} SET status = 'on patrol', updated_at = {}, origin = 'local' WHERE id = 2;\
                 UPDATE {DEMO_TABLE} SET status = 'maintenance', updated_at = {}, origin = 'local' WHERE id = 4;{}",
                base + 60_000,
                base + 90_000,
                insert(&[(6, "rover-6", "parked", 30_000, "local")])
            ),
        ),
        (
            "remote.db",
            format!(
                "UPDATE {DEMO_TABLE} SET status = 'docked', updated_at = {}, origin = 'remote' WHERE id = 3;\
                 UPDATE {DEMO_TABLE} SET status = 'retired', updated_at = {}, origin = 'remote' WHERE id = 4;\
                 DELETE FROM {DEMO_TABLE} WHERE id = 5;{}",
                base + 45_000,
                base + 120_000,
                insert(&[(7, "drone-7", "flying", 50_000, "remote")])
            ),
        ),
    ] {
        let url = ReplicaUrl::Sqlite(dir.join(file));
        let mut replica = Replica::connect(&url, &runtime)?;
        migrations::migrate(&mut replica, false)?;
        replica.execute_batch(&format!("{schema};{}", insert(&seeded)))?;
        replicas.push((replica, edits));
    }
    // Both once agreed on the seeded rows: the local replica remembers it.
    let (local, _) = &mut replicas[0];
    let info = local.table(DEMO_TABLE)?;
    let rows = local.scan(&info)?;
    let agreed_rows: Vec<Map<String, Value>> = rows
        .iter()
        .map(|row| {
            let key = key_of(row, &info.key).unwrap_or_default();
            let at = row.get("updated_at").cloned().unwrap_or(Value::Null);
            agreed_row(DEMO_TABLE, &key, at, "remote", &row_text(row))
        })
        .collect();
    let agreed_table = local.table("sync_agreed")?;
    local.apply(&agreed_table, &agreed_rows, &[])?;
    for (replica, edits) in &mut replicas {
        replica.execute_batch(edits)?;
    }
    info!(message = "Demonstration replicas created.", dir = %dir.display());
    Ok(())
}
