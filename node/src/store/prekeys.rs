//! The `prekeys` table: our signed prekeys with their secrets, kept until first contacts sealed to
//! them can no longer arrive.

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

    /// Deletes prekeys (secrets included) that expired before `before`, and erases them from
    /// the write-ahead log at once (a truncating checkpoint: this happens about weekly);
    /// returns how many.
    pub fn delete_prekeys_expired_before(&self, before: u64) -> Result<usize> {
        let deleted = self
            .conn()
            .exec("DELETE FROM prekeys WHERE expires_at < ?1", [before as i64])
            .map_err(|e| self.err(e))?;
        if deleted > 0 {
            self.deleted_keys();
            self.checkpoint()?;
        }
        Ok(deleted)
    }
}
