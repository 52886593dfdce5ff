//! A batch of changes, one transaction's worth, and its bytes in the spill.

use anyhow::Context;
use arrow::array::RecordBatch;

use crate::connect::tables::ReplicaTable;

/// What one table gets in a batch: keys to delete, then rows to upsert.
#[derive(Clone, Debug)]
pub struct TableChange {
    /// The table.
    pub table: ReplicaTable,
    /// Rows whose key is to be deleted (the key columns are read; others are ignored).
    pub deletes: Vec<RecordBatch>,
    /// Rows to insert or update, by the table's columns' names.
    pub upserts: Vec<RecordBatch>,
}

impl TableChange {
    /// Rows deleted and upserted.
    pub fn rows(&self) -> usize {
        self.deletes
            .iter()
            .chain(&self.upserts)
            .map(RecordBatch::num_rows)
            .sum()
    }
}

/// One transaction's worth: every change a part of a job made before `before`.
#[derive(Clone, Debug)]
pub struct Batch {
    /// Which output of the job (`alerts/0of2`): its progress row.
    pub part: String,
    /// Event time before which the part's output is complete in this batch and those before.
    pub before: i64,
    /// The changes, one per table at most.
    pub changes: Vec<TableChange>,
}

impl Batch {
    /// Rows the batch changes.
    pub fn rows(&self) -> usize {
        self.changes.iter().map(TableChange::rows).sum()
    }
}

/// A batch as bytes, for the spill: the part, the position, then each change's deletes and
/// upserts as Arrow IPC streams.
pub fn encode_batch(batch: &Batch) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    put_bytes(&mut out, batch.part.as_bytes());
    out.extend_from_slice(&batch.before.to_le_bytes());
    out.extend_from_slice(&(batch.changes.len() as u32).to_le_bytes());
    for change in &batch.changes {
        out.push(change.table.id());
        for rows in [&change.deletes, &change.upserts] {
            out.extend_from_slice(&(rows.len() as u32).to_le_bytes());
            for batch in rows {
                let mut ipc = Vec::new();
                {
                    let mut writer =
                        arrow::ipc::writer::StreamWriter::try_new(&mut ipc, &batch.schema())?;
                    writer.write(batch)?;
                    writer.finish()?;
                }
                put_bytes(&mut out, &ipc);
            }
        }
    }
    Ok(out)
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(bytes);
}

/// Reads back what [`encode_batch`] wrote.
pub fn decode_batch(bytes: &[u8]) -> anyhow::Result<Batch> {
    let mut at = 0usize;
    let mut take = |n: usize| -> anyhow::Result<&[u8]> {
        let slice = bytes
            .get(at..at + n)
            .context("a spilled replica batch is cut short")?;
        at += n;
        Ok(slice)
    };
    let u32_at = |s: &[u8]| u32::from_le_bytes(s.try_into().unwrap_or_default()) as usize;
    let len = u32_at(take(4)?);
    let part = String::from_utf8_lossy(take(len)?).into_owned();
    let before = i64::from_le_bytes(take(8)?.try_into().unwrap_or_default());
    let count = u32_at(take(4)?);
    let mut changes = Vec::with_capacity(count);
    for _ in 0..count {
        let id = take(1)?[0];
        let table = ReplicaTable::from_id(id).context("a spilled batch names an unknown table")?;
        let mut lists: [Vec<RecordBatch>; 2] = [Vec::new(), Vec::new()];
        for list in &mut lists {
            let n = u32_at(take(4)?);
            for _ in 0..n {
                let len = u32_at(take(4)?);
                let ipc = take(len)?;
                let reader =
                    arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(ipc), None)?;
                for batch in reader {
                    list.push(batch?);
                }
            }
        }
        let [deletes, upserts] = lists;
        changes.push(TableChange {
            table,
            deletes,
            upserts,
        });
    }
    Ok(Batch {
        part,
        before,
        changes,
    })
}
