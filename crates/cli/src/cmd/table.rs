//! Aligned plain-text tables for the listing commands (`log`, `client list`, `connections`,
//! `server list`, the lists in `status`): every column starts at the same offset on every row
//! whatever the lengths of the names, with no colour or border so the output pipes cleanly.

use comfy_table::{CellAlignment, ColumnConstraint, ContentArrangement, Table, presets};

/// A table under construction: an optional header row, then rows of cells.
pub(crate) struct Listing {
    table: Table,
    right: Vec<usize>,
    indent: usize,
}

impl Listing {
    /// A table with these column headings; the columns in `right` are right-aligned (numbers).
    pub(crate) fn new(headers: &[&str], right: &[usize]) -> Self {
        let mut listing = Self::bare(0);
        listing.right = right.to_vec();
        listing.table.set_header(headers.iter().copied());
        listing.style_columns();
        listing
    }

    /// A table without a header row, its lines indented (for the lists inside `status`).
    pub(crate) fn bare(indent: usize) -> Self {
        let mut table = Table::new();
        table
            .load_preset(presets::NOTHING)
            .set_content_arrangement(ContentArrangement::Disabled);
        Self {
            table,
            right: Vec::new(),
            indent,
        }
    }

    pub(crate) fn row(&mut self, cells: Vec<String>) {
        self.table.add_row(cells);
        self.style_columns();
    }

    fn style_columns(&mut self) {
        for (i, column) in self.table.column_iter_mut().enumerate() {
            column.set_padding((0, 2));
            column.set_constraint(ColumnConstraint::ContentWidth);
            if self.right.contains(&i) {
                column.set_cell_alignment(CellAlignment::Right);
            }
        }
    }

    /// The table as lines ending in `\n`, trailing spaces trimmed; empty when it has no rows
    /// and no header.
    pub(crate) fn render(&self) -> String {
        if self.table.row_count() == 0 && self.table.header().is_none() {
            return String::new();
        }
        let pad = " ".repeat(self.indent);
        self.table
            .lines()
            .map(|line| format!("{pad}{}\n", line.trim_end()))
            .collect()
    }
}

/// A unix time as a table cell (`2026-01-31 14:05:09`, UTC), `-` when there is none.
pub(crate) fn format_time(unix: Option<i64>) -> String {
    let Some(t) = unix.and_then(|t| time::OffsetDateTime::from_unix_timestamp(t).ok()) else {
        return "-".to_owned();
    };
    let format = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
    t.format(&format).unwrap_or_else(|_| "-".to_owned())
}

/// A unit enum variant's name as its JSON spells it (`not_fetched`).
pub(crate) fn wire_name(value: impl serde::Serialize) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| "?".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_start_at_the_same_offset_whatever_the_name_lengths() {
        let mut t = Listing::new(&["NAME", "BYTES", "PATH"], &[1]);
        t.row(vec!["a".into(), "7".into(), "/x".into()]);
        t.row(vec![
            "a-very-long-client-name-indeed".into(),
            "123456".into(),
            "/y".into(),
        ]);
        let text = t.render();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        let offsets: Vec<usize> = lines.iter().map(|l| l.find('/').unwrap_or(0)).collect();
        assert_eq!(offsets[1], offsets[2], "PATH column aligned:\n{text}");
        assert_eq!(lines[0].find("PATH"), Some(offsets[1]), "{text}");
        assert!(
            lines[1].contains("       7  /x"),
            "numbers align right:\n{text}"
        );
        assert!(!text.contains('\u{1b}'), "no colour:\n{text}");
    }

    #[test]
    fn a_bare_table_is_indented_and_empty_without_rows() {
        let mut t = Listing::bare(2);
        assert_eq!(t.render(), "");
        t.row(vec!["linear".into(), "ready".into()]);
        t.row(vec!["x".into(), "needs_login".into()]);
        assert_eq!(t.render(), "  linear  ready\n  x       needs_login\n");
    }
}
