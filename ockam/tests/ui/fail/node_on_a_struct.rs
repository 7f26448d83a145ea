#[ockam::node]
struct NotAFunction;

fn main() {}
