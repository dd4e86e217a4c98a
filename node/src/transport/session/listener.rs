//! The listener's side of sessions: the registry of those it holds, and the supervisor that
//! moves one to the carrier a resuming client opens, or ends it after [`RESUME_WINDOW`].

use super::*;

/// A carrier that asks to resume a session, with what the client has received and the limit
/// it names, and the `101` to send before the frames (its end still open, for the answer).
pub struct Resume {
    /// The new carrier.
    pub carrier: BoxCarrier,
    /// The client's offer.
    pub offer: Offer,
    /// The `101` head, without the blank line that ends it.
    pub response: Vec<u8>,
}

/// What a listener makes of a tunnel request.
pub enum Accepted {
    /// A new session, for the swarm.
    Session(Session),
    /// No session offered (or none to be had): the carrier, for a plain tunnel after the
    /// `101` the caller sends.
    Plain(BoxCarrier),
    /// A resumption handed to its session, or a request refused: nothing for the swarm.
    Nothing,
}

/// The sessions a listener holds, each by the id its client chose.
#[derive(Clone, Default)]
pub struct Registry(Arc<Mutex<HashMap<SessionId, mpsc::Sender<Resume>>>>);

impl Registry {
    pub(super) fn lock(&self) -> MutexGuard<'_, HashMap<SessionId, mpsc::Sender<Resume>>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Opens session `id` on `carrier`, whose `101` (`response`, its head still open) this
    /// sends with the answer; the carrier back if the id is taken or the registry full (the
    /// caller then answers with a plain tunnel).
    pub async fn open(
        &self,
        mut carrier: BoxCarrier,
        offer: Offer,
        response: Vec<u8>,
    ) -> Result<io::Result<Session>, BoxCarrier> {
        let id = offer.id;
        let (tx, rx) = mpsc::channel(RESUME_QUEUE);
        {
            let mut sessions = self.lock();
            sessions.retain(|_, tx| !tx.is_closed());
            if sessions.len() >= MAX_SESSIONS || sessions.contains_key(&id) {
                return Err(carrier);
            }
            sessions.insert(id, tx);
        }
        if let Err(e) = answer(&mut carrier, response, &offer, 0).await {
            self.lock().remove(&id);
            return Ok(Err(e));
        }
        let (session, shared) = Session::new();
        let generation = {
            let mut s = shared.lock();
            s.send_limit = offer.limit.map(|l| l.max(MIN_LIMIT));
            s.begin_carrier(0, Instant::now()).unwrap_or_default()
        };
        let tasks = Tasks::start(&shared, generation, carrier, None);
        let listener = Listener { shared, registry: self.clone(), id, rx, tasks: Some(tasks) };
        tokio::spawn(listener.supervise());
        Ok(Ok(session))
    }

    /// Hands a resuming carrier to its session; refuses it (`404`) if there is no such session.
    pub async fn resume(&self, id: SessionId, resume: Resume) {
        let tx = self.lock().get(&id).cloned();
        let refused = match tx {
            Some(tx) => match tx.send(resume).await {
                Ok(()) => return,
                Err(mpsc::error::SendError(r)) => r,
            },
            None => resume,
        };
        refuse(refused.carrier).await;
    }
}

impl Registry {
    /// Answers a tunnel request whose head is `head` on `carrier`: opens or resumes the session
    /// it offers; `response` is the `101` without the blank line that ends it.
    pub async fn accept(&self, carrier: BoxCarrier, head: &[u8], response: Vec<u8>) -> Accepted {
        let offer = match crate::transport::http::header(head, "sec-websocket-protocol")
            .map(Offer::find)
        {
            // An offer this listener cannot read (a later version's) gets the plain tunnel.
            Some(Err(e)) => {
                tracing::debug!(error = %e, "a stealth tunnel request with a session offer not understood");
                None
            }
            Some(Ok(offer)) => offer,
            None => None,
        };
        let Some(offer) = offer else { return Accepted::Plain(carrier) };
        if offer.resume.is_some() {
            self.resume(offer.id, Resume { carrier, offer, response }).await;
            return Accepted::Nothing;
        }
        match self.open(carrier, offer, response).await {
            Ok(Ok(session)) => Accepted::Session(session),
            Ok(Err(_)) => Accepted::Nothing,
            Err(carrier) => Accepted::Plain(carrier),
        }
    }
}

/// Refuses a resumption: the session is not here, or not at the count the client gives.
async fn refuse(mut carrier: BoxCarrier) {
    let _ = carrier
        .write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        .await;
    let _ = carrier.shutdown().await;
}

/// Ends a `101` head with the session's answer to `offer` and sends it.
async fn answer(
    carrier: &mut BoxCarrier,
    mut response: Vec<u8>,
    offer: &Offer,
    received: u64,
) -> io::Result<()> {
    let header = format!(
        "Sec-WebSocket-Protocol: {}\r\n{}: {}\r\n\r\n",
        offer.to_header(),
        kolokol_protocol::tunnel::ANSWER_HEADER,
        Answer { received }.to_header()
    );
    response.extend_from_slice(header.as_bytes());
    carrier.write_all(&response).await?;
    carrier.flush().await
}

struct Listener {
    shared: Arc<Shared>,
    registry: Registry,
    id: SessionId,
    rx: mpsc::Receiver<Resume>,
    tasks: Option<Tasks>,
}

impl Listener {
    async fn supervise(mut self) {
        let mut orphaned: Option<Instant> = None;
        loop {
            let shared = self.shared.clone();
            let event = shared.event.notified();
            let (closed, failed) = {
                let mut s = shared.lock();
                if s.lost && orphaned.is_none() {
                    orphaned = Some(Instant::now() + RESUME_WINDOW);
                }
                if !s.closed && orphaned.is_some_and(|t| t <= Instant::now()) {
                    s.fail("the tunnel's client did not come back");
                }
                (s.closed, s.failed.is_some())
            };
            if closed {
                linger(&shared).await;
                break;
            }
            if failed {
                break;
            }
            let until = orphaned.unwrap_or_else(|| Instant::now() + RESUME_WINDOW);
            let resume = tokio::select! {
                () = event => None,
                () = tokio::time::sleep_until(until), if orphaned.is_some() => None,
                resume = self.rx.recv() => match resume {
                    Some(resume) => Some(resume),
                    None => break,
                },
            };
            if let Some(resume) = resume
                && self.take(resume).await
            {
                orphaned = None;
            }
        }
        self.tasks = None;
        self.registry.lock().remove(&self.id);
    }

    /// Moves the session to a resuming carrier; `false` if that failed. A resumption from a
    /// count the session cannot go on from (a stale request that arrived late, or one not from
    /// the client) is refused, and the current carrier kept.
    async fn take(&mut self, mut resume: Resume) -> bool {
        let peer_received = resume.offer.resume.unwrap_or_default();
        let received = {
            let mut s = self.shared.lock();
            if s.can_resume_from(peer_received) {
                s.carrier += 1;
                s.lost = true;
                Some(s.received)
            } else {
                None
            }
        };
        let Some(received) = received else {
            tracing::debug!(
                peer_received,
                "a tunnel resumption from a count the session is past; refused"
            );
            refuse(resume.carrier).await;
            return false;
        };
        self.tasks = None;
        if answer(&mut resume.carrier, resume.response, &resume.offer, received).await.is_err() {
            return false;
        }
        let generation = {
            let mut s = self.shared.lock();
            s.send_limit = resume.offer.limit.map(|l| l.max(MIN_LIMIT));
            match s.begin_carrier(peer_received, Instant::now()) {
                Ok(g) => g,
                Err(why) => {
                    s.fail(format!("the tunnel's client resumed wrongly: {why}"));
                    return false;
                }
            }
        };
        self.tasks = Some(Tasks::start(&self.shared, generation, resume.carrier, None));
        self.shared.send.notify_one();
        true
    }
}
