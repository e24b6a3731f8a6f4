//! The webhook through a real kube-apiserver v1.20.2 (the fixture), driven with kubectl
//! v1.20.2 as users drive it: the bundle's ValidatingWebhookConfiguration
//! (deploy/webhook.yaml; its clientConfig pointed at this test's webhook on 127.0.0.1),
//! the bundle's RBAC, and the webhook running with its ServiceAccount's token, its CA and
//! serving certificate self-provisioned into its Secret and the caBundle. Then: bad NADs
//! and pods refused with the plugin's messages, a duplicate VNI refused, deletion of a NAD
//! in use refused, network-status writable by meta-cni's ServiceAccount only, and with the
//! webhook stopped NADs refused while pods pass.

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch, PatchParams};
use meta_cni_webhook::cache::Cache;
use meta_cni_webhook::handler::Admitter;
use meta_cni_webhook::serve::{ServeOpts, run_on};
use meta_tests::apiserver::ApiServer;
use meta_tests::kubectl::{Out, run as kubectl};
use serde_json::{Value, json};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

const NS: &str = "apps";

fn repo(rel: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

fn must(api: &ApiServer, args: &[&str], stdin: Option<&Value>) -> Out {
    let o = kubectl(api, args, stdin);
    assert!(o.ok, "kubectl {args:?}: {o}");
    o
}

fn refused(api: &ApiServer, args: &[&str], stdin: Option<&Value>, want: &str) {
    let o = kubectl(api, args, stdin);
    assert!(
        !o.ok && o.stderr.contains(want),
        "kubectl {args:?}: want a refusal with {want:?}: {o}"
    );
}

/// The objects of a YAML file of the bundle.
fn bundle(file: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(repo(file)).unwrap();
    let docs: Vec<Value> = serde_saphyr::from_multiple(&text).unwrap();
    docs.into_iter().filter(|d| !d.is_null()).collect()
}

fn nad(name: &str, config: Value) -> Value {
    json!({"apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
           "metadata": {"name": name, "namespace": NS}, "spec": {"config": config.to_string()}})
}

fn pod(name: &str, networks: Option<&str>) -> Value {
    let mut p = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": NS},
                       "spec": {"containers": [{"name": "c", "image": "pause"}]}});
    if let Some(n) = networks {
        p["metadata"]["annotations"] = json!({"k8s.v1.cni.cncf.io/networks": n});
    }
    p
}

/// The webhook, in-process, on its own runtime: stopped by dropping the sender.
struct Webhook {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Webhook {
    fn start(listener: std::net::TcpListener, kubeconfig: std::path::PathBuf) -> Webhook {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let mut opts = ServeOpts::new(listener.local_addr().unwrap());
                opts.cert_secret = Some("meta-cni-webhook-cert".into());
                opts.namespace = Some("meta-cni-system".into());
                opts.webhook_config_name = Some("meta-cni-webhook".into());
                opts.cert_ip_addresses = vec!["127.0.0.1".parse().unwrap()];
                opts.cert_check_interval = Duration::from_secs(1);
                opts.kubeconfig = Some(kubeconfig);
                let client = meta_cni_webhook::serve::kube_client(&opts).await.unwrap();
                let cache = Cache::new();
                tokio::spawn(cache.clone().run(client));
                let handler = Arc::new(Admitter {
                    settings: meta_cni_webhook::admission::Settings::default(),
                    world: cache,
                    ready: Cache::ready,
                });
                listener.set_nonblocking(true).unwrap();
                let l = tokio::net::TcpListener::from_std(listener).unwrap();
                run_on(l, opts, handler, async {
                    let _ = rx.await;
                })
                .await
                .unwrap();
            });
        });
        Webhook {
            stop: Some(tx),
            thread: Some(thread),
        }
    }

    fn stop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            t.join().expect("webhook thread");
        }
    }
}

impl Drop for Webhook {
    fn drop(&mut self) {
        drop(self.stop.take());
    }
}

#[test]
fn through_the_api_server() {
    let api = ApiServer::start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let admin = rt.block_on(meta_tests::kube::client_for(&api.admin_kubeconfig()));
    // The CRD, the plugin's RBAC (its ServiceAccount writes network-status), and the
    // webhook's namespace and RBAC from the bundle; namespaces labelled as 1.21+ does.
    must(
        &api,
        &["apply", "-f", repo("deploy/crds").to_str().unwrap()],
        None,
    );
    must(
        &api,
        &["apply", "-f", repo("deploy/rbac.yaml").to_str().unwrap()],
        None,
    );
    let wh = bundle("deploy/webhook.yaml");
    let rbac: Vec<Value> = wh
        .iter()
        .filter(|o| {
            matches!(
                o["kind"].as_str(),
                Some(
                    "Namespace"
                        | "ServiceAccount"
                        | "Role"
                        | "RoleBinding"
                        | "ClusterRole"
                        | "ClusterRoleBinding"
                )
            )
        })
        .cloned()
        .collect();
    must(
        &api,
        &["apply", "-f", "-"],
        Some(&json!({"apiVersion": "v1", "kind": "List", "items": rbac})),
    );
    must(&api, &["create", "namespace", NS], None);
    for ns in [NS, "kube-system"] {
        must(
            &api,
            &[
                "label",
                "namespace",
                ns,
                &format!("kubernetes.io/metadata.name={ns}"),
                "--overwrite",
            ],
            None,
        );
    }
    must(
        &api,
        &[
            "wait",
            "--for=condition=established",
            "crd/network-attachment-definitions.k8s.cni.cncf.io",
        ],
        None,
    );
    // The bundle's webhook configuration, pointed at this test's listener.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("https://{}/validate", listener.local_addr().unwrap());
    let mut vwc = wh
        .iter()
        .find(|o| o["kind"] == "ValidatingWebhookConfiguration")
        .cloned()
        .unwrap();
    for h in vwc["webhooks"].as_array_mut().unwrap() {
        h["clientConfig"] = json!({"url": url});
    }
    must(&api, &["apply", "-f", "-"], Some(&vwc));
    let wh_token = rt.block_on(meta_tests::kube::service_account_token(
        &admin,
        "meta-cni-system",
        "meta-cni-webhook",
    ));
    let mut webhook = Webhook::start(listener, api.kubeconfig_for_token(&wh_token));

    // Ready: the caBundle is in place and the NAD check answers.
    let bad_vlan = nad(
        "bad-vlan",
        json!({"cniVersion": "1.0.0", "type": "bridge", "vlan": 5000}),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let o = kubectl(&api, &["create", "-f", "-"], Some(&bad_vlan));
        if !o.ok
            && o.stderr
                .contains("invalid VLAN ID 5000 (must be between 0 and 4094)")
        {
            assert!(
                o.stderr
                    .contains("NetworkAttachmentDefinition apps/bad-vlan: plugin bridge:"),
                "{o}"
            );
            break;
        }
        assert!(
            o.ok || Instant::now() < deadline,
            "the webhook never answered: {o}"
        );
        if o.ok {
            panic!("a bad NAD was admitted: {o}");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    // NADs.
    let good = nad(
        "lan",
        json!({"cniVersion": "1.0.0", "type": "bridge", "bridge": "br-lan",
                                  "ipam": {"type": "host-local", "subnet": "10.70.0.0/24"}}),
    );
    must(&api, &["create", "-f", "-"], Some(&good));
    let seg = nad(
        "seg",
        json!({"cniVersion": "1.0.0", "type": "vxlan", "vni": 300}),
    );
    must(&api, &["create", "-f", "-"], Some(&seg));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        // The cache learns of "seg" through its watch.
        let o = kubectl(
            &api,
            &["create", "-f", "-"],
            Some(&nad(
                "seg2",
                json!({"cniVersion": "1.0.0", "type": "vxlan", "vni": 300, "port": 4790}),
            )),
        );
        if !o.ok && o.stderr.contains("vni 300 is already used by NetworkAttachmentDefinition apps/seg with other settings (port: 4790 here, 4789 there)") {
            break;
        }
        assert!(
            !o.ok && Instant::now() < deadline,
            "a duplicate VNI was not refused: {o}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    refused(
        &api,
        &["create", "-f", "-"],
        Some(&nad(
            "overlay",
            json!({"cniVersion": "1.0.0", "type": "vxlan", "vni": 1}),
        )),
        "vni 1 is the VNI of the cluster overlay",
    );
    // Pods.
    refused(
        &api,
        &["create", "-f", "-"],
        Some(&pod("bad", Some("lan@a/b"))),
        "networks[0]",
    );
    refused(
        &api,
        &["create", "-f", "-"],
        Some(&pod("missing", Some("lan, nope"))),
        "pod apps/missing: networks[1]: NetworkAttachmentDefinition apps/nope not found",
    );
    must(&api, &["create", "-f", "-"], Some(&pod("web", Some("lan"))));
    must(&api, &["create", "-f", "-"], Some(&pod("plain", None)));
    // network-status: not by a user, but by meta-cni's ServiceAccount through pods/status.
    let status =
        json!([{"name": "apps/lan", "interface": "net1", "ips": ["10.70.0.2"]}]).to_string();
    refused(
        &api,
        &[
            "annotate",
            "pod",
            "-n",
            NS,
            "web",
            &format!("k8s.v1.cni.cncf.io/network-status={status}"),
        ],
        None,
        "may be set or changed only by system:serviceaccount:kube-system:meta-cni",
    );
    let sa_token = rt.block_on(meta_tests::kube::sa_token(&admin));
    rt.block_on(async {
        let c = meta_tests::kube::client_for(&api.kubeconfig_for_token(&sa_token)).await;
        let patch =
            json!({"metadata": {"annotations": {"k8s.v1.cni.cncf.io/network-status": status}}});
        Api::<Pod>::namespaced(c, NS)
            .patch_status("web", &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .expect("meta-cni's ServiceAccount writes network-status");
    });
    // Deletion protection: "lan" is in use by web (once the cache has seen its status).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let o = kubectl(
            &api,
            &["delete", "-n", NS, "network-attachment-definition", "lan"],
            None,
        );
        if !o.ok
            && o.stderr.contains(
                "NetworkAttachmentDefinition apps/lan is in use by 1 running pod: apps/web",
            )
        {
            break;
        }
        assert!(
            !o.ok && Instant::now() < deadline,
            "deleting a NAD in use: {o}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    must(
        &api,
        &["delete", "-n", NS, "network-attachment-definition", "seg"],
        None,
    );
    // The webhook stopped: NADs fail closed, pods open.
    webhook.stop();
    let o = kubectl(
        &api,
        &["create", "-f", "-"],
        Some(&nad(
            "later",
            json!({"cniVersion": "1.0.0", "type": "bridge"}),
        )),
    );
    assert!(!o.ok && o.stderr.contains("failed calling webhook"), "{o}");
    must(
        &api,
        &["create", "-f", "-"],
        Some(&pod("later", Some("nope"))),
    );
}
