//! `secretTemplate.data`: Go-template values for the credentials Secret, compatible with
//! manifests written for db-provision-operator (`{{ .Username }}`, `{{ .Password | urlEncode }}`).

use std::collections::{BTreeMap, HashMap};

use base64::Engine as _;
use dbprov_proto::agent::v1::ErrorCode;
use gtmpl::{Context, Template};
use gtmpl_value::{FuncError, Value};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use crate::error::OpError;

/// Characters kept as-is in URL components (RFC 3986 unreserved).
const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// The variables a template can use.
#[derive(Debug, Clone, Default)]
pub struct Vars {
    /// `.Username`
    pub username: String,
    /// `.Password`
    pub password: String,
    /// `.Host`
    pub host: String,
    /// `.Port`
    pub port: String,
    /// `.Database`
    pub database: String,
    /// `.SSLMode`
    pub ssl_mode: String,
    /// `.Namespace`
    pub namespace: String,
    /// `.Name`
    pub name: String,
    /// `.CA`: the instance's CA certificate (PEM), empty without TLS material.
    pub ca: String,
    /// `.TLSCert`: the instance's client certificate (PEM), empty without one.
    pub tls_cert: String,
    /// `.TLSKey`: the instance's client key (PEM), empty without one.
    pub tls_key: String,
}

/// Whether any template uses the instance's TLS material (`.CA`, `.TLSCert`, `.TLSKey`), so
/// that its Secret is read only when needed.
pub fn uses_tls(data: &BTreeMap<String, String>) -> bool {
    data.values()
        .any(|t| t.contains(".CA") || t.contains(".TLSCert") || t.contains(".TLSKey"))
}

fn one_string(name: &str, args: &[Value]) -> Result<String, FuncError> {
    match args {
        [Value::String(s)] => Ok(s.clone()),
        [other] => Ok(other.to_string()),
        _ => Err(FuncError::ExactlyXArgs(name.into(), 1)),
    }
}

fn url_encode(args: &[Value]) -> Result<Value, FuncError> {
    // Query-component encoding as Go's url.QueryEscape does (space becomes '+').
    let s = one_string("urlEncode", args)?;
    Ok(Value::String(
        utf8_percent_encode(&s, UNRESERVED)
            .to_string()
            .replace("%20", "+"),
    ))
}

fn url_path_encode(args: &[Value]) -> Result<Value, FuncError> {
    let s = one_string("urlPathEncode", args)?;
    Ok(Value::String(
        utf8_percent_encode(&s, UNRESERVED).to_string(),
    ))
}

fn base64_encode(args: &[Value]) -> Result<Value, FuncError> {
    let s = one_string("base64Encode", args)?;
    Ok(Value::String(
        base64::engine::general_purpose::STANDARD.encode(s),
    ))
}

/// Every `{{` must be closed by a `}}` before the next `{{`. gtmpl's lexer does not return on
/// some unterminated actions, so malformed input is refused before it reaches the parser.
fn balanced(text: &str) -> Result<(), String> {
    let mut rest = text;
    while let Some(open) = rest.find("{{") {
        let after = &rest[open + 2..];
        let close = after
            .find("}}")
            .ok_or("an action `{{` is never closed with `}}`")?;
        if after[..close].contains("{{") {
            return Err("an action `{{` is opened inside another one".into());
        }
        rest = &after[close + 2..];
    }
    if rest.contains("}}") {
        return Err("`}}` without a matching `{{`".into());
    }
    Ok(())
}

/// Renders every template in `data`; an error names the key and says what is wrong.
pub fn render(
    data: &BTreeMap<String, String>,
    vars: &Vars,
) -> Result<BTreeMap<String, String>, OpError> {
    let mut ctx: HashMap<String, Value> = HashMap::new();
    for (k, v) in [
        ("Username", &vars.username),
        ("Password", &vars.password),
        ("Host", &vars.host),
        ("Port", &vars.port),
        ("Database", &vars.database),
        ("SSLMode", &vars.ssl_mode),
        ("Namespace", &vars.namespace),
        ("Name", &vars.name),
        ("CA", &vars.ca),
        ("TLSCert", &vars.tls_cert),
        ("TLSKey", &vars.tls_key),
    ] {
        ctx.insert(k.to_owned(), Value::String(v.clone()));
    }
    let context = Context::from(Value::from(ctx));
    let mut out = BTreeMap::new();
    for (key, text) in data {
        let fail = |what: String| -> OpError {
            OpError::new(
                ErrorCode::Invalid,
                format!("spec.passwordSecret.secretTemplate.data[{key}]: {what}"),
                false,
            )
        };
        if text.len() > 4096 {
            return Err(fail("template longer than 4096 bytes".into()));
        }
        balanced(text).map_err(&fail)?;
        let mut tmpl = Template::default();
        tmpl.add_func("urlEncode", url_encode);
        tmpl.add_func("urlPathEncode", url_path_encode);
        tmpl.add_func("base64Encode", base64_encode);
        tmpl.parse(text.as_str())
            .map_err(|e| fail(format!("template does not parse: {e}")))?;
        let rendered = tmpl
            .render(&context)
            .map_err(|e| fail(format!("template failed: {e}")))?;
        // An unknown field renders as "<no value>" in Go templates: refuse it instead of
        // writing a broken connection string.
        if rendered.contains("<no value>") {
            return Err(fail(
                "uses a variable that does not exist (available: .Username .Password .Host .Port .Database .SSLMode .Namespace .Name .CA .TLSCert .TLSKey)".into(),
            ));
        }
        out.insert(key.clone(), rendered);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> Vars {
        Vars {
            username: "app".into(),
            password: "p@ss w/rd:+".into(),
            host: "db.example".into(),
            port: "5432".into(),
            database: "orders".into(),
            ssl_mode: "require".into(),
            namespace: "team-a".into(),
            name: "app".into(),
            ca: "-----BEGIN CERTIFICATE-----\nCA\n-----END CERTIFICATE-----\n".into(),
            tls_cert: String::new(),
            tls_key: String::new(),
        }
    }

    #[test]
    fn tls_material_is_available_and_only_read_when_used() {
        let data = BTreeMap::from([
            ("ca.crt".to_owned(), "{{ .CA }}".to_owned()),
            (
                "client".to_owned(),
                "[{{ .TLSCert }}{{ .TLSKey }}]".to_owned(),
            ),
        ]);
        assert!(uses_tls(&data));
        let out = render(&data, &vars()).unwrap();
        assert_eq!(out["ca.crt"], vars().ca);
        // No client certificate: empty, as db-provision-operator renders it.
        assert_eq!(out["client"], "[]");
        let plain = BTreeMap::from([("u".to_owned(), "{{ .Username }}".to_owned())]);
        assert!(!uses_tls(&plain));
    }

    #[test]
    fn go_templates_render_with_the_compatibility_functions() {
        let data = BTreeMap::from([
            (
                "DATABASE_URL".to_owned(),
                "postgres://{{ .Username }}:{{ .Password | urlEncode }}@{{ .Host }}:{{ .Port }}/{{ .Database }}?sslmode={{ .SSLMode }}".to_owned(),
            ),
            ("B64".to_owned(), "{{ base64Encode .Username }}".to_owned()),
        ]);
        let out = render(&data, &vars()).unwrap();
        assert_eq!(
            out["DATABASE_URL"],
            "postgres://app:p%40ss+w%2Frd%3A%2B@db.example:5432/orders?sslmode=require"
        );
        assert_eq!(out["B64"], "YXBw");
    }

    #[test]
    fn errors_name_the_key_and_never_the_password() {
        let bad = BTreeMap::from([("URL".to_owned(), "{{ .Password ".to_owned())]);
        let err = render(&bad, &vars()).unwrap_err();
        assert!(
            err.message.contains("secretTemplate.data[URL]"),
            "{}",
            err.message
        );
        assert!(!err.message.contains("p@ss"), "{}", err.message);
        for malformed in ["{{ {{ .Username }}", "x }} y", "{{ .Username }} {{"] {
            let data = BTreeMap::from([("K".to_owned(), malformed.to_owned())]);
            let err = render(&data, &vars()).unwrap_err();
            assert!(
                err.message.contains("data[K]"),
                "{malformed}: {}",
                err.message
            );
        }
        let unknown = BTreeMap::from([("X".to_owned(), "{{ .Pasword }}".to_owned())]);
        let err = render(&unknown, &vars()).unwrap_err();
        assert!(
            err.message.contains("data[X]") && err.message.contains(".Password"),
            "{}",
            err.message
        );
    }
}
