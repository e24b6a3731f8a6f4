//! The validating admission webhook of meta-cni: NADs and pods' network annotations.

pub mod access;
