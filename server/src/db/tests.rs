use super::*;
use crate::jobs::{JobState, Phase, Step};

fn job(id: &str, state: JobState) -> JobRecord {
    JobRecord {
        id: id.into(),
        state,
        dataset: "synthetic".into(),
        created_unix: 7,
        finished_unix: None,
        last: Step::at(state, Phase::Loading),
        model_id: None,
        metrics: None,
        error: None,
    }
}

fn report(model: &str, device: &str, n: u64) -> ReportRow {
    ReportRow {
        model: model.into(),
        device: device.into(),
        report: DeviceReport {
            counts: vec![n, 1],
            outliers: vec![0, 1],
            rejected: 2,
            reported_unix: 9,
        },
    }
}

/// Runs `check` on a fresh database of each engine this machine can offer: SQLite and JSON
/// always, PostgreSQL when `DEKM_TEST_POSTGRES` names a server (see `scripts/with-postgres.sh`).
fn each_engine(check: impl Fn(&Database, &Path)) {
    let mut engines = vec![Location::Sqlite, Location::Json];
    match postgres_database() {
        Some(url) => engines.push(Location::Postgres(url)),
        None => eprintln!("SKIPPED the PostgreSQL engine: DEKM_TEST_POSTGRES is not set"),
    }
    for location in engines {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::open(dir.path(), &location).unwrap();
        assert_eq!(db.engine(), location.to_string().split(':').next().unwrap());
        check(&db, dir.path());
    }
}

/// A new, empty database on the test server named by `DEKM_TEST_POSTGRES`.
pub(crate) fn postgres_database() -> Option<String> {
    let url = std::env::var("DEKM_TEST_POSTGRES").ok()?;
    Some(
        super::create_postgres_database(&url, "dekm_unit")
            .expect("DEKM_TEST_POSTGRES creates databases"),
    )
}

#[test]
fn every_engine_keeps_what_it_is_given() {
    each_engine(|db, _| {
        let start = db.call(|b| b.registry()).unwrap();
        assert_eq!(start, RegistryRow::default());
        let next = RegistryRow {
            active: Some("b".into()),
            history: vec!["a".into()],
            generation: 1,
        };
        let row = next.clone();
        assert!(db.call(move |b| b.swap_registry(0, &row)).unwrap());
        // A swap from a stale generation loses and changes nothing.
        let stale = RegistryRow::default();
        assert!(!db.call(move |b| b.swap_registry(0, &stale)).unwrap());
        assert_eq!(db.call(|b| b.registry()).unwrap(), next);

        let rows = vec![
            JobRow {
                record: job("j1", JobState::Running),
                owner: "r1".into(),
                heartbeat_unix: 100,
                cancel: false,
            },
            JobRow {
                record: job("j2", JobState::Succeeded),
                owner: "r2".into(),
                heartbeat_unix: 100,
                cancel: false,
            },
        ];
        let put = rows.clone();
        db.call(move |b| b.put_jobs(&put)).unwrap();
        assert!(db.call(|b| b.request_cancel("j1")).unwrap());
        assert!(!db.call(|b| b.request_cancel("j2")).unwrap(), "finished");
        assert!(!db.call(|b| b.request_cancel("nope")).unwrap());
        // The owner rewriting its record keeps the cancel request.
        let again = rows[0].clone();
        db.call(move |b| b.put_jobs(&[again])).unwrap();
        assert_eq!(
            db.call(|b| b.heartbeat("r1", 200)).unwrap(),
            vec!["j1".to_string()]
        );
        let j1 = db.call(|b| b.jobs(Jobs::One("j1"))).unwrap();
        assert_eq!((j1[0].heartbeat_unix, j1[0].cancel), (200, true));
        assert_eq!(db.call(|b| b.jobs(Jobs::All)).unwrap().len(), 2);
        let open = db.call(|b| b.jobs(Jobs::Unfinished)).unwrap();
        assert_eq!(open.len(), 1, "j2 has finished");
        assert_eq!(open[0].record.id, "j1");
        assert!(db.call(|b| b.jobs(Jobs::One("nope"))).unwrap().is_empty());

        let reports = vec![report("m", "d1", 1), report("m", "d2", 2)];
        db.call(move |b| b.put_reports(&reports)).unwrap();
        db.call(|b| b.put_reports(&[report("m", "d1", 5), report("n", "d1", 1)]))
            .unwrap();
        let m = db.call(|b| b.reports(Some("m"))).unwrap();
        assert_eq!(m, vec![report("m", "d1", 5), report("m", "d2", 2)]);
        assert_eq!(db.call(|b| b.reports(None)).unwrap().len(), 3);
    });
}

#[test]
fn a_json_store_is_imported_once_and_its_files_set_aside() {
    let dir = tempfile::tempdir().unwrap();
    // A store as the server wrote it before the database: registry.json, fleet.json and
    // job files holding bare records.
    std::fs::write(
        dir.path().join("registry.json"),
        r#"{"active":"b","history":["a"],"generation":4}"#,
    )
    .unwrap();
    std::fs::write(
        dir.path().join("fleet.json"),
        r#"{"m":{"d1":{"counts":[3,1],"outliers":[0,1],"rejected":2,"reported_unix":9}}}"#,
    )
    .unwrap();
    std::fs::create_dir_all(dir.path().join("jobs")).unwrap();
    std::fs::write(
        dir.path().join("jobs/j1.json"),
        serde_json::to_vec(&job("j1", JobState::Succeeded)).unwrap(),
    )
    .unwrap();

    let db = Database::open(dir.path(), &Location::Sqlite).unwrap();
    let registry = db.call(|b| b.registry()).unwrap();
    assert_eq!(
        (
            registry.active.as_deref(),
            registry.history.len(),
            registry.generation
        ),
        (Some("b"), 1, 4)
    );
    assert_eq!(
        db.call(|b| b.reports(None)).unwrap(),
        vec![report("m", "d1", 3)]
    );
    let jobs = db.call(|b| b.jobs(Jobs::All)).unwrap();
    assert_eq!(jobs[0].record, job("j1", JobState::Succeeded));
    for name in ["registry.json", "fleet.json", "jobs"] {
        assert!(!dir.path().join(name).exists(), "{name} still in place");
        assert!(dir.path().join(format!("{name}.imported")).exists());
    }
    // Opening again imports nothing twice and keeps the state.
    let swapped = RegistryRow {
        generation: 5,
        ..registry.clone()
    };
    assert!(db.call(move |b| b.swap_registry(4, &swapped)).unwrap());
    drop(db);
    let db = Database::open(dir.path(), &Location::Sqlite).unwrap();
    assert_eq!(db.call(|b| b.registry()).unwrap().generation, 5);
    assert_eq!(db.call(|b| b.jobs(Jobs::All)).unwrap().len(), 1);
}

#[test]
fn bad_stores_are_refused_with_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("registry.json"), "{").unwrap();
    let err = Database::open(dir.path(), &Location::Sqlite).unwrap_err();
    assert!(err.to_string().contains("registry.json"), "{err}");
    // Nothing was imported and the files stay for the operator to mend.
    assert!(dir.path().join("registry.json").exists());

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(SQLITE_FILE), b"not a database, not at all").unwrap();
    let err = Database::open(dir.path(), &Location::Sqlite).unwrap_err();
    assert!(err.to_string().contains(SQLITE_FILE), "{err}");

    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path(), &Location::Sqlite).unwrap();
    drop(db);
    let conn = rusqlite::Connection::open(dir.path().join(SQLITE_FILE)).unwrap();
    conn.execute("UPDATE schema_version SET version = 99", [])
        .unwrap();
    drop(conn);
    let err = Database::open(dir.path(), &Location::Sqlite).unwrap_err();
    assert!(err.to_string().contains("schema version 99"), "{err}");

    for bad in ["mysql://x", "", "postgres:/x"] {
        let err = bad.parse::<Location>().unwrap_err();
        assert!(err.contains("none of sqlite"), "{err}");
    }
    assert_eq!(
        "postgres://u:pw@h/db"
            .parse::<Location>()
            .unwrap()
            .to_string(),
        "postgres://u:***@h/db"
    );
}
