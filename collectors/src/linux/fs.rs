//! Filesystem usage: the mount table from `/proc/mounts`, pseudo filesystems left out, and
//! `statvfs(3)` on each mount point.
//!
//! `statvfs` on a hung network filesystem (NFS, Lustre, GPFS whose server is gone) blocks
//! in the kernel. Calls therefore run on a worker thread and are waited for at most the
//! configured timeout; a mount that timed out is *stuck* and skipped until its call
//! returns, and the next call gets a fresh worker.

use std::collections::HashSet;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tracing::warn;

/// Filesystem types that hold no user data (kernel interfaces, cgroups, overlays of
/// containers, read-only images).
pub(crate) const PSEUDO_FS: [&str; 27] = [
    "autofs",
    "binfmt_misc",
    "bpf",
    "cgroup",
    "cgroup2",
    "configfs",
    "debugfs",
    "devpts",
    "devtmpfs",
    "efivarfs",
    "fusectl",
    "hugetlbfs",
    "mqueue",
    "nsfs",
    "overlay",
    "proc",
    "pstore",
    "ramfs",
    "rootfs",
    "rpc_pipefs",
    "securityfs",
    "selinuxfs",
    "squashfs",
    "sysfs",
    "tracefs",
    "fuse.gvfsd-fuse",
    "fuse.portal",
];

/// Mount points under these are kernel or runtime internals.
const SKIPPED_MOUNT_PREFIXES: [&str; 4] = ["/proc", "/sys", "/dev", "/run/credentials"];

/// One line of `/proc/mounts`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Mount {
    /// Device or source, e.g. `/dev/sda3`.
    pub(crate) device: String,
    /// Where it is mounted, octal escapes (`\040` for a space) decoded.
    pub(crate) mount_point: String,
    /// Filesystem type, e.g. `ext4`.
    pub(crate) fstype: String,
}

/// Parses `/proc/mounts` (the `fstab` format); malformed lines are skipped.
pub(crate) fn parse_mounts(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split_ascii_whitespace();
            let device = unescape(fields.next()?);
            let mount_point = unescape(fields.next()?);
            let fstype = fields.next()?.to_owned();
            Some(Mount {
                device,
                mount_point,
                fstype,
            })
        })
        .collect()
}

/// The mounts worth reporting: real filesystems, each mount point once (the last mount
/// over a point hides the earlier ones), in mount-point order.
pub(crate) fn data_mounts(mounts: Vec<Mount>) -> Vec<Mount> {
    let mut seen = HashSet::new();
    let mut kept: Vec<Mount> = mounts
        .into_iter()
        .rev()
        .filter(|m| !PSEUDO_FS.contains(&m.fstype.as_str()))
        .filter(|m| {
            !SKIPPED_MOUNT_PREFIXES.iter().any(|prefix| {
                m.mount_point
                    .strip_prefix(prefix)
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
            })
        })
        .filter(|m| seen.insert(m.mount_point.clone()))
        .collect();
    kept.sort_by(|a, b| a.mount_point.cmp(&b.mount_point));
    kept
}

/// Decodes the `\ooo` octal escapes the kernel writes for space, tab, newline and `\`.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let value = bytes[i + 1..i + 4]
                .iter()
                .fold(0u32, |acc, b| acc * 8 + u32::from(b - b'0'));
            if let Ok(byte) = u8::try_from(value) {
                out.push(byte);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// What `statvfs` says about one filesystem, in bytes and inodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FsStats {
    /// Total size.
    pub(crate) size_bytes: u64,
    /// Free, including the blocks reserved for root.
    pub(crate) free_bytes: u64,
    /// Free for unprivileged users.
    pub(crate) avail_bytes: u64,
    /// Inodes.
    pub(crate) files: u64,
    /// Free inodes.
    pub(crate) files_free: u64,
}

/// The function that measures a mount point: [`statvfs`] on a node, a fake in tests.
pub(crate) type StatFn = fn(&Path) -> io::Result<FsStats>;

/// `statvfs(3)` through libc.
// The field types are 32-bit on some targets: the conversions are not useless there.
#[allow(clippy::useless_conversion)]
pub(crate) fn statvfs(path: &Path) -> io::Result<FsStats> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let mut stats = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
    // SAFETY: `c_path` is a valid NUL-terminated string and `stats` points to writable
    // memory of the right type, which statvfs fills on success.
    let rc = unsafe { libc::statvfs(c_path.as_ptr(), stats.as_mut_ptr()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: statvfs returned 0, so it initialised the struct.
    let stats = unsafe { stats.assume_init() };
    let fragment = u64::from(stats.f_frsize);
    Ok(FsStats {
        size_bytes: u64::from(stats.f_blocks).saturating_mul(fragment),
        free_bytes: u64::from(stats.f_bfree).saturating_mul(fragment),
        avail_bytes: u64::from(stats.f_bavail).saturating_mul(fragment),
        files: u64::from(stats.f_files),
        files_free: u64::from(stats.f_ffree),
    })
}

/// A request to the worker: the path, and where to send the answer.
type Request = (PathBuf, mpsc::Sender<io::Result<FsStats>>);

/// Runs [`StatFn`] calls on a worker thread with a timeout, skipping stuck mounts.
#[derive(Debug)]
pub(crate) struct StatWorker {
    stat: StatFn,
    timeout: Duration,
    worker: Option<SyncSender<Request>>,
    /// Mount points whose call timed out and has not returned yet.
    stuck: Arc<Mutex<HashSet<PathBuf>>>,
}

/// Why a mount point was not measured.
#[derive(Debug)]
pub(crate) enum StatError {
    /// The call failed (not mounted under this root, permission denied).
    Failed(io::Error),
    /// The call is still hanging since an earlier period.
    Stuck,
    /// The call did not return in time; the mount is now stuck.
    TimedOut,
}

impl StatWorker {
    /// Calls `stat` with at most `timeout` of waiting per mount point.
    pub(crate) fn new(stat: StatFn, timeout: Duration) -> Self {
        Self {
            stat,
            timeout,
            worker: None,
            stuck: Arc::default(),
        }
    }

    /// Measures `path`.
    pub(crate) fn stat(&mut self, path: &Path) -> Result<FsStats, StatError> {
        if self.stuck().contains(path) {
            return Err(StatError::Stuck);
        }
        let sender = match &self.worker {
            Some(sender) => sender.clone(),
            None => {
                let sender = self.spawn().map_err(StatError::Failed)?;
                self.worker = Some(sender.clone());
                sender
            }
        };
        let (reply, answer) = mpsc::channel();
        if sender.send((path.to_owned(), reply)).is_err() {
            self.worker = None;
            return Err(StatError::Failed(io::Error::other("statvfs worker gone")));
        }
        match answer.recv_timeout(self.timeout) {
            Ok(result) => result.map_err(StatError::Failed),
            Err(RecvTimeoutError::Timeout) => {
                warn!(mount = %path.display(), timeout_ms = self.timeout.as_millis() as u64, "statvfs hangs; the mount is skipped until it returns.");
                self.stuck().insert(path.to_owned());
                // The blocked worker exits once its call returns; the next call gets a new one.
                self.worker = None;
                Err(StatError::TimedOut)
            }
            Err(RecvTimeoutError::Disconnected) => {
                self.worker = None;
                Err(StatError::Failed(io::Error::other("statvfs worker gone")))
            }
        }
    }

    fn stuck(&self) -> std::sync::MutexGuard<'_, HashSet<PathBuf>> {
        self.stuck.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn spawn(&self) -> io::Result<SyncSender<Request>> {
        let (sender, requests) = mpsc::sync_channel::<Request>(1);
        let stat = self.stat;
        let stuck = Arc::clone(&self.stuck);
        std::thread::Builder::new()
            .name("exawatch-statvfs".to_owned())
            .spawn(move || {
                for (path, reply) in requests {
                    let result = stat(&path);
                    stuck
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .remove(&path);
                    let _ = reply.send(result);
                }
            })?;
        Ok(sender)
    }
}
