//! Messages: what workers exchange, and the envelopes that carry them.

use crate::error::{Error, ErrorKind, Result};
use crate::route::Route;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// A value that can travel between workers, encoded as BARE.
///
/// Every `serde` type that is `Send + 'static` is a message; [`Any`] is the
/// message type of workers that forward whatever they receive.
pub trait Message: Sized + Send + 'static {
    /// The BARE encoding of this value.
    fn encode(&self) -> Result<Vec<u8>>;
    /// Decodes a value; bytes left over after the value are an error.
    fn decode(data: &[u8]) -> Result<Self>;
}

impl<T> Message for T
where
    T: Serialize + DeserializeOwned + Send + 'static,
{
    fn encode(&self) -> Result<Vec<u8>> {
        encode(self)
    }

    fn decode(data: &[u8]) -> Result<Self> {
        decode(data)
    }
}

/// BARE-encodes any serde value.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>> {
    // Most messages are small: one allocation instead of several regrowths.
    let mut out = Vec::with_capacity(64);
    serde_bare::to_writer(&mut out, value)
        .map(|()| out)
        .map_err(|e| {
            Error::with_source(
                ErrorKind::Encoding,
                format!("cannot encode {}", std::any::type_name::<T>()),
                e,
            )
        })
}

/// BARE-encodes any serde value at the end of `out`.
pub fn encode_into<T: Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) -> Result<()> {
    serde_bare::to_writer(out, value).map_err(|e| {
        Error::with_source(
            ErrorKind::Encoding,
            format!("cannot encode {}", std::any::type_name::<T>()),
            e,
        )
    })
}

/// Decodes a BARE value, rejecting trailing bytes.
pub fn decode<T: DeserializeOwned>(data: &[u8]) -> Result<T> {
    let mut rest = data;
    let value = serde_bare::from_reader(&mut rest).map_err(|e| {
        Error::with_source(
            ErrorKind::Decoding,
            format!(
                "{} bytes are not a valid {}",
                data.len(),
                std::any::type_name::<T>()
            ),
            e,
        )
    })?;
    if !rest.is_empty() {
        return Err(Error::new(
            ErrorKind::Decoding,
            format!(
                "{} bytes left over after decoding {}",
                rest.len(),
                std::any::type_name::<T>()
            ),
        ));
    }
    Ok(value)
}

/// The message type of a worker that accepts any payload without decoding it,
/// such as a hop that forwards messages unchanged
/// ([`Routed::into_local_message`](crate::Routed::into_local_message) gives
/// the whole message back).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Any;

impl Message for Any {
    fn encode(&self) -> Result<Vec<u8>> {
        Err(Error::new(
            ErrorKind::Encoding,
            "`Any` has no content of its own; forward the received message instead",
        ))
    }

    fn decode(_data: &[u8]) -> Result<Self> {
        Ok(Any)
    }
}

impl std::fmt::Display for Any {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Any")
    }
}

/// Protocol version written in every [`TransportMessage`].
pub const TRANSPORT_MESSAGE_VERSION: u8 = 1;

/// The message as it crosses any hop: routes and an encoded payload.
///
/// Wire form (BARE): `struct { version: u8, onward_route: list<Address>,
/// return_route: list<Address>, payload: data }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransportMessage {
    /// Wire format version, [`TRANSPORT_MESSAGE_VERSION`].
    pub version: u8,
    /// Where the message goes; the first address is the next hop.
    pub onward_route: Route,
    /// How to answer; hops prepend themselves as the message passes.
    pub return_route: Route,
    /// The encoded message.
    #[serde(with = "serde_bytes")]
    pub payload: Vec<u8>,
}

impl TransportMessage {
    /// A current-version transport message.
    pub fn v1(
        onward_route: impl Into<Route>,
        return_route: impl Into<Route>,
        payload: Vec<u8>,
    ) -> Self {
        TransportMessage {
            version: TRANSPORT_MESSAGE_VERSION,
            onward_route: onward_route.into(),
            return_route: return_route.into(),
            payload,
        }
    }

    /// The BARE encoding of this message.
    pub fn encode(&self) -> Result<Vec<u8>> {
        encode(self)
    }

    /// Decodes a transport message from a peer, rejecting unknown versions.
    pub fn decode(data: &[u8]) -> Result<Self> {
        let m: TransportMessage = decode(data)?;
        if m.version != TRANSPORT_MESSAGE_VERSION {
            return Err(Error::new(
                ErrorKind::Protocol,
                format!(
                    "transport message version {} is not supported (expected {})",
                    m.version, TRANSPORT_MESSAGE_VERSION
                ),
            ));
        }
        Ok(m)
    }
}

/// A [`TransportMessage`] inside a node, as workers receive and forward it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalMessage {
    transport: TransportMessage,
}

impl LocalMessage {
    /// Wraps a transport message.
    pub fn new(transport: TransportMessage) -> Self {
        LocalMessage { transport }
    }

    /// The transport message.
    pub fn transport(&self) -> &TransportMessage {
        &self.transport
    }

    /// The transport message, to change its routes before forwarding.
    pub fn transport_mut(&mut self) -> &mut TransportMessage {
        &mut self.transport
    }

    /// Unwraps the transport message.
    pub fn into_transport_message(self) -> TransportMessage {
        self.transport
    }
}

impl From<TransportMessage> for LocalMessage {
    fn from(t: TransportMessage) -> Self {
        LocalMessage::new(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{route, TCP};

    #[test]
    fn transport_message_round_trips() {
        let m = TransportMessage::v1(route![(TCP, "h:1"), "b"], route!["a"], vec![1, 2, 3]);
        let bytes = m.encode().unwrap();
        assert_eq!(TransportMessage::decode(&bytes).unwrap(), m);
        // Truncated at every length: an error, never a panic.
        for n in 0..bytes.len() {
            assert!(TransportMessage::decode(&bytes[..n]).is_err());
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(TransportMessage::decode(&longer).is_err());
        let mut v2 = bytes;
        v2[0] = 2;
        assert_eq!(
            TransportMessage::decode(&v2).unwrap_err().kind(),
            ErrorKind::Protocol
        );
    }

    #[test]
    fn strings_are_bare_strings() {
        let bytes = "hi".to_string().encode().unwrap();
        assert_eq!(bytes, vec![2, b'h', b'i']);
        assert_eq!(String::decode(&bytes).unwrap(), "hi");
        assert!(String::decode(&[2, 0xff, 0xff]).is_err());
        assert!(Any::decode(&[9, 9, 9]).is_ok());
    }

    proptest::proptest! {
        #[test]
        fn decoding_garbage_never_panics(data in proptest::collection::vec(proptest::num::u8::ANY, 0..256)) {
            let _ = TransportMessage::decode(&data);
            let _ = String::decode(&data);
        }

        #[test]
        fn any_transport_message_round_trips(
            onward in proptest::collection::vec("[a-z0-9:.]{1,20}", 0..6),
            ret in proptest::collection::vec("[a-z0-9:.]{1,20}", 0..6),
            payload in proptest::collection::vec(proptest::num::u8::ANY, 0..512),
        ) {
            let m = TransportMessage::v1(Route::create(onward), Route::create(ret), payload);
            proptest::prop_assert_eq!(TransportMessage::decode(&m.encode().unwrap()).unwrap(), m);
        }
    }
}
