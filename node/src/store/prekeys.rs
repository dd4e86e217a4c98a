//! The `prekeys` and `hybrid_prekeys` tables: our signed prekeys (format 3) and hybrid prekeys
//! (format 4) with their secrets, kept until first contacts sealed to them can no longer arrive;
//! and the `secrets` table of the node's own long-lived secrets besides `identity.key`.

use kolokol_protocol::prekey::{HybridPrekey, HybridPrekeySecret};
use rusqlite::{OptionalExtension, params};

use super::{CachedStatements, Store};
use crate::error::Result;

impl Store {
    /// Stores a new signed prekey with its secret.
    pub fn save_prekey(
        &self,
        key_id: &[u8; 8],
        secret: &[u8; 32],
        prekey: &kolokol_protocol::prekey::SignedPrekey,
    ) -> Result<()> {
        self.conn()
            .exec(
                "INSERT OR REPLACE INTO prekeys (key_id, secret, public, created_at, expires_at, signature)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    key_id.as_slice(),
                    secret.as_slice(),
                    prekey.public.as_slice(),
                    prekey.created_at as i64,
                    prekey.expires_at as i64,
                    prekey.signature.as_slice()
                ],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// The newest signed prekey.
    pub fn newest_prekey(&self) -> Result<Option<kolokol_protocol::prekey::SignedPrekey>> {
        self.conn()
            .row(
                "SELECT public, created_at, expires_at, signature FROM prekeys
                 ORDER BY created_at DESC LIMIT 1",
                [],
                |r| {
                    let public: Vec<u8> = r.get(0)?;
                    let signature: Vec<u8> = r.get(3)?;
                    Ok(kolokol_protocol::prekey::SignedPrekey {
                        public: public.try_into().unwrap_or([0; 32]),
                        created_at: r.get::<_, i64>(1)? as u64,
                        expires_at: r.get::<_, i64>(2)? as u64,
                        signature: signature.try_into().unwrap_or([0; 64]),
                    })
                },
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    /// The secret of the prekey with this id, if we still hold it.
    pub fn prekey_secret(&self, key_id: &[u8; 8]) -> Result<Option<zeroize::Zeroizing<[u8; 32]>>> {
        self.conn()
            .row("SELECT secret FROM prekeys WHERE key_id = ?1", [key_id.as_slice()], |r| {
                let secret: Vec<u8> = r.get(0)?;
                Ok(zeroize::Zeroizing::new(secret.try_into().unwrap_or([0; 32])))
            })
            .optional()
            .map_err(|e| self.err(e))
    }

    /// Stores a new hybrid prekey with its secrets under its format 4 key id.
    pub fn save_hybrid_prekey(
        &self,
        key_id: &[u8; 8],
        secret: &HybridPrekeySecret,
        prekey: &HybridPrekey,
    ) -> Result<()> {
        let encoded = kolokol_protocol::codec::encode(prekey)?;
        let conn = self.conn();
        self.forget_newest_hybrid();
        conn.exec(
            "INSERT OR REPLACE INTO hybrid_prekeys
                     (key_id, x25519, kem_seed, prekey, created_at, expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                key_id.as_slice(),
                secret.x25519.as_slice(),
                secret.kem_seed.as_slice(),
                encoded,
                prekey.created_at as i64,
                prekey.expires_at as i64
            ],
        )
        .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// The newest hybrid prekey, for invites, first contacts and the presence record: read
    /// once, then remembered until the table is written.
    pub fn newest_hybrid_prekey(&self) -> Result<Option<HybridPrekey>> {
        let conn = self.conn();
        if let Some(newest) = self.newest_hybrid.lock().unwrap_or_else(|p| p.into_inner()).as_ref()
        {
            return Ok(newest.clone());
        }
        let bytes: Option<Vec<u8>> = conn
            .row("SELECT prekey FROM hybrid_prekeys ORDER BY created_at DESC LIMIT 1", [], |r| {
                r.get(0)
            })
            .optional()
            .map_err(|e| self.err(e))?;
        let newest = match bytes {
            Some(b) => Some(kolokol_protocol::codec::decode("hybrid prekey", &b)?),
            None => None,
        };
        *self.newest_hybrid.lock().unwrap_or_else(|p| p.into_inner()) = Some(newest.clone());
        Ok(newest)
    }

    /// Forgets the remembered newest hybrid prekey: called with the connection held, before a
    /// write to its table.
    fn forget_newest_hybrid(&self) {
        *self.newest_hybrid.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// The hybrid prekey with this format 4 key id and its secrets, if we still hold them.
    pub fn hybrid_prekey(
        &self,
        key_id: &[u8; 8],
    ) -> Result<Option<(HybridPrekey, HybridPrekeySecret)>> {
        type Row = (Vec<u8>, zeroize::Zeroizing<Vec<u8>>, zeroize::Zeroizing<Vec<u8>>);
        let row: Option<Row> = self
            .conn()
            .row(
                "SELECT prekey, x25519, kem_seed FROM hybrid_prekeys WHERE key_id = ?1",
                [key_id.as_slice()],
                |r| {
                    Ok((
                        r.get(0)?,
                        zeroize::Zeroizing::new(r.get(1)?),
                        zeroize::Zeroizing::new(r.get(2)?),
                    ))
                },
            )
            .optional()
            .map_err(|e| self.err(e))?;
        let Some((prekey, x25519, kem_seed)) = row else { return Ok(None) };
        let prekey: HybridPrekey = kolokol_protocol::codec::decode("hybrid prekey", &prekey)?;
        let mut secret = HybridPrekeySecret {
            x25519: zeroize::Zeroizing::new([0; 32]),
            kem_seed: zeroize::Zeroizing::new([0; kolokol_protocol::kem::SEED_LEN]),
        };
        // A row of the wrong length is damaged: reported, not opened with zeros.
        if x25519.len() != 32 || kem_seed.len() != kolokol_protocol::kem::SEED_LEN {
            return Err(self.err(rusqlite::Error::InvalidColumnType(
                1,
                "hybrid prekey secret".into(),
                rusqlite::types::Type::Blob,
            )));
        }
        secret.x25519.copy_from_slice(&x25519);
        secret.kem_seed.copy_from_slice(&kem_seed);
        Ok(Some((prekey, secret)))
    }

    /// One of the node's own secrets by name, if stored.
    pub fn secret(&self, name: &str) -> Result<Option<zeroize::Zeroizing<Vec<u8>>>> {
        self.conn()
            .row("SELECT value FROM secrets WHERE name = ?1", [name], |r| r.get::<_, Vec<u8>>(0))
            .optional()
            .map(|v| v.map(zeroize::Zeroizing::new))
            .map_err(|e| self.err(e))
    }

    /// Stores one of the node's own secrets, unless one of that name exists; returns the one
    /// stored (the existing one if there was one).
    pub fn keep_secret(&self, name: &str, value: &[u8]) -> Result<zeroize::Zeroizing<Vec<u8>>> {
        self.conn()
            .exec(
                "INSERT OR IGNORE INTO secrets (name, value) VALUES (?1, ?2)",
                params![name, value],
            )
            .map_err(|e| self.err(e))?;
        self.secret(name)?.ok_or_else(|| self.err(rusqlite::Error::QueryReturnedNoRows))
    }

    /// Deletes prekeys of both kinds (secrets included) that expired before `before`, and
    /// erases them from the write-ahead log at once (a truncating checkpoint: this happens
    /// about weekly); returns how many.
    pub fn delete_prekeys_expired_before(&self, before: u64) -> Result<usize> {
        let deleted = {
            let conn = self.conn();
            let plain = conn
                .exec("DELETE FROM prekeys WHERE expires_at < ?1", [before as i64])
                .map_err(|e| self.err(e))?;
            self.forget_newest_hybrid();
            let hybrid = conn
                .exec("DELETE FROM hybrid_prekeys WHERE expires_at < ?1", [before as i64])
                .map_err(|e| self.err(e))?;
            plain + hybrid
        };
        if deleted > 0 {
            self.deleted_keys();
            self.checkpoint()?;
        }
        Ok(deleted)
    }
}
