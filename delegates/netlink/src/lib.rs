//! Namespace-bound rtnetlink handles, typed link/addr/route helpers, sysctl, and a fake client
