//! The validating admission webhook. Filled by a later issue.
