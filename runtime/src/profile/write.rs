//! The profile file layout: RON with a header comment, one line per layer / data set / tuning
//! row, so that files are readable and diff well. Leaf values go through `ron` itself (string
//! escaping, float formatting), so whatever is written parses back to the same value.

use std::fmt::Write as _;

use ron::ser::PrettyConfig;
use serde::Serialize;

use super::{Profile, ProfileError, Settings};

/// Writes a profile as RON text, one line per row, naming the profile in serialisation errors.
struct RonWriter<'a> {
    out: String,
    model_id: &'a str,
}

impl RonWriter<'_> {
    fn val<T: Serialize + ?Sized>(&self, v: &T) -> Result<String, ProfileError> {
        ron::to_string(v).map_err(|e| ProfileError::Serialize {
            model_id: self.model_id.to_string(),
            msg: e.to_string(),
        })
    }

    fn list<T: Serialize>(&self, v: &[T]) -> Result<String, ProfileError> {
        let items = v
            .iter()
            .map(|x| self.val(x))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(format!("[{}]", items.join(", ")))
    }

    fn line(&mut self, indent: usize, s: &str) {
        for _ in 0..indent {
            self.out.push_str("    ");
        }
        self.out.push_str(s);
        self.out.push('\n');
    }

    fn field<T: Serialize + ?Sized>(
        &mut self,
        indent: usize,
        name: &str,
        v: &T,
    ) -> Result<(), ProfileError> {
        let s = format!("{name}: {},", self.val(v)?);
        self.line(indent, &s);
        Ok(())
    }

    /// `v` as RON with the given layout, naming the profile in serialisation errors.
    fn pretty<T: Serialize>(&self, v: &T, config: PrettyConfig) -> Result<String, ProfileError> {
        ron::ser::to_string_pretty(v, config).map_err(|e| ProfileError::Serialize {
            model_id: self.model_id.to_string(),
            msg: e.to_string(),
        })
    }

    /// A setting on one line: `(srh_heads: 1, window: 8, …)`.
    fn setting(&self, s: &Settings) -> Result<String, ProfileError> {
        self.pretty(s, PrettyConfig::new().compact_structs(true))
    }

    /// A struct's fields, one `name: value,` line each at `indent` (lists and tuples inline).
    fn fields<T: Serialize>(&mut self, indent: usize, v: &T) -> Result<(), ProfileError> {
        let block = self.pretty(v, PrettyConfig::new().compact_arrays(true))?;
        let lines: Vec<&str> = block.lines().collect();
        // `(`, one line per field, `)`.
        for l in &lines[1..lines.len() - 1] {
            self.line(indent, l.trim());
        }
        Ok(())
    }

    fn matrix(&mut self, name: &str, m: &[Vec<f64>]) -> Result<(), ProfileError> {
        self.line(1, &format!("{name}: ["));
        for (l, row) in m.iter().enumerate() {
            let s = format!("{}, // layer {l}", self.list(row)?);
            self.line(2, &s);
        }
        self.line(1, "],");
        Ok(())
    }
}

pub(super) fn to_ron(p: &Profile) -> Result<String, ProfileError> {
    let mut w = RonWriter {
        out: String::new(),
        model_id: &p.model_id,
    };
    let _ = writeln!(
        w.out,
        "// CompressKV profile of {} (schema {}), written by `compresskv profile`.",
        p.model_id.replace('\n', " "),
        p.schema_version
    );
    w.line(
        0,
        "// srh_scores / retrieval_scores: [layer][query head], higher = more important.",
    );
    w.line(0, "(");
    w.field(1, "schema_version", &p.schema_version)?;
    w.field(1, "model_id", &p.model_id)?;
    w.line(1, "fingerprint: (");
    w.fields(2, &p.fingerprint)?;
    w.line(1, "),");
    w.matrix("srh_scores", &p.srh_scores)?;
    w.matrix("retrieval_scores", &p.retrieval_scores)?;
    match &p.layer_errors {
        None => w.line(1, "layer_errors: None,"),
        Some(le) => {
            w.line(1, "layer_errors: Some((");
            let s = format!("per_layer: {},", w.list(&le.per_layer)?);
            w.line(2, &s);
            w.line(2, "per_dataset: [");
            for (name, v) in &le.per_dataset {
                let s = format!("({}, {}),", w.val(name)?, w.list(v)?);
                w.line(3, &s);
            }
            w.line(2, "],");
            w.field(2, "source", &le.source)?;
            w.line(1, ")),");
        }
    }
    let d = &p.defaults;
    w.line(1, "defaults: (");
    w.fields(2, &d.settings)?;
    w.field(2, "min_budget", &d.min_budget)?;
    w.field(2, "max_budget_factor", &d.max_budget_factor)?;
    w.line(1, "),");
    match &p.tuning {
        None => w.line(1, "tuning: None,"),
        Some(t) => {
            w.line(1, "tuning: Some((");
            let s = format!("chosen: {},", w.setting(&t.chosen)?);
            w.line(2, &s);
            w.line(2, "table: [");
            for (s, recall) in &t.table {
                let s = format!("({}, {}),", w.setting(s)?, w.val(recall)?);
                w.line(3, &s);
            }
            w.line(2, "],");
            let s = format!("budgets: {},", w.list(&t.budgets)?);
            w.line(2, &s);
            w.line(2, "per_budget: [");
            for c in &t.per_budget {
                w.line(3, "(");
                w.field(4, "budget", &c.budget)?;
                let s = format!("chosen: {},", w.setting(&c.chosen)?);
                w.line(4, &s);
                w.line(4, "table: [");
                for (s, v) in &c.table {
                    let s = format!("({}, {}),", w.setting(s)?, w.val(v)?);
                    w.line(5, &s);
                }
                w.line(4, "],");
                w.line(3, "),");
            }
            w.line(2, "],");
            match &t.validation {
                None => w.line(2, "validation: None,"),
                Some(v) => {
                    w.line(2, "validation: Some((");
                    w.field(3, "prompts", &v.prompts)?;
                    w.field(3, "search_prompts", &v.search_prompts)?;
                    w.line(3, "table: [");
                    for (s, x) in &v.table {
                        let s = format!("({}, {}),", w.setting(s)?, w.val(x)?);
                        w.line(4, &s);
                    }
                    w.line(3, "],");
                    w.line(3, "per_budget: [");
                    for c in &v.per_budget {
                        let s = format!(
                            "(budget: {}, overall: {}, candidate: {}, candidate_score: {}, kept: {}),",
                            c.budget,
                            w.val(&c.overall)?,
                            w.setting(&c.candidate)?,
                            w.val(&c.candidate_score)?,
                            c.kept
                        );
                        w.line(4, &s);
                    }
                    w.line(3, "],");
                    w.line(2, ")),");
                }
            }
            w.line(1, ")),");
        }
    }
    match &p.recommendation {
        None => w.line(1, "recommendation: None,"),
        Some(r) => {
            w.line(1, "recommendation: Some((");
            w.fields(2, r)?;
            w.line(1, ")),");
        }
    }
    w.line(1, "provenance: (");
    w.fields(2, &p.provenance)?;
    w.line(1, "),");
    w.line(0, ")");
    Ok(w.out)
}
