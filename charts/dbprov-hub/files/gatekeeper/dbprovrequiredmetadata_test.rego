package dbprovrequiredmetadata_test

import data.dbprovrequiredmetadata

import future.keywords.if
import future.keywords.in

params := {
	"requiredLabels": [{"key": "team"}, {"key": "env", "valuePattern": "^(dev|staging|prod)$"}],
	"requiredAnnotations": [{"key": "example.com/owner", "valuePattern": "@example\\.com$"}],
}

database(labels, annotations) := {
	"apiVersion": "dbops.dbprovision.io/v1alpha1",
	"kind": "Database",
	"metadata": {"name": "orders", "namespace": "payments", "labels": labels, "annotations": annotations},
	"spec": {"name": "payments_orders", "instanceRef": {"name": "pg"}},
}

review(o) := {"review": {"object": o}, "parameters": params}

test_compliant_database_passes if {
	o := database({"team": "payments", "env": "prod"}, {"example.com/owner": "ann@example.com"})
	count(dbprovrequiredmetadata.violation) == 0 with input as review(o)
}

test_missing_label_and_annotation_are_reported if {
	o := database({"env": "prod"}, {})
	v := dbprovrequiredmetadata.violation with input as review(o)
	count(v) == 2
	some a in v
	contains(a.msg, "Database payments/orders must have the label \"team\"")
	some b in v
	contains(b.msg, "must have the annotation \"example.com/owner\"")
}

test_empty_label_value_is_missing if {
	o := database({"team": "", "env": "dev"}, {"example.com/owner": "ann@example.com"})
	v := dbprovrequiredmetadata.violation with input as review(o)
	count(v) == 1
	some a in v
	contains(a.msg, "label \"team\"")
}

test_value_not_matching_pattern_is_reported if {
	o := database({"team": "payments", "env": "production"}, {"example.com/owner": "ann@elsewhere.org"})
	v := dbprovrequiredmetadata.violation with input as review(o)
	count(v) == 2
	some a in v
	contains(a.msg, "label \"env\" is \"production\", which does not match")
	some b in v
	contains(b.msg, "annotation \"example.com/owner\" is \"ann@elsewhere.org\"")
}

test_cluster_scoped_object_without_labels if {
	o := {
		"kind": "ClusterDatabaseInstance",
		"metadata": {"name": "shared-pg"},
		"spec": {"engine": "postgres"},
	}
	v := dbprovrequiredmetadata.violation with input as {"review": {"object": o}, "parameters": {"requiredLabels": [{"key": "team"}]}}
	v == {{"msg": "ClusterDatabaseInstance shared-pg must have the label \"team\" (requiredLabels/requiredAnnotations)"}}
}

test_no_parameters_no_violations if {
	o := database({}, {})
	count(dbprovrequiredmetadata.violation) == 0 with input as {"review": {"object": o}, "parameters": {}}
}
