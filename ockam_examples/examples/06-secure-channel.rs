//! A secure channel inside one node: a listener and an echoer, a channel to
//! the listener, and a message through the channel to the echoer.

use ockam::{route, Context, Result, SecureChannel, Vault};
use ockam_get_started::Echoer;

#[ockam::node]
async fn main(mut ctx: Context) -> Result<()> {
    // Start an Echoer worker at address "echoer"
    ctx.start_worker("echoer", Echoer).await?;

    let vault = Vault::create(&ctx)?;

    // Create a secure channel listener at address "secure_channel_listener"
    SecureChannel::create_listener(&ctx, "secure_channel_listener", &vault).await?;

    // Create a secure channel to the listener
    let channel = SecureChannel::create(&ctx, "secure_channel_listener", &vault).await?;

    // Send a message to the echoer through the channel
    ctx.send(
        route![channel.address(), "echoer"],
        "Hello Ockam!".to_string(),
    )
    .await?;

    // Wait to receive a reply and print it.
    let reply = ctx.receive::<String>().await?;
    println!("App Received: {}", reply); // should print "Hello Ockam!"

    ctx.stop().await
}
