//! Devices over TLS; a plaintext client is refused.

use dekm_edge::fleet::{self, Synced};
use dekm_edge::model::fixture;
use dekm_edge::store::DeviceStore;
use dekm_server::{Auth, Limits, ServeConfig};

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_sync_over_tls_and_plaintext_is_refused() {
    let store = tempfile::tempdir().unwrap();
    let db = dekm_server::db::Database::open(store.path(), &Default::default()).unwrap();
    let registry = dekm_server::registry::Registry::open(store.path(), db).unwrap();
    let id = registry.add(&fixture::dense(3)).unwrap().id.clone();
    registry.activate(&id).unwrap();
    drop(registry);
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let (cert_pem, key_pem) = (cert.cert.pem(), cert.signing_key.serialize_pem());
    let (cert_path, key_path) = (store.path().join("cert.pem"), store.path().join("key.pem"));
    std::fs::write(&cert_path, &cert_pem).unwrap();
    std::fs::write(&key_path, &key_pem).unwrap();
    let server = Running::start_with(ServeConfig {
        store: store.path().to_path_buf(),
        database: Default::default(),
        data_root: None,
        auth: Auth::new(Some(ADMIN.into()), Some(CLIENT.into())),
        limits: Limits::default(),
        training_slots: 1,
        assign_threads: 2,
        tls: Some((cert_path, key_path)),
        device: dekm_trainer::device::DeviceChoice::Cpu,
        embedder: None,
    })
    .await;

    let dev = tempfile::tempdir().unwrap();
    let device = DeviceStore::at(dev.path());
    let mut client = fleet::connect(&server.url, Some(CLIENT), Some(cert_pem.as_bytes()))
        .await
        .unwrap();
    assert_eq!(
        fleet::sync_once(&mut client, &device, "tls-dev")
            .await
            .unwrap(),
        Synced::Updated {
            model_id: id.clone(),
            previous: None
        }
    );
    // Without the server's certificate, or in plaintext, nothing gets through.
    assert!(
        fleet::connect(&server.url, Some(CLIENT), None)
            .await
            .is_err()
    );
    let plain = server.url.replace("https://", "http://");
    if let Ok(mut c) = fleet::connect(&plain, Some(CLIENT), None).await {
        assert!(fleet::sync_once(&mut c, &device, "tls-dev").await.is_err());
    }
    drop(client);
    server.stop().await;
}
