//! The OpenAPI document and the router describe the same HTTP surface: every
//! route is documented with its methods and path parameters, and nothing is
//! documented that is not served.

use std::collections::BTreeSet;

use serde_json::Value;

fn document() -> Value {
    serde_json::from_str(haneul_dicomweb::OPENAPI).expect("openapi.json is JSON")
}

/// Follow a local `$ref` (`#/components/...`).
fn resolve<'a>(document: &'a Value, value: &'a Value) -> &'a Value {
    let Some(reference) = value.get("$ref").and_then(Value::as_str) else {
        return value;
    };
    let pointer = reference.strip_prefix('#').unwrap_or_else(|| panic!("only local references: {reference}"));
    document.pointer(pointer).unwrap_or_else(|| panic!("{reference} points nowhere"))
}

fn path_names(template: &str) -> BTreeSet<String> {
    template
        .split('/')
        .filter_map(|segment| segment.strip_prefix('{').and_then(|rest| rest.strip_suffix('}')))
        .map(str::to_string)
        .collect()
}

const METHODS: [&str; 5] = ["get", "post", "put", "delete", "patch"];

#[test]
fn every_route_is_documented_and_every_documented_path_is_served() {
    let document = document();
    let documented: BTreeSet<(String, String)> = document["paths"]
        .as_object()
        .expect("paths")
        .iter()
        .flat_map(|(path, item)| {
            METHODS
                .iter()
                .filter(|method| item.get(**method).is_some())
                .map(move |method| (path.clone(), method.to_string()))
        })
        .collect();
    let mut served: BTreeSet<(String, String)> = haneul_dicomweb::routes("/dicom-web")
        .iter()
        .flat_map(|route| {
            route.methods.iter().map(move |(method, _)| (route.path.clone(), method.to_ascii_lowercase()))
        })
        .collect();
    // `haneul serve` merges in the built-in viewer's static files.
    served.extend(haneul_viewer::PATHS.iter().map(|path| (path.to_string(), "get".to_string())));
    let undocumented: Vec<_> = served.difference(&documented).collect();
    let not_served: Vec<_> = documented.difference(&served).collect();
    assert!(undocumented.is_empty(), "routes missing from openapi.json: {undocumented:?}");
    assert!(not_served.is_empty(), "openapi.json documents what the router does not serve: {not_served:?}");
}

#[test]
fn path_parameters_match_the_templates() {
    let document = document();
    for (path, item) in document["paths"].as_object().expect("paths") {
        for method in METHODS {
            let Some(operation) = item.get(method) else { continue };
            let declared: BTreeSet<String> = operation
                .get("parameters")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(|parameter| resolve(&document, parameter))
                .filter(|parameter| parameter["in"] == "path")
                .map(|parameter| {
                    assert_eq!(parameter["required"], true, "{method} {path}: path parameters are required");
                    parameter["name"].as_str().expect("parameter name").to_string()
                })
                .collect();
            assert_eq!(declared, path_names(path), "{method} {path}: path parameters");
            assert!(operation["operationId"].is_string(), "{method} {path}: operationId");
            let responses = operation["responses"].as_object().expect("responses");
            assert!(responses.keys().any(|status| status.starts_with('2')), "{method} {path}: no success response");
            for response in responses.values() {
                assert!(
                    resolve(&document, response)["description"].is_string(),
                    "{method} {path}: response description"
                );
            }
        }
    }
}

#[test]
fn operation_ids_are_unique() {
    let document = document();
    let mut seen = BTreeSet::new();
    for item in document["paths"].as_object().expect("paths").values() {
        for method in METHODS {
            if let Some(id) = item.get(method).and_then(|operation| operation["operationId"].as_str()) {
                assert!(seen.insert(id.to_string()), "operationId {id} is used twice");
            }
        }
    }
}

#[test]
fn routes_follow_the_configured_base_path() {
    let routes = haneul_dicomweb::routes("/pacs/web");
    assert!(routes.iter().any(|route| route.path == "/pacs/web/studies"));
    let outside = ["/api/", "/wado", "/metrics"];
    for route in &routes {
        let fixed = outside.iter().any(|prefix| route.path.starts_with(prefix));
        assert!(fixed || route.path.starts_with("/pacs/web/"), "{} ignores the base path", route.path);
    }
}
