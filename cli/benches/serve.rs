//! Load on the gRPC service over loopback: `--clients` concurrent clients call `Assign` with
//! batches of `--batch` samples for `--seconds`, against the edge crate assigning the same
//! batches in-process on the same machine, one run, side by side.
//!
//! ```text
//! cargo bench -p dekm-cli --bench serve -- --model DIR [--clients 8] [--batch 64] [--seconds 10]
//!     [--assign-threads N] [--replicas 1,2]
//! ```
//!
//! The server runs in this process on 127.0.0.1 (a fresh store in a temporary directory, the
//! model published and activated), with as many tokio workers as the machine has cores and
//! `dekm serve`'s default of two assign threads per core; the clients run on their own runtime.
//! With `--replicas 1,2` the gRPC part runs once per count, the replicas sharing one store and
//! its SQLite database, each on a runtime of its own (as separate processes would be), the
//! clients spread over them, and each count's rate is printed against one replica's. In-process
//! figures: one thread, and one thread per core each with its own `Session`.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use dekm_edge::{Model, file::read_parts};
use dekm_proto::pb::{self, assigner_client::AssignerClient};
use dekm_server::{Auth, Limits, ServeConfig, Server};

#[global_allocator]
static GLOBAL: dekm_cli::allocator::MiMalloc = dekm_cli::allocator::MiMalloc;

struct Args {
    model: PathBuf,
    clients: usize,
    batch: usize,
    seconds: f64,
    assign_threads: Option<usize>,
    replicas: Vec<usize>,
}

fn parse_args() -> Result<Args> {
    let mut a = Args {
        model: PathBuf::new(),
        clients: 8,
        batch: 64,
        seconds: 10.0,
        assign_threads: None,
        replicas: vec![1],
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--model" => a.model = value()?.into(),
            "--clients" => a.clients = value()?.parse()?,
            "--batch" => a.batch = value()?.parse()?,
            "--seconds" => a.seconds = value()?.parse()?,
            "--assign-threads" => a.assign_threads = Some(value()?.parse()?),
            "--replicas" => {
                a.replicas = value()?
                    .split(',')
                    .map(str::parse)
                    .collect::<Result<_, _>>()?;
            }
            "--bench" => {}
            other => bail!("unknown argument {other}"),
        }
    }
    if a.model.as_os_str().is_empty() {
        bail!("--model DIR is required (any `dekm train` export, e.g. of MNIST)");
    }
    if a.replicas.contains(&0) {
        bail!("--replicas: every run needs at least one server");
    }
    a.clients = a.clients.max(1);
    a.batch = a.batch.max(1);
    a.seconds = a.seconds.clamp(0.5, 600.0);
    Ok(a)
}

/// `n` batches of varied samples with values in 0..=255.
fn batches(len: usize, batch: usize, n: usize) -> Vec<Vec<Vec<f32>>> {
    let mut state = 1u32;
    (0..n)
        .map(|_| {
            (0..batch)
                .map(|_| {
                    (0..len)
                        .map(|_| {
                            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                            ((state >> 24) as f32).min(255.0)
                        })
                        .collect()
                })
                .collect()
        })
        .collect()
}

/// Samples per second assigned in-process by `threads` threads for `seconds`.
fn in_process(model: &Model, data: &[Vec<Vec<f32>>], threads: usize, seconds: f64) -> f64 {
    let done = AtomicU64::new(0);
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(seconds);
    std::thread::scope(|s| {
        for t in 0..threads {
            let done = &done;
            s.spawn(move || {
                let mut session = model.session();
                let mut i = t;
                while Instant::now() < deadline {
                    for x in &data[i % data.len()] {
                        std::hint::black_box(session.assign(x).expect("valid sample"));
                    }
                    done.fetch_add(data[0].len() as u64, Ordering::Relaxed);
                    i += threads;
                }
            });
        }
    });
    done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

/// `a.clients` clients calling Assign for `a.seconds` against `replicas` servers on one store
/// (one SQLite database), each server on its own runtime of `cores` workers as a process of its
/// own would have; client `c` calls replica `c % replicas`. Returns the sorted latencies, the
/// errors and the wall time.
fn over_grpc(
    a: &Args,
    parts: &dekm_edge::ModelParts,
    requests: &Arc<Vec<pb::AssignRequest>>,
    replicas: usize,
    cores: usize,
) -> Result<(Vec<f64>, u64, f64)> {
    let store = tempfile::tempdir()?;
    let mut servers = Vec::new();
    for r in 0..replicas {
        let server = Server::open(ServeConfig {
            store: store.path().to_path_buf(),
            database: Default::default(),
            data_root: None,
            auth: Auth::default(),
            limits: Limits::default(),
            training_slots: 1,
            assign_threads: a.assign_threads.unwrap_or(2 * cores),
            tls: None,
            device: dekm_trainer::device::DeviceChoice::Cpu,
            embedder: None,
        })?;
        if r == 0 {
            let id = server.registry().add(parts)?.id.clone();
            server.registry().activate(&id)?;
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(cores)
            .enable_all()
            .build()?;
        let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
        let url = format!("http://{}", listener.local_addr()?);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let served = rt.spawn(server.run(listener, None, async {
            let _ = stopped.await;
        }));
        servers.push((rt, url, stop, served));
    }
    let urls: Vec<String> = servers.iter().map(|s| s.1.clone()).collect();

    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cores)
        .enable_all()
        .build()?;
    let clients = a.clients;
    let seconds = a.seconds;
    let (latencies, errors, wall) = client_rt.block_on(async {
        let stop_all = Arc::new(AtomicBool::new(false));
        let errors = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        let started = Instant::now();
        for c in 0..clients {
            let (url, requests, stop_all, errors) = (
                urls[c % urls.len()].clone(),
                requests.clone(),
                stop_all.clone(),
                errors.clone(),
            );
            tasks.push(tokio::spawn(async move {
                let channel = tonic::transport::Endpoint::from_shared(url)
                    .expect("url")
                    .tcp_nodelay(true)
                    .initial_stream_window_size(Some(4 << 20))
                    .initial_connection_window_size(Some(16 << 20))
                    .connect()
                    .await
                    .expect("connect");
                let mut client = AssignerClient::new(channel);
                let mut lat = Vec::new();
                let mut i = c;
                while !stop_all.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    match client.assign(requests[i % requests.len()].clone()).await {
                        Ok(_) => lat.push(t.elapsed().as_secs_f64()),
                        Err(_) => {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    i += clients;
                }
                lat
            }));
        }
        tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
        stop_all.store(true, Ordering::Relaxed);
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.expect("client task"));
        }
        let wall = started.elapsed().as_secs_f64();
        (all, errors.load(Ordering::Relaxed), wall)
    });
    for (rt, _, stop, served) in servers {
        let _ = stop.send(());
        rt.block_on(served)??;
    }
    let mut lat = latencies;
    lat.sort_by(f64::total_cmp);
    Ok((lat, errors, wall))
}

fn main() -> Result<()> {
    let a = parse_args()?;
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let parts = read_parts(&a.model)?;
    let model = Model::from_parts(&parts)?;
    let data = batches(model.input_len(), a.batch, 64);
    println!(
        "model {} ({} inputs, k = {}), batch {}, {} clients, {} s, {cores} cores",
        a.model.display(),
        model.input_len(),
        model.k(),
        a.batch,
        a.clients,
        a.seconds
    );

    let one = in_process(&model, &data, 1, a.seconds.min(5.0));
    let all = in_process(&model, &data, cores, a.seconds.min(5.0));

    let requests: Vec<pb::AssignRequest> = data
        .iter()
        .map(|b| pb::AssignRequest {
            model_id: String::new(),
            samples: b.iter().map(|x| pb::Sample { values: x.clone() }).collect(),
            readings: vec![],
            texts: vec![],
        })
        .collect();
    let requests = Arc::new(requests);
    println!(
        "in-process edge, 1 thread:      {one:>10.0} samples/s\n\
         in-process edge, {cores} threads:     {all:>10.0} samples/s"
    );
    let mut single = None;
    for &replicas in &a.replicas {
        let (lat, errors, wall) = over_grpc(&a, &parts, &requests, replicas, cores)?;
        let rps = lat.len() as f64 / wall;
        let sps = rps * a.batch as f64;
        let scaling = match single {
            None if replicas == 1 => {
                single = Some(sps);
                String::new()
            }
            Some(one) => format!(", {:.2}x one replica", sps / one),
            None => String::new(),
        };
        println!(
            "gRPC Assign, {replicas} replica(s):     {sps:>10.0} samples/s ({rps:.0} requests/s, p50 {:.2} ms, p99 {:.2} ms, {errors} errors, {} requests; {:.2} of in-process on {cores} threads{scaling})",
            percentile(&lat, 0.5) * 1e3,
            percentile(&lat, 0.99) * 1e3,
            lat.len(),
            sps / all
        );
    }
    Ok(())
}
