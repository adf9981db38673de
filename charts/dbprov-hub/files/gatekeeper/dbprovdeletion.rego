# DbprovDeletion: deletion-safety rules (DatabasePolicy spec.deletion).
#   requireDeletionProtection  spec.deletionProtection must stay true on the kinds that have
#                              it (DatabaseInstance, ClusterDatabaseInstance, Database,
#                              DatabaseGrant, ClusterDatabaseGrant, DatabaseBackupSchedule);
#                              unset reads as the CRDs' default, true.
#   allowedDeletionPolicies    Database.spec.deletionPolicy must be one of these (Retain,
#                              Delete, Snapshot); unset reads as the default, Retain.
package dbprovdeletion

import future.keywords.contains
import future.keywords.if
import future.keywords.in

obj := input.review.object

subject := sprintf("%v %v", [obj.kind, name]) if {
	not obj.metadata.namespace
	name := obj.metadata.name
} else := sprintf("%v %v/%v", [obj.kind, obj.metadata.namespace, obj.metadata.name])

protected_kinds := {
	"DatabaseInstance",
	"ClusterDatabaseInstance",
	"Database",
	"DatabaseGrant",
	"ClusterDatabaseGrant",
	"DatabaseBackupSchedule",
}

violation contains {"msg": msg} if {
	input.parameters.requireDeletionProtection == true
	obj.kind in protected_kinds
	object.get(obj, ["spec", "deletionProtection"], true) != true
	msg := sprintf("%v: spec.deletionProtection must be true (deletion.requireDeletionProtection)", [subject])
}

violation contains {"msg": msg} if {
	allowed := input.parameters.allowedDeletionPolicies
	obj.kind == "Database"
	policy := object.get(obj, ["spec", "deletionPolicy"], "Retain")
	not policy in allowed
	msg := sprintf("%v: spec.deletionPolicy %v is not allowed; allowed: %v (deletion.allowedDeletionPolicies)", [subject, policy, concat(", ", allowed)])
}
