//! The stealth listener's secrets: the HTTP paths that lead to the tunnel, kept in
//! `stealth/secrets` in the data directory.
//!
//! One secret is current: it is the one the node advertises in its addresses. Retired secrets
//! stay valid until their date passes, so invites and bundles that carry them keep working
//! while the new address spreads. The file is text, one secret per line:
//! `<path> current` or `<path> <unix seconds until which it is accepted>`; `#` starts a comment.

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use rand::RngCore as _;

use crate::error::{Error, Result};
use crate::transport::address::valid_path;

/// The file, relative to the data directory.
pub const SECRETS_FILE: &str = "stealth/secrets";

/// Secrets kept at once (current and retired); older retired ones are dropped first.
pub const MAX_SECRETS: usize = 16;

/// Random bytes in a generated secret: 128 bits, written as 22 base64url characters.
pub const SECRET_BYTES: usize = 16;

/// How long a retired secret stays valid unless the operator says otherwise.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(14 * 24 * 60 * 60);

/// The secrets a listener accepts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Secrets {
    /// The advertised secret.
    pub current: String,
    /// Retired secrets and the unix second until which each is accepted.
    pub retired: Vec<(String, u64)>,
}

impl Secrets {
    /// Every secret accepted at `now`, current first.
    pub fn accepted(&self, now: u64) -> Vec<String> {
        std::iter::once(self.current.clone())
            .chain(self.retired.iter().filter(|(_, until)| *until > now).map(|(s, _)| s.clone()))
            .collect()
    }

    /// A fresh random secret.
    pub fn generate() -> String {
        let mut bytes = [0u8; SECRET_BYTES];
        rand::thread_rng().fill_bytes(&mut bytes);
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }

    /// Parses the file's text.
    pub fn parse(text: &str) -> std::result::Result<Self, String> {
        let mut current = None;
        let mut retired = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let mut words = line.split_whitespace();
            let (Some(path), Some(when), None) = (words.next(), words.next(), words.next()) else {
                return Err(format!(
                    "line {}: expected `<path> current` or `<path> <unix seconds>`",
                    n + 1
                ));
            };
            if !valid_path(path) {
                return Err(format!(
                    "line {}: {path:?} is not a usable secret path (16 to 128 characters of A-Z a-z 0-9 - . _ ~ /, not starting with /)",
                    n + 1
                ));
            }
            if when == "current" {
                if current.replace(path.to_owned()).is_some() {
                    return Err(format!("line {}: a second `current` secret", n + 1));
                }
            } else {
                let until: u64 = when.parse().map_err(|_| {
                    format!("line {}: {when:?} is neither `current` nor unix seconds", n + 1)
                })?;
                retired.push((path.to_owned(), until));
            }
            if retired.len() + usize::from(current.is_some()) > MAX_SECRETS {
                return Err(format!("more than {MAX_SECRETS} secrets"));
            }
        }
        let current = current.ok_or("no `current` secret")?;
        Ok(Self { current, retired })
    }

    /// The file's text.
    pub fn to_text(&self) -> String {
        let mut text = String::from(
            "# Kolokol stealth transport secrets: the HTTP paths that lead to the tunnel.\n\
             # `current` is advertised; the others are accepted until the unix second given.\n",
        );
        text.push_str(&format!("{} current\n", self.current));
        for (path, until) in &self.retired {
            text.push_str(&format!("{path} {until}\n"));
        }
        text
    }

    /// Retires the current secret (valid for `grace` more) and makes `new` current; drops
    /// secrets that expired and, past [`MAX_SECRETS`], the oldest.
    pub fn rotate(&mut self, new: String, grace: Duration, now: u64) {
        let old = std::mem::replace(&mut self.current, new);
        self.retired.push((old, now.saturating_add(grace.as_secs())));
        self.retired.retain(|(_, until)| *until > now);
        self.retired.sort_by_key(|(_, until)| std::cmp::Reverse(*until));
        self.retired.truncate(MAX_SECRETS - 1);
    }

    /// Loads the data directory's secrets, creating them on first use, and rotates them first
    /// if `rotate` is set (to `chosen` if the operator named the new secret).
    pub fn load(
        data_dir: &Path,
        rotate: bool,
        chosen: Option<&str>,
        grace: Duration,
        now: u64,
    ) -> Result<Self> {
        let path = data_dir.join(SECRETS_FILE);
        let bad = |detail: String| Error::Config { path: path.clone(), detail };
        if let Some(c) = chosen
            && !valid_path(c)
        {
            return Err(bad(format!(
                "the secret {c:?} is not a usable path: 16 to 128 characters of A-Z a-z 0-9 - . _ ~ /, not starting with /"
            )));
        }
        let mut changed = false;
        let mut secrets = match std::fs::read_to_string(&path) {
            Ok(text) => Self::parse(&text).map_err(bad)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                changed = true;
                Self {
                    current: chosen.map(str::to_owned).unwrap_or_else(Self::generate),
                    retired: Vec::new(),
                }
            }
            Err(e) => return Err(Error::io("cannot read", &path, e)),
        };
        if rotate && !changed {
            let new = chosen.map(str::to_owned).unwrap_or_else(Self::generate);
            secrets.rotate(new, grace, now);
            changed = true;
        } else if let Some(c) = chosen
            && c != secrets.current
            && !changed
        {
            // A secret named in the config but not yet current becomes current: the operator
            // changed it on purpose, and the old one keeps working through the grace period.
            secrets.rotate(c.to_owned(), grace, now);
            changed = true;
        }
        let before = secrets.retired.len();
        secrets.retired.retain(|(_, until)| *until > now);
        if changed || before != secrets.retired.len() {
            write_private(&path, secrets.to_text().as_bytes())?;
        }
        Ok(secrets)
    }
}

/// Writes `bytes` to `path` (creating its directory), readable by the owner only, through a
/// temporary file so that a crash leaves the old file or the new one, never half of one.
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| Error::io("cannot create", dir, e))?;
    }
    let tmp: PathBuf = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| Error::io("cannot write", &tmp, e))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|e| Error::io("cannot write", &tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io("cannot write", path, e))
}
