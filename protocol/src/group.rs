//! Private groups with no server: the signed membership changes members agree on, the one rule
//! that turns any set of them into the group's state, and the messages that carry them and the
//! group's texts, end to end, inside the ordinary pairwise envelopes.
//!
//! A group is the set of its signed changes ([`GroupOp`]): the creation, then additions,
//! removals, renames and departures, each signed by its author's identity key and naming the
//! changes its author had seen (its parents), so the changes form a graph of causality. Members
//! exchange changes until they hold the same set; the state (name, members, admins) is a pure
//! function of the set ([`GroupLog::resolve`]), so members who hold the same changes agree,
//! whatever order they received them in. That function is the conflict rule:
//!
//! 1. Only changes whose every ancestor is present and well formed count; their order is by
//!    Lamport number, then by id, which extends causality.
//! 2. Folding them in that order, a change takes effect only if its author may make it at that
//!    point: an admin adds, removes and renames; any member leaves.
//! 3. Removal wins over concurrency: when a change takes a member's rights away (removes them,
//!    or makes an admin a plain member), every change of theirs that took effect and is not an
//!    ancestor of that change (it was concurrent with it, or made after it with a claim to know
//!    less) is thrown out, and the fold starts again without it.
//!
//! Of two concurrent renames, the later in that order wins; everyone computes the same one.
//! Nothing here is sent or stored: the node carries [`GroupMessage`]s in [`crate::message::Body::Group`]
//! and keeps the changes. `docs/PROTOCOL.md` section 14 is the normative description.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use bincode::{Decode, Encode};
use blake2::{Blake2s256, Digest};

use crate::Error;
use crate::codec;
use crate::identity::{DeviceCertificate, Identity, verify_strict};
use crate::message::{MAX_TEXT_LEN, MessageId};

/// Domain-separation prefix of a change's signature.
pub const OP_CONTEXT: &[u8] = b"kolokol-group-op:v1";

/// Hash context of a change's id.
pub const OP_ID_CONTEXT: &[u8] = b"kolokol-group-op-id:v1";

/// Longest group name, in bytes of UTF-8.
pub const MAX_GROUP_NAME_LEN: usize = 64;

/// Longest name a member is listed under, in bytes of UTF-8.
pub const MAX_MEMBER_NAME_LEN: usize = 64;

/// Most parents one change may name; also the most heads a text or a request carries.
pub const MAX_PARENTS: usize = 16;

/// Most members a group may have; an addition past it takes no effect.
pub const MAX_GROUP_MEMBERS: usize = 1024;

/// Most changes one group may hold. It bounds what a member keeps and what resolving costs;
/// a group that reaches it takes no more changes (its members make a new group).
pub const MAX_GROUP_OPS: usize = 4096;

/// Most changes one [`GroupBody::Ops`] carries.
pub const MAX_OPS_PER_MESSAGE: usize = 256;

/// Most change ids one [`GroupBody::Want`] asks for.
pub const MAX_WANTED: usize = 256;

/// A group's id: the first 16 bytes of the id of the change that created it.
pub type GroupId = [u8; 16];

/// A change's id: `BLAKE2s-256(OP_ID_CONTEXT || bincode(body))`.
pub type OpId = [u8; 32];

/// An Ed25519 identity key, which names a member.
pub type IdentityKey = [u8; 32];

/// A member as a change lists them.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct Member {
    /// Their device certificate: their identity key (who they are) and the device key others
    /// seal envelopes to. Its validity window is not checked by the group, whose state must not
    /// depend on anyone's clock; its signature is.
    pub certificate: DeviceCertificate,
    /// The name the author of the change gave them, shown to members who have no contact name
    /// for them. At most [`MAX_MEMBER_NAME_LEN`] bytes; may be empty.
    pub name: String,
    /// Whether they may add, remove and rename.
    pub admin: bool,
}

/// What a change does.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub enum Action {
    /// Creates the group with its creator as the first admin. The body's `group` is all zeros
    /// (the group id is derived from this change), its Lamport number 0 and it has no parents.
    Create {
        /// The group's name, 1 to [`MAX_GROUP_NAME_LEN`] bytes.
        name: String,
        /// The creator, whose certificate's identity key is the author's, as an admin.
        creator: Member,
        /// Random bytes, so two groups with the same creator and name have different ids.
        nonce: [u8; 16],
    },
    /// Adds a member, or replaces an existing member's entry (a new certificate, a new name,
    /// admin or not). By an admin.
    Add {
        /// The member.
        member: Member,
    },
    /// Removes a member. By an admin.
    Remove {
        /// The member's identity key.
        identity: IdentityKey,
    },
    /// Renames the group. By an admin.
    Rename {
        /// The new name, 1 to [`MAX_GROUP_NAME_LEN`] bytes.
        name: String,
    },
    /// The author leaves the group. By any member.
    Leave,
}

/// The signed part of a change.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct OpBody {
    /// The group, or all zeros in the change that creates it.
    pub group: GroupId,
    /// One more than the largest Lamport number of the parents; 0 for the creation.
    pub lamport: u64,
    /// The ids of the changes the author had seen last (the heads of its graph), in strictly
    /// increasing order, 1 to [`MAX_PARENTS`] of them; none for the creation.
    pub parents: Vec<OpId>,
    /// The author's identity key, which signs.
    pub author: IdentityKey,
    /// What it does.
    pub action: Action,
}

/// A signed membership change.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct GroupOp {
    /// What is signed.
    pub body: OpBody,
    /// Ed25519 signature by `body.author` over [`OP_CONTEXT`] and the encoded body.
    pub signature: [u8; 64],
}

/// What travels inside an envelope for a group ([`crate::message::Body::Group`]).
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct GroupMessage {
    /// The group it belongs to.
    pub group: GroupId,
    /// What it says.
    pub body: GroupBody,
}

/// The kinds of group message. A later kind is a new variant, which an older node refuses.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub enum GroupBody {
    /// A text written to the group.
    Text {
        /// The text's id, the same in every member's copy.
        id: MessageId,
        /// Its number among its writer's texts to this group, from 1, one more each time: the
        /// receiver shows each writer's texts in this order and sees a gap where one is missing.
        seq: u64,
        /// The writer's heads when it wrote: a receiver that does not know them yet asks for
        /// them before it decides whether the writer is a member. At most [`MAX_PARENTS`].
        heads: Vec<OpId>,
        /// What it says, at most [`MAX_TEXT_LEN`] bytes.
        text: String,
    },
    /// Membership changes: new ones, the whole history for a new member, or an answer to a
    /// [`GroupBody::Want`]. 1 to [`MAX_OPS_PER_MESSAGE`] of them.
    Ops {
        /// The changes, in any order.
        ops: Vec<GroupOp>,
    },
    /// Asks the receiver for changes the sender lacks.
    Want {
        /// The sender's heads, so the answer can leave out what the sender has (at most
        /// [`MAX_PARENTS`]).
        heads: Vec<OpId>,
        /// The changes wanted, 1 to [`MAX_WANTED`]; the answer adds their missing ancestors.
        ids: Vec<OpId>,
    },
}

impl GroupMessage {
    /// Whether the message is within its bounds; receivers check this before acting on it,
    /// since decoding alone only bounds the total size.
    pub fn is_valid(&self) -> bool {
        match &self.body {
            GroupBody::Text { seq, heads, text, .. } => {
                *seq >= 1 && heads.len() <= MAX_PARENTS && text.len() <= MAX_TEXT_LEN
            }
            GroupBody::Ops { ops } => !ops.is_empty() && ops.len() <= MAX_OPS_PER_MESSAGE,
            GroupBody::Want { heads, ids } => {
                heads.len() <= MAX_PARENTS && !ids.is_empty() && ids.len() <= MAX_WANTED
            }
        }
    }
}

/// The id of a change with this body.
pub fn op_id(body: &OpBody) -> Result<OpId, Error> {
    let encoded = codec::encode(body)?;
    let mut hasher = Blake2s256::new();
    hasher.update(OP_ID_CONTEXT);
    hasher.update(&encoded);
    Ok(hasher.finalize().into())
}

/// The group id a creation body makes: the first 16 bytes of its change id.
fn group_of_create(id: &OpId) -> GroupId {
    let mut group = [0u8; 16];
    group.copy_from_slice(&id[..16]);
    group
}

fn signed_bytes(body: &OpBody) -> Result<Vec<u8>, Error> {
    let mut m = OP_CONTEXT.to_vec();
    m.extend_from_slice(&codec::encode(body)?);
    Ok(m)
}

fn invalid(detail: &'static str) -> Error {
    Error::Group(detail)
}

/// Checks a member entry: the certificate's signature (not its validity window, which would
/// make the group's state depend on the reader's clock) and the name's length.
fn check_member(member: &Member) -> Result<(), Error> {
    if member.name.len() > MAX_MEMBER_NAME_LEN {
        return Err(invalid("names a member with a name over 64 bytes"));
    }
    // At `not_before` the window check passes whenever the window is not empty, so this checks
    // exactly the signature, the keys and the window's order.
    member
        .certificate
        .verify(member.certificate.not_before)
        .map_err(|_| invalid("carries a member certificate that does not verify"))?;
    Ok(())
}

fn check_group_name(name: &str) -> Result<(), Error> {
    if name.trim().is_empty() || name.len() > MAX_GROUP_NAME_LEN {
        return Err(invalid("names the group with an empty name or one over 64 bytes"));
    }
    Ok(())
}

impl GroupOp {
    /// Signs a change with the author's identity key (`body.author` must be its key).
    pub fn sign(identity: &Identity, body: OpBody) -> Result<Self, Error> {
        if body.author != *identity.identity_key() {
            return Err(invalid("is signed by someone other than its author"));
        }
        let signature = identity.sign(&signed_bytes(&body)?)?;
        Ok(Self { body, signature })
    }

    /// The change's id.
    pub fn id(&self) -> Result<OpId, Error> {
        op_id(&self.body)
    }

    /// The group the change belongs to: its `group`, or for a creation the id it derives.
    pub fn group(&self) -> Result<GroupId, Error> {
        match self.body.action {
            Action::Create { .. } => Ok(group_of_create(&self.id()?)),
            _ => Ok(self.body.group),
        }
    }

    /// Every check that does not depend on the other changes: the form of the body, the
    /// signature (strictly, by the author), and the certificates of the members it names.
    /// Returns the change's id. Whether the author may make the change is decided later, by
    /// [`GroupLog::resolve`], from the changes before it.
    pub fn verify(&self) -> Result<OpId, Error> {
        let body = &self.body;
        match &body.action {
            Action::Create { name, creator, .. } => {
                if body.group != [0; 16] || body.lamport != 0 || !body.parents.is_empty() {
                    return Err(invalid("creates a group but has a group id, parents or a number"));
                }
                if creator.certificate.identity_key != body.author || !creator.admin {
                    return Err(invalid("creates a group whose first admin is not its author"));
                }
                check_group_name(name)?;
                check_member(creator)?;
            }
            action => {
                if body.lamport == 0 || body.parents.is_empty() || body.parents.len() > MAX_PARENTS
                {
                    return Err(invalid("has no parents, more than 16, or the number 0"));
                }
                if body.parents.windows(2).any(|w| w[0] >= w[1]) {
                    return Err(invalid("lists its parents out of order or twice"));
                }
                match action {
                    Action::Add { member } => check_member(member)?,
                    Action::Rename { name } => check_group_name(name)?,
                    Action::Remove { .. } | Action::Leave | Action::Create { .. } => {}
                }
            }
        }
        if !verify_strict(&body.author, &signed_bytes(body)?, &self.signature)? {
            return Err(invalid("has a signature that does not verify"));
        }
        self.id()
    }

    /// The encoding, as stored and sent.
    pub fn to_bytes(&self) -> Result<Vec<u8>, Error> {
        codec::encode(self)
    }

    /// Decodes a change (nothing is verified: see [`GroupOp::verify`]).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, Error> {
        codec::decode("group change", bytes)
    }
}

/// Makes the change that creates a group, signed by its creator.
pub fn create(
    identity: &Identity,
    certificate: DeviceCertificate,
    name: &str,
    own_name: &str,
    nonce: [u8; 16],
) -> Result<GroupOp, Error> {
    let creator = Member { certificate, name: own_name.to_owned(), admin: true };
    let body = OpBody {
        group: [0; 16],
        lamport: 0,
        parents: Vec::new(),
        author: *identity.identity_key(),
        action: Action::Create { name: name.to_owned(), creator, nonce },
    };
    let op = GroupOp::sign(identity, body)?;
    op.verify()?;
    Ok(op)
}

/// What inserting a change did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Inserted {
    /// It is new.
    New,
    /// The log holds it already.
    Known,
}

/// A group's changes, as one member holds them: at most [`MAX_GROUP_OPS`], each verified.
#[derive(Clone, Debug, Default)]
pub struct GroupLog {
    group: GroupId,
    ops: BTreeMap<OpId, GroupOp>,
}

/// A group's state, as [`GroupLog::resolve`] computes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupState {
    /// The group.
    pub group: GroupId,
    /// Its name now.
    pub name: String,
    /// Who created it.
    pub creator: IdentityKey,
    /// Its members now, by identity key.
    pub members: BTreeMap<IdentityKey, Member>,
    /// The changes that took effect, in the order they did.
    pub applied: Vec<OpId>,
    /// The complete changes that took no effect: their author could not make them, or they
    /// were thrown out because their author lost the right concurrently (rule 3).
    pub ignored: Vec<OpId>,
    /// The heads of the complete changes (those no other complete change names as a parent),
    /// in increasing order: a new change names them as its parents (the newest
    /// [`MAX_PARENTS`]), a text carries them.
    pub heads: Vec<OpId>,
    /// The largest Lamport number among the complete changes.
    pub lamport: u64,
}

impl GroupState {
    /// The member with this identity key, if they are one.
    pub fn member(&self, identity: &IdentityKey) -> Option<&Member> {
        self.members.get(identity)
    }

    /// Whether the identity is an admin now.
    pub fn is_admin(&self, identity: &IdentityKey) -> bool {
        self.members.get(identity).is_some_and(|m| m.admin)
    }

    /// The body of a new change by `author`: its parents are the newest heads (at most
    /// [`MAX_PARENTS`]), its number one more than theirs.
    pub fn next(&self, author: IdentityKey, action: Action) -> OpBody {
        OpBody {
            group: self.group,
            lamport: self.lamport.saturating_add(1),
            parents: self.parents(),
            author,
            action,
        }
    }

    /// The parents a new change names: every head, or the newest [`MAX_PARENTS`] of them by
    /// id if there are more (the others stay heads until a later change names them).
    pub fn parents(&self) -> Vec<OpId> {
        let mut parents: Vec<OpId> = self.heads.iter().rev().take(MAX_PARENTS).copied().collect();
        parents.sort();
        parents
    }
}

/// Which right a change takes away from a member.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Revoked {
    /// Membership: every change of theirs needed it.
    Membership,
    /// Admin rights: their additions, removals and renames needed them.
    Admin,
}

/// A fixed-size set of indices, for the ancestors of each change.
#[derive(Clone)]
struct Bits(Vec<u64>);

impl Bits {
    fn new(len: usize) -> Self {
        Self(vec![0; len.div_ceil(64)])
    }

    fn set(&mut self, i: usize) {
        if let Some(word) = self.0.get_mut(i / 64) {
            *word |= 1 << (i % 64);
        }
    }

    fn has(&self, i: usize) -> bool {
        self.0.get(i / 64).is_some_and(|word| word & (1 << (i % 64)) != 0)
    }

    fn union(&mut self, other: &Bits) {
        for (a, b) in self.0.iter_mut().zip(&other.0) {
            *a |= b;
        }
    }
}

impl GroupLog {
    /// An empty log for `group`.
    pub fn new(group: GroupId) -> Self {
        Self { group, ops: BTreeMap::new() }
    }

    /// The group.
    pub fn group(&self) -> GroupId {
        self.group
    }

    /// How many changes it holds.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Whether it holds the change with this id.
    pub fn contains(&self, id: &OpId) -> bool {
        self.ops.contains_key(id)
    }

    /// The change with this id.
    pub fn get(&self, id: &OpId) -> Option<&GroupOp> {
        self.ops.get(id)
    }

    /// Verifies a change ([`GroupOp::verify`]) and keeps it; refuses one of another group, and
    /// a new one once the log holds [`MAX_GROUP_OPS`].
    pub fn insert(&mut self, op: GroupOp) -> Result<Inserted, Error> {
        let id = op.verify()?;
        self.keep(id, op)
    }

    /// Keeps a change the caller verified before storing it (a node reloading its own store),
    /// without checking its signatures again; it must never be given a peer's bytes. Its id and
    /// group are still checked.
    pub fn insert_verified(&mut self, op: GroupOp) -> Result<Inserted, Error> {
        let id = op.id()?;
        self.keep(id, op)
    }

    fn keep(&mut self, id: OpId, op: GroupOp) -> Result<Inserted, Error> {
        if op.group()? != self.group {
            return Err(invalid("belongs to another group"));
        }
        if self.ops.contains_key(&id) {
            return Ok(Inserted::Known);
        }
        if self.ops.len() >= MAX_GROUP_OPS {
            return Err(invalid("would take the group past 4096 changes"));
        }
        self.ops.insert(id, op);
        Ok(Inserted::New)
    }

    /// Every change, by id.
    pub fn ops(&self) -> impl Iterator<Item = (&OpId, &GroupOp)> {
        self.ops.iter()
    }

    /// The ids that changes name as parents but that the log does not hold: what to ask for.
    pub fn missing(&self) -> Vec<OpId> {
        let mut missing = BTreeSet::new();
        for op in self.ops.values() {
            for parent in &op.body.parents {
                if !self.ops.contains_key(parent) {
                    missing.insert(*parent);
                }
            }
        }
        missing.into_iter().collect()
    }

    /// The changes to send someone who asked for `wanted` and holds `have` (its heads): the
    /// wanted changes this log holds and their ancestors, less `have` and its ancestors, in
    /// causal order (Lamport number, then id).
    pub fn answer(&self, wanted: &[OpId], have: &[OpId]) -> Vec<GroupOp> {
        let known = self.ancestry(have.iter().filter(|id| self.ops.contains_key(*id)).copied());
        let wanted = self.ancestry(wanted.iter().filter(|id| self.ops.contains_key(*id)).copied());
        self.in_order(wanted.difference(&known))
    }

    /// The changes that are not `op` or one of its ancestors, in causal order: what a member
    /// added by `op` may have missed, because its adder did not hold them.
    pub fn not_ancestors_of(&self, op: &OpId) -> Vec<GroupOp> {
        let ancestry = self.ancestry(std::iter::once(*op));
        let rest: BTreeSet<OpId> =
            self.ops.keys().filter(|id| !ancestry.contains(*id)).copied().collect();
        self.in_order(rest.iter())
    }

    /// Every change, in causal order.
    pub fn all_in_order(&self) -> Vec<GroupOp> {
        self.in_order(self.ops.keys())
    }

    /// The given ids and all their ancestors that the log holds.
    fn ancestry(&self, from: impl Iterator<Item = OpId>) -> BTreeSet<OpId> {
        let mut seen = BTreeSet::new();
        let mut stack: Vec<OpId> = from.collect();
        while let Some(id) = stack.pop() {
            if !seen.insert(id) {
                continue;
            }
            if let Some(op) = self.ops.get(&id) {
                stack.extend(op.body.parents.iter().filter(|p| self.ops.contains_key(*p)));
            }
        }
        seen
    }

    fn in_order<'a>(&self, ids: impl Iterator<Item = &'a OpId>) -> Vec<GroupOp> {
        let mut ops: Vec<(&OpId, &GroupOp)> =
            ids.filter_map(|id| self.ops.get_key_value(id)).collect();
        ops.sort_by_key(|(id, op)| (op.body.lamport, **id));
        ops.into_iter().map(|(_, op)| op.clone()).collect()
    }

    /// The group's state: the rule of this module's documentation, applied to the changes the
    /// log holds. `None` while the log holds no creation of this group. Deterministic: two logs
    /// with the same changes give the same state.
    pub fn resolve(&self) -> Option<GroupState> {
        // Rule 1: the complete, well-formed changes in causal order. Sorted by (number, id),
        // each change's parents come before it if it is well formed, so one pass decides.
        let mut order: Vec<(&OpId, &GroupOp)> = self.ops.iter().collect();
        order.sort_by_key(|(id, op)| (op.body.lamport, **id));
        let mut index: HashMap<OpId, usize> = HashMap::new();
        let mut good: Vec<(OpId, &GroupOp)> = Vec::new();
        let mut root = None;
        for (id, op) in order {
            let ok = match op.body.action {
                Action::Create { .. } => {
                    let ours = group_of_create(id) == self.group;
                    if ours && root.is_none() {
                        root = Some(*id);
                    }
                    ours && root == Some(*id)
                }
                _ => {
                    let parents: Option<Vec<u64>> = op
                        .body
                        .parents
                        .iter()
                        .map(|p| index.get(p).map(|&i| good[i].1.body.lamport))
                        .collect();
                    parents.is_some_and(|lamports| {
                        lamports
                            .iter()
                            .max()
                            .is_some_and(|max| max.checked_add(1) == Some(op.body.lamport))
                    })
                }
            };
            if ok {
                index.insert(*id, good.len());
                good.push((*id, op));
            }
        }
        root?;
        let n = good.len();
        // The ancestors of each complete change, as bits over `good`.
        let mut ancestors: Vec<Bits> = Vec::with_capacity(n);
        let mut has_child = vec![false; n];
        for (_, op) in &good {
            let mut bits = Bits::new(n);
            for parent in &op.body.parents {
                if let Some(&p) = index.get(parent) {
                    bits.set(p);
                    if let Some(parent_bits) = ancestors.get(p) {
                        bits.union(parent_bits);
                    }
                    has_child[p] = true;
                }
            }
            ancestors.push(bits);
        }
        let heads: Vec<OpId> = {
            let mut heads: Vec<OpId> =
                good.iter().zip(&has_child).filter(|(_, c)| !**c).map(|((id, _), _)| *id).collect();
            heads.sort();
            heads
        };
        let lamport = good.iter().map(|(_, op)| op.body.lamport).max().unwrap_or(0);
        // Rules 2 and 3: fold; when a change takes a member's right away, throw out their
        // changes that needed it and are not its ancestors, and fold again without them. Each
        // round throws out at least one change, so there are at most `n` rounds.
        let mut excluded = vec![false; n];
        'fold: loop {
            let mut state = Fold::default();
            for i in 0..n {
                if excluded[i] {
                    continue;
                }
                let Some(revoked) = state.apply(good[i].1, i) else { continue };
                let (loser, right) = revoked;
                let stale: Vec<usize> = state
                    .applied
                    .iter()
                    .copied()
                    .filter(|&a| {
                        a != i
                            && good[a].1.body.author == loser
                            && !ancestors[i].has(a)
                            && (right == Revoked::Membership || needs_admin(&good[a].1.body.action))
                    })
                    .collect();
                if !stale.is_empty() {
                    for a in stale {
                        excluded[a] = true;
                    }
                    continue 'fold;
                }
            }
            let applied: BTreeSet<usize> = state.applied.iter().copied().collect();
            return Some(GroupState {
                group: self.group,
                name: state.name,
                creator: state.creator,
                members: state.members,
                applied: state.applied.iter().map(|&i| good[i].0).collect(),
                ignored: (0..n).filter(|i| !applied.contains(i)).map(|i| good[i].0).collect(),
                heads,
                lamport,
            });
        }
    }
}

/// Whether a change needs its author to be an admin.
fn needs_admin(action: &Action) -> bool {
    matches!(action, Action::Add { .. } | Action::Remove { .. } | Action::Rename { .. })
}

/// The state while folding.
#[derive(Default)]
struct Fold {
    name: String,
    creator: IdentityKey,
    members: BTreeMap<IdentityKey, Member>,
    created: bool,
    /// Indices of the changes that took effect, in order.
    applied: Vec<usize>,
}

impl Fold {
    /// Applies change `i` if its author may make it; returns whose right it took away, if any.
    fn apply(&mut self, op: &GroupOp, i: usize) -> Option<(IdentityKey, Revoked)> {
        let author = op.body.author;
        let admin = self.members.get(&author).is_some_and(|m| m.admin);
        let member = self.members.contains_key(&author);
        let mut revoked = None;
        match &op.body.action {
            Action::Create { name, creator, .. } => {
                if self.created {
                    return None;
                }
                self.created = true;
                self.name = name.clone();
                self.creator = author;
                self.members.insert(author, creator.clone());
            }
            Action::Add { member: added } if admin => {
                let key = added.certificate.identity_key;
                match self.members.get(&key) {
                    Some(old) if old.admin && !added.admin => {
                        revoked = Some((key, Revoked::Admin));
                    }
                    None if self.members.len() >= MAX_GROUP_MEMBERS => return None,
                    Some(_) | None => {}
                }
                self.members.insert(key, added.clone());
            }
            Action::Remove { identity } if admin => {
                self.members.remove(identity)?;
                revoked = Some((*identity, Revoked::Membership));
            }
            Action::Rename { name } if admin => self.name = name.clone(),
            Action::Leave if member => {
                self.members.remove(&author);
                revoked = Some((author, Revoked::Membership));
            }
            _ => return None,
        }
        self.applied.push(i);
        revoked
    }
}

#[cfg(test)]
mod tests;
