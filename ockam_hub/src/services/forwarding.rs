//! `forwarding_service` and the forwarders it starts.

use super::*;
use ockam_node::HelperTask;

/// `forwarding_service`: registers forwarders (see `RemoteForwarder`). The
/// request's payload is the name of the destination worker on the
/// registrant's node, taken as it is (a local address; any UTF-8, `#`
/// included); the reply is the forwarder's address in text form (sent
/// from the forwarder when it is new). A registrant that registers the same destination again over the
/// same route gets the same forwarder. A refused registration is answered
/// with a `stream_error` saying why.
///
/// A forwarder lives as long as the way to its registrant: one whose
/// target's first hop (the connection or channel the registration came
/// over) is gone from the node is stopped within [`DEPARTED_CHECK`], with
/// or without traffic (issue 18: 6,000 registrations over connections that
/// closed used to leave 6,000 forwarders behind).
pub(crate) struct ForwardingService {
    /// The forwarder of each target route, at most
    /// `Limits::max_forwarders_per_peer` per peer.
    pub(crate) forwarders: Arc<Mutex<PeerTable<Route>>>,
    /// How often departed registrants are looked for.
    check: Duration,
    janitor: Option<HelperTask>,
    /// Who may register (issue 16).
    access: Access,
}

/// How often the forwarding service looks for forwarders whose
/// registrant's connection (or channel) is gone.
pub(crate) const DEPARTED_CHECK: Duration = Duration::from_secs(1);

impl ForwardingService {
    /// A service allowing `per_peer` forwarders per peer.
    pub(crate) fn new(per_peer: usize, access: Access) -> Self {
        Self::with_check(DEPARTED_CHECK, per_peer, access)
    }

    /// Looks for departed registrants every `check`.
    pub(crate) fn with_check(check: Duration, per_peer: usize, access: Access) -> Self {
        ForwardingService {
            forwarders: Arc::new(Mutex::new(PeerTable::new(per_peer, 0))),
            check,
            janitor: None,
            access,
        }
    }
}

impl ForwardingService {
    /// Stops the forwarder a `FORWARDING_UNREGISTER` request names, if it
    /// was registered over the route the request came over (the same
    /// connection, or channel, to the same node); refuses otherwise.
    async fn unregister(&self, ctx: &Context, back: Route, p: &ProtocolPayload) -> Result<()> {
        let refuse_because =
            |reason: String| StreamError::new(ockam_stream_client::FORWARDING_UNREGISTER, reason);
        let forwarder = match p
            .decode_data::<String>(ockam_stream_client::FORWARDING_UNREGISTER)
            .ok()
            .and_then(|text| Address::parse(&text).ok())
        {
            Some(a) => a,
            None => {
                let why = "an unregistration names the forwarder's address, as text".to_string();
                return refuse(ctx, back, refuse_because(why)).await;
            }
        };
        // The registrant's node, as seen from here: the route less its
        // last hop (the requesting context), as for a registration.
        let registrant = |route: &Route| {
            let mut hops: Vec<Address> = route.iter().cloned().collect();
            hops.pop();
            hops
        };
        let from = registrant(&back);
        let found = lock(&self.forwarders)
            .iter()
            .find(|(_, f)| **f == forwarder)
            .map(|(target, _)| registrant(target) == from);
        match found {
            Some(true) => {
                debug!(%forwarder, "forwarder unregistered");
                ctx.stop_worker(forwarder).await?;
                ctx.send(back, "unregistered".to_string()).await
            }
            Some(false) => {
                let why = format!("{forwarder} was registered over another route");
                refuse(ctx, back, refuse_because(why)).await
            }
            None => {
                let why = format!("no forwarder {forwarder}");
                refuse(ctx, back, refuse_because(why)).await
            }
        }
    }
}

/// Every `every`, stops the forwarders whose target goes through an
/// address (a connection's, a channel's) no longer on the node; ends with
/// the forwarding service (which aborts it).
async fn stop_departed(
    ctx: Context,
    table: std::sync::Weak<Mutex<PeerTable<Route>>>,
    every: Duration,
) {
    loop {
        tokio::time::sleep(every).await;
        let Some(table) = table.upgrade() else {
            return;
        };
        // The first hop of a registration that came over TCP is the peer's
        // TCP address (the connection's); over a channel or through a
        // local hop, a worker of this node. Gone: no longer on the node,
        // or its connection closed.
        let gone = |hop: &Address| ctx.is_present(hop) == Some(false);
        let departed: Vec<(Route, Address)> = lock(&table)
            .iter()
            // A target of one hop is a worker on this node itself (no peer).
            .filter(|(target, _)| target.peer(0).is_some_and(gone))
            .map(|(target, forwarder)| (target.clone(), forwarder.clone()))
            .collect();
        drop(table);
        let stopped = departed.len();
        for (target, forwarder) in departed {
            info!(%forwarder, %target, "the way to the forwarder's registrant is gone; stopping it");
            let _ = ctx.stop_worker(forwarder).await;
        }
        if stopped > 0 {
            // It walks the heap: not on a runtime thread.
            let _ = tokio::task::spawn_blocking(crate::memory::release_free_memory).await;
        }
    }
}

/// Where a forwarder of `destination` (a worker on the registrant's node)
/// delivers, seen from the hub; or why there is none.
fn forwarder_target(back: &Route, payload: &[u8]) -> std::result::Result<Route, String> {
    let name = match String::decode(payload) {
        Ok(name) => name,
        Err(e) => {
            return Err(format!(
                "a registration is the destination worker's name, as a string: {e}"
            ))
        }
    };
    // Taken as it is: text of another form ("1#host:port") is a local name
    // here too.
    let destination = Address::new(LOCAL, name);
    check_address(&destination).map_err(|e| format!("destination: {}", e.message()))?;
    // The registrant's last hop is its temporary context; the destination
    // lives on the same node.
    let mut target: Vec<Address> = back.iter().cloned().collect();
    if target.pop().is_none() {
        return Err("a registration needs a return route".into());
    }
    target.push(destination);
    Ok(Route::from(target))
}

#[async_trait]
impl Worker for ForwardingService {
    type Message = Any;
    type Context = Context;

    async fn initialize(&mut self, ctx: &mut Context) -> Result<()> {
        let janitor = ctx.new_context(Address::random_local()).await?;
        self.janitor = Some(ctx.spawn_helper(stop_departed(
            janitor,
            Arc::downgrade(&self.forwarders),
            self.check,
        )));
        Ok(())
    }

    async fn shutdown(&mut self, _ctx: &mut Context) -> Result<()> {
        self.janitor = None; // aborts it
        Ok(())
    }

    async fn handle_message(&mut self, ctx: &mut Context, msg: Routed<Any>) -> Result<()> {
        let back = msg.return_route();
        let unregister = match ProtocolPayload::decode(msg.payload()) {
            Ok(p) if is_refusal(&p, &back) => return Ok(()),
            Ok(p) if p.protocol == ockam_stream_client::FORWARDING_UNREGISTER => Some(p),
            _ => None,
        };
        let (protocol, op) = match &unregister {
            Some(_) => (
                ockam_stream_client::FORWARDING_UNREGISTER,
                Operation::Connect,
            ),
            None => (FORWARDING_SERVICE, Operation::RegisterForwarder),
        };
        if denied(ctx, &self.access, &back, protocol, op).await? {
            return Ok(());
        }
        if let Some(p) = unregister {
            return self.unregister(ctx, back, &p).await;
        }
        let target = match forwarder_target(&back, msg.payload()) {
            Ok(t) => t,
            Err(reason) => {
                return refuse(ctx, back, StreamError::new(FORWARDING_SERVICE, reason)).await;
            }
        };
        let address = Address::random_local();
        // One forwarder per target: looked up and taken in one step.
        let taken = {
            let mut table = lock(&self.forwarders);
            match table.get(&target).cloned() {
                Some(existing) => Ok(Some(existing)),
                None => table.insert(target.clone(), address.clone()).map(|_| None),
            }
        };
        let existing = match taken {
            Ok(existing) => existing,
            Err(why) => {
                warn!(%target, "refused a forwarder: {why}");
                let reason =
                    format!("{why} (forwarders; the hub's Limits::max_forwarders_per_peer)");
                return refuse(ctx, back, StreamError::new(FORWARDING_SERVICE, reason)).await;
            }
        };
        if let Some(existing) = existing {
            debug!(forwarder = %existing, target = %target, "forwarder registered again");
            return ctx.send(back, existing.to_string()).await;
        }
        debug!(forwarder = %address, target = %target, "forwarder registered");
        let started = ctx
            .start_worker(
                address.clone(),
                Forwarder {
                    target: target.clone(),
                    registrant: Some((back, address.to_string())),
                    table: self.forwarders.clone(),
                    access: self.access.clone(),
                },
            )
            .await;
        if started.is_err() {
            lock(&self.forwarders).remove_if_still(&target, &address);
        }
        started
    }
}

/// Sends everything it receives on to its target route, routes otherwise
/// unchanged.
struct Forwarder {
    target: Route,
    registrant: Option<(Route, String)>,
    /// The forwarding service's table, which this forwarder leaves when it
    /// stops.
    table: Arc<Mutex<PeerTable<Route>>>,
    /// On a closed hub, only identities it names may send through it.
    access: Access,
}

#[async_trait]
impl Worker for Forwarder {
    type Message = Any;
    type Context = Context;

    async fn initialize(&mut self, ctx: &mut Context) -> Result<()> {
        if let Some((to, me)) = self.registrant.take() {
            if let Err(e) = ctx.send(to, me).await {
                // `shutdown` does not run after a failed `initialize`.
                lock(&self.table).remove_if_still(&self.target, &ctx.address());
                return Err(e);
            }
        }
        Ok(())
    }

    async fn shutdown(&mut self, ctx: &mut Context) -> Result<()> {
        lock(&self.table).remove_if_still(&self.target, &ctx.address());
        Ok(())
    }

    async fn handle_message(&mut self, ctx: &mut Context, msg: Routed<Any>) -> Result<()> {
        let back = msg.return_route();
        if let Err(why) = permitted(ctx, &self.access, &back, Operation::Connect) {
            // Not answered: a forwarder carries its registrant's protocol,
            // whose messages a refusal would only confuse.
            warn!(forwarder = %ctx.address(), from = %back, dropped = 1, "dropped a message for a forwarder: {why}");
            return Ok(());
        }
        let mut t = msg.into_transport_message();
        t.onward_route.step()?;
        t.onward_route.modify().prepend_route(self.target.clone());
        // Not added to the return route: replies go straight back, not
        // through this forwarder (which would send them to its target again).
        if let Err(e) = ctx.forward(LocalMessage::new(t)).await {
            warn!(forwarder = %ctx.address(), error = %e, dropped = 1, "dropped a forwarded message");
            if target_gone(&e) {
                // Its registrant left (the connection it registered over is
                // closed, and the hub never dials a client back): of no
                // more use. It leaves the table; a registrant that comes
                // back registers again.
                info!(forwarder = %ctx.address(), target = %self.target, "the forwarder's target is gone; stopping it");
                ctx.stop_worker(ctx.address()).await?;
            }
        }
        Ok(())
    }
}

/// Whether forwarding failed because the target cannot be reached any more
/// (as opposed to a message the target refused, or back-pressure).
fn target_gone(e: &ockam_core::Error) -> bool {
    matches!(
        e.kind(),
        ockam_core::ErrorKind::Unavailable | ockam_core::ErrorKind::NotFound
    )
}
