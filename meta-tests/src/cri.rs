//! A minimal, synchronous CRI (`runtime.v1`) client: what kubelet calls to run pod
//! sandboxes, for driving a real containerd in tests.
//!
//! The messages are a hand-written subset of the CRI protobuf (`k8s.io/cri-api`,
//! `pkg/apis/runtime/v1/api.proto`) with the upstream field numbers, derived with `prost`;
//! fields left out are skipped on decode (protobuf ignores unknown fields), so responses of
//! newer or older runtimes decode fine. This avoids the `k8s-cri` crate, whose build script
//! needs `protoc` (Debian's protobuf-compiler) on every machine that builds the workspace.
//! The transport is tonic's HTTP/2 channel over the runtime's unix socket; every call runs
//! on a current-thread tokio runtime owned by [`Cri`] and has a deadline ([`Cri::timeout`]).

use prost::Message;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tonic::Status;
use tonic::transport::{Channel, Endpoint, Uri};

/// The CRI version kubelet sends in `Version`.
pub const CRI_API_VERSION: &str = "v1";

/// `NamespaceMode` (of a namespace of a sandbox).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum NamespaceMode {
    /// Shared by the containers of the pod.
    Pod = 0,
    /// Private to one container.
    Container = 1,
    /// The node's (host network for `network`).
    Node = 2,
    /// Another container's.
    Target = 3,
}

/// `PodSandboxState`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum PodSandboxState {
    /// `SANDBOX_READY`.
    SandboxReady = 0,
    /// `SANDBOX_NOTREADY`.
    SandboxNotready = 1,
}

/// `VersionRequest`.
#[derive(Clone, PartialEq, Message)]
pub struct VersionRequest {
    /// The kubelet's CRI version.
    #[prost(string, tag = "1")]
    pub version: String,
}

/// `VersionResponse`.
#[derive(Clone, PartialEq, Message)]
pub struct VersionResponse {
    /// The CRI version.
    #[prost(string, tag = "1")]
    pub version: String,
    /// e.g. `containerd`.
    #[prost(string, tag = "2")]
    pub runtime_name: String,
    /// e.g. `1.6.20~ds1`.
    #[prost(string, tag = "3")]
    pub runtime_version: String,
    /// e.g. `v1`.
    #[prost(string, tag = "4")]
    pub runtime_api_version: String,
}

/// `StatusRequest`.
#[derive(Clone, PartialEq, Message)]
pub struct StatusRequest {
    /// Ask for the runtime's `info` map too.
    #[prost(bool, tag = "1")]
    pub verbose: bool,
}

/// `RuntimeCondition`.
#[derive(Clone, PartialEq, Message)]
pub struct RuntimeCondition {
    /// `RuntimeReady` or `NetworkReady`.
    #[prost(string, tag = "1")]
    pub r#type: String,
    /// Whether it holds.
    #[prost(bool, tag = "2")]
    pub status: bool,
    /// Why not, in CamelCase.
    #[prost(string, tag = "3")]
    pub reason: String,
    /// Why not, for people.
    #[prost(string, tag = "4")]
    pub message: String,
}

/// `RuntimeStatus`.
#[derive(Clone, PartialEq, Message)]
pub struct RuntimeStatus {
    /// The conditions.
    #[prost(message, repeated, tag = "1")]
    pub conditions: Vec<RuntimeCondition>,
}

/// `StatusResponse`.
#[derive(Clone, PartialEq, Message)]
pub struct StatusResponse {
    /// The runtime's conditions.
    #[prost(message, optional, tag = "1")]
    pub status: Option<RuntimeStatus>,
    /// Verbose information (containerd: `config`, `cniconfig`, `golang`, `lastCNILoadStatus`).
    #[prost(map = "string, string", tag = "2")]
    pub info: HashMap<String, String>,
}

impl StatusResponse {
    /// The condition `ty` (`RuntimeReady`, `NetworkReady`), when reported.
    pub fn condition(&self, ty: &str) -> Option<&RuntimeCondition> {
        self.status
            .as_ref()?
            .conditions
            .iter()
            .find(|c| c.r#type == ty)
    }
}

/// `Int64Value`.
#[derive(Clone, PartialEq, Message)]
pub struct Int64Value {
    /// The value.
    #[prost(int64, tag = "1")]
    pub value: i64,
}

/// `NamespaceOption`.
#[derive(Clone, PartialEq, Message)]
pub struct NamespaceOption {
    /// Network namespace: `Pod` (the pod's own, networked by CNI) or `Node`.
    #[prost(enumeration = "NamespaceMode", tag = "1")]
    pub network: i32,
    /// PID namespace.
    #[prost(enumeration = "NamespaceMode", tag = "2")]
    pub pid: i32,
    /// IPC namespace.
    #[prost(enumeration = "NamespaceMode", tag = "3")]
    pub ipc: i32,
    /// Target container of `Target`.
    #[prost(string, tag = "4")]
    pub target_id: String,
}

/// `LinuxSandboxSecurityContext` (subset).
#[derive(Clone, PartialEq, Message)]
pub struct LinuxSandboxSecurityContext {
    /// The namespaces.
    #[prost(message, optional, tag = "1")]
    pub namespace_options: Option<NamespaceOption>,
    /// UID of the sandbox process.
    #[prost(message, optional, tag = "3")]
    pub run_as_user: Option<Int64Value>,
    /// Read-only root filesystem.
    #[prost(bool, tag = "4")]
    pub readonly_rootfs: bool,
    /// Supplementary groups.
    #[prost(int64, repeated, tag = "5")]
    pub supplemental_groups: Vec<i64>,
    /// Privileged sandbox.
    #[prost(bool, tag = "6")]
    pub privileged: bool,
    /// GID of the sandbox process.
    #[prost(message, optional, tag = "8")]
    pub run_as_group: Option<Int64Value>,
}

/// `LinuxPodSandboxConfig` (subset).
#[derive(Clone, PartialEq, Message)]
pub struct LinuxPodSandboxConfig {
    /// Parent cgroup (empty: the runtime's default).
    #[prost(string, tag = "1")]
    pub cgroup_parent: String,
    /// Security context.
    #[prost(message, optional, tag = "2")]
    pub security_context: Option<LinuxSandboxSecurityContext>,
    /// Namespaced sysctls for the pod.
    #[prost(map = "string, string", tag = "3")]
    pub sysctls: HashMap<String, String>,
}

/// `PodSandboxMetadata`: what CNI sees as `K8S_POD_NAME`, `K8S_POD_NAMESPACE`, `K8S_POD_UID`.
#[derive(Clone, PartialEq, Eq, Message)]
pub struct PodSandboxMetadata {
    /// Pod name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Pod UID.
    #[prost(string, tag = "2")]
    pub uid: String,
    /// Pod namespace.
    #[prost(string, tag = "3")]
    pub namespace: String,
    /// Attempt number (kubelet bumps it when it recreates a sandbox).
    #[prost(uint32, tag = "4")]
    pub attempt: u32,
}

/// `DNSConfig`.
#[derive(Clone, PartialEq, Message)]
pub struct DnsConfig {
    /// Servers.
    #[prost(string, repeated, tag = "1")]
    pub servers: Vec<String>,
    /// Search domains.
    #[prost(string, repeated, tag = "2")]
    pub searches: Vec<String>,
    /// resolv.conf options.
    #[prost(string, repeated, tag = "3")]
    pub options: Vec<String>,
}

/// `PortMapping` (passed to CNI as the `portMappings` capability).
#[derive(Clone, PartialEq, Message)]
pub struct PortMapping {
    /// 0 TCP, 1 UDP, 2 SCTP.
    #[prost(int32, tag = "1")]
    pub protocol: i32,
    /// Port in the pod.
    #[prost(int32, tag = "2")]
    pub container_port: i32,
    /// Port on the node.
    #[prost(int32, tag = "3")]
    pub host_port: i32,
    /// Node address.
    #[prost(string, tag = "4")]
    pub host_ip: String,
}

/// `PodSandboxConfig` (subset: no Windows).
#[derive(Clone, PartialEq, Message)]
pub struct PodSandboxConfig {
    /// Name, namespace, UID, attempt.
    #[prost(message, optional, tag = "1")]
    pub metadata: Option<PodSandboxMetadata>,
    /// The pod's hostname.
    #[prost(string, tag = "2")]
    pub hostname: String,
    /// Where container logs go (empty: none).
    #[prost(string, tag = "3")]
    pub log_directory: String,
    /// resolv.conf of the pod.
    #[prost(message, optional, tag = "4")]
    pub dns_config: Option<DnsConfig>,
    /// Host ports.
    #[prost(message, repeated, tag = "5")]
    pub port_mappings: Vec<PortMapping>,
    /// Labels.
    #[prost(map = "string, string", tag = "6")]
    pub labels: HashMap<String, String>,
    /// Annotations (containerd passes them to neither CNI nor the plugin's args, but keeps
    /// them on the sandbox; they are what kubelet copies from the pod).
    #[prost(map = "string, string", tag = "7")]
    pub annotations: HashMap<String, String>,
    /// Linux settings.
    #[prost(message, optional, tag = "8")]
    pub linux: Option<LinuxPodSandboxConfig>,
}

impl PodSandboxConfig {
    /// The config kubelet would send for a plain pod `namespace/name` with UID `uid`:
    /// hostname = name, attempt 0, pod network namespace (so CNI runs), PID namespace of
    /// the container (kubelet's default for v1 pods), pod IPC namespace.
    pub fn pod(name: &str, namespace: &str, uid: &str) -> PodSandboxConfig {
        PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: name.into(),
                uid: uid.into(),
                namespace: namespace.into(),
                attempt: 0,
            }),
            hostname: name.into(),
            log_directory: String::new(),
            dns_config: None,
            port_mappings: Vec::new(),
            labels: HashMap::from([
                ("io.kubernetes.pod.name".to_string(), name.to_string()),
                (
                    "io.kubernetes.pod.namespace".to_string(),
                    namespace.to_string(),
                ),
                ("io.kubernetes.pod.uid".to_string(), uid.to_string()),
            ]),
            annotations: HashMap::new(),
            linux: Some(LinuxPodSandboxConfig {
                cgroup_parent: String::new(),
                security_context: Some(LinuxSandboxSecurityContext {
                    namespace_options: Some(NamespaceOption {
                        network: NamespaceMode::Pod as i32,
                        pid: NamespaceMode::Container as i32,
                        ipc: NamespaceMode::Pod as i32,
                        target_id: String::new(),
                    }),
                    ..Default::default()
                }),
                sysctls: HashMap::new(),
            }),
        }
    }

    /// Adds an annotation (e.g. `k8s.v1.cni.cncf.io/networks`).
    pub fn annotation(mut self, key: &str, value: &str) -> Self {
        self.annotations.insert(key.into(), value.into());
        self
    }

    /// Adds a label.
    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }

    /// Sets the attempt number.
    pub fn attempt(mut self, attempt: u32) -> Self {
        if let Some(m) = self.metadata.as_mut() {
            m.attempt = attempt;
        }
        self
    }

    /// Host networking (`hostNetwork: true`: no CNI at all). Clears the hostname, as
    /// kubelet does (the sandbox shares the node's UTS namespace, and runc refuses to set
    /// a hostname without a private one).
    pub fn host_network(mut self) -> Self {
        self.hostname.clear();
        if let Some(ns) = self
            .linux
            .get_or_insert_with(Default::default)
            .security_context
            .get_or_insert_with(Default::default)
            .namespace_options
            .as_mut()
        {
            ns.network = NamespaceMode::Node as i32;
        }
        self
    }
}

/// `RunPodSandboxRequest`.
#[derive(Clone, PartialEq, Message)]
pub struct RunPodSandboxRequest {
    /// The sandbox.
    #[prost(message, optional, tag = "1")]
    pub config: Option<PodSandboxConfig>,
    /// Runtime handler (empty: the default, `runc` in [`crate::containerd`]).
    #[prost(string, tag = "2")]
    pub runtime_handler: String,
}

/// `RunPodSandboxResponse`.
#[derive(Clone, PartialEq, Message)]
pub struct RunPodSandboxResponse {
    /// The new sandbox's ID.
    #[prost(string, tag = "1")]
    pub pod_sandbox_id: String,
}

/// The request of `StopPodSandbox`, `RemovePodSandbox` (a sandbox ID).
#[derive(Clone, PartialEq, Message)]
pub struct PodSandboxIdRequest {
    /// The sandbox.
    #[prost(string, tag = "1")]
    pub pod_sandbox_id: String,
}

/// An empty message (`StopPodSandboxResponse`, `RemovePodSandboxResponse`).
#[derive(Clone, PartialEq, Message)]
pub struct Empty {}

/// `PodSandboxStatusRequest`.
#[derive(Clone, PartialEq, Message)]
pub struct PodSandboxStatusRequest {
    /// The sandbox.
    #[prost(string, tag = "1")]
    pub pod_sandbox_id: String,
    /// Ask for the runtime's `info` map (containerd: one JSON document under key `info`).
    #[prost(bool, tag = "2")]
    pub verbose: bool,
}

/// `PodIP`.
#[derive(Clone, PartialEq, Eq, Message)]
pub struct PodIp {
    /// The address, without prefix length.
    #[prost(string, tag = "1")]
    pub ip: String,
}

/// `PodSandboxNetworkStatus`.
#[derive(Clone, PartialEq, Eq, Message)]
pub struct PodSandboxNetworkStatus {
    /// The primary IP (empty when the pod has none, e.g. host network).
    #[prost(string, tag = "1")]
    pub ip: String,
    /// The others (dual stack).
    #[prost(message, repeated, tag = "2")]
    pub additional_ips: Vec<PodIp>,
}

/// `Namespace` (of `LinuxPodSandboxStatus`).
#[derive(Clone, PartialEq, Message)]
pub struct Namespace {
    /// The modes.
    #[prost(message, optional, tag = "2")]
    pub options: Option<NamespaceOption>,
}

/// `LinuxPodSandboxStatus`.
#[derive(Clone, PartialEq, Message)]
pub struct LinuxPodSandboxStatus {
    /// The namespaces' modes (no paths: see [`SandboxInfo`]).
    #[prost(message, optional, tag = "1")]
    pub namespaces: Option<Namespace>,
}

/// `PodSandboxStatus`.
#[derive(Clone, PartialEq, Message)]
pub struct PodSandboxStatus {
    /// ID.
    #[prost(string, tag = "1")]
    pub id: String,
    /// Metadata.
    #[prost(message, optional, tag = "2")]
    pub metadata: Option<PodSandboxMetadata>,
    /// Ready or not.
    #[prost(enumeration = "PodSandboxState", tag = "3")]
    pub state: i32,
    /// Creation time, ns since the epoch.
    #[prost(int64, tag = "4")]
    pub created_at: i64,
    /// IPs.
    #[prost(message, optional, tag = "5")]
    pub network: Option<PodSandboxNetworkStatus>,
    /// Namespace modes.
    #[prost(message, optional, tag = "6")]
    pub linux: Option<LinuxPodSandboxStatus>,
    /// Labels.
    #[prost(map = "string, string", tag = "7")]
    pub labels: HashMap<String, String>,
    /// Annotations.
    #[prost(map = "string, string", tag = "8")]
    pub annotations: HashMap<String, String>,
    /// Runtime handler.
    #[prost(string, tag = "9")]
    pub runtime_handler: String,
}

impl PodSandboxStatus {
    /// All pod IPs, primary first.
    pub fn ips(&self) -> Vec<String> {
        let Some(n) = &self.network else {
            return Vec::new();
        };
        std::iter::once(n.ip.clone())
            .filter(|s| !s.is_empty())
            .chain(n.additional_ips.iter().map(|p| p.ip.clone()))
            .collect()
    }

    /// Whether the sandbox is `SANDBOX_READY`.
    pub fn ready(&self) -> bool {
        self.state == PodSandboxState::SandboxReady as i32
    }
}

/// `PodSandboxStatusResponse` (without container statuses).
#[derive(Clone, PartialEq, Message)]
pub struct PodSandboxStatusResponse {
    /// The status.
    #[prost(message, optional, tag = "1")]
    pub status: Option<PodSandboxStatus>,
    /// Verbose information: containerd puts one JSON document under key `info`.
    #[prost(map = "string, string", tag = "2")]
    pub info: HashMap<String, String>,
}

/// `PodSandboxStateValue`.
#[derive(Clone, PartialEq, Message)]
pub struct PodSandboxStateValue {
    /// The state.
    #[prost(enumeration = "PodSandboxState", tag = "1")]
    pub state: i32,
}

/// `PodSandboxFilter`.
#[derive(Clone, PartialEq, Message)]
pub struct PodSandboxFilter {
    /// Only this ID (a prefix works in containerd).
    #[prost(string, tag = "1")]
    pub id: String,
    /// Only in this state.
    #[prost(message, optional, tag = "2")]
    pub state: Option<PodSandboxStateValue>,
    /// Only with these labels.
    #[prost(map = "string, string", tag = "3")]
    pub label_selector: HashMap<String, String>,
}

/// `ListPodSandboxRequest`.
#[derive(Clone, PartialEq, Message)]
pub struct ListPodSandboxRequest {
    /// Filter (none: all).
    #[prost(message, optional, tag = "1")]
    pub filter: Option<PodSandboxFilter>,
}

/// `PodSandbox` (an item of `ListPodSandbox`).
#[derive(Clone, PartialEq, Message)]
pub struct PodSandbox {
    /// ID.
    #[prost(string, tag = "1")]
    pub id: String,
    /// Metadata.
    #[prost(message, optional, tag = "2")]
    pub metadata: Option<PodSandboxMetadata>,
    /// State.
    #[prost(enumeration = "PodSandboxState", tag = "3")]
    pub state: i32,
    /// Creation time, ns since the epoch.
    #[prost(int64, tag = "4")]
    pub created_at: i64,
    /// Labels.
    #[prost(map = "string, string", tag = "5")]
    pub labels: HashMap<String, String>,
    /// Annotations.
    #[prost(map = "string, string", tag = "6")]
    pub annotations: HashMap<String, String>,
    /// Runtime handler.
    #[prost(string, tag = "7")]
    pub runtime_handler: String,
}

/// `ListPodSandboxResponse`.
#[derive(Clone, PartialEq, Message)]
pub struct ListPodSandboxResponse {
    /// The sandboxes.
    #[prost(message, repeated, tag = "1")]
    pub items: Vec<PodSandbox>,
}

/// `ImageSpec`.
#[derive(Clone, PartialEq, Message)]
pub struct ImageSpec {
    /// Reference or ID.
    #[prost(string, tag = "1")]
    pub image: String,
}

/// `ImageStatusRequest`.
#[derive(Clone, PartialEq, Message)]
pub struct ImageStatusRequest {
    /// The image.
    #[prost(message, optional, tag = "1")]
    pub image: Option<ImageSpec>,
    /// Verbose.
    #[prost(bool, tag = "2")]
    pub verbose: bool,
}

/// `Image` (subset).
#[derive(Clone, PartialEq, Message)]
pub struct Image {
    /// Image ID (config digest).
    #[prost(string, tag = "1")]
    pub id: String,
    /// Names.
    #[prost(string, repeated, tag = "2")]
    pub repo_tags: Vec<String>,
    /// Digests.
    #[prost(string, repeated, tag = "3")]
    pub repo_digests: Vec<String>,
    /// Size in bytes.
    #[prost(uint64, tag = "4")]
    pub size: u64,
}

/// `ImageStatusResponse`.
#[derive(Clone, PartialEq, Message)]
pub struct ImageStatusResponse {
    /// The image; None when the runtime does not have it.
    #[prost(message, optional, tag = "1")]
    pub image: Option<Image>,
}

/// What containerd's verbose `PodSandboxStatus` tells beyond the CRI fields (the JSON
/// document under `info["info"]`), parsed for tests.
#[derive(Debug, Clone)]
pub struct SandboxInfo {
    /// The whole document (`pid`, `processStatus`, `netNamespaceClosed`, `image`,
    /// `runtimeHandler`, `runtimeType`, `config`, `runtimeSpec`, `cniResult`, ...).
    pub raw: serde_json::Value,
}

impl SandboxInfo {
    /// PID of the sandbox ("pause") process; 0 once it is gone.
    pub fn pid(&self) -> u32 {
        self.raw["pid"].as_u64().unwrap_or(0) as u32
    }

    /// The network namespace the CNI plugins were given (`CNI_NETNS`): the path of the
    /// `network` namespace in the sandbox's OCI spec. None for host-network sandboxes.
    pub fn netns_path(&self) -> Option<PathBuf> {
        self.raw["runtimeSpec"]["linux"]["namespaces"]
            .as_array()?
            .iter()
            .find(|n| n["type"] == "network")?["path"]
            .as_str()
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
    }

    /// Whether containerd has already torn down (and removed) the network namespace.
    pub fn netns_closed(&self) -> bool {
        self.raw["netNamespaceClosed"].as_bool().unwrap_or(false)
    }

    /// The CNI result containerd kept (its own `cni.Result` rendering: `Interfaces` keyed
    /// by name, `DNS`, `Routes`), when any.
    pub fn cni_result(&self) -> Option<&serde_json::Value> {
        self.raw.get("cniResult").filter(|v| !v.is_null())
    }
}

impl PodSandboxStatusResponse {
    /// containerd's verbose info, when the request was verbose and the runtime gave it.
    pub fn sandbox_info(&self) -> Option<SandboxInfo> {
        let raw = serde_json::from_str(self.info.get("info")?).ok()?;
        Some(SandboxInfo { raw })
    }
}

/// A CRI client over a unix socket. Synchronous: each call blocks on an internal
/// current-thread tokio runtime.
pub struct Cri {
    // Dropped before the runtime that drives it.
    channel: Channel,
    socket: PathBuf,
    timeout: Duration,
    rt: tokio::runtime::Runtime,
}

impl std::fmt::Debug for Cri {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cri")
            .field("socket", &self.socket)
            .field("timeout", &self.timeout)
            .finish()
    }
}

const RUNTIME: &str = "/runtime.v1.RuntimeService/";
const IMAGE: &str = "/runtime.v1.ImageService/";

impl Cri {
    /// A client of the CRI server at `socket`. Connects lazily: a missing socket shows as
    /// `Unavailable` on the first call. Default deadline: 60 s per call.
    pub fn connect(socket: &Path) -> Cri {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .expect("tokio runtime for the CRI client");
        let path = socket.to_path_buf();
        let channel = rt.block_on(async {
            // The URI is a placeholder: the connector ignores it.
            Endpoint::from_static("http://cri.invalid")
                .connect_timeout(Duration::from_secs(5))
                .connect_with_connector_lazy(tower::service_fn(move |_: Uri| {
                    let path = path.clone();
                    async move {
                        let s = tokio::net::UnixStream::connect(&path).await?;
                        Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(s))
                    }
                }))
        });
        Cri {
            channel,
            socket: socket.to_path_buf(),
            timeout: Duration::from_secs(60),
            rt,
        }
    }

    /// The same client with another per-call deadline.
    pub fn with_timeout(mut self, timeout: Duration) -> Cri {
        self.timeout = timeout;
        self
    }

    /// The per-call deadline.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The server's socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    fn call<Req, Resp>(&self, method: &str, req: Req) -> Result<Resp, Status>
    where
        Req: Message + Send + Sync + 'static,
        Resp: Message + Default + Send + Sync + 'static,
    {
        let path: http::uri::PathAndQuery = method
            .parse()
            .map_err(|e| Status::internal(format!("bad method path {method}: {e}")))?;
        let mut grpc = tonic::client::Grpc::new(self.channel.clone());
        let timeout = self.timeout;
        self.rt.block_on(async move {
            let fut = async {
                grpc.ready()
                    .await
                    .map_err(|e| Status::unavailable(format!("CRI channel not ready: {e}")))?;
                let mut request = tonic::Request::new(req);
                request.set_timeout(timeout);
                let codec = tonic_prost::ProstCodec::<Req, Resp>::default();
                grpc.unary(request, path, codec).await
            };
            match tokio::time::timeout(timeout + Duration::from_secs(1), fut).await {
                Ok(r) => r.map(tonic::Response::into_inner),
                Err(_) => Err(Status::deadline_exceeded(format!(
                    "{method}: no answer within {timeout:?}"
                ))),
            }
        })
    }

    /// `Version`.
    pub fn version(&self) -> Result<VersionResponse, Status> {
        self.call(
            &format!("{RUNTIME}Version"),
            VersionRequest {
                version: CRI_API_VERSION.into(),
            },
        )
    }

    /// `Status` (conditions `RuntimeReady`, `NetworkReady`; `info` when verbose).
    pub fn status(&self, verbose: bool) -> Result<StatusResponse, Status> {
        self.call(&format!("{RUNTIME}Status"), StatusRequest { verbose })
    }

    /// `ImageService/ImageStatus`: the image, None when the runtime does not have it.
    pub fn image_status(&self, image: &str) -> Result<Option<Image>, Status> {
        let r: ImageStatusResponse = self.call(
            &format!("{IMAGE}ImageStatus"),
            ImageStatusRequest {
                image: Some(ImageSpec {
                    image: image.into(),
                }),
                verbose: false,
            },
        )?;
        Ok(r.image)
    }

    /// `RunPodSandbox` with the default runtime handler: the sandbox ID. CNI ADD has run
    /// when this returns.
    pub fn run_pod_sandbox(&self, config: &PodSandboxConfig) -> Result<String, Status> {
        self.run_pod_sandbox_with(config, "")
    }

    /// `RunPodSandbox` with runtime handler `handler`.
    pub fn run_pod_sandbox_with(
        &self,
        config: &PodSandboxConfig,
        handler: &str,
    ) -> Result<String, Status> {
        let r: RunPodSandboxResponse = self.call(
            &format!("{RUNTIME}RunPodSandbox"),
            RunPodSandboxRequest {
                config: Some(config.clone()),
                runtime_handler: handler.into(),
            },
        )?;
        Ok(r.pod_sandbox_id)
    }

    /// `PodSandboxStatus`; `verbose` adds containerd's info (see [`SandboxInfo`]).
    pub fn pod_sandbox_status(
        &self,
        id: &str,
        verbose: bool,
    ) -> Result<PodSandboxStatusResponse, Status> {
        self.call(
            &format!("{RUNTIME}PodSandboxStatus"),
            PodSandboxStatusRequest {
                pod_sandbox_id: id.into(),
                verbose,
            },
        )
    }

    /// The sandbox's status and containerd's verbose info, both required.
    pub fn sandbox(&self, id: &str) -> Result<(PodSandboxStatus, SandboxInfo), Status> {
        let r = self.pod_sandbox_status(id, true)?;
        let info = r
            .sandbox_info()
            .ok_or_else(|| Status::internal(format!("no verbose info for sandbox {id}")))?;
        let status = r
            .status
            .ok_or_else(|| Status::internal(format!("no status for sandbox {id}")))?;
        Ok((status, info))
    }

    /// The sandbox's network namespace path (what CNI got as `CNI_NETNS`); None for a
    /// host-network sandbox.
    pub fn sandbox_netns(&self, id: &str) -> Result<Option<PathBuf>, Status> {
        Ok(self.sandbox(id)?.1.netns_path())
    }

    /// `StopPodSandbox`: stops the sandbox and tears its network down (CNI DEL).
    /// Idempotent in containerd.
    pub fn stop_pod_sandbox(&self, id: &str) -> Result<(), Status> {
        let _: Empty = self.call(
            &format!("{RUNTIME}StopPodSandbox"),
            PodSandboxIdRequest {
                pod_sandbox_id: id.into(),
            },
        )?;
        Ok(())
    }

    /// `RemovePodSandbox` (containerd stops it first if needed). Removing an unknown ID
    /// succeeds.
    pub fn remove_pod_sandbox(&self, id: &str) -> Result<(), Status> {
        let _: Empty = self.call(
            &format!("{RUNTIME}RemovePodSandbox"),
            PodSandboxIdRequest {
                pod_sandbox_id: id.into(),
            },
        )?;
        Ok(())
    }

    /// `ListPodSandbox` with an optional filter.
    pub fn list_pod_sandbox(
        &self,
        filter: Option<PodSandboxFilter>,
    ) -> Result<Vec<PodSandbox>, Status> {
        let r: ListPodSandboxResponse = self.call(
            &format!("{RUNTIME}ListPodSandbox"),
            ListPodSandboxRequest { filter },
        )?;
        Ok(r.items)
    }
}

/// Runs `f(cri, i)` for `i` in `0..n` on `par` threads, each with its own CRI connection
/// to `socket` (as kubelet's pod workers do); the results in `i` order.
pub fn parallel<T: Send>(
    socket: &Path,
    n: usize,
    par: usize,
    f: impl Fn(&Cri, usize) -> T + Sync,
) -> Vec<(usize, T)> {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let next = AtomicUsize::new(0);
    let out = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..par {
            s.spawn(|| {
                let cri = Cri::connect(socket);
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= n {
                        break;
                    }
                    let r = f(&cri, i);
                    out.lock().unwrap_or_else(|e| e.into_inner()).push((i, r));
                }
            });
        }
    });
    let mut v = out.into_inner().unwrap_or_else(|e| e.into_inner());
    v.sort_by_key(|(i, _)| *i);
    v
}
