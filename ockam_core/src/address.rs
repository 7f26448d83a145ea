//! Addresses: where a message goes next.
//!
//! An [`Address`] is a transport type (0 for workers on the local node, 1 for
//! TCP peers, ...) and the transport-specific address bytes. Its text form is
//! `"<type>#<address>"` (`"1#127.0.0.1:4000"`); text without a type prefix is a
//! local address (`"echoer"`).

use crate::error::{Error, ErrorKind, Result};
use compact_str::CompactString;
use serde::de::{self, SeqAccess, Visitor};
use serde::ser::SerializeTuple;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;

/// The transport type of an [`Address`]: which router delivers to it.
pub type TransportType = u8;

/// Transport type of addresses of workers on the local node.
pub const LOCAL: TransportType = 0;

/// Transport type of TCP peer addresses (`"1#host:port"`).
pub const TCP: TransportType = 1;

/// A transport type and the address bytes that transport understands.
///
/// ```
/// use ockam_core::{Address, LOCAL, TCP};
///
/// let a = Address::from("echoer");
/// assert_eq!(a.transport_type(), LOCAL);
/// assert_eq!(a.address(), "echoer");
///
/// let t: Address = "1#127.0.0.1:4000".parse().unwrap();
/// assert_eq!(t, Address::from((TCP, "127.0.0.1:4000")));
/// assert_eq!(t.to_string(), "1#127.0.0.1:4000");
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Address {
    tt: TransportType,
    // Addresses are short names or host:port pairs: an inline string keeps
    // cloning them (which routing does on every hop) free of allocations.
    inner: CompactString,
}

impl Address {
    /// An address of transport type `tt`.
    pub fn new(tt: TransportType, address: impl AsRef<str>) -> Self {
        Address {
            tt,
            inner: CompactString::new(address.as_ref()),
        }
    }

    /// A random local address (16 hex digits), for workers nobody needs to name.
    pub fn random_local() -> Self {
        Self::random(LOCAL)
    }

    /// A random address of transport type `tt`.
    pub fn random(tt: TransportType) -> Self {
        let n: u64 = rand::random();
        Address {
            tt,
            inner: compact_str::format_compact!("{n:016x}"),
        }
    }

    /// An address from wire bytes, which must be UTF-8.
    ///
    /// # Errors
    /// [`ErrorKind::Decoding`] when `bytes` are not UTF-8.
    pub fn from_utf8(tt: TransportType, bytes: &[u8]) -> Result<Self> {
        let inner = CompactString::from_utf8(bytes)
            .map_err(|_| Error::new(ErrorKind::Decoding, "address bytes are not UTF-8"))?;
        Ok(Address { tt, inner })
    }

    /// The transport type.
    pub fn transport_type(&self) -> TransportType {
        self.tt
    }

    /// The transport-specific part, without the type prefix.
    pub fn address(&self) -> &str {
        &self.inner
    }

    /// Whether this is the address of a worker on the local node.
    pub fn is_local(&self) -> bool {
        self.tt == LOCAL
    }

    /// Parses the text form strictly: `"<type>#<address>"` or a bare local
    /// address; the address part must not be empty and the type must be a u8.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidInput`] when the type prefix is not a number 0-255
    /// or the address part is empty.
    pub fn parse(s: &str) -> Result<Self> {
        let (tt, addr) = match s.split_once('#') {
            Some((prefix, rest)) => {
                let tt = prefix.parse::<TransportType>().map_err(|_| {
                    Error::new(
                        ErrorKind::InvalidInput,
                        format!("address {s:?}: transport type {prefix:?} is not a number 0-255"),
                    )
                })?;
                (tt, rest)
            }
            None => (LOCAL, s),
        };
        if addr.is_empty() {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!("address {s:?} is empty"),
            ));
        }
        Ok(Address::new(tt, addr))
    }

    /// Lenient conversion used by `From<&str>`: a prefix that is not a valid
    /// transport type makes the whole text a local address.
    fn from_text(s: &str) -> Self {
        match s.split_once('#') {
            Some((prefix, rest)) => match prefix.parse::<TransportType>() {
                Ok(tt) => Address::new(tt, rest),
                Err(_) => Address::new(LOCAL, s),
            },
            None => Address::new(LOCAL, s),
        }
    }
}

impl FromStr for Address {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Address::parse(s)
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}", self.tt, self.inner)
    }
}

impl fmt::Debug for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl From<&str> for Address {
    fn from(s: &str) -> Self {
        Address::from_text(s)
    }
}

impl From<String> for Address {
    fn from(s: String) -> Self {
        Address::from_text(&s)
    }
}

impl From<&String> for Address {
    fn from(s: &String) -> Self {
        Address::from_text(s)
    }
}

impl From<&Address> for Address {
    fn from(a: &Address) -> Self {
        a.clone()
    }
}

impl From<(TransportType, &str)> for Address {
    fn from((tt, a): (TransportType, &str)) -> Self {
        Address::new(tt, a)
    }
}

impl From<(TransportType, String)> for Address {
    fn from((tt, a): (TransportType, String)) -> Self {
        Address::new(tt, a)
    }
}

impl From<(TransportType, &String)> for Address {
    fn from((tt, a): (TransportType, &String)) -> Self {
        Address::new(tt, a)
    }
}

impl From<(TransportType, std::net::SocketAddr)> for Address {
    fn from((tt, a): (TransportType, std::net::SocketAddr)) -> Self {
        Address::new(tt, a.to_string())
    }
}

// Wire form: BARE `struct { type: u8, address: data }`.
impl Serialize for Address {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        let mut t = serializer.serialize_tuple(2)?;
        t.serialize_element(&self.tt)?;
        t.serialize_element(serde_bytes::Bytes::new(self.inner.as_bytes()))?;
        t.end()
    }
}

impl<'de> Deserialize<'de> for Address {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        struct AddressVisitor;

        impl<'de> Visitor<'de> for AddressVisitor {
            type Value = Address;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an address: transport type and UTF-8 address bytes")
            }

            fn visit_seq<A: SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> std::result::Result<Address, A::Error> {
                let tt: TransportType = seq
                    .next_element()?
                    .ok_or_else(|| de::Error::invalid_length(0, &self))?;
                let bytes: serde_bytes::ByteBuf = seq
                    .next_element()?
                    .ok_or_else(|| de::Error::invalid_length(1, &self))?;
                let inner = CompactString::from_utf8(bytes.as_slice())
                    .map_err(|_| de::Error::custom("address bytes are not UTF-8"))?;
                Ok(Address { tt, inner })
            }
        }

        deserializer.deserialize_tuple(2, AddressVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_form_round_trips() {
        for s in ["1#127.0.0.1:4000", "0#echoer", "7#x#y"] {
            let a: Address = s.parse().unwrap();
            assert_eq!(a.to_string(), s);
            assert_eq!(Address::from(s), a);
        }
        assert_eq!(Address::from("echoer").to_string(), "0#echoer");
    }

    #[test]
    fn strict_parse_rejects_bad_text() {
        assert_eq!(
            "".parse::<Address>().unwrap_err().kind(),
            ErrorKind::InvalidInput
        );
        assert!("300#x".parse::<Address>().is_err());
        assert!("1#".parse::<Address>().is_err());
        // The lenient conversion keeps such text as a local name.
        assert_eq!(Address::from("abc#d").transport_type(), LOCAL);
        assert_eq!(Address::from("abc#d").address(), "abc#d");
    }

    #[test]
    fn wire_form_is_type_then_bytes() {
        let a = Address::from((TCP, "h:1"));
        let bytes = serde_bare::to_vec(&a).unwrap();
        assert_eq!(bytes, vec![1, 3, b'h', b':', b'1']);
        let b: Address = serde_bare::from_slice(&bytes).unwrap();
        assert_eq!(a, b);
        assert!(serde_bare::from_slice::<Address>(&[1, 2, 0xff, 0xfe]).is_err());
        assert!(serde_bare::from_slice::<Address>(&[1, 9, b'a']).is_err());
    }

    #[test]
    fn random_addresses_differ() {
        assert_ne!(Address::random_local(), Address::random_local());
    }
}

/// One or more addresses for one worker; the first is its primary address.
/// `start_worker` accepts anything that converts into this.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddressSet(Vec<Address>);

impl AddressSet {
    /// The addresses, primary first.
    pub fn as_slice(&self) -> &[Address] {
        &self.0
    }

    /// The addresses, primary first.
    pub fn into_vec(self) -> Vec<Address> {
        self.0
    }

    /// The primary (first) address, if any.
    pub fn first(&self) -> Option<&Address> {
        self.0.first()
    }
}

macro_rules! address_set_from_one {
    ($($t:ty),*) => {$(
        impl From<$t> for AddressSet {
            fn from(a: $t) -> Self {
                AddressSet(vec![Address::from(a)])
            }
        }
    )*};
}
address_set_from_one!(Address, &Address, &str, String, &String);

impl<A: Into<Address>> From<Vec<A>> for AddressSet {
    fn from(v: Vec<A>) -> Self {
        AddressSet(v.into_iter().map(Into::into).collect())
    }
}

impl<A: Into<Address>, const N: usize> From<[A; N]> for AddressSet {
    fn from(v: [A; N]) -> Self {
        AddressSet(v.into_iter().map(Into::into).collect())
    }
}
