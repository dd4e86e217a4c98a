//! The slow key schedules under paused time: a year's certificate, a week's prekey.

use std::time::Duration;

use kolokol_protocol::envelope;
use kolokol_protocol::identity::Identity;

use crate::clock::Clock;
use crate::keys::{
    CERTIFICATE_LIFETIME, CERTIFICATE_RENEW_BEFORE, Keys, PREKEY_LIFETIME, PREKEY_ROTATION,
    PREKEY_SECRET_GRACE,
};
use crate::store::Store;

const DAY: Duration = Duration::from_secs(24 * 60 * 60);

fn keys() -> (tempfile::TempDir, Store, Clock, Keys) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("kolokol.db")).unwrap();
    let clock = Clock::tokio();
    let keys =
        Keys::new(Identity::from_secrets([1; 32], [2; 32]), store.clone(), clock.clone()).unwrap();
    (dir, store, clock, keys)
}

#[tokio::test(start_paused = true)]
async fn the_certificate_is_renewed_a_month_before_it_ends() {
    let (_dir, _store, clock, keys) = keys();
    let first = keys.certificate();
    assert_eq!(first.not_after, clock.now_secs() + CERTIFICATE_LIFETIME.as_secs());
    // With more than the renewal margin left, nothing happens.
    tokio::time::advance(CERTIFICATE_LIFETIME - CERTIFICATE_RENEW_BEFORE - DAY).await;
    assert!(!keys.renew_certificate().unwrap());
    assert_eq!(keys.certificate(), first);
    // Within the margin, a fresh certificate for another year.
    tokio::time::advance(2 * DAY).await;
    assert!(keys.renew_certificate().unwrap());
    let renewed = keys.certificate();
    assert_eq!(renewed.not_after, clock.now_secs() + CERTIFICATE_LIFETIME.as_secs());
    assert!(renewed.verify(clock.now_secs()).is_ok());
    assert!(!keys.renew_certificate().unwrap(), "renewed twice");
}

#[tokio::test(start_paused = true)]
async fn a_prekey_is_made_weekly_and_its_secret_deleted_after_expiry_and_grace() {
    let (_dir, store, clock, keys) = keys();
    let first = store.newest_prekey().unwrap().expect("a prekey at start");
    let first_id = envelope::key_id(&first.public);
    assert_eq!(first.created_at, clock.now_secs());
    assert_eq!(first.expires_at, first.created_at + PREKEY_LIFETIME.as_secs());

    tokio::time::advance(PREKEY_ROTATION - DAY).await;
    keys.rotate_prekeys().unwrap();
    assert_eq!(store.newest_prekey().unwrap(), Some(first.clone()), "rotated early");

    tokio::time::advance(DAY).await;
    keys.rotate_prekeys().unwrap();
    let second = store.newest_prekey().unwrap().expect("a second prekey");
    assert_ne!(second, first);
    assert!(store.prekey_secret(&first_id).unwrap().is_some(), "the old secret went too soon");

    // The first prekey's secret outlives its expiry by the grace period, then goes.
    let gone_at = first.expires_at + PREKEY_SECRET_GRACE.as_secs();
    tokio::time::advance(Duration::from_secs(gone_at - clock.now_secs())).await;
    keys.rotate_prekeys().unwrap();
    assert!(store.prekey_secret(&first_id).unwrap().is_some(), "deleted at the boundary");
    tokio::time::advance(Duration::from_secs(1)).await;
    keys.rotate_prekeys().unwrap();
    assert!(store.prekey_secret(&first_id).unwrap().is_none(), "the expired secret is kept");
}
