//! The `paperbot-operator` binary.
fn main() {}
