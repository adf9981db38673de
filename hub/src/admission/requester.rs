//! The `requested-by` mutation: stamps the Kubernetes user who created or last changed the
//! spec of a dbprov object into the annotation [`REQUESTED_BY_ANNOTATION`] (a JSON
//! [`Requester`]), and keeps that annotation from being forged (docs/admission.md).

use dbprov_contract::audit::{REQUESTED_BY_ANNOTATION, Requester};
use json_patch::{AddOperation, Patch, PatchOperation, RemoveOperation, jsonptr::PointerBuf};
use kube::core::{
    DynamicObject,
    admission::{AdmissionRequest, Operation},
};

/// The API group whose objects are stamped.
pub const GROUP: &str = "dbops.dbprovision.io";

/// What the webhook does with one admission request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Leave the object as it is (why, for the debug log).
    Keep(&'static str),
    /// Write this requester (CREATE, or an UPDATE that changed `spec`), replacing whatever
    /// the request carried.
    Stamp(Box<Requester>),
    /// The request changed the annotation without changing `spec`: put the old value back
    /// (`None`: there was none, so the new one goes).
    Restore(Option<String>),
}

/// Decides what to do with `request`. `hub_usernames` are the hub's own identities, which
/// never become the requester (their metadata patches must not replace a person); `now` is
/// the RFC 3339 admission time.
pub fn decide(
    request: &AdmissionRequest<DynamicObject>,
    hub_usernames: &[String],
    now: &str,
) -> Decision {
    if request.kind.group != GROUP {
        return Decision::Keep("not a dbprov kind");
    }
    if request.sub_resource.is_some() {
        // `/status` and other subresources carry no user intent about the spec.
        return Decision::Keep("subresource");
    }
    let Some(object) = &request.object else {
        return Decision::Keep("no object");
    };
    let username = request.user_info.username.as_deref().unwrap_or_default();
    if hub_usernames.iter().any(|u| u == username) {
        // The hub is trusted: it may also copy a requester onto objects it creates (a
        // scheduled backup inherits its schedule's requester).
        return Decision::Keep("the hub's own identity");
    }
    let spec_changed = match request.operation {
        Operation::Create => true,
        Operation::Update => match &request.old_object {
            Some(old) => old.data.get("spec") != object.data.get("spec"),
            // The apiserver always sends the old object on UPDATE; without it, who made
            // this request is still known, so it is stamped.
            None => true,
        },
        Operation::Delete | Operation::Connect => return Decision::Keep("not CREATE or UPDATE"),
    };
    if spec_changed {
        if username.is_empty() {
            // No authenticated name to record (the apiserver always sends one; anonymous is
            // `system:anonymous`): the hub never invents a user, and a written one goes.
            return Decision::Restore(None);
        }
        let info = &request.user_info;
        let operation = match request.operation {
            Operation::Create => "CREATE",
            _ => "UPDATE",
        };
        return Decision::Stamp(Box::new(Requester {
            username: username.to_owned(),
            uid: info.uid.clone().filter(|u| !u.is_empty()),
            groups: info.groups.clone().unwrap_or_default(),
            service_account: Requester::service_account_of(username),
            operation: operation.to_owned(),
            at: now.to_owned(),
        }));
    }
    let old = request
        .old_object
        .as_ref()
        .and_then(|o| annotation(o).map(str::to_owned));
    if annotation(object) == old.as_deref() {
        Decision::Keep("spec and annotation unchanged")
    } else {
        Decision::Restore(old)
    }
}

fn annotation(object: &DynamicObject) -> Option<&str> {
    object
        .metadata
        .annotations
        .as_ref()?
        .get(REQUESTED_BY_ANNOTATION)
        .map(String::as_str)
}

/// The JSON patch that carries out `decision` on `object` (`None`: nothing to change).
pub fn patch(decision: &Decision, object: &DynamicObject) -> Result<Option<Patch>, String> {
    let value = match decision {
        Decision::Keep(_) => return Ok(None),
        Decision::Stamp(requester) => Some(
            serde_json::to_string(requester)
                .map_err(|e| format!("serializing the requester: {e}"))?,
        ),
        Decision::Restore(old) => old.clone(),
    };
    let current = annotation(object);
    if current == value.as_deref() {
        return Ok(None);
    }
    let key = PointerBuf::from_tokens(["metadata", "annotations", REQUESTED_BY_ANNOTATION]);
    let op = match value {
        None => PatchOperation::Remove(RemoveOperation { path: key }),
        Some(value) if object.metadata.annotations.is_some() => {
            // `add` on an existing member replaces it (RFC 6902 4.1).
            PatchOperation::Add(AddOperation {
                path: key,
                value: value.into(),
            })
        }
        Some(value) => PatchOperation::Add(AddOperation {
            // No annotations map yet: a path into it would not resolve.
            path: PointerBuf::from_tokens(["metadata", "annotations"]),
            value: serde_json::json!({ REQUESTED_BY_ANNOTATION: value }),
        }),
    };
    Ok(Some(Patch(vec![op])))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: &str = "2026-12-01T12:00:00Z";

    fn hub() -> Vec<String> {
        vec!["system:serviceaccount:dbprov:dbprov-hub".to_owned()]
    }

    fn object(spec: serde_json::Value, annotation: Option<&str>) -> serde_json::Value {
        let mut meta = json!({"name": "app", "namespace": "team-a"});
        if let Some(a) = annotation {
            meta["annotations"] = json!({ REQUESTED_BY_ANNOTATION: a, "other": "x" });
        }
        json!({
            "apiVersion": "dbops.dbprovision.io/v1alpha1",
            "kind": "Database",
            "metadata": meta,
            "spec": spec,
        })
    }

    fn request(
        operation: &str,
        user: &str,
        object: serde_json::Value,
        old: Option<serde_json::Value>,
        sub_resource: Option<&str>,
    ) -> AdmissionRequest<DynamicObject> {
        let mut req = json!({
            "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
            "kind": {"group": GROUP, "version": "v1alpha1", "kind": "Database"},
            "resource": {"group": GROUP, "version": "v1alpha1", "resource": "databases"},
            "name": "app",
            "namespace": "team-a",
            "operation": operation,
            "userInfo": {
                "username": user,
                "uid": "u-1",
                "groups": ["system:serviceaccounts", "system:authenticated"],
            },
            "object": object,
            "oldObject": old,
            "dryRun": false,
        });
        if let Some(s) = sub_resource {
            req["subResource"] = json!(s);
        }
        let review: kube::core::admission::AdmissionReview<DynamicObject> =
            serde_json::from_value(json!({
                "apiVersion": "admission.k8s.io/v1",
                "kind": "AdmissionReview",
                "request": req,
            }))
            .unwrap();
        review.try_into().unwrap()
    }

    fn stamped(user: &str, operation: &str) -> String {
        serde_json::to_string(&Requester {
            username: user.to_owned(),
            uid: Some("u-1".to_owned()),
            groups: vec![
                "system:serviceaccounts".to_owned(),
                "system:authenticated".to_owned(),
            ],
            service_account: Requester::service_account_of(user),
            operation: operation.to_owned(),
            at: NOW.to_owned(),
        })
        .unwrap()
    }

    /// The object after the webhook's patch, as the apiserver would store it.
    fn applied(req: &AdmissionRequest<DynamicObject>) -> serde_json::Value {
        let object = req.object.clone().unwrap();
        let mut value = serde_json::to_value(&object).unwrap();
        if let Some(p) = patch(&decide(req, &hub(), NOW), &object).unwrap() {
            json_patch::patch(&mut value, &p).unwrap();
        }
        value
    }

    fn annotation_of(value: &serde_json::Value) -> Option<&str> {
        value["metadata"]["annotations"][REQUESTED_BY_ANNOTATION].as_str()
    }

    const A: &str = "system:serviceaccount:team-a:alice";
    const B: &str = "system:serviceaccount:team-a:bob";

    #[test]
    fn create_stamps_the_user_with_service_account_and_groups() {
        let req = request(
            "CREATE",
            A,
            object(json!({"name": "app"}), None),
            None,
            None,
        );
        let Decision::Stamp(r) = decide(&req, &hub(), NOW) else {
            panic!("expected a stamp")
        };
        assert_eq!(r.username, A);
        assert_eq!(r.service_account.as_deref(), Some("team-a/alice"));
        assert_eq!(r.uid.as_deref(), Some("u-1"));
        assert_eq!(r.groups.len(), 2);
        assert_eq!(r.operation, "CREATE");
        assert_eq!(r.at, NOW);
        // No annotations map yet: the patch adds the map.
        let out = applied(&req);
        assert_eq!(annotation_of(&out), Some(stamped(A, "CREATE").as_str()));
    }

    #[test]
    fn create_overwrites_a_forged_annotation() {
        let forged = r#"{"username":"ceo@example.com"}"#;
        let req = request(
            "CREATE",
            A,
            object(json!({"name": "app"}), Some(forged)),
            None,
            None,
        );
        let out = applied(&req);
        assert_eq!(annotation_of(&out), Some(stamped(A, "CREATE").as_str()));
        // Other annotations stay.
        assert_eq!(out["metadata"]["annotations"]["other"], "x");
    }

    #[test]
    fn spec_update_stamps_the_updater() {
        let old = object(json!({"name": "app"}), Some(&stamped(A, "CREATE")));
        let new = object(json!({"name": "app2"}), Some(&stamped(A, "CREATE")));
        let req = request("UPDATE", B, new, Some(old), None);
        assert_eq!(
            annotation_of(&applied(&req)),
            Some(stamped(B, "UPDATE").as_str())
        );
    }

    #[test]
    fn spec_update_with_forged_annotation_is_stamped() {
        let old = object(json!({"name": "app"}), Some(&stamped(A, "CREATE")));
        let new = object(json!({"name": "app2"}), Some("{\"username\":\"root\"}"));
        let req = request("UPDATE", B, new, Some(old), None);
        assert_eq!(
            annotation_of(&applied(&req)),
            Some(stamped(B, "UPDATE").as_str())
        );
    }

    #[test]
    fn metadata_only_update_keeps_the_requester() {
        let mut new = object(json!({"name": "app"}), Some(&stamped(B, "UPDATE")));
        new["metadata"]["labels"] = json!({"team": "a"});
        let old = object(json!({"name": "app"}), Some(&stamped(B, "UPDATE")));
        let req = request("UPDATE", A, new, Some(old), None);
        assert!(matches!(decide(&req, &hub(), NOW), Decision::Keep(_)));
        assert_eq!(
            patch(&decide(&req, &hub(), NOW), req.object.as_ref().unwrap()).unwrap(),
            None
        );
    }

    #[test]
    fn metadata_only_update_restores_a_changed_annotation() {
        let old = object(json!({"name": "app"}), Some(&stamped(B, "UPDATE")));
        let new = object(json!({"name": "app"}), Some("{\"username\":\"root\"}"));
        let req = request("UPDATE", A, new, Some(old), None);
        assert_eq!(
            decide(&req, &hub(), NOW),
            Decision::Restore(Some(stamped(B, "UPDATE")))
        );
        assert_eq!(
            annotation_of(&applied(&req)),
            Some(stamped(B, "UPDATE").as_str())
        );
    }

    #[test]
    fn metadata_only_update_restores_a_removed_annotation() {
        let old = object(json!({"name": "app"}), Some(&stamped(B, "UPDATE")));
        // The whole annotations map is gone: the patch must add the map back.
        let new = object(json!({"name": "app"}), None);
        let req = request("UPDATE", A, new, Some(old), None);
        assert_eq!(
            annotation_of(&applied(&req)),
            Some(stamped(B, "UPDATE").as_str())
        );
    }

    #[test]
    fn metadata_only_update_cannot_add_an_annotation_to_an_unstamped_object() {
        // Created while the webhook was down: the hub never invents a requester, and a user
        // cannot supply one either.
        let old = object(json!({"name": "app"}), None);
        let new = object(json!({"name": "app"}), Some("{\"username\":\"root\"}"));
        let req = request("UPDATE", A, new, Some(old), None);
        assert_eq!(decide(&req, &hub(), NOW), Decision::Restore(None));
        let out = applied(&req);
        assert_eq!(annotation_of(&out), None);
        assert_eq!(out["metadata"]["annotations"]["other"], "x");
    }

    #[test]
    fn the_hub_never_stamps_nor_is_restored() {
        let hub_user = hub()[0].clone();
        let create = request(
            "CREATE",
            &hub_user,
            object(json!({"name": "app"}), None),
            None,
            None,
        );
        assert!(matches!(decide(&create, &hub(), NOW), Decision::Keep(_)));
        let old = object(json!({"name": "app"}), Some(&stamped(B, "UPDATE")));
        let mut new = old.clone();
        new["metadata"]["finalizers"] = json!(["dbops.dbprovision.io/finalizer"]);
        new["spec"]["name"] = json!("changed-by-hub");
        let update = request("UPDATE", &hub_user, new, Some(old), None);
        assert_eq!(
            annotation_of(&applied(&update)),
            Some(stamped(B, "UPDATE").as_str())
        );
    }

    #[test]
    fn status_subresource_is_left_alone() {
        let old = object(json!({"name": "app"}), Some(&stamped(B, "UPDATE")));
        let new = object(json!({"name": "changed"}), None);
        let req = request("UPDATE", A, new, Some(old), Some("status"));
        assert_eq!(decide(&req, &hub(), NOW), Decision::Keep("subresource"));
    }

    #[test]
    fn other_groups_are_left_alone() {
        let mut req = request("CREATE", A, object(json!({}), None), None, None);
        req.kind.group = "apps".to_owned();
        assert!(matches!(decide(&req, &hub(), NOW), Decision::Keep(_)));
    }

    #[test]
    fn a_user_without_a_name_is_not_invented() {
        let req = request(
            "CREATE",
            "",
            object(json!({"name": "app"}), Some("{\"username\":\"root\"}")),
            None,
            None,
        );
        assert_eq!(annotation_of(&applied(&req)), None);
    }

    #[test]
    fn a_person_is_not_a_service_account() {
        let req = request(
            "CREATE",
            "alice@example.com",
            object(json!({"name": "app"}), None),
            None,
            None,
        );
        let Decision::Stamp(r) = decide(&req, &hub(), NOW) else {
            panic!("expected a stamp")
        };
        assert_eq!(r.service_account, None);
    }
}
