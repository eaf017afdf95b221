//! Several `dekm serve` replicas on one database and one models volume: any replica answers for
//! the active model, an activation or rollback on one reaches the others and their WatchModel
//! streams, fleet reports to any replica land in one table, a job runs on the replica that
//! took it and is seen and cancelled from the others; and nginx, configured from
//! `docs/deploy/nginx-grpc.conf`, spreads calls over the replicas.

use std::path::Path;
use std::time::{Duration, Instant};

use dekm_edge::model::fixture;
use dekm_proto::pb;
use dekm_server::db::Location;
use dekm_server::{Auth, Limits, ServeConfig};
use pb::assigner_client::AssignerClient;
use pb::fleet_client::FleetClient;
use pb::registry_client::RegistryClient;
use pb::training_client::TrainingClient;

use crate::harness::*;

/// How long a change may take to reach another replica: the registry's sync interval and
/// the job heartbeat, with room for a loaded test machine.
const REACH: Duration = Duration::from_secs(10);

async fn replica(store: &Path, database: &Location) -> Running {
    Running::start_with(ServeConfig {
        store: store.to_path_buf(),
        database: database.clone(),
        data_root: None,
        auth: Auth::new(Some(ADMIN.into()), Some(CLIENT.into())),
        limits: Limits {
            max_message_bytes: 8 << 20,
            ..Limits::default()
        },
        training_slots: 1,
        assign_threads: 2,
        tls: None,
        device: dekm_trainer::device::DeviceChoice::Cpu,
        embedder: None,
    })
    .await
}

/// A fresh PostgreSQL database on the server named by `DEKM_TEST_POSTGRES`, if any.
fn postgres_location() -> Option<Location> {
    let Ok(url) = std::env::var("DEKM_TEST_POSTGRES") else {
        eprintln!(
            "SKIPPED PostgreSQL replicas: DEKM_TEST_POSTGRES is not set (run the tests through scripts/with-postgres.sh)"
        );
        return None;
    };
    let url = dekm_server::db::create_postgres_database(&url, "dekm_replicas")
        .expect("DEKM_TEST_POSTGRES creates databases");
    Some(Location::Postgres(url))
}

/// Waits until `check` holds, polling; fails after [`REACH`].
async fn within<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < REACH, "{what}: not within {REACH:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Publishes and activates fixture model `seed` through replica `r`; returns its id.
async fn publish(r: &Running, seed: u32) -> String {
    RegistryClient::new(r.channel().await)
        .publish_model(admin(pb::PublishModelRequest {
            bundle: fixture::dense(seed).to_bundle(),
            activate: true,
        }))
        .await
        .unwrap()
        .into_inner()
        .id
}

async fn active_on(r: &Running) -> (String, u64) {
    let list = RegistryClient::new(r.channel().await)
        .list_models(client(pb::ListModelsRequest {}))
        .await
        .unwrap()
        .into_inner();
    (list.active_model_id, list.generation)
}

async fn two_replicas_share_everything(database: Location) {
    let store = tempfile::tempdir().unwrap();
    let (a, b) = (
        replica(store.path(), &database).await,
        replica(store.path(), &database).await,
    );
    let mut watch_b = FleetClient::new(b.channel().await)
        .watch_model(client(pb::WatchModelRequest {
            device_id: "watcher".into(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(watch_b.message().await.unwrap().unwrap().generation, 0);

    // Published and activated on A: B's stream, B's registry and B's Assign follow.
    let one = publish(&a, 1).await;
    let started = Instant::now();
    let update = tokio::time::timeout(REACH, watch_b.message())
        .await
        .expect("B's WatchModel stream hears of A's activation")
        .unwrap()
        .unwrap();
    eprintln!(
        "{database}: an activation on A reached B's stream in {:?}",
        started.elapsed()
    );
    assert_eq!(
        (update.model_id.as_str(), update.generation),
        (one.as_str(), 1)
    );
    let rows = vec![vec![0.5; fixture::dense(1).meta().input_len()]; 3];
    let assigned = AssignerClient::new(b.channel().await)
        .assign(client(pb::AssignRequest {
            model_id: String::new(),
            samples: samples(&rows),
            readings: Vec::new(),
            texts: vec![],
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(assigned.model_id, one);
    assert_eq!(
        assigned.assignments,
        local(&fixture::dense(1).to_bundle(), &rows)
    );

    // Published and activated on B, rolled back on A: each replica sees the other's change.
    let two = publish(&b, 2).await;
    within("A sees B's activation", || async {
        active_on(&a).await == (two.clone(), 2)
    })
    .await;
    let rolled = RegistryClient::new(a.channel().await)
        .rollback_model(admin(pb::RollbackModelRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (rolled.active.unwrap().id.as_str(), rolled.generation),
        (one.as_str(), 3)
    );
    within("B sees A's rollback", || async {
        active_on(&b).await == (one.clone(), 3)
    })
    .await;
    let seen: Vec<u64> = [
        watch_b.message().await.unwrap().unwrap(),
        watch_b.message().await.unwrap().unwrap(),
    ]
    .iter()
    .map(|u| u.generation)
    .collect();
    assert_eq!(seen, vec![2, 3], "B's stream missed nothing");

    // Reports to either replica land in one table.
    let k = fixture::dense(1).meta().k;
    for (r, device, n) in [(&a, "dev-a", 4), (&b, "dev-b", 6)] {
        let (mut counts, mut outliers) = (vec![0; k], vec![0; k]);
        (counts[0], outliers[0]) = (n, 1);
        FleetClient::new(r.channel().await)
            .report_stats(client(pb::ReportStatsRequest {
                device_id: device.into(),
                model_id: one.clone(),
                counts,
                outliers,
                rejected: 0,
            }))
            .await
            .unwrap();
    }
    for r in [&a, &b] {
        let stats = FleetClient::new(r.channel().await)
            .get_fleet_stats(admin(pb::GetFleetStatsRequest {
                model_id: one.clone(),
            }))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(stats.devices.len(), 2);
        assert_eq!(
            (stats.models[0].devices, stats.models[0].counts[0]),
            (2, 10)
        );
    }

    // A job taken by A is seen from B, and cancelled from B.
    let mut long = TrainingClient::new(a.channel().await)
        .train(admin(train_request(10_000, false)))
        .await
        .unwrap()
        .into_inner();
    let job_id = pretraining_job(&mut long).await;
    let mut training_b = TrainingClient::new(b.channel().await);
    let seen = training_b
        .get_job(admin(pb::GetJobRequest {
            job_id: job_id.clone(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(seen.state(), pb::JobState::Running);
    let cancelled = training_b
        .cancel_job(admin(pb::CancelJobRequest {
            job_id: job_id.clone(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(cancelled.state(), pb::JobState::Cancelled, "{cancelled:?}");
    let listed = training_b
        .list_jobs(admin(pb::ListJobsRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.jobs.len(), 1);
    // Open streams would hold the servers' graceful shutdown.
    drop((watch_b, long));
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_share_one_sqlite_store() {
    two_replicas_share_everything(Location::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_share_one_postgres_database() {
    if let Some(database) = postgres_location() {
        two_replicas_share_everything(database).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nginx_spreads_calls_over_replicas() {
    let nginx = ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .into_iter()
        .find(|p| Path::new(p).exists());
    let Some(nginx) = nginx else {
        eprintln!("SKIPPED nginx: not installed (Debian's nginx package; .ci/run installs it)");
        return;
    };
    let store = tempfile::tempdir().unwrap();
    let (a, b) = (
        replica(store.path(), &Location::Sqlite).await,
        replica(store.path(), &Location::Sqlite).await,
    );
    let model = publish(&a, 1).await;
    within("B sees the activation", || async {
        active_on(&b).await.0 == model
    })
    .await;

    let dir = tempfile::tempdir().unwrap();
    let port = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = |r: &Running| r.url.replace("http://localhost", "127.0.0.1");
    let conf = include_str!("../../../docs/deploy/nginx-grpc.conf")
        .replace("@DIR@", &dir.path().display().to_string())
        .replace("@LISTEN@", &format!("127.0.0.1:{port}"))
        .replace("@REPLICA_A@", &addr(&a))
        .replace("@REPLICA_B@", &addr(&b));
    let conf_path = dir.path().join("nginx.conf");
    std::fs::write(&conf_path, conf).unwrap();
    let mut child = std::process::Command::new(nginx)
        .arg("-p")
        .arg(dir.path())
        .arg("-c")
        .arg(&conf_path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("nginx starts");
    let channel = loop {
        match tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{port}"))
            .unwrap()
            .connect()
            .await
        {
            Ok(c) => break c,
            Err(_) if child.try_wait().unwrap().is_none() => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!(
                "nginx exited: {e}; {}",
                std::fs::read_to_string(dir.path().join("error.log")).unwrap_or_default()
            ),
        }
    };
    let rows = vec![vec![0.25; fixture::dense(1).meta().input_len()]; 2];
    let mut assigner = AssignerClient::new(channel);
    for _ in 0..20 {
        let r = assigner
            .assign(client(pb::AssignRequest {
                model_id: String::new(),
                samples: samples(&rows),
                readings: Vec::new(),
                texts: vec![],
            }))
            .await
            .expect("Assign through nginx")
            .into_inner();
        assert_eq!(r.model_id, model);
    }
    // SIGTERM, not SIGKILL: the master then stops its workers, which a killed master leaves
    // running (holding the test's output open).
    let stopped = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    if !stopped.is_ok_and(|s| s.success()) {
        let _ = child.kill();
    }
    let _ = child.wait();
    let served = |text: String| {
        text.lines()
            .find(|l| l.starts_with("dekm_grpc_requests_total{method=\"Assign\",code=\"OK\"}"))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let (on_a, on_b) = (
        served(a.metrics_text().await),
        served(b.metrics_text().await),
    );
    assert_eq!(on_a + on_b, 20);
    assert!(on_a >= 5 && on_b >= 5, "A served {on_a}, B {on_b}");
    a.stop().await;
    b.stop().await;
}
