//! `RemoteForwarder`: a forwarding address on a hub that delivers to a
//! worker on this node, so that nodes which cannot reach each other
//! directly meet at the hub.

use ockam_core::{Address, Error, ErrorKind, Result, Route, TCP};
use ockam_node::Context;
use std::time::Duration;

/// The hub service that creates forwarders.
pub const FORWARDING_SERVICE: &str = "forwarding_service";

/// A forwarder registered on a hub.
#[derive(Debug, Clone)]
pub struct RemoteForwarder {
    remote_address: Address,
    hub: Route,
}

impl RemoteForwarder {
    /// Registers a forwarder on the hub at TCP address `hub` (`"host:port"`)
    /// that delivers every message sent to it to `destination`, a worker on
    /// this node.
    pub async fn create(
        ctx: &Context,
        hub: impl AsRef<str>,
        destination: impl Into<Address>,
    ) -> Result<RemoteForwarder> {
        let hub = Route::from(Address::new(TCP, hub.as_ref()));
        Self::create_over(ctx, hub, destination).await
    }

    /// Like [`RemoteForwarder::create`], with any route to the hub.
    pub async fn create_over(
        ctx: &Context,
        hub: impl Into<Route>,
        destination: impl Into<Address>,
    ) -> Result<RemoteForwarder> {
        let hub: Route = hub.into();
        let destination: Address = destination.into();
        if !destination.is_local() {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                "a forwarder's destination is a worker on this node",
            ));
        }
        let mut c = ctx.new_context(Address::random_local()).await?;
        let service: Route = Route::new()
            .append_route(hub.clone())
            .append(FORWARDING_SERVICE)
            .into();
        c.send(service, destination.address().to_string()).await?;
        let reply = c
            .receive_duration::<String>(Duration::from_secs(30))
            .await?;
        let remote_address = Address::parse(reply.as_body())?;
        Ok(RemoteForwarder {
            remote_address,
            hub,
        })
    }

    /// The forwarder's address on the hub: send to
    /// `route![(TCP, hub), forwarder.remote_address(), ...]`.
    pub fn remote_address(&self) -> Address {
        self.remote_address.clone()
    }

    /// The full route to the forwarder, hub included.
    pub fn route(&self) -> Route {
        Route::new()
            .append_route(self.hub.clone())
            .append(self.remote_address.clone())
            .into()
    }
}
