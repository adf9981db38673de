# DbprovPrivileges: privilege ceilings for users, roles and grants (DatabasePolicy
# spec.privileges).
#   forbidSuperuser  no spec.postgres.superuser, createRole, replication or bypassRLS on
#                    DatabaseUser, DatabaseRole and ClusterDatabaseRole; no MySQL SUPER and no
#                    GRANT OPTION at the global level (*.*) in any MySQL grant.
#   forbidAllOnAll   no ALL [PRIVILEGES] at MySQL's global level (or on database "*") or on
#                    every object of a PostgreSQL schema ("*" in tables, sequences or functions).
#   allowed          privileges allowed per object type; a type not listed is not limited.
#                    PostgreSQL: a grant without schema is `database`, one with a schema and
#                    no objects is `schema`, then `table`, `sequence`, `function` by the lists
#                    it names (defaultPrivileges by objectType). MySQL: level global is
#                    `global`, database is `mysqlDatabase`, table and column are `table`,
#                    procedure and function are `function`. ALL and ALL PRIVILEGES are the
#                    same privilege, allowed only when listed.
# Grants are read from spec.postgres.grants and spec.mysql.grants (DatabaseGrant,
# ClusterDatabaseGrant, DatabaseRole, ClusterDatabaseRole) and spec.postgres.defaultPrivileges
# (DatabaseGrant, ClusterDatabaseGrant, Database).
package dbprovprivileges

import future.keywords.contains
import future.keywords.if
import future.keywords.in

obj := input.review.object

params := object.get(input, "parameters", {})

subject := sprintf("%v %v", [obj.kind, name]) if {
	not obj.metadata.namespace
	name := obj.metadata.name
} else := sprintf("%v %v/%v", [obj.kind, obj.metadata.namespace, obj.metadata.name])

# Upper case, single spaces; ALL PRIVILEGES is ALL.
norm(p) := "ALL" if {
	concat(" ", split_words(p)) in {"ALL", "ALL PRIVILEGES"}
} else := concat(" ", split_words(p))

split_words(p) := [w | some w in split(upper(trim_space(p)), " "); w != ""]

is_all(privileges) if {
	some p in privileges
	norm(p) == "ALL"
}

# ---- superuser -------------------------------------------------------------------------

role_kinds := {"DatabaseUser", "DatabaseRole", "ClusterDatabaseRole"}

violation contains {"msg": msg} if {
	params.forbidSuperuser == true
	obj.kind in role_kinds
	some flag in ["superuser", "createRole", "replication", "bypassRLS"]
	object.get(obj, ["spec", "postgres", flag], false) == true
	msg := sprintf("%v: spec.postgres.%v is forbidden (privileges.forbidSuperuser)", [subject, flag])
}

violation contains {"msg": msg} if {
	params.forbidSuperuser == true
	some i, g in mysql_grants
	some p in g.privileges
	norm(p) == "SUPER"
	msg := sprintf("%v: spec.mysql.grants[%v] grants SUPER (privileges.forbidSuperuser)", [subject, i])
}

violation contains {"msg": msg} if {
	params.forbidSuperuser == true
	some i, g in mysql_grants
	g.level == "global"
	global_grant_option(g)
	msg := sprintf("%v: spec.mysql.grants[%v] grants GRANT OPTION on *.* (privileges.forbidSuperuser)", [subject, i])
}

global_grant_option(g) if object.get(g, "withGrantOption", false) == true

global_grant_option(g) if {
	some p in g.privileges
	norm(p) == "GRANT OPTION"
}

# ---- ALL on all ------------------------------------------------------------------------

violation contains {"msg": msg} if {
	params.forbidAllOnAll == true
	some i, g in mysql_grants
	mysql_everything(g)
	is_all(g.privileges)
	msg := sprintf("%v: spec.mysql.grants[%v] grants ALL on *.* (privileges.forbidAllOnAll)", [subject, i])
}

mysql_everything(g) if g.level == "global"

mysql_everything(g) if {
	g.level == "database"
	g.database == "*"
}

violation contains {"msg": msg} if {
	params.forbidAllOnAll == true
	some i, g in postgres_grants
	some field in ["tables", "sequences", "functions"]
	"*" in object.get(g, field, [])
	is_all(g.privileges)
	msg := sprintf("%v: spec.postgres.grants[%v] grants ALL on all %v of schema %v (privileges.forbidAllOnAll)", [subject, i, field, g.schema])
}

# ---- allowed privileges per object type ------------------------------------------------

violation contains {"msg": msg} if {
	some i, g in postgres_grants
	some type in postgres_types(g)
	some p in g.privileges
	not privilege_allowed(type, p)
	msg := sprintf("%v: spec.postgres.grants[%v] grants %v on a %v; allowed: %v (privileges.allowed.%v)", [subject, i, norm(p), type, concat(", ", params.allowed[type]), type])
}

violation contains {"msg": msg} if {
	some i, d in postgres_default_privileges
	type := default_privilege_types[d.objectType]
	some p in d.privileges
	not privilege_allowed(type, p)
	msg := sprintf("%v: spec.postgres.defaultPrivileges[%v] grants %v on %v; allowed: %v (privileges.allowed.%v)", [subject, i, norm(p), d.objectType, concat(", ", params.allowed[type]), type])
}

violation contains {"msg": msg} if {
	some i, g in mysql_grants
	type := mysql_types[g.level]
	some p in g.privileges
	not privilege_allowed(type, p)
	msg := sprintf("%v: spec.mysql.grants[%v] grants %v at level %v; allowed: %v (privileges.allowed.%v)", [subject, i, norm(p), g.level, concat(", ", params.allowed[type]), type])
}

# Undefined (so not a violation) when the type is not limited.
privilege_allowed(type, _) if {
	not params.allowed[type]
}

privilege_allowed(type, p) if {
	some a in params.allowed[type]
	norm(a) == norm(p)
}

postgres_types(g) := {"database"} if not g.schema

postgres_types(g) := {"schema"} if {
	g.schema
	objects_named(g) == 0
}

postgres_types(g) := types if {
	g.schema
	types := {t |
		some field, t in {"tables": "table", "sequences": "sequence", "functions": "function"}
		count(object.get(g, field, [])) > 0
	}
	count(types) > 0
}

objects_named(g) := sum([n | some field in ["tables", "sequences", "functions"]; n := count(object.get(g, field, []))])

default_privilege_types := {"tables": "table", "sequences": "sequence", "functions": "function"}

mysql_types := {
	"global": "global",
	"database": "mysqlDatabase",
	"table": "table",
	"column": "table",
	"procedure": "function",
	"function": "function",
}

postgres_grants := object.get(obj, ["spec", "postgres", "grants"], [])

postgres_default_privileges := object.get(obj, ["spec", "postgres", "defaultPrivileges"], [])

mysql_grants := object.get(obj, ["spec", "mysql", "grants"], [])
