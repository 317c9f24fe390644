//! Plain terminal tables (no borders), each column as wide as its longest
//! value, through comfy-table.

use comfy_table::{Cell, CellAlignment, ContentArrangement, Table};

/// A column: its heading, and whether its values align right (numbers).
pub(crate) struct Column<'a>(pub(crate) &'a str, pub(crate) bool);

/// Prints rows under their headings, two spaces between columns.
pub(crate) fn print(columns: &[Column<'_>], rows: Vec<Vec<String>>) {
    let mut t = Table::new();
    t.load_preset(comfy_table::presets::NOTHING)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(columns.iter().map(|c| Cell::new(c.0)));
    for row in rows {
        t.add_row(row);
    }
    for (i, c) in columns.iter().enumerate() {
        if let Some(col) = t.column_mut(i) {
            col.set_padding((0, 2));
            if c.1 {
                col.set_cell_alignment(CellAlignment::Right);
            }
        }
    }
    for line in t.lines() {
        println!("{}", line.trim_end());
    }
}
