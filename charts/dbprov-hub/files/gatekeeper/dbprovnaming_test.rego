package dbprovnaming_test

import data.dbprovnaming

import future.keywords.if
import future.keywords.in

params := {
	"database": {"prefix": "{namespace}_", "pattern": "^[a-z][a-z0-9_]*$", "message": "databases are named <team>_<name>"},
	"user": {"pattern": "^(app|svc)_[a-z0-9_]+$"},
	"role": {"prefix": "role_"},
	"resource": {"pattern": "^[a-z0-9-]{1,40}$"},
}

review(o) := {"review": {"object": o}, "parameters": params}

database(ns, name, db) := {
	"kind": "Database",
	"metadata": {"name": name, "namespace": ns},
	"spec": {"name": db, "instanceRef": {"name": "pg"}},
}

test_database_with_the_team_prefix_passes if {
	count(dbprovnaming.violation) == 0 with input as review(database("team-a", "orders", "team_a_orders"))
}

test_database_without_the_team_prefix_is_reported if {
	v := dbprovnaming.violation with input as review(database("team-a", "orders", "orders"))
	v == {{"msg": "databases are named <team>_<name> (Database team-a/orders: spec.name \"orders\" must start with \"team_a_\" (naming.database))"}}
}

test_database_name_against_pattern if {
	v := dbprovnaming.violation with input as review(database("team-a", "orders", "team_a_Orders"))
	count(v) == 1
	some a in v
	contains(a.msg, "spec.name \"team_a_Orders\" does not match \"^[a-z][a-z0-9_]*$\"")
}

user(name) := {"kind": "DatabaseUser", "metadata": {"name": "u", "namespace": "team-a"}, "spec": {"username": name}}

test_user_name_pattern if {
	count(dbprovnaming.violation) == 0 with input as review(user("app_orders"))
	v := dbprovnaming.violation with input as review(user("orders"))
	count(v) == 1
	some a in v
	contains(a.msg, "DatabaseUser team-a/u: spec.username \"orders\" does not match")
	contains(a.msg, "(naming.user)")
}

test_role_prefix_on_namespaced_and_cluster_roles if {
	role := {"kind": "DatabaseRole", "metadata": {"name": "readers", "namespace": "team-a"}, "spec": {"roleName": "readers"}}
	v := dbprovnaming.violation with input as review(role)
	count(v) == 1
	cluster_role := {"kind": "ClusterDatabaseRole", "metadata": {"name": "readers"}, "spec": {"roleName": "role_readers"}}
	count(dbprovnaming.violation) == 0 with input as review(cluster_role)
}

test_resource_name_applies_to_every_kind if {
	backup := {"kind": "DatabaseBackup", "metadata": {"name": "Nightly_Backup", "namespace": "team-a"}, "spec": {}}
	v := dbprovnaming.violation with input as review(backup)
	v == {{"msg": "DatabaseBackup team-a/Nightly_Backup: metadata.name \"Nightly_Backup\" does not match \"^[a-z0-9-]{1,40}$\" (naming.resource)"}}
}

test_namespace_prefix_is_not_checked_on_cluster_scoped_objects if {
	o := {"kind": "ClusterDatabaseRole", "metadata": {"name": "r"}, "spec": {"roleName": "anything"}}
	count(dbprovnaming.violation) == 0 with input as {"review": {"object": o}, "parameters": {"role": {"prefix": "{namespace}_"}}}
}

test_rules_of_other_kinds_do_not_apply if {
	o := {"kind": "DatabaseUser", "metadata": {"name": "u", "namespace": "team-a"}, "spec": {"username": "x"}}
	count(dbprovnaming.violation) == 0 with input as {"review": {"object": o}, "parameters": {"database": {"prefix": "db_"}, "role": {"prefix": "r_"}}}
}
