//! Decimal-scaled values in files.
//!
//! Most monitoring values are short decimals (`52.667`, `4.56`, byte counters). In a raw file
//! `value` is stored as an integer mantissa and a per-series decimal scale, `value =
//! value_mantissa / 10^value_scale`, with the mantissa delta-bit-packed: 1.4 bytes per sample
//! on the benchmark workload against 2.1 for ZSTD'd doubles, and cheaper to decode. A value
//! that no such pair reproduces bit for bit (NaN, -0.0, 1/3, …) stays in the `value` column,
//! which is null where the mantissa holds the value. Readers go through [`decode`] (or the
//! SQL function of [`decode_udf`]), so every path sees the same `f64`.

use std::ops::Range;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Float64Array, Int8Array, Int64Array};
use arrow::datatypes::{DataType, Field, Float64Type, Int8Type, Int64Type, Schema, SchemaRef};
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;
use datafusion::common::{Column, Result as DfResult, exec_err};
use datafusion::logical_expr::{
    ColumnarValue, Expr, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};

/// The column holding a value's integer mantissa.
pub(crate) const MANTISSA: &str = "value_mantissa";
/// The column holding a value's decimal scale (digits after the point).
pub(crate) const SCALE: &str = "value_scale";

/// The largest scale tried: nine decimals covers µJ energy counters and ns durations in s.
pub(crate) const MAX_SCALE: usize = 9;
/// Mantissas stay within the integers an `f64` holds exactly.
const MAX_MANTISSA: f64 = (1u64 << 53) as f64;
const POW10: [f64; MAX_SCALE + 1] = [1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9];

/// The value of a mantissa and scale read from a file.
#[inline]
pub(crate) fn decode(mantissa: i64, scale: i8) -> f64 {
    mantissa as f64 / POW10[scale.clamp(0, MAX_SCALE as i8) as usize]
}

/// The mantissa that reproduces `value` exactly at `scale`, if there is one.
pub(crate) fn mantissa(value: f64, scale: usize) -> Option<i64> {
    let m = (value * POW10[scale]).round();
    if m.is_nan() || m.abs() > MAX_MANTISSA {
        return None;
    }
    let m = m as i64;
    // Checked through `decode` itself, so -0.0 (whose mantissa decodes to 0.0) stays out.
    (decode(m, scale as i8).to_bits() == value.to_bits()).then_some(m)
}

/// The smallest scale at which `value` has a mantissa.
pub(crate) fn min_scale(value: f64) -> Option<usize> {
    (0..=MAX_SCALE).find(|&s| mantissa(value, s).is_some())
}

/// The mantissa at `scale` of a sum of decimals, if `value` is within rounding error of one
/// (1e-12 relative: a float sum of n terms is off by at most about n·2^-53 of their total).
pub(crate) fn sum_mantissa(value: f64, scale: usize) -> Option<i64> {
    let m = (value * POW10[scale]).round();
    if !m.is_finite() || m.abs() > MAX_MANTISSA {
        return None;
    }
    let m = m as i64;
    let decoded = decode(m, scale as i8);
    (decoded == value || (decoded - value).abs() <= 1e-12 * value.abs()).then_some(m)
}

/// True for the columns that hold `value` in a file.
pub(crate) fn is_file_value_column(name: &str) -> bool {
    matches!(name, "value" | MANTISSA | SCALE)
}

/// The schema of raw files for a table schema: `value_mantissa` and `value_scale` follow
/// `value`.
pub(crate) fn file_schema(table: &Schema) -> SchemaRef {
    let mut fields = Vec::with_capacity(table.fields().len() + 2);
    for field in table.fields() {
        fields.push(Arc::clone(field));
        if field.name() == "value" {
            fields.push(Arc::new(Field::new(MANTISSA, DataType::Int64, true)));
            fields.push(Arc::new(Field::new(SCALE, DataType::Int8, true)));
        }
    }
    Arc::new(Schema::new_with_metadata(fields, table.metadata().clone()))
}

/// Rewrites a sorted batch of the table schema into the file schema: each series (`runs`,
/// row ranges covering the batch) gets the smallest scale that holds all its values.
pub(crate) fn encode(
    batch: &RecordBatch,
    runs: impl Iterator<Item = Range<usize>>,
) -> Result<RecordBatch, ArrowError> {
    let schema = batch.schema();
    let position = schema.index_of("value")?;
    let values = batch.column(position).as_primitive::<Float64Type>();
    let rows = batch.num_rows();
    let mut raw = Vec::with_capacity(rows);
    let mut mantissas = Vec::with_capacity(rows);
    let mut scales = Vec::with_capacity(rows);
    for run in runs {
        let scale = run
            .clone()
            .filter(|&r| values.is_valid(r))
            .filter_map(|r| min_scale(values.value(r)))
            .max()
            .unwrap_or(0);
        for r in run {
            let value = values.is_valid(r).then(|| values.value(r));
            match value.map(|v| (v, mantissa(v, scale))) {
                Some((_, Some(m))) => {
                    raw.push(None);
                    mantissas.push(Some(m));
                    scales.push(Some(scale as i8));
                }
                other => {
                    raw.push(other.map(|(v, _)| v));
                    mantissas.push(None);
                    scales.push(None);
                }
            }
        }
    }
    if raw.len() != rows {
        return Err(ArrowError::InvalidArgumentError(format!(
            "series runs cover {} of {rows} rows",
            raw.len()
        )));
    }
    let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
    columns.splice(
        position..=position,
        [
            Arc::new(Float64Array::from(raw)) as ArrayRef,
            Arc::new(Int64Array::from(mantissas)),
            Arc::new(Int8Array::from(scales)),
        ],
    );
    RecordBatch::try_new(file_schema(&schema), columns)
}

/// The value of `row` of a file's value columns: from its mantissa and scale where it has
/// them (`mantissas` is `None` for files written before they existed), else the raw column
/// (`None` when it holds no value).
pub(crate) fn decode_column(
    raw: Option<&Float64Array>,
    mantissas: Option<(&Int64Array, &Int8Array)>,
    row: usize,
) -> Option<f64> {
    if let Some((m, s)) = mantissas
        && m.is_valid(row)
    {
        return Some(decode(m.value(row), s.value(row)));
    }
    raw.filter(|raw| raw.is_valid(row))
        .map(|raw| raw.value(row))
}

/// Appends the values of `rows` of a file's value columns to `values_out`, and their `times`
/// to `times_out`; text samples (no value) are left out. Rows that are all mantissas (the
/// usual case) decode in one tight loop.
pub(crate) fn decode_into(
    raw: Option<&Float64Array>,
    mantissas: Option<(&Int64Array, &Int8Array)>,
    rows: Range<usize>,
    times: &[i64],
    (times_out, values_out): (&mut Vec<i64>, &mut Vec<f64>),
) {
    match mantissas {
        Some((m, s)) if m.null_count() == 0 && s.null_count() == 0 => {
            times_out.extend_from_slice(times);
            let (m, s) = (&m.values()[rows.clone()], &s.values()[rows]);
            values_out.extend(m.iter().zip(s).map(|(&m, &s)| decode(m, s)));
        }
        _ => {
            for (row, &time) in rows.zip(times) {
                if let Some(value) = decode_column(raw, mantissas, row) {
                    times_out.push(time);
                    values_out.push(value);
                }
            }
        }
    }
}

/// Every row's value of a file's value columns, as [`decode_column`] gives it. Rows that are
/// all mantissas (the usual case) decode in one tight loop.
pub(crate) fn decode_array(
    raw: &Float64Array,
    mantissas: Option<(&Int64Array, &Int8Array)>,
) -> Float64Array {
    match mantissas {
        Some((m, s)) if m.null_count() == 0 && s.null_count() == 0 => Float64Array::from(
            m.values()
                .iter()
                .zip(s.values())
                .map(|(&m, &s)| decode(m, s))
                .collect::<Vec<f64>>(),
        ),
        None => raw.clone(),
        Some(_) => (0..raw.len())
            .map(|row| decode_column(Some(raw), mantissas, row))
            .collect(),
    }
}

/// The SQL expression over file columns that gives `value` back.
pub(crate) fn decoded_column(name: &str) -> Option<Expr> {
    let column = |name: &str| Expr::Column(Column::new_unqualified(name));
    (name == "value")
        .then(|| decode_udf().call(vec![column("value"), column(MANTISSA), column(SCALE)]))
}

/// The SQL function `exawatch_value(value, value_mantissa, value_scale)` that the `samples`
/// table's file scan uses to give `value` back.
fn decode_udf() -> Arc<ScalarUDF> {
    decoding_udf(
        "exawatch_value",
        vec![DataType::Float64, DataType::Int64, DataType::Int8],
        |arrays| {
            let [raw, mantissas, scales] = arrays else {
                return exec_err!("exawatch_value takes 3 arguments");
            };
            let pair = (
                mantissas.as_primitive::<Int64Type>(),
                scales.as_primitive::<Int8Type>(),
            );
            Ok(decode_array(raw.as_primitive::<Float64Type>(), Some(pair)))
        },
    )
}

/// A SQL function that computes a `Float64` column from the file columns it takes.
pub(crate) fn decoding_udf(
    name: &'static str,
    arguments: Vec<DataType>,
    decode: fn(&[ArrayRef]) -> DfResult<Float64Array>,
) -> Arc<ScalarUDF> {
    Arc::new(ScalarUDF::from(DecodingUdf {
        name,
        signature: Signature::exact(arguments, Volatility::Immutable),
        decode,
    }))
}

#[derive(Debug)]
struct DecodingUdf {
    name: &'static str,
    signature: Signature,
    decode: fn(&[ArrayRef]) -> DfResult<Float64Array>,
}

// Each function has its own name: that identifies it.
impl PartialEq for DecodingUdf {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl Eq for DecodingUdf {}

impl std::hash::Hash for DecodingUdf {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.name.hash(state);
    }
}

impl ScalarUDFImpl for DecodingUdf {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::Float64)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        Ok(ColumnarValue::Array(Arc::new((self.decode)(&arrays)?)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_decimals_get_their_own_scale() {
        assert_eq!(min_scale(4.56), Some(2));
        assert_eq!(min_scale(52.667), Some(3));
        assert_eq!(min_scale(22_070_538_240.0), Some(0));
        assert_eq!(min_scale(0.000_000_001), Some(9));
        assert_eq!(min_scale(-7.5), Some(1));
    }

    #[test]
    fn values_without_a_short_decimal_have_no_scale() {
        for v in [
            1.0 / 3.0,
            f64::NAN,
            f64::INFINITY,
            -0.0,
            1e300,
            std::f64::consts::PI,
        ] {
            assert_eq!(min_scale(v), None, "{v}");
        }
    }

    #[test]
    fn every_value_round_trips_bit_for_bit() {
        let values = [
            4.56,
            4.5,
            -0.0,
            0.0,
            f64::NAN,
            1.0 / 3.0,
            123_456_789.123,
            9_007_199_254_740_993.0,
            0.1 + 0.2,
            5e-324,
        ];
        let schema = Arc::new(Schema::new(vec![
            Field::new("time", DataType::Int64, false),
            Field::new("value", DataType::Float64, true),
            Field::new("node", DataType::Utf8, true),
        ]));
        let mut column: Vec<Option<f64>> = values.iter().copied().map(Some).collect();
        column.push(None);
        let rows = column.len();
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from_iter_values(0..rows as i64)),
                Arc::new(Float64Array::from(column.clone())),
                Arc::new(arrow::array::StringArray::from(vec![Some("n"); rows])),
            ],
        )
        .unwrap();
        // Two series: the first five rows and the rest.
        let encoded = encode(&batch, [0..5, 5..rows].into_iter()).unwrap();
        let names: Vec<_> = encoded
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        assert_eq!(names, ["time", "value", MANTISSA, SCALE, "node"]);
        let raw = encoded.column(1).as_primitive::<Float64Type>();
        let mantissas = encoded.column(2).as_primitive::<Int64Type>();
        let scales = encoded.column(3).as_primitive::<Int8Type>();
        for (row, expected) in column.iter().enumerate() {
            let got = decode_column(Some(raw), Some((mantissas, scales)), row);
            assert_eq!(
                got.map(f64::to_bits),
                expected.map(f64::to_bits),
                "row {row}"
            );
        }
        // The first series' scale is 2 (4.56), so 4.5 is 450; 0.0 shares it.
        assert_eq!(scales.value(0), 2);
        assert_eq!(mantissas.value(1), 450);
        assert!(
            mantissas.is_null(2),
            "-0.0 keeps its sign in the raw column"
        );
        assert!(mantissas.is_null(4) && raw.value(4).is_nan());
        assert!(mantissas.is_null(5), "1/3 has no short decimal");
        assert_eq!(mantissas.value(6), 123_456_789_123);
        assert!(mantissas.is_null(7), "past 2^53 the raw double is kept");
    }
}
