//! The `jobs` table: the latest record of every HPC job ([`JobRecord`]), kept in memory and
//! in Parquet files under `jobs/` of the object store.
//!
//! A write keeps only the records that change something (a new job, or a new state of a
//! known one that [`JobRecord::supersedes`] the stored one), writes them as one file
//! `jobs/<sequence>.parquet` and only then makes them visible, so an acknowledged record is
//! durable. At start the files are read in sequence order, later records replacing earlier
//! ones as they did when written. Past [`COMPACT_FILES`] files, one file with every job
//! replaces them.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, Int32Builder, Int64Builder, ListBuilder, StringBuilder,
    TimestampNanosecondBuilder,
};
use arrow::datatypes::TimestampNanosecondType;
use arrow::datatypes::{DataType, Field, Int32Type, Int64Type, Schema, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use bytes::Bytes;
use datafusion::catalog::Session;
use datafusion::datasource::{MemTable, TableProvider, TableType};
use datafusion::error::DataFusionError;
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;
use exawatch_protocol::job::JobRecord;
use futures::TryStreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};
use parking_lot::{Mutex, RwLock};
use snafu::ResultExt;

use crate::{Inner, ObjectStoreSnafu, Result};

/// The object-store directory of the job files.
pub(crate) const JOBS_DIR: &str = "jobs";
/// Files past which they are merged into one.
pub const COMPACT_FILES: usize = 64;

/// A job as stored: its latest record and when that state was first received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredJob {
    /// The record.
    pub record: JobRecord,
    /// When this state of the job was received, ns since the epoch.
    pub updated_ns: i64,
}

/// Which jobs [`crate::Store::jobs`] returns; every condition set must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobFilter {
    /// Jobs running at some time at or after this (ns): not ended before it.
    pub from_ns: Option<i64>,
    /// Jobs submitted (or started) at or before this (ns).
    pub to_ns: Option<i64>,
    /// Owned by this user.
    pub user: Option<String>,
    /// With this node in their node list.
    pub node: Option<String>,
    /// In this state (upper case).
    pub state: Option<String>,
    /// Of this cluster.
    pub cluster: Option<String>,
    /// With this id.
    pub id: Option<String>,
}

impl JobFilter {
    fn matches(&self, job: &StoredJob) -> bool {
        let r = &job.record;
        let began = r.start_ns.or(r.submit_ns);
        self.from_ns
            .is_none_or(|from| r.end_ns.is_none_or(|end| end >= from))
            && self
                .to_ns
                .is_none_or(|to| began.is_none_or(|began| began <= to))
            && self.user.as_ref().is_none_or(|u| *u == r.user)
            && self.node.as_ref().is_none_or(|n| r.nodes.contains(n))
            && self
                .state
                .as_ref()
                .is_none_or(|s| s.eq_ignore_ascii_case(&r.state))
            && self.cluster.as_ref().is_none_or(|c| *c == r.cluster)
            && self.id.as_ref().is_none_or(|id| *id == r.id)
    }
}

/// The files written so far and whether they have been read.
#[derive(Debug, Default)]
struct Files {
    loaded: bool,
    next_sequence: u64,
    paths: Vec<ObjectPath>,
}

/// Every job, by `(cluster, id)`.
#[derive(Debug, Default)]
pub(crate) struct Jobs {
    records: RwLock<HashMap<(String, String), StoredJob>>,
    /// Serializes loading and writing.
    files: tokio::sync::Mutex<Files>,
    /// Bumped on each change, to rebuild [`Jobs::batch`] only then.
    version: Mutex<(u64, Option<RecordBatch>)>,
}

impl Jobs {
    /// Reads the job files, once; later calls return at once.
    pub(crate) async fn load(&self, store: &dyn ObjectStore) -> Result<()> {
        let mut files = self.files.lock().await;
        self.load_locked(store, &mut files).await
    }

    async fn load_locked(&self, store: &dyn ObjectStore, files: &mut Files) -> Result<()> {
        if files.loaded {
            return Ok(());
        }
        let mut listed: Vec<ObjectPath> = store
            .list(Some(&ObjectPath::from(JOBS_DIR)))
            .map_ok(|meta| meta.location)
            .try_collect()
            .await
            .context(ObjectStoreSnafu)?;
        listed.retain(|path| sequence(path).is_some());
        listed.sort_by_key(sequence);
        for path in &listed {
            let bytes = store
                .get(path)
                .await
                .context(ObjectStoreSnafu)?
                .bytes()
                .await
                .context(ObjectStoreSnafu)?;
            let jobs = decode_file(bytes)?;
            let mut records = self.records.write();
            for job in jobs {
                merge(&mut records, job);
            }
        }
        files.next_sequence = listed.last().and_then(sequence).map_or(0, |s| s + 1);
        files.paths = listed;
        files.loaded = true;
        self.changed();
        Ok(())
    }

    /// Stores `records` received at `now_ns`: durable in a file when this returns, then
    /// visible. Records that change nothing are skipped.
    pub(crate) async fn write(
        &self,
        store: &dyn ObjectStore,
        records: Vec<JobRecord>,
        now_ns: i64,
    ) -> Result<()> {
        let mut files = self.files.lock().await;
        self.load_locked(store, &mut files).await?;
        let mut changed: HashMap<(String, String), StoredJob> = HashMap::new();
        {
            let current = self.records.read();
            for record in records {
                let key = (record.cluster.clone(), record.id.clone());
                let old = changed.get(&key).or_else(|| current.get(&key));
                let new = match old {
                    Some(old) if old.record == record || !record.supersedes(&old.record) => {
                        continue;
                    }
                    _ => StoredJob {
                        record,
                        updated_ns: now_ns,
                    },
                };
                changed.insert(key, new);
            }
        }
        if changed.is_empty() {
            return Ok(());
        }
        let mut jobs: Vec<StoredJob> = changed.into_values().collect();
        jobs.sort_by(|a, b| {
            (&a.record.cluster, &a.record.id).cmp(&(&b.record.cluster, &b.record.id))
        });
        let path = self.put(store, &mut files, &jobs).await?;
        files.paths.push(path);
        {
            let mut records = self.records.write();
            for job in jobs {
                merge(&mut records, job);
            }
        }
        self.changed();
        if files.paths.len() > COMPACT_FILES {
            self.compact(store, &mut files).await?;
        }
        Ok(())
    }

    /// Writes every job as one file, then deletes the files it replaces.
    async fn compact(&self, store: &dyn ObjectStore, files: &mut Files) -> Result<()> {
        let mut all: Vec<StoredJob> = self.records.read().values().cloned().collect();
        all.sort_by_key(|job| job.updated_ns);
        let path = self.put(store, files, &all).await?;
        let old = std::mem::replace(&mut files.paths, vec![path]);
        for path in old {
            if let Err(error) = store.delete(&path).await {
                tracing::warn!(%error, %path, "Cannot delete a compacted job file; it is read again (harmlessly) at start.");
            }
        }
        Ok(())
    }

    async fn put(
        &self,
        store: &dyn ObjectStore,
        files: &mut Files,
        jobs: &[StoredJob],
    ) -> Result<ObjectPath> {
        let bytes = encode_file(jobs)?;
        let path = ObjectPath::from(format!("{JOBS_DIR}/{:020}.parquet", files.next_sequence));
        store
            .put(&path, Bytes::from(bytes).into())
            .await
            .context(ObjectStoreSnafu)?;
        files.next_sequence += 1;
        Ok(path)
    }

    fn changed(&self) {
        let mut version = self.version.lock();
        version.0 += 1;
        version.1 = None;
    }

    /// The jobs `filter` selects, by cluster and id.
    pub(crate) fn select(&self, filter: &JobFilter) -> Vec<StoredJob> {
        let mut jobs: Vec<StoredJob> = self
            .records
            .read()
            .values()
            .filter(|job| filter.matches(job))
            .cloned()
            .collect();
        jobs.sort_by(|a, b| {
            (&a.record.cluster, &a.record.id).cmp(&(&b.record.cluster, &b.record.id))
        });
        jobs
    }

    /// Every job as one batch of [`schema`], rebuilt only after a change.
    fn batch(&self) -> Result<RecordBatch> {
        let mut version = self.version.lock();
        if let Some(batch) = &version.1 {
            return Ok(batch.clone());
        }
        let batch = to_batch(&self.select(&JobFilter::default()))?;
        version.1 = Some(batch.clone());
        Ok(batch)
    }
}

/// Keeps `job` unless the stored record of the same job supersedes it.
fn merge(records: &mut HashMap<(String, String), StoredJob>, job: StoredJob) {
    let key = (job.record.cluster.clone(), job.record.id.clone());
    match records.get(&key) {
        Some(old) if !job.record.supersedes(&old.record) => {}
        _ => {
            records.insert(key, job);
        }
    }
}

/// The sequence number of a job file's path.
fn sequence(path: &ObjectPath) -> Option<u64> {
    path.filename()?.strip_suffix(".parquet")?.parse().ok()
}

fn timestamp() -> DataType {
    DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into()))
}

/// The `jobs` table's columns.
pub fn schema() -> SchemaRef {
    let text = |name: &str| Field::new(name, DataType::Utf8, true);
    let int = |name: &str| Field::new(name, DataType::Int64, true);
    let time = |name: &str| Field::new(name, timestamp(), true);
    Arc::new(Schema::new(vec![
        Field::new("job_id", DataType::Utf8, false),
        text("cluster"),
        text("name"),
        text("user"),
        text("account"),
        text("partition"),
        text("qos"),
        Field::new("state", DataType::Utf8, false),
        Field::new("exit_code", DataType::Int32, true),
        Field::new("exit_signal", DataType::Int32, true),
        time("submit_time"),
        time("start_time"),
        time("end_time"),
        Field::new(
            "nodes",
            DataType::List(Arc::new(Field::new_list_field(DataType::Utf8, true))),
            false,
        ),
        int("node_count"),
        int("cpus"),
        int("gpus"),
        int("mem_bytes"),
        Field::new("updated", timestamp(), false),
    ]))
}

fn to_batch(jobs: &[StoredJob]) -> Result<RecordBatch> {
    let texts = |get: fn(&JobRecord) -> &str| -> ArrayRef {
        let mut builder = StringBuilder::new();
        for job in jobs {
            let text = get(&job.record);
            builder.append_option((!text.is_empty()).then_some(text));
        }
        Arc::new(builder.finish())
    };
    let codes = |get: fn(&JobRecord) -> Option<i32>| -> ArrayRef {
        let mut builder = Int32Builder::new();
        jobs.iter()
            .for_each(|job| builder.append_option(get(&job.record)));
        Arc::new(builder.finish())
    };
    let times = |get: fn(&StoredJob) -> Option<i64>| -> ArrayRef {
        let mut builder = TimestampNanosecondBuilder::new().with_timezone("UTC");
        jobs.iter().for_each(|job| builder.append_option(get(job)));
        Arc::new(builder.finish())
    };
    let counts = |get: fn(&JobRecord) -> Option<u64>| -> ArrayRef {
        let mut builder = Int64Builder::new();
        for job in jobs {
            builder.append_option(get(&job.record).and_then(|n| i64::try_from(n).ok()));
        }
        Arc::new(builder.finish())
    };
    let mut nodes = ListBuilder::new(StringBuilder::new());
    for job in jobs {
        for node in &job.record.nodes {
            nodes.values().append_value(node);
        }
        nodes.append(true);
    }
    let columns: Vec<ArrayRef> = vec![
        texts(|r| &r.id),
        texts(|r| &r.cluster),
        texts(|r| &r.name),
        texts(|r| &r.user),
        texts(|r| &r.account),
        texts(|r| &r.partition),
        texts(|r| &r.qos),
        texts(|r| &r.state),
        codes(|r| r.exit_code),
        codes(|r| r.exit_signal),
        times(|j| j.record.submit_ns),
        times(|j| j.record.start_ns),
        times(|j| j.record.end_ns),
        Arc::new(nodes.finish()),
        counts(|r| Some(r.nodes.len() as u64)),
        counts(|r| r.cpus),
        counts(|r| r.gpus),
        counts(|r| r.mem_bytes),
        times(|j| Some(j.updated_ns)),
    ];
    RecordBatch::try_new(schema(), columns).map_err(|e| crate::Error::Encode {
        message: e.to_string(),
    })
}

fn encode_file(jobs: &[StoredJob]) -> Result<Vec<u8>> {
    let batch = to_batch(jobs)?;
    let encode = |e: parquet::errors::ParquetError| crate::Error::Encode {
        message: e.to_string(),
    };
    let mut bytes = Vec::new();
    let props = parquet::file::properties::WriterProperties::builder()
        .set_compression(parquet::basic::Compression::ZSTD(Default::default()))
        .build();
    let mut writer =
        parquet::arrow::ArrowWriter::try_new(&mut bytes, schema(), Some(props)).map_err(encode)?;
    writer.write(&batch).map_err(encode)?;
    writer.close().map_err(encode)?;
    Ok(bytes)
}

fn decode_file(bytes: Bytes) -> Result<Vec<StoredJob>> {
    let bad = |message: String| crate::Error::CatalogFormat {
        message: format!("job file: {message}"),
    };
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes)
        .and_then(|b| b.build())
        .map_err(|e| bad(e.to_string()))?;
    let mut jobs = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|e| bad(e.to_string()))?;
        let column = |name: &str| {
            batch
                .column_by_name(name)
                .ok_or_else(|| bad(format!("no column {name}")))
        };
        let text = |name: &str| -> Result<Vec<String>> {
            let array = column(name)?
                .as_string_opt::<i32>()
                .ok_or_else(|| bad(name.into()))?;
            Ok((0..array.len())
                .map(|i| {
                    if array.is_null(i) {
                        String::new()
                    } else {
                        array.value(i).to_owned()
                    }
                })
                .collect())
        };
        let code = |name: &str| -> Result<Vec<Option<i32>>> {
            let array = column(name)?
                .as_primitive_opt::<Int32Type>()
                .ok_or_else(|| bad(name.into()))?;
            Ok(array.iter().collect())
        };
        let int = |name: &str| -> Result<Vec<Option<i64>>> {
            let array = column(name)?
                .as_primitive_opt::<Int64Type>()
                .ok_or_else(|| bad(name.into()))?;
            Ok(array.iter().collect())
        };
        let time = |name: &str| -> Result<Vec<Option<i64>>> {
            let array = column(name)?
                .as_primitive_opt::<TimestampNanosecondType>()
                .ok_or_else(|| bad(name.into()))?;
            Ok(array.iter().collect())
        };
        let count = |name: &str| -> Result<Vec<Option<u64>>> {
            Ok(int(name)?
                .into_iter()
                .map(|n| n.and_then(|n| u64::try_from(n).ok()))
                .collect())
        };
        let nodes = column("nodes")?
            .as_list_opt::<i32>()
            .ok_or_else(|| bad("nodes".into()))?;
        let (ids, clusters, names, users, accounts, partitions, qoses, states) = (
            text("job_id")?,
            text("cluster")?,
            text("name")?,
            text("user")?,
            text("account")?,
            text("partition")?,
            text("qos")?,
            text("state")?,
        );
        let (exit_codes, exit_signals) = (code("exit_code")?, code("exit_signal")?);
        let (submits, starts, ends, updates) = (
            time("submit_time")?,
            time("start_time")?,
            time("end_time")?,
            time("updated")?,
        );
        let (cpus, gpus, mem) = (count("cpus")?, count("gpus")?, count("mem_bytes")?);
        for i in 0..batch.num_rows() {
            let list = nodes.value(i);
            let list = list.as_string::<i32>();
            jobs.push(StoredJob {
                record: JobRecord {
                    id: ids[i].clone(),
                    cluster: clusters[i].clone(),
                    name: names[i].clone(),
                    user: users[i].clone(),
                    account: accounts[i].clone(),
                    partition: partitions[i].clone(),
                    qos: qoses[i].clone(),
                    state: states[i].clone(),
                    exit_code: exit_codes[i],
                    exit_signal: exit_signals[i],
                    submit_ns: submits[i],
                    start_ns: starts[i],
                    end_ns: ends[i],
                    nodes: list.iter().flatten().map(str::to_owned).collect(),
                    cpus: cpus[i],
                    gpus: gpus[i],
                    mem_bytes: mem[i],
                },
                updated_ns: updates[i].unwrap_or(0),
            });
        }
    }
    Ok(jobs)
}

/// The `jobs` table as DataFusion sees it: every job as of the scan.
#[derive(Debug)]
pub(crate) struct JobsTable {
    inner: Arc<Inner>,
}

impl JobsTable {
    pub(crate) fn new(inner: Arc<Inner>) -> Self {
        Self { inner }
    }
}

#[async_trait]
impl TableProvider for JobsTable {
    fn schema(&self) -> SchemaRef {
        schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        session: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        let external = |e: crate::Error| DataFusionError::External(Box::new(e));
        self.inner
            .jobs
            .load(self.inner.object_store.as_ref())
            .await
            .map_err(external)?;
        let batch = self.inner.jobs.batch().map_err(external)?;
        MemTable::try_new(schema(), vec![vec![batch]])?
            .scan(session, projection, filters, limit)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(id: &str, state: &str, nodes: &[&str]) -> JobRecord {
        JobRecord {
            id: id.into(),
            cluster: "c1".into(),
            state: state.into(),
            user: "ada".into(),
            nodes: nodes.iter().map(|n| (*n).to_owned()).collect(),
            cpus: Some(4),
            start_ns: Some(1_000),
            ..JobRecord::default()
        }
    }

    #[tokio::test]
    async fn latest_state_wins_and_survives_a_reload() {
        let store = object_store::memory::InMemory::new();
        let jobs = Jobs::default();
        let running = job("7_1", "RUNNING", &["cn1", "cn2"]);
        let done = JobRecord {
            end_ns: Some(5_000),
            exit_code: Some(0),
            ..job("7_1", "COMPLETED", &["cn1", "cn2"])
        };
        jobs.write(&store, vec![running.clone(), job("8", "PENDING", &[])], 10)
            .await
            .unwrap();
        // The same state again writes no file; a late running record loses to the end.
        jobs.write(&store, vec![running.clone()], 20).await.unwrap();
        jobs.write(&store, vec![done.clone()], 30).await.unwrap();
        jobs.write(&store, vec![running], 40).await.unwrap();
        assert_eq!(jobs.files.lock().await.paths.len(), 2);

        let reloaded = Jobs::default();
        reloaded.load(&store).await.unwrap();
        let all = reloaded.select(&JobFilter::default());
        assert_eq!(all, jobs.select(&JobFilter::default()));
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].record, done);
        assert_eq!(all[0].updated_ns, 30);
        let on_cn2 = JobFilter {
            node: Some("cn2".into()),
            ..JobFilter::default()
        };
        assert_eq!(reloaded.select(&on_cn2).len(), 1);
        let after_end = JobFilter {
            from_ns: Some(6_000),
            ..JobFilter::default()
        };
        let ids: Vec<String> = reloaded
            .select(&after_end)
            .into_iter()
            .map(|j| j.record.id)
            .collect();
        assert_eq!(ids, ["8"], "the pending job has not ended");
    }

    #[tokio::test]
    async fn many_files_are_compacted_into_one() {
        let store = object_store::memory::InMemory::new();
        let jobs = Jobs::default();
        for i in 0..=COMPACT_FILES {
            jobs.write(
                &store,
                vec![job(&i.to_string(), "RUNNING", &["n1"])],
                i as i64,
            )
            .await
            .unwrap();
        }
        assert_eq!(jobs.files.lock().await.paths.len(), 1);
        let listed: Vec<_> = store
            .list(Some(&ObjectPath::from(JOBS_DIR)))
            .try_collect()
            .await
            .unwrap();
        assert_eq!(listed.len(), 1);
        let reloaded = Jobs::default();
        reloaded.load(&store).await.unwrap();
        assert_eq!(
            reloaded.select(&JobFilter::default()).len(),
            COMPACT_FILES + 1
        );
        assert_eq!(reloaded.batch().unwrap().num_rows(), COMPACT_FILES + 1);
    }
}
