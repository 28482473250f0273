//! `serve`: a live disk exported over NBD, with mirror jobs driven over QMP.
//!
//! The data path: a client (a VM, fio, qemu-io, any NBD client) sends requests over a unix
//! socket or TCP; `connection` runs each one's protocol session (the sans-io
//! [`crate::nbd::ServerSession`]) and hands its requests to a pool of I/O threads, which run
//! them on the [`disk::ServedDisk`]. While a mirror job runs, the disk sends every request
//! through the job's [`crate::FileMirror`] (dirty tracking or write-blocking); after the
//! switch-over it serves the target, with no client disconnected. [`jobs`] starts and
//! controls the jobs and turns their events into QMP events; `monitor` speaks QMP to
//! management clients.
//!
//! Stopping (`quit` over QMP, or [`Server::shutdown`]): no new clients, a running job is
//! force-cancelled, requests in flight are answered, the disk is flushed, sockets removed.

mod backing;
mod budget;
mod connection;
pub mod disk;
pub mod jobs;
mod listener;
mod monitor;
mod output;

use std::collections::HashMap;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;

pub use listener::ListenAddress;

use crate::engine::MirrorSetup;
use crate::nbd::{BlockSize, ExportInfo, NbdAddress, NbdUri, ServerLimits, ServerSession};
use crate::net::Stream;
use budget::PayloadBudget;
use connection::{Connection, Work};
use disk::{DiskError, ServedDisk};
use jobs::JobHost;
use listener::Listener;
use output::lock;

/// What to serve and how.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// The disk: a raw image file or block device.
    pub source: PathBuf,
    /// The export's name (also the QMP device name).
    pub export: String,
    /// Where clients connect.
    pub listen: ListenAddress,
    /// The QMP monitor's unix socket, if any.
    pub qmp: Option<PathBuf>,
    /// Clients may only read.
    pub read_only: bool,
    /// Connections beyond this many are refused (closed at once).
    pub max_clients: usize,
    /// Threads that run client requests (shared by every client).
    pub io_threads: usize,
    /// The protocol's per-connection bounds.
    pub limits: ServerLimits,
    /// Request payload bytes in flight across every connection (write data received, read
    /// data not yet sent); a reader waits before handing on a request that does not fit.
    pub max_payload_in_flight: u64,
    /// How jobs started over QMP open their files (O_DIRECT, io_uring, ...); their job
    /// settings come from the command.
    pub mirror: MirrorSetup,
    /// Jobs keep a crash-safe write-intent bitmap here, and `drive-mirror` with `resume`
    /// resumes from it; while a file left by an unfinished job is there, every client write
    /// is marked in it, with or without a job (see [`ServedDisk::keep_bitmap`]).
    pub bitmap: Option<PathBuf>,
    /// Refuse a bitmap file found at start whose newest generation is below this (an old
    /// copy of it); 0 accepts any.
    pub bitmap_min_generation: u64,
}

impl ServeConfig {
    /// `source` exported as `export` on `listen`, with the defaults: read-write, no monitor,
    /// 64 clients, 16 I/O threads, 16 requests and 8 MiB of payload in flight per client and
    /// 32 MiB across clients, the engine's mirror setup.
    pub fn new(source: PathBuf, export: String, listen: ListenAddress) -> Self {
        Self {
            source,
            export,
            listen,
            qmp: None,
            read_only: false,
            max_clients: 64,
            io_threads: 16,
            // Per connection: 16 requests and 8 MiB of payload in flight (one larger write
            // still passes alone), so many clients with large requests stay bounded.
            limits: ServerLimits { max_in_flight: 16, max_buffered_bytes: 8 << 20, ..ServerLimits::default() },
            max_payload_in_flight: 32 << 20,
            mirror: MirrorSetup::default(),
            bitmap: None,
            bitmap_min_generation: 0,
        }
    }
}

/// Why a server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The disk could not be opened or locked.
    #[error(transparent)]
    Disk(#[from] DiskError),
    /// A socket could not be set up, or a thread not started.
    #[error("{what}: {source}")]
    Os {
        /// What was being done.
        what: String,
        /// The OS error.
        source: io::Error,
    },
    /// A setting is wrong.
    #[error("{0}")]
    Invalid(String),
}

/// The clients connected now, by connection number: their streams, to shut down on stop.
#[derive(Default)]
struct Clients {
    next: u64,
    streams: HashMap<u64, Stream>,
    readers: Vec<JoinHandle<()>>,
}

struct Inner {
    disk: Arc<ServedDisk>,
    export: ExportInfo,
    limits: ServerLimits,
    budget: Arc<PayloadBudget>,
    max_clients: usize,
    listener: Listener,
    clients: Mutex<Clients>,
    stopping: AtomicBool,
    jobs: Arc<JobHost>,
    /// Set by `quit` over QMP (or `shutdown`); waited on by [`Server::wait_quit`].
    quit: Mutex<bool>,
    quit_changed: Condvar,
}

/// A running server. Dropping it shuts it down.
pub struct Server {
    inner: Arc<Inner>,
    address: ListenAddress,
    qmp: Option<monitor::Monitor>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    /// Senders of the I/O pool's queue; dropped on shutdown so the pool ends.
    pool: Mutex<Option<crossbeam_channel::Sender<Work>>>,
    shut_down: AtomicBool,
}

fn export_info(name: &str, disk: &ServedDisk) -> ExportInfo {
    ExportInfo {
        name: name.to_owned(),
        description: "blockmirror live disk".to_owned(),
        size: disk.length(),
        read_only: disk.read_only(),
        can_flush: true,
        can_fua: true,
        can_trim: true,
        can_write_zeroes: true,
        can_fast_zero: true,
        // Every client's writes go through one disk (and one job): a flush from any client
        // covers every write acknowledged before it.
        can_multi_conn: true,
        block_size: BlockSize {
            minimum: 1,
            preferred: 4096,
            maximum: 32 << 20,
        },
    }
}

impl Server {
    /// Opens and locks the disk, binds the sockets and starts serving.
    pub fn start(config: ServeConfig) -> Result<Self, ServeError> {
        if config.export.is_empty() || config.export.len() > 4096 {
            return Err(ServeError::Invalid(
                "the export name must be 1 to 4096 bytes long".into(),
            ));
        }
        if config.max_clients == 0 || config.io_threads == 0 {
            return Err(ServeError::Invalid(
                "max_clients and io_threads must be at least 1".into(),
            ));
        }
        let mut disk = ServedDisk::open_as(&config.source, config.read_only, config.mirror.format)?;
        if let Some(path) = &config.bitmap {
            disk = disk.keep_bitmap(path.clone(), config.bitmap_min_generation)?;
        }
        let disk = Arc::new(disk);
        let os = |what: String| move |source| ServeError::Os { what, source };
        let listener = Listener::bind(&config.listen)
            .map_err(os(format!("listening on {}", config.listen)))?;
        let address = listener
            .address()
            .map_err(os("reading the bound address".into()))?;
        let jobs = Arc::new(JobHost::new(
            Arc::clone(&disk),
            config.export.clone(),
            config.mirror.clone(),
        ));
        let inner = Arc::new(Inner {
            export: export_info(&config.export, &disk),
            disk,
            limits: config.limits,
            budget: Arc::new(PayloadBudget::new(config.max_payload_in_flight)),
            max_clients: config.max_clients,
            listener,
            clients: Mutex::new(Clients::default()),
            stopping: AtomicBool::new(false),
            jobs: Arc::clone(&jobs),
            quit: Mutex::new(false),
            quit_changed: Condvar::new(),
        });
        let (pool_tx, pool_rx) = crossbeam_channel::unbounded::<Work>();
        let mut threads = Vec::new();
        for i in 0..config.io_threads {
            let rx = pool_rx.clone();
            threads.push(
                std::thread::Builder::new()
                    .name(format!("bm-serve-io-{i}"))
                    .spawn(move || run_pool(&rx))
                    .map_err(os("starting the I/O threads".into()))?,
            );
        }
        let accept_inner = Arc::clone(&inner);
        let accept_pool = pool_tx.clone();
        threads.push(
            std::thread::Builder::new()
                .name("bm-serve-accept".into())
                .spawn(move || accept_loop(&accept_inner, &accept_pool))
                .map_err(os("starting the accept thread".into()))?,
        );
        let quit_inner = Arc::clone(&inner);
        let on_quit: Arc<dyn Fn() + Send + Sync> = Arc::new(move || quit_inner.request_quit());
        let qmp = match &config.qmp {
            Some(path) => Some(
                monitor::Monitor::start(path, Arc::clone(&jobs), on_quit)
                    .map_err(os(format!("listening for QMP on {}", path.display())))?,
            ),
            None => None,
        };
        Ok(Self {
            inner,
            address,
            qmp,
            threads: Mutex::new(threads),
            pool: Mutex::new(Some(pool_tx)),
            shut_down: AtomicBool::new(false),
        })
    }

    /// Where clients connect.
    pub fn address(&self) -> &ListenAddress {
        &self.address
    }

    /// The export's NBD URI (`nbd+unix:///NAME?socket=PATH` or `nbd://HOST:PORT/NAME`).
    pub fn uri(&self) -> String {
        let address = match &self.address {
            ListenAddress::Unix(path) => NbdAddress::Unix(path.clone()),
            ListenAddress::Tcp(addr) => {
                // A wildcard address is reached through loopback from this machine.
                let ip = match addr.ip() {
                    ip if ip.is_unspecified() && ip.is_ipv4() => {
                        std::net::Ipv4Addr::LOCALHOST.into()
                    }
                    ip if ip.is_unspecified() => std::net::Ipv6Addr::LOCALHOST.into(),
                    ip => ip,
                };
                NbdAddress::Tcp {
                    host: ip.to_string(),
                    port: addr.port(),
                }
            }
        };
        NbdUri {
            address,
            export: self.inner.export.name.clone(),
        }
        .to_string()
    }

    /// The job controller (what QMP commands act on), for callers in the same process.
    pub fn jobs(&self) -> &Arc<JobHost> {
        &self.inner.jobs
    }

    /// The disk behind the export.
    pub fn disk(&self) -> &Arc<ServedDisk> {
        &self.inner.disk
    }

    /// Clients connected now.
    pub fn client_count(&self) -> usize {
        lock(&self.inner.clients).streams.len()
    }

    /// Waits until `quit` is asked over QMP (true) or `timeout` passes (false).
    pub fn wait_quit(&self, timeout: Option<Duration>) -> bool {
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        let mut quit = lock(&self.inner.quit);
        while !*quit {
            let wait = match deadline {
                Some(d) => match d.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => left,
                    _ => return false,
                },
                None => Duration::from_secs(1),
            };
            quit = self
                .inner
                .quit_changed
                .wait_timeout(quit, wait)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        true
    }

    /// Stops: refuses new clients, force-cancels a running job and waits for it, answers
    /// the requests in flight, disconnects every client, flushes the disk. Idempotent.
    pub fn shutdown(&self) -> io::Result<()> {
        if self.shut_down.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        let inner = &self.inner;
        inner.stopping.store(true, Ordering::SeqCst);
        inner.listener.wake();
        if let Some(qmp) = &self.qmp {
            qmp.stop();
        }
        inner.jobs.shutdown();
        let readers = {
            let mut clients = lock(&inner.clients);
            for stream in clients.streams.values() {
                let _ = stream.shutdown(std::net::Shutdown::Read);
            }
            std::mem::take(&mut clients.readers)
        };
        for reader in readers {
            let _ = reader.join();
        }
        drop(lock(&self.pool).take());
        for thread in lock(&self.threads).drain(..) {
            let _ = thread.join();
        }
        inner.request_quit();
        inner
            .disk
            .flush()
            .map_err(|e| io::Error::other(format!("flushing the disk: {e}")))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

impl Inner {
    fn request_quit(&self) {
        *lock(&self.quit) = true;
        self.quit_changed.notify_all();
    }
}

fn run_pool(rx: &Receiver<Work>) {
    for work in rx.iter() {
        work.connection.execute(work.request, work.cost);
    }
}

fn accept_loop(inner: &Arc<Inner>, pool: &crossbeam_channel::Sender<Work>) {
    loop {
        let stream = match inner.listener.accept() {
            Ok(stream) => stream,
            Err(_) if inner.stopping.load(Ordering::SeqCst) => return,
            // Out of descriptors and the like: the next accept may work once a client leaves.
            Err(_) => continue,
        };
        if inner.stopping.load(Ordering::SeqCst) {
            return;
        }
        let mut clients = lock(&inner.clients);
        clients.readers.retain(|h| !h.is_finished());
        if clients.streams.len() >= inner.max_clients {
            eprintln!(
                "blockmirror serve: refused a client: {} clients are connected (the limit)",
                inner.max_clients
            );
            let _ = stream.shutdown(std::net::Shutdown::Both);
            continue;
        }
        let (Ok(reader), Ok(writer)) = (stream.try_clone(), stream.try_clone()) else {
            continue;
        };
        let id = clients.next;
        clients.next += 1;
        clients.streams.insert(id, stream);
        let session = ServerSession::new(vec![inner.export.clone()], inner.limits);
        let connection = Connection::new(
            session,
            writer,
            Arc::clone(&inner.disk),
            Arc::clone(&inner.budget),
        );
        let (thread_inner, thread_pool) = (Arc::clone(inner), pool.clone());
        let spawned = std::thread::Builder::new()
            .name(format!("bm-serve-client-{id}"))
            .spawn(move || {
                connection.run_reader(reader, &thread_pool);
                lock(&thread_inner.clients).streams.remove(&id);
            });
        match spawned {
            Ok(handle) => clients.readers.push(handle),
            Err(_) => {
                if let Some(stream) = clients.streams.remove(&id) {
                    let _ = stream.shutdown(std::net::Shutdown::Both);
                }
            }
        }
    }
}
