//! Secondary mode: an L2 segment with its own VNI (`net1..netN`).
//!
//! ADD: the underlay (configured or the default-route interface), the segment
//! ([`meta_overlay::ensure_segment`]: `mvx<vni>` on `mbr<vni>`), the flood list when the
//! configuration has `peers` ([`meta_overlay::reconcile_peers`]), a veth pair with the
//! host end on the bridge, and the NAD's IPAM (none: L2 only). The segment stays when its
//! last pod leaves (like the reference bridge plugin's bridge).
//!
//! Two configurations claiming one VNI on a node with different port, MTU or bridge are
//! refused with an error naming both networks: the network that created the device is
//! recorded in `<stateDir>/vni-<vni>.json` when it creates it.

use crate::Vxlan;
use crate::common::{apply_dns, ensure_bridge, interfaces, overlay_err, refresh_macs};
use crate::config::{Resolved, Secondary};
use cni_core::{CmdArgs, CniResult, Error, Result, code};
use meta_delegate::link::check_bridge;
use meta_delegate::{
    Handles, Undo, check_veth_on_bridge, configure_iface, ipam, nl, set_iface_sysctls, transaction,
    veth_on_bridge,
};
use meta_netlink::{Netlink, NetlinkOps};
use meta_overlay::{
    Error as OvError, Owner, SegmentConfig, Underlay, ensure_segment, read_owner, reconcile_peers,
    segment_device_name, write_owner,
};

/// The conflict error, naming this network and the one that set the VNI up (when known).
fn conflict_error(args: &CmdArgs, s: &Secondary, e: OvError) -> Error {
    let OvError::SegmentConflict {
        vni,
        device,
        existing,
        requested,
    } = &e
    else {
        return overlay_err("failed to set up the VXLAN segment")(e);
    };
    let me = args.conf.name();
    let other = match read_owner(&s.state_dir, *vni) {
        Some(o) if o.network == me => "an earlier configuration of this same network".to_string(),
        Some(o) => format!("network {:?}", o.network),
        None => "another network".to_string(),
    };
    Error::config(format!(
        "network {me:?} claims VNI {vni} with {requested}, but {other} already set up VNI {vni} \
         on this node as device {device} with {existing}"
    ))
    .with_details(
        "configurations sharing a VNI on a node must agree on port, mtu and bridge; use another \
         VNI, align the settings, or remove the device when no pod uses it",
    )
}

/// The underlay and segment settings of `s`, resolved on this node.
fn segment_config(host: &mut Netlink, s: &Secondary) -> Result<SegmentConfig> {
    let underlay = Underlay::detect(host, s.underlay_interface.as_deref(), s.local_ip)
        .map_err(overlay_err("failed to find the underlay"))?;
    let mut c = SegmentConfig::new(s.vni, underlay);
    c.port = s.port;
    if let Some(m) = s.mtu {
        c.mtu = m;
    }
    c.bridge = s.bridge.clone();
    c.learning = s.learning;
    Ok(c)
}

impl Vxlan {
    /// ADD in secondary mode.
    pub(crate) fn secondary_add(
        &self,
        args: &CmdArgs,
        r: &Resolved,
        s: &Secondary,
    ) -> Result<CniResult> {
        ipam::validate(args)?;
        let mut h = Handles::open(&args.env.netns)?;
        transaction(&mut h, |h, undo| self.secondary_steps(args, r, s, h, undo))
    }

    fn secondary_steps<'a>(
        &self,
        args: &'a CmdArgs,
        r: &Resolved,
        s: &Secondary,
        h: &mut Handles,
        undo: &mut Undo<'a, Handles>,
    ) -> Result<CniResult> {
        let env = &args.env;
        let host = &mut h.host;
        let sc = segment_config(host, s)?;
        let seg = ensure_segment(host, &sc).map_err(|e| conflict_error(args, s, e))?;
        if seg.created {
            let o = Owner {
                network: args.conf.name().to_string(),
                vni: sc.vni,
                port: sc.port,
                mtu: sc.mtu,
                bridge: sc.bridge.clone(),
                static_peers: s.peers.is_some(),
            };
            if let Err(e) = write_owner(&s.state_dir, &o) {
                tracing::warn!("cannot record the owner of VNI {}: {e}", sc.vni);
            }
        }
        if let Some(peers) = &s.peers {
            let rep = reconcile_peers(host, &sc.device, Some(sc.underlay.local_ip), peers)
                .map_err(overlay_err("failed to program the VXLAN peers"))?;
            if let Some(f) = rep.failed.first() {
                return Err(Error::internal(format!(
                    "failed to program the VXLAN peers: {}",
                    f.error
                )));
            }
        }
        // ensure_segment made the bridge; this only reads it back (and fails on a non-bridge).
        let br = ensure_bridge(host, &sc.bridge, None, None)?;
        let ifname = env.ifname.as_str();
        let veth = veth_on_bridge(h, ifname, Some(sc.mtu), r.mac, &br, undo)?;
        let (host, podnl, pod) = (&mut h.host, &mut h.pod, &h.ns);
        let mut result = CniResult {
            interfaces: interfaces(args, &br, &veth),
            ..Default::default()
        };
        if r.ipam_type.is_some() {
            ipam::add_into(args, &mut result, 2)?;
            // Only now: a failed IPAM ADD took nothing.
            undo.push("release IPAM", |_| ipam::del(args));
            let mut sysctl = pod.clone();
            set_iface_sysctls(&mut sysctl, ifname, &[("ipv6", "accept_dad", "0")]);
            configure_iface(podnl, &mut sysctl, ifname, &result)?;
        } else {
            podnl
                .link_set_up(veth.container.index, true)
                .map_err(nl(format!("failed to set {:?} up", env.ifname)))?;
        }
        refresh_macs(host, &mut result);
        apply_dns(args, &mut result)?;
        Ok(result)
    }

    pub(crate) fn secondary_del(&self, args: &CmdArgs) -> Result<()> {
        meta_delegate::del_link_and_ipam(args, args)
    }

    pub(crate) fn secondary_check(&self, args: &CmdArgs, s: &Secondary) -> Result<()> {
        let (prev, pod) = ipam::check_start(args, args)?;
        let Handles {
            mut host,
            pod: mut podnl,
            ..
        } = Handles::from_netns(pod)?;
        let br = check_bridge(&mut host, &s.bridge)?;
        let name = segment_device_name(s.vni);
        let dev = host
            .link_by_name(&name)
            .map_err(nl("failed to look up the VXLAN device"))?
            .ok_or_else(|| Error::internal(format!("VXLAN device {name} was not found")))?;
        let v = dev
            .vxlan
            .as_ref()
            .ok_or_else(|| Error::internal(format!("{name} is not a VXLAN device")))?;
        if v.vni != s.vni || v.port != s.port {
            return Err(Error::internal(format!(
                "{name} has VNI {} port {}, the configuration VNI {} port {}",
                v.vni, v.port, s.vni, s.port
            )));
        }
        if dev.master != Some(br.index) {
            return Err(Error::internal(format!(
                "{name} is not attached to bridge {}",
                br.name
            )));
        }
        check_veth_on_bridge(args, &prev, &mut host, &mut podnl, &br)
    }

    pub(crate) fn secondary_status(
        &self,
        args: &CmdArgs,
        r: &Resolved,
        s: &Secondary,
    ) -> Result<()> {
        let mut host = Netlink::open(None).map_err(nl("failed to open netlink"))?;
        segment_config(&mut host, s).map_err(|e| Error::new(code::NOT_AVAILABLE, e.msg))?;
        if r.ipam_type.is_some() {
            ipam::status(args)?;
        }
        Ok(())
    }

    pub(crate) fn secondary_gc(&self, args: &CmdArgs) -> Result<()> {
        ipam::gc(args)
    }
}
