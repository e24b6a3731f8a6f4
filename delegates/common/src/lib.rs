//! Helpers shared by the delegates.
