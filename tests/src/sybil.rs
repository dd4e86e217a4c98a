//! A discrete-event model of Kolokol's Kademlia under a Sybil attack: honest nodes and Sybils
//! that grind identities next to chosen mailbox ids and presence keys, sit on few address
//! ranges, capture routing tables where they can, and answer lookups with forged, stale or no
//! records. It follows rust-libp2p's lookup (k = 20, α = 3, iterative, optionally over α
//! disjoint paths) and Kolokol's policies (records verified by the reader; the routing table's
//! diversity rule; replicas spread over address groups; a presence lookup that, with the
//! defences on, does not stop at a stale record but waits for a second valid answer and keeps
//! the newest), so the same scenario can
//! be run with the defences on and off.
//!
//! Everything is deterministic for a seed: ids and choices come from a splitmix64 generator.
//! `kolokol-sybil` (src/bin/sybil.rs) runs the scenarios of `docs/ROBUSTNESS.md`; the tests
//! below run a small one and check the invariants.

use std::collections::{BTreeSet, HashSet};

/// Kademlia's bucket size and replication factor.
pub const K: usize = 20;
/// Kademlia's parallelism, and the number of disjoint paths.
pub const ALPHA: usize = 3;
/// Mailbox replicas per mailbox id.
pub const REPLICAS: usize = 3;

/// A 256-bit Kademlia key (the hash of a peer id, a mailbox id).
pub type Key = [u64; 4];

fn distance(a: &Key, b: &Key) -> Key {
    [a[0] ^ b[0], a[1] ^ b[1], a[2] ^ b[2], a[3] ^ b[3]]
}

/// The bucket `b` falls in, seen from `a`: 255 minus the common prefix length.
fn bucket(a: &Key, b: &Key) -> Option<usize> {
    let d = distance(a, b);
    let mut lz = 0;
    for w in d {
        if w == 0 {
            lz += 64;
        } else {
            lz += w.leading_zeros() as usize;
            break;
        }
    }
    (lz < 256).then(|| 255 - lz)
}

/// splitmix64: small, fast and good enough for a simulation.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn key(&mut self) -> Key {
        [self.next_u64(), self.next_u64(), self.next_u64(), self.next_u64()]
    }
    /// A number below `n` (nearly uniform for the small `n` a simulation uses).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

/// How a Sybil answers a request for a record it is asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lie {
    /// A record with a bad signature (or under the wrong key): every reader refuses it.
    Forged,
    /// An older record its owner really signed: valid, but with yesterday's addresses.
    Stale,
    /// No record, and only other Sybils as closer peers.
    Empty,
}

/// One simulated node.
#[derive(Clone, Debug)]
struct Node {
    id: Key,
    /// Its address group (an IPv4 /24).
    group: u32,
    sybil: bool,
    lie: Lie,
    /// Its routing table, by bucket.
    table: Vec<Vec<usize>>,
}

/// A scenario.
#[derive(Clone, Debug)]
pub struct Scenario {
    /// Honest nodes.
    pub honest: usize,
    /// Sybils as a fraction of all nodes (0.1 is one node in ten).
    pub sybil_fraction: f64,
    /// Address groups the Sybils share.
    pub sybil_groups: u32,
    /// Victims whose mailbox id and presence key the Sybils surround.
    pub victims: usize,
    /// Lookups of each victim's keys, each by another honest node.
    pub lookups_per_victim: usize,
    /// Disjoint paths, the diversity rule, replicas spread over groups, and waiting for a
    /// second valid record. Records are verified in both cases: that is the protocol.
    pub defences: bool,
    /// The seed of every random choice.
    pub seed: u64,
}

/// What a scenario measured.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Sybils in the network.
    pub sybils: usize,
    /// Mailbox lookups.
    pub mailbox_lookups: usize,
    /// Mailbox lookups whose replica set held at least one honest node.
    pub mailbox_ok: usize,
    /// Presence lookups.
    pub presence_lookups: usize,
    /// Presence lookups that returned the owner's newest record.
    pub presence_ok: usize,
    /// Presence lookups that returned an older (stale) record.
    pub stale_returned: usize,
    /// Forged records the lookups were handed.
    pub forged_seen: usize,
    /// Forged records accepted (always 0: readers verify).
    pub forged_accepted: usize,
    /// Messages to offline victims.
    pub messages: usize,
    /// Messages delivered: through an honest replica both the sender and the recipient
    /// found, or directly once the recipient's fresh record is found.
    pub delivered: usize,
    /// Routing-table slots of honest nodes held by Sybils.
    pub sybil_slots: usize,
    /// Routing-table slots of honest nodes.
    pub slots: usize,
}

/// A record as a lookup sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Found {
    Fresh,
    Stale,
    Forged,
}

struct Net {
    nodes: Vec<Node>,
    defences: bool,
}

impl Net {
    fn build(s: &Scenario, rng: &mut Rng, targets: &[Key]) -> Self {
        let sybils =
            ((s.honest as f64 * s.sybil_fraction) / (1.0 - s.sybil_fraction)).round() as usize;
        let mut nodes = Vec::new();
        for i in 0..s.honest {
            nodes.push(Node {
                id: rng.key(),
                group: i as u32,
                sybil: false,
                lie: Lie::Empty,
                table: vec![Vec::new(); 256],
            });
        }
        for j in 0..sybils {
            // Ground next to a target: the first 24 bits are the target's, far more than any
            // honest id shares with it among a few hundred nodes.
            let target = targets[j % targets.len()];
            let mut id = rng.key();
            id[0] = (target[0] & 0xffff_ff00_0000_0000) | (id[0] & 0x0000_00ff_ffff_ffff);
            nodes.push(Node {
                id,
                group: 1_000_000 + (j as u32 % s.sybil_groups.max(1)),
                sybil: true,
                lie: [Lie::Forged, Lie::Stale, Lie::Empty][j % 3],
                table: Vec::new(),
            });
        }
        let mut net = Net { nodes, defences: s.defences };
        net.fill_tables(rng);
        net
    }

    /// Every honest node learns about every other node, Sybils first (they connect to
    /// everyone as soon as they can, which is how they win slots under first-come inserts), and
    /// keeps at most K per bucket; with the defences on, the diversity rule (2 per group per
    /// bucket, 3 per table) decides who gets in.
    fn fill_tables(&mut self, rng: &mut Rng) {
        let n = self.nodes.len();
        for me in 0..n {
            if self.nodes[me].sybil {
                continue;
            }
            let mut order: Vec<usize> = (0..n).filter(|&o| o != me).collect();
            // Shuffle, then Sybils first.
            for i in (1..order.len()).rev() {
                order.swap(i, rng.below(i + 1));
            }
            order.sort_by_key(|&o| !self.nodes[o].sybil);
            let mut table: Vec<Vec<usize>> = vec![Vec::new(); 256];
            let mut per_group_table = std::collections::HashMap::<u32, usize>::new();
            for o in order {
                let Some(b) = bucket(&self.nodes[me].id, &self.nodes[o].id) else { continue };
                if table[b].len() >= K {
                    continue;
                }
                let group = self.nodes[o].group;
                if self.defences {
                    let in_bucket =
                        table[b].iter().filter(|&&p| self.nodes[p].group == group).count();
                    let in_table = per_group_table.get(&group).copied().unwrap_or(0);
                    if in_bucket >= 2 || in_table >= 3 {
                        continue;
                    }
                }
                *per_group_table.entry(group).or_default() += 1;
                table[b].push(o);
            }
            self.nodes[me].table = table;
        }
    }

    fn closest_in_table(&self, me: usize, key: &Key, n: usize) -> Vec<usize> {
        let mut all: Vec<usize> = self.nodes[me].table.iter().flatten().copied().collect();
        all.sort_by_key(|&p| distance(&self.nodes[p].id, key));
        all.truncate(n);
        all
    }

    /// What `peer` answers to "who is closest to `key`": an honest node its K closest; a
    /// Sybil the K Sybils closest to the key, to keep the lookup among Sybils.
    fn answer(&self, peer: usize, key: &Key) -> Vec<usize> {
        if self.nodes[peer].sybil {
            let mut sybils: Vec<usize> =
                (0..self.nodes.len()).filter(|&p| self.nodes[p].sybil).collect();
            sybils.sort_by_key(|&p| distance(&self.nodes[p].id, key));
            sybils.truncate(K);
            sybils
        } else {
            self.closest_in_table(peer, key, K)
        }
    }

    /// An iterative lookup from `me` for `key`, as rust-libp2p runs it: α requests at a time
    /// to the closest peers not yet asked, until the K closest known have all answered. With
    /// the defences on, over α disjoint paths: the first K peers are dealt out among the paths,
    /// each path only follows what its own peers answered, and no peer is asked twice. Each
    /// answer is passed to `visit`, which may stop the lookup. Returns the K closest that
    /// answered.
    fn lookup(&self, me: usize, key: &Key, mut visit: impl FnMut(usize) -> bool) -> Vec<usize> {
        let paths = if self.defences { ALPHA } else { 1 };
        let start = self.closest_in_table(me, key, K);
        let mut known: Vec<BTreeSet<([u64; 4], usize)>> = vec![BTreeSet::new(); paths];
        for (i, p) in start.into_iter().enumerate() {
            known[i % paths].insert((distance(&self.nodes[p].id, key), p));
        }
        let mut asked: HashSet<usize> = HashSet::from([me]);
        let mut answered: BTreeSet<([u64; 4], usize)> = BTreeSet::new();
        let per_path = if paths == 1 { ALPHA } else { 1 };
        loop {
            let mut progressed = false;
            for path in known.iter_mut() {
                // The K closest this path knows; ask the nearest not yet asked.
                let next: Vec<usize> = path
                    .iter()
                    .take(K)
                    .map(|(_, p)| *p)
                    .filter(|p| !asked.contains(p))
                    .take(per_path)
                    .collect();
                for p in next {
                    progressed = true;
                    asked.insert(p);
                    answered.insert((distance(&self.nodes[p].id, key), p));
                    if visit(p) {
                        return answered.iter().take(K).map(|(_, p)| *p).collect();
                    }
                    for q in self.answer(p, key) {
                        path.insert((distance(&self.nodes[q].id, key), q));
                    }
                }
            }
            if !progressed {
                break;
            }
        }
        answered.iter().take(K).map(|(_, p)| *p).collect()
    }

    /// The mailbox replicas `me` would use for `key`: the closest that answered, spread over
    /// address groups when the defences are on.
    fn replicas(&self, me: usize, key: &Key) -> Vec<usize> {
        let mut closest = self.lookup(me, key, |_| false);
        if self.defences {
            let mut seen = HashSet::new();
            let (first, rest): (Vec<usize>, Vec<usize>) =
                closest.into_iter().partition(|&p| seen.insert(self.nodes[p].group));
            closest = first.into_iter().chain(rest).collect();
        }
        closest.truncate(REPLICAS);
        closest
    }

    /// The presence record `me` finds for a key whose owner stored it on `holders`.
    fn find_record(
        &self,
        me: usize,
        key: &Key,
        holders: &HashSet<usize>,
        out: &mut Outcome,
    ) -> Option<Found> {
        let mut best: Option<Found> = None;
        let mut valid_answers = 0;
        let defences = self.defences;
        self.lookup(me, key, |p| {
            let found = if self.nodes[p].sybil {
                match self.nodes[p].lie {
                    Lie::Forged => Some(Found::Forged),
                    Lie::Stale => Some(Found::Stale),
                    Lie::Empty => None,
                }
            } else if holders.contains(&p) {
                Some(Found::Fresh)
            } else {
                None
            };
            match found {
                // Every reader verifies the signature and the key: a forged record is dropped
                // and the lookup goes on.
                Some(Found::Forged) => {
                    out.forged_seen += 1;
                    false
                }
                Some(f) => {
                    valid_answers += 1;
                    if best != Some(Found::Fresh) {
                        best = Some(f);
                    }
                    // Without the defences a lookup ends at the first valid record; with them it
                    // ends at a fresh one, and after a stale one waits for a second answer and
                    // keeps the newer.
                    !defences || f == Found::Fresh || valid_answers >= 2
                }
                None => false,
            }
        });
        best
    }
}

/// Runs one scenario.
pub fn run(s: &Scenario) -> Outcome {
    let mut rng = Rng::new(s.seed);
    // The victims are honest nodes; the Sybils surround their mailbox ids and presence keys.
    let victims: Vec<usize> =
        (0..s.victims).map(|v| v * (s.honest / s.victims.max(1)).max(1)).collect();
    let mailbox_keys: Vec<Key> = (0..s.victims).map(|_| rng.key()).collect();
    let presence_keys: Vec<Key> = (0..s.victims).map(|_| rng.key()).collect();
    let targets: Vec<Key> = mailbox_keys.iter().chain(&presence_keys).copied().collect();
    let net = Net::build(s, &mut rng, &targets);
    let mut out =
        Outcome { sybils: net.nodes.iter().filter(|n| n.sybil).count(), ..Default::default() };
    for node in net.nodes.iter().filter(|n| !n.sybil) {
        for &p in node.table.iter().flatten() {
            out.slots += 1;
            out.sybil_slots += usize::from(net.nodes[p].sybil);
        }
    }
    for (v, &victim) in victims.iter().enumerate() {
        // The victim publishes its presence record on the K closest peers its lookup finds;
        // honest ones keep it.
        let holders: HashSet<usize> = net
            .lookup(victim, &presence_keys[v], |_| false)
            .into_iter()
            .filter(|&p| !net.nodes[p].sybil)
            .collect();
        for _ in 0..s.lookups_per_victim {
            let sender = loop {
                let p = rng.below(s.honest);
                if p != victim {
                    break p;
                }
            };
            // A message while the victim is offline: the sender deposits on the replicas it
            // finds, the victim fetches from those it finds.
            let deposited: HashSet<usize> = net
                .replicas(sender, &mailbox_keys[v])
                .into_iter()
                .filter(|&p| !net.nodes[p].sybil)
                .collect();
            let fetched_from = net.replicas(victim, &mailbox_keys[v]);
            out.mailbox_lookups += 1;
            if fetched_from.iter().any(|&p| !net.nodes[p].sybil) {
                out.mailbox_ok += 1;
            }
            let through_mailbox = fetched_from.iter().any(|p| deposited.contains(p));
            // The sender's presence lookup, for a direct delivery once the victim is back.
            out.presence_lookups += 1;
            let found = net.find_record(sender, &presence_keys[v], &holders, &mut out);
            match found {
                Some(Found::Fresh) => out.presence_ok += 1,
                Some(Found::Stale) => out.stale_returned += 1,
                Some(Found::Forged) => out.forged_accepted += 1,
                None => {}
            }
            out.messages += 1;
            if through_mailbox || found == Some(Found::Fresh) {
                out.delivered += 1;
            }
        }
    }
    out
}

/// A fraction as a percentage with one decimal.
pub fn percent(part: usize, whole: usize) -> String {
    if whole == 0 {
        return "-".into();
    }
    format!("{:.1}%", 100.0 * part as f64 / whole as f64)
}

#[cfg(test)]
mod tests {
    use super::{Scenario, run};

    fn scenario(sybil_fraction: f64, defences: bool) -> Scenario {
        Scenario {
            honest: 60,
            sybil_fraction,
            sybil_groups: 2,
            victims: 4,
            lookups_per_victim: 5,
            defences,
            seed: 7,
        }
    }

    #[test]
    fn without_sybils_every_lookup_and_message_succeeds() {
        for defences in [false, true] {
            let out = run(&scenario(0.0, defences));
            assert_eq!(out.sybils, 0);
            assert_eq!(out.mailbox_ok, out.mailbox_lookups, "{out:?}");
            assert_eq!(out.presence_ok, out.presence_lookups, "{out:?}");
            assert_eq!(out.delivered, out.messages, "{out:?}");
        }
    }

    #[test]
    fn sybils_never_get_a_forged_record_accepted_and_the_defences_help() {
        let off = run(&scenario(0.2, false));
        let on = run(&scenario(0.2, true));
        for out in [&off, &on] {
            assert!(out.sybils > 0);
            assert!(out.forged_seen > 0, "the Sybils did hand out forged records: {out:?}");
            assert_eq!(out.forged_accepted, 0, "{out:?}");
        }
        assert!(on.sybil_slots * 2 < off.sybil_slots, "the diversity rule: {on:?} {off:?}");
        assert!(on.delivered >= off.delivered, "{on:?} {off:?}");
        assert_eq!(on.mailbox_ok, on.mailbox_lookups, "{on:?}");
    }
}
