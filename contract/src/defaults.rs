//! Defaults of desired fields, defined once: the hub may leave these fields out and the agent
//! fills them in by deserializing.

pub(crate) fn yes() -> bool {
    true
}

pub(crate) fn minus_one() -> i32 {
    -1
}

pub(crate) fn is_false(b: &bool) -> bool {
    !*b
}

pub(crate) fn connect_timeout_seconds() -> u64 {
    10
}

pub(crate) fn ca_key() -> String {
    "ca.crt".into()
}

pub(crate) fn username_key() -> String {
    "username".into()
}

pub(crate) fn password_key() -> String {
    "password".into()
}

pub(crate) fn password_length() -> usize {
    32
}

pub(crate) fn any_host() -> Vec<String> {
    vec!["%".into()]
}

pub(crate) fn user_naming() -> String {
    "{{.Username}}_{{.Date}}".into()
}

pub(crate) fn s3_access_key() -> String {
    "AWS_ACCESS_KEY_ID".into()
}

pub(crate) fn s3_secret_key() -> String {
    "AWS_SECRET_ACCESS_KEY".into()
}
