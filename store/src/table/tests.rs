use datafusion::logical_expr::{col, lit};

use super::*;

fn ts(ns: i64) -> Expr {
    lit(ScalarValue::TimestampNanosecond(
        Some(ns),
        Some("UTC".into()),
    ))
}

#[test]
fn time_bounds_from_filters() {
    let open = TimeRange {
        min: i64::MIN,
        max: i64::MAX,
    };
    assert_eq!(TimeRange::from_filters(&[]), open);
    assert_eq!(
        TimeRange::from_filters(&[col("time").gt_eq(ts(10)), col("time").lt(ts(20))]),
        TimeRange { min: 10, max: 19 }
    );
    assert_eq!(
        TimeRange::from_filters(&[ts(10).lt(col("time")).and(col("value").gt(lit(1.0)))]),
        TimeRange {
            min: 11,
            max: i64::MAX
        }
    );
    assert_eq!(
        TimeRange::from_filters(&[col("time").between(ts(5), ts(7))]),
        TimeRange { min: 5, max: 7 }
    );
    let seconds = lit(ScalarValue::TimestampSecond(Some(2), None));
    assert_eq!(
        TimeRange::from_filters(&[col("time").eq(seconds)]),
        TimeRange {
            min: 2_000_000_000,
            max: 2_000_000_000
        }
    );
    // A disjunction says nothing about the range as a whole.
    assert_eq!(
        TimeRange::from_filters(&[col("time").lt(ts(1)).or(col("time").gt(ts(100)))]),
        open
    );
}

#[test]
fn overlap() {
    let r = TimeRange { min: 10, max: 20 };
    assert!(r.overlaps(0, 10));
    assert!(r.overlaps(20, 30));
    assert!(r.overlaps(12, 13));
    assert!(!r.overlaps(0, 9));
    assert!(!r.overlaps(21, 30));
}
