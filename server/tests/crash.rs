//! A server killed with SIGKILL in the middle of its writes leaves a store that opens and is
//! consistent. The test runs itself as a child process that activates models and commits
//! fleet reports as fast as it can, kills it at staggered moments, and checks the store after
//! each kill: it opens with an active model and both bundles whole, every report reads back
//! whole, and each round's generation is past the last one's (the kill hit a writing process).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use dekm_edge::model::fixture;
use dekm_server::db::{Database, Location};
use dekm_server::fleet::{DeviceReport, FleetStats};
use dekm_server::registry::Registry;

const CHILD_STORE: &str = "DEKM_CRASH_STORE";
const CHILD_DATABASE: &str = "DEKM_CRASH_DATABASE";
const TEST: &str = "a_server_killed_mid_write_leaves_a_consistent_store";
const ROUNDS: u64 = 6;

fn open(store: &Path, database: &Location) -> (Registry, FleetStats) {
    let db = Database::open(store, database).expect("the store opens after a kill");
    (
        Registry::open(store, db.clone()).expect("the registry opens after a kill"),
        FleetStats::new(db),
    )
}

/// The child: writes until it is killed.
fn write_forever(store: &Path, database: &Location) -> ! {
    let (registry, fleet) = open(store, database);
    let ids = [1, 2].map(|s| registry.add(&fixture::dense(s)).unwrap().id.clone());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let k = fixture::dense(1).meta().k;
    for round in 0u64.. {
        registry.activate(&ids[(round % 2) as usize]).unwrap();
        rt.block_on(async {
            let reports = (0..64u64).map(|d| {
                let fleet = fleet.clone();
                tokio::spawn(async move {
                    let mut counts = vec![round; k];
                    counts[0] += d;
                    let report = DeviceReport {
                        outliers: vec![round / 2; k],
                        counts,
                        rejected: d,
                        reported_unix: round,
                    };
                    fleet.report(&format!("device-{d}"), "m", k, report).await
                })
            });
            for r in reports.collect::<Vec<_>>() {
                r.await.unwrap().unwrap();
            }
        });
    }
    unreachable!()
}

fn engines() -> Vec<(String, Location)> {
    let mut out = vec![("sqlite".to_string(), Location::Sqlite)];
    match std::env::var("DEKM_TEST_POSTGRES") {
        Ok(url) => {
            let url = dekm_server::db::create_postgres_database(&url, "dekm_crash")
                .expect("DEKM_TEST_POSTGRES creates databases");
            out.push((url.clone(), Location::Postgres(url)));
        }
        Err(_) => eprintln!("SKIPPED the PostgreSQL engine: DEKM_TEST_POSTGRES is not set"),
    }
    out
}

#[test]
fn a_server_killed_mid_write_leaves_a_consistent_store() {
    if let (Ok(store), Ok(database)) = (std::env::var(CHILD_STORE), std::env::var(CHILD_DATABASE)) {
        write_forever(Path::new(&store), &database.parse().unwrap());
    }
    for (raw, database) in engines() {
        let store = tempfile::tempdir().unwrap();
        let mut last_generation = 0;
        for round in 0..ROUNDS {
            let mut child = Command::new(std::env::current_exe().unwrap())
                .args(["--exact", TEST, "--nocapture", "--test-threads=1"])
                .env(CHILD_STORE, store.path())
                .env(CHILD_DATABASE, &raw)
                .spawn()
                .unwrap();
            // Staggered, so that the kills land at different points of the write cycle.
            std::thread::sleep(Duration::from_millis(700 + 97 * round));
            child.kill().unwrap(); // SIGKILL
            child.wait().unwrap();

            let (registry, fleet) = open(store.path(), &database);
            let active = registry.active();
            let rt = tokio::runtime::Runtime::new().unwrap();
            let reports = rt.block_on(fleet.devices(None)).unwrap();
            assert!(
                active.generation > last_generation,
                "{database} round {round}: the child wrote nothing before it was killed"
            );
            last_generation = active.generation;
            assert_eq!(
                registry.list().unwrap().len(),
                2,
                "{database}: both bundles whole"
            );
            assert!(active.id.is_some());
            for (_, device, r) in &reports {
                assert!(
                    r.outliers.iter().zip(&r.counts).all(|(o, c)| o <= c),
                    "{database}: {device}'s report is torn: {r:?}"
                );
                assert_eq!(r.counts[0] - r.counts[1], r.rejected, "{device}: {r:?}");
            }
            eprintln!(
                "{database} round {round}: generation {}, {} device reports",
                active.generation,
                reports.len()
            );
        }
    }
}
