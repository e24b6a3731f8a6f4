//! The bridge delegate, compatible with the reference bridge plugin
