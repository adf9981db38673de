package dbprovprivileges_test

import data.dbprovprivileges

import future.keywords.if
import future.keywords.in

ceilings := {"forbidSuperuser": true, "forbidAllOnAll": true}

review(o, params) := {"review": {"object": o}, "parameters": params}

user(postgres) := {"kind": "DatabaseUser", "metadata": {"name": "app", "namespace": "team-a"}, "spec": {"username": "app", "postgres": postgres}}

grant(spec) := {"kind": "DatabaseGrant", "metadata": {"name": "g", "namespace": "team-a"}, "spec": spec}

msgs(o, params) := {v.msg | some v in dbprovprivileges.violation with input as review(o, params)}

test_plain_user_passes if {
	count(msgs(user({"login": true, "createDB": true}), ceilings)) == 0
}

test_superuser_flags_are_reported if {
	m := msgs(user({"superuser": true, "createRole": true, "replication": true, "bypassRLS": true}), ceilings)
	m == {
		"DatabaseUser team-a/app: spec.postgres.superuser is forbidden (privileges.forbidSuperuser)",
		"DatabaseUser team-a/app: spec.postgres.createRole is forbidden (privileges.forbidSuperuser)",
		"DatabaseUser team-a/app: spec.postgres.replication is forbidden (privileges.forbidSuperuser)",
		"DatabaseUser team-a/app: spec.postgres.bypassRLS is forbidden (privileges.forbidSuperuser)",
	}
}

test_superuser_role_is_reported_and_allowed_without_the_rule if {
	role := {"kind": "ClusterDatabaseRole", "metadata": {"name": "admin"}, "spec": {"roleName": "admin", "postgres": {"superuser": true}}}
	msgs(role, ceilings) == {"ClusterDatabaseRole admin: spec.postgres.superuser is forbidden (privileges.forbidSuperuser)"}
	count(msgs(role, {"forbidAllOnAll": true})) == 0
}

test_mysql_super_and_global_grant_option_are_reported if {
	g := grant({"mysql": {"grants": [
		{"level": "global", "privileges": ["super", "PROCESS"]},
		{"level": "global", "privileges": ["SELECT"], "withGrantOption": true},
		{"level": "database", "database": "app", "privileges": ["SELECT"], "withGrantOption": true},
	]}})
	msgs(g, ceilings) == {
		"DatabaseGrant team-a/g: spec.mysql.grants[0] grants SUPER (privileges.forbidSuperuser)",
		"DatabaseGrant team-a/g: spec.mysql.grants[1] grants GRANT OPTION on *.* (privileges.forbidSuperuser)",
	}
}

test_mysql_all_on_star_star_is_reported if {
	g := grant({"mysql": {"grants": [
		{"level": "global", "privileges": ["ALL PRIVILEGES"]},
		{"level": "database", "database": "*", "privileges": ["all"]},
		{"level": "database", "database": "app", "privileges": ["ALL"]},
	]}})
	msgs(g, ceilings) == {
		"DatabaseGrant team-a/g: spec.mysql.grants[0] grants ALL on *.* (privileges.forbidAllOnAll)",
		"DatabaseGrant team-a/g: spec.mysql.grants[1] grants ALL on *.* (privileges.forbidAllOnAll)",
	}
}

test_postgres_all_on_every_object_of_a_schema_is_reported if {
	g := grant({"postgres": {"grants": [
		{"database": "app", "schema": "public", "tables": ["*"], "privileges": ["ALL PRIVILEGES"]},
		{"database": "app", "schema": "public", "sequences": ["*"], "privileges": ["all"]},
		{"database": "app", "privileges": ["ALL"]},
		{"database": "app", "schema": "public", "tables": ["orders"], "privileges": ["ALL"]},
		{"database": "app", "schema": "public", "tables": ["*"], "privileges": ["SELECT"]},
	]}})
	msgs(g, ceilings) == {
		"DatabaseGrant team-a/g: spec.postgres.grants[0] grants ALL on all tables of schema public (privileges.forbidAllOnAll)",
		"DatabaseGrant team-a/g: spec.postgres.grants[1] grants ALL on all sequences of schema public (privileges.forbidAllOnAll)",
	}
}

allowed := {"allowed": {
	"database": ["CONNECT"],
	"schema": ["USAGE"],
	"table": ["SELECT", "INSERT", "UPDATE", "DELETE"],
	"global": ["PROCESS"],
	"mysqlDatabase": ["SELECT"],
}}

test_privileges_within_the_allowed_lists_pass if {
	g := grant({
		"postgres": {
			"grants": [
				{"database": "app", "privileges": ["connect"]},
				{"database": "app", "schema": "public", "privileges": ["USAGE"]},
				{"database": "app", "schema": "public", "tables": ["*"], "privileges": ["SELECT", "INSERT"]},
				{"database": "app", "schema": "public", "sequences": ["*"], "privileges": ["USAGE", "UPDATE"]},
			],
			"defaultPrivileges": [{"database": "app", "schema": "public", "grantedBy": "owner", "objectType": "tables", "privileges": ["SELECT"]}],
		},
		"mysql": {"grants": [
			{"level": "global", "privileges": ["PROCESS"]},
			{"level": "database", "database": "app", "privileges": ["SELECT"]},
			{"level": "column", "database": "app", "table": "t", "columns": ["c"], "privileges": ["UPDATE"]},
		]},
	})
	count(msgs(g, allowed)) == 0
}

test_privileges_beyond_the_allowed_lists_are_reported if {
	g := grant({
		"postgres": {
			"grants": [
				{"database": "app", "privileges": ["CREATE"]},
				{"database": "app", "schema": "public", "tables": ["orders"], "functions": ["f"], "privileges": ["TRUNCATE"]},
				{"database": "app", "schema": "public", "tables": ["orders"], "privileges": ["ALL PRIVILEGES"]},
			],
			"defaultPrivileges": [{"database": "app", "schema": "public", "grantedBy": "owner", "objectType": "tables", "privileges": ["DELETE", "TRIGGER"]}],
		},
		"mysql": {"grants": [
			{"level": "global", "privileges": ["RELOAD"]},
			{"level": "database", "database": "app", "privileges": ["SELECT", "DROP"]},
		]},
	})
	msgs(g, allowed) == {
		"DatabaseGrant team-a/g: spec.postgres.grants[0] grants CREATE on a database; allowed: CONNECT (privileges.allowed.database)",
		"DatabaseGrant team-a/g: spec.postgres.grants[1] grants TRUNCATE on a table; allowed: SELECT, INSERT, UPDATE, DELETE (privileges.allowed.table)",
		"DatabaseGrant team-a/g: spec.postgres.grants[2] grants ALL on a table; allowed: SELECT, INSERT, UPDATE, DELETE (privileges.allowed.table)",
		"DatabaseGrant team-a/g: spec.postgres.defaultPrivileges[0] grants TRIGGER on tables; allowed: SELECT, INSERT, UPDATE, DELETE (privileges.allowed.table)",
		"DatabaseGrant team-a/g: spec.mysql.grants[0] grants RELOAD at level global; allowed: PROCESS (privileges.allowed.global)",
		"DatabaseGrant team-a/g: spec.mysql.grants[1] grants DROP at level database; allowed: SELECT (privileges.allowed.mysqlDatabase)",
	}
}

test_all_is_allowed_when_listed if {
	g := grant({"postgres": {"grants": [{"database": "app", "schema": "s", "tables": ["t"], "privileges": ["ALL PRIVILEGES"]}]}})
	count(msgs(g, {"allowed": {"table": ["ALL"]}})) == 0
}

test_role_grants_are_checked if {
	role := {"kind": "DatabaseRole", "metadata": {"name": "r", "namespace": "team-a"}, "spec": {"roleName": "r", "postgres": {"grants": [{"database": "app", "schema": "public", "tables": ["*"], "privileges": ["ALL"]}]}}}
	msgs(role, ceilings) == {"DatabaseRole team-a/r: spec.postgres.grants[0] grants ALL on all tables of schema public (privileges.forbidAllOnAll)"}
}
