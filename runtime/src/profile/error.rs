//! [`ProfileError`]: everything that can go wrong reading, writing, finding, checking or
//! importing a profile. Every message says what was wrong and how to fix it.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    /// Reading or writing a file failed.
    #[error(
        "could not {action} {path}: {err}. Fix: check that the path exists and that this user \
         may read/write it"
    )]
    Io {
        action: &'static str,
        path: PathBuf,
        err: std::io::Error,
    },

    /// The text is not valid RON for a [`super::Profile`].
    #[error(
        "profile {origin} is not a valid profile file (RON parse error at line {line}, column \
         {col}: {msg}). Fix: the file is corrupt or was hand-edited; restore it, or regenerate it \
         with `compresskv profile --model <MODEL_ID>`"
    )]
    Parse {
        origin: String,
        line: usize,
        col: usize,
        msg: String,
    },

    /// The profile was written with another schema version.
    #[error(
        "profile {origin} has schema_version {found}, but this build of compresskv supports only \
         schema_version {supported}. Fix: re-run `compresskv profile --model {model_id}` to \
         regenerate it with this version"
    )]
    SchemaVersion {
        origin: String,
        found: u32,
        supported: u32,
        /// `<MODEL_ID>` when the file does not say.
        model_id: String,
    },

    /// The profile parses but its contents are inconsistent (shapes, NaN, sums, zero window…).
    #[error(
        "profile {origin} (model {model_id}) is inconsistent: {problem}. Fix: regenerate it with \
         `compresskv profile --model {model_id}` instead of editing it by hand"
    )]
    Invalid {
        origin: String,
        model_id: String,
        problem: String,
    },

    /// A string in the profile looks like a machine-local absolute path.
    #[error(
        "profile field `{field}` = {value:?} contains what looks like an absolute path ({token:?}); \
         profiles are shared between machines and must not contain machine-local paths. Fix: \
         record only file names or repository-relative paths there"
    )]
    MachineLocal {
        field: String,
        value: String,
        token: String,
    },

    /// The profile was made for a different model than the one loaded.
    #[error(
        "the profile is for {profile_model} ({profile_shape}), but the loaded model is \
         {model} ({model_shape}): {detail}. Fix: pass `--profile PATH` with the profile made for \
         {model}, or create one with `compresskv profile --model {model}`"
    )]
    ModelMismatch {
        profile_model: String,
        profile_shape: String,
        model: String,
        model_shape: String,
        detail: String,
    },

    /// No profile file in any search location.
    #[error(
        "no CompressKV profile found for {model_id}; looked in this order:\n{searched}\nFix: create \
         one with `compresskv profile --model {model_id}` (it writes {write_to}), put a profile \
         file at one of the paths above, or pass `--profile PATH` to use a specific profile file"
    )]
    NotFound {
        model_id: String,
        /// Where `compresskv profile` would write it.
        write_to: String,
        /// One line per place looked at, already formatted.
        searched: String,
    },

    /// The CompressKV paper's published data could not be converted.
    #[error(
        "cannot import CompressKV paper data from {file}: {problem}. Fix: pass the files published \
         for this model (`scores/<Model>_head_idx.json` or \
         `Retrieval_Head_Identification/head_score/<Model>.json`, and \
         `scores/<Model>_layer_score.jsonl`) together with that model's config"
    )]
    Import { file: String, problem: String },

    /// An explicit override is out of range.
    #[error("invalid {what}: {problem}. Fix: {fix}")]
    BadOverride {
        what: &'static str,
        problem: String,
        fix: String,
    },

    /// Serialising the profile failed (a bug, not a user error).
    #[error(
        "could not serialise the profile of {model_id}: {msg}. Fix: this is a bug in compresskv; \
         please report it"
    )]
    Serialize { model_id: String, msg: String },
}

impl ProfileError {
    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>, err: std::io::Error) -> Self {
        ProfileError::Io {
            action,
            path: path.into(),
            err,
        }
    }
}
