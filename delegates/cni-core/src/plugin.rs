//! The plugin skeleton: environment + stdin in, exactly one JSON document (the result or
//! the spec's error) out on stdout, logs on stderr.

use crate::config::NetConf;
use crate::env::{Env, Verb};
use crate::error::{Error, Result, code};
use crate::result::CniResult;
use crate::version::{self, LATEST, Version};
use std::io::{IsTerminal, Read, Write};

/// Everything a verb gets.
#[derive(Debug, Clone)]
pub struct CmdArgs {
    /// The validated environment.
    pub env: Env,
    /// stdin, unchanged.
    pub stdin: Vec<u8>,
    /// The parsed configuration.
    pub conf: NetConf,
}

/// A CNI plugin. `add` returns the canonical result; the skeleton converts it to the
/// configuration's version.
pub trait Plugin {
    /// Name used in the about text (`CNI_COMMAND` unset).
    fn about(&self) -> String;
    /// ADD.
    fn add(&self, args: &CmdArgs) -> Result<CniResult>;
    /// DEL: must succeed when things are already gone.
    fn del(&self, args: &CmdArgs) -> Result<()>;
    /// CHECK (config 0.4.0+).
    fn check(&self, args: &CmdArgs) -> Result<()>;
    /// STATUS (config 1.1.0+).
    fn status(&self, args: &CmdArgs) -> Result<()>;
    /// GC (config 1.1.0+).
    fn gc(&self, args: &CmdArgs) -> Result<()>;
    /// Logging wanted by the configuration on stdin: (log file, level). The environment
    /// (`META_CNI_LOG_FILE`, `META_CNI_LOG`) overrides it. Default: none.
    fn log_settings(&self, _stdin: &[u8]) -> (Option<std::path::PathBuf>, Option<String>) {
        (None, None)
    }
}

/// What one invocation prints and its exit code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Bytes for stdout (possibly empty).
    pub stdout: Vec<u8>,
    /// Process exit code.
    pub exit_code: i32,
}

fn version_of_stdin(stdin: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(stdin).ok()?;
    v.get("cniVersion")?.as_str().map(str::to_string)
}

fn fail(e: &Error, ver: &str) -> Outcome {
    let mut out = serde_json::to_vec(&e.to_json(ver)).unwrap_or_default();
    out.push(b'\n');
    Outcome {
        stdout: out,
        exit_code: 1,
    }
}

/// Runs one invocation without touching the process (testable): `get` reads the
/// environment, `stdin` is the configuration.
pub fn dispatch<P: Plugin + ?Sized>(
    plugin: &P,
    get: impl Fn(&str) -> Option<String>,
    stdin: &[u8],
) -> Outcome {
    // The error document's cniVersion: the config's, when it is one we speak.
    let err_ver = version_of_stdin(stdin)
        .and_then(|v| Version::parse(&v))
        .filter(|v| v.is_supported())
        .unwrap_or(LATEST);
    let env = match Env::from_lookup(&get) {
        Ok(e) => e,
        Err(e) => return fail(&e, err_ver.as_str()),
    };
    if env.verb == Verb::Version {
        let ver = version_of_stdin(stdin)
            .filter(|v| Version::parse(v).is_some())
            .unwrap_or_else(|| LATEST.as_str().to_string());
        let mut out = serde_json::to_vec(&version::version_info(&ver)).unwrap_or_default();
        out.push(b'\n');
        return Outcome {
            stdout: out,
            exit_code: 0,
        };
    }
    let conf = match NetConf::parse(stdin) {
        Ok(c) => c,
        Err(e) => return fail(&e, err_ver.as_str()),
    };
    let ver = conf.version();
    let args = CmdArgs {
        env: env.clone(),
        stdin: stdin.to_vec(),
        conf,
    };
    let res = match env.verb {
        Verb::Add => check_netns_not_own(&env.netns).and_then(|()| call(plugin, &args)),
        _ => call(plugin, &args),
    };
    match res {
        Ok(Some(r)) => {
            let mut out = serde_json::to_vec(&r.to_value(ver)).unwrap_or_default();
            out.push(b'\n');
            Outcome {
                stdout: out,
                exit_code: 0,
            }
        }
        Ok(None) => Outcome {
            stdout: Vec::new(),
            exit_code: 0,
        },
        Err(e) => fail(&e, ver.as_str()),
    }
}

/// Runs the verb of `args.env` on a plugin in-process — what the binary skeleton does and
/// what a meta plugin does for a bundled delegate: the verb's version gate (code 1 below
/// [`Verb::min_version`]), then the plugin; a panic becomes code 999. ADD returns the
/// result, every other verb `None`.
pub fn call<P: Plugin + ?Sized>(plugin: &P, args: &CmdArgs) -> Result<Option<CniResult>> {
    let verb = args.env.verb;
    let ver = args.conf.version();
    let min = verb.min_version();
    if ver < min {
        return Err(Error::new(
            code::INCOMPATIBLE_VERSION,
            format!("config version {ver} does not allow {}", verb.as_str()),
        )
        .with_details(format!("{} needs cniVersion {min} or later", verb.as_str())));
    }
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match verb {
        Verb::Add => plugin.add(args).map(Some),
        Verb::Del => plugin.del(args).map(|_| None),
        Verb::Check => plugin.check(args).map(|_| None),
        Verb::Status => plugin.status(args).map(|_| None),
        Verb::Gc => plugin.gc(args).map(|_| None),
        Verb::Version => Ok(None),
    }))
    .unwrap_or_else(|panic| {
        let what = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "unknown panic".into());
        Err(Error::internal(format!("internal error (bug): {what}")))
    })
}

/// The plugin must not be asked to configure its own namespace (the runtime's bug would
/// otherwise take the node's network down).
fn check_netns_not_own(netns: &str) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let Ok(target) = std::fs::metadata(netns) else {
        return Ok(());
    };
    let Ok(own) = std::fs::metadata("/proc/thread-self/ns/net") else {
        return Ok(());
    };
    if target.dev() == own.dev() && target.ino() == own.ino() {
        return Err(Error::env(format!(
            "CNI_NETNS {netns:?} is the plugin's own network namespace; refusing to configure it"
        )));
    }
    Ok(())
}

/// Sets up logging to stderr (or to the file named by `META_CNI_LOG_FILE`), at the level
/// of `META_CNI_LOG` (default `warn`). Never stdout.
pub fn init_logging() {
    init_logging_with(None, None)
}

/// Like [`init_logging`], with a file and level from the configuration; the environment
/// variables win over them.
pub fn init_logging_with(file: Option<std::path::PathBuf>, level: Option<String>) {
    use tracing_subscriber::filter::{LevelFilter, Targets};
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let level = std::env::var("META_CNI_LOG")
        .ok()
        .or(level)
        .unwrap_or_else(|| "warn".into());
    let level = match level.as_str() {
        "verbose" => "debug".to_string(),
        "panic" => "error".to_string(),
        other => other.to_string(),
    };
    // A level, or `target=level` directives (`meta_cni=debug,warn`): `Targets` parses
    // both without a regex engine, which keeps every plugin binary small.
    let filter: Targets = level
        .parse()
        .unwrap_or_else(|_| Targets::new().with_default(LevelFilter::WARN));
    // The builder's own default cap (INFO) would hide debug/trace: `filter` decides.
    let builder = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_max_level(LevelFilter::TRACE);
    let file = std::env::var_os("META_CNI_LOG_FILE")
        .map(std::path::PathBuf::from)
        .or(file);
    if let Some(path) = file
        && let Ok(f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
    {
        let _ = builder
            .with_writer(std::sync::Mutex::new(f))
            .finish()
            .with(filter)
            .try_init();
        return;
    }
    let _ = builder
        .with_writer(std::io::stderr)
        .finish()
        .with(filter)
        .try_init();
}

/// The process entry point of a plugin binary: reads the environment and stdin, prints
/// exactly one JSON document (or nothing) on stdout, drops the plugin (its destructors
/// run: e.g. the firewall hands its netlink sockets off, see meta-firewall) and exits.
pub fn run<P: Plugin>(plugin: P) -> ! {
    // A panic message goes to stderr only; stdout stays clean for the JSON.
    std::panic::set_hook(Box::new(|info| {
        eprintln!("meta-cni plugin panic: {info}");
    }));
    if std::env::var("CNI_COMMAND")
        .map(|c| c.is_empty())
        .unwrap_or(true)
    {
        eprintln!("{}", plugin.about());
        eprintln!(
            "CNI protocol versions supported: {}",
            version::supported_strings().join(", ")
        );
    }
    let mut stdin = Vec::new();
    let stdin_handle = std::io::stdin();
    let read_ok =
        if std::env::var("CNI_COMMAND").as_deref() == Ok("VERSION") && stdin_handle.is_terminal() {
            Ok(0)
        } else {
            stdin_handle.lock().read_to_end(&mut stdin)
        };
    let (log_file, log_level) = plugin.log_settings(&stdin);
    init_logging_with(log_file, log_level);
    let out = match read_ok {
        Ok(_) => dispatch(&plugin, |k| std::env::var(k).ok(), &stdin),
        Err(e) => fail(
            &Error::io(format!("error reading from stdin: {e}")),
            LATEST.as_str(),
        ),
    };
    let mut so = std::io::stdout().lock();
    let _ = so.write_all(&out.stdout);
    let _ = so.flush();
    drop(so);
    drop(plugin);
    std::process::exit(out.exit_code)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::result::IpConfig;
    use std::collections::HashMap;

    struct Fake;
    impl Plugin for Fake {
        fn about(&self) -> String {
            "fake".into()
        }
        fn add(&self, a: &CmdArgs) -> Result<CniResult> {
            if a.conf.get("boom").is_some() {
                panic!("kaboom");
            }
            if a.conf.get("fail").is_some() {
                return Err(Error::config("told to fail"));
            }
            Ok(CniResult {
                ips: vec![IpConfig {
                    address: "10.0.0.2/24".parse().unwrap(),
                    gateway: None,
                    interface: None,
                    extra: Default::default(),
                }],
                ..Default::default()
            })
        }
        fn del(&self, _: &CmdArgs) -> Result<()> {
            Ok(())
        }
        fn check(&self, _: &CmdArgs) -> Result<()> {
            Ok(())
        }
        fn status(&self, _: &CmdArgs) -> Result<()> {
            Ok(())
        }
        fn gc(&self, _: &CmdArgs) -> Result<()> {
            Ok(())
        }
    }

    fn run_with(cmd: &str, stdin: &str) -> (serde_json::Value, i32) {
        let m: HashMap<&str, String> = [
            ("CNI_COMMAND", cmd.to_string()),
            ("CNI_CONTAINERID", "c1".into()),
            ("CNI_NETNS", "/nonexistent/ns".into()),
            ("CNI_IFNAME", "eth0".into()),
            ("CNI_PATH", "/opt/cni/bin".into()),
        ]
        .into_iter()
        .collect();
        let o = dispatch(&Fake, |k| m.get(k).cloned(), stdin.as_bytes());
        let v = if o.stdout.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_slice(&o.stdout).expect("stdout is one JSON document")
        };
        (v, o.exit_code)
    }

    #[test]
    fn add_in_every_version() {
        for v in version::SUPPORTED {
            let (out, rc) = run_with(
                "ADD",
                &format!(r#"{{"cniVersion":"{v}","name":"n","type":"fake"}}"#),
            );
            assert_eq!(rc, 0);
            assert_eq!(out["cniVersion"], v.as_str());
            assert_eq!(
                out["ips"][0].get("version").is_some(),
                v.ips_have_version(),
                "{v}"
            );
        }
    }

    #[test]
    fn verb_gates() {
        let (e, rc) = run_with("CHECK", r#"{"cniVersion":"0.3.1","name":"n"}"#);
        assert_eq!((e["code"].as_u64(), rc), (Some(1), 1));
        assert_eq!(e["cniVersion"], "0.3.1");
        for verb in ["STATUS", "GC"] {
            let (e, _) = run_with(verb, r#"{"cniVersion":"1.0.0","name":"n"}"#);
            assert_eq!(e["code"], 1, "{verb}");
            let (o, rc) = run_with(verb, r#"{"cniVersion":"1.1.0","name":"n"}"#);
            assert_eq!((o, rc), (serde_json::Value::Null, 0));
        }
        let (o, rc) = run_with("CHECK", r#"{"cniVersion":"0.4.0","name":"n"}"#);
        assert_eq!((o, rc), (serde_json::Value::Null, 0));
    }

    #[test]
    fn errors_are_json() {
        let (e, rc) = run_with("ADD", "{nope");
        assert_eq!((e["code"].as_u64(), rc), (Some(6), 1));
        let (e, _) = run_with("ADD", r#"{"cniVersion":"1.0.0","name":"n","fail":1}"#);
        assert_eq!(e["code"], 7);
        assert_eq!(e["msg"], "told to fail");
        let (e, _) = run_with("ADD", r#"{"cniVersion":"1.0.0","name":"n","boom":1}"#);
        assert_eq!(e["code"], 999);
        assert!(e["msg"].as_str().unwrap().contains("kaboom"));
        let (e, _) = run_with("ADD", r#"{"cniVersion":"0.1.0","name":"n"}"#);
        assert_eq!(e["code"], 1);
        let (e, _) = run_with("FROB", r#"{"cniVersion":"1.0.0","name":"n"}"#);
        assert_eq!(e["code"], 4);
    }

    #[test]
    fn version_verb() {
        let (v, rc) = run_with("VERSION", r#"{"cniVersion":"0.4.0"}"#);
        assert_eq!(rc, 0);
        assert_eq!(v["cniVersion"], "0.4.0");
        assert_eq!(v["supportedVersions"][4], "1.1.0");
        let (v, _) = run_with("VERSION", "");
        assert_eq!(v["cniVersion"], "1.1.0");
    }
}
