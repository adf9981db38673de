# DbprovRequiredMetadata: the labels and annotations every matching dbprov resource must carry
# (DatabasePolicy spec.requiredLabels / spec.requiredAnnotations). A key must be present with
# a non-empty value; with valuePattern, the value must match that RE2 expression (unanchored,
# like CEL's matches(): write ^...$ to match the whole value).
package dbprovrequiredmetadata

import future.keywords.contains
import future.keywords.if
import future.keywords.in

obj := input.review.object

subject := sprintf("%v %v", [obj.kind, name]) if {
	not obj.metadata.namespace
	name := obj.metadata.name
} else := sprintf("%v %v/%v", [obj.kind, obj.metadata.namespace, obj.metadata.name])

violation contains {"msg": msg} if {
	some rule in object.get(input.parameters, "requiredLabels", [])
	msg := metadata_violation(rule, "label", object.get(obj.metadata, "labels", {}))
}

violation contains {"msg": msg} if {
	some rule in object.get(input.parameters, "requiredAnnotations", [])
	msg := metadata_violation(rule, "annotation", object.get(obj.metadata, "annotations", {}))
}

metadata_violation(rule, what, present) := msg if {
	object.get(present, rule.key, "") == ""
	msg := sprintf("%v must have the %v %q (requiredLabels/requiredAnnotations)", [subject, what, rule.key])
}

metadata_violation(rule, what, present) := msg if {
	value := object.get(present, rule.key, "")
	value != ""
	pattern := object.get(rule, "valuePattern", "")
	pattern != ""
	not regex.match(pattern, value)
	msg := sprintf("%v: %v %q is %q, which does not match %q", [subject, what, rule.key, value, pattern])
}
