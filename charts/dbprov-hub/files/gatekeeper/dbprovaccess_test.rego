package dbprovaccess_test

import data.dbprovaccess

import future.keywords.if
import future.keywords.in

params := {"allowedInstances": ["team-a-pg", "shared-mariadb"], "allowedClusters": ["workload-a"], "defaultCluster": "default"}

msgs(o, p) := {v.msg | some v in dbprovaccess.violation with input as {"review": {"object": o}, "parameters": p}}

obj(kind, spec) := {"kind": kind, "metadata": {"name": "x", "namespace": "team-a"}, "spec": spec}

test_references_to_allowed_instances_pass if {
	count(msgs(obj("Database", {"name": "orders", "instanceRef": {"name": "team-a-pg"}}), params)) == 0
	count(msgs(obj("DatabaseUser", {"username": "app", "clusterInstanceRef": {"name": "shared-mariadb"}}), params)) == 0
	count(msgs(obj("DatabaseRestore", {"target": {"instanceRef": {"name": "team-a-pg"}, "databaseName": "r"}}), params)) == 0
}

test_references_to_other_instances_are_reported if {
	msgs(obj("Database", {"name": "orders", "instanceRef": {"name": "prod-pg"}}), params) == {"Database team-a/x: spec.instanceRef.name \"prod-pg\" is not an allowed instance; allowed: team-a-pg, shared-mariadb (access.allowedInstances)"}
	msgs(obj("ClusterDatabaseGrant", {"clusterInstanceRef": {"name": "prod-pg"}}), params) == {"ClusterDatabaseGrant team-a/x: spec.clusterInstanceRef.name \"prod-pg\" is not an allowed instance; allowed: team-a-pg, shared-mariadb (access.allowedInstances)"}
	msgs(obj("DatabaseRestore", {"target": {"clusterInstanceRef": {"name": "prod-pg"}}}), params) == {"DatabaseRestore team-a/x: spec.target.clusterInstanceRef.name \"prod-pg\" is not an allowed instance; allowed: team-a-pg, shared-mariadb (access.allowedInstances)"}
}

test_instance_on_an_allowed_cluster_passes if {
	count(msgs(obj("DatabaseInstance", {"engine": "postgres", "clusterRef": {"name": "workload-a"}}), params)) == 0
}

test_instance_on_another_cluster_is_reported if {
	o := {"kind": "ClusterDatabaseInstance", "metadata": {"name": "pg"}, "spec": {"engine": "postgres", "clusterRef": {"name": "workload-b"}}}
	msgs(o, params) == {"ClusterDatabaseInstance pg: served by cluster \"workload-b\", which is not allowed; allowed: workload-a (access.allowedClusters)"}
}

test_instance_without_cluster_ref_is_read_as_the_default_cluster if {
	o := obj("DatabaseInstance", {"engine": "postgres"})
	msgs(o, params) == {"DatabaseInstance team-a/x: served by cluster \"default\", which is not allowed; allowed: workload-a (access.allowedClusters)"}
	count(msgs(o, object.union(params, {"allowedClusters": ["workload-a", "default"]}))) == 0
}

test_instance_without_cluster_ref_and_no_default_cluster_is_reported if {
	o := obj("DatabaseInstance", {"engine": "postgres"})
	msgs(o, {"allowedClusters": ["workload-a"]}) == {"DatabaseInstance team-a/x: spec.clusterRef is unset (the hub's default cluster) and the constraint names no defaultCluster; set spec.clusterRef (access.allowedClusters)"}
}
