//! The API server as meta-ipam uses it: blocking calls on a private current-thread runtime,
//! each bounded by a timeout. After the first transport failure of an invocation the
//! client is marked offline and makes no further request (one timeout per invocation at
//! most).

use crate::crd::{IpBlock, IpPool, IpReservation, POOL_LABEL};
use crate::error::{Error, Result};
use kube::api::{Api, DeleteParams, ListParams, PostParams, Preconditions};
use std::path::Path;
use std::time::Duration;

/// The outcome of a conditional write.
#[derive(Debug)]
pub enum Write<T> {
    /// Written; the server's copy.
    Done(T),
    /// The precondition failed (409): someone else wrote first, or it already exists.
    Conflict,
    /// The object is gone (404).
    Gone,
}

/// A client with a timeout, or none when it could not be built.
pub struct Kube {
    rt: tokio::runtime::Runtime,
    client: Option<kube::Client>,
    timeout: Duration,
    offline: Option<String>,
    /// Requests made (for the audit comparison in tests and logs).
    pub requests: u32,
    /// Conditional writes of blocks refused with 409 (another writer first).
    pub conflicts: u32,
}

fn api_err(what: &str, s: &kube::core::Status) -> Error {
    if s.code == 403 || s.code == 401 {
        return Error::Api(format!(
            "{what}: API server answered {} ({}): meta-ipam's credentials need the RBAC of deploy/rbac.yaml (ippools, ipblocks, ipreservations in group ipam.meta-cni.io)",
            s.code, s.message
        ));
    }
    if s.code >= 500 || s.code == 429 {
        return Error::Unreachable(format!(
            "{what}: API server answered {}: {}",
            s.code, s.message
        ));
    }
    Error::Api(format!(
        "{what}: API server answered {}: {}",
        s.code, s.message
    ))
}

impl Kube {
    /// A client for `kubeconfig` (no request is made here). Without a kubeconfig, or with
    /// one that cannot be read, the client is offline from the start with that reason.
    pub fn new(kubeconfig: Option<&Path>, timeout: Duration) -> Result<Kube> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::Io(format!("tokio runtime: {e}")))?;
        let Some(path) = kubeconfig else {
            return Err(Error::Config(
                "no kubeconfig: set ipam.kubeconfig (or kubernetes.kubeconfig, or $KUBECONFIG)"
                    .into(),
            ));
        };
        let kc = kube::config::Kubeconfig::read_from(path)
            .map_err(|e| Error::Config(format!("kubeconfig {}: {e}", path.display())))?;
        let cfg = rt.block_on(kube::Config::from_custom_kubeconfig(
            kc,
            &kube::config::KubeConfigOptions::default(),
        ));
        let cfg = cfg.map_err(|e| Error::Config(format!("kubeconfig {}: {e}", path.display())))?;
        Kube::on_runtime(rt, cfg, timeout)
    }

    /// A client for an already loaded configuration (the node agent's: in-cluster or its
    /// kubeconfig). No request is made here. A long-lived caller makes one per pass: after
    /// a transport failure a client stays offline.
    pub fn from_config(cfg: kube::Config, timeout: Duration) -> Result<Kube> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::Io(format!("tokio runtime: {e}")))?;
        Kube::on_runtime(rt, cfg, timeout)
    }

    fn on_runtime(
        rt: tokio::runtime::Runtime,
        mut cfg: kube::Config,
        timeout: Duration,
    ) -> Result<Kube> {
        cfg.connect_timeout = Some(timeout);
        cfg.read_timeout = Some(timeout);
        cfg.write_timeout = Some(timeout);
        // The client's connections are spawned on the runtime it is first used on.
        let client = {
            let _g = rt.enter();
            kube::Client::try_from(cfg).map_err(|e| Error::Config(format!("kube client: {e}")))?
        };
        Ok(Kube {
            rt,
            client: Some(client),
            timeout,
            offline: None,
            requests: 0,
            conflicts: 0,
        })
    }

    /// Why the API server is known unreachable in this invocation, if it is.
    pub fn offline(&self) -> Option<&str> {
        self.offline.as_deref()
    }

    /// Bounds later requests by `t`.
    pub fn set_timeout(&mut self, t: Duration) {
        self.timeout = t;
    }

    fn call<T>(
        &mut self,
        what: &str,
        f: impl AsyncFnOnce(kube::Client) -> std::result::Result<T, kube::Error>,
    ) -> Result<std::result::Result<T, kube::core::Status>> {
        if let Some(why) = &self.offline {
            return Err(Error::Unreachable(why.clone()));
        }
        let client = self
            .client
            .clone()
            .ok_or_else(|| Error::Unreachable("no API client".into()))?;
        self.requests += 1;
        let t = self.timeout;
        let r = self
            .rt
            .block_on(async { tokio::time::timeout(t, f(client)).await });
        match r {
            Ok(Ok(v)) => Ok(Ok(v)),
            Ok(Err(kube::Error::Api(s))) => Ok(Err(*s)),
            Ok(Err(e)) => {
                let why = format!("API server unreachable ({what}: {e})");
                self.offline = Some(why.clone());
                Err(Error::Unreachable(why))
            }
            Err(_) => {
                let why = format!("API server unreachable ({what}: no answer within {t:?})");
                self.offline = Some(why.clone());
                Err(Error::Unreachable(why))
            }
        }
    }

    /// Creates the pool if absent; returns the server's copy.
    pub fn ensure_pool(&mut self, pool: &IpPool) -> Result<IpPool> {
        let name = pool.metadata.name.clone().unwrap_or_default();
        let p = pool.clone();
        let what = format!("create IpPool {name}");
        match self.call(&what, async move |c| {
            Api::<IpPool>::all(c)
                .create(&PostParams::default(), &p)
                .await
        })? {
            Ok(p) => Ok(p),
            Err(s) if s.code == 409 => {
                let n = name.clone();
                self.call(&format!("get IpPool {name}"), async move |c| {
                    Api::<IpPool>::all(c).get(&n).await
                })?
                .map_err(|s| api_err(&format!("get IpPool {name}"), &s))
            }
            Err(s) => Err(api_err(&what, &s)),
        }
    }

    /// The blocks of `pool`.
    pub fn list_blocks(&mut self, pool: &str) -> Result<Vec<IpBlock>> {
        let sel = format!("{POOL_LABEL}={pool}");
        let what = format!("list IpBlocks of pool {pool}");
        self.call(&what, async move |c| {
            Api::<IpBlock>::all(c)
                .list(&ListParams::default().labels(&sel))
                .await
        })?
        .map(|l| l.items)
        .map_err(|s| api_err(&what, &s))
    }

    /// Gets one block (`None` when absent).
    pub fn get_block(&mut self, name: &str) -> Result<Option<IpBlock>> {
        let n = name.to_string();
        let what = format!("get IpBlock {name}");
        match self.call(&what, async move |c| Api::<IpBlock>::all(c).get(&n).await)? {
            Ok(b) => Ok(Some(b)),
            Err(s) if s.code == 404 => Ok(None),
            Err(s) => Err(api_err(&what, &s)),
        }
    }

    /// Creates a block: the claim. `Conflict` when another node has it.
    pub fn create_block(&mut self, b: &IpBlock) -> Result<Write<IpBlock>> {
        let b = b.clone();
        let what = format!(
            "create IpBlock {}",
            b.metadata.name.as_deref().unwrap_or_default()
        );
        match self.call(&what, async move |c| {
            Api::<IpBlock>::all(c)
                .create(&PostParams::default(), &b)
                .await
        })? {
            Ok(b) => Ok(Write::Done(b)),
            Err(s) if s.code == 409 => {
                self.conflicts += 1;
                Ok(Write::Conflict)
            }
            Err(s) => Err(api_err(&what, &s)),
        }
    }

    /// Replaces a block if its resourceVersion is still the one in `b.metadata`.
    pub fn replace_block(&mut self, b: &IpBlock) -> Result<Write<IpBlock>> {
        let b = b.clone();
        let name = b.metadata.name.clone().unwrap_or_default();
        let what = format!("update IpBlock {name}");
        match self.call(&what, async move |c| {
            Api::<IpBlock>::all(c)
                .replace(&name, &PostParams::default(), &b)
                .await
        })? {
            Ok(b) => Ok(Write::Done(b)),
            Err(s) if s.code == 409 => {
                self.conflicts += 1;
                Ok(Write::Conflict)
            }
            Err(s) if s.code == 404 => Ok(Write::Gone),
            Err(s) => Err(api_err(&what, &s)),
        }
    }

    /// Deletes a block if its resourceVersion is still `rv`.
    pub fn delete_block(&mut self, name: &str, rv: &str) -> Result<Write<()>> {
        let n = name.to_string();
        let dp = DeleteParams {
            preconditions: Some(Preconditions {
                resource_version: Some(rv.to_string()),
                uid: None,
            }),
            ..DeleteParams::default()
        };
        let what = format!("delete IpBlock {name}");
        match self.call(&what, async move |c| {
            Api::<IpBlock>::all(c).delete(&n, &dp).await.map(|_| ())
        })? {
            Ok(()) => Ok(Write::Done(())),
            Err(s) if s.code == 409 => {
                self.conflicts += 1;
                Ok(Write::Conflict)
            }
            Err(s) if s.code == 404 => Ok(Write::Gone),
            Err(s) => Err(api_err(&what, &s)),
        }
    }

    /// Every pool.
    pub fn list_pools(&mut self) -> Result<Vec<IpPool>> {
        self.call("list IpPools", async |c| {
            Api::<IpPool>::all(c).list(&ListParams::default()).await
        })?
        .map(|l| l.items)
        .map_err(|s| api_err("list IpPools", &s))
    }

    /// Creates a reservation: `Conflict` when the address is reserved already.
    pub fn create_reservation(&mut self, r: &IpReservation) -> Result<Write<IpReservation>> {
        let r = r.clone();
        let what = format!(
            "create IpReservation {}",
            r.metadata.name.as_deref().unwrap_or_default()
        );
        match self.call(&what, async move |c| {
            Api::<IpReservation>::all(c)
                .create(&PostParams::default(), &r)
                .await
        })? {
            Ok(r) => Ok(Write::Done(r)),
            Err(s) if s.code == 409 => Ok(Write::Conflict),
            Err(s) if s.code == 404 => Err(Error::Api(format!(
                "{what}: API server answered 404: the IpReservation CRD is not installed (apply deploy/crds/meta-ipam.yaml), or set enable_overlapping_ranges to false"
            ))),
            Err(s) => Err(api_err(&what, &s)),
        }
    }

    /// Gets one reservation (`None` when absent).
    pub fn get_reservation(&mut self, name: &str) -> Result<Option<IpReservation>> {
        let n = name.to_string();
        let what = format!("get IpReservation {name}");
        match self.call(&what, async move |c| {
            Api::<IpReservation>::all(c).get(&n).await
        })? {
            Ok(r) => Ok(Some(r)),
            Err(s) if s.code == 404 => Ok(None),
            Err(s) => Err(api_err(&what, &s)),
        }
    }

    /// Deletes a reservation if its UID is still `uid` (`Gone` when it is absent,
    /// `Conflict` when the name now holds another object).
    pub fn delete_reservation(&mut self, name: &str, uid: &str) -> Result<Write<()>> {
        let n = name.to_string();
        let dp = DeleteParams {
            preconditions: Some(Preconditions {
                resource_version: None,
                uid: Some(uid.to_string()),
            }),
            ..DeleteParams::default()
        };
        let what = format!("delete IpReservation {name}");
        match self.call(&what, async move |c| {
            Api::<IpReservation>::all(c)
                .delete(&n, &dp)
                .await
                .map(|_| ())
        })? {
            Ok(()) => Ok(Write::Done(())),
            Err(s) if s.code == 409 => Ok(Write::Conflict),
            Err(s) if s.code == 404 => Ok(Write::Gone),
            Err(s) => Err(api_err(&what, &s)),
        }
    }

    /// Runs `f` with the client on this runtime (for the claim and reconciler code).
    pub fn raw<T>(
        &mut self,
        what: &str,
        f: impl AsyncFnOnce(kube::Client) -> std::result::Result<T, kube::Error>,
    ) -> Result<std::result::Result<T, kube::core::Status>> {
        self.call(what, f)
    }
}
