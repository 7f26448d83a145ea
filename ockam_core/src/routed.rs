//! `Routed<M>`: a decoded message together with the routes it came with.

use crate::address::Address;
use crate::message::{LocalMessage, TransportMessage};
use crate::route::Route;
use std::fmt;
use std::ops::{Deref, DerefMut};

/// A message as a worker receives it: the decoded body plus its routes.
/// Derefs to the body and displays like it.
pub struct Routed<M> {
    body: M,
    local: LocalMessage,
}

impl<M> Routed<M> {
    /// Pairs a decoded body with the message it was decoded from.
    pub fn new(body: M, local: LocalMessage) -> Self {
        Routed { body, local }
    }

    /// The address this message was delivered to (first of its onward route).
    pub fn msg_addr(&self) -> Option<&Address> {
        self.local.transport().onward_route.next().ok()
    }

    /// The route the message was sent on; its first address is the receiver.
    pub fn onward_route(&self) -> Route {
        self.local.transport().onward_route.clone()
    }

    /// The route back to the sender.
    pub fn return_route(&self) -> Route {
        self.local.transport().return_route.clone()
    }

    /// Where a reply goes: the return route.
    pub fn reply(&self) -> Route {
        self.return_route()
    }

    /// The first address of the return route: who sent this, as seen from here.
    pub fn sender(&self) -> Option<&Address> {
        self.local.transport().return_route.next().ok()
    }

    /// The decoded body.
    pub fn body(self) -> M {
        self.body
    }

    /// The decoded body (the guides' `msg.take()`).
    pub fn take(self) -> M {
        self.body
    }

    /// A reference to the decoded body.
    pub fn as_body(&self) -> &M {
        &self.body
    }

    /// The encoded payload as received.
    pub fn payload(&self) -> &[u8] {
        &self.local.transport().payload
    }

    /// The whole message as received, for forwarding.
    pub fn into_local_message(self) -> LocalMessage {
        self.local
    }

    /// The transport message as received.
    pub fn into_transport_message(self) -> TransportMessage {
        self.local.into_transport_message()
    }

    /// The whole message as received.
    pub fn local_message(&self) -> &LocalMessage {
        &self.local
    }
}

impl<M> Deref for Routed<M> {
    type Target = M;
    fn deref(&self) -> &M {
        &self.body
    }
}

impl<M> DerefMut for Routed<M> {
    fn deref_mut(&mut self) -> &mut M {
        &mut self.body
    }
}

impl<M: fmt::Display> fmt::Display for Routed<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.body, f)
    }
}

impl<M: fmt::Debug> fmt::Debug for Routed<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Routed")
            .field("body", &self.body)
            .field("onward_route", &self.local.transport().onward_route)
            .field("return_route", &self.local.transport().return_route)
            .finish()
    }
}

impl<M: PartialEq> PartialEq<M> for Routed<M> {
    fn eq(&self, other: &M) -> bool {
        self.body == *other
    }
}
