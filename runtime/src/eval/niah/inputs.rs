//! What a needle prompt is made of: the needles (jsonl, or the built-in San Francisco one) and
//! the haystack text (a directory of `.txt` files, the documents of jsonl files such as
//! LongBench's or L-Eval's, a string, or the passkey noise), tokenized on demand and repeated as
//! often as a prompt needs.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{Encode, NOISE_UNIT, NiahError};
use crate::eval::metrics::COMPRESSKV_AVG_DATASETS;

/// One needle: the sentence hidden in the haystack, the question asked, and the expected answer.
///
/// In jsonl the answer may also be named `real_needle` (the CompressKV/Retrieval_Head files).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Needle {
    /// The sentence inserted into the haystack.
    pub needle: String,
    /// The question appended after the haystack.
    pub question: String,
    /// The expected answer (the words that are scored).
    #[serde(alias = "real_needle")]
    pub answer: String,
}

impl Needle {
    /// The classic needle (needlehaystack, the CompressKV paper, the peer baseline).
    pub fn san_francisco() -> Self {
        Needle {
            needle: "The best thing to do in San Francisco is eat a sandwich and sit in Dolores Park on a sunny day."
                .into(),
            question: "What is the best thing to do in San Francisco?".into(),
            answer: "eat a sandwich and sit in Dolores Park on a sunny day".into(),
        }
    }
}

/// Read needles from jsonl: one object per line with string fields `needle`, `question` and
/// `answer` (or `real_needle`); other fields are ignored, blank lines skipped. Errors name the
/// 1-based line and the field.
pub fn load_needles(path: impl AsRef<Path>) -> Result<Vec<Needle>, NiahError> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path).map_err(|source| NiahError::Io {
        path: path.into(),
        source,
    })?;
    parse_needles(&text, path)
}

/// [`load_needles`] on text already read; `origin` (the file, or e.g.
/// `built-in:tune-needles.jsonl` for [`crate::profile::builtin::TUNE_NEEDLES`]) is only used in
/// messages.
pub fn parse_needles(text: &str, origin: impl AsRef<Path>) -> Result<Vec<Needle>, NiahError> {
    let path = origin.as_ref();
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line_no = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let value: serde_json::Value = serde_json::from_str(line).map_err(|e| NiahError::Json {
            path: path.into(),
            line: line_no,
            message: e.to_string(),
        })?;
        let Some(obj) = value.as_object() else {
            return Err(NiahError::Json {
                path: path.into(),
                line: line_no,
                message: "expected an object".into(),
            });
        };
        let field = |name: &'static str, alias: Option<&str>| -> Result<String, NiahError> {
            let v = obj.get(name).or_else(|| alias.and_then(|a| obj.get(a)));
            match v {
                None => Err(NiahError::MissingField {
                    path: path.into(),
                    line: line_no,
                    field: name,
                }),
                Some(serde_json::Value::String(s)) => Ok(s.clone()),
                Some(_) => Err(NiahError::NotAString {
                    path: path.into(),
                    line: line_no,
                    field: name,
                }),
            }
        };
        out.push(Needle {
            needle: field("needle", None)?,
            question: field("question", None)?,
            answer: field("answer", Some("real_needle"))?,
        });
    }
    if out.is_empty() {
        return Err(NiahError::NoNeedles { path: path.into() });
    }
    Ok(out)
}

/// LongBench v1's English question-answering datasets (single- and multi-document), whose
/// `context` documents make the `longbench:` haystack: the first six of the "avg" list.
pub const LONGBENCH_QA_DATASETS: &[&str] = COMPRESSKV_AVG_DATASETS.split_at(6).0;

/// The background text. It repeats as often as a prompt needs (needlehaystack re-reads the
/// whole corpus until it is long enough).
#[derive(Debug, Clone)]
pub struct Haystack {
    text: String,
    files: Vec<PathBuf>,
}

impl Haystack {
    /// All `*.txt` files of `dir`, sorted by file name (byte order), concatenated as they are (no
    /// separator: needlehaystack's `context += f.read()`).
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Self, NiahError> {
        Self::from_dir_joined(dir, "")
    }

    /// [`Haystack::from_dir`] with `separator` between files (the profiler's calibration
    /// haystack: `"\n\n"`).
    pub fn from_dir_joined(dir: impl AsRef<Path>, separator: &str) -> Result<Self, NiahError> {
        let dir = dir.as_ref();
        let io = |source| NiahError::Io {
            path: dir.into(),
            source,
        };
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(io)?
            .map(|e| e.map(|e| e.path()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(io)?
            .into_iter()
            .filter(|p| p.extension().is_some_and(|e| e == "txt") && p.is_file())
            .collect();
        files.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
        let mut text = String::new();
        for (i, f) in files.iter().enumerate() {
            if i > 0 {
                text.push_str(separator);
            }
            text.push_str(&std::fs::read_to_string(f).map_err(|source| NiahError::Io {
                path: f.clone(),
                source,
            })?);
        }
        if text.is_empty() {
            return Err(NiahError::EmptyHaystack(format!(
                "no text in {}/*.txt",
                dir.display()
            )));
        }
        Ok(Haystack { text, files })
    }

    /// Documents from jsonl: the string field `field` of every line (blank lines skipped), the
    /// documents joined with `"\n\n"`. `path` is a file, or a directory whose `*.jsonl` files
    /// directly in it or one folder down (LongBench's `data/`, L-Eval's task folders) are read in
    /// path order; with `only`, just the files whose stem is listed. Errors name the file and line.
    pub fn from_jsonl_documents(
        path: impl AsRef<Path>,
        field: &'static str,
        only: Option<&[&str]>,
    ) -> Result<Self, NiahError> {
        let path = path.as_ref();
        let io = |p: &Path| {
            let p = p.to_path_buf();
            move |source| NiahError::Io { path: p, source }
        };
        let files = if path.is_dir() {
            let mut files = Vec::new();
            let mut dirs = vec![path.to_path_buf()];
            for e in std::fs::read_dir(path).map_err(io(path))? {
                let p = e.map_err(io(path))?.path();
                if p.is_dir() {
                    dirs.push(p);
                }
            }
            for d in dirs {
                for e in std::fs::read_dir(&d).map_err(io(&d))? {
                    let p = e.map_err(io(&d))?.path();
                    let stem = p.file_stem().and_then(|s| s.to_str()).unwrap_or("");
                    if p.is_file()
                        && p.extension().is_some_and(|x| x == "jsonl")
                        && only.is_none_or(|o| o.contains(&stem))
                    {
                        files.push(p);
                    }
                }
            }
            files.sort();
            files
        } else {
            std::fs::metadata(path).map_err(io(path))?;
            vec![path.to_path_buf()]
        };
        if files.is_empty() {
            let which = only.map_or("*.jsonl".to_string(), |o| {
                format!("{}.jsonl", o.join(".jsonl, "))
            });
            return Err(NiahError::EmptyHaystack(format!(
                "none of {which} in {} or its folders",
                path.display()
            )));
        }
        let mut docs: Vec<String> = Vec::new();
        for f in &files {
            let text = std::fs::read_to_string(f).map_err(io(f))?;
            for (i, line) in text.lines().enumerate() {
                if line.trim().is_empty() {
                    continue;
                }
                let json = |message: String| NiahError::Json {
                    path: f.clone(),
                    line: i + 1,
                    message,
                };
                let value: serde_json::Value =
                    serde_json::from_str(line).map_err(|e| json(e.to_string()))?;
                let obj = value
                    .as_object()
                    .ok_or_else(|| json("expected an object".into()))?;
                match obj.get(field) {
                    None => {
                        return Err(NiahError::MissingField {
                            path: f.clone(),
                            line: i + 1,
                            field,
                        });
                    }
                    Some(serde_json::Value::String(s)) => {
                        if !s.trim().is_empty() {
                            docs.push(s.clone());
                        }
                    }
                    Some(_) => {
                        return Err(NiahError::NotAString {
                            path: f.clone(),
                            line: i + 1,
                            field,
                        });
                    }
                }
            }
        }
        if docs.is_empty() {
            return Err(NiahError::EmptyHaystack(format!(
                "no `{field}` text in {}",
                path.display()
            )));
        }
        Ok(Haystack {
            text: docs.join("\n\n"),
            files,
        })
    }

    /// A haystack from text.
    pub fn from_text(text: impl Into<String>) -> Result<Self, NiahError> {
        let text = text.into();
        if text.is_empty() {
            return Err(NiahError::EmptyHaystack("empty text".into()));
        }
        Ok(Haystack {
            text,
            files: Vec::new(),
        })
    }

    /// The repeated-noise haystack: [`NOISE_UNIT`] repeated, a space between repetitions.
    pub fn noise() -> Self {
        Haystack {
            text: format!("{NOISE_UNIT} "),
            files: Vec::new(),
        }
    }

    /// The text (one repetition).
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The files read, in order (empty for [`Haystack::from_text`] / [`Haystack::noise`]).
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// The first `n` tokens of the (repeated) haystack. Only a prefix of the text is encoded,
    /// long enough to give `n` tokens plus a margin, so that the cut does not change them.
    pub fn tokens(&self, n: usize, encode: Encode<'_>) -> Result<Vec<u32>, NiahError> {
        const MARGIN: usize = 32;
        let want = n + MARGIN;
        let mut bytes = want * 8 + 256;
        for _ in 0..16 {
            let ids = encode(&self.cyclic_prefix(bytes));
            if ids.len() >= want {
                return Ok(ids[..n].to_vec());
            }
            if ids.is_empty() {
                break;
            }
            // Grow by the observed bytes-per-token ratio, with slack; at least double.
            let estimate = (bytes as f64 * want as f64 / ids.len() as f64 * 1.25) as usize + 1024;
            bytes = estimate.max(bytes * 2);
        }
        Err(NiahError::NoTokens)
    }

    /// The text repeated, cut to at most `bytes` bytes at a char boundary.
    fn cyclic_prefix(&self, bytes: usize) -> String {
        let mut out = String::with_capacity(bytes + 4);
        while out.len() + self.text.len() <= bytes {
            out.push_str(&self.text);
        }
        let mut cut = bytes - out.len();
        while !self.text.is_char_boundary(cut) {
            cut -= 1;
        }
        out.push_str(&self.text[..cut]);
        out
    }
}
