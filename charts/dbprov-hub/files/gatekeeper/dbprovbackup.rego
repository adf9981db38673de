# DbprovBackup: rules for backups (DatabasePolicy spec.backup), on DatabaseBackup.spec and on
# the backups a DatabaseBackupSchedule creates (spec.template.spec).
#   requireEncryption    encryption.enabled must be true.
#   allowedStorageTypes  storage.type must be one of these (s3, gcs, azure, pvc).
#   minRetention         a DatabaseBackupSchedule's spec.retention must set each given field
#                        (keepLast, keepDaily, keepWeekly, keepMonthly) to at least the minimum.
package dbprovbackup

import future.keywords.contains
import future.keywords.if
import future.keywords.in

obj := input.review.object

params := object.get(input, "parameters", {})

subject := sprintf("%v %v", [obj.kind, name]) if {
	not obj.metadata.namespace
	name := obj.metadata.name
} else := sprintf("%v %v/%v", [obj.kind, obj.metadata.namespace, obj.metadata.name])

# The backup spec and the path it is at.
backup := ["spec", obj.spec] if obj.kind == "DatabaseBackup"

backup := ["spec.template.spec", object.get(obj, ["spec", "template", "spec"], {})] if obj.kind == "DatabaseBackupSchedule"

violation contains {"msg": msg} if {
	params.requireEncryption == true
	[path, spec] := backup
	object.get(spec, ["encryption", "enabled"], false) != true
	msg := sprintf("%v: %v.encryption.enabled must be true (backup.requireEncryption)", [subject, path])
}

violation contains {"msg": msg} if {
	allowed := params.allowedStorageTypes
	[path, spec] := backup
	type := spec.storage.type
	not type in allowed
	msg := sprintf("%v: %v.storage.type %q is not allowed; allowed: %v (backup.allowedStorageTypes)", [subject, path, type, concat(", ", allowed)])
}

violation contains {"msg": msg} if {
	obj.kind == "DatabaseBackupSchedule"
	some field, minimum in params.minRetention
	kept := object.get(obj, ["spec", "retention", field], null)
	not at_least(kept, minimum)
	msg := sprintf("%v: spec.retention.%v is %v, the policy requires at least %v (backup.minRetention)", [subject, field, shown(kept), minimum])
}

at_least(kept, minimum) if {
	is_number(kept)
	kept >= minimum
}

shown(kept) := "unset" if {
	kept == null
} else := kept
