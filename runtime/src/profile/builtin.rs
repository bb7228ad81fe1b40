//! Profiles and calibration data shipped inside the binary, so that an installed `compresskv`
//! (`cargo install --path .`) works away from the source tree.
//!
//! [`PROFILES`] holds the repository's `profiles/*.ron` and [`CALIBRATION_FILES`] its
//! `calibration-data/` files, embedded at build time. Files on disk still come first: the
//! registry consults the built-in profiles last (see [`super::registry`]), and every command
//! that reads calibration data takes a path flag that replaces the built-in copy.
//!
//! Adding a profile to `profiles/` means adding a line to [`PROFILES`]; a test checks that the
//! table and the directory agree.

/// Built-in profiles: (file name as [`super::profile_file_name`] makes it, RON text).
pub const PROFILES: &[(&str, &str)] = &[(
    "google--gemma-3-270m.ron",
    include_str!("../../../profiles/google--gemma-3-270m.ron"),
)];

/// `calibration-data/needles.jsonl`: the SRH calibration needles (`compresskv profile`).
pub const NEEDLES: &str = include_str!("../../../calibration-data/needles.jsonl");

/// `calibration-data/tune-needles.jsonl`: the held-out needles of `compresskv profile tune`.
pub const TUNE_NEEDLES: &str = include_str!("../../../calibration-data/tune-needles.jsonl");

/// `calibration-data/qa_templates.json`: QA prompt templates for `compresskv profile --qa`.
pub const QA_TEMPLATES: &str = include_str!("../../../calibration-data/qa_templates.json");

/// Built-in calibration data: (file name in `calibration-data/`, contents).
pub const CALIBRATION_FILES: &[(&str, &str)] = &[
    ("needles.jsonl", NEEDLES),
    ("tune-needles.jsonl", TUNE_NEEDLES),
    ("qa_templates.json", QA_TEMPLATES),
];

/// The built-in profile stored as `file_name` (e.g. `google--gemma-3-270m.ron`): its
/// `'static` name and RON text.
pub fn profile(file_name: &str) -> Option<(&'static str, &'static str)> {
    PROFILES.iter().copied().find(|(n, _)| *n == file_name)
}

/// The built-in copy of `calibration-data/<name>`.
pub fn calibration_file(name: &str) -> Option<&'static str> {
    CALIBRATION_FILES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, text)| *text)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::profile::Profile;

    fn repo_files(dir: &str, keep: impl Fn(&str) -> bool) -> Vec<(String, String)> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(dir);
        let mut out: Vec<(String, String)> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_file())
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .filter(|n| keep(n))
            .map(|n| {
                let text = std::fs::read_to_string(dir.join(&n)).unwrap();
                (n, text)
            })
            .collect();
        out.sort();
        out
    }

    /// Every `profiles/*.ron` of the repository is embedded, byte for byte, and nothing else.
    #[test]
    fn embedded_profiles_are_the_repository_profiles() {
        let on_disk = repo_files("profiles", |n| n.ends_with(".ron"));
        let mut embedded: Vec<(String, String)> = PROFILES
            .iter()
            .map(|(n, t)| (n.to_string(), t.to_string()))
            .collect();
        embedded.sort();
        assert_eq!(
            on_disk.iter().map(|(n, _)| n).collect::<Vec<_>>(),
            embedded.iter().map(|(n, _)| n).collect::<Vec<_>>(),
            "profiles/ and builtin::PROFILES disagree: add the file to the table"
        );
        assert_eq!(on_disk, embedded);
    }

    /// Every calibration data file is embedded, byte for byte.
    #[test]
    fn embedded_calibration_data_is_the_repository_data() {
        let on_disk = repo_files("calibration-data", |n| n != "README.md");
        assert_eq!(on_disk.len(), CALIBRATION_FILES.len(), "{on_disk:?}");
        for (name, text) in &on_disk {
            assert_eq!(calibration_file(name), Some(text.as_str()), "{name}");
        }
        assert_eq!(calibration_file("nope.jsonl"), None);
        // And they parse.
        for text in [NEEDLES, TUNE_NEEDLES] {
            assert!(
                !crate::eval::niah::parse_needles(text, "built-in")
                    .unwrap()
                    .is_empty()
            );
        }
        let t: std::collections::HashMap<String, String> =
            serde_json::from_str(QA_TEMPLATES).unwrap();
        assert!(t.contains_key("default"));
    }

    /// The built-in profiles parse and validate exactly as files do, and are named after their
    /// model id.
    #[test]
    fn embedded_profiles_are_valid() {
        for (name, text) in PROFILES {
            let p = Profile::from_ron_str(text, name).unwrap();
            assert_eq!(super::super::profile_file_name(&p.model_id), *name);
            assert_eq!(profile(name), Some((*name, *text)));
        }
        assert!(profile("google--gemma-3-270m.ron").is_some());
        assert!(profile("nosuch--model.ron").is_none());
    }
}
