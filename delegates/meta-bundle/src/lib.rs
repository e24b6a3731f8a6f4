//! The bundled delegate types of meta-cni as one table, and the rules for running them
//! in-process, shared by the meta plugin (which runs them) and the admission webhook
//! (which runs only their checks):
//!
//! - [`DELEGATES`]: one line per bundled delegate crate ([`DelegateType`] exports);
//! - [`in_process`] / [`in_process_conf`]: when a type runs in-process, and the
//!   configuration it then gets for a verb (unimplemented reference fields refused at ADD,
//!   verbs the network's version lacks skipped, legacy versions lifted to 0.3.0);
//! - [`check_list`]: ADD's pre-kernel checks of a whole configuration list, plugin by
//!   plugin, with the very parsers ADD uses, so the verdict and the message are ADD's.
//!
//! Nothing here touches the kernel, a file or IPAM state.

#![deny(missing_docs)]

use cni_core::registry::{self, DelegateType};
use cni_core::{CmdArgs, CniArgs, ConfList, Env, Error, NetConf, Result, Verb, Version, invoke};
use serde_json::{Map, Value};

/// The delegate types that run in-process: one line per bundled delegate.
pub const DELEGATES: &[&DelegateType] = &[
    &meta_bridge::DELEGATE,
    &meta_macvlan::DELEGATE,
    &meta_ipvlan::DELEGATE,
    &meta_vxlan::DELEGATE,
];

/// The interface name the checks use when there is no pod (a NAD on its own).
pub const CHECK_IFNAME: &str = "net1";

/// The bundled delegate that serves `plugin_type`, if any.
pub fn bundled(plugin_type: &str) -> Option<&'static DelegateType> {
    registry::find(DELEGATES, plugin_type)
}

/// The bundled delegate that runs `plugin_type` in-process: none when the type is not
/// bundled, or when it is forced to exec (the meta configuration's `forceExec`, or the
/// `META_CNI_FORCE_EXEC` environment variable).
pub fn in_process(plugin_type: &str, force_exec: &[String]) -> Option<&'static DelegateType> {
    let forced = force_exec.iter().any(|f| f == plugin_type) || invoke::forced_exec(plugin_type);
    bundled(plugin_type).filter(|_| !forced)
}

/// Whether an `ipam.type` runs in-process in the delegates (a bundled IPAM, not forced).
pub fn ipam_in_process(ipam_type: &str) -> bool {
    !invoke::forced_exec(ipam_type)
        && meta_delegate::ipam::BUNDLED
            .iter()
            .any(|i| i.serves(ipam_type))
}

/// The configuration the in-process delegate `d` gets for `verb`, or `None` when the verb
/// does not exist in the network's version (skipped, as libcni skips it). At ADD a
/// reference field that `d` does not implement is refused (DEL, CHECK, STATUS and GC must
/// work on any configuration). A legacy (0.1.0/0.2.0) network is lifted to 0.3.0: the
/// bundled delegates speak 0.3.0 and later, and their result is canonical anyway.
pub fn in_process_conf(d: &DelegateType, verb: Verb, conf: NetConf) -> Result<Option<NetConf>> {
    if verb == Verb::Add {
        d.refuse_unimplemented(&conf)?;
    }
    let legacy = conf.version().is_legacy();
    if conf.version() < verb.min_version() && !(legacy && matches!(verb, Verb::Add | Verb::Del)) {
        return Ok(None);
    }
    if !legacy {
        return Ok(Some(conf));
    }
    let mut raw = conf.raw().clone();
    raw.insert("cniVersion".into(), Version::V0_3_0.as_str().into());
    NetConf::from_map(raw).map(Some)
}

/// A single configuration turned into a list, as libcni's `ConfListFromConf` does.
pub fn as_conflist(conf: Map<String, Value>) -> Value {
    if conf.contains_key("plugins") {
        return Value::Object(conf);
    }
    let mut list = Map::new();
    list.insert(
        "cniVersion".into(),
        conf.get("cniVersion").cloned().unwrap_or(Value::Null),
    );
    list.insert(
        "name".into(),
        conf.get("name").cloned().unwrap_or(Value::Null),
    );
    list.insert("plugins".into(), Value::Array(vec![Value::Object(conf)]));
    Value::Object(list)
}

/// Merges a selection element's `cni-args` into a plugin configuration's `args.cni`, as
/// Multus does (an `args` or `args.cni` that is not an object is replaced).
pub fn merge_args_cni(m: &mut Map<String, Value>, cni_args: &Map<String, Value>) {
    let args = m.entry("args").or_insert_with(|| Value::Object(Map::new()));
    if !args.is_object() {
        *args = Value::Object(Map::new());
    }
    if let Some(a) = args.as_object_mut() {
        let cni = a.entry("cni").or_insert_with(|| Value::Object(Map::new()));
        if !cni.is_object() {
            *cni = Value::Object(Map::new());
        }
        if let Some(c) = cni.as_object_mut() {
            for (k, v) in cni_args {
                c.insert(k.clone(), v.clone());
            }
        }
    }
}

/// Something a check found that is not an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Note {
    /// A plugin (or IPAM) type that is not run in-process: nodes need its binary in
    /// binDir or on CNI_PATH.
    NeedsBinary {
        /// The CNI type.
        plugin_type: String,
        /// Whether it is an `ipam.type` (of the plugin `of`).
        ipam_of: Option<String>,
        /// A bundled type that `forceExec` sends to its binary.
        forced: bool,
    },
}

impl std::fmt::Display for Note {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Note::NeedsBinary {
                plugin_type,
                forced: true,
                ..
            } => write!(
                f,
                "plugin type {plugin_type:?} is bundled but listed in forceExec: every node needs the {plugin_type} binary in binDir or on CNI_PATH"
            ),
            Note::NeedsBinary {
                plugin_type,
                ipam_of: None,
                ..
            } => write!(
                f,
                "plugin type {plugin_type:?} is not bundled with meta-cni: every node needs the {plugin_type} binary in binDir or on CNI_PATH"
            ),
            Note::NeedsBinary {
                plugin_type,
                ipam_of: Some(of),
                ..
            } => write!(
                f,
                "IPAM type {plugin_type:?} (of plugin {of}) is not bundled with meta-cni: every node needs the {plugin_type} binary in binDir or on CNI_PATH"
            ),
        }
    }
}

/// The ADD environment the checks run with when there is no runtime (the webhook): no
/// container, no netns, no CNI_ARGS, interface `ifname`.
pub fn check_env(ifname: &str) -> Env {
    Env {
        verb: Verb::Add,
        container_id: String::new(),
        netns: String::new(),
        ifname: ifname.to_string(),
        args: CniArgs::default(),
        args_raw: String::new(),
        path: Vec::new(),
    }
}

/// ADD's pre-kernel checks of the configuration list `list` (a JSON conflist, e.g. from
/// [`as_conflist`]) as one attachment with capability arguments `cap_args` and the
/// element's `cni-args`: the list parsed as the meta plugin parses it, then each plugin's
/// configuration built as libcni builds it and, for a type that runs in-process, the
/// delegate's own ADD parser and validation (`DelegateType::validate`), in list order.
/// The first failure is returned as ADD would return it (`plugin TYPE: ...`); the other
/// types are returned as notes.
pub fn check_list(
    list: &Value,
    cap_args: &Map<String, Value>,
    cni_args: Option<&Map<String, Value>>,
    force_exec: &[String],
    env: &Env,
) -> Result<Vec<Note>> {
    let bytes = serde_json::to_vec(list).map_err(|e| Error::internal(e.to_string()))?;
    let list = ConfList::parse_delegated(&bytes)?;
    let mut notes = Vec::new();
    for i in 0..list.plugins().len() {
        let mut c = list.plugin_conf(i, None, cap_args)?;
        if let Some(ca) = cni_args {
            merge_args_cni(c.raw_mut(), ca);
        }
        let t = c.plugin_type().to_string();
        let Some(d) = in_process(&t, force_exec) else {
            notes.push(Note::NeedsBinary {
                forced: bundled(&t).is_some(),
                plugin_type: t,
                ipam_of: None,
            });
            continue;
        };
        if let Some(ipam) = c.ipam_type().filter(|it| !it.is_empty())
            && !ipam_in_process(ipam)
        {
            notes.push(Note::NeedsBinary {
                plugin_type: ipam.to_string(),
                ipam_of: Some(t.clone()),
                forced: false,
            });
        }
        let checked = in_process_conf(d, Verb::Add, c).and_then(|c| match c {
            Some(conf) => {
                let args = CmdArgs {
                    env: env.clone(),
                    stdin: conf.to_bytes(),
                    conf,
                };
                (d.validate)(&args, i > 0)
            }
            None => Ok(()),
        });
        checked.map_err(|e| e.context(format!("plugin {t}")))?;
    }
    Ok(notes)
}
