//! The meta plugin. Filled by the meta-plugin issue.
