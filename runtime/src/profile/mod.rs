//! Model profiles: what the profiler (`compresskv profile`) learns once per model and the runtime
//! reads by model id.
//!
//! A profile holds the Semantic Retrieval Head (SRH) score and the classic retrieval-head score of
//! every query head, the offline per-layer eviction-error estimate used for layer budgets, the
//! model's default press settings (optionally tuned), a fingerprint of the model it was made for
//! and the provenance of the run. It is stored as versioned RON in `<org>--<name>.ron` (the
//! repository's `profiles/`, built into the binary, or the user's profile directory; see
//! [`registry`]) and contains nothing machine-local.
//!
//! - [`Profile`] and the types it is made of (`types`); its invariants and their errors
//!   (`validate`); parsing, atomic save and load (`io`, with the file layout in `write`); the
//!   model check, head ranking and effective settings the runtime reads from it (`lookup`).
//! - `recommend`: the smallest budget that keeps a target share of the full cache's score
//!   (`profile verify`, read back by `--budget auto`).
//! - [`registry`]: file naming and the search order used to find a model's profile.
//! - [`builtin`]: the profiles and calibration data embedded in the binary.
//! - [`import`]: conversion of the CompressKV paper's published scores into a profile.

pub mod builtin;
mod error;
pub mod import;
mod io;
mod lookup;
mod recommend;
pub mod registry;
mod settings;
#[cfg(test)]
pub(crate) mod test_support;
#[cfg(test)]
mod tests;
mod types;
mod validate;
mod write;

pub use error::ProfileError;
pub use import::{PaperFiles, import_paper, import_paper_files};
pub use recommend::{NoRecommendation, recommend_budget, skipped_below};
pub use registry::{
    MODEL_DIR_PROFILE, PROFILES_ENV, ProfileSource, default_profile_out, env_profiles_dir,
    find_profile, find_profile_from_env, profile_file_name, user_profiles_dir,
};
pub use settings::{Axes, Effective, Knobs, Overrides, Settings};
pub use types::{
    BudgetChoice, BudgetRecommendation, BudgetValidation, Defaults, Fingerprint,
    LAYER_ERROR_SOURCES, LayerErrors, Profile, Provenance, SCHEMA_VERSION, SUM_TOLERANCE,
    TOOL_VERSION, Tuning, Validation, sha256_hex, utc_now, utc_timestamp,
};
pub use validate::absolute_path_in;
