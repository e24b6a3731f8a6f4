//! ADD+DEL benchmark (being written).

fn main() {}
