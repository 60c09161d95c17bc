//! The DataFusion table `samples`: buffered rows unioned with the Parquet files the catalog
//! selects, pruned by the time range of the query's filters.

use std::sync::{Arc, OnceLock};

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::common::{DFSchema, ScalarValue};
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::object_store::ObjectStoreUrl;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder, ParquetSource};
use datafusion::datasource::source::DataSourceExec;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::error::Result;
use datafusion::logical_expr::{Between, BinaryExpr, Expr, Operator, TableProviderFilterPushDown};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::Column as PhysicalColumn;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::union::UnionExec;

use crate::buffer::conform;
use crate::catalog::FileMeta;
use crate::rollup::{self, Resolution};
use crate::{Inner, decimal};

#[cfg(test)]
mod tests;

/// The URL under which the store's object store is registered in DataFusion.
pub(crate) fn object_store_url() -> &'static ObjectStoreUrl {
    static URL: OnceLock<ObjectStoreUrl> = OnceLock::new();
    URL.get_or_init(|| ObjectStoreUrl::parse("exawatch://store").expect("valid URL"))
}

/// The `samples` table, or the partial rows of a rollup, as of its creation: its schema is
/// fixed then (new tag columns show in tables created later), its data is read at scan time.
#[derive(Debug)]
pub struct SamplesTable {
    inner: Arc<Inner>,
    schema: SchemaRef,
    /// `None` for raw samples (buffer and files), else the rollup files of that resolution.
    rollup: Option<Resolution>,
}

impl SamplesTable {
    pub(crate) fn new(inner: Arc<Inner>) -> Self {
        let schema = inner.state.read().table.schema();
        Self {
            inner,
            schema,
            rollup: None,
        }
    }

    pub(crate) fn rollup(inner: Arc<Inner>, resolution: Resolution) -> Self {
        let schema = rollup::schema(inner.state.read().table.tag_columns());
        Self {
            inner,
            schema,
            rollup: Some(resolution),
        }
    }
}

#[async_trait]
impl TableProvider for SamplesTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        // Used for pruning only; DataFusion still applies every filter.
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        session: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let range = TimeRange::from_filters(filters);
        let (chunks, keys, tag_columns, files) = {
            let state = self.inner.state.read();
            let (chunks, files) = match self.rollup {
                None => (state.unflushed_chunks(), state.catalog.files.as_slice()),
                Some(resolution) => {
                    let files = state.catalog.rollups.get(resolution.name());
                    (Vec::new(), files.map_or(&[][..], Vec::as_slice))
                }
            };
            let files: Vec<_> = files
                .iter()
                .filter(|f| range.overlaps(f.min_time, f.max_time))
                .cloned()
                .collect();
            let keys = if chunks.is_empty() {
                Vec::new()
            } else {
                state.table.keys().to_vec()
            };
            (chunks, keys, state.table.tag_columns().to_vec(), files)
        };
        let partitions = session.config().target_partitions().max(1);
        let mut memory: Vec<Vec<RecordBatch>> = vec![Vec::new(); partitions];
        let in_range = chunks
            .iter()
            .filter(|c| range.overlaps(c.min_time, c.max_time));
        for (i, chunk) in in_range.enumerate() {
            let batch = chunk.batch(&keys, &tag_columns)?;
            memory[i % partitions].push(conform(batch, &self.schema)?);
        }
        memory.retain(|p| !p.is_empty());
        let mut inputs: Vec<Arc<dyn ExecutionPlan>> = Vec::new();
        if !memory.is_empty() || files.is_empty() {
            if memory.is_empty() {
                memory.push(Vec::new());
            }
            inputs.push(MemorySourceConfig::try_new_exec(
                &memory,
                Arc::clone(&self.schema),
                projection.cloned(),
            )?);
        }
        if !files.is_empty() {
            inputs.push(self.scan_files(session, projection, filters, limit, &files)?);
        }
        UnionExec::try_new(inputs)
    }
}

impl SamplesTable {
    /// The scan of `files`, with the table's projection of columns. Raw files hold `value` as
    /// a mantissa and scale ([`decimal`]); the scan reads those and decodes them.
    fn scan_files(
        &self,
        session: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
        files: &[FileMeta],
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let (file_schema, decoded_column): (SchemaRef, fn(&str) -> Option<Expr>) = match self.rollup
        {
            None => (decimal::file_schema(&self.schema), decimal::decoded_column),
            Some(_) => (rollup::file_schema(&self.schema), rollup::decoded_column),
        };
        let wanted: Vec<usize> = match projection {
            Some(p) => p.clone(),
            None => (0..self.schema.fields().len()).collect(),
        };
        // Each wanted column, decoded from file columns or read as it is.
        let outputs: Vec<(&String, Option<Expr>)> = wanted
            .iter()
            .map(|&i| {
                let name = self.schema.field(i).name();
                (name, decoded_column(name))
            })
            .collect();
        let decodes = outputs.iter().any(|(_, decoded)| decoded.is_some());
        // The file columns to read, each once.
        let mut read: Vec<usize> = Vec::new();
        for (name, decoded) in &outputs {
            let names = match decoded {
                Some(expr) => expr
                    .column_refs()
                    .into_iter()
                    .map(|c| c.name.clone())
                    .collect(),
                None => vec![(*name).clone()],
            };
            for name in names {
                let index = file_schema.index_of(&name)?;
                if !read.contains(&index) {
                    read.push(index);
                }
            }
        }
        let mut source = ParquetSource::new(Arc::clone(&file_schema));
        // Decoded columns (`value`, a rollup's aggregates) hold in their float column only the
        // values without a decimal: its statistics do not bound them, so filters on them stay
        // above the scan.
        let prunable: Vec<Expr> = filters
            .iter()
            .filter(|f| {
                !f.column_refs()
                    .iter()
                    .any(|c| decoded_column(&c.name).is_some())
            })
            .cloned()
            .collect();
        if let Some(predicate) = prunable.into_iter().reduce(Expr::and) {
            let df_schema = DFSchema::try_from(Arc::clone(&file_schema))?;
            if let Ok(predicate) = session.create_physical_expr(predicate, &df_schema) {
                source = source.with_predicate(predicate);
            }
        }
        let partitions = session.config().target_partitions().max(1);
        let mut groups: Vec<Vec<PartitionedFile>> = vec![Vec::new(); partitions];
        for (i, file) in files.iter().enumerate() {
            groups[i % partitions].push(PartitionedFile::new(file.path.clone(), file.bytes));
        }
        let config = FileScanConfigBuilder::new(object_store_url().clone(), Arc::new(source))
            .with_projection_indices(Some(read))?
            .with_file_groups(
                groups
                    .into_iter()
                    .filter(|g| !g.is_empty())
                    .map(FileGroup::new)
                    .collect(),
            )
            .with_limit(limit)
            .build();
        let scan: Arc<dyn ExecutionPlan> = DataSourceExec::from_data_source(config);
        if !decodes {
            return Ok(scan);
        }
        let read_schema = scan.schema();
        let df_schema = DFSchema::try_from(Arc::clone(&read_schema))?;
        let mut exprs: Vec<(Arc<dyn PhysicalExpr>, String)> = Vec::with_capacity(outputs.len());
        for (name, decoded) in outputs {
            let expr = match decoded {
                Some(expr) => session.create_physical_expr(expr, &df_schema)?,
                None => Arc::new(PhysicalColumn::new(name, read_schema.index_of(name)?)),
            };
            exprs.push((expr, name.clone()));
        }
        Ok(Arc::new(ProjectionExec::try_new(exprs, scan)?))
    }
}

/// Inclusive bounds on `time` (ns) implied by a query's filters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TimeRange {
    pub(crate) min: i64,
    pub(crate) max: i64,
}

impl TimeRange {
    /// Reads `time <op> literal` (either way round) and `time BETWEEN a AND b` from the
    /// top-level conjuncts; anything else leaves the range open.
    pub(crate) fn from_filters(filters: &[Expr]) -> Self {
        let mut range = Self {
            min: i64::MIN,
            max: i64::MAX,
        };
        let mut conjuncts = Vec::new();
        for filter in filters {
            split_and(filter, &mut conjuncts);
        }
        for expr in conjuncts {
            match expr {
                Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
                    let (op, value) = match (is_time(left), is_time(right)) {
                        (true, false) => (*op, literal_ns(right)),
                        (false, true) => match op.swap() {
                            Some(op) => (op, literal_ns(left)),
                            None => continue,
                        },
                        _ => continue,
                    };
                    let Some(v) = value else { continue };
                    match op {
                        Operator::Gt => range.min = range.min.max(v.saturating_add(1)),
                        Operator::GtEq => range.min = range.min.max(v),
                        Operator::Lt => range.max = range.max.min(v.saturating_sub(1)),
                        Operator::LtEq => range.max = range.max.min(v),
                        Operator::Eq => {
                            range.min = range.min.max(v);
                            range.max = range.max.min(v);
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
                    if let Some(low) = literal_ns(low) {
                        range.min = range.min.max(low);
                    }
                    if let Some(high) = literal_ns(high) {
                        range.max = range.max.min(high);
                    }
                }
                _ => {}
            }
        }
        range
    }

    /// True if `[min, max]` intersects the range.
    pub(crate) fn overlaps(&self, min: i64, max: i64) -> bool {
        min <= self.max && max >= self.min
    }
}

fn split_and<'a>(expr: &'a Expr, out: &mut Vec<&'a Expr>) {
    match expr {
        Expr::BinaryExpr(BinaryExpr {
            left,
            op: Operator::And,
            right,
        }) => {
            split_and(left, out);
            split_and(right, out);
        }
        other => out.push(other),
    }
}

fn is_time(expr: &Expr) -> bool {
    matches!(expr, Expr::Column(c) if c.name == "time")
}

fn literal_ns(expr: &Expr) -> Option<i64> {
    let Expr::Literal(value, _) = expr else {
        return None;
    };
    match value {
        ScalarValue::TimestampNanosecond(Some(v), _) => Some(*v),
        ScalarValue::TimestampMicrosecond(Some(v), _) => v.checked_mul(1_000),
        ScalarValue::TimestampMillisecond(Some(v), _) => v.checked_mul(1_000_000),
        ScalarValue::TimestampSecond(Some(v), _) => v.checked_mul(1_000_000_000),
        _ => None,
    }
}
