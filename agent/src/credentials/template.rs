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

/// The variables by name, with their values, or with a placeholder naming each variable
/// instead of its value (`redacted`).
fn context(vars: &Vars, redacted: bool) -> Context {
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
        let value = if redacted {
            format!("[redacted .{k}]")
        } else {
            v.clone()
        };
        ctx.insert(k.to_owned(), Value::String(value));
    }
    Context::from(Value::from(ctx))
}

/// The line (1-based) and column of byte `at` in `text`.
fn line_col(text: &str, at: usize) -> (usize, usize) {
    let before = &text[..at.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

/// A template with the functions dbprov offers.
fn template() -> Template {
    let mut tmpl = Template::default();
    tmpl.add_func("urlEncode", url_encode);
    tmpl.add_func("urlPathEncode", url_path_encode);
    tmpl.add_func("base64Encode", base64_encode);
    tmpl
}

/// Where rendering fails: the first action such that the template up to and including it
/// parses and fails. gtmpl's errors name no position. Only whether each render fails is
/// looked at, never its message. For a failure inside a block this is the block's `{{ end }}`.
fn failing_action(text: &str, ctx: &Context) -> Option<String> {
    let mut rest = 0;
    while let Some(open) = text[rest..].find("{{") {
        let start = rest + open;
        let close = start + text[start..].find("}}")? + 2;
        let mut prefix = template();
        if prefix.parse(&text[..close]).is_ok() && prefix.render(ctx).is_err() {
            let (line, col) = line_col(text, start);
            return Some(format!(
                "the action `{}` at line {line} column {col}",
                &text[start..close]
            ));
        }
        rest = close;
    }
    None
}

/// Renders one template. The values are used for rendering only: every error message is made
/// from the template text and a second render with placeholders in place of the values, so no
/// value can reach a message whatever the template does (`{{ lt .Password 0 }}` prints its
/// arguments).
fn render_one(
    tmpl: &Template,
    text: &str,
    real: &Context,
    redacted: &Context,
) -> Result<String, String> {
    // The real render's error is dropped unread: it may quote the values.
    if let Ok(out) = tmpl.render(real) {
        return Ok(out);
    }
    let at = failing_action(text, real).unwrap_or_else(|| "an action".into());
    Err(match tmpl.render(redacted) {
        Err(e) => format!("{at} failed: {e}"),
        // Only the real values make it fail (an index past the end, a comparison only some
        // values fail): the error would show them, so only where it is is reported.
        Ok(_) => format!(
            "{at} failed with the actual values (the error is not shown because it would contain them; check index, len and comparisons on .Password and the other variables)"
        ),
    })
}

/// Renders every template in `data`; an error names the key, the position and what is wrong,
/// and never holds a value (see [`render_one`]).
pub fn render(
    data: &BTreeMap<String, String>,
    vars: &Vars,
) -> Result<BTreeMap<String, String>, OpError> {
    let real = context(vars, false);
    let redacted = context(vars, true);
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
        let mut tmpl = template();
        // Parsing sees the template text only, no value.
        tmpl.parse(text.as_str())
            .map_err(|e| fail(format!("template does not parse: {e}")))?;
        let rendered = render_one(&tmpl, text, &real, &redacted).map_err(&fail)?;
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

    /// Values no message may contain, all distinctive.
    fn secret_vars() -> Vars {
        Vars {
            username: "usr-SECRET-u1".into(),
            password: "pw-SECRET-p1".into(),
            host: "host-SECRET-h1.example".into(),
            port: "5432".into(),
            database: "db-SECRET-d1".into(),
            ssl_mode: "require".into(),
            namespace: "ns-SECRET-n1".into(),
            name: "name-SECRET-x1".into(),
            ca: "ca-SECRET-c1".into(),
            tls_cert: "cert-SECRET-t1".into(),
            tls_key: "key-SECRET-k1".into(),
        }
    }

    #[test]
    fn failing_templates_never_show_a_value() {
        let cases = [
            // Comparison of a string with a number: gtmpl prints both arguments.
            "{{ lt .Password 0 }}",
            "{{ gt .Username .Port 1 }}",
            "{{ .Password | foo }}",
            "{{ printf \"%d\" .Password }}",
            "{{ printf \"%d %s\" .Password }}{{ lt .Password 1 }}",
            "{{ index .Password 1 }}",
            "{{ .Password.Secret }}",
            "{{ .Password 1 }}",
            "{{ call .Password }}",
            "{{ range .Password }}{{ . }}{{ end }}",
            "{{ template .Password }}",
            "{{ and .Host (lt .Database 1) }}",
            "{{ urlEncode .TLSKey .CA }}",
            "x\n  {{ .Username }}\n{{ lt .TLSKey .Namespace 3 }}",
            "{{ .Password | len | lt .Name }}",
            "{{ $x := .Password }}{{ $x.y }}",
            "{{ eq .Password 1 }}",
        ];
        for text in cases {
            let data = BTreeMap::from([("URL".to_owned(), text.to_owned())]);
            let Err(err) = render(&data, &secret_vars()) else {
                continue;
            };
            assert_eq!(err.code, ErrorCode::Invalid);
            assert!(
                err.message
                    .starts_with("spec.passwordSecret.secretTemplate.data[URL]: "),
                "{text}: {}",
                err.message
            );
            assert!(!err.message.contains("SECRET"), "{text}: {}", err.message);
        }
        // The ones the issue names fail, and say where and why.
        let msg = |text: &str| {
            let data = BTreeMap::from([("URL".to_owned(), text.to_owned())]);
            render(&data, &secret_vars()).unwrap_err().message
        };
        let lt = msg("postgres://u@h/{{ lt .Password 0 }}");
        assert!(
            lt.contains("the action `{{ lt .Password 0 }}` at line 1 column 16 failed"),
            "{lt}"
        );
        assert!(lt.contains("[redacted .Password]"), "{lt}");
        let foo = msg("{{ .Password | foo }}");
        assert!(foo.contains("foo"), "{foo}");
        let multi = msg("a\n  {{ .Username }}\n  {{ lt .TLSKey .Namespace 3 }}");
        assert!(multi.contains("at line 3 column 3"), "{multi}");
    }

    #[test]
    fn a_failure_only_the_real_values_cause_is_reported_without_them() {
        // Fails only when the password is the real one: the error would quote it.
        let data = BTreeMap::from([(
            "K".to_owned(),
            "{{ if eq .Password \"pw-SECRET-p1\" }}{{ .Password.x }}{{ end }}".to_owned(),
        )]);
        let err = render(&data, &secret_vars()).unwrap_err();
        assert!(!err.message.contains("SECRET"), "{}", err.message);
        assert!(
            err.message
                .contains("`{{ end }}` at line 1 column 54 failed with the actual values"),
            "{}",
            err.message
        );
    }

    #[test]
    fn printf_output_goes_to_the_secret_not_to_a_message() {
        // Rendering succeeds: Go's %!d(string=...) is Secret content, not an error.
        let data = BTreeMap::from([("K".to_owned(), "{{ printf \"%s\" .Password }}".to_owned())]);
        assert_eq!(render(&data, &secret_vars()).unwrap()["K"], "pw-SECRET-p1");
    }
}
