//! `deploy/` as one bundle against a real kube-apiserver v1.20.2 with kubectl v1.20.2
//! (its kustomize v2.0.3): `kubectl apply -k deploy/ --dry-run=server` is accepted, a real
//! apply and `kubectl delete -k deploy/` succeed, the webhook configuration's
//! namespaceSelector and failure policies act as deploy/README.md says on 1.20 (the
//! webhook itself is not running: the fixture has no scheduler or kubelet, which makes
//! it a webhook that is down), and the webhook's ServiceAccount can do what
//! meta-cni-webhook/src/access.rs lists and nothing next to it. (The exact comparison of
//! the bundle's RBAC with that list is meta-cni-webhook/tests/rbac.rs.)

use meta_tests::apiserver::ApiServer;
use meta_tests::kubectl::{Out, run as kubectl};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

const WEBHOOK_NS: &str = "meta-cni-system";
const WEBHOOK_SA: &str = "system:serviceaccount:meta-cni-system:meta-cni-webhook";
const NAD_HOOK: &str = "nads.meta-cni.k8s.cni.cncf.io";
const POD_HOOK: &str = "pods.meta-cni.k8s.cni.cncf.io";

fn deploy_dir() -> String {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy");
    p.canonicalize()
        .expect("deploy/")
        .to_string_lossy()
        .into_owned()
}

fn must(api: &ApiServer, args: &[&str], stdin: Option<&Value>) -> Out {
    let o = kubectl(api, args, stdin);
    assert!(o.ok, "kubectl {args:?} failed: {o}");
    o
}

fn nad(ns: &str, name: &str) -> Value {
    json!({
        "apiVersion": "k8s.cni.cncf.io/v1",
        "kind": "NetworkAttachmentDefinition",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"config": r#"{"cniVersion":"1.0.0","type":"meta-bridge","bridge":"br1"}"#}
    })
}

fn pod(ns: &str, name: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": ns,
            "annotations": {"k8s.v1.cni.cncf.io/networks": "br1"}
        },
        "spec": {"containers": [{"name": "c", "image": "pause"}]}
    })
}

/// The kinds/names of the bundle as kubectl's kustomize builds it.
fn bundle_objects(api: &ApiServer) -> Vec<String> {
    let o = must(api, &["kustomize", &deploy_dir()], None);
    o.stdout
        .split("\n---\n")
        .filter_map(|doc| {
            let kind = doc.lines().find_map(|l| l.strip_prefix("kind: "))?;
            // top-level `metadata:` then `  name:` (kustomize sorts keys)
            let meta = doc.split("\nmetadata:\n").nth(1)?;
            let name = meta.lines().find_map(|l| l.strip_prefix("  name: "))?;
            Some(format!("{kind}/{name}"))
        })
        .collect()
}

#[test]
fn bundle_applies_with_kubectl_1_20_dry_run_and_for_real_then_deletes() {
    let api = ApiServer::start();
    let dir = deploy_dir();
    let objects = bundle_objects(&api);
    assert_eq!(objects.len(), 25, "the bundle's objects: {objects:?}");
    for o in [
        "Namespace/meta-cni-system",
        // the plugin's and the node agent's own ServiceAccounts
        "ServiceAccount/meta-cni",
        "ServiceAccount/meta-cni-agent",
        "CustomResourceDefinition/network-attachment-definitions.k8s.cni.cncf.io",
        // the cluster IPAM's objects and the NPWG IPAMClaim
        "CustomResourceDefinition/ippools.ipam.meta-cni.io",
        "CustomResourceDefinition/ipblocks.ipam.meta-cni.io",
        "CustomResourceDefinition/ipreservations.ipam.meta-cni.io",
        "CustomResourceDefinition/ipamclaims.k8s.cni.cncf.io",
        "DaemonSet/meta-cni",
        "Deployment/meta-cni-webhook",
        "PodDisruptionBudget/meta-cni-webhook",
        "Service/meta-cni-webhook",
        "ValidatingWebhookConfiguration/meta-cni-webhook",
    ] {
        assert!(objects.iter().any(|x| x == o), "{o} not in {objects:?}");
    }

    // The PodDisruptionBudget's apiVersion: 1.20 serves policy/v1beta1 only.
    let o = must(&api, &["api-versions"], None);
    let versions: Vec<&str> = o.stdout.lines().collect();
    assert!(versions.contains(&"policy/v1beta1"), "{o}");
    assert!(!versions.contains(&"policy/v1"), "{o}");

    // A server dry run cannot create the webhook's namespace for the objects in it (nothing
    // of a dry run is stored): on a fresh cluster it fails on exactly that, and nothing else.
    let o = kubectl(&api, &["apply", "-k", &dir, "--dry-run=server"], None);
    assert!(!o.ok, "dry run on a fresh server: {o}");
    for l in o.stderr.lines().filter(|l| !l.trim().is_empty()) {
        assert!(
            l.contains(r#"namespaces "meta-cni-system" not found"#),
            "unexpected dry-run error: {l}\n{o}"
        );
    }

    // So the namespace goes first, for real (deploy/README.md), selected by its label...
    let o = must(
        &api,
        &[
            "apply",
            "-k",
            &dir,
            "-l",
            "kubernetes.io/metadata.name=meta-cni-system",
        ],
        None,
    );
    assert_eq!(o.stdout.trim(), "namespace/meta-cni-system created", "{o}");

    // ...then the server accepts the whole bundle in a dry run, and stores none of it.
    let o = must(&api, &["apply", "-k", &dir, "--dry-run=server"], None);
    let lines: Vec<&str> = o.stdout.lines().filter(|l| !l.is_empty()).collect();
    assert_eq!(lines.len(), objects.len(), "{o}");
    assert!(lines.iter().all(|l| l.ends_with("(server dry run)")), "{o}");
    let o = kubectl(
        &api,
        &["get", "validatingwebhookconfiguration", "meta-cni-webhook"],
        None,
    );
    assert!(
        !o.ok && o.stderr.contains("NotFound"),
        "a dry run stored it: {o}"
    );

    // For real, and a dry run of the installed bundle (an upgrade) is accepted in one step.
    must(&api, &["apply", "-k", &dir], None);
    must(&api, &["apply", "-k", &dir, "--dry-run=server"], None);
    let o = must(&api, &["get", "-k", &dir, "-o", "name"], None);
    assert_eq!(o.stdout.lines().count(), objects.len(), "{o}");
    must(
        &api,
        &[
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/network-attachment-definitions.k8s.cni.cncf.io",
        ],
        None,
    );
    // The webhook configuration as stored: caBundle left empty for the webhook to patch.
    let o = must(
        &api,
        &[
            "get",
            "validatingwebhookconfiguration",
            "meta-cni-webhook",
            "-o",
            "json",
        ],
        None,
    );
    let vwc: Value = serde_json::from_str(&o.stdout).expect("VWC JSON");
    for h in vwc["webhooks"].as_array().expect("webhooks") {
        assert!(
            h["clientConfig"]["caBundle"]
                .as_str()
                .unwrap_or_default()
                .is_empty(),
            "{h}"
        );
    }

    // The webhook down, and no call leaving the machine: kube-apiserver reaches a service
    // webhook at https://<service>.<namespace>.svc (DNS; without --enable-aggregator-routing
    // it does not look at endpoints), a name the fixture cannot own. The test points both
    // webhooks' clientConfig at a local port that accepts and hangs up (and counts),
    // leaving every other field of the configuration as the bundle has it.
    let down = DownWebhook::start();
    let url = format!("https://127.0.0.1:{}/validate", down.port);
    let patch = json!([
        {"op": "test", "path": "/webhooks/0/name", "value": NAD_HOOK},
        {"op": "test", "path": "/webhooks/1/name", "value": POD_HOOK},
        {"op": "replace", "path": "/webhooks/0/clientConfig", "value": {"url": url}},
        {"op": "replace", "path": "/webhooks/1/clientConfig", "value": {"url": url}},
    ]);
    let patch = patch.to_string();
    must(
        &api,
        &[
            "patch",
            "validatingwebhookconfiguration",
            "meta-cni-webhook",
            "--type=json",
            "-p",
            &patch,
        ],
        None,
    );
    admission_with_the_webhook_down(&api, &down);
    service_account_can_do_what_access_rs_lists(&api);

    // Uninstall. The fixture has no controller-manager, so the namespace stays Terminating
    // (its finalizer is the namespace controller's): --wait=false, then everything else
    // must be gone.
    must(&api, &["delete", "-k", &dir, "--wait=false"], None);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let o = kubectl(&api, &["get", "-k", &dir, "-o", "name"], None);
        let left: Vec<&str> = o.stdout.lines().filter(|l| !l.is_empty()).collect();
        if left == ["namespace/meta-cni-system"] || left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still there after kubectl delete -k: {left:?}\n{o}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let o = kubectl(&api, &["get", "namespace", WEBHOOK_NS, "-o", "json"], None);
    if o.ok {
        let ns: Value = serde_json::from_str(&o.stdout).expect("namespace JSON");
        assert_eq!(ns["status"]["phase"], "Terminating", "{ns}");
    }
}

/// What the webhook configuration does while the webhook is down (no pod of it runs in the
/// fixture, and the Service has no endpoints): NAD writes are refused (failure policy
/// Fail) where the namespaceSelector matches, pods are admitted (Ignore), and kube-system and
/// meta-cni-system are left alone, kube-system on 1.20 only once it carries the label
/// kubernetes.io/metadata.name that 1.21 sets by itself.
fn admission_with_the_webhook_down(api: &ApiServer, down: &DownWebhook) {
    let o = kubectl(api, &["create", "-f", "-"], Some(&nad("default", "br1")));
    assert!(
        !o.ok,
        "a NAD in default was admitted without the webhook: {o}"
    );
    assert!(
        o.stderr
            .contains(&format!(r#"failed calling webhook "{NAD_HOOK}""#)),
        "{o}"
    );
    assert!(down.calls() > 0, "the NAD webhook was not called");

    // Pods are never blocked by a webhook that is down (and it was called for them)...
    let before = down.calls();
    let o = must(api, &["create", "-f", "-"], Some(&pod("default", "p1")));
    assert!(o.stdout.contains("pod/p1 created"), "{o}");
    assert!(down.calls() > before, "the pod webhook was not called");
    // ...nor their network-status (the plugin writes it with a patch on pods/status).
    let before = down.calls();
    let status = json!({"metadata": {"annotations": {"k8s.v1.cni.cncf.io/network-status": "[]"}}});
    let (code, body) = api_patch_status(api, "default", "p1", &status);
    assert_eq!(code, 200, "PATCH pods/p1/status: {body}");
    assert!(
        down.calls() > before,
        "the pod webhook was not called for pods/status"
    );

    // Its own namespace carries the label from the bundle: left alone, not even called.
    let before = down.calls();
    must(api, &["create", "-f", "-"], Some(&nad(WEBHOOK_NS, "br1")));
    must(api, &["create", "-f", "-"], Some(&pod(WEBHOOK_NS, "p2")));
    assert_eq!(
        down.calls(),
        before,
        "the webhook was called for {WEBHOOK_NS}"
    );

    // 1.20 does not label kube-system: the selector matches it until it is labeled.
    let o = must(
        api,
        &["get", "namespace", "kube-system", "-o", "json"],
        None,
    );
    let ns: Value = serde_json::from_str(&o.stdout).expect("namespace JSON");
    assert!(
        ns["metadata"]["labels"]["kubernetes.io/metadata.name"].is_null(),
        "this server labels namespaces by itself (>= 1.21?): {ns}"
    );
    let o = kubectl(
        api,
        &["create", "-f", "-"],
        Some(&nad("kube-system", "br1")),
    );
    assert!(
        !o.ok,
        "kube-system unlabeled on 1.20 and the NAD admitted: {o}"
    );
    // The one manual step of deploy/README.md for 1.20.
    must(
        api,
        &[
            "label",
            "namespace",
            "kube-system",
            "kubernetes.io/metadata.name=kube-system",
        ],
        None,
    );
    let before = down.calls();
    must(
        api,
        &["create", "-f", "-"],
        Some(&nad("kube-system", "br1")),
    );
    must(api, &["create", "-f", "-"], Some(&pod("kube-system", "p3")));
    assert_eq!(
        down.calls(),
        before,
        "the webhook was called for kube-system"
    );
    must(
        api,
        &["delete", "net-attach-def", "br1", "-n", "kube-system"],
        None,
    );
    for (ns, p) in [(WEBHOOK_NS, "p2"), ("kube-system", "p3")] {
        must(
            api,
            &["delete", "pod", p, "-n", ns, "--grace-period=0", "--force"],
            None,
        );
    }
    must(
        api,
        &["delete", "net-attach-def", "br1", "-n", WEBHOOK_NS],
        None,
    );
    must(
        api,
        &[
            "delete",
            "pod",
            "p1",
            "-n",
            "default",
            "--grace-period=0",
            "--force",
        ],
        None,
    );
}

/// `kubectl auth can-i` as the webhook's ServiceAccount: each access of
/// meta-cni-webhook/src/access.rs is allowed, the accesses next to them are not.
fn service_account_can_do_what_access_rs_lists(api: &ApiServer) {
    let can = |args: &[&str]| {
        let mut a = vec!["auth", "can-i", "--as", WEBHOOK_SA];
        a.extend_from_slice(args);
        let o = kubectl(api, &a, None);
        let answer = o.stdout.trim().to_string();
        assert!(answer == "yes" || answer == "no", "can-i {args:?}: {o}");
        answer == "yes"
    };
    let nads = "network-attachment-definitions.k8s.cni.cncf.io";
    let vwc = "validatingwebhookconfigurations.admissionregistration.k8s.io";
    let allowed: &[&[&str]] = &[
        &["get", nads, "-A"],
        &["list", nads, "-A"],
        &["watch", nads, "-A"],
        &["get", "pods", "-A"],
        &["list", "pods", "-A"],
        &["watch", "pods", "-A"],
        &["create", "secrets", "-n", WEBHOOK_NS],
        &["get", "secrets/meta-cni-webhook-cert", "-n", WEBHOOK_NS],
        &["update", "secrets/meta-cni-webhook-cert", "-n", WEBHOOK_NS],
        &["get", &format!("{vwc}/meta-cni-webhook")],
        &["patch", &format!("{vwc}/meta-cni-webhook")],
    ];
    let denied: &[&[&str]] = &[
        &["create", nads, "-n", "default"],
        &["update", nads, "-n", "default"],
        &["delete", nads, "-n", "default"],
        &["patch", "pods", "-n", "default"],
        &["update", "pods/status", "-n", "default"],
        &["create", "pods", "-n", "default"],
        &["create", "secrets", "-n", "default"],
        &["create", "secrets", "-n", "kube-system"],
        &["get", "secrets/other", "-n", WEBHOOK_NS],
        &["list", "secrets", "-n", WEBHOOK_NS],
        &["delete", "secrets/meta-cni-webhook-cert", "-n", WEBHOOK_NS],
        &["get", "secrets/meta-cni-webhook-cert", "-n", "default"],
        &["patch", &format!("{vwc}/other")],
        &["list", vwc],
        &["create", vwc],
        &["delete", &format!("{vwc}/meta-cni-webhook")],
        &[
            "patch",
            "mutatingwebhookconfigurations.admissionregistration.k8s.io/meta-cni-webhook",
        ],
        &["create", "events", "-n", WEBHOOK_NS],
        &["get", "nodes"],
    ];
    for a in allowed {
        assert!(can(a), "{WEBHOOK_SA} cannot {a:?}");
    }
    for a in denied {
        assert!(!can(a), "{WEBHOOK_SA} can {a:?}");
    }
}

/// A webhook endpoint that is down: accepts TCP connections on 127.0.0.1 and closes them
/// at once (so every call fails, quickly), counting them.
struct DownWebhook {
    port: u16,
    calls: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl DownWebhook {
    fn start() -> DownWebhook {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = l.local_addr().expect("local_addr").port();
        let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let c = calls.clone();
        // The thread ends with the test process.
        std::thread::spawn(move || {
            for s in l.incoming() {
                c.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                drop(s);
            }
        });
        DownWebhook { port, calls }
    }

    fn calls(&self) -> usize {
        self.calls.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// PATCH (merge) `pods/<name>/status` as the admin, with curl: (HTTP status, body).
fn api_patch_status(api: &ApiServer, ns: &str, name: &str, body: &Value) -> (u16, String) {
    let pki = api.dir().join("pki");
    let out = Command::new("curl")
        .args(["-sS", "--noproxy", "*", "--max-time", "30", "-X", "PATCH"])
        .arg("--cacert")
        .arg(api.ca_path())
        .arg("--cert")
        .arg(pki.join("admin.crt"))
        .arg("--key")
        .arg(pki.join("admin.key"))
        .args(["-H", "Content-Type: application/merge-patch+json"])
        .arg("--data")
        .arg(body.to_string())
        .args(["-w", "\n%{http_code}"])
        .arg(format!(
            "{}/api/v1/namespaces/{ns}/pods/{name}/status",
            api.url()
        ))
        .output()
        .expect("run curl");
    assert!(
        out.status.success(),
        "curl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = s.rsplit_once('\n').expect("status line");
    (code.trim().parse().expect("status"), body.to_string())
}
