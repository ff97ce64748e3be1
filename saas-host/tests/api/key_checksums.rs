//! API keys carry a checksum (an HMAC under a secret kept in the store):
//! a made-up, mistyped or forged key is refused without a storage read,
//! while a key issued before checksums existed (the shorter form) still
//! works after the change.

use qlearn_core::store::{KeyScope, NewApiKey};
use qlearn_core::tenancy::hash_api_key;
use serde_json::json;

use crate::common::{start, start_beside, Backend};
use crate::credentials::{key, key_lookups};
use crate::GET;

backend_tests!(forged_keys_cost_no_lookup_and_old_keys_still_work);

async fn forged_keys_cost_no_lookup_and_old_keys_still_work(b: Backend) {
    let Some(mut first) = start(b, "keychecksum").await else {
        return;
    };
    let (token, user_id, _) = first.register("checksum@example.com").await;
    let (real, _) = key(&first, &token, json!({"name": "new"})).await;
    assert_eq!(real.len(), 55, "qlk_, 43 random characters, 8 of checksum");
    // A key of the form issued before checksums, written as it was then.
    let old = format!("qlk_{}", "O1d-K3y_".repeat(6).get(..43).unwrap());
    first.stop().await.expect("stop");
    let (url, old_key) = (first.config.database_url.clone(), old.clone());
    tokio::task::spawn_blocking(move || {
        let store = saas_host::config::open_store(&url).expect("open");
        store
            .create_api_key(
                &user_id,
                NewApiKey {
                    name: "old",
                    prefix: &old_key[..12],
                    hash: &hash_api_key(&old_key),
                    scope: KeyScope::Full,
                    expires_at: None,
                },
                qlearn_core::store::now_unix(),
            )
            .expect("old key");
        store.flush().expect("flush");
    })
    .await
    .expect("store work");
    let s = start_beside(&first).await;
    assert_eq!(s.call(GET, "/me", Some(&old), None).await.status(), 200);
    assert_eq!(s.call(GET, "/me", Some(&real), None).await.status(), 200);

    let before = key_lookups(&s).await;
    let mut forged: Vec<String> = Vec::new();
    // The real key with one character of its random part or its checksum
    // changed, and made-up keys of the current length.
    for i in [4, 20, 46, 47, 50, 54] {
        let mut k = real.clone().into_bytes();
        k[i] = if k[i] == b'a' { b'b' } else { b'a' };
        forged.push(String::from_utf8(k).unwrap());
    }
    for i in 0..20 {
        forged.push(format!("qlk_{:0>51}", i));
    }
    // Wrong lengths and characters.
    forged.push("qlk_".into());
    forged.push("qlk_short".into());
    forged.push(format!("qlk_{}", "x".repeat(60)));
    forged.push(format!("qlk_{}.", "x".repeat(42)));
    for f in &forged {
        assert_eq!(s.call(GET, "/me", Some(f), None).await.status(), 401, "{f}");
    }
    assert_eq!(
        key_lookups(&s).await - before,
        0,
        "no store read for {} forged or malformed keys",
        forged.len()
    );
    // An unknown key of the old form is still looked up (once: then the
    // unknown-key memory answers).
    let unknown_old = format!("qlk_{}", "u".repeat(43));
    for _ in 0..3 {
        assert_eq!(
            s.call(GET, "/me", Some(&unknown_old), None).await.status(),
            401
        );
    }
    assert_eq!(key_lookups(&s).await - before, 1, "one read for it");
}
