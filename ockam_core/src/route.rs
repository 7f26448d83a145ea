//! Routes: the ordered list of addresses a message travels through.
//!
//! Each hop pops itself off the front of the onward route
//! ([`Route::step`]) and prepends itself to the return route
//! ([`Route::modify`]), so a reply sent to the return route retraces the path.

use crate::address::{Address, TransportType};
use crate::error::{Error, ErrorKind, Result};
use serde::{Deserialize, Serialize};
use smallvec::SmallVec;
use std::fmt;

/// An ordered list of [`Address`]es; the first is where a message goes next.
///
/// ```
/// use ockam_core::{route, Address, Route, TCP};
///
/// let mut r: Route = Route::new()
///     .append_t(TCP, "127.0.0.1:4000")
///     .append("echoer")
///     .into();
/// assert_eq!(r, route![(TCP, "127.0.0.1:4000"), "echoer"]);
/// assert_eq!(r.step().unwrap(), Address::from("1#127.0.0.1:4000"));
/// assert_eq!(r.next().unwrap(), &Address::from("echoer"));
/// ```
#[derive(Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Route {
    // Most routes are a few addresses long: keep the first ones inline so
    // that sending a message does not allocate for its routes.
    inner: Addresses,
}

type Addresses = SmallVec<[Address; 1]>;

impl Route {
    /// An empty route with room for `n` addresses (the first one inline).
    pub(crate) fn with_capacity(n: usize) -> Route {
        Route {
            inner: Addresses::with_capacity(n),
        }
    }

    /// Adds `address` at the end.
    pub(crate) fn push(&mut self, address: Address) {
        self.inner.push(address)
    }

    /// Starts building a route (the guides' `Route::new().append(..)`).
    #[allow(clippy::new_ret_no_self)]
    pub fn new() -> RouteBuilder {
        RouteBuilder::default()
    }

    /// An empty route.
    pub fn empty() -> Route {
        Route::default()
    }

    /// A route made of the given addresses, in order.
    pub fn create<A: Into<Address>>(addresses: impl IntoIterator<Item = A>) -> Route {
        Route {
            inner: addresses.into_iter().map(Into::into).collect(),
        }
    }

    /// Removes and returns the first address: what a hop does with itself.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidInput`] when the route is empty.
    pub fn step(&mut self) -> Result<Address> {
        if self.inner.is_empty() {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                "route is empty: no next hop",
            ));
        }
        Ok(self.inner.remove(0))
    }

    /// The first address: where a message goes next.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidInput`] when the route is empty.
    pub fn next(&self) -> Result<&Address> {
        self.inner
            .first()
            .ok_or_else(|| Error::new(ErrorKind::InvalidInput, "route is empty: no next hop"))
    }

    /// The last address: the final recipient.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidInput`] when the route is empty.
    pub fn recipient(&self) -> Result<Address> {
        self.inner
            .last()
            .cloned()
            .ok_or_else(|| Error::new(ErrorKind::InvalidInput, "route is empty: no recipient"))
    }

    /// Changes this route in place: `route.modify().prepend(addr)`.
    pub fn modify(&mut self) -> RouteModifier<'_> {
        RouteModifier { route: self }
    }

    /// Number of addresses.
    pub fn len(&self) -> usize {
        self.inner.len()
    }

    /// Whether the route has no addresses.
    pub fn is_empty(&self) -> bool {
        self.inner.is_empty()
    }

    /// The addresses, first to last.
    pub fn iter(&self) -> impl Iterator<Item = &Address> {
        self.inner.iter()
    }

    /// The addresses, first to last.
    pub fn as_slice(&self) -> &[Address] {
        &self.inner
    }

    /// Whether `address` is on this route.
    pub fn contains(&self, address: &Address) -> bool {
        self.inner.contains(address)
    }

    /// The peer a route back to a remote party goes through, seen from the
    /// node that holds the route: the hop after the first `skipped` (a TCP
    /// connection's address, a secure channel's), if more hops follow it,
    /// that is if the route leaves this node there. `None` when it does
    /// not: a route of `skipped + 1` hops or fewer ends at a worker here.
    /// What per-peer caps count against (the hub's workers, a channel
    /// listener's responders).
    ///
    /// ```
    /// use ockam_core::{route, TCP};
    /// let back = route![(TCP, "10.0.0.2:50312"), "client"];
    /// assert_eq!(back.peer(0).map(|a| a.address()), Some("10.0.0.2:50312"));
    /// assert_eq!(back.peer(1), None);
    /// assert_eq!(route!["a_worker_here"].peer(0), None);
    /// ```
    pub fn peer(&self, skipped: usize) -> Option<&Address> {
        if self.inner.len() > skipped + 1 {
            self.inner.get(skipped)
        } else {
            None
        }
    }
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, a) in self.inner.iter().enumerate() {
            if i > 0 {
                f.write_str(" => ")?;
            }
            write!(f, "{a}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{self}]")
    }
}

impl IntoIterator for Route {
    type Item = Address;
    type IntoIter = RouteIntoIter;
    fn into_iter(self) -> Self::IntoIter {
        RouteIntoIter(self.inner.into_iter())
    }
}

/// The addresses of a [`Route`], first hop first, by value
/// (`route.into_iter()`).
#[derive(Debug)]
pub struct RouteIntoIter(smallvec::IntoIter<[Address; 1]>);

impl Iterator for RouteIntoIter {
    type Item = Address;
    fn next(&mut self) -> Option<Address> {
        self.0.next()
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        self.0.size_hint()
    }
}

impl DoubleEndedIterator for RouteIntoIter {
    fn next_back(&mut self) -> Option<Address> {
        self.0.next_back()
    }
}

impl ExactSizeIterator for RouteIntoIter {}

/// Builds a [`Route`] by value: `Route::new().append("a").append("b")`.
/// Anything that takes a route accepts the builder as it is.
#[derive(Clone, Default, Debug, PartialEq, Eq)]
pub struct RouteBuilder {
    inner: Addresses,
}

impl RouteBuilder {
    /// Adds an address at the end.
    #[allow(clippy::should_implement_trait)]
    pub fn append(mut self, address: impl Into<Address>) -> Self {
        self.inner.push(address.into());
        self
    }

    /// Adds an address of transport type `tt` at the end.
    pub fn append_t(self, tt: TransportType, address: impl AsRef<str>) -> Self {
        self.append(Address::new(tt, address))
    }

    /// Adds an address at the front.
    pub fn prepend(mut self, address: impl Into<Address>) -> Self {
        self.inner.insert(0, address.into());
        self
    }

    /// Adds every address of `route` at the end.
    pub fn append_route(mut self, route: impl Into<Route>) -> Self {
        self.inner.extend(route.into().inner);
        self
    }

    /// The finished route.
    pub fn into_route(self) -> Route {
        Route { inner: self.inner }
    }
}

/// Changes a [`Route`] in place; returned by [`Route::modify`].
#[derive(Debug)]
pub struct RouteModifier<'r> {
    route: &'r mut Route,
}

impl RouteModifier<'_> {
    /// Adds an address at the front.
    pub fn prepend(self, address: impl Into<Address>) -> Self {
        self.route.inner.insert(0, address.into());
        self
    }

    /// Adds an address at the end.
    #[allow(clippy::should_implement_trait)]
    pub fn append(self, address: impl Into<Address>) -> Self {
        self.route.inner.push(address.into());
        self
    }

    /// Adds every address of `route` at the front, keeping their order.
    pub fn prepend_route(self, route: impl Into<Route>) -> Self {
        self.route.inner.insert_many(0, route.into().inner);
        self
    }

    /// Adds every address of `route` at the end.
    pub fn append_route(self, route: impl Into<Route>) -> Self {
        self.route.inner.extend(route.into().inner);
        self
    }

    /// Removes the first address, if any.
    pub fn pop_front(self) -> Self {
        if !self.route.inner.is_empty() {
            self.route.inner.remove(0);
        }
        self
    }

    /// Removes the last address, if any.
    pub fn pop_back(self) -> Self {
        self.route.inner.pop();
        self
    }

    /// Adds an address of transport type `tt` at the end.
    pub fn append_t(self, tt: TransportType, address: impl AsRef<str>) -> Self {
        self.append(Address::new(tt, address.as_ref()))
    }

    /// Replaces the whole route with `route`.
    pub fn replace(self, route: impl Into<Route>) -> Self {
        self.route.inner = route.into().inner;
        self
    }
}

impl From<RouteBuilder> for Route {
    fn from(b: RouteBuilder) -> Self {
        b.into_route()
    }
}

impl From<&Route> for Route {
    fn from(r: &Route) -> Self {
        r.clone()
    }
}

impl From<Address> for Route {
    fn from(a: Address) -> Self {
        let mut inner = Addresses::new();
        inner.push(a);
        Route { inner }
    }
}

impl From<&Address> for Route {
    fn from(a: &Address) -> Self {
        Route::from(a.clone())
    }
}

impl From<&str> for Route {
    fn from(s: &str) -> Self {
        Route::from(Address::from(s))
    }
}

impl From<String> for Route {
    fn from(s: String) -> Self {
        Route::from(Address::from(s))
    }
}

impl From<&String> for Route {
    fn from(s: &String) -> Self {
        Route::from(Address::from(s))
    }
}

impl From<(TransportType, &str)> for Route {
    fn from(a: (TransportType, &str)) -> Self {
        Route::from(Address::from(a))
    }
}

impl From<Vec<Address>> for Route {
    fn from(v: Vec<Address>) -> Self {
        Route {
            inner: Addresses::from_vec(v),
        }
    }
}

/// Builds a [`Route`] from anything that converts into an [`Address`]:
/// `route![(TCP, "127.0.0.1:4000"), "echoer"]`.
#[macro_export]
macro_rules! route {
    ($($address:expr),* $(,)?) => {
        $crate::Route::new()$(.append($address))*.into_route()
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TCP;

    #[test]
    fn builder_and_macro_agree() {
        let a: Route = Route::new().append("a").append_t(TCP, "h:1").into();
        assert_eq!(a, route!["a", (TCP, "h:1")]);
        assert_eq!(a.to_string(), "0#a => 1#h:1");
        assert_eq!(a.recipient().unwrap(), Address::from("1#h:1"));
        let empty: Route = route![];
        assert!(empty.is_empty());
        assert!(empty.next().is_err());
    }

    #[test]
    fn modify_changes_in_place() {
        let mut r = route!["b"];
        r.modify().prepend("a").append("c");
        assert_eq!(r, route!["a", "b", "c"]);
        r.modify().prepend_route(route!["x", "y"]).pop_front();
        assert_eq!(r, route!["y", "a", "b", "c"]);
    }

    #[test]
    fn step_pops_front() {
        let mut r = route!["a", "b"];
        assert_eq!(r.step().unwrap(), Address::from("a"));
        assert_eq!(r.step().unwrap(), Address::from("b"));
        assert_eq!(r.step().unwrap_err().kind(), ErrorKind::InvalidInput);
    }
}
