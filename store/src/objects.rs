//! The object store: where it is (`data_dir/store`, a directory, S3; an ingester's prefix of
//! it), and the named objects other components keep in it (models, reports).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use object_store::local::LocalFileSystem;
use object_store::{ObjectStore, ObjectStoreExt};
use snafu::ResultExt;

use crate::catalog::{self, Catalog};
use crate::{
    DataDirSnafu, Error, ObjectPathSnafu, ObjectStoreSnafu, ObjectStoreUrlSnafu, Result, Store,
    StoreConfig, cluster, jobs, persist,
};

/// A named object kept in the store's object store by another component (models, reports).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Path relative to the object store's root, e.g. `models/cluster/0001.json`.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// Last modification, nanoseconds since the Unix epoch.
    pub modified_ns: i64,
}

impl Store {
    /// Stores `bytes` as the object `path` (replacing it) in the store's object store, for
    /// other components' objects such as models and reports. Durable when this returns.
    /// Paths under `files/`, `rollups/` and `jobs/` and the catalog belong to the store and are
    /// refused.
    pub async fn put_object(&self, path: &str, bytes: Vec<u8>) -> Result<()> {
        let path = object_path(path)?;
        self.inner
            .object_store
            .put(&path, bytes::Bytes::from(bytes).into())
            .await
            .context(ObjectStoreSnafu)?;
        Ok(())
    }

    /// The object `path` stored with [`Store::put_object`], or `None` if there is none.
    pub async fn get_object(&self, path: &str) -> Result<Option<Vec<u8>>> {
        let path = object_path(path)?;
        match self.inner.object_store.get(&path).await {
            Ok(result) => Ok(Some(
                result.bytes().await.context(ObjectStoreSnafu)?.to_vec(),
            )),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(source) => Err(Error::ObjectStore { source }),
        }
    }

    /// The objects under `prefix` (a directory-like path such as `models/`), sorted by path.
    pub async fn list_objects(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        use futures::TryStreamExt;
        let prefix = object_path(prefix.trim_end_matches('/'))?;
        let mut objects: Vec<ObjectInfo> = self
            .inner
            .object_store
            .list(Some(&prefix))
            .map_ok(|meta| ObjectInfo {
                path: meta.location.to_string(),
                size: meta.size,
                modified_ns: meta.last_modified.timestamp_nanos_opt().unwrap_or(0),
            })
            .try_collect()
            .await
            .context(ObjectStoreSnafu)?;
        objects.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(objects)
    }
}

/// A named object's path, refused if it is empty, malformed or the store's own.
fn object_path(path: &str) -> Result<object_store::path::Path> {
    let fail = |reason| ObjectPathSnafu { path, reason }.fail();
    if path.is_empty() {
        return fail("empty");
    }
    let parsed = match object_store::path::Path::parse(path) {
        Ok(parsed) => parsed,
        Err(_) => return fail("not a valid object path"),
    };
    let first = parsed.parts().next().map(|p| p.as_ref().to_owned());
    if parsed.as_ref() == catalog::CATALOG_PATH
        || matches!(first.as_deref(), Some("files" | "rollups" | jobs::JOBS_DIR))
    {
        return fail("belongs to the store (files/, rollups/, jobs/, catalog.json)");
    }
    Ok(parsed)
}

/// The object store (`data_dir/store`, a directory or S3 as configured; an ingester's
/// prefix of it) and its catalog.
pub(crate) async fn open_objects(
    data_dir: &Path,
    config: &StoreConfig,
    create: bool,
) -> Result<(Arc<dyn ObjectStore>, Catalog)> {
    let object_store = object_store(data_dir, config, create)?;
    let catalog = persist::load_catalog(object_store.as_ref()).await?;
    Ok((object_store, catalog))
}

/// The object store (`data_dir/store`, a directory or S3 as configured; an ingester's
/// prefix of it).
pub(crate) fn object_store(
    data_dir: &Path,
    config: &StoreConfig,
    create: bool,
) -> Result<Arc<dyn ObjectStore>> {
    let root = root_objects(data_dir, config, create)?;
    Ok(if config.ingester.is_empty() {
        root
    } else {
        let prefix = cluster::ingester_prefix(&config.ingester)?;
        Arc::new(object_store::prefix::PrefixStore::new(root, prefix))
    })
}

/// The whole object store, as `store.object_store_url` names it.
pub(crate) fn root_objects(
    data_dir: &Path,
    config: &StoreConfig,
    create: bool,
) -> Result<Arc<dyn ObjectStore>> {
    let url = config.object_store_url.as_str();
    let directory = match url {
        "" => data_dir.join("store"),
        _ if url.starts_with("s3://") => return s3_store(url, config),
        _ => match url.strip_prefix("file://") {
            Some(path) if path.starts_with('/') => PathBuf::from(path),
            _ => return ObjectStoreUrlSnafu { url }.fail(),
        },
    };
    if create {
        std::fs::create_dir_all(&directory).context(DataDirSnafu { path: &directory })?;
    }
    Ok(Arc::new(
        LocalFileSystem::new_with_prefix(&directory).context(ObjectStoreSnafu)?,
    ))
}

/// An S3-compatible store at `s3://bucket/prefix`.
fn s3_store(url: &str, config: &StoreConfig) -> Result<Arc<dyn ObjectStore>> {
    let Some(rest) = url.strip_prefix("s3://") else {
        return ObjectStoreUrlSnafu { url }.fail();
    };
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let mut builder = object_store::aws::AmazonS3Builder::from_env()
        .with_bucket_name(bucket)
        .with_region(&config.s3_region)
        .with_allow_http(config.s3_allow_http)
        .with_retry(object_store::RetryConfig {
            retry_timeout: Duration::from_secs_f64(config.s3_retry_timeout_secs),
            ..object_store::RetryConfig::default()
        });
    if !config.s3_endpoint.is_empty() {
        builder = builder.with_endpoint(&config.s3_endpoint);
    }
    if !config.s3_access_key_id.is_empty() {
        builder = builder.with_access_key_id(&config.s3_access_key_id);
    }
    if !config.s3_secret_access_key.is_empty() {
        builder = builder.with_secret_access_key(&config.s3_secret_access_key);
    }
    let s3 = builder.build().context(ObjectStoreSnafu)?;
    let prefix = prefix.trim_matches('/');
    Ok(if prefix.is_empty() {
        Arc::new(s3)
    } else {
        Arc::new(object_store::prefix::PrefixStore::new(s3, prefix))
    })
}
