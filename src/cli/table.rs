//! Plain aligned text tables for human output.

/// A table defined by its columns: each column is a header and how to render one row's cell,
/// given together, so a header and its cells cannot drift apart (a row with more cells than the
/// header once panicked `generate`).
pub struct Table<'a, R> {
    columns: Vec<(String, Cell<'a, R>)>,
}

/// How a column renders one row.
type Cell<'a, R> = Box<dyn Fn(&R) -> String + 'a>;

impl<'a, R> Default for Table<'a, R> {
    fn default() -> Self {
        Table {
            columns: Vec::new(),
        }
    }
}

impl<'a, R> Table<'a, R> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a column: its header and the cell of each row.
    pub fn col(mut self, header: impl Into<String>, cell: impl Fn(&R) -> String + 'a) -> Self {
        self.columns.push((header.into(), Box::new(cell)));
        self
    }

    /// Header, a rule, and one line per row; columns padded to their widest cell.
    pub fn render<'r>(&self, rows: impl IntoIterator<Item = &'r R>) -> String
    where
        R: 'r,
    {
        let cells: Vec<Vec<String>> = rows
            .into_iter()
            .map(|r| self.columns.iter().map(|(_, f)| f(r)).collect())
            .collect();
        let header: Vec<String> = self.columns.iter().map(|(h, _)| h.clone()).collect();
        let width = |i: usize| {
            cells
                .iter()
                .map(|r| r[i].chars().count())
                .chain([header[i].chars().count()])
                .max()
                .unwrap_or(0)
        };
        let w: Vec<usize> = (0..header.len()).map(width).collect();
        let line = |cells: &[String]| {
            cells
                .iter()
                .zip(&w)
                .map(|(c, &width)| format!("{c:<width$}"))
                .collect::<Vec<_>>()
                .join("  ")
                .trim_end()
                .to_string()
        };
        let mut out = line(&header);
        out.push('\n');
        out.push_str(
            &w.iter()
                .map(|&x| "-".repeat(x))
                .collect::<Vec<_>>()
                .join("  "),
        );
        for r in &cells {
            out.push('\n');
            out.push_str(&line(r));
        }
        out
    }
}

/// `1234567` → `1.18 MiB`.
/// A KV cache's size before and after compression: `111.00 MiB → 15.70 MiB`.
pub fn bytes_kept(full: usize, kept: usize) -> String {
    format!("{} → {}", bytes(full), bytes(kept))
}

pub fn bytes(n: usize) -> String {
    let n = n as f64;
    if n >= 1024.0 * 1024.0 * 1024.0 {
        format!("{:.2} GiB", n / (1024.0 * 1024.0 * 1024.0))
    } else if n >= 1024.0 * 1024.0 {
        format!("{:.2} MiB", n / (1024.0 * 1024.0))
    } else if n >= 1024.0 {
        format!("{:.1} KiB", n / 1024.0)
    } else {
        format!("{n} B")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_and_rows_follow_the_header() {
        let rows = [("full", 1.5), ("compresskv @ 128", 22.31)];
        let t = Table::new()
            .col("method", |r: &(&str, f64)| r.0.to_string())
            .col("decode", |r| format!("{:.1} tok/s", r.1));
        assert_eq!(
            t.render(&rows),
            "method            decode\n\
             ----------------  ----------\n\
             full              1.5 tok/s\n\
             compresskv @ 128  22.3 tok/s"
        );
        assert_eq!(t.render(&[]), "method  decode\n------  ------");
    }
}
