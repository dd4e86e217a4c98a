//! `kolokol service install`: runs a node as a systemd user service, or a relay as a system
//! service with the hardening of docs/RELAY.md, and says what it did.
//!
//! The unit texts are made by [`user_unit`] and [`relay_unit`]; a test checks that the relay
//! unit in docs/RELAY.md is exactly what [`relay_unit`] writes, so the two cannot drift apart.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;

use crate::failure::Refused;

/// The user unit's file name.
pub const USER_UNIT: &str = "kolokol.service";

/// The relay's system unit's file name.
pub const RELAY_UNIT: &str = "kolokol-relay.service";

/// Where system units go.
pub const SYSTEM_UNIT_DIR: &str = "/etc/systemd/system";

/// The unit of a user's node: started with the user's session manager, restarted if it stops
/// on its own, its files the user's alone.
pub fn user_unit(exe: &Path, data_dir: &Path, node_args: &[String]) -> String {
    let mut exec = format!(
        "{} --data-dir {} node",
        quote(&exe.to_string_lossy()),
        quote(&data_dir.to_string_lossy())
    );
    for arg in node_args {
        exec.push(' ');
        exec.push_str(&quote(arg));
    }
    format!(
        "[Unit]
Description=Kolokol node (peer-to-peer messenger) for {data_dir}
After=network-online.target
Wants=network-online.target

[Service]
Type=simple
# The node reads kolokol.toml in its data directory for options not given here.
ExecStart={exec}
# SIGTERM shuts the node down cleanly; restart it if it ever stops on its own.
Restart=on-failure
RestartSec=5s
TimeoutStopSec=30s
UMask=0077
NoNewPrivileges=yes

[Install]
WantedBy=default.target
",
        data_dir = data_dir.display().to_string().replace('%', "%%")
    )
}

/// The system unit of a community relay, running as the `kolokol` user with its state in
/// `/var/lib/kolokol` and the hardening of docs/RELAY.md; `relay_args` follow `relay`.
pub fn relay_unit(exe: &Path, relay_args: &[String]) -> String {
    let mut exec = format!("{} --log-format json relay", quote(&exe.to_string_lossy()));
    for arg in relay_args {
        exec.push(' ');
        exec.push_str(&quote(arg));
    }
    format!(
        "[Unit]
Description=Kolokol community relay
After=network-online.target
Wants=network-online.target

[Service]
Type=simple
User=kolokol
Group=kolokol
# The data directory: identity.key, kolokol.db, kolokol.toml, control.sock.
Environment=KOLOKOL_HOME=/var/lib/kolokol
StateDirectory=kolokol
StateDirectoryMode=0700
ExecStart={exec}
# The stealth transport's default port, 443, needs this capability (or it falls back to 4443).
AmbientCapabilities=CAP_NET_BIND_SERVICE
# SIGTERM shuts the relay down cleanly; restart it if it ever stops on its own.
Restart=on-failure
RestartSec=5s
TimeoutStopSec=30s
LimitNOFILE=65536
UMask=0077

# Hardening: the relay needs the network, its state directory and nothing else.
NoNewPrivileges=yes
CapabilityBoundingSet=CAP_NET_BIND_SERVICE
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
PrivateDevices=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
ProtectProc=invisible
ProcSubset=pid
# AF_NETLINK lets libp2p watch the interfaces of a 0.0.0.0 listener; AF_UNIX is the control socket.
RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX AF_NETLINK
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
MemoryDenyWriteExecute=yes
SystemCallArchitectures=native
SystemCallFilter=@system-service
SystemCallFilter=~@privileged

[Install]
WantedBy=multi-user.target
"
    )
}

/// A word of an `ExecStart=` line: as is when it needs no quoting, else in double quotes with
/// `\` and `"` escaped (systemd's rules); `%` is doubled, since systemd expands it.
fn quote(word: &str) -> String {
    let word = word.replace('%', "%%");
    if !word.is_empty()
        && word.chars().all(|c| c.is_ascii_alphanumeric() || "/-_.:=,+@%".contains(c))
    {
        return word;
    }
    format!("\"{}\"", word.replace('\\', "\\\\").replace('"', "\\\""))
}

/// Where a user's units go: `$XDG_CONFIG_HOME/systemd/user`, else `~/.config/systemd/user`.
fn user_unit_dir() -> anyhow::Result<PathBuf> {
    if let Some(config) = std::env::var_os("XDG_CONFIG_HOME").filter(|c| !c.is_empty()) {
        return Ok(PathBuf::from(config).join("systemd/user"));
    }
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .context("no home directory (HOME is not set) to put a user unit in")?;
    Ok(PathBuf::from(home).join(".config/systemd/user"))
}

/// Whether `systemctl` (with `--user` for a user's manager) can talk to a systemd; the error
/// says why not.
fn systemd_available(user: bool) -> Result<(), String> {
    let mut check = Command::new("systemctl");
    if user {
        check.arg("--user");
    }
    match check.arg("show-environment").output() {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err("there is no systemctl on PATH".into())
        }
        Err(e) => Err(format!("systemctl cannot run: {e}")),
        Ok(out) if !out.status.success() => Err(format!(
            "systemctl{} cannot reach a systemd: {}",
            if user { " --user" } else { "" },
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Ok(_) => Ok(()),
    }
}

/// Runs one systemctl command, saying it first.
fn systemctl(user: bool, args: &[&str]) -> anyhow::Result<()> {
    let mut command = Command::new("systemctl");
    if user {
        command.arg("--user");
    }
    command.args(args);
    println!("running: systemctl{} {}", if user { " --user" } else { "" }, args.join(" "));
    let status = command.status().context("cannot run systemctl")?;
    anyhow::ensure!(status.success(), "systemctl {} failed ({status})", args.join(" "));
    Ok(())
}

/// `kolokol service install`: writes the unit (the user's node, or with `relay` the system's
/// relay), reloads systemd and enables and starts it, saying each step; with `dry_run`, only
/// prints the unit and where it would go.
pub fn install(data_dir: &Path, relay: bool, dry_run: bool, args: &[String]) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("cannot tell where the kolokol binary is")?;
    let data_dir = std::path::absolute(data_dir).context("cannot make the data dir absolute")?;
    let (unit, path, user, name) = if relay {
        (relay_unit(&exe, args), Path::new(SYSTEM_UNIT_DIR).join(RELAY_UNIT), false, RELAY_UNIT)
    } else {
        (user_unit(&exe, &data_dir, args), user_unit_dir()?.join(USER_UNIT), true, USER_UNIT)
    };
    if dry_run {
        println!("# {} (not written: --dry-run)", path.display());
        print!("{unit}");
        return Ok(());
    }
    if let Err(why) = systemd_available(user) {
        return Err(Refused {
            code: "no_systemd",
            message: format!(
                "systemd is not available here ({why}); nothing was written. Run `kolokol {}` under the supervisor you have, or see the unit with --dry-run",
                if relay { "relay" } else { "node" }
            ),
        }
        .into());
    }
    if relay {
        // The unit runs as this user, which must exist first.
        println!(
            "the unit runs as the system user `kolokol`; create it if needed: useradd --system --home-dir /var/lib/kolokol --shell /usr/sbin/nologin kolokol"
        );
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    std::fs::write(&path, &unit).with_context(|| format!("cannot write {}", path.display()))?;
    println!("wrote {}", path.display());
    systemctl(user, &["daemon-reload"])?;
    systemctl(user, &["enable", "--now", name])?;
    if user {
        println!(
            "the node runs now and starts with your session; its log: journalctl --user -u {name} -f"
        );
        println!(
            "to keep it running while you are logged out: loginctl enable-linger {}",
            std::env::var("USER").unwrap_or_else(|_| "$USER".into())
        );
    } else {
        println!("the relay runs now and starts at boot; its log: journalctl -u {name} -f");
    }
    Ok(())
}

#[cfg(test)]
mod tests;
