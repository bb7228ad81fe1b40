//! Calibration prompts and the profiling run: needles × lengths × depths → SRH scores →
//! [`Profile`]. Checkpoints after every sample, so a killed run resumes.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use compresskv_runtime::loader::LoadedModel;
use compresskv_runtime::profile::{Defaults, Fingerprint, Profile, Provenance, sha256_hex};
use serde::{Deserialize, Serialize};

use crate::srh::{CalibSample, SampleResult, aggregate, score_sample};

#[derive(Debug, thiserror::Error)]
pub enum CalibError {
    #[error("{0}")]
    Input(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Profile(#[from] compresskv_runtime::profile::ProfileError),
    #[error(transparent)]
    Load(#[from] compresskv_runtime::loader::LoadError),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CalibError + '_ {
    move |source| CalibError::Io {
        path: path.to_path_buf(),
        source,
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Needle {
    pub needle: String,
    pub question: String,
    pub answer: String,
}

pub fn load_needles(path: &Path) -> Result<Vec<Needle>, CalibError> {
    let text = std::fs::read_to_string(path).map_err(io(path))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let n: Needle = serde_json::from_str(line).map_err(|e| {
            CalibError::Input(format!(
                "{}:{}: {e} (each line needs exactly `needle`, `question`, `answer`)",
                path.display(),
                i + 1
            ))
        })?;
        if !n.needle.to_lowercase().contains(&n.answer.to_lowercase()) {
            return Err(CalibError::Input(format!(
                "{}:{}: the answer must be a span of the needle",
                path.display(),
                i + 1
            )));
        }
        out.push(n);
    }
    if out.is_empty() {
        return Err(CalibError::Input(format!("{}: no needles", path.display())));
    }
    Ok(out)
}

/// All `.txt` files of `dir`, in name order, joined by blank lines.
pub fn load_haystack(dir: &Path) -> Result<String, CalibError> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io(dir))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "txt"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(CalibError::Input(format!(
            "{} has no .txt files: pass --haystack DIR with prose, or run `compresskv fetch \
             haystack`",
            dir.display()
        )));
    }
    let texts: Result<Vec<String>, CalibError> = files
        .iter()
        .map(|f| std::fs::read_to_string(f).map_err(io(f)))
        .collect();
    Ok(texts?.join("\n\n"))
}

pub const QUESTION_TEMPLATE: &str = "\nBased on the content of the book, Question: {q}\nAnswer:";

/// `<bos> + book[..p] + tok(" " + needle) + book[p..n] + tok(question)`, exactly `length`
/// tokens, `p` at `depth`% moved back to a sentence end. The span is the needle tokens that
/// overlap the answer text.
pub fn build_sample(
    lm: &LoadedModel,
    book: &[u32],
    needle: &Needle,
    length: usize,
    depth: f64,
) -> Result<CalibSample, CalibError> {
    let tok = &lm.tokenizer;
    let needle_text = format!(" {}", needle.needle);
    let needle_ids = tok.encode(&needle_text, false)?;
    let q_ids = tok.encode(&QUESTION_TEMPLATE.replace("{q}", &needle.question), false)?;
    let bos: Vec<u32> = lm.spec.bos_token_id.into_iter().collect();
    let fixed = bos.len() + needle_ids.len() + q_ids.len();
    if length <= fixed + 16 || book.len() < length - fixed {
        return Err(CalibError::Input(format!(
            "length {length} does not fit: the haystack has {} tokens and the needle + question \
             take {fixed}",
            book.len()
        )));
    }
    let n = length - fixed;
    let mut p = ((n as f64) * depth / 100.0).round() as usize;
    while p > 0 && !tok.decode(&book[p - 1..p])?.trim_end().ends_with('.') {
        p -= 1;
    }
    // Answer span: needle tokens whose text overlaps the answer's characters.
    let lower = needle_text.to_lowercase();
    let a0 = lower
        .find(&needle.answer.to_lowercase())
        .ok_or_else(|| CalibError::Input("answer not in needle".into()))?;
    let a1 = a0 + needle.answer.len();
    let (mut first, mut last) = (None, 0);
    let mut prev_len = 0;
    for i in 0..needle_ids.len() {
        let len = tok.decode(&needle_ids[..=i])?.len();
        let (c0, c1) = (prev_len, len);
        if c1 > a0 && c0 < a1 {
            first.get_or_insert(i);
            last = i + 1;
        }
        prev_len = len;
    }
    let first = first.unwrap_or(0);
    let offset = bos.len() + p;
    let mut ids = bos;
    ids.extend_from_slice(&book[..p]);
    ids.extend_from_slice(&needle_ids);
    ids.extend_from_slice(&book[p..n]);
    ids.extend_from_slice(&q_ids);
    debug_assert_eq!(ids.len(), length);
    Ok(CalibSample {
        ids,
        span: offset + first..offset + last,
        answer: needle.answer.clone(),
    })
}

#[derive(Debug, Clone)]
pub struct Grid {
    pub lengths: Vec<usize>,
    pub depths: Vec<f64>,
    pub max_new: usize,
}

/// One checkpoint line.
#[derive(Debug, Serialize, Deserialize)]
struct Checkpoint {
    key: String,
    result: SampleResult,
}

/// Runs the calibration and returns the profile. `checkpoint` collects finished samples; with
/// `resume`, samples already there are not run again.
#[allow(clippy::too_many_arguments)]
pub fn profile_model(
    lm: &LoadedModel,
    needles: &[Needle],
    haystack: &str,
    grid: &Grid,
    checkpoint: &Path,
    resume: bool,
    calibration_bytes: &[u8],
    progress: &mut dyn FnMut(usize, usize, &str),
) -> Result<(Profile, Vec<SampleResult>), CalibError> {
    let started = Instant::now();
    let book = lm.tokenizer.encode(haystack, false)?;
    let mut done: std::collections::HashMap<String, SampleResult> = Default::default();
    if resume && checkpoint.exists() {
        let text = std::fs::read_to_string(checkpoint).map_err(io(checkpoint))?;
        for line in text.lines() {
            // A line cut by a kill is simply redone.
            if let Ok(c) = serde_json::from_str::<Checkpoint>(line) {
                done.insert(c.key, c.result);
            }
        }
    } else if checkpoint.exists() {
        std::fs::remove_file(checkpoint).map_err(io(checkpoint))?;
    }
    let mut ck = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(checkpoint)
        .map_err(io(checkpoint))?;
    let mut eos = lm.spec.eos_token_ids.clone();
    eos.extend(lm.tokenizer.extra_eos_ids());
    let total = needles.len() * grid.lengths.len() * grid.depths.len();
    let mut results = Vec::new();
    let mut i = 0;
    for (ni, needle) in needles.iter().enumerate() {
        for &len in &grid.lengths {
            for &depth in &grid.depths {
                i += 1;
                let key = format!("{ni}/{len}/{depth}");
                let r = match done.remove(&key) {
                    Some(r) => r,
                    None => {
                        let s = build_sample(lm, &book, needle, len, depth)?;
                        let r = score_sample(&lm.model, &lm.tokenizer, &s, grid.max_new, &eos);
                        let line = serde_json::to_string(&Checkpoint {
                            key: key.clone(),
                            result: r.clone(),
                        })
                        .expect("serialisable");
                        writeln!(ck, "{line}").map_err(io(checkpoint))?;
                        ck.flush().map_err(io(checkpoint))?;
                        r
                    }
                };
                progress(i, total, &format!("{key} recall {:.2}", r.recall));
                results.push(r);
            }
        }
    }
    let spec = &lm.spec;
    let (srh, classic) = aggregate(&results, spec.n_layers, spec.n_heads);
    let n_counted = results.iter().filter(|r| r.counted).count();
    if n_counted == 0 {
        return Err(CalibError::Input(
            "no calibration sample was answered (word recall > 0.5): the model cannot retrieve \
             at these lengths; try shorter --lengths"
                .into(),
        ));
    }
    let profile = Profile {
        schema_version: compresskv_runtime::profile::SCHEMA_VERSION,
        model_id: lm.id.clone(),
        fingerprint: Fingerprint::of(spec, &lm.config_text, None),
        srh_scores: srh,
        retrieval_scores: classic,
        layer_errors: None,
        defaults: Defaults::for_heads(spec.n_heads),
        tuning: None,
        provenance: Provenance {
            tool_version: compresskv_runtime::profile::TOOL_VERSION.to_string(),
            calibration_hash: sha256_hex(calibration_bytes),
            grid: format!(
                "{} needles x lengths {:?} x depths {:?}, max_new {}; {n_counted}/{total} \
                 samples counted",
                needles.len(),
                grid.lengths,
                grid.depths,
                grid.max_new
            ),
            seed: 0,
            wall_time_s: (started.elapsed().as_secs_f64() * 10.0).round() / 10.0,
            imported_from: None,
            created: compresskv_runtime::profile::utc_now(),
        },
    };
    Ok((profile, results))
}
