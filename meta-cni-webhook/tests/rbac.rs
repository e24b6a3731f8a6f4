//! The bundle in `deploy/` against the webhook's code: the RBAC bound to the webhook's
//! ServiceAccount is exactly [`API_ACCESS`], verb by verb, and the webhook configuration,
//! Deployment, Service and PodDisruptionBudget have what the bundle promises.
//!
//! The bundle is read the way kustomize builds it: `deploy/kustomization.yaml` lists plain
//! files and no transformer (checked here), so its objects are exactly those of the files.
//! (meta-tests/tests/deploy.rs applies the same bundle with `kubectl apply -k` to a real
//! API server.)

use meta_cni_webhook::access::{API_ACCESS, CERT_SECRET, WEBHOOK_CONFIG};
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

fn load_yaml(path: &Path) -> Vec<Value> {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let docs: Vec<Value> = serde_saphyr::from_multiple(&text)
        .unwrap_or_else(|e| panic!("{}: invalid YAML: {e}", path.display()));
    docs.into_iter().filter(|d| !d.is_null()).collect()
}

/// Every object of the bundle, in the kustomization's order.
fn bundle() -> Vec<Value> {
    let dir = deploy_dir();
    let k = load_yaml(&dir.join("kustomization.yaml"));
    assert_eq!(k.len(), 1, "kustomization.yaml: one document");
    let k = &k[0];
    let keys: BTreeSet<&str> = k
        .as_object()
        .expect("kustomization is a map")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        BTreeSet::from(["apiVersion", "kind", "resources"]),
        "kustomization.yaml has a transformer or generator: this test (which reads the \
         files as they are) no longer sees what kustomize builds"
    );
    let mut objs = Vec::new();
    for r in k["resources"].as_array().expect("resources list") {
        let p = dir.join(r.as_str().expect("resource path"));
        assert!(
            p.is_file(),
            "{}: resources are plain files here",
            p.display()
        );
        objs.extend(load_yaml(&p));
    }
    objs
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or_default()
}

fn find<'a>(objs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    let mut it = objs
        .iter()
        .filter(|o| s(&o["kind"]) == kind && s(&o["metadata"]["name"]) == name);
    let o = it
        .next()
        .unwrap_or_else(|| panic!("no {kind} {name} in the bundle"));
    assert!(it.next().is_none(), "two {kind} {name} in the bundle");
    o
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| a.iter().map(|x| s(x).to_string()).collect())
        .unwrap_or_default()
}

/// One grant: (API group, resource, verb, resource names (sorted), namespaced).
type Grant = (String, String, String, Vec<String>, bool);

/// The webhook's Deployment and its ServiceAccount (namespace, name).
fn webhook_sa(objs: &[Value]) -> (&Value, String, String) {
    let d = find(objs, "Deployment", "meta-cni-webhook");
    let ns = s(&d["metadata"]["namespace"]).to_string();
    let sa = s(&d["spec"]["template"]["spec"]["serviceAccountName"]).to_string();
    assert!(
        !ns.is_empty() && !sa.is_empty(),
        "Deployment without namespace or SA"
    );
    find(objs, "ServiceAccount", &sa);
    (d, ns, sa)
}

/// Every grant of the rules bound (by RoleBinding or ClusterRoleBinding) to `ns/sa`.
fn bound_grants(objs: &[Value], ns: &str, sa: &str) -> BTreeSet<Grant> {
    let mut grants = BTreeSet::new();
    let mut bindings = 0;
    for b in objs {
        let kind = s(&b["kind"]);
        if kind != "RoleBinding" && kind != "ClusterRoleBinding" {
            continue;
        }
        let subjects = b["subjects"].as_array().cloned().unwrap_or_default();
        let ours = subjects.iter().any(|x| {
            s(&x["kind"]) == "ServiceAccount" && s(&x["name"]) == sa && s(&x["namespace"]) == ns
        });
        // Groups that contain every ServiceAccount would grant it too.
        for x in &subjects {
            if s(&x["kind"]) == "Group" {
                let g = s(&x["name"]);
                assert!(
                    !g.starts_with("system:serviceaccounts")
                        && !g.starts_with("system:authenticated"),
                    "{kind} {} binds group {g}, which includes the webhook's ServiceAccount",
                    s(&b["metadata"]["name"])
                );
            }
        }
        if !ours {
            continue;
        }
        bindings += 1;
        let namespaced = kind == "RoleBinding";
        if namespaced {
            assert_eq!(
                s(&b["metadata"]["namespace"]),
                ns,
                "RoleBinding {} grants the webhook rights outside its own namespace",
                s(&b["metadata"]["name"])
            );
        }
        let rk = s(&b["roleRef"]["kind"]);
        let role = find(objs, rk, s(&b["roleRef"]["name"]));
        if rk == "Role" {
            assert_eq!(
                s(&role["metadata"]["namespace"]),
                ns,
                "Role in another namespace"
            );
        }
        assert!(
            role.get("aggregationRule").is_none(),
            "{rk} {} aggregates other roles",
            s(&role["metadata"]["name"])
        );
        for rule in role["rules"].as_array().expect("rules") {
            assert!(
                rule.get("nonResourceURLs").is_none(),
                "nonResourceURLs: {rule}"
            );
            let mut names = strings(&rule["resourceNames"]);
            names.sort();
            for g in strings(&rule["apiGroups"]) {
                for r in strings(&rule["resources"]) {
                    for v in strings(&rule["verbs"]) {
                        for x in [&g, &r, &v] {
                            assert!(!x.contains('*'), "wildcard in {rule}");
                        }
                        grants.insert((g.clone(), r.clone(), v, names.clone(), namespaced));
                    }
                }
            }
        }
    }
    assert!(bindings > 0, "nothing is bound to {ns}/{sa}");
    grants
}

fn access_grants() -> BTreeSet<Grant> {
    let mut grants = BTreeSet::new();
    for a in API_ACCESS {
        let mut names: Vec<String> = a.resource_names.iter().map(|n| n.to_string()).collect();
        names.sort();
        for v in a.verbs {
            let g = (
                a.api_group.to_string(),
                a.resource.to_string(),
                v.to_string(),
                names.clone(),
                a.namespaced,
            );
            assert!(grants.insert(g.clone()), "API_ACCESS lists {g:?} twice");
        }
    }
    grants
}

#[test]
fn bundle_rbac_is_exactly_the_webhooks_api_access() {
    let objs = bundle();
    let (_, ns, sa) = webhook_sa(&objs);
    let bound = bound_grants(&objs, &ns, &sa);
    let used = access_grants();
    let extra: Vec<_> = bound.difference(&used).collect();
    let missing: Vec<_> = used.difference(&bound).collect();
    assert!(
        extra.is_empty() && missing.is_empty(),
        "deploy/ RBAC of {ns}/{sa} differs from meta_cni_webhook::access::API_ACCESS\n\
         granted but not used: {extra:#?}\nused but not granted: {missing:#?}"
    );
}

#[test]
fn the_node_service_account_gets_nothing_of_the_webhook() {
    let objs = bundle();
    let (_, ns, sa) = webhook_sa(&objs);
    assert_ne!((ns.as_str(), sa.as_str()), ("kube-system", "meta-cni"));
    let node = bound_grants(&objs, "kube-system", "meta-cni");
    for g in &node {
        assert!(
            g.1 != "secrets" && g.1 != "validatingwebhookconfigurations",
            "the node's ServiceAccount has {g:?}"
        );
    }
}

fn arg<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
    let p = format!("{flag}=");
    let mut found = None;
    for (i, a) in args.iter().enumerate() {
        if let Some(v) = a.strip_prefix(&p) {
            assert!(found.is_none(), "{flag} given twice");
            found = Some(v);
        } else if a == flag {
            assert!(found.is_none(), "{flag} given twice");
            found = Some(args.get(i + 1).map(String::as_str).unwrap_or_default());
        }
    }
    found
}

#[test]
fn deployment_runs_two_hardened_replicas_with_https_probes() {
    let objs = bundle();
    let (d, ns, _) = webhook_sa(&objs);
    let spec = &d["spec"];
    assert_eq!(spec["replicas"], 2);
    let labels = &spec["selector"]["matchLabels"];
    assert_eq!(&spec["template"]["metadata"]["labels"], labels);
    let pod = &spec["template"]["spec"];
    assert!(
        pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
            .is_array(),
        "preferred anti-affinity: {pod}"
    );
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    // on the node's network: its pods must be deletable after the conflist is gone
    assert_eq!(pod["hostNetwork"], true, "hostNetwork: {pod}");
    assert_eq!(pod["dnsPolicy"], "ClusterFirstWithHostNet");
    let cs = pod["containers"].as_array().expect("containers");
    assert_eq!(cs.len(), 1);
    let c = &cs[0];
    // the DaemonSet's image, binaries under /usr/local/bin
    let ds = find(&objs, "DaemonSet", "meta-cni");
    assert_eq!(
        c["image"],
        ds["spec"]["template"]["spec"]["containers"][0]["image"]
    );
    assert_eq!(strings(&c["command"]), ["/usr/local/bin/meta-cni-webhook"]);
    let sc = &c["securityContext"];
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(strings(&sc["capabilities"]["drop"]), ["ALL"]);
    assert!(sc["capabilities"].get("add").is_none());
    assert!(c["resources"]["requests"]["cpu"].is_string());
    assert!(c["resources"]["requests"]["memory"].is_string());
    assert!(c["resources"]["limits"]["memory"].is_string());

    let args = strings(&c["args"]);
    assert_eq!(args.first().map(String::as_str), Some("serve"));
    assert_eq!(arg(&args, "--listen"), Some("0.0.0.0:8443"));
    assert_eq!(arg(&args, "--cert-secret"), Some(CERT_SECRET));
    assert_eq!(arg(&args, "--webhook-config-name"), Some(WEBHOOK_CONFIG));
    assert_eq!(arg(&args, "--service-name"), Some("meta-cni-webhook"));
    assert_eq!(arg(&args, "--namespace"), Some("$(POD_NAMESPACE)"));
    let env = c["env"].as_array().expect("env");
    assert!(
        env.iter().any(|e| e["name"] == "POD_NAMESPACE"
            && e["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"),
        "POD_NAMESPACE from the downward API: {env:?}"
    );
    let ports = c["ports"].as_array().expect("ports");
    assert!(
        ports
            .iter()
            .any(|p| p["name"] == "https" && p["containerPort"] == 8443),
        "{ports:?}"
    );
    for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")] {
        let h = &c[probe]["httpGet"];
        assert_eq!(h["path"], path, "{probe}");
        assert_eq!(h["scheme"], "HTTPS", "{probe}");
        assert!(h["port"] == "https" || h["port"] == 8443, "{probe}: {h}");
    }

    let pdb = find(&objs, "PodDisruptionBudget", "meta-cni-webhook");
    assert_eq!(s(&pdb["metadata"]["namespace"]), ns);
    assert_eq!(pdb["spec"]["minAvailable"], 1);
    assert_eq!(&pdb["spec"]["selector"]["matchLabels"], labels);

    let svc = find(&objs, "Service", "meta-cni-webhook");
    assert_eq!(s(&svc["metadata"]["namespace"]), ns);
    assert_eq!(&svc["spec"]["selector"], labels);
    let sp = svc["spec"]["ports"].as_array().expect("ports");
    assert!(
        sp.iter()
            .any(|p| p["port"] == 443 && (p["targetPort"] == "https" || p["targetPort"] == 8443)),
        "{sp:?}"
    );
}

#[test]
fn webhook_configuration_fails_closed_for_nads_open_for_pods_and_skips_system_namespaces() {
    let objs = bundle();
    let (_, ns, _) = webhook_sa(&objs);
    let vwc = find(&objs, "ValidatingWebhookConfiguration", WEBHOOK_CONFIG);
    let hooks = vwc["webhooks"].as_array().expect("webhooks");
    assert_eq!(hooks.len(), 2, "one for NADs, one for pods");
    let namespace = find(&objs, "Namespace", &ns);
    assert_eq!(
        s(&namespace["metadata"]["labels"]["kubernetes.io/metadata.name"]),
        ns,
        "the webhook's Namespace carries the label the selector needs on 1.20"
    );
    let mut seen = BTreeSet::new();
    for h in hooks {
        let name = s(&h["name"]);
        assert!(name.split('.').count() >= 3, "{name}: not fully qualified");
        assert_eq!(h["sideEffects"], "None", "{name}");
        assert_eq!(h["timeoutSeconds"], 5, "{name}");
        assert_eq!(strings(&h["admissionReviewVersions"]), ["v1"], "{name}");
        let svc = &h["clientConfig"]["service"];
        assert_eq!(svc["name"], "meta-cni-webhook", "{name}");
        assert_eq!(s(&svc["namespace"]), ns, "{name}");
        assert_eq!(svc["path"], "/validate", "{name}");
        assert!(svc["port"].is_null() || svc["port"] == 443, "{name}");
        assert!(
            h["clientConfig"].get("caBundle").is_none(),
            "{name}: the caBundle is the webhook's to patch"
        );
        assert!(h.get("objectSelector").is_none(), "{name}");
        // Leaves kube-system and its own namespace alone, by the namespace's name label
        // and nothing else (a namespace without labels is still validated).
        let sel = &h["namespaceSelector"];
        assert!(sel.get("matchLabels").is_none(), "{name}: {sel}");
        let exprs = sel["matchExpressions"]
            .as_array()
            .expect("matchExpressions");
        assert_eq!(exprs.len(), 1, "{name}: {sel}");
        assert_eq!(exprs[0]["key"], "kubernetes.io/metadata.name", "{name}");
        assert_eq!(exprs[0]["operator"], "NotIn", "{name}");
        let values: BTreeSet<String> = strings(&exprs[0]["values"]).into_iter().collect();
        assert_eq!(
            values,
            BTreeSet::from(["kube-system".to_string(), ns.clone()]),
            "{name}"
        );

        let rules = h["rules"].as_array().expect("rules");
        assert_eq!(rules.len(), 1, "{name}");
        let r = &rules[0];
        assert_eq!(strings(&r["apiVersions"]), ["v1"], "{name}");
        assert_eq!(r["scope"], "Namespaced", "{name}");
        let ops: BTreeSet<String> = strings(&r["operations"]).into_iter().collect();
        let resources: BTreeSet<String> = strings(&r["resources"]).into_iter().collect();
        match strings(&r["apiGroups"]).as_slice() {
            [g] if g == "k8s.cni.cncf.io" => {
                assert_eq!(h["failurePolicy"], "Fail", "{name}");
                assert_eq!(
                    resources,
                    BTreeSet::from(["network-attachment-definitions".to_string()])
                );
                assert_eq!(
                    ops,
                    ["CREATE", "UPDATE", "DELETE"]
                        .map(String::from)
                        .into_iter()
                        .collect()
                );
                seen.insert("nads");
            }
            [g] if g.is_empty() => {
                assert_eq!(h["failurePolicy"], "Ignore", "{name}");
                assert_eq!(
                    resources,
                    ["pods", "pods/status"]
                        .map(String::from)
                        .into_iter()
                        .collect()
                );
                assert_eq!(
                    ops,
                    ["CREATE", "UPDATE"].map(String::from).into_iter().collect()
                );
                seen.insert("pods");
            }
            other => panic!("{name}: unexpected apiGroups {other:?}"),
        }
    }
    assert_eq!(seen, BTreeSet::from(["nads", "pods"]));
}

/// deploy/cert-manager/ (a kustomize Component; kubectl 1.20's kustomize cannot build it,
/// so its files are read here): the same admission flags as the bundle, the certificate
/// from files instead of the Secret, the CA injected from its Certificate, and the RBAC of
/// [`API_ACCESS`] minus the Secret and the webhook configuration.
#[test]
fn cert_manager_component_matches_the_bundle() {
    let objs = bundle();
    let (d, ns, sa) = webhook_sa(&objs);
    let dir = deploy_dir().join("cert-manager");
    let k = &load_yaml(&dir.join("kustomization.yaml"))[0];
    assert_eq!(k["kind"], "Component");
    let mut comp = Vec::new();
    for r in k["resources"].as_array().into_iter().flatten() {
        comp.extend(load_yaml(&dir.join(s(r))));
    }
    let mut patches = Vec::new();
    for p in k["patches"].as_array().expect("patches") {
        let docs = load_yaml(&dir.join(s(&p["path"])));
        assert_eq!(docs.len(), 1, "{p}: one object per patch file");
        patches.extend(docs);
    }
    let patch = |kind: &str, name: &str| find(&patches, kind, name);

    // The Certificate the CA comes from, for the Service's name.
    let cert = find(&comp, "Certificate", "meta-cni-webhook");
    assert_eq!(s(&cert["metadata"]["namespace"]), ns);
    let secret = s(&cert["spec"]["secretName"]);
    assert!(
        strings(&cert["spec"]["dnsNames"]).contains(&format!("meta-cni-webhook.{ns}.svc")),
        "{cert}"
    );
    let vwc = patch("ValidatingWebhookConfiguration", WEBHOOK_CONFIG);
    assert_eq!(
        s(&vwc["metadata"]["annotations"]["cert-manager.io/inject-ca-from"]),
        format!("{ns}/meta-cni-webhook")
    );

    // The flags: the bundle's, with the certificate files for the Secret and the caBundle.
    let base: Vec<String> = strings(&d["spec"]["template"]["spec"]["containers"][0]["args"]);
    let dp = patch("Deployment", "meta-cni-webhook");
    let c = &dp["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(
        c["name"],
        d["spec"]["template"]["spec"]["containers"][0]["name"]
    );
    let args = strings(&c["args"]);
    let self_provisioned = [
        "--cert-secret",
        "--namespace",
        "--service-name",
        "--webhook-config-name",
    ];
    let keep = |a: &&String| {
        !self_provisioned
            .iter()
            .chain(&["--tls-cert-file", "--tls-private-key-file"])
            .any(|f| a.starts_with(&format!("{f}=")))
    };
    assert_eq!(
        args.iter().filter(keep).collect::<Vec<_>>(),
        base.iter().filter(keep).collect::<Vec<_>>(),
        "deploy/cert-manager/deployment-patch.yaml's flags differ from deploy/webhook.yaml's"
    );
    for f in self_provisioned {
        assert_eq!(arg(&args, f), None, "{f} in cert-manager mode");
    }
    let mount = s(&c["volumeMounts"][0]["mountPath"]);
    assert_eq!(
        arg(&args, "--tls-cert-file"),
        Some(format!("{mount}/tls.crt").as_str())
    );
    assert_eq!(
        arg(&args, "--tls-private-key-file"),
        Some(format!("{mount}/tls.key").as_str())
    );
    let vols = dp["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .expect("volumes");
    assert!(
        vols.iter()
            .any(|v| v["name"] == c["volumeMounts"][0]["name"]
                && s(&v["secret"]["secretName"]) == secret),
        "{vols:?}"
    );

    // RBAC: the Role (the Secret) goes, the ClusterRole keeps the reads only.
    for kind in ["Role", "RoleBinding"] {
        assert_eq!(
            patch(kind, "meta-cni-webhook")["$patch"],
            "delete",
            "{kind}"
        );
    }
    let mut objs2: Vec<Value> = objs
        .iter()
        .filter(|o| !matches!(s(&o["kind"]), "Role" | "RoleBinding" | "ClusterRole"))
        .cloned()
        .collect();
    let base_cr = find(&objs, "ClusterRole", "meta-cni-webhook");
    let mut cr = base_cr.clone();
    cr["rules"] = patch("ClusterRole", "meta-cni-webhook")["rules"].clone();
    objs2.push(cr);
    objs2.extend(
        objs.iter()
            .filter(|o| {
                s(&o["kind"]) == "ClusterRole" && s(&o["metadata"]["name"]) != "meta-cni-webhook"
            })
            .cloned(),
    );
    let bound = bound_grants(&objs2, &ns, &sa);
    let expected: BTreeSet<Grant> = access_grants()
        .into_iter()
        .filter(|g| g.1 != "secrets" && g.1 != "validatingwebhookconfigurations")
        .collect();
    assert_eq!(bound, expected);
}

/// Runs the webhook binary with a container's args as the kubelet would (env references
/// expanded, `POD_NAMESPACE` set), with a kubeconfig that does not exist: every flag must
/// parse, so the run gets as far as reading the kubeconfig (exit 1, the path named) rather
/// than stopping at the flags (clap: exit 2, "error: ...").
fn flags_parse(args: &[String], ns: &str) {
    let args: Vec<String> = args
        .iter()
        .map(|a| a.replace("$(POD_NAMESPACE)", ns))
        .collect();
    let kubeconfig = format!(
        "/nonexistent/meta-cni-rbac-test-{}/kubeconfig",
        std::process::id()
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_meta-cni-webhook"))
        .args(&args)
        .arg(format!("--kubeconfig={kubeconfig}"))
        .env("POD_NAMESPACE", ns)
        .env_remove("KUBECONFIG")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run meta-cni-webhook");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "meta-cni-webhook {args:?}: the flags do not parse: {stderr}"
    );
    assert!(
        stderr.contains(&kubeconfig) && !stderr.contains("Usage:"),
        "meta-cni-webhook {args:?}: {stderr}"
    );
}

#[test]
fn the_deployments_flags_are_the_binarys() {
    let objs = bundle();
    let (d, ns, _) = webhook_sa(&objs);
    let c = &d["spec"]["template"]["spec"]["containers"][0];
    flags_parse(&strings(&c["args"]), &ns);

    // The cert-manager Component's Deployment patch: its flags too.
    let dir = deploy_dir().join("cert-manager");
    let k = &load_yaml(&dir.join("kustomization.yaml"))[0];
    let mut checked = 0;
    for p in k["patches"].as_array().expect("patches") {
        for doc in load_yaml(&dir.join(s(&p["path"]))) {
            if s(&doc["kind"]) == "Deployment" {
                let c = &doc["spec"]["template"]["spec"]["containers"][0];
                flags_parse(&strings(&c["args"]), &ns);
                checked += 1;
            }
        }
    }
    assert_eq!(
        checked, 1,
        "the cert-manager Component patches the Deployment once"
    );

    // And a flag the binary does not have is told apart.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_meta-cni-webhook"))
        .args(["serve", "--no-such-flag"])
        .output()
        .expect("run meta-cni-webhook");
    assert_eq!(out.status.code(), Some(2));
}
