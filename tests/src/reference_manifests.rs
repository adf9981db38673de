//! Manifests valid under db-provision-operator v0.14's CRD schemas, generated from those
//! schemas (read at test time from `../shared/reference/dpo-v0.14-crds`, see
//! [`crate::manifests::reference_crds_dir`]): per kind a minimal manifest (required fields
//! only), a full one (every property set), one per value of every enum, and the boundary
//! values of every bounded field (minimum/maximum, minLength/maxLength, minItems/maxItems,
//! strings matching each pattern). Each manifest respects the reference's required fields,
//! types, formats and its own `x-kubernetes-validations`; [`validate`] checks that against
//! the reference schema itself, so a generator bug cannot pass off invalid input.
//!
//! The schema subset handled is exactly what controller-gen emitted for the reference (a
//! keyword outside it is an error, never silently ignored); the CEL subset is what its
//! rules use (`has()`, `!`, `&&`, `||`, `?:`, `+`, `==`, `!=`, literals, `self.a.b`, `size()`).

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

/// One generated manifest.
#[derive(Debug, Clone)]
pub struct Generated {
    /// The manifest's kind.
    pub kind: String,
    /// What it exercises: `minimal`, `full`, or `<path> = <value> (<why>)`.
    pub case: String,
    /// The spec path it exercises (empty for minimal and full).
    pub path: String,
    /// The manifest.
    pub manifest: Value,
}

/// Why the generator could not produce manifests for a schema.
#[derive(Debug, thiserror::Error)]
pub enum GenError {
    /// A schema keyword this generator and validator do not implement.
    #[error("{path}: schema keyword `{keyword}` is not handled by the reference generator")]
    Unsupported { path: String, keyword: String },
    /// A pattern that is not a sequence of character classes.
    #[error("{path}: pattern `{pattern}` is not a sequence of character classes")]
    Pattern { path: String, pattern: String },
    /// A CEL rule outside the supported subset, or failing to evaluate.
    #[error("{path}: CEL rule `{rule}`: {message}")]
    Cel {
        path: String,
        rule: String,
        message: String,
    },
    /// No choice of the optional fields a rule names satisfies it.
    #[error("{path}: no choice of optional fields satisfies the rules {rules:?}")]
    Unsatisfiable { path: String, rules: Vec<String> },
    /// The CRD document lacks a part every CRD has.
    #[error("CRD without {0}")]
    Crd(&'static str),
}

/// Keywords of the reference schemas. Those without an effect on validity are listed too;
/// anything else is refused so that an unknown constraint is never skipped unnoticed.
const KNOWN_KEYWORDS: &[&str] = &[
    "type",
    "description",
    "properties",
    "default",
    "format",
    "required",
    "enum",
    "items",
    "minimum",
    "maximum",
    "pattern",
    "minLength",
    "maxLength",
    "minItems",
    "maxItems",
    "allOf",
    "additionalProperties",
    "x-kubernetes-validations",
];

/// Every manifest generated for one reference CRD document.
pub fn generate(crd: &Value) -> Result<Vec<Generated>, GenError> {
    let kind = crd["spec"]["names"]["kind"]
        .as_str()
        .ok_or(GenError::Crd("spec.names.kind"))?
        .to_owned();
    let group = crd["spec"]["group"]
        .as_str()
        .ok_or(GenError::Crd("spec.group"))?;
    let version = crd["spec"]["versions"][0]["name"]
        .as_str()
        .ok_or(GenError::Crd("spec.versions[0].name"))?;
    let namespaced = crd["spec"]["scope"] == "Namespaced";
    let spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
        .as_object()
        .map(|_| &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"])
        .ok_or(GenError::Crd("an openAPIV3Schema with spec"))?;

    let mut out = Vec::new();
    let mut push = |case: String, path: String, spec_value: Value| {
        let n = out.len();
        let mut metadata = json!({"name": format!("{}-{n}", kind.to_lowercase())});
        if namespaced {
            metadata["namespace"] = json!("default");
        }
        out.push(Generated {
            kind: kind.clone(),
            case,
            path,
            manifest: json!({
                "apiVersion": format!("{group}/{version}"),
                "kind": kind,
                "metadata": metadata,
                "spec": spec_value,
            }),
        });
    };

    push(
        "minimal".into(),
        String::new(),
        gen_value(spec, "spec", "spec", Mode::Minimal, None)?,
    );
    push(
        "full".into(),
        String::new(),
        gen_value(spec, "spec", "spec", Mode::Full, None)?,
    );
    let mut probes = Vec::new();
    collect_probes(spec, &mut Vec::new(), "spec", &mut probes)?;
    let mut seen = BTreeSet::new();
    for probe in probes {
        let path = display_path(&probe.segments);
        let shown = match &probe.value {
            Value::String(s) if s.chars().count() > 40 => {
                format!("<{} chars>", s.chars().count())
            }
            Value::Array(a) => format!("<{} items>", a.len()),
            v => v.to_string(),
        };
        // Each value once among everything else set (the full manifest) and once with
        // only what is required around it: rules that tie a field to its siblings (a
        // grant level to its table) bite only when the siblings are absent.
        for (mode, base) in [(Mode::Full, ""), (Mode::Minimal, ", required fields only")] {
            let value = gen_value(
                spec,
                "spec",
                "spec",
                mode,
                Some((&probe.segments, &probe.value)),
            )?;
            if seen.insert(value.to_string()) {
                push(
                    format!("{path} = {shown} ({}{base})", probe.why),
                    path.clone(),
                    value,
                );
            }
        }
    }
    Ok(out)
}

/// `spec.a[].b{}` from segments.
fn display_path(segments: &[String]) -> String {
    let mut s = String::from("spec");
    for seg in segments {
        if seg == "[]" || seg == "{}" {
            s.push_str(seg);
        } else {
            s.push('.');
            s.push_str(seg);
        }
    }
    s
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Required fields only.
    Minimal,
    /// Every property.
    Full,
}

/// A value to plant at a path (segments: property names, `[]` for the first item, `{}` for
/// the first map entry).
type Focus<'a> = Option<(&'a [String], &'a Value)>;

fn child_focus<'a>(focus: Focus<'a>, seg: &str) -> Focus<'a> {
    focus.and_then(|(rest, v)| match rest.split_first() {
        Some((head, tail)) if head == seg => Some((tail, v)),
        _ => None,
    })
}

fn schema_type(schema: &Value) -> &str {
    schema.get("type").and_then(Value::as_str).unwrap_or("")
}

fn check_keywords(schema: &Value, path: &str) -> Result<(), GenError> {
    if let Some(map) = schema.as_object() {
        for key in map.keys() {
            if !KNOWN_KEYWORDS.contains(&key.as_str()) {
                return Err(GenError::Unsupported {
                    path: path.to_owned(),
                    keyword: key.clone(),
                });
            }
        }
        if let Some(all_of) = map.get("allOf").and_then(Value::as_array) {
            for part in all_of {
                let only_enum = part
                    .as_object()
                    .is_some_and(|p| p.keys().all(|k| k == "enum"));
                if !only_enum {
                    return Err(GenError::Unsupported {
                        path: path.to_owned(),
                        keyword: "allOf (other than enums)".into(),
                    });
                }
            }
        }
    }
    Ok(())
}

/// The values an enum accepts: `enum` and every `allOf` enum (controller-gen emits one per
/// marker) must all contain a value, so the accepted set is their intersection, kept in the
/// order of the first.
fn enum_values(schema: &Value) -> Option<Vec<Value>> {
    let mut lists: Vec<&Vec<Value>> = Vec::new();
    if let Some(e) = schema.get("enum").and_then(Value::as_array) {
        lists.push(e);
    }
    if let Some(all_of) = schema.get("allOf").and_then(Value::as_array) {
        lists.extend(
            all_of
                .iter()
                .filter_map(|a| a.get("enum").and_then(Value::as_array)),
        );
    }
    let (first, rest) = lists.split_first()?;
    Some(
        first
            .iter()
            .filter(|v| rest.iter().all(|l| l.contains(v)))
            .cloned()
            .collect(),
    )
}

fn creation_rules(schema: &Value) -> Vec<(String, String)> {
    schema
        .get("x-kubernetes-validations")
        .and_then(Value::as_array)
        .map(|rules| {
            rules
                .iter()
                .filter_map(|r| {
                    let rule = r.get("rule")?.as_str()?;
                    // A rule naming oldSelf is a transition rule: the apiserver evaluates
                    // it on update only, and these manifests are created.
                    (!rule.contains("oldSelf")).then(|| {
                        (
                            rule.to_owned(),
                            r.get("message")
                                .and_then(Value::as_str)
                                .unwrap_or(rule)
                                .to_owned(),
                        )
                    })
                })
                .collect()
        })
        .unwrap_or_default()
}

fn gen_value(
    schema: &Value,
    path: &str,
    name: &str,
    mode: Mode,
    focus: Focus<'_>,
) -> Result<Value, GenError> {
    if let Some((rest, value)) = focus
        && rest.is_empty()
    {
        return Ok(value.clone());
    }
    check_keywords(schema, path)?;
    match schema_type(schema) {
        "object" => gen_object(schema, path, name, mode, focus),
        "array" => {
            let items = schema.get("items").ok_or_else(|| GenError::Unsupported {
                path: path.to_owned(),
                keyword: "array without items".into(),
            })?;
            let item_path = format!("{path}[]");
            let min = schema.get("minItems").and_then(Value::as_u64).unwrap_or(0);
            // One item even where none is required: an empty list exercises nothing.
            let count = min.max(1);
            let mut out = Vec::new();
            for i in 0..count {
                let f = if i == 0 {
                    child_focus(focus, "[]")
                } else {
                    None
                };
                out.push(gen_value(items, &item_path, name, mode, f)?);
            }
            Ok(Value::Array(out))
        }
        _ => Ok(gen_scalar(schema, path, name)?),
    }
}

fn gen_object(
    schema: &Value,
    path: &str,
    name: &str,
    mode: Mode,
    focus: Focus<'_>,
) -> Result<Value, GenError> {
    let required: BTreeSet<&str> = schema
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let mut out = Map::new();
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        for (key, child) in props {
            let f = child_focus(focus, key);
            if mode == Mode::Full || required.contains(key.as_str()) || f.is_some() {
                out.insert(
                    key.clone(),
                    gen_value(child, &format!("{path}.{key}"), key, mode, f)?,
                );
            }
        }
    }
    if let Some(ap) = schema.get("additionalProperties").filter(|a| a.is_object()) {
        let f = child_focus(focus, "{}");
        if mode == Mode::Full || f.is_some() {
            out.insert(
                map_key(name).to_owned(),
                gen_value(ap, &format!("{path}{{}}"), name, mode, f)?,
            );
        }
    }
    let rules = creation_rules(schema);
    if !rules.is_empty() {
        let keep = focus.and_then(|(rest, _)| rest.first()).map(String::as_str);
        satisfy(schema, path, mode, &rules, keep, &mut out)?;
    }
    Ok(Value::Object(out))
}

/// Adjusts which of the optional properties the rules name (`has(self.x)`) are present until
/// every rule holds, changing as few as possible and never dropping `keep`.
fn satisfy(
    schema: &Value,
    path: &str,
    mode: Mode,
    rules: &[(String, String)],
    keep: Option<&str>,
    out: &mut Map<String, Value>,
) -> Result<(), GenError> {
    let holds = |obj: &Map<String, Value>| -> Result<bool, GenError> {
        let this = Value::Object(obj.clone());
        for (rule, _) in rules {
            if !cel::holds(rule, &this).map_err(|message| GenError::Cel {
                path: path.to_owned(),
                rule: rule.clone(),
                message,
            })? {
                return Ok(false);
            }
        }
        Ok(true)
    };
    if holds(out)? {
        return Ok(());
    }
    let props = schema.get("properties").and_then(Value::as_object);
    let mut named: Vec<String> = Vec::new();
    for (rule, _) in rules {
        for name in cel::has_targets(rule) {
            if props.is_some_and(|p| p.contains_key(&name)) && !named.contains(&name) {
                named.push(name);
            }
        }
    }
    let present: u32 = named
        .iter()
        .enumerate()
        .filter(|(_, n)| out.contains_key(n.as_str()))
        .map(|(i, _)| 1 << i)
        .sum();
    let mut masks: Vec<u32> = (0..(1u32 << named.len())).collect();
    masks.sort_by_key(|m| ((m ^ present).count_ones(), *m));
    for mask in masks {
        let mut trial = out.clone();
        let mut skip = false;
        for (i, name) in named.iter().enumerate() {
            let wanted = mask & (1 << i) != 0;
            if !wanted && keep == Some(name.as_str()) {
                skip = true;
            }
            if wanted && !trial.contains_key(name) {
                let child = &schema["properties"][name];
                trial.insert(
                    name.clone(),
                    gen_value(child, &format!("{path}.{name}"), name, mode, None)?,
                );
            } else if !wanted {
                trial.remove(name);
            }
        }
        if !skip && holds(&trial)? {
            *out = trial;
            return Ok(());
        }
    }
    Err(GenError::Unsatisfiable {
        path: path.to_owned(),
        rules: rules.iter().map(|(r, _)| r.clone()).collect(),
    })
}

/// A key for a map field: what such a map holds in practice.
fn map_key(name: &str) -> &'static str {
    match name {
        "configParameters" => "work_mem",
        "labels" | "annotations" => "example.com/team",
        "roleMapping" => "app_owner",
        "settings" => "max_memory_usage",
        "data" => "DATABASE_URL",
        _ => "example",
    }
}

/// A plausible value for a free-form string field (no enum, pattern or format in the
/// reference): what its description asks for, so that the manifest means something.
fn typical_string(name: &str) -> &'static str {
    match name {
        "namespace" | "secretNamespace" => "default",
        "host" => "db.example.com",
        "interval" | "statementTimeout" | "lockWaitTimeout" | "timeout" | "readTimeout"
        | "writeTimeout" => "30s",
        "ttl" | "minAge" => "168h",
        "maxAge" => "90d",
        "schedule" => "0 2 * * *",
        "timezone" => "UTC",
        "validUntil" => "2030-01-01T00:00:00Z",
        "cert" => "tls.crt",
        "key" => "tls.key",
        "endpoint" => "https://s3.example.com",
        "prefix" | "subPath" | "backupPath" => "backups/example",
        "acknowledgeDataLoss" => "I-UNDERSTAND-DATA-LOSS",
        "managedResourceComment" => "managed by the platform team",
        "sqlMode" => "STRICT_TRANS_TABLES",
        "lcCollate" | "lcCtype" => "C",
        "version" => "1.0",
        "secretName" => "example-credentials",
        "inline" => "CREATE TABLE IF NOT EXISTS example (id int)",
        "data" => "postgres://{{ .Username }}:{{ .Password }}@{{ .Host }}/{{ .Database }}",
        "configParameters" => "64MB",
        "allowedHosts" => "%",
        "excludeChars" => "\"'",
        "region" => "us-east-1",
        _ => "example",
    }
}

fn gen_scalar(schema: &Value, path: &str, name: &str) -> Result<Value, GenError> {
    if let Some(values) = enum_values(schema) {
        let default = schema.get("default").filter(|d| values.contains(d));
        return default
            .or(values.first())
            .cloned()
            .ok_or_else(|| GenError::Unsupported {
                path: path.to_owned(),
                keyword: "enum with no value in common".into(),
            });
    }
    if let Some(default) = schema.get("default") {
        return Ok(default.clone());
    }
    match schema_type(schema) {
        "string" => {
            let min = schema.get("minLength").and_then(Value::as_u64).unwrap_or(0) as usize;
            let max = schema
                .get("maxLength")
                .and_then(Value::as_u64)
                .map(|m| m as usize);
            let mut s = if schema.get("format").and_then(Value::as_str) == Some("date-time") {
                "2030-01-01T00:00:00Z".to_owned()
            } else if let Some(p) = schema.get("pattern").and_then(Value::as_str) {
                let pattern = CharPattern::parse(p).ok_or_else(|| GenError::Pattern {
                    path: path.to_owned(),
                    pattern: p.to_owned(),
                })?;
                pattern.sample(min, max.unwrap_or(usize::MAX).max(min))
            } else {
                typical_string(name).to_owned()
            };
            // Free-form strings are padded/cut to their bounds (patterned ones are sampled
            // within them already).
            while s.chars().count() < min {
                s.push('x');
            }
            if let Some(max) = max {
                s = s.chars().take(max).collect();
            }
            Ok(Value::String(s))
        }
        "integer" | "number" => {
            let min = schema.get("minimum").and_then(Value::as_i64);
            let max = schema.get("maximum").and_then(Value::as_i64);
            let mut n = if name == "port" { 5432 } else { 1 };
            if let Some(min) = min {
                n = n.max(min);
            }
            if let Some(max) = max {
                n = n.min(max);
            }
            Ok(json!(n))
        }
        "boolean" => Ok(json!(true)),
        other => Err(GenError::Unsupported {
            path: path.to_owned(),
            keyword: format!("type `{other}`"),
        }),
    }
}

/// A value to plant at a path, and why.
struct Probe {
    segments: Vec<String>,
    value: Value,
    why: String,
}

fn collect_probes(
    schema: &Value,
    segments: &mut Vec<String>,
    path: &str,
    out: &mut Vec<Probe>,
) -> Result<(), GenError> {
    check_keywords(schema, path)?;
    let name = segments
        .iter()
        .rev()
        .find(|s| *s != "[]" && *s != "{}")
        .cloned()
        .unwrap_or_default();
    let mut probe = |value: Value, why: String| {
        out.push(Probe {
            segments: segments.clone(),
            value,
            why,
        })
    };
    if let Some(values) = enum_values(schema) {
        for v in values {
            probe(v, "enum value".into());
        }
    }
    match schema_type(schema) {
        "string" => {
            let min = schema.get("minLength").and_then(Value::as_u64);
            let max = schema.get("maxLength").and_then(Value::as_u64);
            let pattern = match schema.get("pattern").and_then(Value::as_str) {
                Some(p) => Some(CharPattern::parse(p).ok_or_else(|| GenError::Pattern {
                    path: path.to_owned(),
                    pattern: p.to_owned(),
                })?),
                None => None,
            };
            let fill = |len: usize| -> String {
                match &pattern {
                    Some(p) => p.sample(len, len),
                    None => "x".repeat(len),
                }
            };
            if let Some(min) = min {
                probe(json!(fill(min as usize)), "minLength".into());
            }
            if let Some(max) = max {
                probe(json!(fill(max as usize)), "maxLength".into());
            }
            if pattern.is_none() && enum_values(schema).is_none() && schema.get("format").is_none()
            {
                // Free text in the reference: anything goes there, so it must here too
                // (what dbprov cannot serve it refuses in status, not at admission).
                if min.is_none() {
                    probe(json!(""), "empty free text".into());
                }
                probe(
                    json!("Free text: it's \"quoted\"; -- ü ✓ \\ / % $1"),
                    "free text with quotes, punctuation and non-ASCII".into(),
                );
                if max.is_none() {
                    probe(json!("x".repeat(300)), "long free text".into());
                }
            }
            if let Some(p) = &pattern {
                let lo = min.unwrap_or(0) as usize;
                let hi = max.map(|m| m as usize).unwrap_or(usize::MAX);
                probe(json!(p.sample(lo, hi)), "shortest match of pattern".into());
                probe(
                    json!(p.extremes(lo, hi)),
                    "pattern, every class edge".into(),
                );
                if max.is_none() {
                    // An unbounded pattern accepts long values; 100 characters is beyond
                    // every identifier limit of the engines.
                    probe(json!(p.sample(100, 100)), "long match of pattern".into());
                }
            }
        }
        "integer" | "number" => {
            let fmt_bounds = match schema.get("format").and_then(Value::as_str) {
                Some("int32") => Some((i64::from(i32::MIN), i64::from(i32::MAX))),
                Some("int64") => Some((i64::MIN, i64::MAX)),
                _ => None,
            };
            match (schema.get("minimum").and_then(Value::as_i64), fmt_bounds) {
                (Some(min), _) => probe(json!(min), "minimum".into()),
                (None, Some((lo, _))) => probe(json!(lo), "lowest of the format".into()),
                _ => {}
            }
            match (schema.get("maximum").and_then(Value::as_i64), fmt_bounds) {
                (Some(max), _) => probe(json!(max), "maximum".into()),
                (None, Some((_, hi))) => probe(json!(hi), "highest of the format".into()),
                _ => {}
            }
        }
        "boolean" if enum_values(schema).is_none() => {
            probe(json!(true), "true".into());
            probe(json!(false), "false".into());
        }
        "array" => {
            let items = schema.get("items").ok_or_else(|| GenError::Unsupported {
                path: path.to_owned(),
                keyword: "array without items".into(),
            })?;
            let item_path = format!("{path}[]");
            let item = gen_value(items, &item_path, &name, Mode::Full, None)?;
            if let Some(min) = schema.get("minItems").and_then(Value::as_u64) {
                probe(json!(vec![item.clone(); min as usize]), "minItems".into());
            }
            if let Some(max) = schema.get("maxItems").and_then(Value::as_u64) {
                probe(json!(vec![item.clone(); max as usize]), "maxItems".into());
            }
            segments.push("[]".into());
            collect_probes(items, segments, &item_path, out)?;
            segments.pop();
        }
        "object" => {
            if let Some(props) = schema.get("properties").and_then(Value::as_object) {
                for (key, child) in props {
                    segments.push(key.clone());
                    collect_probes(child, segments, &format!("{path}.{key}"), out)?;
                    segments.pop();
                }
            }
            if let Some(ap) = schema.get("additionalProperties").filter(|a| a.is_object()) {
                segments.push("{}".into());
                collect_probes(ap, segments, &format!("{path}{{}}"), out)?;
                segments.pop();
            }
        }
        _ => {}
    }
    Ok(())
}

/// A pattern made of character classes with optional `*`, `+` or `?`, anchored at both ends
/// (every pattern of the reference has this shape).
#[derive(Debug, Clone)]
struct CharPattern {
    parts: Vec<(Vec<(char, char)>, Repeat)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Repeat {
    One,
    Optional,
    Many,
    AtLeastOne,
}

impl CharPattern {
    fn parse(pattern: &str) -> Option<Self> {
        let body = pattern.strip_prefix('^')?.strip_suffix('$')?;
        let mut chars = body.chars().peekable();
        let mut parts = Vec::new();
        while let Some(c) = chars.next() {
            let ranges = match c {
                '[' => {
                    let mut ranges = Vec::new();
                    loop {
                        let lo = match chars.next()? {
                            ']' => break,
                            '^' if ranges.is_empty() => return None,
                            '\\' => chars.next()?,
                            c => c,
                        };
                        if chars.peek() == Some(&'-') {
                            chars.next();
                            match chars.peek() {
                                Some(']') => {
                                    ranges.push((lo, lo));
                                    ranges.push(('-', '-'));
                                    continue;
                                }
                                _ => {
                                    let hi = chars.next()?;
                                    ranges.push((lo, hi));
                                }
                            }
                        } else {
                            ranges.push((lo, lo));
                        }
                    }
                    ranges
                }
                '\\' => {
                    let c = chars.next()?;
                    if c.is_ascii_alphanumeric() {
                        return None;
                    }
                    vec![(c, c)]
                }
                '(' | ')' | '|' | '.' | '{' | '}' | '*' | '+' | '?' | '^' | '$' => return None,
                c => vec![(c, c)],
            };
            let repeat = match chars.peek() {
                Some('*') => Repeat::Many,
                Some('+') => Repeat::AtLeastOne,
                Some('?') => Repeat::Optional,
                _ => Repeat::One,
            };
            if repeat != Repeat::One {
                chars.next();
            }
            parts.push((ranges, repeat));
        }
        Some(Self { parts })
    }

    /// The character a person would write: a lowercase letter if the class has one, else
    /// an uppercase one, else the class's first character.
    fn nice(ranges: &[(char, char)]) -> char {
        for want in ['a', 'A', '0'] {
            if ranges.iter().any(|(lo, hi)| *lo <= want && want <= *hi) {
                return want;
            }
        }
        ranges.first().map(|(lo, _)| *lo).unwrap_or('x')
    }

    fn min_len(&self) -> usize {
        self.parts
            .iter()
            .filter(|(_, r)| matches!(r, Repeat::One | Repeat::AtLeastOne))
            .count()
    }

    /// The first part that can repeat, where padding goes.
    fn repeatable(&self) -> Option<usize> {
        self.parts
            .iter()
            .position(|(_, r)| matches!(r, Repeat::Many | Repeat::AtLeastOne))
    }

    /// A match of length within `[min, max]` (as close to the pattern's own minimum as the
    /// bounds allow); when the pattern cannot reach `min`, its longest value.
    fn sample(&self, min: usize, max: usize) -> String {
        let target = min.max(self.min_len()).min(max.max(self.min_len()));
        let mut s: String = self
            .parts
            .iter()
            .filter(|(_, r)| matches!(r, Repeat::One | Repeat::AtLeastOne))
            .map(|(ranges, _)| Self::nice(ranges))
            .collect();
        if let Some(i) = self.repeatable() {
            let c = Self::nice(&self.parts[i].0);
            let at = self.parts[..i]
                .iter()
                .filter(|(_, r)| matches!(r, Repeat::One | Repeat::AtLeastOne))
                .count();
            let pad: String =
                std::iter::repeat_n(c, target.saturating_sub(s.chars().count())).collect();
            let byte = s.char_indices().nth(at).map(|(b, _)| b).unwrap_or(s.len());
            s.insert_str(byte, &pad);
        }
        s
    }

    /// A match using both ends of every range of every class (the repeatable ones repeat
    /// them all), cut or padded to the length bounds.
    fn extremes(&self, min: usize, max: usize) -> String {
        let mut s = String::new();
        for (ranges, repeat) in &self.parts {
            match repeat {
                Repeat::One | Repeat::Optional => {
                    // A single position takes the last range's upper end: the first
                    // position of an identifier then is `_` or `z`, not always `a`.
                    if let Some((_, hi)) = ranges.last() {
                        s.push(*hi);
                    }
                }
                Repeat::Many | Repeat::AtLeastOne => {
                    for (lo, hi) in ranges {
                        s.push(*lo);
                        if hi != lo {
                            s.push(*hi);
                        }
                    }
                }
            }
        }
        let len = s.chars().count();
        if len > max || len < min {
            // Keep what fits: the fixed parts first, then as many edges as allowed.
            return self.sample(min, max);
        }
        s
    }
}

/// Validates `value` against a reference schema node; the problems, each with its path.
pub fn validate(schema: &Value, value: &Value, path: &str, problems: &mut Vec<String>) {
    if let Err(e) = check_keywords(schema, path) {
        problems.push(e.to_string());
        return;
    }
    let ty = schema_type(schema);
    let type_ok = match ty {
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "integer" => value.is_i64() || value.is_u64(),
        "number" => value.is_number(),
        "boolean" => value.is_boolean(),
        "" => true,
        other => {
            problems.push(format!("{path}: unknown type {other}"));
            return;
        }
    };
    if !type_ok {
        problems.push(format!("{path}: {value} is not of type {ty}"));
        return;
    }
    if let Some(values) = enum_values(schema)
        && !values.contains(value)
    {
        problems.push(format!("{path}: {value} is not one of {values:?}"));
    }
    match value {
        Value::String(s) => {
            let len = s.chars().count() as u64;
            if let Some(min) = schema.get("minLength").and_then(Value::as_u64)
                && len < min
            {
                problems.push(format!("{path}: shorter than {min}"));
            }
            if let Some(max) = schema.get("maxLength").and_then(Value::as_u64)
                && len > max
            {
                problems.push(format!("{path}: longer than {max}"));
            }
            if let Some(p) = schema.get("pattern").and_then(Value::as_str) {
                match regex::Regex::new(p) {
                    Ok(re) if re.is_match(s) => {}
                    Ok(_) => problems.push(format!("{path}: {s:?} does not match {p}")),
                    Err(e) => problems.push(format!("{path}: pattern {p}: {e}")),
                }
            }
            match schema.get("format").and_then(Value::as_str) {
                Some("date-time") => {
                    // RFC 3339 as the apiserver's strfmt checks it (the shape; the
                    // generator only writes real dates).
                    let ok = regex::Regex::new(
                        r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2})$",
                    )
                    .is_ok_and(|re| re.is_match(s));
                    if !ok {
                        problems.push(format!("{path}: {s:?} is not an RFC 3339 date-time"));
                    }
                }
                Some(other) => problems.push(format!("{path}: string format {other} unknown")),
                None => {}
            }
        }
        Value::Number(n) => {
            let (Some(x), as_int) = (n.as_f64(), n.as_i64()) else {
                return;
            };
            if let Some(min) = schema.get("minimum").and_then(Value::as_f64)
                && x < min
            {
                problems.push(format!("{path}: {n} below minimum {min}"));
            }
            if let Some(max) = schema.get("maximum").and_then(Value::as_f64)
                && x > max
            {
                problems.push(format!("{path}: {n} above maximum {max}"));
            }
            match schema.get("format").and_then(Value::as_str) {
                Some("int32") if as_int.is_none_or(|i| i32::try_from(i).is_err()) => {
                    problems.push(format!("{path}: {n} is not an int32"));
                }
                Some("int64") if as_int.is_none() => {
                    problems.push(format!("{path}: {n} is not an int64"));
                }
                Some("int32" | "int64") | None => {}
                Some(other) => problems.push(format!("{path}: number format {other} unknown")),
            }
        }
        Value::Array(items) => {
            let len = items.len() as u64;
            if let Some(min) = schema.get("minItems").and_then(Value::as_u64)
                && len < min
            {
                problems.push(format!("{path}: fewer than {min} items"));
            }
            if let Some(max) = schema.get("maxItems").and_then(Value::as_u64)
                && len > max
            {
                problems.push(format!("{path}: more than {max} items"));
            }
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    validate(item_schema, item, &format!("{path}[{i}]"), problems);
                }
            }
        }
        Value::Object(map) => {
            for req in schema
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
            {
                if !map.contains_key(req) {
                    problems.push(format!("{path}.{req}: required"));
                }
            }
            let props = schema.get("properties").and_then(Value::as_object);
            let extra = schema.get("additionalProperties").filter(|a| a.is_object());
            for (k, v) in map {
                match (props.and_then(|p| p.get(k)), extra) {
                    (Some(child), _) => validate(child, v, &format!("{path}.{k}"), problems),
                    (None, Some(ap)) => validate(ap, v, &format!("{path}[{k}]"), problems),
                    (None, None) => problems.push(format!("{path}.{k}: not in the schema")),
                }
            }
        }
        _ => {}
    }
    for (rule, message) in creation_rules(schema) {
        match cel::holds(&rule, value) {
            Ok(true) => {}
            Ok(false) => problems.push(format!("{path}: {message} (rule {rule})")),
            Err(e) => problems.push(format!("{path}: rule {rule}: {e}")),
        }
    }
}

/// The CEL subset the reference's rules use, evaluated over JSON.
mod cel {
    use serde_json::Value;

    #[derive(Debug, Clone, PartialEq)]
    enum Tok {
        Int(i64),
        Str(String),
        Ident(String),
        Op(&'static str),
    }

    fn lex(src: &str) -> Result<Vec<Tok>, String> {
        const OPS: &[&str] = &[
            "&&", "||", "==", "!=", "!", "(", ")", ".", "?", ":", "+", ",", "[", "]",
        ];
        let mut out = Vec::new();
        let b = src.as_bytes();
        let mut i = 0;
        'outer: while i < b.len() {
            let c = b[i] as char;
            if c.is_ascii_whitespace() {
                i += 1;
                continue;
            }
            if c.is_ascii_digit() {
                let start = i;
                while i < b.len() && b[i].is_ascii_digit() {
                    i += 1;
                }
                let n = src[start..i].parse().map_err(|e| format!("{e}"))?;
                out.push(Tok::Int(n));
                continue;
            }
            if c.is_ascii_alphabetic() || c == '_' {
                let start = i;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                    i += 1;
                }
                out.push(Tok::Ident(src[start..i].to_owned()));
                continue;
            }
            if c == '\'' || c == '"' {
                let end = src[i + 1..]
                    .find(c)
                    .ok_or_else(|| "unterminated string".to_owned())?;
                let s = &src[i + 1..i + 1 + end];
                if s.contains('\\') {
                    return Err("escapes in strings are not supported".into());
                }
                out.push(Tok::Str(s.to_owned()));
                i += end + 2;
                continue;
            }
            for op in OPS {
                if src[i..].starts_with(op) {
                    out.push(Tok::Op(op));
                    i += op.len();
                    continue 'outer;
                }
            }
            return Err(format!("unexpected `{c}`"));
        }
        Ok(out)
    }

    #[derive(Debug)]
    enum Expr {
        Lit(Val),
        Select(Vec<String>),
        Has(Vec<String>),
        Size(Box<Expr>),
        Not(Box<Expr>),
        And(Box<Expr>, Box<Expr>),
        Or(Box<Expr>, Box<Expr>),
        Eq(Box<Expr>, Box<Expr>, bool),
        Add(Box<Expr>, Box<Expr>),
        In(Box<Expr>, Vec<Expr>),
        Cond(Box<Expr>, Box<Expr>, Box<Expr>),
    }

    #[derive(Debug, Clone, PartialEq)]
    enum Val {
        Bool(bool),
        Int(i64),
        Json(Value),
    }

    struct Parser {
        toks: Vec<Tok>,
        at: usize,
    }

    impl Parser {
        fn peek(&self) -> Option<&Tok> {
            self.toks.get(self.at)
        }
        fn eat(&mut self, op: &str) -> bool {
            let found = matches!(self.peek(), Some(Tok::Op(o)) if *o == op);
            if found {
                self.at += 1;
            }
            found
        }
        fn expect(&mut self, op: &str) -> Result<(), String> {
            if self.eat(op) {
                Ok(())
            } else {
                Err(format!("expected `{op}` at token {}", self.at))
            }
        }
        fn expr(&mut self) -> Result<Expr, String> {
            let c = self.or()?;
            if self.eat("?") {
                let a = self.expr()?;
                self.expect(":")?;
                let b = self.expr()?;
                return Ok(Expr::Cond(Box::new(c), Box::new(a), Box::new(b)));
            }
            Ok(c)
        }
        fn or(&mut self) -> Result<Expr, String> {
            let mut l = self.and()?;
            while self.eat("||") {
                l = Expr::Or(Box::new(l), Box::new(self.and()?));
            }
            Ok(l)
        }
        fn and(&mut self) -> Result<Expr, String> {
            let mut l = self.eq()?;
            while self.eat("&&") {
                l = Expr::And(Box::new(l), Box::new(self.eq()?));
            }
            Ok(l)
        }
        fn eq(&mut self) -> Result<Expr, String> {
            let l = self.add()?;
            if self.eat("==") {
                return Ok(Expr::Eq(Box::new(l), Box::new(self.add()?), true));
            }
            if self.eat("!=") {
                return Ok(Expr::Eq(Box::new(l), Box::new(self.add()?), false));
            }
            if self.peek() == Some(&Tok::Ident("in".into())) {
                self.at += 1;
                self.expect("[")?;
                let mut list = Vec::new();
                if !self.eat("]") {
                    loop {
                        list.push(self.expr()?);
                        if self.eat("]") {
                            break;
                        }
                        self.expect(",")?;
                    }
                }
                return Ok(Expr::In(Box::new(l), list));
            }
            Ok(l)
        }
        fn add(&mut self) -> Result<Expr, String> {
            let mut l = self.unary()?;
            while self.eat("+") {
                l = Expr::Add(Box::new(l), Box::new(self.unary()?));
            }
            Ok(l)
        }
        fn unary(&mut self) -> Result<Expr, String> {
            if self.eat("!") {
                return Ok(Expr::Not(Box::new(self.unary()?)));
            }
            self.primary()
        }
        fn select(&mut self) -> Result<Vec<String>, String> {
            match self.toks.get(self.at).cloned() {
                Some(Tok::Ident(s)) if s == "self" => self.at += 1,
                other => return Err(format!("expected `self`, found {other:?}")),
            }
            let mut path = Vec::new();
            while self.eat(".") {
                match self.toks.get(self.at).cloned() {
                    Some(Tok::Ident(f)) => {
                        self.at += 1;
                        path.push(f);
                    }
                    other => return Err(format!("expected a field, found {other:?}")),
                }
            }
            Ok(path)
        }
        fn primary(&mut self) -> Result<Expr, String> {
            match self.toks.get(self.at).cloned() {
                Some(Tok::Int(n)) => {
                    self.at += 1;
                    Ok(Expr::Lit(Val::Int(n)))
                }
                Some(Tok::Str(s)) => {
                    self.at += 1;
                    Ok(Expr::Lit(Val::Json(Value::String(s))))
                }
                Some(Tok::Op("(")) => {
                    self.at += 1;
                    let e = self.expr()?;
                    self.expect(")")?;
                    Ok(e)
                }
                Some(Tok::Ident(id)) => match id.as_str() {
                    "true" | "false" => {
                        self.at += 1;
                        Ok(Expr::Lit(Val::Bool(id == "true")))
                    }
                    "has" => {
                        self.at += 1;
                        self.expect("(")?;
                        let p = self.select()?;
                        self.expect(")")?;
                        if p.is_empty() {
                            return Err("has() needs a field".into());
                        }
                        Ok(Expr::Has(p))
                    }
                    "size" => {
                        self.at += 1;
                        self.expect("(")?;
                        let e = self.expr()?;
                        self.expect(")")?;
                        Ok(Expr::Size(Box::new(e)))
                    }
                    "self" => Ok(Expr::Select(self.select()?)),
                    other => Err(format!("`{other}` is outside the supported CEL subset")),
                },
                other => Err(format!("unexpected {other:?}")),
            }
        }
    }

    fn parse(rule: &str) -> Result<Expr, String> {
        let mut p = Parser {
            toks: lex(rule)?,
            at: 0,
        };
        let e = p.expr()?;
        if p.at != p.toks.len() {
            return Err(format!("trailing tokens from {}", p.at));
        }
        Ok(e)
    }

    fn lookup<'a>(this: &'a Value, path: &[String]) -> Result<&'a Value, String> {
        let mut v = this;
        for f in path {
            v = v.get(f).ok_or_else(|| format!("no such key: {f}"))?;
        }
        Ok(v)
    }

    fn normal(v: Val) -> Val {
        match v {
            Val::Json(Value::Bool(b)) => Val::Bool(b),
            Val::Json(Value::Number(n)) if n.is_i64() => Val::Int(n.as_i64().unwrap_or(0)),
            v => v,
        }
    }

    fn eval(e: &Expr, this: &Value) -> Result<Val, String> {
        let boolean = |e: &Expr| -> Result<bool, String> {
            match eval(e, this)? {
                Val::Bool(b) => Ok(b),
                other => Err(format!("{other:?} is not a bool")),
            }
        };
        Ok(match e {
            Expr::Lit(v) => v.clone(),
            Expr::Select(p) => normal(Val::Json(lookup(this, p)?.clone())),
            Expr::Has(p) => {
                let (last, parent) = p.split_last().ok_or("empty has()")?;
                Val::Bool(lookup(this, parent)?.get(last).is_some())
            }
            Expr::Size(inner) => match eval(inner, this)? {
                Val::Json(Value::Array(a)) => Val::Int(a.len() as i64),
                Val::Json(Value::Object(m)) => Val::Int(m.len() as i64),
                Val::Json(Value::String(s)) => Val::Int(s.chars().count() as i64),
                other => return Err(format!("size of {other:?}")),
            },
            Expr::Not(inner) => Val::Bool(!boolean(inner)?),
            // CEL's && and || are commutative over errors: a decided side wins.
            Expr::And(l, r) => match (boolean(l), boolean(r)) {
                (Ok(false), _) | (_, Ok(false)) => Val::Bool(false),
                (Ok(true), Ok(true)) => Val::Bool(true),
                (Err(e), _) | (_, Err(e)) => return Err(e),
            },
            Expr::Or(l, r) => match (boolean(l), boolean(r)) {
                (Ok(true), _) | (_, Ok(true)) => Val::Bool(true),
                (Ok(false), Ok(false)) => Val::Bool(false),
                (Err(e), _) | (_, Err(e)) => return Err(e),
            },
            Expr::Eq(l, r, want) => Val::Bool((eval(l, this)? == eval(r, this)?) == *want),
            Expr::Add(l, r) => match (eval(l, this)?, eval(r, this)?) {
                (Val::Int(a), Val::Int(b)) => Val::Int(a.checked_add(b).ok_or("overflow")?),
                (a, b) => return Err(format!("cannot add {a:?} and {b:?}")),
            },
            Expr::In(l, list) => {
                let v = eval(l, this)?;
                let mut found = false;
                for item in list {
                    found |= eval(item, this)? == v;
                }
                Val::Bool(found)
            }
            Expr::Cond(c, a, b) => {
                if boolean(c)? {
                    eval(a, this)?
                } else {
                    eval(b, this)?
                }
            }
        })
    }

    /// Whether `rule` holds for `this` (the rule's `self`).
    pub fn holds(rule: &str, this: &Value) -> Result<bool, String> {
        match eval(&parse(rule)?, this)? {
            Val::Bool(b) => Ok(b),
            other => Err(format!("the rule yields {other:?}, not a bool")),
        }
    }

    /// The direct fields of `self` a rule tests with `has()`.
    pub fn has_targets(rule: &str) -> Vec<String> {
        fn walk(e: &Expr, out: &mut Vec<String>) {
            match e {
                Expr::Has(p) if p.len() == 1 => out.push(p[0].clone()),
                Expr::Size(a) | Expr::Not(a) => walk(a, out),
                Expr::And(a, b) | Expr::Or(a, b) | Expr::Eq(a, b, _) | Expr::Add(a, b) => {
                    walk(a, out);
                    walk(b, out);
                }
                Expr::In(a, list) => {
                    walk(a, out);
                    for i in list {
                        walk(i, out);
                    }
                }
                Expr::Cond(a, b, c) => {
                    walk(a, out);
                    walk(b, out);
                    walk(c, out);
                }
                Expr::Lit(_) | Expr::Select(_) | Expr::Has(_) => {}
            }
        }
        let mut out = Vec::new();
        if let Ok(e) = parse(rule) {
            walk(&e, &mut out);
        }
        out
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use serde_json::json;

        #[test]
        fn the_reference_rule_shapes_evaluate_as_cel_does() {
            let one_of = "(has(self.inline) ? 1 : 0) + (has(self.configMapRef) ? 1 : 0) + (has(self.secretRef) ? 1 : 0) == 1";
            assert!(holds(one_of, &json!({"inline": ["x"]})).unwrap());
            assert!(!holds(one_of, &json!({})).unwrap());
            assert!(!holds(one_of, &json!({"inline": [], "secretRef": {}})).unwrap());
            let either = "has(self.userRef) || has(self.roleRef)";
            assert!(holds(either, &json!({"roleRef": {}})).unwrap());
            assert!(!holds(either, &json!({})).unwrap());
            let exclusive = "!(has(self.instanceRef) && has(self.clusterInstanceRef))";
            assert!(
                !holds(
                    exclusive,
                    &json!({"instanceRef": 1, "clusterInstanceRef": 2})
                )
                .unwrap()
            );
            assert!(holds(exclusive, &json!({"instanceRef": 1})).unwrap());
            let level = "self.level != 'column' || (has(self.columns) && size(self.columns) > 0)";
            // `>` is outside the subset: refused, not guessed.
            assert!(holds(level, &json!({"level": "column"})).is_err());
            let within = "!(self.level in ['table', 'column']) || has(self.table)";
            assert!(!holds(within, &json!({"level": "table"})).unwrap());
            assert!(holds(within, &json!({"level": "global"})).unwrap());
            assert_eq!(has_targets(one_of), ["inline", "configMapRef", "secretRef"]);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report
    use super::*;

    #[test]
    fn patterns_are_sampled_within_their_bounds() {
        let p = CharPattern::parse("^[a-zA-Z_][a-zA-Z0-9_]*$").unwrap();
        assert_eq!(p.sample(0, usize::MAX), "a");
        assert_eq!(p.sample(63, 63).len(), 63);
        assert_eq!(p.extremes(0, usize::MAX), "_azAZ09_");
        let re = regex::Regex::new("^[a-zA-Z_][a-zA-Z0-9_]*$").unwrap();
        for s in [
            p.sample(1, 1),
            p.sample(63, 63),
            p.extremes(0, 63),
            p.sample(100, 100),
        ] {
            assert!(re.is_match(&s), "{s}");
        }
        let privilege = CharPattern::parse("^[A-Z][A-Z ]*$").unwrap();
        assert_eq!(privilege.extremes(0, usize::MAX), "ZAZ ");
        assert!(CharPattern::parse("^(a|b)$").is_none());
        assert!(CharPattern::parse("^[^a]$").is_none());
    }

    #[test]
    fn the_validator_catches_each_kind_of_violation() {
        let schema = json!({
            "type": "object",
            "required": ["name"],
            "x-kubernetes-validations": [{"rule": "has(self.a) || has(self.b)", "message": "a or b"}],
            "properties": {
                "name": {"type": "string", "pattern": "^[a-z]+$", "maxLength": 3},
                "a": {"type": "integer", "format": "int32", "minimum": 1},
                "b": {"type": "array", "maxItems": 1, "items": {"type": "string", "allOf": [{"enum": ["x", "y"]}, {"enum": ["x"]}]}}
            }
        });
        let check = |v: Value| {
            let mut p = Vec::new();
            validate(&schema, &v, "spec", &mut p);
            p
        };
        assert!(check(json!({"name": "abc", "a": 1})).is_empty());
        assert_eq!(check(json!({"a": 1})), ["spec.name: required"]);
        assert_eq!(check(json!({"name": "abc"})).len(), 1, "the rule");
        assert_eq!(check(json!({"name": "abcd", "a": 1})).len(), 1, "maxLength");
        assert_eq!(check(json!({"name": "ab1", "a": 1})).len(), 1, "pattern");
        assert_eq!(check(json!({"name": "a", "a": 0})).len(), 1, "minimum");
        assert_eq!(
            check(json!({"name": "a", "a": 3_000_000_000u64})).len(),
            1,
            "int32"
        );
        assert_eq!(
            check(json!({"name": "a", "b": ["y"]})).len(),
            1,
            "allOf enum"
        );
        assert_eq!(
            check(json!({"name": "a", "b": ["x", "x"]})).len(),
            1,
            "maxItems"
        );
        assert_eq!(
            check(json!({"name": "a", "a": 1, "c": 1})).len(),
            1,
            "unknown"
        );
        let mut p = Vec::new();
        validate(
            &json!({"type": "string", "oneOf": []}),
            &json!("x"),
            "s",
            &mut p,
        );
        assert_eq!(p.len(), 1, "an unknown keyword is an error: {p:?}");
    }

    #[test]
    fn generated_manifests_satisfy_a_schema_with_rules() {
        let crd = json!({
            "spec": {"group": "g.io", "scope": "Namespaced", "names": {"kind": "Thing"},
            "versions": [{"name": "v1", "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                "spec": {
                    "type": "object",
                    "required": ["name"],
                    "x-kubernetes-validations": [
                        {"rule": "has(self.a) || has(self.b)", "message": "a or b"},
                        {"rule": "!(has(self.a) && has(self.b))", "message": "not both"}
                    ],
                    "properties": {
                        "name": {"type": "string", "pattern": "^[a-z_][a-z0-9_]*$", "maxLength": 63},
                        "a": {"type": "object", "properties": {"x": {"type": "integer", "minimum": 1, "maximum": 9}}},
                        "b": {"type": "object", "properties": {"mode": {"type": "string", "allOf": [{"enum": ["p", "q"]}, {"enum": ["p", "q"]}]}}},
                        "list": {"type": "array", "maxItems": 3, "items": {"type": "string"}},
                        "map": {"type": "object", "additionalProperties": {"type": "string"}}
                    }
                }
            }}}}]}
        });
        let generated = generate(&crd).unwrap();
        let cases: Vec<&str> = generated.iter().map(|g| g.case.as_str()).collect();
        for want in [
            "minimal",
            "full",
            "spec.b.mode = \"q\" (enum value)",
            "spec.a.x = 9 (maximum)",
            "spec.name = <63 chars> (maxLength)",
            "spec.list = <3 items> (maxItems)",
        ] {
            assert!(cases.contains(&want), "{want} missing from {cases:#?}");
        }
        let spec_schema =
            &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
        for g in &generated {
            let mut p = Vec::new();
            validate(spec_schema, &g.manifest["spec"], "spec", &mut p);
            assert!(p.is_empty(), "{}: {p:?}", g.case);
        }
        // The probe of `b` drops `a` (mutually exclusive), the minimal one adds one of them.
        let b = generated
            .iter()
            .find(|g| g.case.starts_with("spec.b.mode"))
            .unwrap();
        assert!(b.manifest["spec"].get("a").is_none());
        assert!(generated[0].manifest["spec"].get("a").is_some());
    }
}
