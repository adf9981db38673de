package dbprovpassword_test

import data.dbprovpassword

import future.keywords.if
import future.keywords.in

params := {
	"minLength": 24,
	"requireSpecialChars": true,
	"requireRotation": true,
	"maxRotationAge": "90d",
	"forbidExistingPasswords": true,
}

msgs(spec, p) := {v.msg | some v in dbprovpassword.violation with input as {"review": {"object": user(spec)}, "parameters": p}}

user(spec) := {"kind": "DatabaseUser", "metadata": {"name": "app", "namespace": "team-a"}, "spec": object.union({"username": "app", "instanceRef": {"name": "pg"}}, spec)}

test_generated_rotated_password_passes if {
	spec := {
		"passwordSecret": {"secretName": "app-credentials", "length": 32, "includeSpecialChars": true},
		"passwordRotation": {"enabled": true, "maxAge": "30d"},
	}
	count(msgs(spec, params)) == 0
}

test_defaults_of_the_password_secret_satisfy_length_and_specials if {
	spec := {"passwordSecret": {"secretName": "app-credentials"}, "passwordRotation": {"enabled": true, "maxAge": "2160h"}}
	count(msgs(spec, params)) == 0
}

test_weak_unrotated_password_is_reported if {
	spec := {"passwordSecret": {"secretName": "app-credentials", "length": 12, "includeSpecialChars": false}}
	msgs(spec, params) == {
		"DatabaseUser team-a/app: spec.passwordSecret.length is 12, the policy requires at least 24 (passwordPolicy.minLength)",
		"DatabaseUser team-a/app: spec.passwordSecret.includeSpecialChars must not be false (passwordPolicy.requireSpecialChars)",
		"DatabaseUser team-a/app: spec.passwordRotation.enabled must be true (passwordPolicy.requireRotation)",
	}
}

test_rotation_age_beyond_the_limit_is_reported if {
	spec := {"passwordSecret": {"secretName": "s"}, "passwordRotation": {"enabled": true, "maxAge": "13w"}}
	msgs(spec, params) == {"DatabaseUser team-a/app: spec.passwordRotation.maxAge \"13w\" is longer than 90d (passwordPolicy.maxRotationAge)"}
	count(msgs(object.union(spec, {"passwordRotation": {"maxAge": "12w6d"}}), params)) == 0
	count(msgs(object.union(spec, {"passwordRotation": {"maxAge": "89d23h59m"}}), params)) == 0
}

test_existing_password_secret_is_reported if {
	spec := {
		"existingPasswordSecret": {"name": "legacy", "key": "password"},
		"passwordSecret": {"secretName": "s", "generate": false, "length": 8, "includeSpecialChars": false},
		"passwordRotation": {"enabled": true, "maxAge": "90d"},
	}
	msgs(spec, params) == {"DatabaseUser team-a/app: spec.existingPasswordSecret is forbidden, passwords must be generated (passwordPolicy.forbidExistingPasswords)"}

	# Supplied passwords are the agent's to check: without the rule, nothing here.
	count(msgs(spec, {"minLength": 24})) == 0
}

test_rotation_without_max_age_is_left_to_require_rotation if {
	spec := {"passwordSecret": {"secretName": "s"}, "passwordRotation": {"enabled": true, "schedule": "0 3 1 * *"}}
	count(msgs(spec, params)) == 0
}

test_durations_in_nanoseconds if {
	dbprovpassword.nanoseconds("90d") == 7776000 * 1000000000
	dbprovpassword.nanoseconds("1h30m") == 5400 * 1000000000
	dbprovpassword.nanoseconds("1.5w") == 907200 * 1000000000
	dbprovpassword.nanoseconds("500ms") == 500000000
	dbprovpassword.nanoseconds("1m30s250ms") == 90250000000
}

test_other_kinds_are_not_checked if {
	o := {"kind": "Database", "metadata": {"name": "d", "namespace": "team-a"}, "spec": {"name": "d"}}
	count(dbprovpassword.violation) == 0 with input as {"review": {"object": o}, "parameters": params}
}
