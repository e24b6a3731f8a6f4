//! `meta-cni install`: the DaemonSet's installer (what Multus's thick-plugin installer and
//! flannel's install-cni do, without a shell).
//!
//! One shot, in this order: the plugin binaries are copied into the host's CNI bin dir
//! (each atomically: a temp file in the destination dir, fsync, 0755, rename; skipped when
//! the destination is identical); the plugin's kubeconfig is written from the pod's
//! ServiceAccount (token inline, CA as data, 0600); the installer waits for the readiness
//! indicator file (`--wait-for`, the agent's subnet file) and then writes the conflist in
//! place in the conf dir (temp file in the same dir whose name kubelet's runtime ignores,
//! fsync, rename: containerd's watcher sees the rename in the dir it watches).
//!
//! With `--watch` it keeps running: every interval it rewrites the kubeconfig when the
//! (rotated) token or the CA changed and the conflist when someone deleted or changed it.
//! On SIGTERM/SIGINT it asks the API server about its own DaemonSet (`--daemonset NS/NAME`):
//! gone, being deleted, or its credentials refused (the ServiceAccount went with it) →
//! uninstall (conflist and kubeconfig removed, so the node turns NotReady instead of
//! starting pods without networks); still there (rollout restart, drain) or no answer →
//! everything stays.
//!
//! Logs go to stderr, prefixed `meta-cni install: `; stdout is only used by `--help`.
//! Exit codes: 0 done, 1 failed, 2 bad flags.

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions, Permissions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The binaries installed by default.
pub const DEFAULT_BINARIES: &[&str] = &[
    "meta-cni",
    "meta-bridge",
    "meta-macvlan",
    "meta-ipvlan",
    "meta-vxlan",
    "meta-host-local",
    "meta-static",
    "meta-ipam",
];

/// How often `--wait-for` looks for its file.
pub const WAIT_POLL: Duration = Duration::from_millis(200);

/// The bound on the DaemonSet lookup at shutdown (client setup and request).
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

const BIN_MODE: u32 = 0o755;
const CONFLIST_MODE: u32 = 0o644;
const KUBECONFIG_MODE: u32 = 0o600;
const KUBECONFIG_DIR_MODE: u32 = 0o700;
/// The names in the rendered kubeconfig (cluster, user and context).
const KUBECONFIG_NAME: &str = "meta-cni";

const USAGE: &str = "\
Usage: meta-cni install [FLAGS]

Installs meta-cni on the node: the plugin binaries, the plugin's kubeconfig and the
conflist; with --watch keeps them current and decides on SIGTERM whether to uninstall.

Binaries:
  --source-dir DIR             where the binaries are (default /usr/local/bin)
  --bin-dir DIR                the host's CNI bin dir (default /host/opt/cni/bin)
  --binaries A,B,C             the binaries to copy (default meta-cni,meta-bridge,
                               meta-macvlan,meta-ipvlan,meta-vxlan,meta-host-local,
                               meta-static,meta-ipam)
  --skip-binaries              copy no binary
Conflist:
  --conf-dir DIR               the host's CNI conf dir (default /host/etc/cni/net.d)
  --conflist-source FILE       default /etc/meta-cni/00-meta-cni.conflist
  --conflist-name NAME         its name in the conf dir (default 00-meta-cni.conflist)
  --skip-conflist              write no conflist
  --wait-for FILE              write the conflist only once FILE exists and is not empty
  --wait-timeout SECS          give up waiting after SECS (default 0: wait forever)
Kubeconfig:
  --kubeconfig-path FILE       default <conf-dir>/meta-cni.d/meta-cni.kubeconfig
  --skip-kubeconfig            write no kubeconfig
  --serviceaccount-dir DIR     token, ca.crt and namespace
                               (default /var/run/secrets/kubernetes.io/serviceaccount)
  --kube-server URL            default https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT
Keeping it installed:
  --watch                      keep running: renew the kubeconfig, restore the conflist
  --watch-interval SECS        default 10
  --daemonset NS/NAME          on SIGTERM/SIGINT, uninstall if this DaemonSet is gone
  --uninstall                  remove the conflist and the kubeconfig, then exit
  -h, --help                   this text
";

/// A failure of the installer; the message names the path and the OS error.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// A file operation failed.
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Bad input (a conflist, a ServiceAccount file, the server address) or a timeout.
    #[error("{0}")]
    Invalid(String),
}

type Result<T> = std::result::Result<T, InstallError>;

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> InstallError + 'a {
    move |source| InstallError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

fn log(msg: impl std::fmt::Display) {
    eprintln!("meta-cni install: {msg}");
}

// ---------------------------------------------------------------------------------------
// Flags

/// What the installer was asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    pub source_dir: PathBuf,
    pub bin_dir: PathBuf,
    pub binaries: Vec<String>,
    pub skip_binaries: bool,
    pub conf_dir: PathBuf,
    pub conflist_source: PathBuf,
    pub conflist_name: String,
    pub skip_conflist: bool,
    pub wait_for: Option<PathBuf>,
    /// `None`: wait forever.
    pub wait_timeout: Option<Duration>,
    pub kubeconfig_path: PathBuf,
    pub skip_kubeconfig: bool,
    pub serviceaccount_dir: PathBuf,
    pub kube_server: Option<String>,
    pub watch: bool,
    pub watch_interval: Duration,
    /// Namespace and name.
    pub daemonset: Option<(String, String)>,
    pub uninstall: bool,
}

impl Default for Options {
    fn default() -> Self {
        let conf_dir = PathBuf::from("/host/etc/cni/net.d");
        Options {
            source_dir: "/usr/local/bin".into(),
            bin_dir: "/host/opt/cni/bin".into(),
            binaries: DEFAULT_BINARIES.iter().map(|s| s.to_string()).collect(),
            skip_binaries: false,
            kubeconfig_path: default_kubeconfig_path(&conf_dir),
            conf_dir,
            conflist_source: "/etc/meta-cni/00-meta-cni.conflist".into(),
            conflist_name: "00-meta-cni.conflist".into(),
            skip_conflist: false,
            wait_for: None,
            wait_timeout: None,
            skip_kubeconfig: false,
            serviceaccount_dir: "/var/run/secrets/kubernetes.io/serviceaccount".into(),
            kube_server: None,
            watch: false,
            watch_interval: Duration::from_secs(10),
            daemonset: None,
            uninstall: false,
        }
    }
}

impl Options {
    /// The conflist's path in the conf dir.
    pub fn conflist_path(&self) -> PathBuf {
        self.conf_dir.join(&self.conflist_name)
    }
}

fn default_kubeconfig_path(conf_dir: &Path) -> PathBuf {
    conf_dir.join("meta-cni.d").join("meta-cni.kubeconfig")
}

/// The outcome of parsing the flags.
#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    Help,
    Run(Box<Options>),
}

/// Parses the flags after `install` (`--flag value` or `--flag=value`; the last of a
/// repeated flag wins). The error is the message for stderr.
pub fn parse_args(args: &[String]) -> std::result::Result<Command, String> {
    let mut o = Options::default();
    let mut kubeconfig_path = None;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        if arg == "-h" || arg == "--help" {
            return Ok(Command::Help);
        }
        let Some(flag) = arg.strip_prefix("--") else {
            return Err(format!("unexpected argument {arg:?}"));
        };
        let (name, inline) = match flag.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (flag, None),
        };
        match name {
            "skip-binaries" => switch(name, &inline, &mut o.skip_binaries)?,
            "skip-conflist" => switch(name, &inline, &mut o.skip_conflist)?,
            "skip-kubeconfig" => switch(name, &inline, &mut o.skip_kubeconfig)?,
            "watch" => switch(name, &inline, &mut o.watch)?,
            "uninstall" => switch(name, &inline, &mut o.uninstall)?,
            "source-dir" => o.source_dir = take_value(name, inline, &mut it)?.into(),
            "bin-dir" => o.bin_dir = take_value(name, inline, &mut it)?.into(),
            "binaries" => o.binaries = parse_binaries(&take_value(name, inline, &mut it)?)?,
            "conf-dir" => o.conf_dir = take_value(name, inline, &mut it)?.into(),
            "conflist-source" => o.conflist_source = take_value(name, inline, &mut it)?.into(),
            "conflist-name" => {
                let v = take_value(name, inline, &mut it)?;
                check_file_name("--conflist-name", &v)?;
                o.conflist_name = v;
            }
            "wait-for" => o.wait_for = Some(take_value(name, inline, &mut it)?.into()),
            "wait-timeout" => {
                let s = parse_secs(name, &take_value(name, inline, &mut it)?)?;
                o.wait_timeout = (s > 0).then(|| Duration::from_secs(s));
            }
            "kubeconfig-path" => kubeconfig_path = Some(take_value(name, inline, &mut it)?.into()),
            "serviceaccount-dir" => {
                o.serviceaccount_dir = take_value(name, inline, &mut it)?.into()
            }
            "kube-server" => {
                let v = take_value(name, inline, &mut it)?;
                if !(v.starts_with("https://") || v.starts_with("http://")) {
                    return Err(format!("--kube-server {v:?}: not an http(s):// URL"));
                }
                o.kube_server = Some(v);
            }
            "watch-interval" => {
                let s = parse_secs(name, &take_value(name, inline, &mut it)?)?;
                if s == 0 {
                    return Err("--watch-interval must be at least 1".into());
                }
                o.watch_interval = Duration::from_secs(s);
            }
            "daemonset" => {
                o.daemonset = Some(parse_daemonset(&take_value(name, inline, &mut it)?)?)
            }
            _ => return Err(format!("unknown flag --{name}")),
        }
    }
    if o.uninstall && o.watch {
        return Err("--uninstall and --watch exclude each other".into());
    }
    o.kubeconfig_path = kubeconfig_path.unwrap_or_else(|| default_kubeconfig_path(&o.conf_dir));
    Ok(Command::Run(Box::new(o)))
}

/// A switch: `--name`, no value.
fn switch(name: &str, inline: &Option<String>, set: &mut bool) -> std::result::Result<(), String> {
    if inline.is_some() {
        return Err(format!("--{name} takes no value"));
    }
    *set = true;
    Ok(())
}

/// The value of `--name`: after `=`, else the next argument; never empty.
fn take_value(
    name: &str,
    inline: Option<String>,
    rest: &mut std::slice::Iter<'_, String>,
) -> std::result::Result<String, String> {
    let v = match inline {
        Some(v) => v,
        None => rest
            .next()
            .cloned()
            .ok_or_else(|| format!("--{name} needs a value"))?,
    };
    if v.is_empty() {
        return Err(format!("--{name} needs a non-empty value"));
    }
    Ok(v)
}

fn parse_secs(name: &str, value: &str) -> std::result::Result<u64, String> {
    value
        .parse()
        .map_err(|_| format!("--{name} {value:?}: not a number of seconds"))
}

/// A file name inside a directory: no separator, not `.`/`..`, not hidden.
fn check_file_name(what: &str, name: &str) -> std::result::Result<(), String> {
    if name.is_empty() || name.contains('/') || name.starts_with('.') || name.contains('\0') {
        return Err(format!(
            "{what} {name:?}: not a plain file name (no '/', not starting with '.')"
        ));
    }
    Ok(())
}

fn parse_binaries(value: &str) -> std::result::Result<Vec<String>, String> {
    let mut out = Vec::new();
    for b in value.split(',').map(str::trim) {
        if b.is_empty() {
            return Err(format!("--binaries {value:?}: empty name in the list"));
        }
        check_file_name("--binaries", b)?;
        if !out.iter().any(|x| x == b) {
            out.push(b.to_string());
        }
    }
    Ok(out)
}

fn parse_daemonset(value: &str) -> std::result::Result<(String, String), String> {
    match value.split_once('/') {
        Some((ns, name))
            if !ns.is_empty() && !name.is_empty() && !name.contains('/') && !ns.contains(' ') =>
        {
            Ok((ns.to_string(), name.to_string()))
        }
        _ => Err(format!("--daemonset {value:?}: expected NAMESPACE/NAME")),
    }
}

/// The API server's URL: the flag, else `https://HOST:PORT` from the in-cluster
/// environment (an IPv6 host bracketed; the port defaults to 443).
pub fn server_url(flag: Option<&str>, host: Option<&str>, port: Option<&str>) -> Result<String> {
    if let Some(url) = flag {
        return Ok(url.to_string());
    }
    let host = host
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .ok_or_else(|| {
            InstallError::Invalid(
                "no API server: give --kube-server or run in a pod (KUBERNETES_SERVICE_HOST unset)"
                    .into(),
            )
        })?;
    let port = port
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .unwrap_or("443");
    if port.parse::<u16>().is_err() {
        return Err(InstallError::Invalid(format!(
            "KUBERNETES_SERVICE_PORT {port:?}: not a port"
        )));
    }
    let host = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_string()
    };
    Ok(format!("https://{host}:{port}"))
}

// ---------------------------------------------------------------------------------------
// base64 and the token's expiry

/// Standard base64 with padding (RFC 4648 §4), as kubeconfig `*-data` fields want.
pub fn base64_encode(data: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// base64url (RFC 4648 §5), padding optional, as in a JWT; `None` when malformed.
pub fn base64url_decode(text: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    const URL: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::URL_SAFE,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    URL.decode(text).ok()
}

/// The `exp` claim (seconds since the epoch) of a JWT, read without verification; `None`
/// for anything else (a legacy token without `exp`, not a JWT).
pub fn jwt_exp(token: &str) -> Option<u64> {
    let mut parts = token.trim().split('.');
    let (_header, payload, _sig) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let claims: serde_json::Value = serde_json::from_slice(&base64url_decode(payload)?).ok()?;
    let exp = claims.get("exp")?;
    exp.as_u64().or_else(|| {
        exp.as_f64()
            .filter(|f| f.is_finite() && *f >= 0.0)
            .map(|f| f as u64)
    })
}

/// `YYYY-MM-DDTHH:MM:SSZ` of a Unix time (for the logs).
pub fn format_utc(secs: u64) -> String {
    i64::try_from(secs)
        .ok()
        .and_then(|s| k8s_openapi::jiff::Timestamp::from_second(s).ok())
        .map_or_else(|| format!("@{secs}"), |t| t.to_string())
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------------------
// Atomic files

/// Whether a file was (re)written or already had the wanted content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Written,
    Unchanged,
}

/// The temp file of `target`: in the same directory, `.<name>.<pid>.tmp` (hidden, and not
/// ending in `.conf`/`.conflist`/`.json`, so kubelet's runtime never loads it).
pub fn temp_path(target: &Path) -> Result<PathBuf> {
    let (Some(dir), Some(name)) = (target.parent(), target.file_name()) else {
        return Err(InstallError::Invalid(format!(
            "{}: not a file path",
            target.display()
        )));
    };
    let mut tmp = OsString::from(".");
    tmp.push(name);
    tmp.push(format!(".{}.tmp", std::process::id()));
    Ok(dir.join(tmp))
}

/// Removes the temp file when dropped, unless disarmed.
struct TempGuard(Option<PathBuf>);

impl Drop for TempGuard {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = fs::remove_file(p);
        }
    }
}

fn create_temp(tmp: &Path, mode: u32) -> io::Result<File> {
    let open = || {
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(tmp)
    };
    match open() {
        // Ours, from an earlier run that died with the same pid (pid 1 in a container).
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            fs::remove_file(tmp)?;
            open()
        }
        r => r,
    }
}

/// Replaces `target` atomically: `fill` writes a temp file in the same directory, which is
/// then given `mode`, fsynced and renamed over `target`; the directory is fsynced. On any
/// error the temp file is removed and `target` is untouched.
fn atomic_replace(
    target: &Path,
    mode: u32,
    fill: impl FnOnce(&mut File) -> io::Result<()>,
) -> Result<()> {
    let tmp = temp_path(target)?;
    let mut f = create_temp(&tmp, mode).map_err(io_err("creating", &tmp))?;
    let mut guard = TempGuard(Some(tmp.clone()));
    fill(&mut f).map_err(io_err("writing", &tmp))?;
    f.set_permissions(Permissions::from_mode(mode))
        .map_err(io_err("setting the mode of", &tmp))?;
    f.sync_all().map_err(io_err("syncing", &tmp))?;
    drop(f);
    fs::rename(&tmp, target).map_err(io_err("renaming the temp file onto", target))?;
    guard.0 = None;
    if let Some(dir) = target.parent() {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err("syncing the directory", dir))?;
    }
    Ok(())
}

fn ensure_mode(path: &Path, mode: u32) -> Result<()> {
    let meta = fs::metadata(path).map_err(io_err("reading", path))?;
    if meta.mode() & 0o7777 != mode {
        fs::set_permissions(path, Permissions::from_mode(mode))
            .map_err(io_err("setting the mode of", path))?;
    }
    Ok(())
}

/// Writes `content` to `target` (atomically, with `mode`) unless it already has it (then
/// only its mode is corrected).
pub fn write_if_changed(target: &Path, content: &[u8], mode: u32) -> Result<Outcome> {
    match fs::read(target) {
        Ok(old) if old == content => {
            ensure_mode(target, mode)?;
            Ok(Outcome::Unchanged)
        }
        Ok(_) => atomic_replace(target, mode, |f| f.write_all(content)).map(|()| Outcome::Written),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            atomic_replace(target, mode, |f| f.write_all(content)).map(|()| Outcome::Written)
        }
        Err(e) => Err(io_err("reading", target)(e)),
    }
}

fn read_full(f: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Whether `a` and `b` have the same bytes (sizes first). A missing `b` is not the same.
fn same_content(a: &Path, b: &Path) -> Result<bool> {
    let ma = fs::metadata(a).map_err(io_err("reading", a))?;
    let mb = match fs::metadata(b) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(io_err("reading", b)(e)),
    };
    if !mb.is_file() || ma.len() != mb.len() {
        return Ok(false);
    }
    let mut fa = File::open(a).map_err(io_err("opening", a))?;
    let mut fb = File::open(b).map_err(io_err("opening", b))?;
    let mut ba = vec![0u8; 64 * 1024];
    let mut bb = vec![0u8; 64 * 1024];
    loop {
        let na = read_full(&mut fa, &mut ba).map_err(io_err("reading", a))?;
        let nb = read_full(&mut fb, &mut bb).map_err(io_err("reading", b))?;
        if na != nb || ba[..na] != bb[..nb] {
            return Ok(false);
        }
        if na == 0 {
            return Ok(true);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Binaries

/// Copies `binaries` from `source_dir` into `bin_dir` (atomically, 0755), skipping the
/// identical ones. Every source is checked before anything is copied: a missing one is an
/// error naming it, and nothing is written.
pub fn install_binaries(
    source_dir: &Path,
    bin_dir: &Path,
    binaries: &[String],
) -> Result<Vec<(String, Outcome)>> {
    for b in binaries {
        let src = source_dir.join(b);
        let meta = fs::metadata(&src).map_err(io_err("source binary", &src))?;
        if !meta.is_file() {
            return Err(InstallError::Invalid(format!(
                "source binary {}: not a regular file",
                src.display()
            )));
        }
    }
    fs::create_dir_all(bin_dir).map_err(io_err("creating", bin_dir))?;
    let mut done = Vec::new();
    for b in binaries {
        let src = source_dir.join(b);
        let dst = bin_dir.join(b);
        let outcome = if same_content(&src, &dst)? {
            ensure_mode(&dst, BIN_MODE)?;
            Outcome::Unchanged
        } else {
            let mut from = File::open(&src).map_err(io_err("opening", &src))?;
            atomic_replace(&dst, BIN_MODE, |f| io::copy(&mut from, f).map(|_| ()))?;
            Outcome::Written
        };
        done.push((b.clone(), outcome));
    }
    Ok(done)
}

// ---------------------------------------------------------------------------------------
// Conflist

/// A conflist kubelet's runtime will load: a JSON object with a non-empty `plugins` array
/// of objects.
pub fn validate_conflist(bytes: &[u8]) -> std::result::Result<(), String> {
    let v: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| format!("not valid JSON: {e}"))?;
    let plugins = v
        .get("plugins")
        .ok_or("no \"plugins\" key")?
        .as_array()
        .ok_or("\"plugins\" is not an array")?;
    if plugins.is_empty() {
        return Err("\"plugins\" is empty".into());
    }
    if !plugins.iter().all(serde_json::Value::is_object) {
        return Err("an element of \"plugins\" is not an object".into());
    }
    Ok(())
}

/// Reads and validates the conflist source, then writes it in place in the conf dir.
pub fn install_conflist(source: &Path, conf_dir: &Path, name: &str) -> Result<Outcome> {
    let bytes = fs::read(source).map_err(io_err("reading the conflist", source))?;
    validate_conflist(&bytes).map_err(|e| {
        InstallError::Invalid(format!("conflist {}: {e}; not installed", source.display()))
    })?;
    fs::create_dir_all(conf_dir).map_err(io_err("creating", conf_dir))?;
    write_if_changed(&conf_dir.join(name), &bytes, CONFLIST_MODE)
}

/// Waits until `path` exists and is not empty, looking every `poll`; an error after
/// `timeout` (`None`: forever). Logs once when it has to wait.
pub async fn wait_for_file(path: &Path, timeout: Option<Duration>, poll: Duration) -> Result<()> {
    let ready = || fs::metadata(path).map(|m| m.len() > 0).unwrap_or(false);
    if ready() {
        return Ok(());
    }
    log(format_args!(
        "waiting for {} before writing the conflist",
        path.display()
    ));
    let start = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(poll).await;
        if ready() {
            log(format_args!("{} is there", path.display()));
            return Ok(());
        }
        if let Some(t) = timeout
            && start.elapsed() >= t
        {
            return Err(InstallError::Invalid(format!(
                "{} did not appear (non-empty) within {}s",
                path.display(),
                t.as_secs()
            )));
        }
    }
}

// ---------------------------------------------------------------------------------------
// Kubeconfig

/// The pod's ServiceAccount credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub token: String,
    pub ca: Vec<u8>,
    pub namespace: Option<String>,
}

/// Reads `token`, `ca.crt` and (optional) `namespace` of a ServiceAccount directory.
pub fn read_credentials(dir: &Path) -> Result<Credentials> {
    let tp = dir.join("token");
    let token = fs::read_to_string(&tp).map_err(io_err("reading the token", &tp))?;
    let token = token.trim().to_string();
    if token.is_empty() {
        return Err(InstallError::Invalid(format!(
            "token {}: empty",
            tp.display()
        )));
    }
    let cp = dir.join("ca.crt");
    let ca = fs::read(&cp).map_err(io_err("reading the CA", &cp))?;
    if ca.is_empty() {
        return Err(InstallError::Invalid(format!("CA {}: empty", cp.display())));
    }
    let np = dir.join("namespace");
    let namespace = match fs::read_to_string(&np) {
        Ok(s) => Some(s.trim().to_string()).filter(|s| !s.is_empty()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(io_err("reading the namespace", &np)(e)),
    };
    Ok(Credentials {
        token,
        ca,
        namespace,
    })
}

/// The plugin's kubeconfig (JSON, which kube-rs and client-go read as YAML): one cluster
/// with the CA inline, one user with the token inline, one context, current.
pub fn render_kubeconfig(server: &str, creds: &Credentials) -> Vec<u8> {
    let mut context = serde_json::json!({"cluster": KUBECONFIG_NAME, "user": KUBECONFIG_NAME});
    if let Some(ns) = &creds.namespace {
        context["namespace"] = ns.as_str().into();
    }
    let doc = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": KUBECONFIG_NAME, "cluster": {
            "server": server,
            "certificate-authority-data": base64_encode(&creds.ca),
        }}],
        "users": [{"name": KUBECONFIG_NAME, "user": {"token": creds.token}}],
        "contexts": [{"name": KUBECONFIG_NAME, "context": context}],
        "current-context": KUBECONFIG_NAME,
    });
    let mut out = serde_json::to_vec_pretty(&doc).unwrap_or_default();
    out.push(b'\n');
    out
}

/// Writes the kubeconfig (0600) unless unchanged. Its directory, when missing, is created
/// 0700 (and only it: missing ancestors, such as the conf dir, get the default mode).
pub fn write_kubeconfig(path: &Path, content: &[u8]) -> Result<Outcome> {
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
    {
        if let Some(up) = dir.parent()
            && !up.as_os_str().is_empty()
        {
            fs::create_dir_all(up).map_err(io_err("creating", up))?;
        }
        match fs::DirBuilder::new().mode(KUBECONFIG_DIR_MODE).create(dir) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => {
                return Err(io_err("creating", dir)(e));
            }
            _ => {}
        }
    }
    write_if_changed(path, content, KUBECONFIG_MODE)
}

// ---------------------------------------------------------------------------------------
// Watching

/// What the watch loop remembers between rounds.
#[derive(Debug, Default, Clone)]
pub struct WatchState {
    /// The token last written.
    pub token: Option<String>,
    /// The expiry a warning was logged for (once per token).
    pub warned_exp: Option<u64>,
}

/// What one round did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Round {
    pub kubeconfig: Option<Outcome>,
    pub token_renewed: bool,
    pub expiry_warning: bool,
    pub conflist: Option<Outcome>,
    pub errors: Vec<String>,
}

fn log_exp(token: &str, now: u64) {
    match jwt_exp(token) {
        Some(exp) if exp > now => log(format_args!(
            "token expires at {} (in {}s)",
            format_utc(exp),
            exp - now
        )),
        Some(exp) => log(format_args!(
            "token expired at {} ({}s ago)",
            format_utc(exp),
            now - exp
        )),
        None => log("token has no readable exp claim"),
    }
}

/// (Re)writes the kubeconfig from the ServiceAccount directory; logs a renewed token's
/// expiry and warns (once per token) when the unchanged token expires within two watch
/// intervals.
pub fn refresh_kubeconfig(
    opts: &Options,
    server: &str,
    state: &mut WatchState,
    now: u64,
    round: &mut Round,
) -> Result<()> {
    let creds = read_credentials(&opts.serviceaccount_dir)?;
    let renewed = state.token.as_deref() != Some(creds.token.as_str());
    let outcome = write_kubeconfig(&opts.kubeconfig_path, &render_kubeconfig(server, &creds))?;
    round.kubeconfig = Some(outcome);
    if outcome == Outcome::Written {
        log(format_args!(
            "wrote {}{}",
            opts.kubeconfig_path.display(),
            if renewed && state.token.is_some() {
                " (token renewed)"
            } else {
                ""
            }
        ));
    }
    if renewed {
        round.token_renewed = state.token.is_some();
        log_exp(&creds.token, now);
        state.token = Some(creds.token);
        state.warned_exp = None;
    } else if let Some(exp) = state.token.as_deref().and_then(jwt_exp) {
        let window = 2 * opts.watch_interval.as_secs();
        if exp <= now.saturating_add(window) && state.warned_exp != Some(exp) {
            log(format_args!(
                "warning: the token in {} expires at {} and has not been renewed (is kubelet rotating it?)",
                opts.serviceaccount_dir.display(),
                format_utc(exp)
            ));
            state.warned_exp = Some(exp);
            round.expiry_warning = true;
        }
    }
    Ok(())
}

/// One round of `--watch`: the kubeconfig renewed when the token or CA changed, the
/// conflist restored when deleted or changed. Failures are returned in the round (and
/// logged), never fatal: the next round tries again.
pub fn watch_round(
    opts: &Options,
    server: Option<&str>,
    state: &mut WatchState,
    now: u64,
) -> Round {
    let mut round = Round::default();
    if let Some(server) = server
        && let Err(e) = refresh_kubeconfig(opts, server, state, now, &mut round)
    {
        round.errors.push(e.to_string());
    }
    if !opts.skip_conflist {
        match install_conflist(&opts.conflist_source, &opts.conf_dir, &opts.conflist_name) {
            Ok(o) => {
                if o == Outcome::Written {
                    log(format_args!(
                        "restored {} (it was deleted or changed)",
                        opts.conflist_path().display()
                    ));
                }
                round.conflist = Some(o);
            }
            Err(e) => round.errors.push(e.to_string()),
        }
    }
    for e in &round.errors {
        log(format_args!("watch: {e}"));
    }
    round
}

// ---------------------------------------------------------------------------------------
// Shutdown

/// What the API server said about the installer's DaemonSet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DaemonSetLookup {
    /// It exists and is not being deleted.
    Present,
    /// It has a deletionTimestamp.
    Deleting,
    /// 404.
    NotFound,
    /// 401 or 403: the credentials went with it (its ServiceAccount was deleted).
    Refused(u16),
    /// No answer, or another error.
    Failed(String),
}

/// What to do at shutdown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Uninstall,
    Keep,
}

/// Uninstall only when the DaemonSet is known to be going away; when it is there, or the
/// answer is unknown, keep everything (a restart must not take the node's network away).
pub fn decide(lookup: &DaemonSetLookup) -> Decision {
    match lookup {
        DaemonSetLookup::NotFound | DaemonSetLookup::Deleting | DaemonSetLookup::Refused(_) => {
            Decision::Uninstall
        }
        DaemonSetLookup::Present | DaemonSetLookup::Failed(_) => Decision::Keep,
    }
}

/// GETs the DaemonSet `ns/name` with the kubeconfig at `kubeconfig`, all within `timeout`.
pub async fn lookup_daemonset(
    kubeconfig: &Path,
    ns: &str,
    name: &str,
    timeout: Duration,
) -> DaemonSetLookup {
    use k8s_openapi::api::apps::v1::DaemonSet;
    let get = async {
        let kc = kube::config::Kubeconfig::read_from(kubeconfig)
            .map_err(|e| format!("kubeconfig {}: {e}", kubeconfig.display()))?;
        let mut cfg =
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(|e| format!("kubeconfig {}: {e}", kubeconfig.display()))?;
        cfg.connect_timeout = Some(timeout);
        cfg.read_timeout = Some(timeout);
        cfg.write_timeout = Some(timeout);
        let client = kube::Client::try_from(cfg).map_err(|e| format!("kube client: {e}"))?;
        let api: kube::Api<DaemonSet> = kube::Api::namespaced(client, ns);
        Ok::<_, String>(api.get_opt(name).await)
    };
    match tokio::time::timeout(timeout, get).await {
        Err(_) => DaemonSetLookup::Failed(format!("no answer within {}s", timeout.as_secs_f32())),
        Ok(Err(msg)) => DaemonSetLookup::Failed(msg),
        Ok(Ok(Ok(None))) => DaemonSetLookup::NotFound,
        Ok(Ok(Ok(Some(ds)))) if ds.metadata.deletion_timestamp.is_some() => {
            DaemonSetLookup::Deleting
        }
        Ok(Ok(Ok(Some(_)))) => DaemonSetLookup::Present,
        Ok(Ok(Err(kube::Error::Api(s)))) if s.code == 404 => DaemonSetLookup::NotFound,
        Ok(Ok(Err(kube::Error::Api(s)))) if s.code == 401 || s.code == 403 => {
            DaemonSetLookup::Refused(s.code)
        }
        Ok(Ok(Err(e))) => DaemonSetLookup::Failed(e.to_string()),
    }
}

fn remove_if_present(path: &Path) -> Result<bool> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io_err("removing", path)(e)),
    }
}

/// Removes the conflist and the kubeconfig (those not skipped), nothing else.
pub fn uninstall(opts: &Options) -> Result<()> {
    let mut paths = Vec::new();
    if !opts.skip_conflist {
        paths.push(opts.conflist_path());
    }
    if !opts.skip_kubeconfig {
        paths.push(opts.kubeconfig_path.clone());
    }
    for p in paths {
        if remove_if_present(&p)? {
            log(format_args!("removed {}", p.display()));
        }
    }
    Ok(())
}

/// On SIGTERM/SIGINT: with `--daemonset`, uninstall when it is going away, else keep.
async fn shutdown(opts: &Options, signal: &str) -> Result<()> {
    let Some((ns, name)) = &opts.daemonset else {
        log(format_args!("{signal}: exiting, the installed files stay"));
        return Ok(());
    };
    let lookup = lookup_daemonset(&opts.kubeconfig_path, ns, name, LOOKUP_TIMEOUT).await;
    let why = match &lookup {
        DaemonSetLookup::Present => {
            format!("DaemonSet {ns}/{name} still exists (restart or drain)")
        }
        DaemonSetLookup::Deleting => format!("DaemonSet {ns}/{name} is being deleted"),
        DaemonSetLookup::NotFound => format!("DaemonSet {ns}/{name} is gone"),
        DaemonSetLookup::Refused(c) => format!(
            "the API server refused our credentials ({c}): DaemonSet {ns}/{name} and its ServiceAccount are gone"
        ),
        DaemonSetLookup::Failed(e) => format!("cannot look up DaemonSet {ns}/{name}: {e}"),
    };
    match decide(&lookup) {
        Decision::Uninstall => {
            log(format_args!("{signal}: {why}: uninstalling"));
            uninstall(opts)
        }
        Decision::Keep => {
            log(format_args!("{signal}: {why}: the installed files stay"));
            Ok(())
        }
    }
}

struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> Result<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        let err = |e| InstallError::Invalid(format!("installing the signal handlers: {e}"));
        Ok(Signals {
            term: signal(SignalKind::terminate()).map_err(err)?,
            int: signal(SignalKind::interrupt()).map_err(err)?,
        })
    }

    async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}

/// The installer, flags parsed.
pub async fn run(opts: &Options) -> Result<()> {
    if opts.uninstall {
        return uninstall(opts);
    }
    // First: as PID 1 of a container the default SIGTERM disposition does nothing.
    let mut signals = Signals::new()?;
    if !opts.skip_binaries {
        let done = install_binaries(&opts.source_dir, &opts.bin_dir, &opts.binaries)?;
        let written: Vec<_> = done
            .iter()
            .filter(|(_, o)| *o == Outcome::Written)
            .map(|(b, _)| b.as_str())
            .collect();
        log(format_args!(
            "binaries in {}: {} copied{}, {} unchanged",
            opts.bin_dir.display(),
            written.len(),
            if written.is_empty() {
                String::new()
            } else {
                format!(" ({})", written.join(", "))
            },
            done.len() - written.len()
        ));
    }
    let mut state = WatchState::default();
    let server = if opts.skip_kubeconfig {
        None
    } else {
        let host = std::env::var("KUBERNETES_SERVICE_HOST").ok();
        let port = std::env::var("KUBERNETES_SERVICE_PORT").ok();
        let server = server_url(
            opts.kube_server.as_deref(),
            host.as_deref(),
            port.as_deref(),
        )?;
        let mut round = Round::default();
        refresh_kubeconfig(opts, &server, &mut state, now_unix(), &mut round)?;
        if round.kubeconfig == Some(Outcome::Unchanged) {
            log(format_args!("{} unchanged", opts.kubeconfig_path.display()));
        }
        Some(server)
    };
    if !opts.skip_conflist {
        if let Some(w) = &opts.wait_for {
            tokio::select! {
                r = wait_for_file(w, opts.wait_timeout, WAIT_POLL) => r?,
                s = signals.recv() => return shutdown(opts, s).await,
            }
        }
        let o = install_conflist(&opts.conflist_source, &opts.conf_dir, &opts.conflist_name)?;
        log(format_args!(
            "{} {}",
            opts.conflist_path().display(),
            if o == Outcome::Written {
                "written"
            } else {
                "unchanged"
            }
        ));
    }
    if !opts.watch {
        return Ok(());
    }
    log(format_args!(
        "watching every {}s",
        opts.watch_interval.as_secs()
    ));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(opts.watch_interval) => {
                watch_round(opts, server.as_deref(), &mut state, now_unix());
            }
            s = signals.recv() => return shutdown(opts, s).await,
        }
    }
}

/// `meta-cni install ARGS...`: returns the exit code (0 done, 1 failed, 2 bad flags).
pub fn main(args: &[OsString]) -> i32 {
    let mut strings = Vec::with_capacity(args.len());
    for a in args {
        match a.to_str() {
            Some(s) => strings.push(s.to_string()),
            None => {
                log(format_args!("argument {a:?} is not UTF-8"));
                return 2;
            }
        }
    }
    let opts = match parse_args(&strings) {
        Ok(Command::Help) => {
            print!("{USAGE}");
            return 0;
        }
        Ok(Command::Run(o)) => o,
        Err(e) => {
            log(format_args!("{e} (see --help)"));
            return 2;
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            log(format_args!("tokio runtime: {e}"));
            return 1;
        }
    };
    match rt.block_on(run(&opts)) {
        Ok(()) => 0,
        Err(e) => {
            log(format_args!("error: {e}"));
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufRead;
    use std::net::TcpListener;

    /// A self-signed CA (P-256), only so that kube's client accepts the kubeconfig.
    const TEST_CA: &str = "-----BEGIN CERTIFICATE-----
MIIBlzCCAT2gAwIBAgIUBSunCdQxYBeF8dbjqpU4QAgJCdwwCgYIKoZIzj0EAwIw
IDEeMBwGA1UEAwwVbWV0YS1jbmktaW5zdGFsbC10ZXN0MCAXDTI2MTIwNTEyNTgy
N1oYDzIxMjYxMTExMTI1ODI3WjAgMR4wHAYDVQQDDBVtZXRhLWNuaS1pbnN0YWxs
LXRlc3QwWTATBgcqhkjOPQIBBggqhkjOPQMBBwNCAASVUpOzc3O9LqZjb+rX7csG
UyOrTJ3xoZf1LCbc5b1VuUvWOD1sTCfxFTWszN1Ddty7NZsvMWthoeRYPTGmp0Yi
o1MwUTAdBgNVHQ4EFgQU+64+iTB1bjCTbwc+qXIziNRw47owHwYDVR0jBBgwFoAU
+64+iTB1bjCTbwc+qXIziNRw47owDwYDVR0TAQH/BAUwAwEB/zAKBggqhkjOPQQD
AgNIADBFAiEAiB7YEDFEHCFC49PhvkoPYEXe0YS7gvqaHMOuR9FpQZQCIBYCFV4I
+Wwcs1CBIAiyi3Cx7sTBvACuq2lBGe2uOYBB
-----END CERTIFICATE-----
";

    const CONFLIST: &str =
        r#"{"cniVersion":"1.1.0","name":"meta-cni","plugins":[{"type":"meta-cni"}]}"#;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn parsed(v: &[&str]) -> Options {
        match parse_args(&strings(v)) {
            Ok(Command::Run(o)) => *o,
            other => panic!("{v:?}: {other:?}"),
        }
    }

    fn b64url(data: &[u8]) -> String {
        base64_encode(data)
            .replace('+', "-")
            .replace('/', "_")
            .trim_end_matches('=')
            .to_string()
    }

    fn jwt(claims: &str) -> String {
        format!(
            "{}.{}.c2lnbmF0dXJl",
            b64url(br#"{"alg":"RS256","kid":"k"}"#),
            b64url(claims.as_bytes())
        )
    }

    /// Names in `dir` starting with '.' (temp files).
    fn hidden(dir: &Path) -> Vec<String> {
        fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with('.'))
            .collect()
    }

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().mode() & 0o7777
    }

    fn ino(p: &Path) -> u64 {
        fs::metadata(p).unwrap().ino()
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    /// Options with every path in `root`, a ServiceAccount dir with `token`, and the
    /// conflist source.
    fn setup(root: &Path, token: &str) -> Options {
        let sa = root.join("sa");
        fs::create_dir_all(&sa).unwrap();
        fs::write(sa.join("token"), format!("{token}\n")).unwrap();
        fs::write(sa.join("ca.crt"), TEST_CA).unwrap();
        fs::write(sa.join("namespace"), "kube-system").unwrap();
        let src = root.join("src");
        fs::create_dir_all(&src).unwrap();
        for b in ["meta-cni", "meta-bridge"] {
            fs::write(src.join(b), format!("#!binary {b}\n")).unwrap();
        }
        fs::write(root.join("source.conflist"), CONFLIST).unwrap();
        let conf_dir = root.join("net.d");
        Options {
            source_dir: src,
            bin_dir: root.join("bin"),
            binaries: strings(&["meta-cni", "meta-bridge"]),
            conflist_source: root.join("source.conflist"),
            kubeconfig_path: default_kubeconfig_path(&conf_dir),
            conf_dir,
            serviceaccount_dir: sa,
            kube_server: Some("https://127.0.0.1:6443".into()),
            ..Options::default()
        }
    }

    // ---- flags

    #[test]
    fn flags_that_parse() {
        type Check = fn(&Options) -> bool;
        let cases: &[(&[&str], Check)] = &[
            (&[], |o| *o == Options::default()),
            (&[], |o| {
                o.source_dir == Path::new("/usr/local/bin")
                    && o.bin_dir == Path::new("/host/opt/cni/bin")
                    && o.binaries.len() == 8
                    && o.binaries[0] == "meta-cni"
                    && o.conf_dir == Path::new("/host/etc/cni/net.d")
                    && o.conflist_source == Path::new("/etc/meta-cni/00-meta-cni.conflist")
                    && o.conflist_path() == Path::new("/host/etc/cni/net.d/00-meta-cni.conflist")
                    && o.kubeconfig_path
                        == Path::new("/host/etc/cni/net.d/meta-cni.d/meta-cni.kubeconfig")
                    && o.serviceaccount_dir
                        == Path::new("/var/run/secrets/kubernetes.io/serviceaccount")
                    && o.watch_interval == Duration::from_secs(10)
                    && o.wait_for.is_none()
                    && o.wait_timeout.is_none()
                    && !o.watch
                    && o.daemonset.is_none()
            }),
            (&["--bin-dir", "/b"], |o| o.bin_dir == Path::new("/b")),
            (&["--bin-dir=/b"], |o| o.bin_dir == Path::new("/b")),
            (&["--bin-dir", "/a", "--bin-dir=/b"], |o| {
                o.bin_dir == Path::new("/b")
            }),
            (&["--source-dir", "/s"], |o| o.source_dir == Path::new("/s")),
            (&["--conf-dir", "/c"], |o| {
                o.kubeconfig_path == Path::new("/c/meta-cni.d/meta-cni.kubeconfig")
                    && o.conflist_path() == Path::new("/c/00-meta-cni.conflist")
            }),
            (&["--kubeconfig-path", "/k", "--conf-dir", "/c"], |o| {
                o.kubeconfig_path == Path::new("/k")
            }),
            (&["--binaries", "a, b,a"], |o| o.binaries == ["a", "b"]),
            (
                &["--conflist-name=10-x.conflist", "--conflist-source", "/f"],
                |o| o.conflist_name == "10-x.conflist" && o.conflist_source == Path::new("/f"),
            ),
            (&["--wait-timeout", "0", "--wait-for", "/run/x"], |o| {
                o.wait_timeout.is_none() && o.wait_for.as_deref() == Some(Path::new("/run/x"))
            }),
            (&["--wait-timeout=30"], |o| {
                o.wait_timeout == Some(Duration::from_secs(30))
            }),
            (
                &[
                    "--watch",
                    "--watch-interval",
                    "3",
                    "--daemonset",
                    "kube-system/meta-cni",
                ],
                |o| {
                    o.watch
                        && o.watch_interval == Duration::from_secs(3)
                        && o.daemonset == Some(("kube-system".into(), "meta-cni".into()))
                },
            ),
            (
                &["--skip-binaries", "--skip-conflist", "--skip-kubeconfig"],
                |o| o.skip_binaries && o.skip_conflist && o.skip_kubeconfig,
            ),
            (&["--uninstall"], |o| o.uninstall && !o.watch),
            (&["--kube-server", "https://[fd00::1]:6443"], |o| {
                o.kube_server.as_deref() == Some("https://[fd00::1]:6443")
            }),
            (&["--serviceaccount-dir", "/sa"], |o| {
                o.serviceaccount_dir == Path::new("/sa")
            }),
        ];
        for (args, check) in cases {
            let o = parsed(args);
            assert!(check(&o), "{args:?} gave {o:?}");
        }
    }

    #[test]
    fn flags_that_do_not_parse() {
        let cases: &[(&[&str], &str)] = &[
            (&["--bogus"], "unknown flag --bogus"),
            (&["--bogus=1"], "unknown flag --bogus"),
            (&["--bin-dir"], "--bin-dir needs a value"),
            (&["--bin-dir="], "--bin-dir needs a non-empty value"),
            (&["--watch=yes"], "--watch takes no value"),
            (&["extra"], "unexpected argument"),
            (&["-x"], "unexpected argument"),
            (&["--wait-timeout", "soon"], "not a number"),
            (&["--wait-timeout", "-1"], "not a number"),
            (&["--watch-interval", "0"], "at least 1"),
            (&["--binaries", "a,,b"], "empty name"),
            (&["--binaries", "../x"], "plain file name"),
            (&["--binaries", ".."], "plain file name"),
            (&["--conflist-name", "a/b.conflist"], "plain file name"),
            (&["--conflist-name", ".hidden.conflist"], "plain file name"),
            (&["--daemonset", "meta-cni"], "NAMESPACE/NAME"),
            (&["--daemonset", "a/b/c"], "NAMESPACE/NAME"),
            (&["--daemonset", "/b"], "NAMESPACE/NAME"),
            (&["--kube-server", "h:6443"], "http(s)"),
            (&["--uninstall", "--watch"], "exclude"),
        ];
        for (args, want) in cases {
            match parse_args(&strings(args)) {
                Err(e) => assert!(e.contains(want), "{args:?}: {e:?} lacks {want:?}"),
                Ok(c) => panic!("{args:?} parsed: {c:?}"),
            }
        }
    }

    #[test]
    fn help() {
        for args in [&["--help"][..], &["-h"], &["--watch", "--help", "--bogus"]] {
            assert_eq!(parse_args(&strings(args)), Ok(Command::Help), "{args:?}");
        }
        assert_eq!(main(&[OsString::from("--help")]), 0);
    }

    #[test]
    fn main_exit_codes() {
        assert_eq!(main(&[OsString::from("--bogus")]), 2);
        use std::os::unix::ffi::OsStringExt;
        assert_eq!(main(&[OsString::from_vec(vec![b'-', b'-', 0xff])]), 2);
        let t = tempfile::tempdir().unwrap();
        let o = setup(t.path(), "tok");
        let args = |extra: &[&str]| {
            let mut v: Vec<OsString> = vec![
                "--source-dir".into(),
                o.source_dir.clone().into(),
                "--bin-dir".into(),
                o.bin_dir.clone().into(),
                "--binaries".into(),
                "meta-cni,meta-bridge".into(),
                "--conf-dir".into(),
                o.conf_dir.clone().into(),
                "--conflist-source".into(),
                o.conflist_source.clone().into(),
                "--serviceaccount-dir".into(),
                o.serviceaccount_dir.clone().into(),
                "--kube-server".into(),
                "https://127.0.0.1:6443".into(),
            ];
            v.extend(extra.iter().map(OsString::from));
            v
        };
        assert_eq!(main(&args(&[])), 0);
        assert_eq!(fs::read_to_string(o.conflist_path()).unwrap(), CONFLIST);
        assert!(o.kubeconfig_path.is_file());
        assert!(o.bin_dir.join("meta-bridge").is_file());
        assert_eq!(main(&args(&["--uninstall"])), 0);
        assert!(!o.conflist_path().exists() && !o.kubeconfig_path.exists());
        assert!(
            o.bin_dir.join("meta-bridge").is_file(),
            "uninstall keeps binaries"
        );
        // A missing binary: 1, and no conflist.
        assert_eq!(main(&args(&["--binaries", "meta-cni,nope"])), 1);
        assert!(!o.conflist_path().exists());
    }

    #[test]
    fn server_urls() {
        let ok = [
            (Some("https://x:1"), None, None, "https://x:1"),
            (
                Some("https://x:1"),
                Some("10.0.0.1"),
                Some("443"),
                "https://x:1",
            ),
            (
                None,
                Some("10.96.0.1"),
                Some("443"),
                "https://10.96.0.1:443",
            ),
            (None, Some("10.96.0.1"), None, "https://10.96.0.1:443"),
            (
                None,
                Some("fd00::1"),
                Some("6443"),
                "https://[fd00::1]:6443",
            ),
            (
                None,
                Some("[fd00::1]"),
                Some("6443"),
                "https://[fd00::1]:6443",
            ),
        ];
        for (flag, host, port, want) in ok {
            assert_eq!(server_url(flag, host, port).unwrap(), want);
        }
        for (host, port) in [
            (None, Some("443")),
            (Some(""), None),
            (Some("h"), Some("x")),
        ] {
            assert!(server_url(None, host, port).is_err(), "{host:?} {port:?}");
        }
    }

    // ---- base64, JWT

    #[test]
    fn base64_vectors() {
        let v = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (plain, enc) in v {
            assert_eq!(base64_encode(plain.as_bytes()), enc);
            assert_eq!(base64url_decode(enc).unwrap(), plain.as_bytes(), "{enc}");
            assert_eq!(
                base64url_decode(enc.trim_end_matches('=')).unwrap(),
                plain.as_bytes()
            );
        }
        assert_eq!(base64_encode(&[0xfb, 0xff]), "+/8=");
        assert_eq!(base64url_decode("-_8").unwrap(), [0xfb, 0xff]);
        for bad in ["Zm9v!", "Z", "Zm9vY", "+/8="] {
            assert_eq!(base64url_decode(bad), None, "{bad}");
        }
        let data: Vec<u8> = (0..=255).collect();
        for n in 0..data.len() {
            assert_eq!(base64url_decode(&b64url(&data[..n])).unwrap(), &data[..n]);
        }
    }

    #[test]
    fn jwt_exp_claims() {
        assert_eq!(
            jwt_exp(&jwt(r#"{"exp":1700000000,"sub":"x"}"#)),
            Some(1_700_000_000)
        );
        assert_eq!(
            jwt_exp(&format!("{}\n", jwt(r#"{"exp":1700000000}"#))),
            Some(1_700_000_000)
        );
        assert_eq!(jwt_exp(&jwt(r#"{"exp":1.7e9}"#)), Some(1_700_000_000));
        for bad in [
            jwt(r#"{"sub":"x"}"#),
            jwt(r#"{"exp":"soon"}"#),
            jwt(r#"{"exp":-5}"#),
            jwt("not json"),
            "a.b".into(),
            format!("{}.x", jwt(r#"{"exp":1}"#)),
            "x.!!.y".into(),
            "legacy-opaque-token".into(),
            String::new(),
        ] {
            assert_eq!(jwt_exp(&bad), None, "{bad}");
        }
    }

    #[test]
    fn utc_format() {
        assert_eq!(format_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(format_utc(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(format_utc(4_107_542_399), "2100-02-28T23:59:59Z");
    }

    // ---- atomic files: binaries

    #[test]
    fn binaries_copied_skipped_and_replaced() {
        let t = tempfile::tempdir().unwrap();
        let o = setup(t.path(), "tok");
        let done = install_binaries(&o.source_dir, &o.bin_dir, &o.binaries).unwrap();
        assert_eq!(
            done,
            [
                ("meta-cni".to_string(), Outcome::Written),
                ("meta-bridge".to_string(), Outcome::Written)
            ]
        );
        let dst = o.bin_dir.join("meta-cni");
        assert_eq!(fs::read_to_string(&dst).unwrap(), "#!binary meta-cni\n");
        assert_eq!(mode(&dst), 0o755);
        assert_eq!(mode(&o.bin_dir.join("meta-bridge")), 0o755);
        assert!(hidden(&o.bin_dir).is_empty());
        // Identical: not rewritten (same inode), even with a wrong mode (corrected).
        let before = ino(&dst);
        fs::set_permissions(&dst, Permissions::from_mode(0o700)).unwrap();
        let done = install_binaries(&o.source_dir, &o.bin_dir, &o.binaries).unwrap();
        assert!(
            done.iter().all(|(_, x)| *x == Outcome::Unchanged),
            "{done:?}"
        );
        assert_eq!(ino(&dst), before);
        assert_eq!(mode(&dst), 0o755);
        // Changed: replaced by a new file.
        fs::write(o.source_dir.join("meta-cni"), "#!binary meta-cni v2\n").unwrap();
        let done = install_binaries(&o.source_dir, &o.bin_dir, &o.binaries).unwrap();
        assert_eq!(done[0].1, Outcome::Written);
        assert_eq!(done[1].1, Outcome::Unchanged);
        assert_ne!(ino(&dst), before);
        assert_eq!(fs::read_to_string(&dst).unwrap(), "#!binary meta-cni v2\n");
        assert_eq!(mode(&dst), 0o755);
        assert!(hidden(&o.bin_dir).is_empty());
    }

    #[test]
    fn binaries_same_size_differing_late_are_replaced() {
        let t = tempfile::tempdir().unwrap();
        let (src, bin) = (t.path().join("src"), t.path().join("bin"));
        fs::create_dir_all(&src).unwrap();
        fs::create_dir_all(&bin).unwrap();
        let mut data = vec![7u8; 200_000];
        fs::write(bin.join("big"), &data).unwrap();
        *data.last_mut().unwrap() = 8;
        fs::write(src.join("big"), &data).unwrap();
        let done = install_binaries(&src, &bin, &strings(&["big"])).unwrap();
        assert_eq!(done[0].1, Outcome::Written);
        assert_eq!(fs::read(bin.join("big")).unwrap(), data);
    }

    #[test]
    fn missing_source_binary_is_an_error_and_nothing_is_written() {
        let t = tempfile::tempdir().unwrap();
        let o = setup(t.path(), "tok");
        fs::create_dir_all(&o.bin_dir).unwrap();
        let err = install_binaries(&o.source_dir, &o.bin_dir, &strings(&["meta-cni", "nope"]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&o.source_dir.join("nope").display().to_string()),
            "{err}"
        );
        assert!(err.contains("No such file"), "{err}");
        assert_eq!(fs::read_dir(&o.bin_dir).unwrap().count(), 0);
        // A directory in place of a source binary is refused as well.
        fs::create_dir(o.source_dir.join("dir")).unwrap();
        assert!(install_binaries(&o.source_dir, &o.bin_dir, &strings(&["dir"])).is_err());
        assert_eq!(fs::read_dir(&o.bin_dir).unwrap().count(), 0);
    }

    #[test]
    fn failed_rename_leaves_no_temp_file() {
        let t = tempfile::tempdir().unwrap();
        let o = setup(t.path(), "tok");
        // The destination is a non-empty directory: the rename fails.
        fs::create_dir_all(o.bin_dir.join("meta-cni").join("x")).unwrap();
        let err = install_binaries(&o.source_dir, &o.bin_dir, &strings(&["meta-cni"]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("renaming"), "{err}");
        assert!(hidden(&o.bin_dir).is_empty(), "{:?}", hidden(&o.bin_dir));
        assert!(o.bin_dir.join("meta-cni").join("x").is_dir());
    }

    #[test]
    fn stale_temp_of_the_same_pid_is_replaced() {
        let t = tempfile::tempdir().unwrap();
        let target = t.path().join("f.conflist");
        let tmp = temp_path(&target).unwrap();
        fs::write(&tmp, "left by a crash").unwrap();
        assert_eq!(
            write_if_changed(&target, b"new", 0o644).unwrap(),
            Outcome::Written
        );
        assert_eq!(fs::read(&target).unwrap(), b"new");
        assert!(!tmp.exists());
    }

    #[test]
    fn temp_names() {
        let tmp = temp_path(Path::new("/etc/cni/net.d/00-meta-cni.conflist")).unwrap();
        assert_eq!(tmp.parent(), Some(Path::new("/etc/cni/net.d")));
        let name = tmp.file_name().unwrap().to_str().unwrap();
        assert!(name.starts_with(".00-meta-cni.conflist."), "{name}");
        assert!(name.ends_with(".tmp"), "{name}");
        assert!(name.contains(&std::process::id().to_string()), "{name}");
        for ext in [".conf", ".conflist", ".json"] {
            assert!(!name.ends_with(ext), "{name}");
        }
        assert!(temp_path(Path::new("/")).is_err());
    }

    // ---- conflist

    #[test]
    fn conflist_written_in_place_and_skipped_when_identical() {
        let t = tempfile::tempdir().unwrap();
        let o = setup(t.path(), "tok");
        let out = install_conflist(&o.conflist_source, &o.conf_dir, &o.conflist_name).unwrap();
        assert_eq!(out, Outcome::Written);
        let p = o.conflist_path();
        assert_eq!(fs::read_to_string(&p).unwrap(), CONFLIST);
        assert_eq!(mode(&p), 0o644);
        assert!(hidden(&o.conf_dir).is_empty());
        let before = ino(&p);
        let out = install_conflist(&o.conflist_source, &o.conf_dir, &o.conflist_name).unwrap();
        assert_eq!(out, Outcome::Unchanged);
        assert_eq!(ino(&p), before);
        // Edited on the host: replaced.
        fs::write(&p, "{}").unwrap();
        let out = install_conflist(&o.conflist_source, &o.conf_dir, &o.conflist_name).unwrap();
        assert_eq!(out, Outcome::Written);
        assert_eq!(fs::read_to_string(&p).unwrap(), CONFLIST);
    }

    #[test]
    fn invalid_conflist_is_refused_and_nothing_written() {
        let t = tempfile::tempdir().unwrap();
        let o = setup(t.path(), "tok");
        fs::create_dir_all(&o.conf_dir).unwrap();
        let cases = [
            ("{\"plugins\": [", "not valid JSON"),
            ("[]", "no \"plugins\""),
            ("{\"name\":\"x\"}", "no \"plugins\""),
            ("{\"plugins\":{}}", "not an array"),
            ("{\"plugins\":[]}", "empty"),
            ("{\"plugins\":[1]}", "not an object"),
        ];
        for (text, want) in cases {
            fs::write(&o.conflist_source, text).unwrap();
            let err = install_conflist(&o.conflist_source, &o.conf_dir, &o.conflist_name)
                .unwrap_err()
                .to_string();
            assert!(err.contains(want), "{text}: {err}");
            assert!(
                err.contains(&o.conflist_source.display().to_string()),
                "{err}"
            );
            assert_eq!(fs::read_dir(&o.conf_dir).unwrap().count(), 0, "{text}");
        }
        // An installed conflist stays as it is when the source turns bad.
        fs::write(o.conflist_path(), CONFLIST).unwrap();
        assert!(install_conflist(&o.conflist_source, &o.conf_dir, &o.conflist_name).is_err());
        assert_eq!(fs::read_to_string(o.conflist_path()).unwrap(), CONFLIST);
        // A missing source names its path.
        let err = install_conflist(&t.path().join("none"), &o.conf_dir, &o.conflist_name)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("none") && err.contains("No such file"),
            "{err}"
        );
    }

    // ---- wait-for

    #[test]
    fn wait_for_times_out_on_missing_or_empty_file() {
        let t = tempfile::tempdir().unwrap();
        let f = t.path().join("subnet.env");
        let rt = rt();
        for create_empty in [false, true] {
            if create_empty {
                fs::write(&f, "").unwrap();
            }
            let start = std::time::Instant::now();
            let err = rt
                .block_on(wait_for_file(
                    &f,
                    Some(Duration::from_millis(300)),
                    Duration::from_millis(20),
                ))
                .unwrap_err()
                .to_string();
            assert!(start.elapsed() >= Duration::from_millis(300));
            assert!(
                err.contains("subnet.env") && err.contains("did not appear"),
                "{err}"
            );
        }
    }

    #[test]
    fn wait_for_returns_once_the_file_has_content() {
        let t = tempfile::tempdir().unwrap();
        let f = t.path().join("subnet.env");
        let f2 = f.clone();
        let writer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(150));
            fs::write(&f2, "").unwrap();
            std::thread::sleep(Duration::from_millis(150));
            fs::write(&f2, "META_SUBNET=10.244.1.0/24\n").unwrap();
        });
        let start = std::time::Instant::now();
        rt().block_on(wait_for_file(
            &f,
            Some(Duration::from_secs(10)),
            Duration::from_millis(20),
        ))
        .unwrap();
        assert!(start.elapsed() >= Duration::from_millis(300));
        writer.join().unwrap();
        // Already there: at once, also without a timeout.
        rt().block_on(wait_for_file(&f, None, Duration::from_secs(60)))
            .unwrap();
    }

    // ---- kubeconfig

    #[test]
    fn credentials_read_and_checked() {
        let t = tempfile::tempdir().unwrap();
        let o = setup(t.path(), "  tok  ");
        let c = read_credentials(&o.serviceaccount_dir).unwrap();
        assert_eq!(c.token, "tok");
        assert_eq!(c.ca, TEST_CA.as_bytes());
        assert_eq!(c.namespace.as_deref(), Some("kube-system"));
        fs::remove_file(o.serviceaccount_dir.join("namespace")).unwrap();
        assert_eq!(
            read_credentials(&o.serviceaccount_dir).unwrap().namespace,
            None
        );
        fs::write(o.serviceaccount_dir.join("token"), "\n").unwrap();
        let err = read_credentials(&o.serviceaccount_dir)
            .unwrap_err()
            .to_string();
        assert!(err.contains("token") && err.contains("empty"), "{err}");
        fs::remove_file(o.serviceaccount_dir.join("token")).unwrap();
        let err = read_credentials(&o.serviceaccount_dir)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("sa/token") && err.contains("No such file"),
            "{err}"
        );
    }

    #[test]
    fn kubeconfig_round_trips_through_kube() {
        let creds = Credentials {
            token: "tok-123".into(),
            ca: TEST_CA.as_bytes().to_vec(),
            namespace: Some("kube-system".into()),
        };
        let text = String::from_utf8(render_kubeconfig("https://[fd00::1]:6443", &creds)).unwrap();
        let kc = kube::config::Kubeconfig::from_yaml(&text).unwrap();
        assert_eq!(kc.current_context.as_deref(), Some("meta-cni"));
        assert_eq!(kc.clusters.len(), 1);
        let cluster = kc.clusters[0].cluster.as_ref().unwrap();
        assert_eq!(cluster.server.as_deref(), Some("https://[fd00::1]:6443"));
        assert_eq!(
            cluster.certificate_authority_data.as_deref(),
            Some(base64_encode(TEST_CA.as_bytes()).as_str())
        );
        let user = serde_json::to_value(kc.auth_infos[0].auth_info.as_ref().unwrap()).unwrap();
        assert_eq!(user["token"], "tok-123");
        let ctx = kc.contexts[0].context.as_ref().unwrap();
        assert_eq!(ctx.cluster, "meta-cni");
        assert_eq!(ctx.user.as_deref(), Some("meta-cni"));
        assert_eq!(ctx.namespace.as_deref(), Some("kube-system"));
        // kube builds a client configuration from it.
        let cfg = rt()
            .block_on(kube::Config::from_custom_kubeconfig(
                kc,
                &kube::config::KubeConfigOptions::default(),
            ))
            .unwrap();
        assert_eq!(cfg.cluster_url.to_string(), "https://[fd00::1]:6443/");
        assert_eq!(cfg.default_namespace, "kube-system");
        // Deterministic: the same input renders the same bytes (skip-if-identical).
        assert_eq!(
            render_kubeconfig("https://[fd00::1]:6443", &creds),
            text.as_bytes()
        );
    }

    #[test]
    fn kubeconfig_file_is_0600_in_a_0700_dir() {
        let t = tempfile::tempdir().unwrap();
        let p = t
            .path()
            .join("net.d")
            .join("meta-cni.d")
            .join("meta-cni.kubeconfig");
        assert_eq!(write_kubeconfig(&p, b"{}\n").unwrap(), Outcome::Written);
        assert_eq!(mode(&p), 0o600);
        assert_eq!(mode(p.parent().unwrap()), 0o700);
        // Only the kubeconfig's own directory is 0700, not the conf dir above it.
        let sibling = t.path().join("sibling");
        fs::create_dir(&sibling).unwrap();
        assert_eq!(mode(&t.path().join("net.d")), mode(&sibling));
        assert!(hidden(p.parent().unwrap()).is_empty());
        fs::set_permissions(&p, Permissions::from_mode(0o644)).unwrap();
        assert_eq!(write_kubeconfig(&p, b"{}\n").unwrap(), Outcome::Unchanged);
        assert_eq!(mode(&p), 0o600);
        assert_eq!(
            write_kubeconfig(&p, b"{\"a\":1}\n").unwrap(),
            Outcome::Written
        );
        assert_eq!(mode(&p), 0o600);
        assert_eq!(fs::read(&p).unwrap(), b"{\"a\":1}\n");
    }

    // ---- watch

    fn kubeconfig_token(p: &Path) -> String {
        let kc = kube::config::Kubeconfig::read_from(p).unwrap();
        let user = serde_json::to_value(kc.auth_infos[0].auth_info.as_ref().unwrap()).unwrap();
        user["token"].as_str().unwrap().to_string()
    }

    #[test]
    fn watch_round_renews_a_rotated_token_and_restores_the_conflist() {
        let t = tempfile::tempdir().unwrap();
        let now = 1_800_000_000;
        let tok1 = jwt(&format!(r#"{{"exp":{}}}"#, now + 3600));
        let o = setup(t.path(), &tok1);
        let server = "https://127.0.0.1:6443";
        let mut st = WatchState::default();
        // First round: everything written.
        let r = watch_round(&o, Some(server), &mut st, now);
        assert_eq!(r.kubeconfig, Some(Outcome::Written));
        assert_eq!(r.conflist, Some(Outcome::Written));
        assert!(!r.token_renewed && r.errors.is_empty(), "{r:?}");
        assert_eq!(kubeconfig_token(&o.kubeconfig_path), tok1);
        // Nothing changed.
        let r = watch_round(&o, Some(server), &mut st, now + 10);
        assert_eq!(
            r,
            Round {
                kubeconfig: Some(Outcome::Unchanged),
                conflist: Some(Outcome::Unchanged),
                ..Round::default()
            }
        );
        // kubelet rotates the token: the kubeconfig follows.
        let tok2 = jwt(&format!(r#"{{"exp":{}}}"#, now + 7200));
        fs::write(o.serviceaccount_dir.join("token"), &tok2).unwrap();
        let r = watch_round(&o, Some(server), &mut st, now + 20);
        assert_eq!(r.kubeconfig, Some(Outcome::Written));
        assert!(r.token_renewed);
        assert_eq!(kubeconfig_token(&o.kubeconfig_path), tok2);
        assert_eq!(mode(&o.kubeconfig_path), 0o600);
        // A new CA too.
        fs::write(o.serviceaccount_dir.join("ca.crt"), "other CA").unwrap();
        let r = watch_round(&o, Some(server), &mut st, now + 30);
        assert_eq!(r.kubeconfig, Some(Outcome::Written));
        assert!(!r.token_renewed);
        // Someone deletes the conflist: restored.
        fs::remove_file(o.conflist_path()).unwrap();
        let r = watch_round(&o, Some(server), &mut st, now + 40);
        assert_eq!(r.conflist, Some(Outcome::Written));
        assert_eq!(fs::read_to_string(o.conflist_path()).unwrap(), CONFLIST);
        // The token disappears for a round: an error, the kubeconfig kept.
        fs::remove_file(o.serviceaccount_dir.join("token")).unwrap();
        let r = watch_round(&o, Some(server), &mut st, now + 50);
        assert_eq!(r.errors.len(), 1, "{r:?}");
        assert!(r.errors[0].contains("token"), "{r:?}");
        assert_eq!(kubeconfig_token(&o.kubeconfig_path), tok2);
        assert!(hidden(&o.conf_dir).is_empty());
        // Without a kubeconfig to manage, only the conflist.
        let r = watch_round(&o, None, &mut st, now + 60);
        assert_eq!(r.kubeconfig, None);
        assert!(r.errors.is_empty());
    }

    #[test]
    fn watch_round_warns_once_when_the_token_is_not_renewed() {
        let t = tempfile::tempdir().unwrap();
        let now = 1_800_000_000;
        let mut o = setup(t.path(), &jwt(&format!(r#"{{"exp":{}}}"#, now + 25)));
        o.watch_interval = Duration::from_secs(10);
        o.skip_conflist = true;
        let server = "https://127.0.0.1:6443";
        let mut st = WatchState::default();
        let r = watch_round(&o, Some(server), &mut st, now);
        assert!(!r.expiry_warning, "25 s left, window 20 s");
        assert_eq!(r.conflist, None);
        let r = watch_round(&o, Some(server), &mut st, now + 10);
        assert!(r.expiry_warning, "15 s left, not renewed");
        let r = watch_round(&o, Some(server), &mut st, now + 20);
        assert!(!r.expiry_warning, "warned once per token");
        // Renewed: the new one is fine, and its own expiry may warn again later.
        fs::write(
            o.serviceaccount_dir.join("token"),
            jwt(&format!(r#"{{"exp":{}}}"#, now + 40)),
        )
        .unwrap();
        let r = watch_round(&o, Some(server), &mut st, now + 20);
        assert!(r.token_renewed && !r.expiry_warning);
        let r = watch_round(&o, Some(server), &mut st, now + 30);
        assert!(r.expiry_warning);
        // A token without exp never warns.
        fs::write(o.serviceaccount_dir.join("token"), "opaque").unwrap();
        watch_round(&o, Some(server), &mut st, now + 30);
        let r = watch_round(&o, Some(server), &mut st, u64::MAX);
        assert!(!r.expiry_warning);
    }

    // ---- shutdown

    #[test]
    fn uninstall_decision() {
        use DaemonSetLookup::*;
        let cases = [
            (Present, Decision::Keep),
            (Deleting, Decision::Uninstall),
            (NotFound, Decision::Uninstall),
            (Refused(401), Decision::Uninstall),
            (Refused(403), Decision::Uninstall),
            (Failed("timeout".into()), Decision::Keep),
            (Failed("connection refused".into()), Decision::Keep),
        ];
        for (lookup, want) in cases {
            assert_eq!(decide(&lookup), want, "{lookup:?}");
        }
    }

    #[test]
    fn uninstall_removes_only_the_conflist_and_kubeconfig() {
        let t = tempfile::tempdir().unwrap();
        let o = setup(t.path(), "tok");
        assert_eq!(main_with(&o), Ok(()));
        let other = o.conf_dir.join("10-other.conflist");
        fs::write(&other, CONFLIST).unwrap();
        uninstall(&o).unwrap();
        assert!(!o.conflist_path().exists());
        assert!(!o.kubeconfig_path.exists());
        assert!(other.exists());
        assert!(o.kubeconfig_path.parent().unwrap().is_dir());
        assert!(o.bin_dir.join("meta-cni").exists());
        // Idempotent.
        uninstall(&o).unwrap();
        // The skipped ones are left alone.
        assert_eq!(main_with(&o), Ok(()));
        let skip = Options {
            skip_kubeconfig: true,
            ..o.clone()
        };
        uninstall(&skip).unwrap();
        assert!(!o.conflist_path().exists());
        assert!(o.kubeconfig_path.exists());
    }

    /// `run` of a one-shot install, errors as strings.
    fn main_with(o: &Options) -> std::result::Result<(), String> {
        rt().block_on(run(o)).map_err(|e| e.to_string())
    }

    /// A fake API server: answers one request with `status` and `body` (or never, with
    /// `None`); returns its URL and the request line it got.
    fn fake_api(answer: Option<(u16, String)>) -> (String, std::thread::JoinHandle<String>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        let h = std::thread::spawn(move || {
            let (s, _) = l.accept().unwrap();
            let mut r = io::BufReader::new(s.try_clone().unwrap());
            let mut first = String::new();
            r.read_line(&mut first).unwrap();
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap() == 0 || line == "\r\n" {
                    break;
                }
            }
            match answer {
                Some((code, body)) => {
                    let mut s = s;
                    write!(
                        s,
                        "HTTP/1.1 {code} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    )
                    .unwrap();
                }
                None => std::thread::sleep(Duration::from_secs(2)),
            }
            first.trim().to_string()
        });
        (url, h)
    }

    fn status(code: u16) -> String {
        format!(
            r#"{{"kind":"Status","apiVersion":"v1","metadata":{{}},"status":"Failure","message":"m","reason":"R","code":{code}}}"#
        )
    }

    fn daemonset(deleting: bool) -> String {
        let ts = if deleting {
            r#","deletionTimestamp":"2026-01-01T00:00:00Z""#
        } else {
            ""
        };
        format!(
            r#"{{"apiVersion":"apps/v1","kind":"DaemonSet","metadata":{{"name":"meta-cni","namespace":"kube-system"{ts}}}}}"#
        )
    }

    #[test]
    fn daemonset_lookup_against_a_fake_api_server() {
        let cases = [
            (Some((200, daemonset(false))), DaemonSetLookup::Present),
            (Some((200, daemonset(true))), DaemonSetLookup::Deleting),
            (Some((404, status(404))), DaemonSetLookup::NotFound),
            (Some((403, status(403))), DaemonSetLookup::Refused(403)),
            (Some((401, status(401))), DaemonSetLookup::Refused(401)),
        ];
        let t = tempfile::tempdir().unwrap();
        let rt = rt();
        for (answer, want) in cases {
            let (url, h) = fake_api(answer);
            let kc = t.path().join("kc");
            let creds = read_credentials(&setup(t.path(), "tok").serviceaccount_dir).unwrap();
            fs::write(&kc, render_kubeconfig(&url, &creds)).unwrap();
            let got = rt.block_on(lookup_daemonset(
                &kc,
                "kube-system",
                "meta-cni",
                Duration::from_secs(5),
            ));
            assert_eq!(got, want);
            assert_eq!(
                h.join().unwrap(),
                "GET /apis/apps/v1/namespaces/kube-system/daemonsets/meta-cni HTTP/1.1"
            );
        }
        // 500: unknown, kept.
        let (url, h) = fake_api(Some((500, status(500))));
        let kc = t.path().join("kc");
        let creds = read_credentials(&t.path().join("sa")).unwrap();
        fs::write(&kc, render_kubeconfig(&url, &creds)).unwrap();
        let got = rt.block_on(lookup_daemonset(
            &kc,
            "kube-system",
            "meta-cni",
            Duration::from_secs(5),
        ));
        assert!(matches!(got, DaemonSetLookup::Failed(_)), "{got:?}");
        h.join().unwrap();
        // No answer: a timeout.
        let (url, h) = fake_api(None);
        fs::write(&kc, render_kubeconfig(&url, &creds)).unwrap();
        let start = std::time::Instant::now();
        let got = rt.block_on(lookup_daemonset(
            &kc,
            "kube-system",
            "meta-cni",
            Duration::from_millis(500),
        ));
        assert!(matches!(got, DaemonSetLookup::Failed(_)), "{got:?}");
        assert!(start.elapsed() < Duration::from_secs(2));
        h.join().unwrap();
        // Connection refused; no kubeconfig.
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        fs::write(
            &kc,
            render_kubeconfig(&format!("http://127.0.0.1:{port}"), &creds),
        )
        .unwrap();
        let got = rt.block_on(lookup_daemonset(
            &kc,
            "kube-system",
            "meta-cni",
            Duration::from_secs(5),
        ));
        assert!(matches!(got, DaemonSetLookup::Failed(_)), "{got:?}");
        let got = rt.block_on(lookup_daemonset(
            &t.path().join("none"),
            "kube-system",
            "meta-cni",
            Duration::from_secs(5),
        ));
        assert!(
            matches!(&got, DaemonSetLookup::Failed(m) if m.contains("none")),
            "{got:?}"
        );
    }

    #[test]
    fn shutdown_uninstalls_only_when_the_daemonset_is_gone() {
        let t = tempfile::tempdir().unwrap();
        let rt = rt();
        for (answer, removed) in [
            ((404, status(404)), true),
            ((200, daemonset(false)), false),
            ((200, daemonset(true)), true),
        ] {
            let (url, h) = fake_api(Some(answer));
            let o = Options {
                kube_server: Some(url),
                daemonset: Some(("kube-system".into(), "meta-cni".into())),
                ..setup(t.path(), "tok")
            };
            assert_eq!(main_with(&o), Ok(()));
            assert!(o.conflist_path().exists() && o.kubeconfig_path.exists());
            rt.block_on(shutdown(&o, "SIGTERM")).unwrap();
            assert_eq!(!o.conflist_path().exists(), removed);
            assert_eq!(!o.kubeconfig_path.exists(), removed);
            h.join().unwrap();
        }
        // Without --daemonset: kept, no request.
        let o = setup(t.path(), "tok");
        assert_eq!(main_with(&o), Ok(()));
        rt.block_on(shutdown(&o, "SIGINT")).unwrap();
        assert!(o.conflist_path().exists() && o.kubeconfig_path.exists());
    }
}
