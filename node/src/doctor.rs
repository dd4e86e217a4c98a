//! `kolokol doctor`: checks, in order, everything delivery depends on (identity, listen
//! addresses, bootstrap, reachability, relay reservations, our presence record, our mailbox
//! replicas and a probe round trip through our own mailbox), each with a one-line result and a
//! hint when something is wrong. To change what the doctor checks, change this file alone.
//! (That the daemon runs is the CLI's check: it is talking to it.)

use std::path::PathBuf;

use kolokol_protocol::control::{self, DoctorCheck};
use kolokol_protocol::envelope;
use kolokol_protocol::message::{Body, Content};
use rand::RngCore;

use crate::clock::Clock;
use crate::config::Role;
use crate::error::Result;
use crate::ids::new_message_id;
use crate::inbox::Inbox;
use crate::keys::Keys;
use crate::mailbox::Mailboxes;
use crate::presence::Presence;
use crate::swarm;
use crate::workers::Workers;

/// The outcome of one check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Status {
    Ok,
    Warn,
    Fail,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warn => "warn",
            Status::Fail => "fail",
        }
    }
}

fn check(name: &str, status: Status, detail: String, hint: Option<&str>) -> DoctorCheck {
    DoctorCheck {
        name: name.into(),
        status: status.as_str().into(),
        detail,
        hint: hint.map(Into::into),
    }
}

/// What the doctor looks at.
pub(crate) struct Doctor {
    pub(crate) keys: Keys,
    pub(crate) swarm: swarm::Client,
    pub(crate) presence: Presence,
    pub(crate) mailboxes: Mailboxes,
    pub(crate) inbox: Inbox,
    pub(crate) workers: Workers,
    pub(crate) clock: Clock,
    pub(crate) role: Role,
    pub(crate) data_dir: PathBuf,
}

impl Doctor {
    /// Checks, in order, everything a message depends on, each with a one-line result and a
    /// hint when something is wrong. (That the daemon runs is the CLI's check: it is talking
    /// to it.)
    pub(crate) async fn report(&self) -> Result<control::DoctorReport> {
        let mut checks = Vec::new();
        let key = self.data_dir.join(crate::data_dir::IDENTITY_FILE);
        let database = self.data_dir.join(crate::data_dir::DATABASE_FILE);
        let encrypted = crate::store_key::is_encrypted(&database).unwrap_or(false);
        checks.push(match std::fs::metadata(&key) {
            // An encrypted store holds the identity itself, and `identity.key` is gone.
            _ if encrypted => check(
                "identity",
                Status::Ok,
                format!(
                    "in the encrypted store {} (peer id {})",
                    database.display(),
                    self.keys.peer_id()
                ),
                None,
            ),
            Ok(m) if std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o077 == 0 => {
                check(
                    "identity",
                    Status::Ok,
                    format!("{} (peer id {})", key.display(), self.keys.peer_id()),
                    None,
                )
            }
            Ok(_) => check(
                "identity",
                Status::Warn,
                format!("{} is readable by other users", key.display()),
                Some("run: chmod 600 on it"),
            ),
            Err(e) => check(
                "identity",
                Status::Fail,
                format!("cannot read {}: {e}", key.display()),
                Some(
                    "restore identity.key from a backup; without it your contacts cannot reach you",
                ),
            ),
        });
        let net = self.swarm.status().await?;
        let direct: Vec<String> =
            net.listen.iter().filter(|a| !swarm::is_relayed(a)).map(ToString::to_string).collect();
        checks.push(if direct.is_empty() {
            check(
                "listen addresses",
                Status::Ok,
                "none: outbound connections only, reachable through relays".into(),
                None,
            )
        } else {
            check("listen addresses", Status::Ok, direct.join(", "), None)
        });
        let relay = self.role == Role::Relay;
        checks.push(if net.bootstrap_peers == 0 && relay {
            check(
                "bootstrap",
                Status::Ok,
                "none configured: this relay is a bootstrap peer for others".into(),
                None,
            )
        } else if net.bootstrap_peers == 0 && !net.lan.is_empty() {
            check(
                "bootstrap",
                Status::Warn,
                format!(
                    "no bootstrap source, but mDNS found {} on the local network: only those can be reached",
                    count(net.lan.len(), "peer", "peers")
                ),
                Some("to reach contacts elsewhere, start the node with --bootstrap <relay address>, or import a bundle: kolokol peers import FILE"),
            )
        } else if net.bootstrap_peers == 0 {
            check(
                "bootstrap",
                Status::Fail,
                "no bootstrap source: no --bootstrap, empty peer cache, no invite addresses".into(),
                Some("start the node with --bootstrap <relay address>, or import a bundle: kolokol peers import FILE"),
            )
        } else if net.bootstrap_connected == 0 {
            check(
                "bootstrap",
                Status::Fail,
                format!("none of {} bootstrap peers is reachable", net.bootstrap_peers),
                Some("check the addresses and your network; ask a contact for a bundle (kolokol peers export)"),
            )
        } else {
            check(
                "bootstrap",
                Status::Ok,
                format!("connected to {} of {} bootstrap peers", net.bootstrap_connected, net.bootstrap_peers),
                None,
            )
        });
        // What works on this network and what is blocked, right after whether the bootstrap
        // peers answer: it says why they might not.
        let endpoints = self.swarm.endpoints().await?;
        checks.extend(transport_checks(&endpoints, self.clock.now_ms()));
        checks.push(if net.public {
            check("reachability", Status::Ok, "public: a direct address is confirmed reachable".into(), None)
        } else if !net.reservations.is_empty() {
            check("reachability", Status::Ok, "behind NAT or firewall, reachable through relays".into(), None)
        } else {
            check(
                "reachability",
                Status::Fail,
                "unreachable: no confirmed direct address and no relay reservation".into(),
                Some("make sure a bootstrap peer is a relay, or run with --listen and --external-address on a public host"),
            )
        });
        checks.push(match net.reservations.len() {
            n if n >= swarm::TARGET_RESERVATIONS => check(
                "relay reservations",
                Status::Ok,
                format!("{n} relays hold a reservation for you"),
                None,
            ),
            0 if net.public => check(
                "relay reservations",
                Status::Ok,
                "none needed: directly reachable".into(),
                None,
            ),
            0 => check(
                "relay reservations",
                Status::Fail,
                format!("none ({} known)", count(net.known_relays, "relay", "relays")),
                Some("bootstrap from a community relay: kolokol node --bootstrap <relay address>"),
            ),
            n => check(
                "relay reservations",
                Status::Warn,
                format!(
                    "{n} of {} wanted ({} known): one relay going down makes you unreachable",
                    swarm::TARGET_RESERVATIONS,
                    count(net.known_relays, "relay", "relays")
                ),
                Some("add a second relay with --bootstrap, or import a bundle that lists one"),
            ),
        });
        checks.push(match self.presence.lookup(self.keys.peer_id(), true).await? {
            Some(record) => {
                // Our own part for contacts opens with our own mailbox address.
                let sealed = match record
                    .open_for_contacts(&self.keys.mailbox_address(), self.clock.now_secs())
                {
                    Ok(part) => part.map_or(0, |p| p.addresses.len()).to_string(),
                    Err(e) => format!("a part that does not open ({e}), so none"),
                };
                check(
                    "presence record",
                    Status::Ok,
                    format!(
                        "found in the DHT with {} anyone can read and {sealed} only contacts can",
                        count(record.body.addresses.len(), "address", "addresses")
                    ),
                    None,
                )
            }
            // A relay that started alone has nobody to store its record; that is where every
            // network begins, not a fault.
            None if relay && net.routing_table == 0 => check(
                "presence record",
                Status::Warn,
                "not found in the DHT: no other DHT server knows this relay yet".into(),
                Some("nothing to fix alone; a second relay started with --bootstrap <this relay's address> will hold it"),
            ),
            None => check(
                "presence record",
                Status::Fail,
                match &net.presence {
                    Some(Err(e)) => format!("not found in the DHT; last publication: {e}"),
                    _ => "not found in the DHT".into(),
                },
                Some("contacts whose invite addresses go stale cannot find you; check bootstrap and wait a minute"),
            ),
        });
        checks.extend(self.mailbox().await);
        Ok(control::DoctorReport { checks })
    }

    /// The doctor's mailbox checks: which replicas of our own mailbox answer (fetching what
    /// waits there, as a fetch always does), and a probe deposited in our own mailbox and
    /// fetched back, the whole store-and-forward path a contact's message takes while we are
    /// offline.
    async fn mailbox(&self) -> Vec<control::DoctorCheck> {
        use kolokol_protocol::mailbox::Response;
        let now = self.clock.now_secs();
        // The mailbox contacts deposit into: version 2, from our mailbox address. The list
        // always holds the version 1 one too, which comes first only if the version 2 id
        // could not be derived (a blinding factor of zero), so it is never empty.
        let Some(own) = self
            .mailboxes
            .own_mailboxes(kolokol_protocol::mailbox::period_of(now))
            .first()
            .copied()
        else {
            return Vec::new();
        };
        let replicas = self.mailboxes.replicas(&own.id, false).await;
        if replicas.is_empty() {
            // A relay alone is every user's replica but has none of its own until a second DHT
            // server joins; for a user node it means offline messages cannot wait anywhere.
            let (status, hint) = if self.role == Role::Relay {
                (
                    Status::Warn,
                    "a relay needs another DHT server to hold its own mailbox; users' mailboxes are unaffected",
                )
            } else {
                (
                    Status::Fail,
                    "messages to you while you are offline have nowhere to wait; connect to a relay or DHT server",
                )
            };
            return vec![
                check(
                    "mailbox replicas",
                    status,
                    "no other DHT server found for your mailbox".into(),
                    Some(hint),
                ),
                check("mailbox round trip", status, "skipped: no replica".into(), None),
            ];
        }
        // The probe and the fetches go as a contact's deposit and our own fetch do: through a
        // courier, under a fresh identity, never ours. The background fetch waits meanwhile,
        // or it could take the probe between its deposit and our fetch.
        let _fetching = self.mailboxes.fetching().await;
        let courier = match self.mailboxes.courier().await {
            Ok(courier) => courier,
            Err(e) => {
                let detail = format!("cannot start a courier: {e}");
                return vec![
                    check("mailbox replicas", Status::Fail, detail, None),
                    check("mailbox round trip", Status::Fail, "skipped".into(), None),
                ];
            }
        };
        let courier = Some(&courier.0);
        let mut answered = 0;
        let mut waiting = 0;
        let mut errors = Vec::new();
        for (replica, addresses) in &replicas {
            match self
                .mailboxes
                .fetch_from(&self.inbox, *replica, addresses.clone(), own, courier)
                .await
            {
                Ok(n) => {
                    answered += 1;
                    waiting += n;
                }
                Err(e) => errors.push(format!("{replica}: {e}")),
            }
        }
        let taken = if waiting > 0 {
            format!(", took {waiting} waiting message(s)")
        } else {
            String::new()
        };
        let replicas_check = match answered {
            0 => check(
                "mailbox replicas",
                Status::Fail,
                format!("none of {} replicas answered ({})", replicas.len(), errors.join("; ")),
                Some("check your connection to the DHT (bootstrap and relay checks above)"),
            ),
            n if n < replicas.len().min(crate::mailbox::REQUIRED_ACKS) => check(
                "mailbox replicas",
                Status::Warn,
                format!("{n} of {} replicas answered{taken}", replicas.len()),
                Some("a mailbox with one live replica loses messages if that replica goes"),
            ),
            n => check(
                "mailbox replicas",
                Status::Ok,
                format!("{n} of {} replicas answered{taken}", replicas.len()),
                None,
            ),
        };

        // The probe is a delivery receipt for a message that never existed, sealed to our own
        // device key: fetched back, it opens, is recognised as nobody's receipt, and leaves no
        // trace in the inbox.
        let mut random = [0u8; 48];
        rand::rngs::OsRng.fill_bytes(&mut random);
        let (of, rest) = random.split_at(16);
        let probe = Content {
            id: new_message_id(),
            sent_at_ms: self.clock.now_ms(),
            body: Body::Receipt { of: of.try_into().unwrap_or([0; 16]) },
        };
        let ephemeral: [u8; 32] = rest.try_into().unwrap_or([0; 32]);
        let keys = self.keys.clone();
        let sealed = self
            .workers
            .run(move || {
                let own_key = *keys.identity().device().public();
                envelope::seal(keys.identity(), &keys.certificate(), &own_key, &probe, ephemeral)
            })
            .await;
        let Ok(Ok(envelope)) = sealed else {
            return vec![
                replicas_check,
                check("mailbox round trip", Status::Fail, "cannot seal the probe".into(), None),
            ];
        };
        let item_id = own.item_id(&new_message_id());
        let mut stored = 0;
        for (replica, addresses) in &replicas {
            let deposit = own.deposit(item_id, envelope.clone(), now + 3600);
            if let Ok(Response::Stored) =
                self.mailboxes.carry(courier, *replica, addresses.clone(), deposit).await
            {
                stored += 1;
            }
        }
        let mut fetched = 0;
        for (replica, addresses) in &replicas {
            if let Ok(n) = self
                .mailboxes
                .fetch_from(&self.inbox, *replica, addresses.clone(), own, courier)
                .await
            {
                fetched += n;
            }
        }
        let round_trip = if stored > 0 && fetched >= stored {
            check(
                "mailbox round trip",
                Status::Ok,
                format!("a probe was stored on {stored} replica(s) and fetched back"),
                None,
            )
        } else if stored == 0 {
            check(
                "mailbox round trip",
                Status::Fail,
                "no replica stored the probe".into(),
                Some("the replicas refuse deposits (full, or not serving mailboxes)"),
            )
        } else {
            check(
                "mailbox round trip",
                Status::Fail,
                format!("the probe was stored on {stored} replica(s) but {fetched} came back"),
                Some("the replicas do not hand your items back; check the mailbox replicas line"),
            )
        };
        vec![replicas_check, round_trip]
    }
}

/// What works on this network and what is blocked, by transport and by address, and what the
/// node does about it: the `transports` line, and a `blocked addresses` line when some are.
pub(crate) fn transport_checks(view: &swarm::EndpointsView, now_ms: u64) -> Vec<DoctorCheck> {
    use crate::swarm::TransportKind;
    let kinds =
        [TransportKind::Stealth, TransportKind::Tcp, TransportKind::Quic, TransportKind::Other];
    let mut parts = Vec::new();
    let (mut working, mut blocked) = (0, 0);
    for kind in kinds {
        let records: Vec<&swarm::EndpointRecord> =
            view.records.iter().filter(|r| TransportKind::of(&r.address) == kind).collect();
        if records.is_empty() {
            continue;
        }
        let works = records.iter().filter(|r| r.works()).count();
        let failed = records.len() - works;
        if works > 0 {
            working += 1;
            parts.push(format!(
                "{} works ({works} of {})",
                kind.as_str(),
                count(records.len(), "address", "addresses")
            ));
        } else {
            blocked += 1;
            let last = records.iter().filter_map(|r| r.last_failure_ms).max().unwrap_or(now_ms);
            parts.push(format!(
                "{} blocked ({failed} of {} failed, the last {} s ago)",
                kind.as_str(),
                count(records.len(), "address", "addresses"),
                now_ms.saturating_sub(last) / 1000
            ));
        }
    }
    let stealth_only = view.policy == crate::config::Policy::Stealth;
    let what = if stealth_only {
        "only stealth addresses are dialed (--transport stealth)"
    } else {
        "each peer's addresses are raced, what works here first; a blocked address is tried again after 10 min, then less and less often (up to every 6 h)"
    };
    let mut out = Vec::new();
    out.push(if parts.is_empty() {
        check(
            "transports",
            Status::Ok,
            format!("network {}: nothing dialed yet on this network", view.network),
            None,
        )
    } else if working == 0 {
        check(
            "transports",
            Status::Fail,
            format!("network {}: {}", view.network, parts.join("; ")),
            // A relay that is down fails the same way as one a censor blocks; the node cannot
            // tell them apart from here, so the hint names both before the remedy for the second.
            Some("nothing dialed here works: the peers tried may be down, or this network blocks them; if they work elsewhere, get a relay's stealth address (port 443) from a contact's invite or bundle: kolokol peers import FILE"),
        )
    } else if blocked > 0 {
        check(
            "transports",
            Status::Warn,
            format!("network {}: {}", view.network, parts.join("; ")),
            Some(what),
        )
    } else {
        check("transports", Status::Ok, format!("network {}: {}", view.network, parts.join("; ")), None)
    });
    let failed: Vec<String> = view
        .records
        .iter()
        .filter(|r| !r.works())
        .take(MAX_LISTED_ADDRESSES)
        .map(|r| {
            let next = r.last_failure_ms.map_or(0, |at| {
                (at + crate::swarm::endpoints::retry_after(r.failures).as_millis() as u64)
                    .saturating_sub(now_ms)
                    / 1000
            });
            let failures = if r.failures == 1 { "failure" } else { "failures" };
            format!("{} ({} {failures}, retried in {next} s)", r.address, r.failures)
        })
        .collect();
    if !failed.is_empty() {
        let total = view.records.iter().filter(|r| !r.works()).count();
        let more = if total > failed.len() {
            format!(" and {} more", total - failed.len())
        } else {
            String::new()
        };
        out.push(check(
            "blocked addresses",
            if working > 0 { Status::Ok } else { Status::Warn },
            format!("{}{more}", failed.join(", ")),
            None,
        ));
    }
    out
}

/// Blocked addresses `doctor` lists by name; the rest are counted.
const MAX_LISTED_ADDRESSES: usize = 5;

/// `n` and the noun in the form that goes with it: "1 relay", "2 relays".
pub(crate) fn count(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}
