//! A real single-node Slurm cluster for the tests of the Slurm executor: `munged`, `slurmctld`
//! and `slurmd` (Debian packages munge, slurmctld, slurmd, slurm-client; .ci/run installs them),
//! started once per test process on first use of [`cluster`], in a private temporary directory:
//! its own slurm.conf (reached through `SLURM_CONF`, see [`Cluster::env`]), its own munge key and
//! socket (`AuthInfo=socket=`), state, spool and log directories, and free ports, so it clashes
//! neither with a second test process nor with a developer's cluster or the system's munged. It
//! runs as the current user (root or not: `SlurmUser` and `SlurmdUser` are that user).
//!
//! In it: one node (this host under its short hostname, at 127.0.0.1) with at least
//! [`MIN_CPUS`] CPUs — more than the hardware on small machines, on purpose, so that several
//! 1-CPU jobs run at once (`SlurmdParameters=config_overrides`) — the default partition
//! [`PARTITION`], fresh partitions per test ([`Cluster::new_partition`]) that a test can hold
//! (jobs stay PENDING) and release without disturbing other tests, and job states read through
//! `scontrol`/`squeue`. Not in it: accounting (`sacct` needs slurmdbd), cgroups (no memory or
//! CPU enforcement), GRES, `srun` steps across nodes, time limits under a minute.
//!
//! Lifetime: the daemons are children of a thread that lives as long as the test process, with
//! a parent-death signal (SIGKILL), so none outlives it; at a normal exit (passed or failed) an
//! `atexit` hook cancels leftover jobs, stops the daemons and removes the directory. A test
//! process that is killed leaves its directory and, if a job was running, that job's
//! `slurmstepd` and processes: the next test process that starts a cluster kills those and
//! removes the directory.
#![allow(clippy::print_stderr)]

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The default partition: every job not given `--partition` runs there.
pub const PARTITION: &str = "pipe";
/// The node has at least this many CPUs, whatever the hardware.
pub const MIN_CPUS: u32 = 8;
/// How often the waiting helpers ask `scontrol`: one call costs ~10 ms of CPU, and a trivial
/// job's result is visible ~1 s after submission (BENCHMARKS_SLURM.md), so 100 ms is prompt
/// without busy-waiting.
pub const POLL: Duration = Duration::from_millis(100);
/// How long the cluster may take to show its node idle (~1 s on an idle machine).
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Job states after which a job never runs again.
pub const FINAL_STATES: &[&str] = &[
    "COMPLETED",
    "FAILED",
    "CANCELLED",
    "TIMEOUT",
    "NODE_FAIL",
    "OUT_OF_MEMORY",
    "BOOT_FAIL",
    "DEADLINE",
    "PREEMPTED",
];

/// The running cluster; see the module doc.
pub struct Cluster {
    dir: PathBuf,
    conf: PathBuf,
    node: String,
    cpus: u32,
    user: String,
    tools: Tools,
    /// Daemons that exited, with their status (the monitor thread records them).
    exited: Arc<Mutex<Vec<String>>>,
    /// Asks the monitor thread to stop the daemons; it answers on the channel it is given.
    stop: Mutex<mpsc::Sender<mpsc::Sender<()>>>,
    partitions: AtomicUsize,
}

enum State {
    Up(Box<Cluster>),
    Missing(String),
    Failed(String),
}

static CLUSTER: OnceLock<State> = OnceLock::new();

/// The test process's cluster, started on first use. `None` (after a notice) when the Slurm or
/// munge programs are not installed; a panic instead when env `CI` is set (.ci/run installs
/// them), and whenever the cluster does not come up.
pub fn cluster() -> Option<&'static Cluster> {
    match CLUSTER.get_or_init(init) {
        State::Up(c) => Some(c),
        State::Missing(what) => {
            pipe_steps::shared_data::skipped(&format!(
                "Slurm test cluster unavailable: {what} not found (apt-get install slurmctld slurmd slurm-client munge)"
            ));
            None
        }
        State::Failed(e) => panic!("{e}"),
    }
}

/// Absolute paths of the programs the cluster needs.
#[derive(Clone)]
struct Tools {
    munged: PathBuf,
    slurmctld: PathBuf,
    slurmd: PathBuf,
    sbatch: PathBuf,
    sinfo: PathBuf,
    scontrol: PathBuf,
    squeue: PathBuf,
    scancel: PathBuf,
}

impl Tools {
    /// Looks in PATH and the sbin directories (daemons live in /usr/sbin, which a non-root PATH
    /// often lacks); `Err` names what is missing.
    fn find() -> Result<Tools, String> {
        let mut dirs: Vec<PathBuf> =
            std::env::var_os("PATH").map(|p| std::env::split_paths(&p).collect()).unwrap_or_default();
        dirs.extend(["/usr/sbin", "/usr/local/sbin", "/sbin", "/usr/bin", "/usr/local/bin"].map(PathBuf::from));
        let mut missing = Vec::new();
        let mut find = |name: &str| {
            let found = dirs.iter().map(|d| d.join(name)).find(|p| p.is_file());
            if found.is_none() {
                missing.push(name.to_string());
            }
            found.unwrap_or_default()
        };
        let tools = Tools {
            munged: find("munged"),
            slurmctld: find("slurmctld"),
            slurmd: find("slurmd"),
            sbatch: find("sbatch"),
            sinfo: find("sinfo"),
            scontrol: find("scontrol"),
            squeue: find("squeue"),
            scancel: find("scancel"),
        };
        if missing.is_empty() {
            Ok(tools)
        } else {
            Err(missing.join(", "))
        }
    }
}

fn init() -> State {
    let tools = match Tools::find() {
        Ok(t) => t,
        Err(missing) if std::env::var_os("CI").is_some() => {
            return State::Failed(format!(
                "Slurm test cluster: {missing} not found (CI is set, so this is an error; .ci/run installs \
                 slurmctld slurmd slurm-client munge)"
            ))
        }
        Err(missing) => return State::Missing(missing),
    };
    remove_stale_dirs();
    // The daemons' parent-death signal fires when the *thread* that spawned them ends, so they
    // are spawned by a thread that lives as long as the process (test threads end with their test).
    let (tx, rx) = mpsc::channel();
    let spawned = std::thread::Builder::new().name("slurm-cluster".into()).spawn(move || run_cluster(tools, tx));
    if let Err(e) = spawned {
        return State::Failed(format!("Slurm test cluster: cannot start its thread: {e}"));
    }
    match rx.recv() {
        Ok(Ok(cluster)) => {
            // SAFETY: registers a plain function; it runs once, at exit.
            unsafe { libc::atexit(shutdown_at_exit) };
            State::Up(Box::new(cluster))
        }
        Ok(Err(e)) => State::Failed(e),
        Err(_) => State::Failed("Slurm test cluster: its thread ended without an answer".into()),
    }
}

extern "C" fn shutdown_at_exit() {
    if let Some(State::Up(c)) = CLUSTER.get() {
        c.shutdown();
    }
}

/// Body of the cluster's thread: start (retrying with new ports when one was taken meanwhile),
/// report, then watch the daemons until asked to stop them.
fn run_cluster(tools: Tools, report: mpsc::Sender<Result<Cluster, String>>) {
    let mut attempt = 0;
    let (mut cluster, mut children) = loop {
        attempt += 1;
        match start(&tools, attempt) {
            Ok(started) => break started,
            Err(e) if e.port_taken && attempt < 3 => continue,
            Err(e) => {
                let _ = report.send(Err(e.message));
                return;
            }
        }
    };
    let (stop_tx, stop_rx) = mpsc::channel::<mpsc::Sender<()>>();
    cluster.stop = Mutex::new(stop_tx);
    let exited = cluster.exited.clone();
    if report.send(Ok(cluster)).is_err() {
        return;
    }
    loop {
        match stop_rx.recv_timeout(Duration::from_millis(500)) {
            Ok(done) => {
                stop_all(&mut children);
                let _ = done.send(());
                return;
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                for (name, child) in children.iter_mut() {
                    if let Ok(Some(status)) = child.try_wait() {
                        let mut exited = exited.lock().unwrap_or_else(|p| p.into_inner());
                        let line = format!("{name} exited: {status}");
                        if !exited.contains(&line) {
                            exited.push(line);
                        }
                    }
                }
            }
            // The Cluster is in a static and never dropped; this is unreachable in practice.
            Err(mpsc::RecvTimeoutError::Disconnected) => loop {
                std::thread::park();
            },
        }
    }
}

/// Kills the daemons in reverse start order (slurmd, slurmctld, munged) and reaps them. `Child`
/// remembers a reaped child, so a daemon that already died is not signalled (no PID reuse).
fn stop_all(children: &mut [(&'static str, Child)]) {
    for (_, child) in children.iter_mut().rev() {
        let _ = child.kill();
        let _ = child.wait();
    }
}

struct StartError {
    message: String,
    /// A daemon could not bind its port (taken between choosing and binding): worth a retry.
    port_taken: bool,
}

/// The daemons, named, in start order.
type Daemons = Vec<(&'static str, Child)>;

fn start(tools: &Tools, attempt: u32) -> Result<(Cluster, Daemons), StartError> {
    let fail = |message: String| StartError { message, port_taken: false };
    let dir = std::env::temp_dir().join(format!("{STATE_PREFIX}{}-{attempt}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    let key_dir = dir.join("munge-key");
    let socket_dir = dir.join("munge");
    let log = dir.join("log");
    // munged insists that every directory above its socket is searchable by all, and that its
    // key's directory is private.
    for (d, mode) in [(&dir, 0o755), (&key_dir, 0o700), (&socket_dir, 0o755), (&log, 0o755)] {
        fs::create_dir_all(d)
            .and_then(|_| fs::set_permissions(d, fs::Permissions::from_mode(mode)))
            .map_err(|e| fail(format!("Slurm test cluster: cannot create {}: {e}", d.display())))?;
    }
    for d in ["state", "spool"] {
        fs::create_dir_all(dir.join(d)).map_err(|e| fail(format!("Slurm test cluster: cannot create {d}: {e}")))?;
    }
    let key = key_dir.join("munge.key");
    write_key(&key).map_err(|e| fail(format!("Slurm test cluster: cannot write {}: {e}", key.display())))?;
    fs::set_permissions(&key, fs::Permissions::from_mode(0o600))
        .map_err(|e| fail(format!("Slurm test cluster: cannot chmod {}: {e}", key.display())))?;

    let node = short_hostname().map_err(fail)?;
    let (real_cpus, real_memory) = hardware(&tools.slurmd).map_err(fail)?;
    let cpus = real_cpus.max(MIN_CPUS);
    // Below what slurmd reports, as Slurm asks; at least 1 GiB so that DefMemPerCPU fits.
    let memory = (real_memory * 9 / 10).max(1024);
    let user = current_user().map_err(fail)?;
    let (ctld_port, slurmd_port) = free_ports().map_err(|e| fail(format!("Slurm test cluster: no free port: {e}")))?;
    // slurm.conf.in names the socket as this path: @DIR@/munge/munge.socket.
    let socket = socket_dir.join("munge.socket");
    let conf = dir.join("slurm.conf");
    let text = slurm_conf(&ConfValues { dir: &dir, node: &node, user: &user, cpus, memory, ctld_port, slurmd_port })
        .map_err(fail)?;
    fs::write(&conf, text).map_err(|e| fail(format!("Slurm test cluster: cannot write {}: {e}", conf.display())))?;

    let mut children: Daemons = Vec::new();
    let result = (|| {
        let munged_args = [
            "-F".to_string(),
            format!("--socket={}", socket.display()),
            format!("--key-file={}", key.display()),
            format!("--pid-file={}", dir.join("munged.pid").display()),
            format!("--log-file={}", log.join("munged.log").display()),
            format!("--seed-file={}", key_dir.join("munged.seed").display()),
        ];
        children.push(("munged", daemon(&tools.munged, &munged_args, &conf, &log.join("munged.out"))?));
        wait_until(Duration::from_secs(10), || socket.exists(), &mut children, "munged did not create its socket")?;
        children.push(("slurmctld", daemon(&tools.slurmctld, &["-D".into()], &conf, &log.join("slurmctld.out"))?));
        children.push(("slurmd", daemon(&tools.slurmd, &["-D".into()], &conf, &log.join("slurmd.out"))?));
        let sinfo = || {
            Command::new(&tools.sinfo)
                .args(["-h", "-n", &node, "-o", "%T"])
                .env("SLURM_CONF", &conf)
                .stderr(Stdio::null())
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "idle")
                .unwrap_or(false)
        };
        wait_until(START_TIMEOUT, sinfo, &mut children, "the node did not become idle in `sinfo`")
    })();
    if let Err(what) = result {
        stop_all(&mut children);
        let logs = read_logs(&dir);
        let port_taken = logs.contains("Address already in use");
        return Err(StartError {
            message: format!(
                "Slurm test cluster in {} did not start: {what}\n(the directory is kept for inspection; the next \
                 test process removes it)\n{logs}",
                dir.display()
            ),
            port_taken,
        });
    }
    let (placeholder, _) = mpsc::channel();
    let cluster = Cluster {
        dir,
        conf,
        node,
        cpus,
        user,
        tools: tools.clone(),
        exited: Arc::new(Mutex::new(Vec::new())),
        stop: Mutex::new(placeholder),
        partitions: AtomicUsize::new(0),
    };
    Ok((cluster, children))
}

/// Polls `ready` every 20 ms; fails when `timeout` passes or a daemon exits first.
fn wait_until(
    timeout: Duration,
    mut ready: impl FnMut() -> bool,
    children: &mut [(&'static str, Child)],
    what: &str,
) -> Result<(), String> {
    let start = Instant::now();
    loop {
        if ready() {
            return Ok(());
        }
        for (name, child) in children.iter_mut() {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!("{what}: {name} exited ({status})"));
            }
        }
        if start.elapsed() > timeout {
            return Err(format!("{what} within {} s", timeout.as_secs()));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Spawns a daemon in the foreground with SIGKILL as its parent-death signal.
fn daemon(program: &Path, args: &[String], conf: &Path, out: &Path) -> Result<Child, String> {
    let file = fs::File::create(out).map_err(|e| format!("cannot create {}: {e}", out.display()))?;
    let file2 = file.try_clone().map_err(|e| format!("cannot dup {}: {e}", out.display()))?;
    let mut cmd = Command::new(program);
    cmd.args(args).stdin(Stdio::null()).stdout(file).stderr(file2);
    strip_slurm_env(&mut cmd);
    cmd.env("SLURM_CONF", conf);
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: prctl and getppid are async-signal-safe; nothing is allocated between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The parent may have died before prctl: then no signal would ever come.
            if libc::getppid() != parent {
                return Err(io::Error::other("parent exited"));
            }
            Ok(())
        });
    }
    cmd.spawn().map_err(|e| format!("cannot start {}: {e}", program.display()))
}

/// Removes variables of a surrounding Slurm job or user settings (`SBATCH_PARTITION`, …) that
/// would change what the client commands do.
fn strip_slurm_env(cmd: &mut Command) {
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if ["SLURM_", "SBATCH_", "SQUEUE_", "SINFO_", "SCONTROL_", "SCANCEL_", "SALLOC_", "SRUN_"]
            .iter()
            .any(|p| name.starts_with(p))
        {
            cmd.env_remove(name.as_ref());
        }
    }
}

const STATE_PREFIX: &str = "pipe-slurm-";

/// Removes the state directories of test processes that no longer exist, after killing what
/// their clusters left running: a job's `slurmstepd`, its script and the script's children
/// outlive a test process that was killed, and all of them carry the cluster's `SLURM_CONF`.
fn remove_stale_dirs() {
    let Ok(entries) = fs::read_dir(std::env::temp_dir()) else { return };
    let mut stale = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix(STATE_PREFIX).and_then(|rest| rest.split('-').next()) else { continue };
        if pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists() {
            stale.push(entry.path());
        }
    }
    if stale.is_empty() {
        return;
    }
    let confs: Vec<Vec<u8>> =
        stale.iter().map(|d| format!("SLURM_CONF={}", d.join("slurm.conf").display()).into_bytes()).collect();
    for proc_entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = proc_entry.file_name().to_str().and_then(|p| p.parse::<libc::pid_t>().ok()) else { continue };
        // Only our own processes' environments are readable.
        let Ok(environ) = fs::read(proc_entry.path().join("environ")) else { continue };
        if environ.split(|b| *b == 0).any(|var| confs.iter().any(|c| var == c.as_slice())) {
            // SAFETY: a plain signal to a process that belongs to a dead test cluster.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
    for dir in stale {
        let _ = fs::remove_dir_all(dir);
    }
}

fn write_key(path: &Path) -> io::Result<()> {
    let mut key = [0u8; 1024];
    fs::File::open("/dev/urandom")?.read_exact(&mut key)?;
    fs::write(path, key)
}

/// The name Slurm compares `SlurmctldHost` and `NodeName` with: the hostname up to its first dot.
fn short_hostname() -> Result<String, String> {
    let full = fs::read_to_string("/proc/sys/kernel/hostname")
        .map_err(|e| format!("Slurm test cluster: cannot read /proc/sys/kernel/hostname: {e}"))?;
    Ok(full.trim().split('.').next().unwrap_or_default().to_string())
}

/// (CPUs, RealMemory in MiB) as `slurmd -C` reports them.
fn hardware(slurmd: &Path) -> Result<(u32, u64), String> {
    let mut cmd = Command::new(slurmd);
    cmd.arg("-C");
    strip_slurm_env(&mut cmd);
    let out = cmd.output().map_err(|e| format!("Slurm test cluster: cannot run `slurmd -C`: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let value =
        |key: &str| text.split_whitespace().find_map(|t| t.strip_prefix(key)).and_then(|v| v.parse::<u64>().ok());
    match (value("CPUs="), value("RealMemory=")) {
        (Some(c), Some(m)) => Ok((c as u32, m)),
        _ => Err(format!(
            "Slurm test cluster: unexpected `slurmd -C` output ({}): {text}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )),
    }
}

fn current_user() -> Result<String, String> {
    let out =
        Command::new("id").arg("-un").output().map_err(|e| format!("Slurm test cluster: cannot run `id -un`: {e}"))?;
    let name = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if name.is_empty() {
        return Err("Slurm test cluster: `id -un` printed no user name".into());
    }
    Ok(name)
}

/// Two distinct free TCP ports (on all addresses, as the daemons bind them).
fn free_ports() -> io::Result<(u16, u16)> {
    let a = TcpListener::bind("0.0.0.0:0")?;
    let b = TcpListener::bind("0.0.0.0:0")?;
    Ok((a.local_addr()?.port(), b.local_addr()?.port()))
}

struct ConfValues<'a> {
    dir: &'a Path,
    node: &'a str,
    user: &'a str,
    cpus: u32,
    memory: u64,
    ctld_port: u16,
    slurmd_port: u16,
}

/// slurm.conf.in (shared with scripts/slurm-dev-cluster.sh) filled in; an error names a
/// placeholder left over.
fn slurm_conf(v: &ConfValues) -> Result<String, String> {
    let mut text = include_str!("slurm.conf.in").to_string();
    for (name, value) in [
        ("@DIR@", v.dir.display().to_string()),
        ("@NODE@", v.node.to_string()),
        ("@USER@", v.user.to_string()),
        ("@CPUS@", v.cpus.to_string()),
        ("@MEMORY@", v.memory.to_string()),
        ("@CTLD_PORT@", v.ctld_port.to_string()),
        ("@SLURMD_PORT@", v.slurmd_port.to_string()),
        ("@PARTITION@", PARTITION.to_string()),
    ] {
        text = text.replace(name, &value);
    }
    let left = text.match_indices('@').find_map(|(i, _)| {
        let rest = &text[i + 1..];
        let end = rest.find(|c: char| !(c.is_ascii_uppercase() || c == '_'))?;
        (end > 0 && rest[end..].starts_with('@')).then(|| &rest[..end])
    });
    match left {
        Some(name) => {
            Err(format!("Slurm test cluster: slurm.conf.in has a placeholder this harness does not fill: @{name}@"))
        }
        None => Ok(text),
    }
}

fn read_logs(dir: &Path) -> String {
    let mut out = String::new();
    for name in ["munged.log", "munged.out", "slurmctld.log", "slurmctld.out", "slurmd.log", "slurmd.out"] {
        let path = dir.join("log").join(name);
        let Ok(text) = fs::read_to_string(&path) else { continue };
        let lines: Vec<&str> = text.lines().collect();
        let tail = &lines[lines.len().saturating_sub(30)..];
        if !tail.is_empty() {
            out.push_str(&format!("--- {} (last {} lines)\n{}\n", path.display(), tail.len(), tail.join("\n")));
        }
    }
    out
}

/// Parses `scontrol show … -o` output (`Key=Value` separated by spaces; a word without `=`,
/// or whose part before `=` is not a key, continues the previous value).
pub fn parse_record(line: &str) -> BTreeMap<String, String> {
    let mut map = BTreeMap::new();
    let mut last: Option<String> = None;
    for word in line.split_whitespace() {
        match word.split_once('=') {
            Some((k, v)) if !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || "_/:".contains(c)) => {
                map.insert(k.to_string(), v.to_string());
                last = Some(k.to_string());
            }
            _ => {
                if let Some(value) = last.as_ref().and_then(|k| map.get_mut(k)) {
                    value.push(' ');
                    value.push_str(word);
                }
            }
        }
    }
    map
}

impl Cluster {
    /// Points `cmd` at this cluster: `SLURM_CONF`, and no inherited Slurm variables.
    pub fn env<'a>(&self, cmd: &'a mut Command) -> &'a mut Command {
        strip_slurm_env(cmd);
        cmd.env("SLURM_CONF", &self.conf)
    }

    /// `program` (e.g. "sbatch") with [`Cluster::env`] applied.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new(program);
        self.env(&mut cmd);
        cmd
    }

    /// The default partition.
    pub fn partition(&self) -> &str {
        PARTITION
    }

    /// The node's name (this host's short hostname).
    pub fn node(&self) -> &str {
        &self.node
    }

    /// CPUs the node offers (at least [`MIN_CPUS`]).
    pub fn cpus(&self) -> u32 {
        self.cpus
    }

    /// The cluster's slurm.conf (what `SLURM_CONF` names).
    pub fn conf(&self) -> &Path {
        &self.conf
    }

    /// The cluster's private directory (state, spool, logs).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Runs a client command, panicking with its stderr and the daemon logs when it fails.
    fn client(&self, program: &Path, args: &[&str]) -> Output {
        let out = self
            .command(program)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()));
        if !out.status.success() {
            panic!(
                "{} {} failed ({}): {}\n{}",
                program.display(),
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim(),
                self.logs()
            );
        }
        out
    }

    /// `sbatch --parsable ARGS`: the new job's id.
    pub fn sbatch(&self, args: &[&str]) -> String {
        let mut all = vec!["--parsable"];
        all.extend_from_slice(args);
        let out = self.client(&self.tools.sbatch, &all);
        let text = String::from_utf8_lossy(&out.stdout);
        // `--parsable` prints "ID" or "ID;CLUSTER".
        text.trim().split(';').next().unwrap_or_default().to_string()
    }

    /// `scancel ID`.
    pub fn scancel(&self, id: &str) {
        self.client(&self.tools.scancel, &[id]);
    }

    /// `scontrol show job -o ID` as key → value (`JobState`, `ExitCode`, `StdOut`, `Reason`, …);
    /// empty when the controller does not know the job (never submitted, or gone after
    /// `MinJobAge`).
    pub fn scontrol_job(&self, id: &str) -> BTreeMap<String, String> {
        let out = self
            .command(&self.tools.scontrol)
            .args(["show", "job", "-o", id])
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run scontrol: {e}"));
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() {
            if stderr.contains("Invalid job id") {
                return BTreeMap::new();
            }
            panic!("scontrol show job {id} failed ({}): {}\n{}", out.status, stderr.trim(), self.logs());
        }
        parse_record(String::from_utf8_lossy(&out.stdout).lines().next().unwrap_or_default())
    }

    /// The job's `JobState` ("" when unknown).
    pub fn job_state(&self, id: &str) -> String {
        self.scontrol_job(id).remove("JobState").unwrap_or_default()
    }

    /// Waits until the job is in a state of [`FINAL_STATES`] and returns its record; panics
    /// with the record and the daemon logs after `timeout`.
    pub fn wait_final(&self, id: &str, timeout: Duration) -> BTreeMap<String, String> {
        self.wait_job(id, timeout, "a final state", |state| FINAL_STATES.contains(&state))
    }

    /// Waits until the job's `JobState` is `state` (e.g. "RUNNING").
    pub fn wait_state(&self, id: &str, state: &str, timeout: Duration) -> BTreeMap<String, String> {
        self.wait_job(id, timeout, state, |s| s == state)
    }

    fn wait_job(
        &self,
        id: &str,
        timeout: Duration,
        what: &str,
        done: impl Fn(&str) -> bool,
    ) -> BTreeMap<String, String> {
        let start = Instant::now();
        loop {
            let record = self.scontrol_job(id);
            if done(record.get("JobState").map(String::as_str).unwrap_or_default()) {
                return record;
            }
            if start.elapsed() > timeout {
                panic!("job {id} did not reach {what} within {timeout:?}: {record:?}\n{}", self.logs());
            }
            std::thread::sleep(POLL);
        }
    }

    /// Ids of all jobs in the queue (pending, running, completing), any partition. Tests run in
    /// parallel and share the cluster: prefer [`Cluster::squeue_ids_in`] with a partition of
    /// their own.
    pub fn squeue_ids(&self) -> Vec<String> {
        self.squeue(&[])
    }

    /// Ids of the queued jobs of one partition.
    pub fn squeue_ids_in(&self, partition: &str) -> Vec<String> {
        self.squeue(&["-p", partition])
    }

    fn squeue(&self, extra: &[&str]) -> Vec<String> {
        let mut args = vec!["-h", "-o", "%i"];
        args.extend_from_slice(extra);
        let out = self.client(&self.tools.squeue, &args);
        String::from_utf8_lossy(&out.stdout).lines().map(|l| l.trim().to_string()).filter(|l| !l.is_empty()).collect()
    }

    /// A new partition on the node, named after `hint` and unique in this cluster, up: a test
    /// that owns it can hold and release it, and list its jobs, without seeing other tests'.
    pub fn new_partition(&self, hint: &str) -> String {
        let n = self.partitions.fetch_add(1, Ordering::Relaxed);
        let clean: String = hint.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).take(24).collect();
        let name = format!("t{n}_{clean}");
        self.client(
            &self.tools.scontrol,
            &[
                "create",
                &format!("PartitionName={name}"),
                &format!("Nodes={}", self.node),
                "MaxTime=30",
                "DefaultTime=10",
                "DefMemPerCPU=256",
                "State=UP",
            ],
        );
        name
    }

    /// Holds a partition: jobs are still accepted but stay PENDING (Reason=PartitionDown).
    pub fn hold_partition(&self, partition: &str) {
        self.client(&self.tools.scontrol, &["update", &format!("PartitionName={partition}"), "State=DOWN"]);
    }

    /// Lets a held partition's jobs start.
    pub fn release_partition(&self, partition: &str) {
        self.client(&self.tools.scontrol, &["update", &format!("PartitionName={partition}"), "State=UP"]);
    }

    /// The ends of the daemon logs, and which daemons exited: for panic messages.
    pub fn logs(&self) -> String {
        let exited = self.exited.lock().unwrap_or_else(|p| p.into_inner()).join("\n");
        format!("{}{}", if exited.is_empty() { String::new() } else { format!("{exited}\n") }, read_logs(&self.dir))
    }

    /// At exit: cancel what is left, stop the daemons, remove the directory. Never panics (a
    /// panic in an atexit hook aborts).
    fn shutdown(&self) {
        let quiet = |program: &Path, args: &[&str]| {
            self.command(program).args(args).stdin(Stdio::null()).stderr(Stdio::null()).output().ok()
        };
        let user = format!("--user={}", self.user);
        quiet(&self.tools.scancel, &["--quiet", &user]);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            match quiet(&self.tools.squeue, &["-h", "-o", "%i"]) {
                Some(o) if o.status.success() && o.stdout.iter().all(u8::is_ascii_whitespace) => break,
                Some(o) if o.status.success() => std::thread::sleep(Duration::from_millis(100)),
                _ => break,
            }
        }
        let (done_tx, done_rx) = mpsc::channel();
        let sent = self.stop.lock().map(|s| s.send(done_tx).is_ok()).unwrap_or(false);
        if sent {
            let _ = done_rx.recv_timeout(Duration::from_secs(5));
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}
