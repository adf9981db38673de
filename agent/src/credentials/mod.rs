//! Credentials the agent makes: generated passwords and the templated keys of the
//! credentials Secret. Pure (no kube, no database).

pub mod password;
pub mod template;
