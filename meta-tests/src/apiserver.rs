//! A real Kubernetes API server for integration tests.
//!
//! [`ApiServer::start`] runs an etcd (Debian's `etcd-server`) and a kube-apiserver v1.20.2
//! (built from Debian's `kubernetes` source package by `meta-tests/apiserver/build.sh`, which the
//! fixture runs when the binary or a package is missing, so a test fails rather than skips
//! when it cannot build), both listening on 127.0.0.1 only, on free ports, with their data,
//! certificates and logs in temporary directories. TLS everywhere on the API side: a
//! self-signed CA made with `openssl`, a serving certificate for 127.0.0.1/localhost,
//! client-certificate authentication (an admin in `system:masters`), a service-account key
//! pair (so the TokenRequest API works), `--authorization-mode=Node,RBAC`, anonymous auth
//! off, and only the admission plugins NamespaceLifecycle, NodeRestriction and the two
//! webhook ones (there is no controller-manager, so e.g. the ServiceAccount plugin would
//! reject every pod). Dropping the fixture stops both processes and removes the directories;
//! the processes also die with the test process (`PR_SET_PDEATHSIG`), even on a crash.
//!
//! Set `META_CNI_KEEP_APISERVER=1` to keep the directory (logs, certificates) after the test.

use serde_json::json;
use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock, mpsc};
use std::time::{Duration, Instant};

/// The Kubernetes version of the API server.
pub const VERSION: &str = "1.20.2";
/// Where `meta-tests/apiserver/build.sh` installs the binary (outside any clone).
pub const BINARY: &str = "/var/cache/meta-cni/kube-apiserver-1.20.2";
/// Debian's etcd.
pub const ETCD: &str = "/usr/bin/etcd";
/// The namespaces kube-apiserver's bootstrap controller creates after `/readyz` is up.
const SYSTEM_NAMESPACES: [&str; 3] = ["default", "kube-system", "kube-public"];

/// The service-account token issuer (and default audience) of the server.
pub const SA_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
/// The admin's user name (its certificate is also in group `system:masters`).
pub const ADMIN_USER: &str = "meta-cni-admin";

const ENABLED_ADMISSION: &str =
    "NamespaceLifecycle,NodeRestriction,MutatingAdmissionWebhook,ValidatingAdmissionWebhook";
// Every other plugin that v1.20 enables by default.
const DISABLED_ADMISSION: &str = "LimitRanger,ServiceAccount,DefaultStorageClass,\
PersistentVolumeClaimResize,DefaultTolerationSeconds,ResourceQuota,StorageObjectInUseProtection,\
Priority,TaintNodesByCondition,RuntimeClass,CertificateApproval,CertificateSigning,\
CertificateSubjectRestriction,DefaultIngressClass";

const OPENSSL_CNF: &str = "\
[req]
distinguished_name = dn
prompt = no
[dn]
CN = placeholder
[v3_ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign, digitalSignature
subjectKeyIdentifier = hash
[v3_server]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1, DNS:localhost, DNS:kubernetes, DNS:kubernetes.default, \
DNS:kubernetes.default.svc, DNS:kubernetes.default.svc.cluster.local
authorityKeyIdentifier = keyid
[v3_client]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = clientAuth
authorityKeyIdentifier = keyid
";

/// `meta-tests/apiserver/build.sh` of this checkout.
pub fn build_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("apiserver/build.sh")
}

fn tools_ready() -> bool {
    let version_ok = Command::new(BINARY)
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == format!("Kubernetes v{VERSION}"))
        .unwrap_or(false);
    version_ok && Path::new(ETCD).exists() && which("openssl").is_some() && which("curl").is_some()
}

fn which(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .chain(["/usr/bin".into(), "/bin".into()])
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

/// The kube-apiserver binary; runs `meta-tests/apiserver/build.sh` (once per process) when it,
/// etcd, openssl or curl is missing. Panics, with the script's log on stderr, when that fails.
pub fn ensure_built() -> PathBuf {
    static DONE: Mutex<bool> = Mutex::new(false);
    let mut done = DONE.lock().unwrap_or_else(|e| e.into_inner());
    if *done || tools_ready() {
        *done = true;
        return PathBuf::from(BINARY);
    }
    let script = build_script();
    eprintln!(
        "kube-apiserver v{VERSION} or a tool it needs is missing: running {} (building takes minutes)",
        script.display()
    );
    crate::run_fixture_script(&script, BINARY);
    assert!(
        tools_ready(),
        "{} succeeded but {BINARY} --version, {ETCD}, openssl or curl is still not usable",
        script.display()
    );
    *done = true;
    PathBuf::from(BINARY)
}

/// Spawns `cmd` from a thread that lives as long as the process, with `PR_SET_PDEATHSIG`
/// set: the child is killed when the test process ends, however it ends (the signal follows
/// the death of the spawning *thread*, hence the dedicated one).
fn spawn_tied_to_process(mut cmd: Command) -> std::io::Result<Child> {
    type Req = (Command, mpsc::Sender<std::io::Result<Child>>);
    static TX: OnceLock<Mutex<mpsc::Sender<Req>>> = OnceLock::new();
    let tx = TX.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Req>();
        std::thread::Builder::new()
            .name("apiserver-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
                // The sender lives in a static: the loop, and so this thread, never ends.
            })
            .expect("spawn the apiserver-spawner thread");
        Mutex::new(tx)
    });
    // SAFETY: prctl and getppid are async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::getppid() == 1 {
                return Err(std::io::Error::other("parent already gone"));
            }
            Ok(())
        });
    }
    let (rtx, rrx) = mpsc::channel();
    tx.lock()
        .unwrap_or_else(|e| e.into_inner())
        .send((cmd, rtx))
        .expect("apiserver-spawner thread gone");
    rrx.recv().expect("apiserver-spawner thread gone")
}

fn free_ports<const N: usize>() -> [u16; N] {
    let listeners: Vec<TcpListener> = (0..N)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0"))
        .collect();
    std::array::from_fn(|i| listeners[i].local_addr().expect("local_addr").port())
}

fn run_openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run openssl: {e}"));
    assert!(
        out.status.success(),
        "openssl {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn base64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::with_capacity(data.len().div_ceil(3) * 4);
    for c in data.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                s.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                s.push('=');
            }
        }
    }
    s
}

fn tail(path: &Path, lines: usize) -> String {
    let s = fs::read_to_string(path).unwrap_or_default();
    let v: Vec<&str> = s.lines().collect();
    v[v.len().saturating_sub(lines)..].join("\n")
}

fn stop(child: &mut Child) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    // SAFETY: plain kill(2) on our own child, not yet reaped.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// kube-apiserver on `secure` with the fixture's certificates in `dir`, backed by `etcd_url`.
fn apiserver_cmd(bin: &Path, dir: &Path, secure: u16, etcd_url: &str) -> Command {
    let pki = dir.join("pki");
    let p = |f: &str| pki.join(f).display().to_string();
    let log_file = |p: &Path| {
        fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
            .expect("open log")
    };
    let api_log = dir.join("kube-apiserver.log");
    // Every request is audited (metadata only) to `audit.log`: tests count requests.
    let policy = dir.join("audit-policy.yaml");
    fs::write(&policy, AUDIT_POLICY).expect("write the audit policy");
    let mut cmd = Command::new(bin);
    no_proxy(&mut cmd)
        .arg("--advertise-address=127.0.0.1")
        .arg("--bind-address=127.0.0.1")
        .arg(format!("--secure-port={secure}"))
        .arg(format!("--etcd-servers={etcd_url}"))
        .arg(format!("--tls-cert-file={}", p("apiserver.crt")))
        .arg(format!("--tls-private-key-file={}", p("apiserver.key")))
        .arg(format!("--client-ca-file={}", p("ca.crt")))
        .arg(format!(
            "--cert-dir={}",
            dir.join("apiserver-certs").display()
        ))
        .arg("--authorization-mode=Node,RBAC")
        .arg("--anonymous-auth=false")
        .arg(format!("--enable-admission-plugins={ENABLED_ADMISSION}"))
        .arg(format!("--disable-admission-plugins={DISABLED_ADMISSION}"))
        .arg(format!("--service-account-issuer={SA_ISSUER}"))
        .arg(format!("--service-account-key-file={}", p("sa.pub")))
        .arg(format!(
            "--service-account-signing-key-file={}",
            p("sa.key")
        ))
        .arg("--service-cluster-ip-range=10.96.0.0/12")
        // Endpoints may not hold a loopback address: no "kubernetes" endpoints at all.
        .arg("--endpoint-reconciler-type=none")
        .arg("--allow-privileged=true")
        .arg("--profiling=false")
        .arg(format!("--audit-policy-file={}", policy.display()))
        .arg(format!(
            "--audit-log-path={}",
            dir.join(AUDIT_LOG).display()
        ))
        .arg("--v=1")
        .stdin(Stdio::null())
        .stdout(log_file(&api_log))
        .stderr(log_file(&api_log));
    cmd
}

/// Waits until the API server at `url` is ready; Err(message, whether a retry may help).
/// Stops it on timeout.
fn wait_ready(apiserver: &mut Child, url: &str, dir: &Path) -> Result<(), (String, bool)> {
    let pki = dir.join("pki");
    let api_log = dir.join("kube-apiserver.log");
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        if let Ok(Some(st)) = apiserver.try_wait() {
            let log = tail(&api_log, 40);
            let retry = log.contains("address already in use");
            return Err((
                format!("kube-apiserver exited ({st}); kube-apiserver.log:\n{log}"),
                retry,
            ));
        }
        // `/readyz` turns 200 before the bootstrap controller has created the system
        // namespaces (default, kube-system, kube-public); tests use them, so the server
        // is ready for them only once all three exist.
        if let Ok((200, _)) = curl_get(url, &pki, "/readyz")
            && SYSTEM_NAMESPACES.iter().all(|ns| {
                matches!(
                    curl_get(url, &pki, &format!("/api/v1/namespaces/{ns}")),
                    Ok((200, _))
                )
            })
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            stop(apiserver);
            return Err((
                format!(
                    "kube-apiserver not ready (/readyz and the namespaces {SYSTEM_NAMESPACES:?}) after 180 s; kube-apiserver.log:\n{}\n--- readyz?verbose: {:?}",
                    tail(&api_log, 40),
                    curl_get(url, &pki, "/readyz?verbose")
                ),
                false,
            ));
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Removes proxy settings so that nothing meant for 127.0.0.1 goes through a proxy.
fn no_proxy(cmd: &mut Command) -> &mut Command {
    for v in [
        "http_proxy",
        "https_proxy",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "all_proxy",
        "ALL_PROXY",
        "no_proxy",
        "NO_PROXY",
    ] {
        cmd.env_remove(v);
    }
    cmd
}

/// The audit log's file name in the fixture's directory.
const AUDIT_LOG: &str = "audit.log";

/// Every request at level Metadata, once (when the response is complete).
const AUDIT_POLICY: &str = "apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [\"RequestReceived\", \"ResponseStarted\"]
rules:
  - level: Metadata
";

/// A running etcd + kube-apiserver pair; see the module docs.
pub struct ApiServer {
    apiserver: Child,
    etcd: Child,
    dir: Option<tempfile::TempDir>,
    etcd_dir: Option<tempfile::TempDir>,
    url: String,
    etcd_url: String,
    admin_kubeconfig: PathBuf,
    serial: AtomicU64,
}

impl ApiServer {
    /// Builds the binary if needed, starts etcd and the API server, waits for `/readyz`.
    /// Panics (with the logs) when anything fails.
    pub fn start() -> ApiServer {
        let bin = ensure_built();
        remove_stale_dirs();
        let dir = tempfile::Builder::new()
            .prefix("meta-cni-apiserver-")
            .tempdir()
            .expect("tempdir");
        // etcd fsyncs a lot: keep its data in memory when /dev/shm is there.
        let etcd_dir = if Path::new("/dev/shm").is_dir() {
            tempfile::Builder::new()
                .prefix("meta-cni-etcd-")
                .tempdir_in("/dev/shm")
        } else {
            tempfile::Builder::new().prefix("meta-cni-etcd-").tempdir()
        }
        .expect("etcd tempdir");
        for d in [dir.path(), etcd_dir.path()] {
            fs::write(d.join(OWNER_FILE), std::process::id().to_string()).expect("write owner");
        }
        let serial = AtomicU64::new(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_micros() as u64)
                .unwrap_or(1),
        );
        let pki = dir.path().join("pki");
        fs::create_dir_all(&pki).expect("mkdir pki");
        fs::write(pki.join("openssl.cnf"), OPENSSL_CNF).expect("write openssl.cnf");
        run_openssl(
            &pki,
            &[
                "req",
                "-x509",
                "-new",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.crt",
                "-days",
                "3650",
                "-subj",
                "/CN=meta-cni-test-ca",
                "-config",
                "openssl.cnf",
                "-extensions",
                "v3_ca",
            ],
        );
        issue_cert(
            &pki,
            &serial,
            "apiserver",
            "/CN=kube-apiserver",
            "v3_server",
        );
        let admin_subj = format!("/O=system:masters/CN={ADMIN_USER}");
        issue_cert(&pki, &serial, "admin", &admin_subj, "v3_client");
        run_openssl(
            &pki,
            &[
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
                "-out",
                "sa.key",
            ],
        );
        run_openssl(
            &pki,
            &["pkey", "-in", "sa.key", "-pubout", "-out", "sa.pub"],
        );

        let mut last_err = String::new();
        for attempt in 1..=3 {
            match Self::try_start(&bin, dir.path(), etcd_dir.path(), attempt) {
                Ok((etcd, apiserver, url, etcd_url)) => {
                    let mut s = ApiServer {
                        apiserver,
                        etcd,
                        dir: Some(dir),
                        etcd_dir: Some(etcd_dir),
                        url,
                        etcd_url,
                        admin_kubeconfig: PathBuf::new(),
                        serial,
                    };
                    s.admin_kubeconfig = s.write_kubeconfig(
                        "admin.kubeconfig",
                        ADMIN_USER,
                        json!({
                            "client-certificate-data": base64(&fs::read(pki.join("admin.crt")).expect("admin.crt")),
                            "client-key-data": base64(&fs::read(pki.join("admin.key")).expect("admin.key")),
                        }),
                    );
                    return s;
                }
                Err((msg, retry)) => {
                    last_err = msg;
                    if !retry {
                        break;
                    }
                }
            }
        }
        if std::env::var_os("META_CNI_KEEP_APISERVER").is_some() {
            eprintln!(
                "kept {} and {}",
                dir.keep().display(),
                etcd_dir.keep().display()
            );
        }
        panic!("starting etcd + kube-apiserver failed: {last_err}");
    }

    /// One try on fresh ports: Ok, or Err(message, whether a retry may help).
    #[allow(clippy::type_complexity)]
    fn try_start(
        bin: &Path,
        dir: &Path,
        etcd_data: &Path,
        attempt: u32,
    ) -> Result<(Child, Child, String, String), (String, bool)> {
        let [client, peer, secure] = free_ports::<3>();
        let etcd_url = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let data = etcd_data.join(format!("data-{attempt}"));
        let etcd_log = dir.join("etcd.log");
        let log_file = |p: &Path| {
            fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .expect("open log")
        };

        let mut cmd = Command::new(ETCD);
        no_proxy(&mut cmd)
            .args(["--name", "default", "--data-dir"])
            .arg(&data)
            .args(["--listen-client-urls", &etcd_url])
            .args(["--advertise-client-urls", &etcd_url])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("default={peer_url}")])
            .args(["--initial-cluster-state", "new"])
            .args(["--logger", "zap", "--log-outputs", "stderr"])
            .stdin(Stdio::null())
            .stdout(log_file(&etcd_log))
            .stderr(log_file(&etcd_log));
        let mut etcd =
            spawn_tied_to_process(cmd).map_err(|e| (format!("spawn {ETCD}: {e}"), false))?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(st)) = etcd.try_wait() {
                let log = tail(&etcd_log, 30);
                let retry = log.contains("address already in use");
                return Err((format!("etcd exited ({st}); etcd.log:\n{log}"), retry));
            }
            if etcd_healthy(client) {
                break;
            }
            if Instant::now() > deadline {
                stop(&mut etcd);
                return Err((
                    format!(
                        "etcd not healthy after 60 s; etcd.log:\n{}",
                        tail(&etcd_log, 30)
                    ),
                    false,
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }

        let mut apiserver = match spawn_tied_to_process(apiserver_cmd(bin, dir, secure, &etcd_url))
        {
            Ok(c) => c,
            Err(e) => {
                stop(&mut etcd);
                return Err((format!("spawn {}: {e}", bin.display()), false));
            }
        };
        let url = format!("https://127.0.0.1:{secure}");
        match wait_ready(&mut apiserver, &url, dir) {
            Ok(()) => Ok((etcd, apiserver, url, etcd_url)),
            Err(e) => {
                stop(&mut etcd);
                Err(e)
            }
        }
    }

    /// Stops kube-apiserver (SIGTERM, then SIGKILL after 10 s); etcd keeps running.
    /// Until [`ApiServer::restart_apiserver`], connections to its port are refused.
    pub fn stop_apiserver(&mut self) {
        stop(&mut self.apiserver);
    }

    /// Starts kube-apiserver again, on the same port, certificates and etcd, and waits
    /// until it is ready. Panics (with its log) when it does not come back.
    pub fn restart_apiserver(&mut self) {
        stop(&mut self.apiserver);
        let dir = self.dir().to_path_buf();
        let secure: u16 = self
            .url
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("port of the url");
        let bin = ensure_built();
        // The old listener may linger a moment; a few tries on the same port.
        let mut last = String::new();
        for _ in 0..5 {
            let mut c = spawn_tied_to_process(apiserver_cmd(&bin, &dir, secure, &self.etcd_url))
                .expect("spawn kube-apiserver");
            match wait_ready(&mut c, &self.url, &dir) {
                Ok(()) => {
                    self.apiserver = c;
                    return;
                }
                Err((msg, retry)) => {
                    stop(&mut c);
                    last = msg;
                    if !retry {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(500));
                }
            }
        }
        panic!("restarting kube-apiserver failed: {last}");
    }

    /// `https://127.0.0.1:<port>`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// `http://127.0.0.1:<port>` of the etcd behind the server.
    pub fn etcd_url(&self) -> &str {
        &self.etcd_url
    }

    /// The scratch directory: `pki/`, logs, kubeconfigs.
    pub fn dir(&self) -> &Path {
        self.dir.as_ref().expect("dir").path()
    }

    /// etcd's data directory (under /dev/shm when there is one).
    pub fn etcd_data_dir(&self) -> &Path {
        self.etcd_dir.as_ref().expect("etcd dir").path()
    }

    /// Process ids: [etcd, kube-apiserver].
    pub fn pids(&self) -> [u32; 2] {
        [self.etcd.id(), self.apiserver.id()]
    }

    /// The API server's log file.
    pub fn log_path(&self) -> PathBuf {
        self.dir().join("kube-apiserver.log")
    }

    /// The audit log: one JSON event per line (`audit.k8s.io/v1` Event, level Metadata,
    /// stage ResponseComplete), every request the API server answered.
    pub fn audit_log_path(&self) -> PathBuf {
        self.dir().join(AUDIT_LOG)
    }

    /// The audit log's events so far (a torn last line is skipped).
    pub fn audit_events(&self) -> Vec<serde_json::Value> {
        fs::read_to_string(self.audit_log_path())
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// A kubeconfig (JSON, which is YAML) for the admin: client certificate of
    /// [`ADMIN_USER`] in group `system:masters`, data embedded.
    pub fn admin_kubeconfig(&self) -> PathBuf {
        self.admin_kubeconfig.clone()
    }

    /// The CA that signed the serving and client certificates, PEM.
    pub fn ca_pem(&self) -> String {
        fs::read_to_string(self.ca_path()).expect("read ca.crt")
    }

    /// Path of the CA certificate (PEM).
    pub fn ca_path(&self) -> PathBuf {
        self.dir().join("pki/ca.crt")
    }

    /// A new kubeconfig that authenticates with the bearer `token` (e.g. from the
    /// TokenRequest API: `serviceaccounts/<name>/token`).
    pub fn kubeconfig_for_token(&self, token: &str) -> PathBuf {
        let n = self.serial.fetch_add(1, Ordering::SeqCst);
        self.write_kubeconfig(
            &format!("token-{n}.kubeconfig"),
            "token-user",
            json!({ "token": token }),
        )
    }

    /// A new kubeconfig with a fresh client certificate for `user` in `groups` (e.g.
    /// `system:node:n1` in `system:nodes`, for the Node authorizer).
    pub fn kubeconfig_for_user(&self, user: &str, groups: &[&str]) -> PathBuf {
        for s in std::iter::once(&user).chain(groups) {
            assert!(
                !s.is_empty() && !s.contains(['/', '=', '+', ',', '\\']),
                "unsupported character in certificate name {s:?}"
            );
        }
        let n = self.serial.fetch_add(1, Ordering::SeqCst);
        let name = format!("user-{n}");
        let subj: String =
            groups.iter().map(|g| format!("/O={g}")).collect::<String>() + &format!("/CN={user}");
        let pki = self.dir().join("pki");
        issue_cert(&pki, &self.serial, &name, &subj, "v3_client");
        self.write_kubeconfig(
            &format!("{name}.kubeconfig"),
            user,
            json!({
                "client-certificate-data": base64(&fs::read(pki.join(format!("{name}.crt"))).expect("crt")),
                "client-key-data": base64(&fs::read(pki.join(format!("{name}.key"))).expect("key")),
            }),
        )
    }

    /// GET `path` (e.g. `/api/v1/namespaces`) as the admin, with curl: (HTTP status, body).
    pub fn admin_get(&self, path: &str) -> (u16, String) {
        curl_get(&self.url, &self.dir().join("pki"), path)
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    /// The TCP addresses the etcd and kube-apiserver processes listen on, by process name.
    pub fn listeners(&self) -> Vec<(&'static str, SocketAddr)> {
        let mut v: Vec<_> = listening_addrs(self.etcd.id())
            .into_iter()
            .map(|a| ("etcd", a))
            .collect();
        v.extend(
            listening_addrs(self.apiserver.id())
                .into_iter()
                .map(|a| ("kube-apiserver", a)),
        );
        v
    }

    fn write_kubeconfig(&self, file: &str, user: &str, creds: serde_json::Value) -> PathBuf {
        let cfg = json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{
                "name": "meta-cni-test",
                "cluster": {
                    "server": self.url,
                    "certificate-authority-data": base64(self.ca_pem().as_bytes()),
                },
            }],
            "users": [{ "name": user, "user": creds }],
            "contexts": [{
                "name": "meta-cni-test",
                "context": { "cluster": "meta-cni-test", "user": user },
            }],
            "current-context": "meta-cni-test",
            "preferences": {},
        });
        let path = self.dir().join(file);
        fs::write(
            &path,
            serde_json::to_string_pretty(&cfg).expect("kubeconfig json"),
        )
        .expect("write kubeconfig");
        path
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        stop(&mut self.apiserver);
        stop(&mut self.etcd);
        if std::env::var_os("META_CNI_KEEP_APISERVER").is_some()
            && let (Some(d), Some(e)) = (self.dir.take(), self.etcd_dir.take())
        {
            eprintln!("kept {} and {}", d.keep().display(), e.keep().display());
        }
    }
}

const OWNER_FILE: &str = "owner.pid";

/// Removes the directories of fixtures whose test process died without dropping them
/// (killed, aborted): they would pile up, and the etcd ones live in memory.
fn remove_stale_dirs() {
    for (base, prefix) in [
        (std::env::temp_dir(), "meta-cni-apiserver-"),
        (PathBuf::from("/dev/shm"), "meta-cni-etcd-"),
        (std::env::temp_dir(), "meta-cni-etcd-"),
    ] {
        let Ok(rd) = fs::read_dir(&base) else {
            continue;
        };
        for e in rd.flatten() {
            if !e.file_name().to_string_lossy().starts_with(prefix) {
                continue;
            }
            let Ok(pid) = fs::read_to_string(e.path().join(OWNER_FILE)) else {
                continue;
            };
            if !Path::new(&format!("/proc/{}", pid.trim())).exists() {
                let _ = fs::remove_dir_all(e.path());
            }
        }
    }
}

fn issue_cert(pki: &Path, serial: &AtomicU64, name: &str, subj: &str, ext: &str) {
    let key = format!("{name}.key");
    let csr = format!("{name}.csr");
    let crt = format!("{name}.crt");
    run_openssl(
        pki,
        &[
            "req",
            "-new",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &csr,
            "-subj",
            subj,
            "-config",
            "openssl.cnf",
        ],
    );
    let n = serial.fetch_add(1, Ordering::SeqCst).to_string();
    run_openssl(
        pki,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-set_serial",
            &n,
            "-days",
            "3650",
            "-out",
            &crt,
            "-extfile",
            "openssl.cnf",
            "-extensions",
            ext,
        ],
    );
}

/// etcd's `/health` over plain HTTP/1.0 on 127.0.0.1.
fn etcd_healthy(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut buf = String::new();
    let _ = s.read_to_string(&mut buf);
    buf.starts_with("HTTP/1.") && buf.contains("\"health\":\"true\"")
}

/// GET with the admin's client certificate from `pki`; (status, body).
fn curl_get(url: &str, pki: &Path, path: &str) -> Result<(u16, String), String> {
    let mut cmd = Command::new("curl");
    let out = no_proxy(&mut cmd)
        .args(["-sS", "--noproxy", "*", "--max-time", "10"])
        .arg("--cacert")
        .arg(pki.join("ca.crt"))
        .arg("--cert")
        .arg(pki.join("admin.crt"))
        .arg("--key")
        .arg(pki.join("admin.key"))
        .args(["-w", "\n%{http_code}"])
        .arg(format!("{url}{path}"))
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run curl: {e}"))?;
    let s = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        return Err(format!(
            "curl {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let (body, code) = s.rsplit_once('\n').unwrap_or(("", &s));
    let code = code
        .trim()
        .parse()
        .map_err(|_| format!("curl gave no status: {s:?}"))?;
    Ok((code, body.to_string()))
}

/// Listening TCP sockets (v4 and v6) of process `pid`, from /proc.
pub fn listening_addrs(pid: u32) -> Vec<SocketAddr> {
    let mut inodes = std::collections::HashSet::new();
    if let Ok(rd) = fs::read_dir(format!("/proc/{pid}/fd")) {
        for e in rd.flatten() {
            if let Ok(t) = fs::read_link(e.path()) {
                let t = t.display().to_string();
                if let Some(i) = t.strip_prefix("socket:[").and_then(|r| r.strip_suffix(']')) {
                    inodes.insert(i.to_string());
                }
            }
        }
    }
    let mut out = Vec::new();
    for (file, v6) in [("tcp", false), ("tcp6", true)] {
        let Ok(s) = fs::read_to_string(format!("/proc/{pid}/net/{file}")) else {
            continue;
        };
        for line in s.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 10 || f[3] != "0A" || !inodes.contains(f[9]) {
                continue;
            }
            if let Some(a) = parse_proc_addr(f[1], v6) {
                out.push(a);
            }
        }
    }
    out
}

fn parse_proc_addr(s: &str, v6: bool) -> Option<SocketAddr> {
    let (ip, port) = s.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    if v6 {
        let mut b = [0u8; 16];
        for (i, w) in b.chunks_mut(4).enumerate() {
            let word = u32::from_str_radix(ip.get(i * 8..i * 8 + 8)?, 16).ok()?;
            w.copy_from_slice(&word.to_ne_bytes());
        }
        Some(SocketAddr::from((b, port)))
    } else {
        let word = u32::from_str_radix(ip, 16).ok()?;
        Some(SocketAddr::from((word.to_ne_bytes(), port)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648() {
        for (i, o) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(i.as_bytes()), o);
        }
    }

    #[test]
    fn proc_addresses_parse() {
        assert_eq!(
            parse_proc_addr("0100007F:1F90", false),
            Some("127.0.0.1:8080".parse().unwrap())
        );
        assert_eq!(
            parse_proc_addr("00000000000000000000000001000000:0050", true),
            Some("[::1]:80".parse().unwrap())
        );
    }
}
