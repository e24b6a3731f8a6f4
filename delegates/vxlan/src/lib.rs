//! The vxlan delegate (filled by its issue).
