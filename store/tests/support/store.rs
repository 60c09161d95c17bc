//! What the store's integration tests start from: a store opened (or reopened, replaying its
//! WAL) in a test's temporary directory.
#![allow(dead_code)] // Each test file uses a part.

use std::path::Path;

use exawatch_store::{Store, StoreConfig};
use prometheus_client::registry::Registry;

/// The store in `dir` with `config`, its meters in `registry`.
pub(crate) async fn open_registered(
    dir: &Path,
    config: StoreConfig,
    registry: &mut Registry,
) -> Store {
    Store::open(dir, config, registry).await.unwrap()
}

/// The store in `dir` with `config`, its meters thrown away.
pub(crate) async fn open(dir: &Path, config: StoreConfig) -> Store {
    open_registered(dir, config, &mut Registry::default()).await
}
