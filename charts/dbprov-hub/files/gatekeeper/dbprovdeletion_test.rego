package dbprovdeletion_test

import data.dbprovdeletion

import future.keywords.if
import future.keywords.in

params := {"requireDeletionProtection": true, "allowedDeletionPolicies": ["Retain", "Snapshot"]}

review(o) := {"review": {"object": o}, "parameters": params}

database(spec) := {"kind": "Database", "metadata": {"name": "orders", "namespace": "prod"}, "spec": spec}

test_protected_database_with_retain_passes if {
	count(dbprovdeletion.violation) == 0 with input as review(database({"name": "orders", "deletionProtection": true, "deletionPolicy": "Retain"}))
}

test_defaults_are_protected_and_retain if {
	count(dbprovdeletion.violation) == 0 with input as review(database({"name": "orders"}))
}

test_unprotected_database_with_delete_is_reported_twice if {
	v := dbprovdeletion.violation with input as review(database({"name": "orders", "deletionProtection": false, "deletionPolicy": "Delete"}))
	v == {
		{"msg": "Database prod/orders: spec.deletionProtection must be true (deletion.requireDeletionProtection)"},
		{"msg": "Database prod/orders: spec.deletionPolicy Delete is not allowed; allowed: Retain, Snapshot (deletion.allowedDeletionPolicies)"},
	}
}

test_unprotected_instance_grant_and_schedule_are_reported if {
	some kind in ["DatabaseInstance", "DatabaseGrant", "DatabaseBackupSchedule"]
	o := {"kind": kind, "metadata": {"name": "x", "namespace": "prod"}, "spec": {"deletionProtection": false}}
	v := dbprovdeletion.violation with input as review(o)
	count(v) == 1
}

test_every_protected_kind_is_checked if {
	reported := {kind |
		some kind in ["DatabaseInstance", "ClusterDatabaseInstance", "Database", "DatabaseGrant", "ClusterDatabaseGrant", "DatabaseBackupSchedule", "DatabaseUser", "DatabaseBackup"]
		o := {"kind": kind, "metadata": {"name": "x"}, "spec": {"deletionProtection": false}}
		count(dbprovdeletion.violation) > 0 with input as review(o)
	}
	reported == {"DatabaseInstance", "ClusterDatabaseInstance", "Database", "DatabaseGrant", "ClusterDatabaseGrant", "DatabaseBackupSchedule"}
}

test_without_require_protection_false_is_allowed if {
	o := database({"name": "orders", "deletionProtection": false})
	count(dbprovdeletion.violation) == 0 with input as {"review": {"object": o}, "parameters": {"allowedDeletionPolicies": ["Retain"]}}
}
