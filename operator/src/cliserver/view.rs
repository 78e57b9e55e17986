//! What the cliserver shows of a `NetworkConfiguration`: the spec and, from its managedFields,
//! which manager declared each entry.

use api::merge::{Owners, RouteOwners};
use api::wire::{ConfigView, StatusView};
use api::{NetworkConfiguration, RouteKey};
use kube::ResourceExt;
use serde_json::Value;

/// The list-map keys under `f:spec.f:<list>` of one managedFields entry.
fn keys<'a>(fields: &'a Value, list: &str) -> impl Iterator<Item = Value> + 'a {
    let entries = fields
        .get("f:spec")
        .and_then(|s| s.get(format!("f:{list}")))
        .and_then(Value::as_object);
    entries
        .into_iter()
        .flat_map(|m| m.keys())
        .filter_map(|k| k.strip_prefix("k:"))
        .filter_map(|k| serde_json::from_str(k).ok())
}

/// Which manager declared each interface and route, from server-side apply's field sets.
pub fn owners(cr: &NetworkConfiguration) -> Owners {
    let mut owners = Owners::default();
    for entry in cr.managed_fields() {
        let (Some(manager), Some(fields)) = (&entry.manager, &entry.fields_v1) else {
            continue;
        };
        for key in keys(&fields.0, "interfaces") {
            if let Some(name) = key.get("name").and_then(Value::as_str) {
                let managers = owners.interfaces.entry(name.to_string()).or_default();
                if !managers.contains(manager) {
                    managers.push(manager.clone());
                    managers.sort();
                }
            }
        }
        for key in keys(&fields.0, "routes") {
            let Ok(key) = serde_json::from_value::<RouteKey>(key) else {
                continue;
            };
            match owners.routes.iter_mut().find(|r| r.key == key) {
                Some(r) if !r.managers.contains(manager) => {
                    r.managers.push(manager.clone());
                    r.managers.sort();
                }
                Some(_) => {}
                None => owners.routes.push(RouteOwners {
                    key,
                    managers: vec![manager.clone()],
                }),
            }
        }
    }
    owners.routes.sort_by(|a, b| a.key.cmp(&b.key));
    owners
}

/// Whether `manager` holds any field of the spec.
pub fn manages_spec(cr: &NetworkConfiguration, manager: &str) -> bool {
    cr.managed_fields().iter().any(|e| {
        e.manager.as_deref() == Some(manager)
            && e.fields_v1
                .as_ref()
                .is_some_and(|f| f.0.get("f:spec").is_some())
    })
}

pub fn config_view(cr: &NetworkConfiguration) -> ConfigView {
    ConfigView {
        pod: cr.name_any(),
        generation: cr.metadata.generation.unwrap_or_default(),
        spec: std::sync::Arc::new(cr.spec.clone()),
        owners: std::sync::Arc::new(owners(cr)),
    }
}

pub fn status_view(cr: &NetworkConfiguration) -> StatusView {
    StatusView {
        pod: cr.name_any(),
        generation: cr.metadata.generation.unwrap_or_default(),
        status: cr.status.clone().unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn owners_come_from_the_managed_fields_of_each_manager() {
        let cr: NetworkConfiguration = serde_json::from_value(json!({
            "apiVersion": "nes.network-config.io/v1alpha1",
            "kind": "NetworkConfiguration",
            "metadata": {"name": "web-0", "namespace": "app", "generation": 3, "managedFields": [
                {"manager": "b", "operation": "Apply", "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {
                    "f:interfaces": {"k:{\"name\":\"eth0\"}": {".": {}, "f:name": {}}},
                    "f:routes": {"k:{\"dst\":\"10.0.0.0/8\",\"metric\":0,\"table\":254}": {".": {}}}}}},
                {"manager": "a", "operation": "Apply", "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {
                    "f:interfaces": {"k:{\"name\":\"eth0\"}": {"f:mtu": {}}, "k:{\"name\":\"vlan10\"}": {}}}}},
                {"manager": "nes-operator", "operation": "Apply", "fieldsType": "FieldsV1", "fieldsV1": {"f:metadata": {"f:labels": {}}}},
                {"manager": "nes-agent", "operation": "Update", "subresource": "status", "fieldsType": "FieldsV1", "fieldsV1": {"f:status": {}}}
            ]},
            "spec": {"interfaces": [{"name": "eth0", "mtu": 1400}, {"name": "vlan10", "type": "vlan", "parent": "eth0", "vlanId": 10}],
                     "routes": [{"dst": "10.0.0.0/8", "dev": "eth0"}]}
        }))
        .unwrap();
        let view = config_view(&cr);
        assert_eq!(view.generation, 3);
        assert_eq!(view.owners.interfaces["eth0"], vec!["a", "b"]);
        assert_eq!(view.owners.interfaces["vlan10"], vec!["a"]);
        assert_eq!(view.owners.routes.len(), 1);
        assert_eq!(view.owners.routes[0].key.dst, "10.0.0.0/8");
        assert_eq!(view.owners.routes[0].managers, vec!["b"]);
        assert!(manages_spec(&cr, "a") && !manages_spec(&cr, "nes-operator"));
        assert!(!manages_spec(&cr, "nes-agent"));
    }
}
