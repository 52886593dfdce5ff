//! Partition pruning for archive tables.
//!
//! - On `ts`: the archive puts each row in the `date`/`hour` partition of its `ts`, so a range
//!   on `ts` implies a range of partitions. A filter on `ts` alone then reads only the
//!   partitions it can match, as a filter on `date` and `hour` does; within them, Parquet
//!   row-group statistics on `ts` skip the rest.
//! - On `hour`: DataFusion turns equalities on partition columns into a directory prefix to
//!   list, spelling the integer 2 as `hour=2`, which misses the archive's `hour=02`. An
//!   equality on `hour` is therefore handed to the listing as the same one-value range.

use std::sync::Arc;

use arrow::datatypes::{DataType, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{ScalarValue, Statistics};
use datafusion::datasource::TableType;
use datafusion::error::Result;
use datafusion::logical_expr::{
    Between, BinaryExpr, Expr, Operator, TableProviderFilterPushDown, col, lit,
};
use datafusion::physical_plan::ExecutionPlan;

/// The column whose hour names a row's partition.
pub const TIME_COLUMN: &str = "ts";

const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 24 * HOUR_MS;

/// Whether a table's schema has the timestamp column its partitions follow.
pub fn is_time_partitioned(schema: &SchemaRef) -> bool {
    schema
        .field_with_name(TIME_COLUMN)
        .is_ok_and(|f| matches!(f.data_type(), DataType::Timestamp(..)))
}

/// An archive table: its scans get the `date`/`hour` bounds their `ts` filters imply, and
/// equalities on `hour` as ranges; everything else is the inner listing table's.
#[derive(Debug)]
pub struct ArchiveTable {
    inner: Arc<dyn TableProvider>,
    by_time: bool,
}

impl ArchiveTable {
    /// Wraps a listing table of the archive; `ts` filters prune partitions when its schema
    /// has the `ts` timestamp column.
    pub fn new(inner: Arc<dyn TableProvider>) -> Self {
        let by_time = is_time_partitioned(&inner.schema());
        Self { inner, by_time }
    }
}

#[async_trait]
impl TableProvider for ArchiveTable {
    fn schema(&self) -> SchemaRef {
        self.inner.schema()
    }

    fn table_type(&self) -> TableType {
        self.inner.table_type()
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let mut all: Vec<Expr> = filters.iter().map(hour_equality_as_range).collect();
        if self.by_time {
            all.extend(partition_bounds(filters));
        }
        self.inner.scan(state, projection, &all, limit).await
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        self.inner.supports_filters_pushdown(filters)
    }

    fn statistics(&self) -> Option<Statistics> {
        self.inner.statistics()
    }
}

/// `hour = N` (either way round, anywhere in the filter) as `hour >= N AND hour <= N`.
fn hour_equality_as_range(filter: &Expr) -> Expr {
    let is_hour = |e: &Expr| matches!(e, Expr::Column(c) if c.name == "hour");
    filter
        .clone()
        .transform_up(|e| {
            Ok(match &e {
                Expr::BinaryExpr(BinaryExpr {
                    left,
                    op: Operator::Eq,
                    right,
                }) if is_hour(left) && matches!(right.as_ref(), Expr::Literal(..))
                    || is_hour(right) && matches!(left.as_ref(), Expr::Literal(..)) =>
                {
                    let (column, value) = if is_hour(left) {
                        (left, right)
                    } else {
                        (right, left)
                    };
                    Transformed::yes(
                        column
                            .as_ref()
                            .clone()
                            .gt_eq(value.as_ref().clone())
                            .and(column.as_ref().clone().lt_eq(value.as_ref().clone())),
                    )
                }
                _ => Transformed::no(e),
            })
        })
        .map_or_else(|_| filter.clone(), |t| t.data)
}

/// The `date` and `hour` filters implied by the `ts` bounds among `filters` (a conjunction).
pub fn partition_bounds(filters: &[Expr]) -> Vec<Expr> {
    let mut bounds = Bounds::default();
    for filter in filters {
        bounds.collect(filter);
    }
    let mut implied = Vec::new();
    if let Some(low) = bounds.low {
        let (date, hour) = partition_of(low);
        implied.push(col("date").gt_eq(lit(ScalarValue::Date32(Some(date)))));
        implied.push(
            col("date")
                .gt(lit(ScalarValue::Date32(Some(date))))
                .or(col("hour").gt_eq(lit(hour))),
        );
    }
    if let Some(high) = bounds.high {
        let (date, hour) = partition_of(high);
        implied.push(col("date").lt_eq(lit(ScalarValue::Date32(Some(date)))));
        implied.push(
            col("date")
                .lt(lit(ScalarValue::Date32(Some(date))))
                .or(col("hour").lt_eq(lit(hour))),
        );
    }
    implied
}

/// The day (since 1970-01-01) and hour of an epoch-milliseconds instant.
fn partition_of(ms: i64) -> (i32, i32) {
    let day = ms.div_euclid(DAY_MS);
    let hour = ms.rem_euclid(DAY_MS) / HOUR_MS;
    (
        i32::try_from(day).unwrap_or(if day < 0 { i32::MIN } else { i32::MAX }),
        hour as i32,
    )
}

/// The tightest inclusive `ts` range, in epoch milliseconds, a conjunction of filters allows.
#[derive(Debug, Default)]
struct Bounds {
    low: Option<i64>,
    high: Option<i64>,
}

impl Bounds {
    fn collect(&mut self, filter: &Expr) {
        match filter {
            Expr::BinaryExpr(BinaryExpr {
                left,
                op: Operator::And,
                right,
            }) => {
                self.collect(left);
                self.collect(right);
            }
            Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
                match (is_time(left), instant(right), is_time(right), instant(left)) {
                    (true, Some(at), _, _) => self.compare(*op, at),
                    (_, _, true, Some(at)) => {
                        if let Some(op) = op.swap() {
                            self.compare(op, at);
                        }
                    }
                    _ => {}
                }
            }
            Expr::Between(Between {
                expr,
                negated: false,
                low,
                high,
            }) if is_time(expr) => {
                if let (Some(low), Some(high)) = (instant(low), instant(high)) {
                    self.compare(Operator::GtEq, low);
                    self.compare(Operator::LtEq, high);
                }
            }
            _ => {}
        }
    }

    /// Narrows the range by `ts OP at`; `at` is floored to milliseconds, so `>`/`>=` give the
    /// same (safe) lower bound and `<` excludes `at` itself.
    fn compare(&mut self, op: Operator, at: Instant) {
        let (low, high) = match op {
            Operator::Eq => (Some(at.floor_ms), Some(at.floor_ms)),
            Operator::Gt | Operator::GtEq => (Some(at.floor_ms), None),
            Operator::LtEq => (None, Some(at.floor_ms)),
            Operator::Lt if at.exact => (None, Some(at.floor_ms - 1)),
            Operator::Lt => (None, Some(at.floor_ms)),
            _ => (None, None),
        };
        if let Some(low) = low {
            self.low = Some(self.low.map_or(low, |l| l.max(low)));
        }
        if let Some(high) = high {
            self.high = Some(self.high.map_or(high, |h| h.min(high)));
        }
    }
}

fn is_time(expr: &Expr) -> bool {
    matches!(expr, Expr::Column(c) if c.name == TIME_COLUMN)
}

/// A timestamp literal in milliseconds, floored, and whether it was a whole millisecond.
#[derive(Debug, Clone, Copy)]
struct Instant {
    floor_ms: i64,
    exact: bool,
}

fn instant(expr: &Expr) -> Option<Instant> {
    let Expr::Literal(value, _) = expr else {
        return None;
    };
    let (value, per_ms) = match value {
        ScalarValue::TimestampSecond(Some(v), _) => return v.checked_mul(1000).map(whole),
        ScalarValue::TimestampMillisecond(Some(v), _) => (*v, 1),
        ScalarValue::TimestampMicrosecond(Some(v), _) => (*v, 1_000),
        ScalarValue::TimestampNanosecond(Some(v), _) => (*v, 1_000_000),
        _ => return None,
    };
    Some(Instant {
        floor_ms: value.div_euclid(per_ms),
        exact: value.rem_euclid(per_ms) == 0,
    })
}

fn whole(ms: i64) -> Instant {
    Instant {
        floor_ms: ms,
        exact: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(ms: i64) -> Expr {
        lit(ScalarValue::TimestampMillisecond(
            Some(ms),
            Some("UTC".into()),
        ))
    }

    fn bounds(filters: &[Expr]) -> (Option<i64>, Option<i64>) {
        let mut b = Bounds::default();
        for f in filters {
            b.collect(f);
        }
        (b.low, b.high)
    }

    #[test]
    fn ranges_on_ts_become_inclusive_millisecond_bounds() {
        let hour = HOUR_MS;
        assert_eq!(
            bounds(&[col("ts").gt_eq(ts(2 * hour)), col("ts").lt(ts(3 * hour))]),
            (Some(2 * hour), Some(3 * hour - 1))
        );
        // Reversed operands, a conjunction, and the tighter of two bounds.
        assert_eq!(
            bounds(&[ts(5 * hour)
                .gt(col("ts"))
                .and(col("ts").gt(ts(hour)))
                .and(col("ts").gt(ts(2 * hour)))]),
            (Some(2 * hour), Some(5 * hour - 1))
        );
        assert_eq!(
            bounds(&[col("ts").between(ts(hour), ts(2 * hour))]),
            (Some(hour), Some(2 * hour))
        );
        assert_eq!(bounds(&[col("ts").eq(ts(7))]), (Some(7), Some(7)));
        // Microseconds: `< 1.5 ms` may still hold 1 ms; `> 1.5 ms` starts within 1 ms.
        let micros = |v| lit(ScalarValue::TimestampMicrosecond(Some(v), None));
        assert_eq!(
            bounds(&[col("ts").lt(micros(1_500)), col("ts").gt(micros(1_500))]),
            (Some(1), Some(1))
        );
        // Disjunctions, other columns and negations imply nothing.
        assert_eq!(
            bounds(&[
                col("ts").gt(ts(hour)).or(col("ts").lt(ts(0))),
                col("other").gt(ts(hour)),
                col("ts").not_between(ts(0), ts(hour)),
            ]),
            (None, None)
        );
    }

    #[test]
    fn hour_equalities_become_one_value_ranges() {
        let filter = col("date")
            .eq(lit(ScalarValue::Date32(Some(1))))
            .and(lit(2).eq(col("hour")));
        assert_eq!(
            hour_equality_as_range(&filter).to_string(),
            "date = Date32(\"1970-01-02\") AND hour >= Int32(2) AND hour <= Int32(2)"
        );
    }

    #[test]
    fn bounds_name_the_partition_of_their_instant() {
        // 2026-01-01T02:30Z is day 20454, hour 2.
        let at = 1_767_225_600_000 + 2 * HOUR_MS + 30 * 60_000;
        assert_eq!(partition_of(at), (20_454, 2));
        assert_eq!(partition_of(-1), (-1, 23));
        let implied = partition_bounds(&[col("ts").gt_eq(ts(at))]);
        assert_eq!(implied.len(), 2);
        assert_eq!(
            implied[1].to_string(),
            "date > Date32(\"2026-01-01\") OR hour >= Int32(2)"
        );
    }
}
