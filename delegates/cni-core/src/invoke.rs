//! Executing another CNI plugin binary (IPAM plugins, exec'd delegates), as libcni's
//! `invoke` package does: find it on the CNI path, pass the environment with the verb
//! overridden, feed the configuration on stdin, and turn its stdout into a result or its
//! error JSON into our [`Error`].

use crate::env::{Env, Verb};
use crate::error::{Error, Result, code};
use crate::result::CniResult;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Whether an operator asked to exec `plugin_type` even though it is bundled:
/// `META_CNI_FORCE_EXEC` is a comma-separated list of types.
pub fn forced_exec(plugin_type: &str) -> bool {
    std::env::var("META_CNI_FORCE_EXEC")
        .map(|v| v.split(',').any(|t| t.trim() == plugin_type))
        .unwrap_or(false)
}

/// Finds a plugin binary by type on the CNI path (the first directory holding an executable
/// file of that name, as libcni's `FindInPath`). The type must be a plain file name.
pub fn find_plugin(plugin_type: &str, path: &[PathBuf]) -> Result<PathBuf> {
    if plugin_type.is_empty()
        || plugin_type.contains('/')
        || plugin_type == "."
        || plugin_type == ".."
    {
        return Err(Error::config(format!(
            "invalid plugin type {plugin_type:?}"
        )));
    }
    // An empty list searches nothing (an empty search string would mean the working
    // directory). `which_in_global` takes no working directory, so a relative directory is
    // used as given, as libcni does.
    let found = if path.is_empty() {
        None
    } else {
        std::env::join_paths(path)
            .ok()
            .and_then(|list| which::which_in_global(plugin_type, Some(list)).ok())
            .and_then(|mut candidates| candidates.next())
    };
    found.ok_or_else(|| {
        let dirs: Vec<String> = path.iter().map(|p| p.display().to_string()).collect();
        Error::new(
            code::INVALID_CONFIG,
            format!(
                "failed to find plugin {plugin_type:?} in path [{}]",
                dirs.join(" ")
            ),
        )
    })
}

/// Runs `plugin` with `verb`, the invocation environment of `env` and `stdin`; returns its
/// stdout on success. The plugin's stderr goes to ours (logs), never its stdout.
pub fn exec_raw(plugin: &Path, verb: Verb, env: &Env, stdin: &[u8]) -> Result<Vec<u8>> {
    let path_var = std::env::join_paths(&env.path).unwrap_or_default();
    let mut cmd = Command::new(plugin);
    cmd.env("CNI_COMMAND", verb.as_str())
        .env("CNI_CONTAINERID", &env.container_id)
        .env("CNI_NETNS", &env.netns)
        .env("CNI_IFNAME", &env.ifname)
        .env("CNI_ARGS", &env.args_raw)
        .env("CNI_PATH", path_var)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let name = plugin.display().to_string();
    let mut child = cmd
        .spawn()
        .map_err(|e| Error::internal(format!("failed to execute plugin {name}: {e}")))?;
    if let Some(mut si) = child.stdin.take() {
        // A plugin that exits without reading stdin gives EPIPE: its exit status tells.
        let _ = si.write_all(stdin);
    }
    let out = child
        .wait_with_output()
        .map_err(|e| Error::internal(format!("failed to wait for plugin {name}: {e}")))?;
    if out.status.success() {
        return Ok(out.stdout);
    }
    if let Ok(mut e) = serde_json::from_slice::<Error>(&out.stdout) {
        if e.msg.is_empty() {
            e.msg = format!("plugin {name} failed");
        }
        return Err(e);
    }
    Err(Error::internal(format!(
        "plugin {name} failed ({}) with unparseable output: {:?}",
        out.status,
        String::from_utf8_lossy(&out.stdout).trim()
    )))
}

/// ADD through a binary; the result is parsed from whatever version it speaks.
pub fn exec_add(plugin_type: &str, env: &Env, stdin: &[u8]) -> Result<CniResult> {
    let p = find_plugin(plugin_type, &env.path)?;
    let out = exec_raw(&p, Verb::Add, env, stdin)?;
    CniResult::from_slice(&out).map_err(|e| e.context(format!("result of plugin {plugin_type}")))
}

/// Any verb without a result (DEL, CHECK, STATUS, GC).
pub fn exec_verb(plugin_type: &str, verb: Verb, env: &Env, stdin: &[u8]) -> Result<()> {
    let p = find_plugin(plugin_type, &env.path)?;
    exec_raw(&p, verb, env, stdin).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::CniArgs;
    use std::os::unix::fs::PermissionsExt;

    fn env(dir: &Path) -> Env {
        Env {
            verb: Verb::Add,
            container_id: "c1".into(),
            netns: "/x".into(),
            ifname: "eth0".into(),
            args: CniArgs::default(),
            args_raw: String::new(),
            path: vec![dir.to_path_buf()],
        }
    }

    fn script(dir: &Path, name: &str, body: &str) {
        let p = dir.join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[test]
    fn exec_paths() {
        let d = tempfile::tempdir().unwrap();
        script(
            d.path(),
            "ok",
            r#"cat >/dev/null; echo '{"cniVersion":"0.3.1","ips":[{"version":"4","address":"10.0.0.9/24"}],"x":"'"$CNI_COMMAND-$CNI_IFNAME"'"}'"#,
        );
        script(
            d.path(),
            "bad",
            r#"cat >/dev/null; echo '{"code":7,"msg":"no way","details":"d"}'; exit 1"#,
        );
        script(d.path(), "junk", "echo garbage; exit 3");
        let e = env(d.path());
        let r = exec_add("ok", &e, b"{}").unwrap();
        assert_eq!(r.ips[0].address.to_string(), "10.0.0.9/24");
        assert_eq!(r.extra["x"], "ADD-eth0");
        let err = exec_verb("bad", Verb::Del, &e, b"{}").unwrap_err();
        assert_eq!(
            (err.code, err.msg.as_str(), err.details.as_str()),
            (7, "no way", "d")
        );
        let err = exec_verb("junk", Verb::Del, &e, b"{}").unwrap_err();
        assert_eq!(err.code, 999);
        assert!(err.msg.contains("garbage"));
        let err = exec_verb("missing", Verb::Del, &e, b"{}").unwrap_err();
        assert!(
            err.msg.contains("failed to find plugin \"missing\""),
            "{}",
            err.msg
        );
        assert!(find_plugin("../ok", &e.path).is_err());
    }

    #[test]
    fn find_plugin_takes_the_first_executable_file() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        // not executable, a directory: both skipped
        std::fs::write(a.path().join("p"), "#!/bin/sh\n").unwrap();
        std::fs::create_dir(a.path().join("q")).unwrap();
        script(b.path(), "p", "true");
        script(b.path(), "q", "true");
        let path = vec![a.path().to_path_buf(), b.path().to_path_buf()];
        assert_eq!(find_plugin("p", &path).unwrap(), b.path().join("p"));
        assert_eq!(find_plugin("q", &path).unwrap(), b.path().join("q"));
        script(a.path(), "r", "true");
        script(b.path(), "r", "true");
        assert_eq!(find_plugin("r", &path).unwrap(), a.path().join("r"));
        let err = find_plugin("p", &[]).unwrap_err();
        assert_eq!(
            (err.code, err.msg.as_str()),
            (7, "failed to find plugin \"p\" in path []")
        );
        for bad in ["", ".", "..", "a/b", "/bin/sh"] {
            assert_eq!(find_plugin(bad, &path).unwrap_err().code, 7, "{bad:?}");
        }
    }
}
