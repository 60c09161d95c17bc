//! SQL sessions over the store: the `samples` table, the rollup views and the policy every
//! query runs under (memory limit, no spilling, read-only statements, PostgreSQL dialect).

use std::sync::Arc;

use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::{SQLOptions, SessionConfig, SessionContext};
use snafu::ResultExt;

use crate::jobs::JobsTable;
use crate::rollup::{self, Resolution};
use crate::{RegisterSnafu, Result, SamplesTable, Store, table};

impl Store {
    /// A fresh DataFusion session over the `samples` table as of now, for one query: at most
    /// `memory_bytes` for its operators, no spilling to disk, PostgreSQL's SQL dialect (the
    /// generic one reserves common tag names: `SELECT node, cluster` fails there).
    pub fn query_context(&self, memory_bytes: usize) -> Result<SessionContext> {
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_limit(memory_bytes, 1.0)
            .with_disk_manager_builder(
                DiskManagerBuilder::default().with_mode(DiskManagerMode::Disabled),
            )
            .build_arc()
            .context(RegisterSnafu)?;
        let config = SessionConfig::new()
            .with_information_schema(true)
            .set_str("datafusion.sql_parser.dialect", "PostgreSQL");
        let ctx = SessionContext::new_with_config_rt(config, runtime);
        self.register(&ctx)?;
        Ok(ctx)
    }

    /// What SQL from API users may do in a [`Store::query_context`]: queries only (no DDL,
    /// DML, `COPY` or `SET`).
    pub fn read_only_sql() -> SQLOptions {
        SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false)
    }

    /// Registers the `samples` table (as of now), the rollup views `samples_1m` and
    /// `samples_1h`, the `jobs` table, and the store's object store in `ctx`.
    pub fn register(&self, ctx: &SessionContext) -> Result<()> {
        self.readable()?;
        for resolution in Resolution::ALL {
            let partial = Arc::new(SamplesTable::rollup(Arc::clone(&self.inner), resolution));
            let view = rollup::view(ctx, partial).context(RegisterSnafu)?;
            ctx.register_table(resolution.table(), view)
                .context(RegisterSnafu)?;
        }
        ctx.register_object_store(
            table::object_store_url().as_ref(),
            Arc::clone(&self.inner.object_store),
        );
        ctx.register_table(
            "samples",
            Arc::new(SamplesTable::new(Arc::clone(&self.inner))),
        )
        .context(RegisterSnafu)?;
        ctx.register_table("jobs", Arc::new(JobsTable::new(Arc::clone(&self.inner))))
            .context(RegisterSnafu)?;
        Ok(())
    }
}
