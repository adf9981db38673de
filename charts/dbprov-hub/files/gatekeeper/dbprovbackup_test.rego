package dbprovbackup_test

import data.dbprovbackup

import future.keywords.if
import future.keywords.in

params := {
	"requireEncryption": true,
	"allowedStorageTypes": ["s3", "gcs"],
	"minRetention": {"keepDaily": 7, "keepMonthly": 6},
}

msgs(o) := {v.msg | some v in dbprovbackup.violation with input as {"review": {"object": o}, "parameters": params}}

backup(spec) := {"kind": "DatabaseBackup", "metadata": {"name": "b", "namespace": "team-a"}, "spec": spec}

schedule(template_spec, retention) := {
	"kind": "DatabaseBackupSchedule",
	"metadata": {"name": "nightly", "namespace": "team-a"},
	"spec": {"schedule": "0 2 * * *", "template": {"spec": template_spec}, "retention": retention},
}

good_spec := {
	"databaseRef": {"name": "orders"},
	"storage": {"type": "s3", "s3": {"bucket": "backups"}},
	"encryption": {"enabled": true, "algorithm": "age"},
}

test_encrypted_backup_to_s3_passes if {
	count(msgs(backup(good_spec))) == 0
}

test_unencrypted_backup_to_a_volume_is_reported if {
	msgs(backup({"databaseRef": {"name": "orders"}, "storage": {"type": "pvc"}})) == {
		"DatabaseBackup team-a/b: spec.encryption.enabled must be true (backup.requireEncryption)",
		"DatabaseBackup team-a/b: spec.storage.type \"pvc\" is not allowed; allowed: s3, gcs (backup.allowedStorageTypes)",
	}
}

test_encryption_disabled_explicitly_is_reported if {
	spec := object.union(good_spec, {"encryption": {"enabled": false}})
	msgs(backup(spec)) == {"DatabaseBackup team-a/b: spec.encryption.enabled must be true (backup.requireEncryption)"}
}

test_compliant_schedule_passes if {
	count(msgs(schedule(good_spec, {"keepLast": 3, "keepDaily": 7, "keepMonthly": 12}))) == 0
}

test_schedule_template_and_retention_are_checked if {
	msgs(schedule({"storage": {"type": "azure"}}, {"keepDaily": 3})) == {
		"DatabaseBackupSchedule team-a/nightly: spec.template.spec.encryption.enabled must be true (backup.requireEncryption)",
		"DatabaseBackupSchedule team-a/nightly: spec.template.spec.storage.type \"azure\" is not allowed; allowed: s3, gcs (backup.allowedStorageTypes)",
		"DatabaseBackupSchedule team-a/nightly: spec.retention.keepDaily is 3, the policy requires at least 7 (backup.minRetention)",
		"DatabaseBackupSchedule team-a/nightly: spec.retention.keepMonthly is unset, the policy requires at least 6 (backup.minRetention)",
	}
}

test_other_kinds_are_not_checked if {
	o := {"kind": "DatabaseRestore", "metadata": {"name": "r", "namespace": "team-a"}, "spec": {"backupRef": {"name": "b"}}}
	count(msgs(o)) == 0
}
