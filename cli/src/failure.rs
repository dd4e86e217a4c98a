//! How a failed command is reported: one line `error: ...` on standard error, or with `--json`
//! one JSON object whose `code` is stable (docs/USAGE.md, "Errors as JSON"); and `Refused`, the
//! error of a command that refused its input before asking the daemon. It says how an error
//! reads, never whether a command fails or with which exit code: `main` decides that.

use serde_json::json;

use crate::client;

/// Whether the error is standard output's reader having gone away.
pub(crate) fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// Says a failed command's error on stderr: one line `error: ...`, or with `--json` one JSON
/// object `{"error": {"code": ..., "message": ..., "rpc_code"?: ...}}` whose `code` is stable
/// (documented in docs/USAGE.md) for scripts to match on.
pub(crate) fn report(e: &anyhow::Error, json_out: bool) {
    if json_out {
        let (code, rpc_code) = error_code(e);
        eprintln!("{}", json_error(code, rpc_code, &one_line(e)));
    } else {
        eprintln!("error: {}", one_line(e));
    }
}

/// The `--json` error line.
pub(crate) fn json_error(code: &str, rpc_code: Option<i64>, message: &str) -> String {
    let mut error = json!({ "code": code, "message": message });
    if let Some(rpc) = rpc_code {
        error["rpc_code"] = json!(rpc);
    }
    json!({ "error": error }).to_string()
}

/// A command that refused its input before asking the daemon, with the stable code the daemon
/// would have used.
#[derive(Debug)]
pub(crate) struct Refused {
    pub(crate) code: &'static str,
    pub(crate) message: String,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Refused {}

/// The stable code of an error (see docs/USAGE.md, "Errors as JSON"), and the daemon's
/// JSON-RPC code when the daemon refused the request.
fn error_code(e: &anyhow::Error) -> (&'static str, Option<i64>) {
    for cause in e.chain() {
        if let Some(rpc) = cause.downcast_ref::<client::RpcFailure>() {
            return (kolokol_protocol::control::code::name(rpc.code), Some(rpc.code));
        }
        if cause.downcast_ref::<client::NoDaemon>().is_some() {
            return ("daemon_not_running", None);
        }
        if let Some(refused) = cause.downcast_ref::<Refused>() {
            return (refused.code, None);
        }
        if let Some(node) = cause.downcast_ref::<kolokol_node::Error>() {
            return (
                match node {
                    kolokol_node::Error::AlreadyRunning(_) => "already_running",
                    kolokol_node::Error::Config { .. } => "bad_config",
                    kolokol_node::Error::Address(_) => "bad_address",
                    kolokol_node::Error::Network(_) => "network",
                    kolokol_node::Error::Store { .. } => "store",
                    kolokol_node::Error::Io { .. } => "io",
                    kolokol_node::Error::WrongKey(_) => "wrong_key",
                    kolokol_node::Error::Locked { .. } => "locked",
                    kolokol_node::Error::WeakPassphrase(_) => "bad_passphrase",
                    kolokol_node::Error::AlreadyEncrypted(_) => "already_encrypted",
                    kolokol_node::Error::NotEncrypted(_) => "not_encrypted",
                    _ => "failed",
                },
                None,
            );
        }
        if cause.downcast_ref::<std::io::Error>().is_some() {
            return ("io", None);
        }
    }
    ("failed", None)
}

/// The error and its causes on one line, without repeating a cause already in the message.
pub(crate) fn one_line(e: &anyhow::Error) -> String {
    let mut text = e.to_string();
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !text.contains(&c) {
            text = format!("{text}: {c}");
        }
    }
    text
}
