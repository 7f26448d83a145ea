use ockam::Context;

#[ockam::node]
async fn main(ctx: Context) {
}
