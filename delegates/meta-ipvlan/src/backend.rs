//! What the delegate's logic needs from the outside world, as traits: netlink handles
//! ([`meta_netlink::NetlinkOps`]), the pod namespace's sysctls ([`PodSysctl`]) and IPAM
//! ([`IpamOps`]), gathered by a [`Backend`]. [`Kernel`] is the real one; the
//! [`crate::testing`] module has fakes that never touch a real namespace or sysctl.

use cni_core::{CmdArgs, CniResult, Result};
use meta_delegate::{ipam, nl, open_netns, open_netns_for_del};
use meta_netlink::{Netlink, NetlinkOps, Netns};

pub use meta_delegate::PodSysctl;

/// IPAM as the delegate uses it (one method per verb).
pub trait IpamOps {
    /// Validates the IPAM configuration before anything touches the kernel.
    fn validate(&self, args: &CmdArgs) -> Result<()>;
    /// Allocates; returns the IPAM result.
    fn add(&self, args: &CmdArgs) -> Result<CniResult>;
    /// Releases; succeeds when nothing is allocated.
    fn del(&self, args: &CmdArgs) -> Result<()>;
    /// Checks the allocation of the prevResult's IPs.
    fn check(&self, args: &CmdArgs) -> Result<()>;
    /// Whether IPAM can serve an ADD.
    fn status(&self, args: &CmdArgs) -> Result<()>;
    /// Releases allocations of attachments not listed as valid.
    fn gc(&self, args: &CmdArgs) -> Result<()>;
}

/// The real IPAM: [`meta_delegate::ipam`] (bundled host-local/static in-process, any other
/// type exec'd from `CNI_PATH`).
#[derive(Debug, Clone, Copy, Default)]
pub struct DelegateIpam;

impl IpamOps for DelegateIpam {
    fn validate(&self, args: &CmdArgs) -> Result<()> {
        ipam::validate(args)
    }
    fn add(&self, args: &CmdArgs) -> Result<CniResult> {
        ipam::add(args)
    }
    fn del(&self, args: &CmdArgs) -> Result<()> {
        ipam::del(args)
    }
    fn check(&self, args: &CmdArgs) -> Result<()> {
        ipam::check(args)
    }
    fn status(&self, args: &CmdArgs) -> Result<()> {
        ipam::status(args)
    }
    fn gc(&self, args: &CmdArgs) -> Result<()> {
        ipam::gc(args)
    }
}

/// Everything one invocation of the plugin reaches outside itself.
pub trait Backend {
    /// The netlink handle type.
    type Nl: NetlinkOps;
    /// Opens the pod namespace for ADD/CHECK (code 3 when it does not exist).
    fn open_pod(&self, path: &str) -> Result<Netns>;
    /// Opens the pod namespace for DEL: None when the path is empty or gone.
    fn open_pod_for_del(&self, path: &str) -> Result<Option<Netns>>;
    /// A netlink handle in the node namespace (where the plugin runs).
    fn node_nl(&self) -> Result<Self::Nl>;
    /// A netlink handle bound to the pod namespace.
    fn pod_nl(&self, pod: &Netns) -> Result<Self::Nl>;
    /// The pod namespace's sysctls.
    fn pod_sysctl(&self, pod: &Netns) -> Box<dyn PodSysctl>;
    /// IPAM.
    fn ipam(&self) -> &dyn IpamOps;
    /// A fresh temporary link name (the link is created under it, then renamed inside the
    /// pod, like the reference: the kernel checks the name in the creator's namespace).
    fn tmp_name(&self) -> String;
}

/// The real backend: the kernel, through rtnetlink and `/proc/sys`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Kernel;

impl Backend for Kernel {
    type Nl = Netlink;
    fn open_pod(&self, path: &str) -> Result<Netns> {
        open_netns(path)
    }
    fn open_pod_for_del(&self, path: &str) -> Result<Option<Netns>> {
        open_netns_for_del(path)
    }
    fn node_nl(&self) -> Result<Netlink> {
        Netlink::open(None).map_err(nl("failed to open netlink"))
    }
    fn pod_nl(&self, pod: &Netns) -> Result<Netlink> {
        Netlink::open(Some(pod)).map_err(nl("failed to open netlink in the pod"))
    }
    fn pod_sysctl(&self, pod: &Netns) -> Box<dyn PodSysctl> {
        // The kit's PodSysctl for Netns: /proc/sys written from a thread inside it.
        Box::new(pod.clone())
    }
    fn ipam(&self) -> &dyn IpamOps {
        &DelegateIpam
    }
    fn tmp_name(&self) -> String {
        meta_netlink::random_veth_name()
    }
}
