//! Reading and writing profile files: RON parsing (reporting a foreign schema version rather
//! than its first unknown field), atomic save and load. The file layout itself is in `write`.

use std::path::Path;

use serde::Deserialize;

use super::validate::schema_error;
use super::{Profile, ProfileError, SCHEMA_VERSION};

/// Just enough of a profile to report its version when the rest does not parse.
#[derive(Deserialize)]
#[serde(rename = "Profile")]
struct VersionProbe {
    schema_version: u32,
    #[serde(default)]
    model_id: String,
}

impl Profile {
    /// Serialises to the profile file format: RON with a header comment, one line per layer.
    pub fn to_ron_string(&self) -> Result<String, ProfileError> {
        super::write::to_ron(self)
    }

    /// Parses and validates a profile. `origin` (usually the file path) is used in messages.
    pub fn from_ron_str(s: &str, origin: &str) -> Result<Profile, ProfileError> {
        let parsed: Result<Profile, ron::error::SpannedError> = ron::from_str(s);
        let profile = match parsed {
            Ok(p) => p,
            Err(e) => {
                // A profile from another schema version may not parse at all: report the version
                // rather than the first unknown field.
                if let Ok(probe) = ron::from_str::<VersionProbe>(s)
                    && probe.schema_version != SCHEMA_VERSION
                {
                    return Err(schema_error(origin, probe.schema_version, &probe.model_id));
                }
                return Err(ProfileError::Parse {
                    origin: origin.to_string(),
                    line: e.span.start.line,
                    col: e.span.start.col,
                    msg: e.code.to_string(),
                });
            }
        };
        profile.validate_as(origin)?;
        Ok(profile)
    }

    /// Writes the profile to `path` atomically: a temporary file in the same directory, fsync,
    /// rename. Creates missing parent directories. Validates first.
    pub fn save_atomic(&self, path: &Path) -> Result<(), ProfileError> {
        self.validate_as(&path.display().to_string())?;
        let text = self.to_ron_string()?;
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => std::path::PathBuf::from("."),
        };
        std::fs::create_dir_all(&dir)
            .map_err(|e| ProfileError::io("create the profile directory", &dir, e))?;
        crate::store::write_file_atomic(path, text.as_bytes())
            .map_err(|e| ProfileError::io("write the profile", path, e))?;
        Ok(())
    }

    /// Reads and validates a profile file.
    pub fn load(path: &Path) -> Result<Profile, ProfileError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ProfileError::io("read the profile", path, e))?;
        Profile::from_ron_str(&text, &path.display().to_string())
    }
}
