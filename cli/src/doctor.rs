//! `kolokol doctor`: the one check only the CLI can make, that a daemon answers on the control
//! socket, then the daemon's own checks (`node/src/doctor.rs`), printed in order; the command
//! fails when any check failed.

use std::process::ExitCode;

use kolokol_protocol::control::{DoctorCheck, DoctorReport, method};
use serde_json::json;

use crate::client::Client;
use crate::failure::one_line;
use crate::{output, print_json};

pub(crate) async fn doctor(dir: &std::path::Path, json_out: bool) -> anyhow::Result<ExitCode> {
    let daemon = match Client::connect(dir).await {
        Ok(client) => Ok(client),
        Err(e) => Err(DoctorCheck {
            name: "daemon".into(),
            status: "fail".into(),
            detail: one_line(&e),
            hint: Some(format!(
                "start it: kolokol --data-dir {} node --bootstrap <relay address> (or: relay --listen ...)",
                dir.display()
            )),
        }),
    };
    let mut checks = Vec::new();
    match daemon {
        Ok(mut client) => {
            checks.push(DoctorCheck {
                name: "daemon".into(),
                status: "ok".into(),
                detail: format!("running, control socket in {}", dir.display()),
                hint: None,
            });
            let report: DoctorReport = client.call(method::DOCTOR, json!({})).await?;
            checks.extend(report.checks);
        }
        Err(check) => checks.push(check),
    }
    let failed = checks.iter().any(|c| c.status == "fail");
    if json_out {
        print_json(&DoctorReport { checks })?;
    } else {
        say!("{}", output::doctor(&checks))?;
    }
    Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}
