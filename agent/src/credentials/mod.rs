//! Credentials the agent makes: generated passwords and the templated keys of the
//! credentials Secret, and the DatabasePolicy password rules. Pure (no kube, no database).

pub mod password;
pub mod policy;
pub mod template;
