//! Small file helpers shared by the fetchers: temp siblings renamed into place (and swept when
//! their process is gone), atomic writes, sha256 while copying, human-readable sizes.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};

use super::{FetchError, io_err};

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Unique sibling temp name: `.<name>.tmp-<pid>-<n>`.
pub(super) fn temp_sibling(dir: &Path, name: &str) -> PathBuf {
    let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    dir.join(format!(".{name}.tmp-{}-{n}", std::process::id()))
}

/// Removes `.<name>.tmp-<pid>-*` left behind by processes that no longer run
/// (only where that can be checked, i.e. on Linux via /proc).
pub(super) fn sweep_stale_temps(dir: &Path, name: &str) {
    let proc_fs = Path::new("/proc/self");
    if !proc_fs.exists() {
        return;
    }
    let prefix = format!(".{name}.tmp-");
    let me = std::process::id();
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        let Ok(fname) = entry.file_name().into_string() else {
            continue;
        };
        let Some(rest) = fname.strip_prefix(&prefix) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid == me || Path::new("/proc").join(pid.to_string()).exists() {
            continue;
        }
        let p = entry.path();
        let _ = if p.is_dir() {
            fs::remove_dir_all(&p)
        } else {
            fs::remove_file(&p)
        };
    }
}

/// Deletes a temp file/dir on drop unless [`TempGuard::keep`] was called.
pub(super) struct TempGuard {
    path: PathBuf,
    armed: bool,
}

impl TempGuard {
    pub(super) fn new(path: PathBuf) -> Self {
        TempGuard { path, armed: true }
    }
    pub(super) fn keep(&mut self) {
        self.armed = false;
    }
}

impl Drop for TempGuard {
    fn drop(&mut self) {
        if self.armed {
            let _ = if self.path.is_dir() {
                fs::remove_dir_all(&self.path)
            } else {
                fs::remove_file(&self.path)
            };
        }
    }
}

pub(super) const BUF_SIZE: usize = 1 << 20;

pub(super) fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Hex sha256 of bytes in memory (profile fingerprints, the model's weight hash).
pub fn sha256_hex(bytes: &[u8]) -> String {
    to_hex(&Sha256::digest(bytes))
}

/// Hex sha256 of a file's contents.
pub fn sha256_file(path: &Path) -> Result<String, FetchError> {
    let mut f = File::open(path).map_err(io_err("opening", path))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; BUF_SIZE];
    loop {
        let n = f.read(&mut buf).map_err(io_err("reading", path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(to_hex(&hasher.finalize()))
}

pub(super) fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64;
    let mut unit = "B";
    for u in UNITS {
        if v < 1024.0 {
            break;
        }
        v /= 1024.0;
        unit = u;
    }
    format!("{v:.1} {unit}")
}

/// Writes `contents` to `path` atomically: a temp sibling, synced, then renamed into place
/// (the directory synced where the platform allows). On any error the temp file is removed
/// and `path` is as it was: a reader never sees a half-written file.
pub fn write_file_atomic(path: &Path, contents: &[u8]) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "the path has no file name"))?
        .to_string_lossy()
        .into_owned();
    let tmp = temp_sibling(dir, &name);
    let mut guard = TempGuard::new(tmp.clone());
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)?;
    f.write_all(contents)?;
    f.sync_all()?;
    drop(f);
    fs::rename(&tmp, path)?;
    guard.keep();
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// [`write_file_atomic`] with the store's errors.
pub(super) fn write_atomic(path: &Path, contents: &[u8]) -> Result<(), FetchError> {
    write_file_atomic(path, contents).map_err(io_err("writing", path))
}

/// Copies `reader` to `out`, feeding the bytes to `hasher`; returns the count.
pub(super) fn copy_hashing(
    reader: &mut dyn Read,
    out: &mut File,
    hasher: &mut Sha256,
    buf: &mut [u8],
) -> io::Result<u64> {
    let mut total = 0u64;
    loop {
        let n = match reader.read(buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n])?;
        total += n as u64;
    }
}
