//! In-memory fake.
