//! PostgreSQL statements and catalog comparisons.

pub mod database;
pub mod grant;
pub mod role;
pub mod rotation;
pub mod user;
