//! host-local and static compatible IPAM
