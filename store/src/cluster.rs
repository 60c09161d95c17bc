//! Several ingesters over one object store. Each ingester (`store.ingester = "<name>"`)
//! keeps its files, rollups and catalog under `ingesters/<name>/`, written by it alone, so
//! ingesters never contend for one catalog. A querier ([`crate::Store::open_querier`]) reads
//! the root's catalog (a single process's files) and every ingester's as one, re-read
//! periodically ([`crate::Store::run_catalog_refresh`]): the object store is the only thing
//! they share.

use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};
use snafu::ResultExt;

use crate::catalog::{CATALOG_PATH, Catalog, FileMeta};
use crate::{InvalidIngesterSnafu, ObjectStoreSnafu, Result, persist};

/// Where ingesters keep their objects: `ingesters/<name>/`.
pub(crate) const INGESTERS: &str = "ingesters";

/// The object-store prefix of ingester `name`, checked: letters, digits, `.`, `_` and `-`.
pub(crate) fn ingester_prefix(name: &str) -> Result<String> {
    let valid = !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if !valid {
        return InvalidIngesterSnafu { name }.fail();
    }
    Ok(format!("{INGESTERS}/{name}"))
}

/// The catalogs of the root and of every ingester under `root`, as one catalog whose file
/// paths are relative to `root`; tag columns in order of first appearance (root first, then
/// ingesters by name).
pub(crate) async fn load_union(root: &dyn ObjectStore) -> Result<Catalog> {
    let mut union = persist::load_catalog_at(root, &ObjectPath::from(CATALOG_PATH)).await?;
    let listing = match root
        .list_with_delimiter(Some(&ObjectPath::from(INGESTERS)))
        .await
    {
        Ok(listing) => listing.common_prefixes,
        Err(object_store::Error::NotFound { .. }) => Vec::new(),
        Err(source) => return Err(source).context(ObjectStoreSnafu),
    };
    let mut prefixes: Vec<ObjectPath> = listing;
    prefixes.sort();
    for prefix in prefixes {
        let path = prefix.clone().join(CATALOG_PATH);
        if !exists(root, &path).await? {
            // An ingester that has not flushed yet.
            continue;
        }
        let catalog = persist::load_catalog_at(root, &path).await?;
        let under = |files: Vec<FileMeta>| {
            files.into_iter().map(|f| FileMeta {
                path: format!("{prefix}/{}", f.path),
                ..f
            })
        };
        union.files.extend(under(catalog.files));
        for (resolution, files) in catalog.rollups {
            union
                .rollups
                .entry(resolution)
                .or_default()
                .extend(under(files));
        }
        for column in catalog.tag_columns {
            if !union.tag_columns.contains(&column) {
                union.tag_columns.push(column);
            }
        }
    }
    Ok(union)
}

async fn exists(store: &dyn ObjectStore, path: &ObjectPath) -> Result<bool> {
    match store.head(path).await {
        Ok(_) => Ok(true),
        Err(object_store::Error::NotFound { .. }) => Ok(false),
        Err(source) => Err(source).context(ObjectStoreSnafu),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ingester_names_are_path_safe() {
        assert_eq!(ingester_prefix("ing-1.a_b").unwrap(), "ingesters/ing-1.a_b");
        for bad in ["", "a/b", "..", ".hidden", "a b", "é"] {
            assert!(ingester_prefix(bad).is_err(), "{bad:?} accepted");
        }
    }
}
