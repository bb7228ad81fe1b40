//! Result rows as JSON lines, for runs that can be killed and resumed: each row is one line,
//! written and flushed as soon as it is made, so a killed run loses at most the row in flight.
//! Reading back drops a last line cut short by the kill (and cuts it from the file, so appends
//! start on a fresh line); a bad line anywhere else is an error, never silently skipped.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Why a rows file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum RowsError {
    #[error("{action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{}:{line}: not a row of this command ({message}); move the file away or write to \
         another output",
        path.display()
    )]
    BadLine {
        path: PathBuf,
        line: usize,
        message: String,
    },
}

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> RowsError {
    let path = path.to_path_buf();
    move |source| RowsError::Io {
        action,
        path,
        source,
    }
}

/// The rows already in `path` (none when it does not exist). A half-written last line is
/// dropped and cut from the file; a complete last line without its newline gets one.
pub fn read_rows<T: DeserializeOwned>(path: &Path) -> Result<Vec<T>, RowsError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io("reading", path)(e)),
    };
    let mut rows = Vec::new();
    let mut offset = 0usize;
    let n_lines = text.split_inclusive('\n').count();
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let start = offset;
        offset += line.len();
        if line.trim().is_empty() {
            continue;
        }
        let last_unterminated = i + 1 == n_lines && !line.ends_with('\n');
        match serde_json::from_str::<T>(line) {
            Ok(r) => {
                rows.push(r);
                if last_unterminated {
                    OpenOptions::new()
                        .append(true)
                        .open(path)
                        .and_then(|mut f| f.write_all(b"\n"))
                        .map_err(io("writing", path))?;
                }
            }
            Err(_) if last_unterminated => {
                eprintln!(
                    "note: dropping the half-written last line of {} (line {})",
                    path.display(),
                    i + 1
                );
                OpenOptions::new()
                    .write(true)
                    .open(path)
                    .and_then(|f| f.set_len(start as u64))
                    .map_err(io("truncating", path))?;
            }
            Err(e) => {
                return Err(RowsError::BadLine {
                    path: path.to_path_buf(),
                    line: i + 1,
                    message: e.to_string(),
                });
            }
        }
    }
    Ok(rows)
}

/// Appends rows to a JSON-lines file, one flushed line each.
pub struct RowWriter {
    file: File,
    path: PathBuf,
}

impl RowWriter {
    /// Opens `path` for appending (created when missing).
    pub fn append(path: &Path) -> Result<Self, RowsError> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(io("opening", path))?;
        Ok(RowWriter {
            file,
            path: path.to_path_buf(),
        })
    }

    /// Writes `row` as one line and flushes it.
    pub fn push<T: Serialize>(&mut self, row: &T) -> Result<(), RowsError> {
        let mut line = serde_json::to_string(row).map_err(|e| RowsError::BadLine {
            path: self.path.clone(),
            line: 0,
            message: e.to_string(),
        })?;
        line.push('\n');
        self.file
            .write_all(line.as_bytes())
            .and_then(|_| self.file.flush())
            .map_err(io("writing", &self.path))
    }

    /// The file written to.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct R {
        a: u32,
    }

    fn temp(name: &str, text: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("compresskv-rows-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn missing_file_has_no_rows() {
        let rows: Vec<R> = read_rows(Path::new("/nonexistent/rows.jsonl")).unwrap();
        assert!(rows.is_empty());
    }

    #[test]
    fn torn_last_line_is_dropped_and_cut() {
        let p = temp("torn.jsonl", "{\"a\":1}\n\n{\"a\":2}\n{\"a\":");
        let rows: Vec<R> = read_rows(&p).unwrap();
        assert_eq!(rows, vec![R { a: 1 }, R { a: 2 }]);
        assert_eq!(
            std::fs::read_to_string(&p).unwrap(),
            "{\"a\":1}\n\n{\"a\":2}\n"
        );
        let mut w = RowWriter::append(&p).unwrap();
        w.push(&R { a: 3 }).unwrap();
        let rows: Vec<R> = read_rows(&p).unwrap();
        assert_eq!(rows.len(), 3);
    }

    #[test]
    fn complete_unterminated_last_line_is_kept_and_terminated() {
        let p = temp("unterminated.jsonl", "{\"a\":1}\n{\"a\":2}");
        let rows: Vec<R> = read_rows(&p).unwrap();
        assert_eq!(rows, vec![R { a: 1 }, R { a: 2 }]);
        assert!(std::fs::read_to_string(&p).unwrap().ends_with("}\n"));
    }

    #[test]
    fn bad_line_in_the_middle_is_an_error_naming_it() {
        let p = temp("bad.jsonl", "{\"a\":1}\n{\"b\":1}\n{\"a\":2}\n");
        let e = read_rows::<R>(&p).unwrap_err().to_string();
        assert!(
            e.contains("bad.jsonl:2") && e.contains("move the file away"),
            "{e}"
        );
    }
}
