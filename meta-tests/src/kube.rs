//! Kubernetes test support shared by the agent tests (meta-cni-agent) and the end-to-end
//! tests (meta-cni): a TCP forwarder that makes the fixture's 127.0.0.1 API server reachable
//! from inside a node namespace, kube clients, the RBAC of deploy/rbac.yaml and a token of
//! its ServiceAccount. Behind the cargo feature `kube`, so that the delegate crates' tests
//! do not link kube.

use crate::apiserver::SA_ISSUER;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use kube::api::{Api, PostParams};
use meta_netlink::Netns;
use serde_json::Value;
use std::io::ErrorKind;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

/// The repository root.
fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Relays connections accepted on 127.0.0.1 of a namespace to `upstream`. Dropping it
/// closes the listener (connections are then refused).
pub struct Forwarder {
    addr: SocketAddr,
    accepted: Arc<std::sync::atomic::AtomicUsize>,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl Forwarder {
    /// Listens on `listen` inside `ns` (port 0 = a free one) and forwards every
    /// connection to `upstream`.
    pub fn start(ns: &Netns, listen: SocketAddr, upstream: SocketAddr) -> Forwarder {
        let listener = ns
            .run(move || TcpListener::bind(listen))
            .expect("thread in the node namespace")
            .expect("bind in the node namespace");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("local_addr");
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = accepted.clone();
        let accept = std::thread::Builder::new()
            .name("api-forwarder".into())
            .spawn(move || {
                while !flag.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok((client, _)) => {
                            count.fetch_add(1, Ordering::SeqCst);
                            std::thread::spawn(move || relay(client, upstream));
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => {
                            std::thread::sleep(Duration::from_millis(5))
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
            })
            .expect("spawn forwarder");
        Forwarder {
            addr,
            accepted,
            stop,
            accept: Some(accept),
        }
    }

    /// Where it listens (in the namespace it was started in).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// How many connections it has accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

fn relay(client: TcpStream, upstream: SocketAddr) {
    let _ = client.set_nonblocking(false);
    // Upstream gone: dropping `client` closes the connection, as a dead server would.
    let Ok(server) = TcpStream::connect_timeout(&upstream, Duration::from_secs(2)) else {
        return;
    };
    let (Ok(mut c_in), Ok(mut s_out)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    let up = std::thread::spawn(move || {
        let _ = std::io::copy(&mut c_in, &mut s_out);
        let _ = s_out.shutdown(Shutdown::Write);
    });
    let (mut s_in, mut c_out) = (server, client);
    let _ = std::io::copy(&mut s_in, &mut c_out);
    let _ = c_out.shutdown(Shutdown::Write);
    let _ = up.join();
}

/// A kube client for `kubeconfig`; call inside the runtime.
pub async fn client_for(kubeconfig: &Path) -> kube::Client {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig).expect("read kubeconfig");
    let cfg = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
        .await
        .expect("kube config");
    kube::Client::try_from(cfg).expect("kube client")
}

/// Loads `deploy/crds/network-attachment-definition.yaml` and waits (30 s at most) until
/// it is Established.
pub async fn apply_nad_crd(admin: &kube::Client) {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let path = repo_root().join("deploy/crds/network-attachment-definition.yaml");
    let text = std::fs::read_to_string(&path).expect("read the CRD");
    let crd: CustomResourceDefinition = serde_saphyr::from_str(&text)
        .unwrap_or_else(|e| panic!("{}: not a CRD: {e}", path.display()));
    apply_crds(admin, vec![crd]).await;
}

/// Creates the CRDs and waits (30 s at most each) until they are Established.
pub async fn apply_crds(
    admin: &kube::Client,
    crds: Vec<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition>,
) {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let api: Api<CustomResourceDefinition> = Api::all(admin.clone());
    for crd in crds {
        let name = crd.metadata.name.clone().expect("CRD name");
        api.create(&PostParams::default(), &crd)
            .await
            .unwrap_or_else(|e| panic!("create the CRD {name}: {e}"));
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let c = api.get(&name).await.expect("get CRD");
            let established = c
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| {
                    cs.iter()
                        .any(|c| c.type_ == "Established" && c.status == "True")
                });
            if established {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "CRD {name} not Established"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Loads every object of `deploy/rbac.yaml` (ServiceAccount, ClusterRole,
/// ClusterRoleBinding, the plugin's token Secret, the installer's Role and RoleBinding);
/// returns their kinds/names.
pub async fn apply_rbac(admin: &kube::Client) -> Vec<String> {
    let path = repo_root().join("deploy/rbac.yaml");
    let text = std::fs::read_to_string(&path).expect("read rbac.yaml");
    let docs: Vec<Value> = serde_saphyr::from_multiple(&text)
        .unwrap_or_else(|e| panic!("{}: invalid YAML: {e}", path.display()));
    let pp = PostParams::default();
    let mut done = Vec::new();
    for d in docs.into_iter().filter(|d| !d.is_null()) {
        let kind = d["kind"].as_str().unwrap_or_default().to_string();
        let name = d["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        match kind.as_str() {
            "ServiceAccount" => create_namespaced::<ServiceAccount>(admin, d).await,
            "ClusterRole" => {
                let o: ClusterRole = serde_json::from_value(d).expect("ClusterRole");
                Api::<ClusterRole>::all(admin.clone())
                    .create(&pp, &o)
                    .await
                    .expect("create ClusterRole");
            }
            "ClusterRoleBinding" => {
                let o: ClusterRoleBinding = serde_json::from_value(d).expect("ClusterRoleBinding");
                Api::<ClusterRoleBinding>::all(admin.clone())
                    .create(&pp, &o)
                    .await
                    .expect("create ClusterRoleBinding");
            }
            "Secret" => create_namespaced::<Secret>(admin, d).await,
            "Role" => create_namespaced::<Role>(admin, d).await,
            "RoleBinding" => create_namespaced::<RoleBinding>(admin, d).await,
            other => panic!("{}: unexpected kind {other:?}", path.display()),
        }
        done.push(format!("{kind}/{name}"));
    }
    done
}

/// Creates the namespaced object `d` (of kind `K`) in its own namespace.
async fn create_namespaced<K>(admin: &kube::Client, d: Value)
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + serde::de::DeserializeOwned
        + serde::Serialize
        + Clone
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    let kind = K::kind(&K::DynamicType::default()).to_string();
    let o: K = serde_json::from_value(d).unwrap_or_else(|e| panic!("{kind}: {e}"));
    let ns = o
        .meta()
        .namespace
        .clone()
        .unwrap_or_else(|| panic!("{kind} without a namespace"));
    Api::<K>::namespaced(admin.clone(), &ns)
        .create(&PostParams::default(), &o)
        .await
        .unwrap_or_else(|e| panic!("create {kind}: {e}"));
}

/// A token of ServiceAccount kube-system/meta-cni from the TokenRequest API
/// (`POST /api/v1/namespaces/kube-system/serviceaccounts/meta-cni/token`).
pub async fn sa_token(admin: &kube::Client) -> String {
    service_account_token(admin, "kube-system", "meta-cni").await
}

/// A token (one hour, the fixture's issuer as audience) of ServiceAccount `ns/sa` from the
/// TokenRequest API.
pub async fn service_account_token(admin: &kube::Client, ns: &str, sa: &str) -> String {
    let sas: Api<ServiceAccount> = Api::namespaced(admin.clone(), ns);
    let tr = TokenRequest {
        spec: Some(TokenRequestSpec {
            audiences: Some(vec![SA_ISSUER.to_string()]),
            expiration_seconds: Some(3600),
            ..Default::default()
        }),
        ..Default::default()
    };
    sas.create_token_request(sa, &PostParams::default(), &tr)
        .await
        .unwrap_or_else(|e| panic!("TokenRequest for {ns}/{sa}: {e}"))
        .status
        .expect("TokenRequest status")
        .token
        .expect("TokenRequest token")
}
