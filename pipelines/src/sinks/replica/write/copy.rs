//! Rows sent in PostgreSQL's binary `COPY` format, encoded in chunks so that encoding and
//! sending overlap.

use arrow::array::{Array, RecordBatch};
use bytes::{BufMut, Bytes, BytesMut};
use futures::SinkExt;

use super::values::{Values, json_list, project, values};
use crate::connect::tables::Column;

/// Microseconds from the Unix epoch to PostgreSQL's (2000-01-01).
const PG_EPOCH_US: i64 = 946_684_800_000_000;

/// Rows per `COPY` message: a few megabytes, so that encoding and sending overlap.
const COPY_CHUNK_ROWS: usize = 16_384;

/// Appends `rows` of the batch to `buf` in PostgreSQL's binary `COPY` row format.
fn encode_copy_rows(
    values: &[Values<'_>],
    rows: std::ops::Range<usize>,
    keep: Option<&[bool]>,
    buf: &mut BytesMut,
    scratch: &mut Vec<u8>,
) {
    for row in rows {
        if keep.is_some_and(|k| !k[row]) {
            continue;
        }
        buf.put_i16(values.len() as i16);
        for column in values {
            let null = match column {
                Values::Text(a) => a.is_null(row),
                Values::Float(a) => a.is_null(row),
                Values::Int(a) => a.is_null(row),
                Values::Bool(a) => a.is_null(row),
                Values::Timestamp(a) => a.is_null(row),
                Values::Bytes(a) => a.is_null(row),
                Values::Json(a) => a.is_null(row),
            };
            if null {
                buf.put_i32(-1);
                continue;
            }
            match column {
                Values::Text(a) => {
                    let v = a.value(row).as_bytes();
                    buf.put_i32(v.len() as i32);
                    buf.put_slice(v);
                }
                Values::Float(a) => {
                    buf.put_i32(8);
                    buf.put_f64(a.value(row));
                }
                Values::Int(a) => {
                    buf.put_i32(8);
                    buf.put_i64(a.value(row));
                }
                Values::Bool(a) => {
                    buf.put_i32(1);
                    buf.put_u8(u8::from(a.value(row)));
                }
                Values::Timestamp(a) => {
                    buf.put_i32(8);
                    buf.put_i64(a.value(row).saturating_mul(1000) - PG_EPOCH_US);
                }
                Values::Bytes(a) => {
                    let v = a.value(row);
                    buf.put_i32(v.len() as i32);
                    buf.put_slice(v);
                }
                Values::Json(a) => {
                    scratch.clear();
                    json_list(a, row, scratch);
                    // jsonb's binary form: a version byte, then the text.
                    buf.put_i32(scratch.len() as i32 + 1);
                    buf.put_u8(1);
                    buf.put_slice(scratch);
                }
            }
        }
    }
}

/// The buffers rows are encoded in on their way through `COPY`, kept for every copy of a
/// transaction.
#[derive(Default)]
pub(super) struct Copier {
    buf: BytesMut,
    scratch: Vec<u8>,
}

impl Copier {
    /// Sends the rows' `columns` through `statement`, a `COPY … FROM STDIN (FORMAT binary)`,
    /// in chunks; with `keep`, only the rows it keeps (per batch, per row).
    pub(super) async fn copy(
        &mut self,
        tx: &tokio_postgres::Transaction<'_>,
        statement: &str,
        batches: &[RecordBatch],
        columns: &[&Column],
        keep: Option<&[Vec<bool>]>,
    ) -> anyhow::Result<()> {
        let (buf, scratch) = (&mut self.buf, &mut self.scratch);
        let sink = tx.copy_in::<_, Bytes>(statement).await?;
        futures::pin_mut!(sink);
        buf.clear();
        buf.put_slice(b"PGCOPY\n\xff\r\n\0");
        buf.put_i32(0);
        buf.put_i32(0);
        for (b, batch) in batches.iter().enumerate() {
            let arrays = project(batch, columns)?;
            let values = values(&arrays, columns)?;
            let mut start = 0;
            while start < batch.num_rows() {
                let end = (start + COPY_CHUNK_ROWS).min(batch.num_rows());
                encode_copy_rows(
                    &values,
                    start..end,
                    keep.map(|k| k[b].as_slice()),
                    buf,
                    scratch,
                );
                start = end;
                if buf.len() >= 1 << 20 {
                    sink.send(buf.split().freeze()).await?;
                }
            }
        }
        buf.put_i16(-1);
        sink.send(buf.split().freeze()).await?;
        sink.finish().await?;
        Ok(())
    }
}
