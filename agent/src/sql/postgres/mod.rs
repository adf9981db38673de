//! PostgreSQL statements and catalog comparisons.

pub mod database;
pub mod grant;
pub mod user;
