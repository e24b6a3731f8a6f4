//! The ipvlan delegate (filled by its issue).
