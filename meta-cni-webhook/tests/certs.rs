//! Self-provisioning against a real kube-apiserver (`meta_tests::apiserver`): the Secret,
//! the caBundle, replicas racing, renewal, and rotation while a client keeps requesting
//! over TLS, verifying with the CA.

mod common;

use common::*;
use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use meta_cni_webhook::certs::{
    Bundle, CaBundle, KEY_CA_CRT, KEY_CA_KEY, KEY_TLS_CRT, KEY_TLS_KEY, ProvisionConfig,
    Provisioner, Validity, issued_by, issued_by_der,
};
use meta_cni_webhook::serve::ServeOpts;
use meta_tests::apiserver::ApiServer;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

const VWC: &str = "meta-cni-webhook";

async fn namespace(client: &kube::Client, name: &str) {
    let ns: Namespace =
        serde_json::from_value(serde_json::json!({"metadata": {"name": name}})).unwrap();
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
}

/// A ValidatingWebhookConfiguration of two webhooks for a made-up resource, failurePolicy
/// Ignore, no caBundle.
async fn webhook_config(client: &kube::Client, name: &str) {
    let hook = |n: &str| {
        serde_json::json!({
            "name": n,
            "clientConfig": {"url": "https://127.0.0.1:9/validate"},
            "rules": [{
                "apiGroups": ["example.meta-cni.io"], "apiVersions": ["v1"],
                "operations": ["CREATE"], "resources": ["widgets"],
            }],
            "failurePolicy": "Ignore",
            "sideEffects": "None",
            "admissionReviewVersions": ["v1"],
        })
    };
    let vwc: ValidatingWebhookConfiguration = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name},
        "webhooks": [hook("nads.meta-cni.io"), hook("pods.meta-cni.io")],
    }))
    .unwrap();
    Api::<ValidatingWebhookConfiguration>::all(client.clone())
        .create(&PostParams::default(), &vwc)
        .await
        .unwrap();
}

async fn ca_bundles(client: &kube::Client, name: &str) -> Vec<Option<String>> {
    let vwc = Api::<ValidatingWebhookConfiguration>::all(client.clone())
        .get(name)
        .await
        .unwrap();
    vwc.webhooks
        .unwrap_or_default()
        .into_iter()
        .map(|w| {
            w.client_config
                .ca_bundle
                .map(|b| String::from_utf8(b.0).unwrap())
        })
        .collect()
}

fn config(ns: &str, secret: &str) -> ProvisionConfig {
    ProvisionConfig {
        namespace: ns.into(),
        secret_name: secret.into(),
        service_name: "meta-cni-webhook".into(),
        webhook_config_name: Some(VWC.into()),
        extra_dns_names: vec!["localhost".into()],
        ip_addresses: vec![IpAddr::V4(Ipv4Addr::LOCALHOST)],
        validity: Duration::from_secs(3600),
        ca_validity: meta_cni_webhook::certs::CA_VALIDITY,
        check_interval: Duration::from_secs(1),
    }
}

/// Serving options of a webhook that self-provisions into Secret `webhook-certs` of `ns`
/// and the caBundle of [`VWC`], with 127.0.0.1 (and `dns`) in its certificate.
fn self_provisioning(addr: std::net::SocketAddr, ns: &str, dns: &[&str]) -> ServeOpts {
    let mut opts = ServeOpts::new(addr);
    opts.cert_secret = Some("webhook-certs".into());
    opts.namespace = Some(ns.into());
    opts.webhook_config_name = Some(VWC.into());
    opts.cert_ip_addresses = vec![IpAddr::V4(Ipv4Addr::LOCALHOST)];
    opts.cert_dns_names = dns.iter().map(|d| d.to_string()).collect();
    opts
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn provisions_the_secret_and_the_ca_bundle() {
    let api = ApiServer::start();
    runtime().block_on(async {
        let admin = meta_tests::kube::client_for(&api.admin_kubeconfig()).await;
        let ns = "webhook-system";
        namespace(&admin, ns).await;
        webhook_config(&admin, VWC).await;
        let secrets = Api::<Secret>::namespaced(admin.clone(), ns);

        // Replicas starting together converge on one bundle, round after round.
        for round in 0..4 {
            let cfg = config(ns, &format!("race-{round}"));
            let (p1, p2) = (
                Provisioner::new(admin.clone(), cfg.clone()),
                Provisioner::new(admin.clone(), cfg),
            );
            let (b1, b2) = tokio::join!(p1.ensure_secret(), p2.ensure_secret());
            let (b1, b2) = (b1.unwrap(), b2.unwrap());
            assert_eq!(b1, b2, "round {round}");
            let stored = secrets.get(&format!("race-{round}")).await.unwrap();
            assert_eq!(Bundle::from_secret(&stored).as_ref(), Some(&b1));
        }

        let cfg = config(ns, "webhook-certs");
        let prov = Provisioner::new(admin.clone(), cfg.clone());
        let bundle = prov.ensure_secret().await.unwrap();
        let secret = secrets.get("webhook-certs").await.unwrap();
        assert_eq!(secret.type_.as_deref(), Some("kubernetes.io/tls"));
        let keys: Vec<&String> = secret.data.as_ref().unwrap().keys().collect();
        assert_eq!(keys, [KEY_CA_CRT, KEY_CA_KEY, KEY_TLS_CRT, KEY_TLS_KEY]);
        let leaf = Validity::of_pem(&bundle.cert_pem).unwrap();
        let ca = Validity::of_pem(&bundle.ca_cert_pem).unwrap();
        for n in [
            "meta-cni-webhook",
            "meta-cni-webhook.webhook-system",
            "meta-cni-webhook.webhook-system.svc",
            "meta-cni-webhook.webhook-system.svc.cluster.local",
            "localhost",
        ] {
            assert!(leaf.dns_names.iter().any(|d| d == n), "{n}: {leaf:?}");
        }
        assert_eq!(leaf.ips, [IpAddr::V4(Ipv4Addr::LOCALHOST)]);
        assert_eq!(leaf.issuer, ca.subject);
        assert!(leaf.not_after > SystemTime::now() + Duration::from_secs(3000));
        assert!(ca.not_after > SystemTime::now() + Duration::from_secs(9 * 365 * 86400));
        bundle.certified_key().unwrap();

        // The caBundle of both webhooks, once.
        assert_eq!(ca_bundles(&admin, VWC).await, [None, None]);
        assert_eq!(
            prov.ensure_ca_bundle(&bundle.ca_cert_pem).await.unwrap(),
            CaBundle::Patched(2)
        );
        let want = Some(bundle.ca_cert_pem.clone());
        assert_eq!(ca_bundles(&admin, VWC).await, [want.clone(), want.clone()]);
        assert_eq!(
            prov.ensure_ca_bundle(&bundle.ca_cert_pem).await.unwrap(),
            CaBundle::UpToDate
        );
        // Nothing else of the configuration changed.
        let vwc = Api::<ValidatingWebhookConfiguration>::all(admin.clone())
            .get(VWC)
            .await
            .unwrap();
        let hooks = vwc.webhooks.unwrap();
        assert_eq!(hooks[0].failure_policy.as_deref(), Some("Ignore"));
        assert_eq!(
            hooks[1].client_config.url.as_deref(),
            Some("https://127.0.0.1:9/validate")
        );
        assert_eq!(
            hooks[1].rules.as_ref().unwrap()[0].resources.as_ref().unwrap(),
            &["widgets".to_string()]
        );
        // A caBundle overwritten by hand (kubectl apply) is written back.
        let patch = serde_json::json!({"webhooks": [
            {"name": "pods.meta-cni.io", "clientConfig": {"caBundle": k8s_openapi::ByteString(b"stale".to_vec())}}
        ]});
        Api::<ValidatingWebhookConfiguration>::all(admin.clone())
            .patch(VWC, &PatchParams::default(), &Patch::Strategic(&patch))
            .await
            .unwrap();
        assert_eq!(
            prov.ensure_ca_bundle(&bundle.ca_cert_pem).await.unwrap(),
            CaBundle::Patched(1)
        );
        assert_eq!(ca_bundles(&admin, VWC).await, [want.clone(), want.clone()]);

        // A restart takes the bundle as it is.
        let again = Provisioner::new(admin.clone(), cfg.clone())
            .ensure_secret()
            .await
            .unwrap();
        assert_eq!(again, bundle);

        // A new name: a new serving certificate from the same CA.
        let mut more = cfg.clone();
        more.extra_dns_names.push("webhook.example".into());
        let renewed = Provisioner::new(admin.clone(), more)
            .ensure_secret()
            .await
            .unwrap();
        assert_eq!(renewed.ca_cert_pem, bundle.ca_cert_pem);
        assert_eq!(renewed.ca_key_pem, bundle.ca_key_pem);
        assert_ne!(renewed.cert_pem, bundle.cert_pem);
        let leaf = Validity::of_pem(&renewed.cert_pem).unwrap();
        assert!(leaf.dns_names.iter().any(|d| d == "webhook.example"));
        assert_eq!(leaf.issuer, ca.subject);

        // A Secret of garbage (e.g. left by something else) is rewritten whole, keeping
        // its other keys.
        let junk: Secret = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "junk", "namespace": ns},
            "type": "Opaque",
            "stringData": {"tls.crt": "nope", "other": "kept"},
        }))
        .unwrap();
        secrets.create(&PostParams::default(), &junk).await.unwrap();
        let fixed = Provisioner::new(admin.clone(), config(ns, "junk"))
            .ensure_secret()
            .await
            .unwrap();
        fixed.certified_key().unwrap();
        let stored = secrets.get("junk").await.unwrap();
        assert_eq!(Bundle::from_secret(&stored), Some(fixed));
        assert_eq!(stored.type_.as_deref(), Some("Opaque"));
        assert_eq!(
            stored.data.unwrap().get("other").map(|b| b.0.clone()),
            Some(b"kept".to_vec())
        );

        // No such configuration: nothing to write, no error.
        let mut absent = cfg.clone();
        absent.webhook_config_name = Some("absent".into());
        assert_eq!(
            Provisioner::new(admin.clone(), absent)
                .ensure_ca_bundle(&bundle.ca_cert_pem)
                .await
                .unwrap(),
            CaBundle::Missing
        );
    });
}

#[test]
fn rotation_while_serving_fails_no_request() {
    let api = ApiServer::start();
    runtime().block_on(async {
        let admin = meta_tests::kube::client_for(&api.admin_kubeconfig()).await;
        let ns = "webhook-system";
        namespace(&admin, ns).await;
        webhook_config(&admin, VWC).await;
        let secrets = Api::<Secret>::namespaced(admin.clone(), ns);

        let mut opts = self_provisioning("127.0.0.1:0".parse().unwrap(), ns, &["localhost"]);
        // Renewed after about 6 s, 3 s before expiry: room for a slow machine.
        opts.cert_validity = Duration::from_secs(9);
        opts.cert_check_interval = Duration::from_millis(500);
        opts.kubeconfig = Some(api.admin_kubeconfig());
        // Two replicas sharing the Secret.
        let a = start(opts.clone(), TestHandler::new()).await;
        let b = start(opts.clone(), TestHandler::new()).await;

        // Serving once the first certificate is there.
        let ca_pem = {
            let mut found = None;
            for _ in 0..600 {
                if let Some(s) = secrets.get_opt("webhook-certs").await.unwrap() {
                    found = Bundle::from_secret(&s);
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            found.expect("the Secret was made").ca_cert_pem
        };
        let cfg = client(&ca_pem);
        let mut up = false;
        for _ in 0..600 {
            let ra = get(a.addr, cfg.clone(), "/healthz").await;
            let rb = get(b.addr, cfg.clone(), "/healthz").await;
            if ra.is_ok_and(|r| r.status == 200) && rb.is_ok_and(|r| r.status == 200) {
                up = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(up, "both replicas serve with the CA's certificate");

        let stop = Arc::new(AtomicBool::new(false));
        let mut loops = Vec::new();
        let mut seen = Vec::new();
        for addr in [a.addr, b.addr] {
            let s = Arc::new(std::sync::Mutex::new(Vec::<Vec<u8>>::new()));
            seen.push(s.clone());
            let (cfg, stop) = (cfg.clone(), stop.clone());
            loops.push(tokio::spawn(async move {
                let (mut ok, mut failures) = (0usize, Vec::new());
                let mut i = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    i += 1;
                    let body = review("Pod", "CREATE", &format!("p{i}"));
                    match post_review(addr, cfg.clone(), &body).await {
                        Ok(r) if r.status == 200 => {
                            ok += 1;
                            let mut s = s.lock().unwrap();
                            if !s.contains(&r.peer_cert) {
                                s.push(r.peer_cert);
                            }
                        }
                        Ok(r) => failures.push(format!("status {}", r.status)),
                        Err(e) => failures.push(e),
                    }
                }
                (ok, failures)
            }));
        }
        // Until each replica has served three certificates (two renewals), 90 s at most.
        let mut rotated = false;
        for _ in 0..1800 {
            if seen.iter().all(|s| s.lock().unwrap().len() >= 3) {
                rotated = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        stop.store(true, Ordering::SeqCst);
        let mut total = 0;
        for l in loops {
            let (ok, failures) = l.await.unwrap();
            assert!(
                failures.is_empty(),
                "{} failed: {failures:?}",
                failures.len()
            );
            total += ok;
        }
        assert!(
            rotated,
            "certificates seen: {:?}",
            seen.iter()
                .map(|s| s.lock().unwrap().len())
                .collect::<Vec<_>>()
        );
        assert!(total > 6, "{total} requests");

        // The CA stayed; the caBundle is it.
        let now = Bundle::from_secret(&secrets.get("webhook-certs").await.unwrap()).unwrap();
        assert_eq!(now.ca_cert_pem, ca_pem);
        assert_eq!(
            ca_bundles(&admin, VWC).await,
            [Some(ca_pem.clone()), Some(ca_pem.clone())]
        );
        // Every certificate served was one of the CA's, and the replicas served the same
        // ones: whichever renewed, the other picked it up.
        let (sa, sb) = (
            seen[0].lock().unwrap().clone(),
            seen[1].lock().unwrap().clone(),
        );
        let shared = sa.iter().filter(|c| sb.contains(c)).count();
        assert!(
            shared >= 2,
            "{} of {} / {} shared",
            shared,
            sa.len(),
            sb.len()
        );
        drop((a, b));
    });
}

/// The API server itself as the client: it calls the webhook with the caBundle the webhook
/// wrote, verifies the self-provisioned certificate (IP SAN 127.0.0.1), sends real
/// AdmissionReviews and enforces the verdicts.
#[test]
fn the_api_server_calls_the_webhook_over_tls_with_the_written_ca_bundle() {
    let api = ApiServer::start();
    runtime().block_on(async {
        let admin = meta_tests::kube::client_for(&api.admin_kubeconfig()).await;
        let ns = "webhook-system";
        namespace(&admin, ns).await;
        let guarded = "guarded";
        let ns_obj: Namespace = serde_json::from_value(serde_json::json!({
            "metadata": {"name": guarded, "labels": {"meta-cni.io/test-webhook": "on"}}
        }))
        .unwrap();
        Api::<Namespace>::all(admin.clone())
            .create(&PostParams::default(), &ns_obj)
            .await
            .unwrap();

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // ConfigMaps of the labelled namespace only; failurePolicy Fail, so that an
        // unreachable or distrusted webhook would show as an error.
        let vwc: ValidatingWebhookConfiguration = serde_json::from_value(serde_json::json!({
            "metadata": {"name": VWC},
            "webhooks": [{
                "name": "configmaps.meta-cni.io",
                "clientConfig": {"url": format!("https://127.0.0.1:{}/validate", addr.port())},
                "rules": [{
                    "apiGroups": [""], "apiVersions": ["v1"],
                    "operations": ["CREATE"], "resources": ["configmaps"],
                }],
                "namespaceSelector": {"matchLabels": {"meta-cni.io/test-webhook": "on"}},
                "failurePolicy": "Fail",
                "sideEffects": "None",
                "admissionReviewVersions": ["v1"],
                "timeoutSeconds": 10,
            }],
        }))
        .unwrap();
        Api::<ValidatingWebhookConfiguration>::all(admin.clone())
            .create(&PostParams::default(), &vwc)
            .await
            .unwrap();

        let mut opts = self_provisioning(addr, ns, &[]);
        opts.kubeconfig = Some(api.admin_kubeconfig());
        let handler = TestHandler::new();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let served = tokio::spawn(meta_cni_webhook::serve::run_on(
            listener,
            opts,
            handler,
            async move {
                let _ = rx.await;
            },
        ));

        let cms = Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(admin.clone(), guarded);
        let cm = |name: &str| -> k8s_openapi::api::core::v1::ConfigMap {
            serde_json::from_value(serde_json::json!({"metadata": {"name": name}})).unwrap()
        };
        // Until the API server has the configuration and its caBundle, a create is either
        // admitted without asking (the configuration not seen yet) or fails calling the
        // webhook (certificate not trusted yet); then the webhook's verdict holds.
        let mut last = String::new();
        let mut denied = false;
        for i in 0..300 {
            match cms
                .create(&PostParams::default(), &cm(&format!("deny-{i}")))
                .await
            {
                Err(e) if e.to_string().contains("denied the request") => {
                    let msg = e.to_string();
                    assert!(msg.contains("configmaps.meta-cni.io"), "{msg}");
                    denied = true;
                    break;
                }
                Err(e) => last = e.to_string(),
                Ok(_) => last = "admitted".into(),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(denied, "the webhook never decided; last: {last}");
        cms.create(&PostParams::default(), &cm("fine"))
            .await
            .unwrap();
        // Outside the selector nothing is asked.
        Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(admin.clone(), ns)
            .create(&PostParams::default(), &cm("deny-elsewhere"))
            .await
            .unwrap();

        let _ = tx.send(());
        let ended = tokio::time::timeout(Duration::from_secs(20), served).await;
        assert!(matches!(ended, Ok(Ok(Ok(())))), "{ended:?}");
    });
}

/// A CA rollover while serving: the client trusts what the webhook configuration's caBundle
/// said a second before each request, the way the API server learns it late, and no
/// request fails.
#[test]
fn ca_rollover_while_serving_fails_no_request_of_a_client_trusting_the_ca_bundle() {
    let api = ApiServer::start();
    runtime().block_on(async {
        let admin = meta_tests::kube::client_for(&api.admin_kubeconfig()).await;
        let ns = "webhook-system";
        namespace(&admin, ns).await;
        webhook_config(&admin, VWC).await;
        let secrets = Api::<Secret>::namespaced(admin.clone(), ns);

        let mut opts = self_provisioning("127.0.0.1:0".parse().unwrap(), ns, &["localhost"]);
        opts.cert_validity = Duration::from_secs(8);
        // Rolled over when less than 8 s are left, i.e. after about 18 s.
        opts.ca_validity = Duration::from_secs(24);
        opts.cert_check_interval = Duration::from_millis(500);
        opts.kubeconfig = Some(api.admin_kubeconfig());
        const LAG: Duration = Duration::from_secs(1);
        let a = start(opts.clone(), TestHandler::new()).await;
        let b = start(opts, TestHandler::new()).await;

        let first_ca = {
            let mut found = None;
            for _ in 0..600 {
                if let Some(s) = secrets.get_opt("webhook-certs").await.unwrap() {
                    found = Bundle::from_secret(&s);
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            found.expect("the Secret was made").ca_cert_pem
        };

        let stop = Arc::new(AtomicBool::new(false));
        let mut loops = Vec::new();
        for addr in [a.addr, b.addr] {
            let (stop, admin) = (stop.clone(), admin.clone());
            loops.push(tokio::spawn(async move {
                let (mut ok, mut failures, mut served) = (0usize, Vec::new(), Vec::new());
                // The caBundles seen, and when they were first seen.
                let mut history: Vec<(std::time::Instant, String)> = Vec::new();
                let mut i = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    i += 1;
                    if let Some(Some(now)) = ca_bundles(&admin, VWC).await.into_iter().next()
                        && history.last().map(|(_, b)| b) != Some(&now)
                    {
                        history.push((std::time::Instant::now(), now));
                    }
                    // Like the API server, which learns a new caBundle only some time after
                    // it is written: the one of a second ago.
                    let Some((_, bundle)) = history
                        .iter()
                        .rev()
                        .find(|(t, _)| t.elapsed() >= LAG)
                        .cloned()
                    else {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    };
                    let body = review("Pod", "CREATE", &format!("p{i}"));
                    match post_review(addr, client(&bundle), &body).await {
                        Ok(r) if r.status == 200 => {
                            ok += 1;
                            if !served.contains(&r.peer_cert) {
                                served.push(r.peer_cert);
                            }
                        }
                        Ok(r) => failures.push(format!("status {}", r.status)),
                        Err(e) => failures.push(e),
                    }
                }
                (ok, failures, served)
            }));
        }
        // Until the CA changed and both replicas serve certificates of the new one.
        let mut new_ca = None;
        for _ in 0..1800 {
            let now = Bundle::from_secret(&secrets.get("webhook-certs").await.unwrap()).unwrap();
            if now.ca_cert_pem != first_ca && issued_by(&now.cert_pem, &now.ca_cert_pem) {
                new_ca = Some(now.ca_cert_pem);
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let new_ca = new_ca.expect("the CA was rolled over within 90 s");
        // A few more rounds of requests under the new CA.
        tokio::time::sleep(Duration::from_secs(3)).await;
        stop.store(true, Ordering::SeqCst);
        for l in loops {
            let (ok, failures, served) = l.await.unwrap();
            assert!(
                failures.is_empty(),
                "{} failed, the first: {:?}",
                failures.len(),
                &failures[..failures.len().min(5)]
            );
            assert!(ok > 3, "{ok} requests");
            assert!(
                served.iter().any(|c| issued_by_der(c, &der_of(&first_ca))),
                "served a certificate of the first CA"
            );
            assert!(
                served.iter().any(|c| issued_by_der(c, &der_of(&new_ca))),
                "served a certificate of the new CA"
            );
        }
        // The previous CA in the Secret, both in the caBundle (the first one until it ends).
        let now = Bundle::from_secret(&secrets.get("webhook-certs").await.unwrap()).unwrap();
        assert_eq!(now.previous_ca_pem.as_deref(), Some(first_ca.as_str()));
        let bundle = ca_bundles(&admin, VWC).await[0].clone().unwrap();
        assert!(bundle.contains(&new_ca), "{bundle}");
        drop((a, b));
    });
}
