# DbprovNaming: naming rules for names inside the database (DatabasePolicy spec.naming).
# Each rule has a pattern (RE2, unanchored: write ^...$), a prefix, or both, and an optional
# message shown on violation:
#   database  Database.spec.name
#   user      DatabaseUser.spec.username
#   role      DatabaseRole.spec.roleName and ClusterDatabaseRole.spec.roleName
#   resource  metadata.name of every matching resource
# In a prefix, {namespace} stands for the resource's namespace with "-" read as "_" (team
# "team-a" and prefix "{namespace}_" require names starting with "team_a_"). A cluster-scoped
# resource has no namespace: a prefix containing {namespace} is not checked on it.
package dbprovnaming

import future.keywords.contains
import future.keywords.if
import future.keywords.in

obj := input.review.object

subject := sprintf("%v %v", [obj.kind, name]) if {
	not obj.metadata.namespace
	name := obj.metadata.name
} else := sprintf("%v %v/%v", [obj.kind, obj.metadata.namespace, obj.metadata.name])

# (rule name, field, value) of each name the parameters can constrain on this object.
names contains ["database", "spec.name", obj.spec.name] if obj.kind == "Database"

names contains ["user", "spec.username", obj.spec.username] if obj.kind == "DatabaseUser"

names contains ["role", "spec.roleName", obj.spec.roleName] if obj.kind in {"DatabaseRole", "ClusterDatabaseRole"}

names contains ["resource", "metadata.name", obj.metadata.name]

violation contains {"msg": msg} if {
	some [rule_name, field, value] in names
	rule := input.parameters[rule_name]
	pattern := object.get(rule, "pattern", "")
	pattern != ""
	not regex.match(pattern, value)
	msg := explain(rule, sprintf("%v: %v %q does not match %q (naming.%v)", [subject, field, value, pattern, rule_name]))
}

violation contains {"msg": msg} if {
	some [rule_name, field, value] in names
	rule := input.parameters[rule_name]
	prefix := expanded_prefix(object.get(rule, "prefix", ""))
	prefix != ""
	not startswith(value, prefix)
	msg := explain(rule, sprintf("%v: %v %q must start with %q (naming.%v)", [subject, field, value, prefix, rule_name]))
}

expanded_prefix(prefix) := prefix if not contains(prefix, "{namespace}")

expanded_prefix(prefix) := replace(prefix, "{namespace}", replace(obj.metadata.namespace, "-", "_")) if {
	contains(prefix, "{namespace}")
	obj.metadata.namespace != ""
}

# The rule's own message first, when it has one.
explain(rule, detail) := sprintf("%v (%v)", [rule.message, detail]) if {
	object.get(rule, "message", "") != ""
} else := detail
