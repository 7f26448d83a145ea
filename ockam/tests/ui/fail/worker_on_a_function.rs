#[ockam::worker]
async fn not_an_impl() {}

fn main() {}
