//! `kolokol group ...`: each subcommand is one control-API call (`show` makes a second, to
//! mark what it showed read); the group's work is the daemon's.

use std::process::ExitCode;

use kolokol_protocol::control::{GroupChat, GroupInfo, GroupMembers, GroupReadResult, method};
use serde_json::json;

use crate::args::GroupCommand;
use crate::client::Client;
use crate::{output, rpc, show};

pub(crate) async fn group(
    dir: &std::path::Path,
    command: &GroupCommand,
    json_out: bool,
) -> anyhow::Result<ExitCode> {
    let changed = |info: &GroupInfo, what: &str| {
        format!(
            "{what} {} ({}, {})",
            output::visible(&info.name),
            info.id,
            output::count(u64::from(info.members), "member", "members")
        )
    };
    match command {
        GroupCommand::Create { name, as_name } => {
            let info: GroupInfo =
                rpc(dir, method::GROUP_CREATE, json!({ "name": name, "as": as_name })).await?;
            show(json_out, &info, |i| changed(i, "created"))
        }
        GroupCommand::List => {
            let groups: Vec<GroupInfo> = rpc(dir, method::GROUP_LIST, json!({})).await?;
            show(json_out, &groups, |groups| {
                if groups.is_empty() {
                    "no groups yet (create one with: kolokol group create NAME)".into()
                } else {
                    groups.iter().map(output::group).collect::<Vec<_>>().join("\n")
                }
            })
        }
        GroupCommand::Invite { group, members, name, admin } => {
            let params =
                json!({ "group": group, "members": members, "name": name, "admin": admin });
            let info: GroupInfo = rpc(dir, method::GROUP_INVITE, params).await?;
            show(json_out, &info, |i| changed(i, "added to"))
        }
        GroupCommand::Remove { group, member } => {
            let info: GroupInfo =
                rpc(dir, method::GROUP_REMOVE, json!({ "group": group, "member": member })).await?;
            show(json_out, &info, |i| changed(i, "removed from"))
        }
        GroupCommand::Admin { group, member, revoke } => {
            let params = json!({ "group": group, "member": member, "admin": !revoke });
            let info: GroupInfo = rpc(dir, method::GROUP_ADMIN, params).await?;
            show(json_out, &info, |i| {
                let what = if *revoke { "is no longer an admin of" } else { "is now an admin of" };
                format!(
                    "{} {what} {} ({}, {})",
                    output::visible(member),
                    output::visible(&i.name),
                    i.id,
                    output::count(u64::from(i.admins), "admin", "admins")
                )
            })
        }
        GroupCommand::Leave { group, force } => {
            let params = json!({ "group": group, "force": force });
            let info: GroupInfo = rpc(dir, method::GROUP_LEAVE, params).await?;
            show(json_out, &info, |i| format!("left {} ({})", output::visible(&i.name), i.id))
        }
        GroupCommand::Rename { group, name } => {
            let info: GroupInfo =
                rpc(dir, method::GROUP_RENAME, json!({ "group": group, "name": name })).await?;
            show(json_out, &info, |i| changed(i, "renamed"))
        }
        GroupCommand::Members { group } => {
            let members: GroupMembers =
                rpc(dir, method::GROUP_MEMBERS, json!({ "group": group })).await?;
            show(json_out, &members, output::group_members)
        }
        GroupCommand::Show { group, limit, peek } => {
            let mut client = Client::connect(dir).await?;
            let chat: GroupChat = client
                .call(method::GROUP_MESSAGES, json!({ "group": group, "limit": limit }))
                .await?;
            let code = show(json_out, &chat, output::group_chat)?;
            if !peek {
                let _: GroupReadResult =
                    client.call(method::GROUP_READ, json!({ "group": chat.group.id })).await?;
            }
            Ok(code)
        }
    }
}
