//! The dialer's side of a session: opening it, and the supervisor that replaces its carrier
//! when one is lost, stalls or nears the address group's byte budget.

use super::*;

/// How a client opens a carrier: the TCP and TLS connection, then the upgrade with an offer.
pub trait Opener: Send + Sync + 'static {
    /// Connects and runs TLS, up to the upgrade; `meter` counts the carrier's socket.
    fn connect(&self, meter: Meter) -> futures::future::BoxFuture<'static, io::Result<BoxCarrier>>;

    /// Sends the upgrade request with `offer` on `carrier` and returns the listener's answer
    /// (an error if it took no session: the session is gone).
    fn upgrade<'a>(
        &'a self,
        carrier: &'a mut BoxCarrier,
        offer: Offer,
    ) -> futures::future::BoxFuture<'a, io::Result<Option<Answer>>>;
}

/// What a client knows to decide when a carrier is spent.
pub struct Budget {
    /// Where budgets are kept.
    pub meters: Meters,
    /// The address group of the listener.
    pub group: Group,
}

impl Budget {
    fn of(budget: Option<&Budget>) -> Option<u64> {
        budget.and_then(|b| b.meters.carrier_budget(b.group))
    }
}

/// The limit to name in an offer on a carrier that has received `so_far` socket bytes, under
/// `budget` socket bytes: what is left, less a margin for what the count of frames leaves out
/// (TLS records, packet headers, the acknowledgements of what we send): seven tenths.
pub fn limit_under(budget: Option<u64>, so_far: u64) -> Option<u64> {
    budget.map(|b| (b.saturating_sub(so_far) / 10 * 7).max(MIN_LIMIT))
}

/// Opens a session on `carrier`, which `opener` connected (its socket counted in
/// `carrier_meter`): sends the offer and returns the session, or the carrier back if the
/// listener does not know sessions. `progress` counts what every later carrier receives, for
/// the swarm task's stall watch.
pub async fn open_client(
    opener: Arc<dyn Opener>,
    mut carrier: BoxCarrier,
    carrier_meter: Meter,
    budget: Option<Budget>,
    progress: Option<Meter>,
) -> io::Result<Result<Session, BoxCarrier>> {
    let mut id = [0u8; SESSION_ID_LEN];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut id);
    let limit = limit_under(Budget::of(budget.as_ref()), carrier_meter.load(Ordering::Relaxed));
    let Some(answer) = opener.upgrade(&mut carrier, Offer { id, resume: None, limit }).await?
    else {
        return Ok(Err(carrier));
    };
    let (session, shared) = Session::new();
    let generation = {
        let mut s = shared.lock();
        s.peer_limit = limit;
        s.begin_carrier(answer.received, Instant::now())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?
    };
    let tasks = Tasks::start(&shared, generation, carrier, None);
    let client = Client {
        shared,
        opener,
        id,
        budget,
        progress,
        carrier_meter,
        tasks: Some(tasks),
        last_stall: None,
        delay: FIRST_REOPEN_DELAY,
    };
    tokio::spawn(client.supervise());
    Ok(Ok(session))
}

struct Client {
    shared: Arc<Shared>,
    opener: Arc<dyn Opener>,
    id: SessionId,
    budget: Option<Budget>,
    progress: Option<Meter>,
    carrier_meter: Meter,
    tasks: Option<Tasks>,
    /// The socket count at which an earlier carrier stalled, if one did after a count that
    /// looks like a censor's volume limit.
    last_stall: Option<u64>,
    /// The wait before the next attempt when carriers keep failing at once.
    delay: Duration,
}

/// Why a client replaces its carrier.
#[derive(Debug, PartialEq, Eq)]
enum Replace {
    Lost,
    Spent,
    Stalled(u64),
}

impl Client {
    async fn supervise(mut self) {
        let mut tick = tokio::time::interval(CLIENT_TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let shared = self.shared.clone();
        loop {
            let event = shared.event.notified();
            let (closed, failed, replace) = {
                let s = shared.lock();
                (s.closed, s.failed.is_some(), self.replace(&s, Instant::now()))
            };
            if closed {
                linger(&shared).await;
                return;
            }
            if failed {
                return;
            }
            if let Some(why) = replace {
                self.learn(&why);
                let carried = shared.lock().carrier_received;
                if why != Replace::Spent && carried < MIN_LIMIT {
                    // A carrier that failed before it carried anything: wait before the next,
                    // longer each time, so that a carrier reset at once does not make a loop.
                    tokio::time::sleep(self.delay).await;
                    self.delay = (self.delay * 2).min(MAX_REOPEN_DELAY);
                } else {
                    self.delay = FIRST_REOPEN_DELAY;
                }
                tracing::debug!(?why, "replacing the tunnel's carrier");
                if let Err(e) = self.reopen().await {
                    tracing::debug!(error = %e, "the tunnel could not be resumed");
                    self.shared.lock().fail(format!("the tunnel could not be resumed: {e}"));
                    return;
                }
                continue;
            }
            tokio::select! {
                () = event => {}
                _ = tick.tick() => {}
            }
        }
    }

    /// Takes the budget of the listener's address group from a stall, once a second carrier
    /// stalled after a count that looks like a censor's volume limit too: a single stall may be
    /// a moment of congestion or a handover, and a budget is kept until the node restarts.
    fn learn(&mut self, why: &Replace) {
        let Replace::Stalled(received) = *why else { return };
        if crate::swarm::volume::budget_after_freeze(received).is_none() {
            return;
        }
        if let (Some(b), Some(earlier)) = (&self.budget, self.last_stall)
            && let Some(budget) = crate::swarm::volume::budget_after_freeze(earlier.min(received))
        {
            tracing::debug!(
                received,
                budget,
                "tunnel carriers froze twice; the next ones stay under it"
            );
            b.meters.set_carrier_budget(b.group, budget);
        }
        self.last_stall = Some(received);
    }

    /// Whether the carrier must be replaced, and why.
    fn replace(&self, s: &State, now: Instant) -> Option<Replace> {
        if s.lost {
            return Some(Replace::Lost);
        }
        let socket = self.carrier_meter.load(Ordering::Relaxed);
        // A carrier carries at least MIN_LIMIT, however small the budget: its handshake alone
        // may be near it, and replacing it at once would loop.
        let over = s.carrier_received >= MIN_LIMIT
            && Budget::of(self.budget.as_ref()).is_some_and(|b| socket >= b);
        if s.exhausted || over {
            return Some(Replace::Spent);
        }
        let silent = s.heard.is_some_and(|h| now.duration_since(h) >= CARRIER_STALL);
        let waiting = s.waiting_since.is_some_and(|w| now.duration_since(w) >= CARRIER_STALL);
        (silent && waiting).then_some(Replace::Stalled(socket))
    }

    /// Opens the next carrier, retrying within [`RESUME_WINDOW`].
    async fn reopen(&mut self) -> io::Result<()> {
        let deadline = Instant::now() + RESUME_WINDOW;
        let mut delay = FIRST_REOPEN_DELAY;
        loop {
            let error = match tokio::time::timeout(CARRIER_OPEN_TIMEOUT, self.open_next()).await {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(e)) if e.kind() == io::ErrorKind::NotFound => return Err(e),
                Ok(Err(e)) => e,
                Err(_) => io::Error::new(io::ErrorKind::TimedOut, "opening a carrier timed out"),
            };
            if self.shared.lock().closed || Instant::now() + delay > deadline {
                return Err(error);
            }
            tracing::debug!(%error, "tunnel carrier not opened; trying again");
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(MAX_REOPEN_DELAY);
        }
    }

    async fn open_next(&mut self) -> io::Result<()> {
        let meter = Meter::default();
        // The old carrier goes on while the new one's TCP and TLS handshakes run.
        let mut carrier = self.opener.connect(meter.clone()).await?;
        let received = {
            let mut s = self.shared.lock();
            s.carrier += 1;
            s.received
        };
        self.tasks = None;
        let limit = limit_under(Budget::of(self.budget.as_ref()), meter.load(Ordering::Relaxed));
        let offer = Offer { id: self.id, resume: Some(received), limit };
        let answer = self.opener.upgrade(&mut carrier, offer).await?.ok_or_else(|| {
            io::Error::new(io::ErrorKind::NotFound, "the listener no longer holds the session")
        })?;
        let generation = {
            let mut s = self.shared.lock();
            s.peer_limit = limit;
            s.begin_carrier(answer.received, Instant::now())
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?
        };
        self.carrier_meter = meter;
        self.tasks = Some(Tasks::start(&self.shared, generation, carrier, self.progress.clone()));
        // Whatever waited for the old carrier goes on the new one.
        self.shared.send.notify_one();
        Ok(())
    }
}

/// Sends the upgrade request for `path` on `host` with `offer` on `carrier`, and returns the
/// listener's answer: `None` if it took no session (for a resumption: refused it, so the
/// session is gone).
pub async fn upgrade(
    carrier: &mut BoxCarrier,
    host: &str,
    path: &str,
    offer: Offer,
) -> io::Result<Option<Answer>> {
    let head =
        match crate::transport::http::client_upgrade(carrier, host, path, Some(&offer.to_header()))
            .await
        {
            Ok(head) => head,
            Err(e) if offer.resume.is_some() && e.kind() == io::ErrorKind::ConnectionRefused => {
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
    use crate::transport::http::header;
    Ok(Answer::parse(
        &offer.to_header(),
        header(&head, "sec-websocket-protocol"),
        header(&head, kolokol_protocol::tunnel::ANSWER_HEADER),
    ))
}
