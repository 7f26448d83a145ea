//! `channel_to_closed_hub`: how the closed-hub examples reach a hub.

use ockam::{route, Context, Result, SecureChannel, SecureChannelOptions, Vault, TCP};

/// A secure channel to the hub at `hub` (a TCP address; the hub's
/// listener is `secure_channel_listener`) as this node's identity: the
/// key kept in the file `OCKAM_IDENTITY_FILE` names (default
/// `default_file`), made on first run and printed, so that the hub's
/// access file can name it. Pinned to the hub's identity when
/// `OCKAM_HUB_IDENTITY` gives it (the hub logs it at start). Issue 16;
/// README, "A closed hub".
///
/// # Errors
/// The key file cannot be read or made, `OCKAM_HUB_IDENTITY` is not a key,
/// or the handshake fails (`Security`: the hub does not admit this
/// identity, or is not the pinned one).
pub async fn channel_to_closed_hub(
    ctx: &Context,
    hub: &str,
    default_file: &str,
) -> Result<SecureChannel> {
    let vault = Vault::create(ctx)?;
    let file = std::env::var("OCKAM_IDENTITY_FILE").unwrap_or_else(|_| default_file.into());
    let (identity, _) = vault.load_or_create_x25519(file.as_ref())?;
    println!("this node's identity: {}", vault.public_key(&identity)?);
    let trusted_peer = match std::env::var("OCKAM_HUB_IDENTITY") {
        Ok(key) => Some(key.parse()?),
        Err(_) => None,
    };
    SecureChannel::create_with_options(
        ctx,
        route![(TCP, hub), "secure_channel_listener"],
        &vault,
        SecureChannelOptions {
            static_key: Some(identity),
            trusted_peer,
            ..Default::default()
        },
    )
    .await
}
