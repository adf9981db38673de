//! A fake Kubernetes apiserver for reconcile tests: a `tower-test` mock service behind a real
//! [`kube::Client`], answered by a task from an in-memory object store. It is not a script of
//! expected calls: any order of reads and writes works, and tests assert on the resulting
//! objects, Events and (if they must) the request log.
//!
//! Served, for any group/version/plural (namespaced or cluster-scoped, `/api/v1/...` or
//! `/apis/{group}/{version}/...`):
//! - GET of one object (404 `Status` when missing, so `Api::get_opt` gives None);
//! - LIST with equality label selectors (`a=b`, `a!=b`, `a`, `!a`) and `metadata.name` /
//!   `metadata.namespace` field selectors; no pagination (everything in one page);
//! - WATCH (`?watch=true`) as a long poll: the response is held until something in the
//!   collection changes after the given resourceVersion, then carries those events and ends
//!   (kube-rs' watcher re-watches from the last version), so a `Controller` can run against it;
//! - POST (create; `generateName`; 409 AlreadyExists), PUT (replace), DELETE (sets
//!   `deletionTimestamp` while finalizers remain, else removes);
//! - PATCH: `merge-patch+json` (RFC 7386), `strategic-merge-patch+json` and
//!   `apply-patch+yaml` (both treated as a merge; apply creates a missing object),
//!   `json-patch+json` (RFC 6902: add, remove, replace, move, copy, test; a failed `test` is
//!   422), on the object and on its `/status` subresource.
//!
//! Like the real apiserver: writes to the object keep `status`, writes to `/status` change
//! only `status`; `metadata.resourceVersion` comes from one global counter and a stale one in a
//! write is a 409 Conflict; `metadata.generation` goes up when anything but metadata and
//! status changes, and when deletion starts; an object being deleted goes away when its last
//! finalizer is removed. Not served: admission/validation (CRD schemas are not checked),
//! server-side apply field ownership, pagination, bookmarks, `deletecollection`, dry runs.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
};

use http::{Method, Request, Response, StatusCode};
use kube::client::Body;
use serde_json::{Value, json};

type Respond = tower_test::mock::SendResponse<Response<Body>>;

/// The fake apiserver's state; cheap to clone (all clones share it).
#[derive(Clone, Default)]
pub struct FakeApiServer {
    state: Arc<Mutex<State>>,
}

impl std::fmt::Debug for FakeApiServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.lock();
        f.debug_struct("FakeApiServer")
            .field("objects", &s.objects.keys().collect::<Vec<_>>())
            .field("requests", &s.requests.len())
            .finish_non_exhaustive()
    }
}

/// One request as the fake apiserver saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    /// HTTP method.
    pub method: Method,
    /// Path without the query.
    pub path: String,
    /// The query string, if any.
    pub query: Option<String>,
    /// The Content-Type header, if any (tells merge, JSON and apply patches apart).
    pub content_type: Option<String>,
}

#[derive(Default)]
struct State {
    /// Objects by path (`/apis/g/v/namespaces/ns/plural/name` or `/apis/g/v/plural/name`).
    objects: BTreeMap<String, Value>,
    resource_version: u64,
    changes: Vec<Change>,
    requests: Vec<Recorded>,
    events: Vec<Value>,
    failures: Vec<Failure>,
    watchers: Vec<Watcher>,
}

struct Failure {
    method: Option<Method>,
    path: String,
    remaining: usize,
    code: u16,
}

#[derive(Clone)]
struct Change {
    resource_version: u64,
    key: Key,
    type_: &'static str,
    object: Value,
}

struct Watcher {
    collection: Key,
    filter: Filter,
    after: u64,
    respond: Respond,
}

/// Where an object lives, parsed from a path.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Key {
    /// `/api/v1` or `/apis/{group}/{version}`.
    prefix: String,
    namespace: Option<String>,
    plural: String,
    name: Option<String>,
}

impl Key {
    fn path(&self) -> String {
        let mut p = self.prefix.clone();
        if let Some(ns) = &self.namespace {
            p.push_str("/namespaces/");
            p.push_str(ns);
        }
        p.push('/');
        p.push_str(&self.plural);
        if let Some(name) = &self.name {
            p.push('/');
            p.push_str(name);
        }
        p
    }

    /// Whether the object at `object` belongs to this collection.
    fn contains(&self, object: &Key) -> bool {
        self.prefix == object.prefix
            && self.plural == object.plural
            && (self.namespace.is_none() || self.namespace == object.namespace)
    }

    fn with_name(&self, name: &str) -> Key {
        Key {
            name: Some(name.to_owned()),
            ..self.clone()
        }
    }
}

/// Parses `/api/v1/...` and `/apis/g/v/...` into the object or collection and a subresource.
fn parse_path(path: &str) -> Option<(Key, Option<String>)> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (prefix, rest) = match segments.as_slice() {
        ["api", v, rest @ ..] => (format!("/api/{v}"), rest),
        ["apis", g, v, rest @ ..] => (format!("/apis/{g}/{v}"), rest),
        _ => return None,
    };
    let (namespace, rest) = if rest.len() >= 3 && rest[0] == "namespaces" {
        (Some(rest[1].to_owned()), &rest[2..])
    } else {
        (None, rest)
    };
    let (plural, name, sub) = match rest {
        [plural] => (*plural, None, None),
        [plural, name] => (*plural, Some(*name), None),
        [plural, name, sub] => (*plural, Some(*name), Some((*sub).to_owned())),
        _ => return None,
    };
    Some((
        Key {
            prefix,
            namespace,
            plural: plural.to_owned(),
            name: name.map(str::to_owned),
        },
        sub,
    ))
}

/// Label and field selectors of a list or watch.
#[derive(Debug, Clone, Default)]
struct Filter {
    labels: Vec<(String, Option<String>, bool)>,
    fields: Vec<(String, String, bool)>,
}

impl Filter {
    fn parse(query: &BTreeMap<String, String>) -> Filter {
        let mut f = Filter::default();
        for term in query
            .get("labelSelector")
            .map(String::as_str)
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
        {
            if let Some((k, v)) = term.split_once("!=") {
                f.labels.push((k.into(), Some(v.into()), false));
            } else if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
                f.labels.push((k.into(), Some(v.into()), true));
            } else if let Some(k) = term.strip_prefix('!') {
                f.labels.push((k.into(), None, false));
            } else {
                f.labels.push((term.into(), None, true));
            }
        }
        for term in query
            .get("fieldSelector")
            .map(String::as_str)
            .unwrap_or_default()
            .split(',')
            .filter(|t| !t.is_empty())
        {
            if let Some((k, v)) = term.split_once("!=") {
                f.fields.push((k.into(), v.into(), false));
            } else if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
                f.fields.push((k.into(), v.into(), true));
            }
        }
        f
    }

    fn matches(&self, obj: &Value) -> bool {
        let labels = &obj["metadata"]["labels"];
        let labels_ok = self.labels.iter().all(|(k, v, eq)| {
            let actual = labels[k.as_str()].as_str();
            match v {
                Some(v) => (actual == Some(v.as_str())) == *eq,
                None => actual.is_some() == *eq,
            }
        });
        let fields_ok = self.fields.iter().all(|(k, v, eq)| {
            let pointer = format!("/{}", k.replace('.', "/"));
            let actual = obj.pointer(&pointer).and_then(Value::as_str).unwrap_or("");
            (actual == v) == *eq
        });
        labels_ok && fields_ok
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse_query(query: Option<&str>) -> BTreeMap<String, String> {
    query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn now() -> Value {
    serde_json::to_value(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        k8s_openapi::jiff::Timestamp::now(),
    ))
    .unwrap_or(Value::Null)
}

fn respond_json(code: StatusCode, body: &Value) -> Response<Body> {
    let mut response = Response::new(Body::from(body.to_string().into_bytes()));
    *response.status_mut() = code;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

/// A `Status` failure, as the apiserver sends it.
fn status_error(code: u16, message: &str) -> Response<Body> {
    status_error_with(code, None, message)
}

fn status_error_with(code: u16, reason: Option<&str>, message: &str) -> Response<Body> {
    let reason = reason.unwrap_or(match code {
        400 => "BadRequest",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "NotFound",
        405 => "MethodNotAllowed",
        409 => "Conflict",
        410 => "Expired",
        422 => "Invalid",
        429 => "TooManyRequests",
        503 => "ServiceUnavailable",
        504 => "Timeout",
        _ => "InternalError",
    });
    respond_json(
        StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        &json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": reason,
            "code": code,
        }),
    )
}

/// Everything but metadata and status: what moves `metadata.generation`.
fn spec_part(obj: &Value) -> Value {
    let mut v = obj.clone();
    if let Some(o) = v.as_object_mut() {
        o.remove("metadata");
        o.remove("status");
    }
    v
}

fn finalizers_empty(obj: &Value) -> bool {
    obj["metadata"]["finalizers"]
        .as_array()
        .is_none_or(Vec::is_empty)
}

impl FakeApiServer {
    /// A client talking to a new, empty fake apiserver (default namespace `default`). Must be
    /// called inside a Tokio runtime: the server is a task of it.
    pub fn new() -> (kube::Client, FakeApiServer) {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let server = FakeApiServer::default();
        let serving = server.clone();
        tokio::spawn(async move {
            while let Some((request, respond)) = handle.next_request().await {
                let (parts, body) = request.into_parts();
                let body = body.collect_bytes().await.unwrap_or_default();
                serving.serve(&parts, &body, respond);
            }
        });
        (kube::Client::new(service, "default"), server)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The path of `K`'s object `name` in namespace `ns` (`""` for cluster-scoped kinds).
    pub fn path_of<K: kube::Resource<DynamicType = ()>>(ns: &str, name: &str) -> String {
        let ns = (!ns.is_empty()).then_some(ns);
        format!("{}/{name}", K::url_path(&(), ns))
    }

    /// Stores `obj` as if created (or replaced) through the API: fills in a uid, a
    /// creationTimestamp and generation 1 if missing, and a new resourceVersion. The object's
    /// status, finalizers and deletionTimestamp are stored as given (this is how tests set
    /// up a status or an object being deleted). Watchers see it.
    pub fn insert<K>(&self, obj: &K)
    where
        K: kube::Resource<DynamicType = ()> + serde::Serialize,
    {
        let ns = obj.meta().namespace.clone().unwrap_or_default();
        let name = obj.meta().name.clone().unwrap_or_default();
        let mut value = serde_json::to_value(obj).unwrap_or(Value::Null);
        if value["apiVersion"].is_null() {
            value["apiVersion"] = json!(K::api_version(&()));
        }
        if value["kind"].is_null() {
            value["kind"] = json!(K::kind(&()));
        }
        self.insert_value(&Self::path_of::<K>(&ns, &name), value);
    }

    /// Stores a raw object at `path` (see [`Self::insert`]).
    pub fn insert_value(&self, path: &str, mut value: Value) {
        let Some((key, _)) = parse_path(path) else {
            return;
        };
        let meta = &mut value["metadata"];
        if meta["uid"].is_null() {
            meta["uid"] = json!(uuid::Uuid::new_v4().to_string());
        }
        if meta["creationTimestamp"].is_null() {
            meta["creationTimestamp"] = now();
        }
        if meta["generation"].is_null() {
            meta["generation"] = json!(1);
        }
        let mut state = self.lock();
        let type_ = if state.objects.contains_key(path) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        state.write(&key, value, type_);
    }

    /// The stored object, if any (`ns` `""` for cluster-scoped kinds).
    pub fn get<K>(&self, ns: &str, name: &str) -> Option<K>
    where
        K: kube::Resource<DynamicType = ()> + serde::de::DeserializeOwned,
    {
        self.get_value(&Self::path_of::<K>(ns, name))
            .and_then(|v| serde_json::from_value(v).ok())
    }

    /// The stored object at `path`, as JSON.
    pub fn get_value(&self, path: &str) -> Option<Value> {
        self.lock().objects.get(path).cloned()
    }

    /// Paths of every stored object.
    pub fn paths(&self) -> Vec<String> {
        self.lock().objects.keys().cloned().collect()
    }

    /// Every Event written (created or patched, in order), as the apiserver received it: the
    /// `events.k8s.io/v1` object with `reason`, `note`, `type`, `regarding`, `series`.
    pub fn events(&self) -> Vec<Value> {
        self.lock().events.clone()
    }

    /// `reason`s of [`Self::events`], in order.
    pub fn event_reasons(&self) -> Vec<String> {
        self.events()
            .iter()
            .map(|e| e["reason"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    /// Every request received, in order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.lock().requests.clone()
    }

    /// How many requests with `method` went to exactly `path` (query ignored).
    pub fn count(&self, method: &Method, path: &str) -> usize {
        self.lock()
            .requests
            .iter()
            .filter(|r| r.method == method && r.path == path)
            .count()
    }

    /// Forgets the request and Event logs (e.g. after setting up).
    pub fn clear_logs(&self) {
        let mut s = self.lock();
        s.requests.clear();
        s.events.clear();
    }

    /// Makes the next `times` requests to exactly `path` (query ignored; with `method` only
    /// those of that method) fail with HTTP `code` and a `Status` body.
    pub fn fail_next(&self, method: Option<Method>, path: &str, times: usize, code: u16) {
        self.lock().failures.push(Failure {
            method,
            path: path.to_owned(),
            remaining: times,
            code,
        });
    }

    fn serve(&self, parts: &http::request::Parts, body: &[u8], respond: Respond) {
        let path = parts.uri.path().to_owned();
        let query = parts.uri.query().map(str::to_owned);
        let content_type = parts
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let mut state = self.lock();
        state.requests.push(Recorded {
            method: parts.method.clone(),
            path: path.clone(),
            query: query.clone(),
            content_type: content_type.clone(),
        });
        if let Some(f) = state.failures.iter_mut().find(|f| {
            f.remaining > 0
                && f.path == path
                && f.method.as_ref().is_none_or(|m| *m == parts.method)
        }) {
            f.remaining -= 1;
            let code = f.code;
            respond.send_response(status_error(code, "injected failure"));
            return;
        }
        let query = parse_query(query.as_deref());
        let Some((key, sub)) = parse_path(&path) else {
            respond.send_response(status_error(404, &format!("no route for {path}")));
            return;
        };
        let body: Value = if body.is_empty() {
            Value::Null
        } else {
            match serde_json::from_slice(body) {
                Ok(v) => v,
                Err(e) => {
                    respond.send_response(status_error(400, &format!("body: {e}")));
                    return;
                }
            }
        };
        let method = &parts.method;
        let named = key.name.is_some();
        let response = if *method == Method::GET && named {
            state.get(&key)
        } else if *method == Method::GET {
            if query.get("watch").is_some_and(|w| w == "true" || w == "1") {
                state.watch(key, &query, respond);
                return;
            }
            state.list(&key, &query)
        } else if *method == Method::POST && !named {
            state.create(&key, body)
        } else if *method == Method::PUT && named {
            state.replace(&key, sub.as_deref(), body)
        } else if *method == Method::PATCH && named {
            state.patch(&key, sub.as_deref(), content_type.as_deref(), body)
        } else if *method == Method::DELETE && named {
            state.delete(&key)
        } else {
            status_error(405, &format!("{method} {path} is not served by the fake"))
        };
        respond.send_response(response);
    }
}

impl State {
    fn get(&self, key: &Key) -> Response<Body> {
        match self.objects.get(&key.path()) {
            Some(obj) => respond_json(StatusCode::OK, obj),
            None => not_found(key),
        }
    }

    fn list(&self, collection: &Key, query: &BTreeMap<String, String>) -> Response<Body> {
        let filter = Filter::parse(query);
        let items: Vec<Value> = self
            .objects
            .iter()
            .filter(|(path, obj)| {
                parse_path(path).is_some_and(|(k, _)| collection.contains(&k))
                    && filter.matches(obj)
            })
            .map(|(_, obj)| obj.clone())
            .collect();
        let kind = items
            .first()
            .and_then(|i| i["kind"].as_str())
            .map_or_else(|| "List".to_owned(), |k| format!("{k}List"));
        let api_version = collection
            .prefix
            .trim_start_matches("/apis/")
            .trim_start_matches("/api/")
            .to_owned();
        respond_json(
            StatusCode::OK,
            &json!({
                "kind": kind,
                "apiVersion": api_version,
                "metadata": {"resourceVersion": self.resource_version.to_string()},
                "items": items,
            }),
        )
    }

    fn watch(&mut self, collection: Key, query: &BTreeMap<String, String>, respond: Respond) {
        let filter = Filter::parse(query);
        let from: u64 = query
            .get("resourceVersion")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        if from == 0 {
            // "Any version": the current objects, as ADDED.
            let lines: Vec<Value> = self
                .objects
                .iter()
                .filter(|(path, obj)| {
                    parse_path(path).is_some_and(|(k, _)| collection.contains(&k))
                        && filter.matches(obj)
                })
                .map(|(_, obj)| json!({"type": "ADDED", "object": obj}))
                .collect();
            if !lines.is_empty() {
                respond.send_response(watch_body(&lines));
                return;
            }
        }
        let watcher = Watcher {
            collection,
            filter,
            after: if from == 0 {
                self.resource_version
            } else {
                from
            },
            respond,
        };
        if let Some(w) = self.answer(watcher) {
            self.watchers.push(w);
        }
    }

    /// Answers a watcher if something it waits for happened; gives it back otherwise.
    fn answer(&self, w: Watcher) -> Option<Watcher> {
        let lines: Vec<Value> = self
            .changes
            .iter()
            .filter(|c| {
                c.resource_version > w.after
                    && w.collection.contains(&c.key)
                    && w.filter.matches(&c.object)
            })
            .map(|c| json!({"type": c.type_, "object": c.object}))
            .collect();
        if lines.is_empty() {
            return Some(w);
        }
        w.respond.send_response(watch_body(&lines));
        None
    }

    fn notify(&mut self) {
        let watchers = std::mem::take(&mut self.watchers);
        for w in watchers {
            if let Some(w) = self.answer(w) {
                self.watchers.push(w);
            }
        }
    }

    /// Stores `obj` at `key` with a new resourceVersion (removing it if it is being deleted
    /// and has no finalizers left) and tells watchers.
    fn write(&mut self, key: &Key, mut obj: Value, type_: &'static str) -> Value {
        self.resource_version += 1;
        let rv = self.resource_version;
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        let path = key.path();
        let gone = !obj["metadata"]["deletionTimestamp"].is_null() && finalizers_empty(&obj);
        let type_ = if gone {
            self.objects.remove(&path);
            "DELETED"
        } else {
            self.objects.insert(path, obj.clone());
            type_
        };
        if key.plural == "events" {
            self.events.push(obj.clone());
        }
        self.changes.push(Change {
            resource_version: rv,
            key: key.clone(),
            type_,
            object: obj.clone(),
        });
        self.notify();
        obj
    }

    fn create(&mut self, collection: &Key, mut obj: Value) -> Response<Body> {
        if !obj.is_object() {
            return status_error(400, "body is not an object");
        }
        let name = match obj["metadata"]["name"].as_str() {
            Some(n) if !n.is_empty() => n.to_owned(),
            _ => match obj["metadata"]["generateName"].as_str() {
                Some(prefix) => format!(
                    "{prefix}{}",
                    &uuid::Uuid::new_v4().simple().to_string()[..5]
                ),
                None => return status_error(422, "metadata.name or generateName is required"),
            },
        };
        let key = collection.with_name(&name);
        if self.objects.contains_key(&key.path()) {
            return status_error_with(
                409,
                Some("AlreadyExists"),
                &format!("{} \"{name}\" already exists", key.plural),
            );
        }
        let meta = &mut obj["metadata"];
        meta["name"] = json!(name);
        if let Some(ns) = &collection.namespace {
            meta["namespace"] = json!(ns);
        }
        meta["uid"] = json!(uuid::Uuid::new_v4().to_string());
        meta["creationTimestamp"] = now();
        meta["generation"] = json!(1);
        if let Some(m) = meta.as_object_mut() {
            m.remove("resourceVersion");
            m.remove("deletionTimestamp");
        }
        let stored = self.write(&key, obj, "ADDED");
        respond_json(StatusCode::CREATED, &stored)
    }

    /// Applies the rules of a write to an existing object: `/status` changes only status,
    /// the object keeps its status; identity and deletion fields stay; generation follows
    /// the spec.
    fn updated(current: &Value, mut new: Value, sub: Option<&str>) -> Value {
        if sub == Some("status") {
            let mut obj = current.clone();
            obj["status"] = new["status"].take();
            if obj["status"].is_null()
                && let Some(o) = obj.as_object_mut()
            {
                o.remove("status");
            }
            return obj;
        }
        match current.get("status") {
            Some(s) => new["status"] = s.clone(),
            None => {
                if let Some(o) = new.as_object_mut() {
                    o.remove("status");
                }
            }
        }
        for field in [
            "name",
            "namespace",
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "generation",
        ] {
            match current["metadata"].get(field) {
                Some(v) => new["metadata"][field] = v.clone(),
                None => {
                    if let Some(m) = new["metadata"].as_object_mut() {
                        m.remove(field);
                    }
                }
            }
        }
        if spec_part(&new) != spec_part(current) {
            let g = current["metadata"]["generation"].as_i64().unwrap_or(0);
            new["metadata"]["generation"] = json!(g + 1);
        }
        new
    }

    fn stale(current: &Value, body: &Value) -> bool {
        match body["metadata"]["resourceVersion"].as_str() {
            Some(rv) => current["metadata"]["resourceVersion"].as_str() != Some(rv),
            None => false,
        }
    }

    fn replace(&mut self, key: &Key, sub: Option<&str>, body: Value) -> Response<Body> {
        let Some(current) = self.objects.get(&key.path()).cloned() else {
            return not_found(key);
        };
        if Self::stale(&current, &body) {
            return conflict(key);
        }
        let new = Self::updated(&current, body, sub);
        let stored = self.write(key, new, "MODIFIED");
        respond_json(StatusCode::OK, &stored)
    }

    fn patch(
        &mut self,
        key: &Key,
        sub: Option<&str>,
        content_type: Option<&str>,
        patch: Value,
    ) -> Response<Body> {
        let content_type = content_type.unwrap_or_default();
        let Some(current) = self.objects.get(&key.path()).cloned() else {
            if content_type.starts_with("application/apply-patch") {
                let mut collection = key.clone();
                collection.name = None;
                let mut obj = patch;
                obj["metadata"]["name"] = json!(key.name);
                return self.create(&collection, obj);
            }
            return not_found(key);
        };
        let mut doc = current.clone();
        if content_type.starts_with("application/json-patch+json") {
            let ops: json_patch::Patch = match serde_json::from_value(patch) {
                Ok(p) => p,
                Err(e) => return status_error(400, &format!("JSON patch: {e}")),
            };
            for op in &ops.0 {
                // As the real apiserver: `test` of a missing path against null passes (kube-rs'
                // finalizer helper tests `/metadata/finalizers` == null before adding).
                if let json_patch::PatchOperation::Test(t) = op
                    && t.value.is_null()
                    && doc.pointer(t.path.as_str()).is_none()
                {
                    continue;
                }
                if let Err(e) = json_patch::patch(&mut doc, std::slice::from_ref(op)) {
                    return status_error(422, &format!("JSON patch not applicable: {e}"));
                }
            }
        } else if content_type.starts_with("application/merge-patch+json")
            || content_type.starts_with("application/strategic-merge-patch+json")
            || content_type.starts_with("application/apply-patch")
        {
            if Self::stale(&current, &patch) {
                return conflict(key);
            }
            json_patch::merge(&mut doc, &patch);
        } else {
            return status_error(415, &format!("unsupported patch type {content_type:?}"));
        }
        let new = Self::updated(&current, doc, sub);
        let stored = self.write(key, new, "MODIFIED");
        respond_json(StatusCode::OK, &stored)
    }

    fn delete(&mut self, key: &Key) -> Response<Body> {
        let Some(mut current) = self.objects.get(&key.path()).cloned() else {
            return not_found(key);
        };
        if finalizers_empty(&current) {
            current["metadata"]["deletionTimestamp"] = now();
            let stored = self.write(key, current, "DELETED");
            return respond_json(StatusCode::OK, &stored);
        }
        if current["metadata"]["deletionTimestamp"].is_null() {
            current["metadata"]["deletionTimestamp"] = now();
            let g = current["metadata"]["generation"].as_i64().unwrap_or(0);
            current["metadata"]["generation"] = json!(g + 1);
        }
        let stored = self.write(key, current, "MODIFIED");
        respond_json(StatusCode::OK, &stored)
    }
}

fn not_found(key: &Key) -> Response<Body> {
    status_error(
        404,
        &format!(
            "{} \"{}\" not found",
            key.plural,
            key.name.as_deref().unwrap_or_default()
        ),
    )
}

fn conflict(key: &Key) -> Response<Body> {
    status_error(
        409,
        &format!(
            "Operation cannot be fulfilled on {} \"{}\": the object has been modified; please apply your changes to the latest version and try again",
            key.plural,
            key.name.as_deref().unwrap_or_default()
        ),
    )
}

fn watch_body(lines: &[Value]) -> Response<Body> {
    let mut body = String::new();
    for l in lines {
        body.push_str(&l.to_string());
        body.push('\n');
    }
    let mut response = Response::new(Body::from(body.into_bytes()));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}
