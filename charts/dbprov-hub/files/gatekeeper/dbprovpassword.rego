# DbprovPassword: the password rules a DatabaseUser's spec can show (DatabasePolicy
# spec.passwordPolicy). The hub's agent also generates every password to satisfy the whole
# policy and checks supplied ones (character classes, forbidden patterns); those rules need the
# password itself and have no Gatekeeper counterpart.
#   minLength                spec.passwordSecret.length (default 32) at least this, for
#                            generated passwords (not with spec.existingPasswordSecret).
#   requireSpecialChars      spec.passwordSecret.includeSpecialChars (default true) not false,
#                            for generated passwords.
#   requireRotation          spec.passwordRotation.enabled must be true.
#   maxRotationAge           spec.passwordRotation.maxAge, when set, at most this (e.g. 90d;
#                            units ns us ms s m h d w).
#   forbidExistingPasswords  no spec.existingPasswordSecret (only generated passwords).
package dbprovpassword

import future.keywords.contains
import future.keywords.if
import future.keywords.in

obj := input.review.object

params := object.get(input, "parameters", {})

subject := sprintf("%v %v/%v", [obj.kind, obj.metadata.namespace, obj.metadata.name])

is_user if obj.kind == "DatabaseUser"

generated if {
	obj.spec.passwordSecret
	not obj.spec.existingPasswordSecret
	object.get(obj.spec.passwordSecret, "generate", true) != false
}

violation contains {"msg": msg} if {
	is_user
	minimum := params.minLength
	generated
	length := object.get(obj.spec.passwordSecret, "length", 32)
	length < minimum
	msg := sprintf("%v: spec.passwordSecret.length is %v, the policy requires at least %v (passwordPolicy.minLength)", [subject, length, minimum])
}

violation contains {"msg": msg} if {
	is_user
	params.requireSpecialChars == true
	generated
	object.get(obj.spec.passwordSecret, "includeSpecialChars", true) == false
	msg := sprintf("%v: spec.passwordSecret.includeSpecialChars must not be false (passwordPolicy.requireSpecialChars)", [subject])
}

violation contains {"msg": msg} if {
	is_user
	params.requireRotation == true
	object.get(obj, ["spec", "passwordRotation", "enabled"], false) != true
	msg := sprintf("%v: spec.passwordRotation.enabled must be true (passwordPolicy.requireRotation)", [subject])
}

violation contains {"msg": msg} if {
	is_user
	limit := params.maxRotationAge
	age := obj.spec.passwordRotation.maxAge
	nanoseconds(age) > nanoseconds(limit)
	msg := sprintf("%v: spec.passwordRotation.maxAge %q is longer than %v (passwordPolicy.maxRotationAge)", [subject, age, limit])
}

unit_ns := {
	"ns": 1,
	"us": 1000,
	"µs": 1000,
	"ms": 1000000,
	"s": 1000000000,
	"m": 60000000000,
	"h": 3600000000000,
	"d": 86400000000000,
	"w": 604800000000000,
}

# A duration such as 90d, 12h30m or 1.5w, in nanoseconds.
nanoseconds(d) := sum([ns |
	some part in regex.find_all_string_submatch_n(`([0-9]+(?:\.[0-9]+)?)(ns|us|µs|ms|s|m|h|d|w)`, d, -1)
	ns := to_number(part[1]) * unit_ns[part[2]]
])

violation contains {"msg": msg} if {
	is_user
	params.forbidExistingPasswords == true
	obj.spec.existingPasswordSecret
	msg := sprintf("%v: spec.existingPasswordSecret is forbidden, passwords must be generated (passwordPolicy.forbidExistingPasswords)", [subject])
}
