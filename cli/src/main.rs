//! The `shturman` command.
fn main() {}
