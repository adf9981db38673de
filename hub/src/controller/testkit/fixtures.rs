//! Valid objects of every kind the controllers reconcile, built from manifests like those in
//! `docs/examples/` (so they stay valid as the API evolves: a builder that no longer
//! deserializes fails its test), with the metadata and status a branch needs:
//!
//! ```ignore
//! let db: Database = fixtures::database("shop", "postgres")
//!     .generation(3)
//!     .finalizer()
//!     .ready_at(3)          // Ready=True at observedGeneration 3: the drift branch
//!     .build();
//! ```

use serde_json::{Value, json};

use crate::api::{
    ClusterDatabaseGrant, ClusterDatabaseInstance, ClusterDatabaseRole, Database, DatabaseGrant,
    DatabaseInstance, DatabaseRole, DatabaseUser,
};
use crate::controller::FINALIZER;

/// The namespace of namespaced fixtures.
pub const NS: &str = "demo";

/// A fixture under construction: a manifest as JSON plus chainable changes.
#[derive(Debug, Clone)]
pub struct Fixture<K> {
    value: Value,
    kind: std::marker::PhantomData<K>,
}

impl<K: serde::de::DeserializeOwned> Fixture<K> {
    fn new(value: Value) -> Self {
        let mut f = Fixture {
            value,
            kind: std::marker::PhantomData,
        };
        let name = f.value["metadata"]["name"]
            .as_str()
            .unwrap_or("x")
            .to_owned();
        f.value["metadata"]["uid"] = json!(format!("uid-{name}"));
        f.value["metadata"]["generation"] = json!(1);
        f
    }

    /// The typed object. Panics if the manifest no longer deserializes (a test bug).
    pub fn build(self) -> K {
        match serde_json::from_value(self.value.clone()) {
            Ok(k) => k,
            Err(e) => panic!("fixture does not deserialize: {e}\n{:#}", self.value),
        }
    }

    /// The manifest as JSON.
    pub fn json(&self) -> &Value {
        &self.value
    }

    /// Sets the field at the JSON pointer `pointer` (e.g. `/spec/deletionProtection`),
    /// creating objects on the way.
    pub fn set(mut self, pointer: &str, value: Value) -> Self {
        let mut at = &mut self.value;
        for part in pointer.trim_start_matches('/').split('/') {
            let part = part.replace("~1", "/").replace("~0", "~");
            if !at.is_object() {
                *at = json!({});
            }
            at = &mut at[part.as_str()];
        }
        *at = value;
        self
    }

    /// Removes the field at `pointer` (a no-op if it is missing).
    pub fn unset(mut self, pointer: &str) -> Self {
        let (parent, last) = pointer.rsplit_once('/').unwrap_or(("", pointer));
        let target = if parent.is_empty() {
            Some(&mut self.value)
        } else {
            self.value.pointer_mut(parent)
        };
        if let Some(Value::Object(o)) = target {
            o.remove(last);
        }
        self
    }

    /// `metadata.uid`.
    pub fn uid(self, uid: &str) -> Self {
        self.set("/metadata/uid", json!(uid))
    }

    /// `metadata.generation`.
    pub fn generation(self, generation: i64) -> Self {
        self.set("/metadata/generation", json!(generation))
    }

    /// `metadata.namespace` (namespaced kinds).
    pub fn namespace(self, ns: &str) -> Self {
        self.set("/metadata/namespace", json!(ns))
    }

    /// An annotation.
    pub fn annotation(self, key: &str, value: &str) -> Self {
        let mut s = self;
        s.value["metadata"]["annotations"][key] = json!(value);
        s
    }

    /// A label.
    pub fn label(self, key: &str, value: &str) -> Self {
        let mut s = self;
        s.value["metadata"]["labels"][key] = json!(value);
        s
    }

    /// The controllers' cleanup finalizer in `metadata.finalizers`.
    pub fn finalizer(self) -> Self {
        self.set("/metadata/finalizers", json!([FINALIZER]))
    }

    /// Being deleted: `deletionTimestamp` set, the finalizer present (without it the
    /// apiserver would have removed the object already).
    pub fn deleting(self) -> Self {
        self.finalizer()
            .set("/metadata/deletionTimestamp", json!("2024-01-01T00:00:00Z"))
    }

    /// A status with `phase` and a Ready condition (`ready`, `reason`) at
    /// `observed_generation` (also `status.observedGeneration`).
    pub fn condition(
        self,
        phase: &str,
        ready: bool,
        reason: &str,
        observed_generation: i64,
    ) -> Self {
        self.set(
            "/status",
            json!({
                "phase": phase,
                "observedGeneration": observed_generation,
                "conditions": [{
                    "type": "Ready",
                    "status": if ready { "True" } else { "False" },
                    "reason": reason,
                    "message": "",
                    "lastTransitionTime": "2024-01-01T00:00:00Z",
                    "observedGeneration": observed_generation,
                }],
            }),
        )
    }

    /// Ready=True (phase Ready, reason Synced) at `observed_generation`: with
    /// `observed_generation == generation` a reconcile checks drift, else it applies.
    pub fn ready_at(self, observed_generation: i64) -> Self {
        self.condition("Ready", true, "Synced", observed_generation)
    }

    /// Ready=False (phase Failed) with `reason` at `observed_generation`.
    pub fn failed_at(self, reason: &str, observed_generation: i64) -> Self {
        self.condition("Failed", false, reason, observed_generation)
    }

    /// `spec.driftPolicy` (`mode` ignore, detect or correct).
    pub fn drift_policy(self, mode: &str, interval: &str) -> Self {
        self.set(
            "/spec/driftPolicy",
            json!({"mode": mode, "interval": interval}),
        )
    }
}

fn meta(name: &str, namespaced: bool) -> Value {
    if namespaced {
        json!({"name": name, "namespace": NS})
    } else {
        json!({"name": name})
    }
}

const API_VERSION: &str = "dbops.dbprovision.io/v1alpha1";

fn instance_spec(engine: &str) -> Value {
    match engine {
        "postgres" => json!({
            "engine": "postgres",
            "connection": {"host": "postgres.db.svc", "port": 5432, "database": "postgres", "secretRef": {"name": "pg-admin"}},
            "postgres": {"sslMode": "disable"},
            "healthCheck": {"intervalSeconds": 30},
        }),
        other => json!({
            "engine": other,
            "connection": {"host": "mariadb.db.svc", "port": 3306, "database": "mysql", "secretRef": {"name": "mariadb-admin"}},
            "mysql": {"tls": "disabled"},
            "healthCheck": {"intervalSeconds": 30},
        }),
    }
}

/// A DatabaseInstance of `engine` (`postgres`, `mysql` or `mariadb`) in [`NS`], not probed yet
/// (no status: dependents are blocked on it).
pub fn instance(name: &str, engine: &str) -> Fixture<DatabaseInstance> {
    Fixture::new(json!({
        "apiVersion": API_VERSION, "kind": "DatabaseInstance",
        "metadata": meta(name, true),
        "spec": instance_spec(engine),
    }))
}

/// A DatabaseInstance whose last probe succeeded (phase Ready).
pub fn ready_instance(name: &str, engine: &str) -> Fixture<DatabaseInstance> {
    instance(name, engine)
        .ready_at(1)
        .set("/status/version", json!("16.4"))
}

/// A ClusterDatabaseInstance of `engine`, not probed yet.
pub fn cluster_instance(name: &str, engine: &str) -> Fixture<ClusterDatabaseInstance> {
    let mut spec = instance_spec(engine);
    spec["connection"]["secretRef"]["namespace"] = json!("platform");
    Fixture::new(json!({
        "apiVersion": API_VERSION, "kind": "ClusterDatabaseInstance",
        "metadata": meta(name, false),
        "spec": spec,
    }))
}

/// A ClusterDatabaseInstance whose last probe succeeded.
pub fn ready_cluster_instance(name: &str, engine: &str) -> Fixture<ClusterDatabaseInstance> {
    cluster_instance(name, engine).ready_at(1)
}

/// A Database `name` on the DatabaseInstance `instance` (deletionPolicy Delete, unprotected,
/// like the examples).
pub fn database(name: &str, instance: &str) -> Fixture<Database> {
    Fixture::new(json!({
        "apiVersion": API_VERSION, "kind": "Database",
        "metadata": meta(name, true),
        "spec": {
            "instanceRef": {"name": instance},
            "name": name,
            "deletionPolicy": "Delete",
            "deletionProtection": false,
        },
    }))
}

/// A Database on the ClusterDatabaseInstance `instance`.
pub fn database_on_cluster_instance(name: &str, instance: &str) -> Fixture<Database> {
    database(name, instance)
        .unset("/spec/instanceRef")
        .set("/spec/clusterInstanceRef", json!({"name": instance}))
}

/// A DatabaseUser `name` (username `name` with `-` as `_`) on the DatabaseInstance `instance`.
pub fn user(name: &str, instance: &str) -> Fixture<DatabaseUser> {
    Fixture::new(json!({
        "apiVersion": API_VERSION, "kind": "DatabaseUser",
        "metadata": meta(name, true),
        "spec": {
            "instanceRef": {"name": instance},
            "username": name.replace('-', "_"),
            "passwordSecret": {"secretName": format!("{name}-credentials")},
        },
    }))
}

/// A DatabaseRole `name` on the DatabaseInstance `instance`, granting CONNECT on `shop`.
pub fn role(name: &str, instance: &str) -> Fixture<DatabaseRole> {
    Fixture::new(json!({
        "apiVersion": API_VERSION, "kind": "DatabaseRole",
        "metadata": meta(name, true),
        "spec": {
            "instanceRef": {"name": instance},
            "roleName": name.replace('-', "_"),
            "postgres": {"grants": [{"database": "shop", "privileges": ["CONNECT"]}]},
        },
    }))
}

/// A ClusterDatabaseRole `name` on the ClusterDatabaseInstance `instance`.
pub fn cluster_role(name: &str, instance: &str) -> Fixture<ClusterDatabaseRole> {
    Fixture::new(json!({
        "apiVersion": API_VERSION, "kind": "ClusterDatabaseRole",
        "metadata": meta(name, false),
        "spec": {
            "clusterInstanceRef": {"name": instance},
            "roleName": name.replace('-', "_"),
        },
    }))
}

/// A DatabaseGrant `name` for the DatabaseUser `user` on the Database `database`
/// (unprotected, membership in `shop_readers`, table privileges on schema `app`).
pub fn grant(name: &str, user: &str, database: &str) -> Fixture<DatabaseGrant> {
    Fixture::new(json!({
        "apiVersion": API_VERSION, "kind": "DatabaseGrant",
        "metadata": meta(name, true),
        "spec": {
            "userRef": {"name": user},
            "databaseRef": {"name": database},
            "deletionProtection": false,
            "postgres": {
                "roles": ["shop_readers"],
                "grants": [{"database": database, "schema": "app", "tables": ["*"], "privileges": ["INSERT", "UPDATE", "DELETE"]}],
            },
        },
    }))
}

/// A ClusterDatabaseGrant `name` on the ClusterDatabaseInstance `instance` for the
/// DatabaseUser `user` in [`NS`] (unprotected, SELECT on database `analytics`).
pub fn cluster_grant(name: &str, instance: &str, user: &str) -> Fixture<ClusterDatabaseGrant> {
    Fixture::new(json!({
        "apiVersion": API_VERSION, "kind": "ClusterDatabaseGrant",
        "metadata": meta(name, false),
        "spec": {
            "clusterInstanceRef": {"name": instance},
            "userRef": {"name": user, "namespace": NS},
            "deletionProtection": false,
            "mysql": {"grants": [{"level": "database", "database": "analytics", "privileges": ["SELECT"]}]},
        },
    }))
}
