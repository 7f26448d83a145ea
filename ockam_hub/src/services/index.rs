//! `stream_index`: client read positions.

use super::*;

/// Checks the names of an index request. In a closed hub's Kafka child
/// ([`Access::Relayed`]) a client id arrives as `{identity}/{client_id}`
/// (the gate made it so; see [`index_owner`]): its identity must be a key
/// and the rest a client name.
pub(crate) fn validate_pair(
    access: &Access,
    client_id: &str,
    stream_name: &str,
) -> std::result::Result<(), String> {
    let client = match access {
        Access::Relayed { .. } => match client_id.split_once('/') {
            Some((key, client)) if key.parse::<ockam_vault::PublicKey>().is_ok() => client,
            _ => return Err(format!("client id {client_id:?} is not identity/client")),
        },
        _ => client_id,
    };
    validate_name("client", client)
        .and(validate_name("stream", stream_name))
        .map_err(|e| e.message().to_string())
}

/// `stream_index`: client read positions.
pub(crate) struct IndexService {
    pub(crate) shared: Arc<Shared>,
}

#[async_trait]
impl Worker for IndexService {
    type Message = Any;
    type Context = Context;

    async fn handle_message(&mut self, ctx: &mut Context, msg: Routed<Any>) -> Result<()> {
        let Some((msg, back)) = request(ctx, &self.shared, msg).await? else {
            return Ok(());
        };
        let Some(req) = decode_or_refuse::<IndexRequest>(ctx, &msg, &back, STREAM_INDEX).await?
        else {
            return Ok(());
        };
        let (client, stream) = match &req {
            IndexRequest::Get {
                client_id,
                stream_name,
            }
            | IndexRequest::Save {
                client_id,
                stream_name,
                ..
            } => (client_id.clone(), stream_name.clone()),
        };
        // Checked before anything else, so that a refusal never repeats
        // whatever a stranger sent.
        if let Err(e) = validate_pair(&self.shared.access, &client, &stream) {
            return refuse(ctx, back, StreamError::new(STREAM_INDEX, e)).await;
        }
        let access = &self.shared.access;
        if denied(ctx, access, &back, STREAM_INDEX, Operation::Pull(&stream)).await? {
            return Ok(());
        }
        let owner = index_owner(ctx, access, &back, &client);
        match req {
            IndexRequest::Get {
                client_id,
                stream_name,
            } => {
                let index = match self.reconciled(&owner, &stream_name).await {
                    Ok(i) => i,
                    Err(e) => return refuse(ctx, back, store_failed(STREAM_INDEX, &e)).await,
                };
                let resp = Index {
                    client_id,
                    stream_name,
                    index: index.map(Uint),
                };
                ctx.send(back, ProtocolPayload::new(STREAM_INDEX, &resp)?)
                    .await
            }
            IndexRequest::Save {
                stream_name, index, ..
            } => {
                // A position the log does not reach is refused: a client
                // saving it would never be given what is pushed up to it.
                match self.shared.store.next_index(&stream_name).await {
                    Ok(end) if index.0 > end => {
                        let refusal =
                            StreamError::past_end(STREAM_INDEX, &stream_name, index.0, end);
                        return refuse(ctx, back, refusal).await;
                    }
                    Ok(_) => {}
                    Err(e) => return refuse(ctx, back, store_failed(STREAM_INDEX, &e)).await,
                }
                // Unanswered when saved (as the protocol has it).
                let saved = self
                    .shared
                    .store
                    .save_index(&owner, &stream_name, index.0)
                    .await;
                match saved {
                    Ok(()) => Ok(()),
                    Err(e) => refuse(ctx, back, store_failed(STREAM_INDEX, &e)).await,
                }
            }
        }
    }
}

impl IndexService {
    /// The read position saved for `(client, stream)`, kept within the
    /// log: a saved position past the stream's end (saved before the store
    /// lost messages, or by an older hub that did not check) is answered as
    /// the end, and reported. It is not saved so: one reading of the end
    /// is not enough to rewind a client for good (the client saves its own
    /// position as it reads on).
    async fn reconciled(&self, client: &str, stream: &str) -> Result<Option<u64>> {
        let store = &self.shared.store;
        let Some(saved) = store.get_index(client, stream).await? else {
            return Ok(None);
        };
        let end = store.next_index(stream).await?;
        if saved <= end {
            return Ok(Some(saved));
        }
        warn!(%client, %stream, saved, end, "a saved read position is past the end of its stream; answered as the end");
        Ok(Some(end))
    }
}
