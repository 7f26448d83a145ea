//! [`StreamEvent`]: what a stream connection tells the application beside
//! its messages, when it was asked to ([`Stream::with_events`](crate::Stream::with_events)).

/// Something the application should know about its stream connection
/// that no message carries: a loss the hub caused or that the client had
/// to accept. Each is also logged at warn.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StreamEvent {
    /// The hub removed messages `from..to` of the incoming `stream` (its
    /// retention, issue 17) before this client read them: `to - from`
    /// messages missed. The consumer continues from `to`, the oldest
    /// message the hub keeps.
    Missed {
        /// The incoming stream.
        stream: String,
        /// The first index missed.
        from: u64,
        /// The first index after those missed (where the consumer goes on).
        to: u64,
    },
    /// A message sent into the outgoing `stream` was refused by the hub
    /// [`MAX_REFUSALS`](crate::MAX_REFUSALS) times in a row (too large for
    /// the hub, say) and given up: it will never be delivered. `request_id`
    /// is its place among the messages sent to the producer (the first is
    /// 1).
    GaveUp {
        /// The outgoing stream.
        stream: String,
        /// The message's request id.
        request_id: u64,
    },
}

/// Where a stream connection's workers send their [`StreamEvent`]s.
pub type EventSender = tokio::sync::mpsc::UnboundedSender<StreamEvent>;

/// Sends `event` to `to`, if the application asked for events (and still
/// listens).
pub(crate) fn report(to: &Option<EventSender>, event: StreamEvent) {
    if let Some(to) = to {
        let _ = to.send(event);
    }
}
