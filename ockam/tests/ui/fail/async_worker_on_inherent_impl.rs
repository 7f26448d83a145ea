struct W;

#[ockam::async_worker]
impl W {
    async fn handle(&mut self) {}
}

fn main() {}
