//! Agent convergence benchmark (placeholder while it is being written).
fn main() {}
