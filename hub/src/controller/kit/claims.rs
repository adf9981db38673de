//! One server object, one owner across namespaces (docs/security.md "Shared instances").
//!
//! On an instance several namespaces may use, a Database, DatabaseUser or DatabaseRole of one
//! namespace naming the same object in the server as an older resource of another namespace
//! would adopt it — and could then alter, restore over or drop it. The first resource to name
//! it keeps it; the later one is refused (`NameClaimed`), and deleting it drops nothing.

use kube::{Api, ResourceExt};
use serde_json::Value;

use crate::controller::{Context, Error, Scoped, reason::Reason};

use super::instance::{Blocked, ResolvedInstance};

/// Where the object's name in the server is, per kind.
fn server_name_pointer(kind: &str) -> Option<&'static str> {
    match kind {
        "Database" => Some("/spec/name"),
        "DatabaseUser" => Some("/spec/username"),
        "DatabaseRole" => Some("/spec/roleName"),
        _ => None,
    }
}

/// Whether the resource `v` (JSON) lives on `instance`.
fn on_instance(v: &Value, instance: &ResolvedInstance) -> bool {
    let own_ns = v["metadata"]["namespace"].as_str().unwrap_or_default();
    let name = Some(instance.name.as_str());
    match &instance.namespace {
        Some(ns) => {
            let r = &v["spec"]["instanceRef"];
            r["name"].as_str() == name && r["namespace"].as_str().unwrap_or(own_ns) == ns.as_str()
        }
        None => v["spec"]["clusterInstanceRef"]["name"].as_str() == name,
    }
}

/// Whether `instance` may be used by more than its own namespace (only there can two
/// namespaces name one object).
fn shared(instance: &ResolvedInstance) -> bool {
    use crate::api::common::NamespacesFrom;
    instance.namespace.is_none()
        || instance
            .spec
            .allowed_namespaces
            .as_ref()
            .and_then(|a| a.from)
            .is_some_and(|f| f != NamespacesFrom::Same)
}

/// `(not Ready, creationTimestamp, uid)`: the order in which resources claim their objects.
/// A Ready resource comes first: creation times have one-second resolution, and two
/// resources made in the same second would otherwise be ordered by their random uids — a
/// newcomer could win over the one that had already provisioned the object.
fn age(v: &Value) -> (bool, String, String) {
    (
        // Ready: it holds its object in the server now (the hub's one notion of Ready).
        !super::cache::phase_is_ready(v),
        v["metadata"]["creationTimestamp"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        v["metadata"]["uid"].as_str().unwrap_or_default().to_owned(),
    )
}

/// The older resource of another namespace among `others` that names the same server object
/// as `me` on `instance`: its `namespace/name`.
pub fn older_claim(
    kind: &str,
    me: &Value,
    others: &[Value],
    instance: &ResolvedInstance,
) -> Option<String> {
    let pointer = server_name_pointer(kind)?;
    let name = me.pointer(pointer)?.as_str()?;
    let my_ns = me["metadata"]["namespace"].as_str()?;
    others
        .iter()
        .filter(|o| o["metadata"]["namespace"].as_str() != Some(my_ns))
        .filter(|o| o["metadata"]["deletionTimestamp"].is_null())
        .filter(|o| o.pointer(pointer).and_then(Value::as_str) == Some(name))
        .filter(|o| on_instance(o, instance))
        .filter(|o| age(o) < age(me))
        .min_by_key(|o| age(o))
        .map(|o| {
            format!(
                "{}/{}",
                o["metadata"]["namespace"].as_str().unwrap_or_default(),
                o["metadata"]["name"].as_str().unwrap_or_default()
            )
        })
}

/// Refuses `obj` when an older resource of another namespace on the same shared instance
/// names the same server object.
pub async fn refusal<K: Scoped>(
    ctx: &Context,
    obj: &K,
    instance: &ResolvedInstance,
) -> Result<Option<Blocked>, Error> {
    let kind = K::kind(&());
    if server_name_pointer(&kind).is_none() || !shared(instance) {
        return Ok(None);
    }
    let Some(name) = obj.server_name() else {
        return Ok(None);
    };
    let me = serde_json::to_value(obj)?;
    // Only resources of other namespaces naming the same server object can claim it: chosen
    // by comparing names on the controller's watch cache (serialising every object of the
    // kind on every reconcile grew with the square of the objects; a LIST, more so), and only
    // those few serialised. Without a cache yet, from the apiserver.
    let rival = |o: &K| {
        o.namespace() != obj.namespace() && o.server_name() == Some(name) && o.uid() != obj.uid()
    };
    let others: Vec<Value> = match ctx.caches.store::<K>() {
        Some(store) => store
            .state()
            .iter()
            .filter(|o| rival(o))
            .filter_map(|o| serde_json::to_value(o.as_ref()).ok())
            .collect(),
        None => {
            let api: Api<K> = Api::all(ctx.client.clone());
            api.list(&Default::default())
                .await?
                .items
                .iter()
                .filter(|o| rival(o))
                .filter_map(|o| serde_json::to_value(o).ok())
                .collect()
        }
    };
    let Some(owner) = older_claim(&kind, &me, &others, instance) else {
        return Ok(None);
    };
    let field = server_name_pointer(&kind)
        .unwrap_or_default()
        .trim_start_matches('/')
        .replace('/', ".");
    Ok(Some(Blocked::new(
        Reason::NameClaimed,
        format!(
            "{field} {name:?} on {} is already managed by {kind} {owner} of another namespace; \
             nothing was sent, and deleting this resource drops nothing. Choose another name \
             (docs/security.md \"Shared instances\")",
            instance.display
        ),
    )))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn instance(ns: Option<&str>, from: Option<&str>) -> ResolvedInstance {
        let mut spec = json!({"engine": "postgres",
            "connection": {"host": "h", "port": 5432, "database": "postgres"}});
        if let Some(f) = from {
            spec["allowedNamespaces"] = json!({"from": f});
        }
        ResolvedInstance {
            display: match ns {
                Some(ns) => format!("DatabaseInstance {ns}/shared"),
                None => "ClusterDatabaseInstance shared".into(),
            },
            spec: serde_json::from_value(spec).unwrap(),
            namespace: ns.map(str::to_owned),
            name: "shared".into(),
            ready: true,
        }
    }

    #[test]
    fn the_typed_server_name_is_the_one_the_claim_compares() {
        use crate::controller::Scoped;
        fn same<K: Scoped>(kind: &str, v: Value) {
            let typed: K = serde_json::from_value(v.clone()).unwrap();
            assert_eq!(
                typed.server_name(),
                v.pointer(server_name_pointer(kind).unwrap())
                    .and_then(Value::as_str),
                "{kind}"
            );
        }
        let on = json!({"name": "shared"});
        same::<crate::api::Database>(
            "Database",
            json!({"metadata": {"name": "a", "namespace": "x"},
                   "spec": {"name": "orders", "instanceRef": on}}),
        );
        same::<crate::api::DatabaseUser>(
            "DatabaseUser",
            json!({"metadata": {"name": "a", "namespace": "x"},
                   "spec": {"username": "app", "instanceRef": on}}),
        );
        same::<crate::api::DatabaseRole>(
            "DatabaseRole",
            json!({"metadata": {"name": "a", "namespace": "x"},
                   "spec": {"roleName": "readers", "instanceRef": on}}),
        );
        assert_eq!(server_name_pointer("DatabaseGrant"), None);
    }

    fn db(ns: &str, name: &str, server_name: &str, created: &str, on: Value) -> Value {
        json!({"metadata": {"namespace": ns, "name": name, "uid": format!("{ns}-{name}"),
                            "creationTimestamp": created},
               "spec": {"name": server_name, "instanceRef": on.get("i").cloned(),
                        "clusterInstanceRef": on.get("c").cloned()}})
    }

    #[test]
    fn in_the_same_second_the_ready_resource_keeps_the_name_whatever_the_uids() {
        let cluster = instance(None, None);
        let on = json!({"c": {"name": "shared"}});
        let second = "2026-01-01T00:00:00Z";
        // uids "a-..." < "z-...": by uid alone the newcomer would be the older.
        let mut theirs = db("z", "ledger", "ledger", second, on.clone());
        theirs["status"] = json!({"phase": "Ready",
            "conditions": [{"type": "Ready", "status": "True", "reason": "Synced"}]});
        let mine = db("a", "ledger-too", "ledger", second, on);
        assert_eq!(
            older_claim("Database", &mine, std::slice::from_ref(&theirs), &cluster),
            Some("z/ledger".into())
        );
        assert_eq!(
            older_claim("Database", &theirs, std::slice::from_ref(&mine), &cluster),
            None
        );
    }

    #[test]
    fn the_older_resource_of_another_namespace_keeps_the_name() {
        let cluster = instance(None, None);
        let on = json!({"c": {"name": "shared"}});
        let theirs = db(
            "victim",
            "orders",
            "orders",
            "2026-01-01T00:00:00Z",
            on.clone(),
        );
        let mine = db(
            "tenant",
            "adopt",
            "orders",
            "2026-02-01T00:00:00Z",
            on.clone(),
        );
        assert_eq!(
            older_claim("Database", &mine, std::slice::from_ref(&theirs), &cluster),
            Some("victim/orders".into())
        );
        // The older one is not refused because of the younger one.
        assert_eq!(
            older_claim("Database", &theirs, std::slice::from_ref(&mine), &cluster),
            None
        );
        // Another server name, another instance, or the same namespace: no claim.
        let other_name = db(
            "victim",
            "o",
            "payments",
            "2026-01-01T00:00:00Z",
            on.clone(),
        );
        let other_instance = db(
            "victim",
            "o",
            "orders",
            "2026-01-01T00:00:00Z",
            json!({"c": {"name": "elsewhere"}}),
        );
        let same_ns = db("tenant", "o", "orders", "2026-01-01T00:00:00Z", on);
        assert_eq!(
            older_claim(
                "Database",
                &mine,
                &[other_name, other_instance, same_ns],
                &cluster
            ),
            None
        );
    }

    #[test]
    fn a_namespaced_instance_is_matched_by_its_namespace_and_shared_only_when_it_says_so() {
        let inst = instance(Some("platform"), Some("All"));
        assert!(shared(&inst));
        assert!(!shared(&instance(Some("platform"), None)));
        assert!(shared(&instance(None, None)));
        let on = json!({"i": {"name": "shared", "namespace": "platform"}});
        let theirs = db(
            "victim",
            "orders",
            "orders",
            "2026-01-01T00:00:00Z",
            on.clone(),
        );
        let mine = db("tenant", "adopt", "orders", "2026-02-01T00:00:00Z", on);
        assert_eq!(
            older_claim("Database", &mine, &[theirs], &inst),
            Some("victim/orders".into())
        );
        // A same-named instance in the resource's own namespace is another instance.
        let local = db(
            "victim",
            "orders",
            "orders",
            "2026-01-01T00:00:00Z",
            json!({"i": {"name": "shared"}}),
        );
        assert_eq!(
            older_claim("Database", &mine_on_platform(), &[local], &inst),
            None
        );
    }

    fn mine_on_platform() -> Value {
        db(
            "tenant",
            "adopt",
            "orders",
            "2026-02-01T00:00:00Z",
            json!({"i": {"name": "shared", "namespace": "platform"}}),
        )
    }
}
