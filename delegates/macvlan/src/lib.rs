//! The macvlan delegate (filled by its issue).
