//! Placement, resource classes and secrets against the mocked API: the exact pod the
//! provider creates, and the jobs it refuses.

use std::collections::BTreeMap;

use serde_json::json;

use super::*;
use crate::job::SecretRef;

/// A provider that allows `pool`, `zone/*`, taint `dedicated` and secrets `app-*`, with
/// a server-wide node selector and toleration and a `gpu` class.
async fn placing_provider(api: &FakeApi) -> KubernetesProvider {
    provider_with(
        api,
        KubernetesSettings {
            node_selector: BTreeMap::from([
                ("os".to_owned(), "linux".to_owned()),
                ("pool".to_owned(), "default".to_owned()),
            ]),
            tolerations: vec![hodei_k8s::Toleration {
                key: Some("base".into()),
                operator: Some("Exists".into()),
                effect: Some("NoSchedule".into()),
                ..hodei_k8s::Toleration::default()
            }],
            allowed_node_selectors: vec!["pool".into(), "zone/*".into()],
            allowed_tolerations: vec!["dedicated".into()],
            allowed_secrets: vec!["app-*".into()],
            resource_classes: parse_resource_classes(
                r#"{"gpu": {"cpu": "4", "memory": "16Gi", "ephemeral_storage": "40Gi",
                    "node_selector": {"accelerator": "a100"},
                    "tolerations": ["nvidia.com/gpu:NoSchedule"]}}"#,
            )
            .unwrap(),
            ..KubernetesSettings::default()
        },
    )
    .await
}

async fn created_pod(provider: &KubernetesProvider, api: &FakeApi, spec: JobSpec) -> Value {
    provider.provision(launch(spec)).await.unwrap();
    api.created.lock().unwrap().last().cloned().unwrap()
}

#[tokio::test]
async fn the_jobs_node_selector_and_tolerations_merge_over_the_servers() {
    let api = FakeApi::default();
    let provider = placing_provider(&api).await;
    let spec = JobSpec::builder("true")
        .node_selector(BTreeMap::from([
            ("pool".to_owned(), "batch".to_owned()),
            ("zone/rack".to_owned(), "r7".to_owned()),
        ]))
        .tolerations(vec!["dedicated=ci:NoSchedule".parse().unwrap()])
        .node_affinity(vec!["zone/rack notin (r1,r2)".parse().unwrap()])
        .build()
        .unwrap();
    provider.check_spec(&spec).unwrap();
    let pod = created_pod(&provider, &api, spec).await;
    assert_eq!(
        pod["spec"]["nodeSelector"],
        json!({"os": "linux", "pool": "batch", "zone/rack": "r7"})
    );
    assert_eq!(
        pod["spec"]["tolerations"],
        json!([
            {"key": "base", "operator": "Exists", "effect": "NoSchedule"},
            {"key": "dedicated", "operator": "Equal", "value": "ci", "effect": "NoSchedule"},
        ])
    );
    assert_eq!(
        pod["spec"]["affinity"],
        json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchExpressions": [
            {"key": "zone/rack", "operator": "NotIn", "values": ["r1", "r2"]},
        ]}]}}})
    );
}

#[tokio::test]
async fn a_jobs_ephemeral_storage_is_its_request_and_limit_and_caps_the_scratch_volumes() {
    let api = FakeApi::default();
    let provider = placing_provider(&api).await;
    let spec = JobSpec::builder("true")
        .ephemeral_storage("2Gi".parse().unwrap())
        .build()
        .unwrap();
    let pod = created_pod(&provider, &api, spec).await;
    let resources = &pod["spec"]["containers"][0]["resources"];
    assert_eq!(resources["requests"]["ephemeral-storage"], "2Gi");
    assert_eq!(resources["limits"]["ephemeral-storage"], "2Gi");
    assert_eq!(
        pod["spec"]["volumes"][0],
        json!({"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}})
    );
    assert_eq!(
        pod["spec"]["volumes"][1],
        json!({"name": "workspace", "emptyDir": {"sizeLimit": "2Gi"}})
    );
}

#[tokio::test]
async fn a_class_brings_resources_and_placement_the_job_may_override() {
    let api = FakeApi::default();
    let provider = placing_provider(&api).await;
    let spec = JobSpec::builder("true")
        .class("gpu")
        .memory("32Gi".parse().unwrap())
        .build()
        .unwrap();
    // The class's node selector and toleration are outside the allow-lists: a class is
    // the operator's own.
    provider.check_spec(&spec).unwrap();
    let pod = created_pod(&provider, &api, spec).await;
    let resources = &pod["spec"]["containers"][0]["resources"];
    assert_eq!(
        resources["requests"],
        json!({"cpu": "4", "memory": "32Gi", "ephemeral-storage": "40Gi"})
    );
    assert_eq!(
        resources["limits"],
        json!({"cpu": "4", "memory": "32Gi", "ephemeral-storage": "40Gi"})
    );
    assert_eq!(
        pod["spec"]["nodeSelector"],
        json!({"accelerator": "a100", "os": "linux", "pool": "default"})
    );
    assert_eq!(
        pod["spec"]["tolerations"][1],
        json!({"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"})
    );
}

#[tokio::test]
async fn secrets_are_references_the_kubelet_resolves() {
    let api = FakeApi::default();
    let provider = placing_provider(&api).await;
    let spec = JobSpec::builder("true")
        .secret_env(BTreeMap::from([(
            "DB_PASSWORD".to_owned(),
            SecretRef::new("app-db", "password"),
        )]))
        .secret_files(BTreeMap::from([(
            "/etc/app/ca.pem".to_owned(),
            SecretRef::new("app-tls", "ca.crt"),
        )]))
        .build()
        .unwrap();
    provider.check_spec(&spec).unwrap();
    let pod = created_pod(&provider, &api, spec).await;
    let container = &pod["spec"]["containers"][0];
    let env = container["env"].as_array().unwrap();
    assert_eq!(
        env[0],
        json!({"name": "DB_PASSWORD", "valueFrom": {"secretKeyRef":
            {"name": "app-db", "key": "password", "optional": false}}})
    );
    let volumes = pod["spec"]["volumes"].as_array().unwrap();
    assert_eq!(
        volumes.last().unwrap(),
        &json!({"name": "hodei-secret-file-0", "secret": {"secretName": "app-tls",
            "items": [{"key": "ca.crt", "path": "ca.pem"}], "defaultMode": 0o440,
            "optional": false}})
    );
    assert_eq!(
        container["volumeMounts"]
            .as_array()
            .unwrap()
            .last()
            .unwrap(),
        &json!({"name": "hodei-secret-file-0", "mountPath": "/etc/app/ca.pem",
            "subPath": "ca.pem", "readOnly": true})
    );
}

#[tokio::test]
async fn a_job_the_settings_no_longer_allow_is_not_provisioned() {
    let api = FakeApi::default();
    let provider = provider(&api).await;
    let spec = JobSpec::builder("true").class("gpu").build().unwrap();
    let error = provider.provision(launch(spec)).await.unwrap_err();
    assert_eq!(error.reason, "SpecRefused");
    assert!(!error.retryable);
    assert!(error.message.contains("resource class \"gpu\""), "{error}");
    assert!(api.created.lock().unwrap().is_empty());
}
