//! `RemoteForwarder`: a forwarding address on a hub that delivers to a
//! worker on this node, so that nodes which cannot reach each other
//! directly meet at the hub.
//!
//! The registration, as the hub's `forwarding_service` speaks it:
//! - request: a string, the destination worker's local address as it is
//!   (its name without a type prefix: any UTF-8, `#` and digits included);
//! - answer: a string, the forwarder's address on the hub in text form
//!   (`"0#<name>"`, see [`Address::parse`]);
//! - or, when the hub refuses the registration, a
//!   [`ProtocolPayload`](crate::protocol::ProtocolPayload) of protocol
//!   [`STREAM_ERROR`](crate::protocol::STREAM_ERROR) whose
//!   [`StreamError`](crate::protocol::StreamError) says why.
//!
//! Unregistration ([`RemoteForwarder::unregister`]): a `ProtocolPayload` of
//! protocol [`FORWARDING_UNREGISTER`] whose data is the forwarder's address
//! in text form, sent over the route the forwarder was registered over;
//! answered with the string `"unregistered"`, or a refusal as above. A hub
//! also stops the forwarders of registrants whose connection is gone.

use crate::protocol::{ProtocolPayload, StreamError, STREAM_ERROR};
use ockam_core::{Address, Any, Error, ErrorKind, Message, Result, Route, TCP};
use ockam_node::Context;
use std::time::{Duration, Instant};
use tracing::warn;

/// The hub service that creates forwarders.
pub const FORWARDING_SERVICE: &str = "forwarding_service";

/// The protocol of an unregistration: a `ProtocolPayload` whose data is
/// the forwarder's address in text form (see
/// [`RemoteForwarder::unregister`]).
pub const FORWARDING_UNREGISTER: &str = "forwarding_unregister";

/// How long [`RemoteForwarder::create`] waits for the hub's answer once
/// its request is sent.
pub const REGISTRATION_TIMEOUT: Duration = Duration::from_secs(30);

/// A forwarder registered on a hub.
#[derive(Debug, Clone)]
pub struct RemoteForwarder {
    remote_address: Address,
    hub: Route,
}

impl RemoteForwarder {
    /// Registers a forwarder on the hub at TCP address `hub` (`"host:port"`)
    /// that delivers every message sent to it to `destination`, a worker on
    /// this node. Registering the same destination again over the same
    /// connection gives the same forwarder.
    ///
    /// `destination` converts to an [`Address`] as everywhere else: text
    /// with a numeric `<type>#` prefix (`"3#x"`) is an address of that
    /// transport type, and is refused here; a worker whose local name looks
    /// like that is named with `Address::new(LOCAL, "3#x")`. Any other text
    /// (`"echoer"`, `"a#b"`, `"é"`) is a local name and reaches the hub as
    /// it is.
    ///
    /// # Errors
    /// - [`ErrorKind::InvalidInput`]: `destination` is not a local address,
    ///   or the hub refused the registration (the error says why);
    /// - [`ErrorKind::PermissionDenied`]: a closed hub's access file does
    ///   not let this identity register forwarders (or the route does not
    ///   go through a secure channel to the hub);
    /// - the error of the first send when the hub cannot be reached (with
    ///   its kind, [`ErrorKind::Unavailable`] or [`ErrorKind::Timeout`] for
    ///   a TCP connection that fails), at once rather than after a timeout;
    /// - [`ErrorKind::Protocol`]: the hub answered with something other
    ///   than a local address;
    /// - [`ErrorKind::Timeout`]: no answer within [`REGISTRATION_TIMEOUT`].
    ///
    /// # Cancel safety
    /// Not cancel safe: dropped after the request went out, the hub may
    /// still register the forwarder, unknown here (registering again over
    /// the same connection gives it back); the hub removes it once that
    /// connection closes.
    pub async fn create(
        ctx: &Context,
        hub: impl HubAddress,
        destination: impl Into<Address>,
    ) -> Result<RemoteForwarder> {
        Self::create_over(ctx, hub.into_hub_route(), destination).await
    }

    /// Like [`RemoteForwarder::create`], with any route to the hub.
    ///
    /// # Errors
    /// As [`RemoteForwarder::create`]'s.
    ///
    /// # Cancel safety
    /// As [`RemoteForwarder::create`]'s.
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
                format!(
                    "a forwarder's destination is a worker on this node, and {destination} is \
                     not a local address (for a local name with '#' in it, use \
                     Address::new(LOCAL, name))"
                ),
            ));
        }
        let mut c = ctx.new_context(Address::random_local()).await?;
        let service: Route = Route::new()
            .append_route(hub.clone())
            .append(FORWARDING_SERVICE)
            .into();
        c.send(service, destination.address().to_string())
            .await
            .map_err(|e| {
                Error::with_source(
                    e.kind(),
                    format!("cannot register a forwarder on the hub over {hub}"),
                    e,
                )
            })?;
        let text = receive_answer(&mut c, &hub, "forwarder registration").await?;
        let not_local = || {
            let why = format!(
                "the hub answered a forwarder registration with {text:?}, not a local address"
            );
            Error::new(ErrorKind::Protocol, why)
        };
        let remote_address = Address::parse(&text)
            .ok()
            .filter(Address::is_local)
            .ok_or_else(not_local)?;
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

    /// Removes the forwarder from the hub: messages sent to it afterwards
    /// reach nobody. Only the route it was registered over may remove it
    /// (the same connection to the hub); a hub also removes it by itself
    /// once that connection is gone.
    ///
    /// # Errors
    /// - [`ErrorKind::InvalidInput`]: the hub refused (no such forwarder,
    ///   or one registered over another route); the error says why;
    /// - the send's error when the hub cannot be reached;
    /// - [`ErrorKind::Timeout`]: no answer within [`REGISTRATION_TIMEOUT`].
    pub async fn unregister(self, ctx: &Context) -> Result<()> {
        let mut c = ctx.new_context(Address::random_local()).await?;
        let service: Route = Route::new()
            .append_route(self.hub.clone())
            .append(FORWARDING_SERVICE)
            .into();
        let request =
            ProtocolPayload::new(FORWARDING_UNREGISTER, &self.remote_address.to_string())?;
        c.send(service, request).await?;
        let text = receive_answer(&mut c, &self.hub, "forwarder unregistration").await?;
        if text == "unregistered" {
            Ok(())
        } else {
            Err(Error::new(
                ErrorKind::Protocol,
                format!("the hub answered a forwarder unregistration with {text:?}"),
            ))
        }
    }
}

/// The hub's answer (a string) to a request about a forwarder (`what`), or
/// why there is none.
async fn receive_answer(c: &mut Context, hub: &Route, what: &str) -> Result<String> {
    let deadline = Instant::now() + REGISTRATION_TIMEOUT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let reply = c.receive_duration::<Any>(left).await.map_err(|e| {
            Error::with_source(
                e.kind(),
                format!("the hub over {hub} did not answer a {what}"),
                e,
            )
        })?;
        if let Ok(text) = String::decode(reply.payload()) {
            return Ok(text);
        }
        match ProtocolPayload::decode(reply.payload())
            .and_then(|p| p.decode_data::<StreamError>(STREAM_ERROR))
        {
            Ok(refusal) => {
                return Err(Error::new(
                    refusal.error_kind(),
                    format!("the hub refused the {what}: {}", refusal.reason),
                ));
            }
            Err(e) => {
                warn!(from = %reply.return_route(), error = %e, "ignored a message that answers no {what}")
            }
        }
    }
}

/// Where the hub of [`RemoteForwarder::create`] is: `"host:port"` text (a
/// TCP address, as the early 2021 guides pass it), or an [`Address`] such as
/// `(TCP, "host:port")` (as later ones do).
pub trait HubAddress {
    /// The route to the hub.
    fn into_hub_route(self) -> Route;
}

impl HubAddress for &str {
    fn into_hub_route(self) -> Route {
        Route::from(Address::new(TCP, self))
    }
}

impl HubAddress for String {
    fn into_hub_route(self) -> Route {
        self.as_str().into_hub_route()
    }
}

impl HubAddress for &String {
    fn into_hub_route(self) -> Route {
        self.as_str().into_hub_route()
    }
}

impl HubAddress for Address {
    fn into_hub_route(self) -> Route {
        Route::from(self)
    }
}

impl HubAddress for (ockam_core::TransportType, &str) {
    fn into_hub_route(self) -> Route {
        Route::from(Address::from(self))
    }
}
