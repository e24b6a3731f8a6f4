//! Running one attachment's configuration list: bundled delegate types in-process (their
//! `cni_core::Plugin` implementation), anything else exec'd from binDir / CNI_PATH, with
//! libcni's chaining (each plugin gets the previous result), per-delegate versions and
//! results converted to the canonical model. As with libcni, a network may be written in
//! any CNI version, the legacy 0.1.0/0.2.0 (or no `cniVersion`) included.

use crate::journal::Attachment;
use cni_core::{
    CmdArgs, CniArgs, CniResult, ConfList, Env, Error, NetConf, Result, Verb, Version, invoke,
};
use meta_netlink::NetlinkOps;
use serde_json::Value;
use std::path::PathBuf;

pub use meta_bundle::{DELEGATES as BUNDLED, bundled};

/// Runs attachments for one pod.
pub struct Runner {
    /// CNI_CONTAINERID.
    pub container_id: String,
    /// CNI_NETNS.
    pub netns: String,
    /// CNI_ARGS (raw) given to every delegate.
    pub args_raw: String,
    /// Where binaries are searched.
    pub bin_dirs: Vec<PathBuf>,
    /// Bundled types to exec anyway.
    pub force_exec: Vec<String>,
}

impl Runner {
    fn env(&self, verb: Verb, ifname: &str) -> Result<Env> {
        Ok(Env {
            verb,
            container_id: self.container_id.clone(),
            netns: self.netns.clone(),
            ifname: ifname.to_string(),
            args: CniArgs::parse(&self.args_raw)?,
            args_raw: self.args_raw.clone(),
            path: self.bin_dirs.clone(),
        })
    }

    fn list(a: &Attachment) -> Result<ConfList> {
        let bytes = serde_json::to_vec(&a.conf).map_err(|e| Error::internal(e.to_string()))?;
        ConfList::parse_delegated(&bytes).map_err(|e| e.context(format!("network {}", a.network)))
    }

    fn plugin_conf(
        &self,
        a: &Attachment,
        list: &ConfList,
        i: usize,
        prev: Option<&CniResult>,
    ) -> Result<NetConf> {
        let mut c = list.plugin_conf(i, prev, &a.cap_args)?;
        if let Some(ca) = &a.cni_args {
            meta_bundle::merge_args_cni(c.raw_mut(), ca);
        }
        Ok(c)
    }

    /// One plugin, one verb.
    fn run_one(&self, verb: Verb, ifname: &str, conf: NetConf) -> Result<Option<CniResult>> {
        let t = conf.plugin_type().to_string();
        let env = self.env(verb, ifname)?;
        if let Some(d) = meta_bundle::in_process(&t, &self.force_exec) {
            let Some(conf) = meta_bundle::in_process_conf(d, verb, conf)? else {
                return Ok(None); // the verb does not exist in this network's version
            };
            tracing::debug!("{} {t} ({}): in-process", verb.as_str(), ifname);
            let args = CmdArgs {
                env,
                stdin: conf.to_bytes(),
                conf,
            };
            return cni_core::plugin::call((d.make)().as_ref(), &args);
        }
        let bytes = conf.to_bytes();
        tracing::debug!(
            "{} {t} ({}): exec {}",
            verb.as_str(),
            ifname,
            invoke::find_plugin(&t, &env.path)
                .map(|p| p.display().to_string())
                .unwrap_or_default()
        );
        match verb {
            Verb::Add => invoke::exec_add(&t, &env, &bytes).map(Some),
            _ => invoke::exec_verb(&t, verb, &env, &bytes).map(|_| None),
        }
    }

    /// Whether every plugin of `a` runs in-process (a bundled type, not forced to exec):
    /// then the pod-side interface is one we made, and nothing in the chain needs it at DEL.
    fn in_process(&self, a: &Attachment) -> bool {
        Self::list(a).is_ok_and(|l| {
            l.plugins().iter().all(|p| {
                let t = p.get("type").and_then(Value::as_str).unwrap_or("");
                meta_bundle::in_process(t, &self.force_exec).is_some()
            })
        })
    }

    /// DEL's first step: the pod-side interfaces of the in-process attachments go in one
    /// kernel request (each is put into one interface group, then the group is deleted:
    /// one unregister batch and one RCU grace period instead of one per device; a veth's
    /// host end goes with it). Best effort and only an optimisation: whatever is left (an
    /// error, an old kernel, a gone netns) the delegates' own DELs remove one by one, and
    /// those find an already deleted link fine. Exec'd plugins keep their interfaces for
    /// their own DEL. Returns how many links went.
    pub fn remove_pod_links(&self, attachments: &[Attachment]) -> usize {
        let names: Vec<&str> = attachments
            .iter()
            .filter(|a| self.in_process(a))
            .map(|a| a.ifname.as_str())
            .collect();
        if names.len() < 2 || self.netns.is_empty() {
            return 0; // nothing to batch
        }
        let Ok(ns) = meta_netlink::Netns::open(&self.netns) else {
            return 0;
        };
        let Ok(mut nl) = meta_netlink::Netlink::open(Some(&ns)) else {
            return 0;
        };
        // A group number no other link of this pod uses: ours, per process.
        let group = 0x6d63_0000 | (std::process::id() & 0xffff);
        let mut grouped = 0;
        for name in names {
            if let Ok(Some(l)) = nl.link_by_name(name)
                && nl.link_set_group(l.index, group).is_ok()
            {
                grouped += 1;
            }
        }
        if grouped == 0 {
            return 0;
        }
        match nl.link_del_group(group) {
            Ok(()) => {
                tracing::debug!("DEL: {grouped} pod links removed in one request");
                grouped
            }
            Err(e) => {
                tracing::debug!("batched link removal: {e}; the delegates delete one by one");
                0
            }
        }
    }

    /// ADD's pre-kernel checks of every plugin of `a` (see [`meta_bundle::check_list`]):
    /// run on every attachment of the plan before anything is journaled or attached, so a
    /// bad configuration fails with nothing to roll back, with the message the webhook
    /// gives. Types that are exec'd check themselves when they run.
    pub fn check_config(&self, a: &Attachment) -> Result<()> {
        let env = self.env(Verb::Add, &a.ifname)?;
        meta_bundle::check_list(
            &a.conf,
            &a.cap_args,
            a.cni_args.as_ref(),
            &self.force_exec,
            &env,
        )
        .map(|_| ())
    }

    /// ADD through the list; the last plugin's result.
    pub fn add(&self, a: &Attachment) -> Result<CniResult> {
        let list = Self::list(a)?;
        let mut prev: Option<CniResult> = None;
        for i in 0..list.plugins().len() {
            let c = self.plugin_conf(a, &list, i, prev.as_ref())?;
            let t = c.plugin_type().to_string();
            let r = self
                .run_one(Verb::Add, &a.ifname, c)
                .map_err(|e| e.context(format!("plugin {t}")))?
                .ok_or_else(|| Error::internal(format!("plugin {t} returned no result")))?;
            prev = Some(r);
        }
        prev.ok_or_else(|| Error::config(format!("network {} has no plugins", a.network)))
    }

    /// DEL through the list in reverse, each plugin with the cached result as prevResult.
    /// Every plugin is tried; errors are aggregated.
    pub fn del(&self, a: &Attachment, result: Option<&CniResult>) -> Result<()> {
        let list = Self::list(a)?;
        let mut errs = Vec::new();
        let mut code = 0;
        for i in (0..list.plugins().len()).rev() {
            let c = self.plugin_conf(a, &list, i, result)?;
            let t = c.plugin_type().to_string();
            if let Err(e) = self.run_one(Verb::Del, &a.ifname, c) {
                code = e.code;
                errs.push(format!("plugin {t}: {e}"));
            }
        }
        if errs.is_empty() {
            Ok(())
        } else {
            Err(Error::new(code, errs.join("; ")))
        }
    }

    /// CHECK through the list with the cached result (skipped when `disableCheck`).
    pub fn check(&self, a: &Attachment, result: &CniResult) -> Result<()> {
        let list = Self::list(a)?;
        if list.flag("disableCheck") || list.version() < Version::V0_4_0 {
            return Ok(());
        }
        for i in 0..list.plugins().len() {
            let c = self.plugin_conf(a, &list, i, Some(result))?;
            let t = c.plugin_type().to_string();
            self.run_one(Verb::Check, &a.ifname, c)
                .map_err(|e| e.context(format!("plugin {t}")))?;
        }
        Ok(())
    }

    /// STATUS of every plugin of the list (1.1.0 lists only).
    pub fn status(&self, a: &Attachment) -> Result<()> {
        let list = Self::list(a)?;
        if list.version() < Version::V1_1_0 {
            return Ok(());
        }
        for i in 0..list.plugins().len() {
            let c = self.plugin_conf(a, &list, i, None)?;
            let t = c.plugin_type().to_string();
            self.run_one(Verb::Status, "", c)
                .map_err(|e| e.context(format!("plugin {t}")))?;
        }
        Ok(())
    }

    /// GC of every plugin of the list with the attachments still valid for it (1.1.0
    /// lists only, and not when `disableGC`).
    pub fn gc(&self, a: &Attachment, valid: &[(String, String)]) -> Result<()> {
        let list = Self::list(a)?;
        if list.version() < Version::V1_1_0 || list.flag("disableGC") {
            return Ok(());
        }
        let att: Vec<Value> = valid
            .iter()
            .map(|(c, i)| serde_json::json!({"containerID": c, "ifname": i}))
            .collect();
        for i in 0..list.plugins().len() {
            let mut c = self.plugin_conf(a, &list, i, None)?;
            c.raw_mut().insert(
                "cni.dev/valid-attachments".into(),
                Value::Array(att.clone()),
            );
            let t = c.plugin_type().to_string();
            self.run_one(Verb::Gc, "", c)
                .map_err(|e| e.context(format!("plugin {t}")))?;
        }
        Ok(())
    }
}
