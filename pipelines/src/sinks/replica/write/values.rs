//! A batch's columns read as the kinds the replica stores them as.

use anyhow::Context;
use arrow::array::{
    Array, ArrayRef, AsArray, BinaryArray, BooleanArray, Float64Array, Int64Array, ListArray,
    RecordBatch, StringArray, TimestampMillisecondArray,
};

use crate::connect::tables::{Column, SqlKind};

/// A column of a batch, read as the kind it is stored as.
pub(super) enum Values<'a> {
    Text(&'a StringArray),
    Float(&'a Float64Array),
    Int(&'a Int64Array),
    Bool(&'a BooleanArray),
    Timestamp(&'a TimestampMillisecondArray),
    Bytes(&'a BinaryArray),
    Json(&'a ListArray),
}

/// The batch's columns for `columns`, cast to the types the writer reads; a missing nullable
/// column reads as nulls.
pub(super) fn project(batch: &RecordBatch, columns: &[&Column]) -> anyhow::Result<Vec<ArrayRef>> {
    columns
        .iter()
        .map(|column| {
            let wanted = column.kind.arrow_type();
            match batch.column_by_name(&column.name) {
                Some(array) if array.data_type() == &wanted => Ok(array.clone()),
                Some(array) => arrow::compute::cast(array, &wanted)
                    .with_context(|| format!("column {} as {:?}", column.name, column.kind)),
                None if column.nullable => {
                    Ok(arrow::array::new_null_array(&wanted, batch.num_rows()))
                }
                None => anyhow::bail!("the rows have no column {}", column.name),
            }
        })
        .collect()
}

/// The projected columns read as their kinds.
pub(super) fn values<'a>(
    arrays: &'a [ArrayRef],
    columns: &[&Column],
) -> anyhow::Result<Vec<Values<'a>>> {
    arrays
        .iter()
        .zip(columns)
        .map(|(array, column)| {
            let wrong = || anyhow::anyhow!("column {} has an unexpected type", column.name);
            Ok(match column.kind {
                SqlKind::Text => Values::Text(array.as_string_opt().ok_or_else(wrong)?),
                SqlKind::Float => Values::Float(array.as_primitive_opt().ok_or_else(wrong)?),
                SqlKind::Int => Values::Int(array.as_primitive_opt().ok_or_else(wrong)?),
                SqlKind::Bool => Values::Bool(array.as_boolean_opt().ok_or_else(wrong)?),
                SqlKind::Timestamp => {
                    Values::Timestamp(array.as_primitive_opt().ok_or_else(wrong)?)
                }
                SqlKind::Bytes => Values::Bytes(array.as_binary_opt().ok_or_else(wrong)?),
                SqlKind::Json => Values::Json(array.as_list_opt().ok_or_else(wrong)?),
            })
        })
        .collect()
}

/// A list of strings as a JSON array.
pub(super) fn json_list(list: &ListArray, row: usize, out: &mut Vec<u8>) {
    let items = list.value(row);
    out.push(b'[');
    if let Some(strings) = items.as_string_opt::<i32>() {
        for (i, item) in strings.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            let text = serde_json::to_string(item.unwrap_or_default()).unwrap_or_default();
            out.extend_from_slice(text.as_bytes());
        }
    }
    out.push(b']');
}
