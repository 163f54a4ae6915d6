//! The `latchkey` command-line interface (being written).

fn main() {}
