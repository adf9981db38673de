# DbprovAccess: which instances and clusters resources may use (DatabasePolicy spec.access).
#   allowedInstances  names the instance references may name: spec.instanceRef /
#                     spec.clusterInstanceRef (Database, DatabaseUser, DatabaseRole,
#                     ClusterDatabaseRole, ClusterDatabaseGrant) and spec.target.instanceRef /
#                     spec.target.clusterInstanceRef (DatabaseRestore). Kinds that reach their
#                     instance through a Database (DatabaseGrant, DatabaseBackup, ...) are
#                     checked by the hub, which resolves the reference.
#   allowedClusters   ManagedClusters a DatabaseInstance or ClusterDatabaseInstance may be served
#                     by (spec.clusterRef.name).
#   defaultCluster    Gatekeeper only: the hub's default cluster (the chart's
#                     hub.defaultCluster), which serves instances without spec.clusterRef.
#                     Unset: an instance without spec.clusterRef is reported, as its cluster
#                     cannot be known here.
package dbprovaccess

import future.keywords.contains
import future.keywords.if
import future.keywords.in

obj := input.review.object

params := object.get(input, "parameters", {})

subject := sprintf("%v %v", [obj.kind, name]) if {
	not obj.metadata.namespace
	name := obj.metadata.name
} else := sprintf("%v %v/%v", [obj.kind, obj.metadata.namespace, obj.metadata.name])

# (field, instance name) of every instance reference of the object.
instance_refs contains [concat(".", path), name] if {
	some path in [
		["spec", "instanceRef"],
		["spec", "clusterInstanceRef"],
		["spec", "target", "instanceRef"],
		["spec", "target", "clusterInstanceRef"],
	]
	name := object.get(obj, array.concat(path, ["name"]), "")
	name != ""
}

violation contains {"msg": msg} if {
	allowed := params.allowedInstances
	some [field, name] in instance_refs
	not name in allowed
	msg := sprintf("%v: %v.name %q is not an allowed instance; allowed: %v (access.allowedInstances)", [subject, field, name, concat(", ", allowed)])
}

violation contains {"msg": msg} if {
	allowed := params.allowedClusters
	obj.kind in {"DatabaseInstance", "ClusterDatabaseInstance"}
	cluster := object.get(obj, ["spec", "clusterRef", "name"], object.get(params, "defaultCluster", ""))
	cluster != ""
	not cluster in allowed
	msg := sprintf("%v: served by cluster %q, which is not allowed; allowed: %v (access.allowedClusters)", [subject, cluster, concat(", ", allowed)])
}

violation contains {"msg": msg} if {
	params.allowedClusters
	obj.kind in {"DatabaseInstance", "ClusterDatabaseInstance"}
	object.get(obj, ["spec", "clusterRef", "name"], "") == ""
	object.get(params, "defaultCluster", "") == ""
	msg := sprintf("%v: spec.clusterRef is unset (the hub's default cluster) and the constraint names no defaultCluster; set spec.clusterRef (access.allowedClusters)", [subject])
}
