//! What the user is shown of groups: their list, members, texts with their writers' names,
//! and the read marks.

use std::collections::HashMap;

use kolokol_protocol::control::{self, MessageState};
use kolokol_protocol::message::format_id;
use libp2p::PeerId;

use super::Groups;
use crate::error::Result;
use crate::store::{GroupRow, GroupTextRow};

impl Groups {
    /// Names to show for the people of a group.
    pub(super) fn names(&self, group: &[u8; 16]) -> Names {
        let mut names = Names { me: self.my_peer(), by_peer: HashMap::new() };
        if let Ok(people) = self.store().group_people(group) {
            for (peer, name) in people {
                if !name.is_empty() {
                    names.by_peer.insert(peer, name);
                }
            }
        }
        if let Ok(contacts) = self.store().contacts() {
            for c in contacts {
                names.by_peer.insert(c.peer_id, c.name);
            }
        }
        names
    }

    pub(super) fn text_view(
        &self,
        t: &GroupTextRow,
        names: &Names,
        group_name: &str,
    ) -> control::GroupText {
        let from_me = t.sender == self.my_peer();
        control::GroupText {
            id: format_id(&t.id),
            group: format_id(&t.group),
            group_name: group_name.to_owned(),
            from: names.of(&t.sender),
            from_peer_id: t.sender.to_string(),
            from_me,
            text: t.text.clone(),
            seq: t.seq,
            sent_at_ms: t.sent_at_ms,
            received_at_ms: t.received_at_ms,
            read_at_ms: if from_me { None } else { t.read_at_ms },
            missing_before: t.missing_before,
            delivered: None,
            recipients: None,
            truncated: false,
        }
    }

    /// A group as the control API shows it.
    pub(crate) fn info(&self, row: &GroupRow) -> Result<control::GroupInfo> {
        let members = self.store().group_members(&row.id)?;
        let me = self.my_peer();
        let (unread, last_at_ms) = self.store().group_unread(&row.id, &me)?;
        let log = self.load(&row.id)?;
        let state = log.resolve();
        Ok(control::GroupInfo {
            id: format_id(&row.id),
            name: row.name.clone(),
            status: row.status.as_str().into(),
            admin: members.iter().any(|m| m.peer_id == me && m.admin),
            members: members.len() as u32,
            admins: members.iter().filter(|m| m.admin).count() as u32,
            unread,
            last_at_ms,
            changes: log.len() as u64,
            version: state.as_ref().map_or(0, |s| s.lamport),
            heads: state
                .map(|s| s.heads.iter().map(|h| kolokol_protocol::identity::hex(h)).collect())
                .unwrap_or_default(),
        })
    }

    /// Every group.
    pub(crate) fn list(&self) -> Result<Vec<control::GroupInfo>> {
        self.store().groups()?.iter().map(|g| self.info(g)).collect()
    }

    /// A group's members.
    pub(crate) fn members(&self, group: &str) -> Result<control::GroupMembers> {
        let row = self.find(group)?;
        let me = self.my_peer();
        let names = self.names(&row.id);
        let members = self
            .store()
            .group_members(&row.id)?
            .into_iter()
            .map(|m| control::GroupMember {
                peer_id: m.peer_id.to_string(),
                name: names.of(&m.peer_id),
                listed_as: m.name,
                contact: m.contact,
                admin: m.admin,
                me: m.peer_id == me,
            })
            .collect();
        Ok(control::GroupMembers { group: self.info(&row)?, members })
    }

    /// A group as a conversation: its newest texts, each with its writer's name.
    pub(crate) fn messages(&self, group: &str, limit: u32) -> Result<control::GroupChat> {
        let row = self.find(group)?;
        let names = self.names(&row.id);
        let me = self.my_peer();
        let mut messages = Vec::new();
        for t in self.store().group_texts(&row.id, limit, &me)? {
            let mut view = self.text_view(&t, &names, &row.name);
            if t.sender == me {
                let copies = self.store().group_copy_states(&row.id, &t.id)?;
                view.recipients = Some(copies.len() as u32);
                view.delivered = Some(
                    copies
                        .iter()
                        .filter(|(_, s)| {
                            matches!(
                                s,
                                MessageState::Sent | MessageState::Delivered | MessageState::Read
                            )
                        })
                        .count() as u32,
                );
            }
            messages.push(view);
        }
        Ok(control::GroupChat { group: self.info(&row)?, messages })
    }

    /// Marks a group's texts read.
    pub(crate) fn read(&self, group: &str) -> Result<control::GroupReadResult> {
        let row = self.find(group)?;
        Ok(control::GroupReadResult {
            marked: self.store().group_mark_read(&row.id, self.0.parts.clock.now_ms())?,
        })
    }

    /// The newest texts of every group, oldest first.
    pub(crate) fn inbox(&self, limit: u32) -> Result<Vec<control::GroupText>> {
        let mut names: HashMap<[u8; 16], (Names, String)> = HashMap::new();
        let mut out = Vec::new();
        for t in self.store().group_inbox(limit, &self.my_peer())? {
            let (n, group_name) = names.entry(t.group).or_insert_with(|| {
                let name =
                    self.store().group(&t.group).ok().flatten().map(|g| g.name).unwrap_or_default();
                (self.names(&t.group), name)
            });
            out.push(self.text_view(&t, n, group_name));
        }
        Ok(out)
    }
}

/// The names to show for a group's people.
pub(super) struct Names {
    me: PeerId,
    by_peer: HashMap<PeerId, String>,
}

impl Names {
    /// A contact name, else the name the group lists them under, else the peer id.
    pub(super) fn of(&self, peer: &PeerId) -> String {
        match self.by_peer.get(peer) {
            Some(name) => name.clone(),
            None if *peer == self.me => "me".into(),
            None => peer.to_string(),
        }
    }
}
