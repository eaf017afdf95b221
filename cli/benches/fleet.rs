//! A fleet against the service over loopback: simulated devices, each with its own id, call
//! `FetchModel` (not modified: they run the active model) and `ReportStats`, in a loop over the
//! fleet, for `--seconds`, at each fleet size and on each database, one run, side by side.
//!
//! ```text
//! cargo bench -p dekm-cli --bench fleet -- [--devices 1000,10000,100000] [--seconds 10]
//!     [--clients 64] [--databases sqlite,json[,postgres://USER@HOST:PORT/DB]]
//! ```
//!
//! Before each run the store already holds one report from every device (the table a fleet of
//! that size has after its first minute), written as a `fleet.json` of the format before the
//! database, which SQLite and PostgreSQL import at open and `json` reads as it is. Figures:
//! reports committed per second, the latency of `ReportStats` (p50, p99) and of `FetchModel`,
//! the process's resident memory (server and clients: one process) and the database's size.
//! With PostgreSQL every run gets a new database on the named server (the role must be allowed
//! to create databases).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use dekm_edge::model::fixture;
use dekm_proto::pb::{self, fleet_client::FleetClient};
use dekm_server::db::{Location, SQLITE_FILE};
use dekm_server::{Auth, Limits, ServeConfig, Server};

#[global_allocator]
static GLOBAL: dekm_cli::allocator::MiMalloc = dekm_cli::allocator::MiMalloc;

struct Args {
    devices: Vec<usize>,
    seconds: f64,
    clients: usize,
    databases: Vec<String>,
}

fn parse_args() -> Result<Args> {
    let mut a = Args {
        devices: vec![1_000, 10_000, 100_000],
        seconds: 10.0,
        clients: 64,
        databases: vec!["sqlite".into(), "json".into()],
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--devices" => {
                a.devices = value()?
                    .split(',')
                    .map(str::parse)
                    .collect::<Result<_, _>>()?;
            }
            "--seconds" => a.seconds = value()?.parse()?,
            "--clients" => a.clients = value()?.parse()?,
            "--databases" => a.databases = value()?.split(',').map(String::from).collect(),
            "--bench" => {}
            other => bail!("unknown argument {other}"),
        }
    }
    if a.devices.contains(&0) {
        bail!("--devices: every fleet needs at least one device");
    }
    a.clients = a.clients.max(1);
    a.seconds = a.seconds.clamp(1.0, 600.0);
    Ok(a)
}

fn device(i: usize) -> String {
    format!("device-{i:06}")
}

fn report_of(i: usize, round: u64, k: usize) -> (Vec<u64>, Vec<u64>) {
    let mut counts = vec![round; k];
    counts[i % k] += 60;
    let mut outliers = vec![0; k];
    outliers[i % k] = (i % 3) as u64;
    (counts, outliers)
}

/// A `fleet.json` with one report from each of `devices` devices for `model`.
fn prefill(store: &Path, model: &str, devices: usize, k: usize) -> Result<()> {
    let table: BTreeMap<String, serde_json::Value> = (0..devices)
        .map(|i| {
            let (counts, outliers) = report_of(i, 0, k);
            let r = serde_json::json!({
                "counts": counts, "outliers": outliers, "rejected": 0, "reported_unix": 0
            });
            (device(i), r)
        })
        .collect();
    let all = serde_json::json!({ model: table });
    std::fs::write(store.join("fleet.json"), serde_json::to_vec(&all)?)?;
    Ok(())
}

/// Resident memory of this process in MiB.
fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn file_mib(paths: &[std::path::PathBuf]) -> f64 {
    paths
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len() as f64)
        .sum::<f64>()
        / (1 << 20) as f64
}

fn postgres_size_mib(url: &str) -> Result<f64> {
    let mut c = postgres::Client::connect(url, postgres::NoTls)?;
    let row = c.query_one("SELECT pg_database_size(current_database())", &[])?;
    Ok(row.get::<_, i64>(0) as f64 / (1 << 20) as f64)
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

struct Figures {
    reports: usize,
    wall: f64,
    report_ms: (f64, f64),
    fetch_ms: (f64, f64),
    errors: u64,
    rss: f64,
    size: f64,
}

fn run(database: &str, devices: usize, a: &Args, cores: usize) -> Result<Figures> {
    let parts = fixture::dense(1);
    let k = parts.meta().k;
    let store = tempfile::tempdir()?;
    let location: Location = match database {
        "sqlite" | "json" => database.parse().map_err(anyhow::Error::msg)?,
        url => Location::Postgres(dekm_server::db::create_postgres_database(
            url,
            "dekm_fleet",
        )?),
    };
    // The model id is the bundle's: known before the server opens, so the table can be
    // prefilled for it.
    let id =
        dekm_edge::bundle::model_id(&dekm_edge::bundle::sha256_hex(&parts.to_bundle())).to_string();
    prefill(store.path(), &id, devices, k)?;
    let server = Server::open(ServeConfig {
        store: store.path().to_path_buf(),
        database: location.clone(),
        data_root: None,
        auth: Auth::default(),
        limits: Limits::default(),
        training_slots: 1,
        assign_threads: 2 * cores,
        tls: None,
        device: dekm_trainer::device::DeviceChoice::Cpu,
        embedder: None,
    })?;
    let added = server.registry().add(&parts)?.id.clone();
    anyhow::ensure!(added == id, "model id {added}, expected {id}");
    server.registry().activate(&id)?;

    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cores)
        .enable_all()
        .build()?;
    let listener = server_rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let url = format!("http://{}", listener.local_addr()?);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = server_rt.spawn(server.run(listener, None, async {
        let _ = stopped.await;
    }));

    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cores)
        .enable_all()
        .build()?;
    let seconds = a.seconds;
    let clients = a.clients;
    let (reports, fetches, errors, wall) = client_rt.block_on(async {
        let stop_all = Arc::new(AtomicBool::new(false));
        let errors = Arc::new(AtomicU64::new(0));
        let started = Instant::now();
        let mut tasks = Vec::new();
        for c in 0..clients {
            let (url, stop_all, errors, id) =
                (url.clone(), stop_all.clone(), errors.clone(), id.clone());
            tasks.push(tokio::spawn(async move {
                let channel = tonic::transport::Endpoint::from_shared(url)
                    .expect("url")
                    .tcp_nodelay(true)
                    .connect()
                    .await
                    .expect("connect");
                let mut fleet = FleetClient::new(channel);
                let (mut reports, mut fetches) = (Vec::new(), Vec::new());
                // Client c walks devices c, c + clients, ...; round r is the r-th pass.
                let (mut i, mut round) = (c, 1u64);
                while !stop_all.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    let fetched = fleet
                        .fetch_model(pb::FetchModelRequest {
                            device_id: device(i),
                            current_model_id: id.clone(),
                        })
                        .await;
                    match fetched {
                        Ok(r) if r.get_ref().not_modified => {
                            fetches.push(t.elapsed().as_secs_f64());
                        }
                        _ => {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    let (counts, outliers) = report_of(i, round, k);
                    let t = Instant::now();
                    let sent = fleet
                        .report_stats(pb::ReportStatsRequest {
                            device_id: device(i),
                            model_id: id.clone(),
                            counts,
                            outliers,
                            rejected: 0,
                        })
                        .await;
                    match sent {
                        Ok(_) => reports.push(t.elapsed().as_secs_f64()),
                        Err(_) => {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    i += clients;
                    if i >= devices {
                        i = c % devices;
                        round += 1;
                    }
                }
                (reports, fetches)
            }));
        }
        tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
        stop_all.store(true, Ordering::Relaxed);
        let (mut reports, mut fetches) = (Vec::new(), Vec::new());
        for t in tasks {
            let (r, f) = t.await.expect("client task");
            reports.extend(r);
            fetches.extend(f);
        }
        let wall = started.elapsed().as_secs_f64();
        (reports, fetches, errors.load(Ordering::Relaxed), wall)
    });
    let rss = rss_mib();
    let _ = stop.send(());
    server_rt.block_on(served)??;
    let size = match &location {
        Location::Sqlite => {
            let db = store.path().join(SQLITE_FILE);
            let mut wal = db.clone().into_os_string();
            wal.push("-wal");
            file_mib(&[db, wal.into()])
        }
        Location::Json => file_mib(&[store.path().join("fleet.json")]),
        Location::Postgres(url) => postgres_size_mib(url)?,
    };
    let (mut reports, mut fetches) = (reports, fetches);
    reports.sort_by(f64::total_cmp);
    fetches.sort_by(f64::total_cmp);
    Ok(Figures {
        reports: reports.len(),
        wall,
        report_ms: (
            percentile(&reports, 0.5) * 1e3,
            percentile(&reports, 0.99) * 1e3,
        ),
        fetch_ms: (
            percentile(&fetches, 0.5) * 1e3,
            percentile(&fetches, 0.99) * 1e3,
        ),
        errors,
        rss,
        size,
    })
}

fn main() -> Result<()> {
    let a = parse_args()?;
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    println!(
        "{} clients, {} s per run, {cores} cores (server and clients share them)",
        a.clients, a.seconds
    );
    println!(
        "{:<10} {:>8} {:>10} {:>16} {:>16} {:>7} {:>9} {:>9}",
        "database",
        "devices",
        "reports/s",
        "report p50/p99",
        "fetch p50/p99",
        "errors",
        "RSS MiB",
        "db MiB"
    );
    for database in &a.databases {
        for &devices in &a.devices {
            let f = run(database, devices, &a, cores)
                .with_context(|| format!("{database} with {devices} devices"))?;
            let name = if database.starts_with("postgres") {
                "postgres"
            } else {
                database
            };
            println!(
                "{name:<10} {devices:>8} {:>10.0} {:>7.2}/{:<8.2} {:>7.2}/{:<8.2} {:>7} {:>9.1} {:>9.1}",
                f.reports as f64 / f.wall,
                f.report_ms.0,
                f.report_ms.1,
                f.fetch_ms.0,
                f.fetch_ms.1,
                f.errors,
                f.rss,
                f.size
            );
        }
    }
    Ok(())
}
