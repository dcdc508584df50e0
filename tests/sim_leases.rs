//! The simulator's coordination.k8s.io/v1 Leases as the hook's cache slots use them: an atomic create (AlreadyExists), list by label, delete with a UID precondition, garbage collection with the owner pod, RBAC.

mod sim_support;

use arc_hook::sim::{SimConfig, arc_chart_default_role};
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions};
use kube::{Api, Client};
use serde_json::json;
use sim_support::{phase_is, pod, start, wait_deleted, wait_for};

fn lease(name: &str, holder: &str) -> Lease {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"slot-node": "n1"}},
        "spec": {"holderIdentity": holder}
    }))
    .expect("lease")
}

#[tokio::test]
async fn a_lease_is_created_once_listed_and_deleted_only_while_unchanged() {
    let sim = start(SimConfig::default()).await;
    let leases: Api<Lease> = Api::default_namespaced(sim.client().await);
    let pp = PostParams::default();
    let first = leases
        .create(&pp, &lease("slot-0", "a"))
        .await
        .expect("created");
    let again = leases.create(&pp, &lease("slot-0", "b")).await;
    match again {
        Err(kube::Error::Api(e)) => {
            assert_eq!((e.code, e.reason.as_str()), (409, "AlreadyExists"), "{e:?}");
            assert!(
                e.message
                    .contains("leases.coordination.k8s.io \"slot-0\" already exists"),
                "{}",
                e.message
            );
        }
        other => panic!("a second create must fail with AlreadyExists: {other:?}"),
    }
    let held = leases.get("slot-0").await.expect("get");
    assert_eq!(
        held.spec.and_then(|s| s.holder_identity).as_deref(),
        Some("a")
    );
    let listed = leases
        .list(&ListParams::default().labels("slot-node=n1"))
        .await
        .expect("list");
    assert_eq!(listed.items.len(), 1);

    let stale = DeleteParams {
        preconditions: Some(Preconditions {
            uid: Some("not-its-uid".into()),
            resource_version: None,
        }),
        ..Default::default()
    };
    match leases.delete("slot-0", &stale).await {
        Err(kube::Error::Api(e)) => {
            assert_eq!(e.code, 409, "{e:?}");
            assert!(
                e.message.starts_with(
                    "Operation cannot be fulfilled on Lease.coordination.k8s.io \"slot-0\": the UID in the precondition (not-its-uid) does not match the UID in record ("
                ),
                "{}",
                e.message
            );
        }
        other => panic!("a delete with another UID must be refused: {other:?}"),
    }
    let current = DeleteParams {
        preconditions: Some(Preconditions {
            uid: first.metadata.uid.clone(),
            resource_version: None,
        }),
        ..Default::default()
    };
    leases.delete("slot-0", &current).await.expect("deleted");
    assert!(leases.get_opt("slot-0").await.expect("get").is_none());
    sim.shutdown().await;
}

#[tokio::test]
async fn a_lease_goes_with_its_owner_pod() {
    let sim = start(SimConfig::default()).await;
    let client: Client = sim.client().await;
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::default_namespaced(client.clone());
    let owner = pods
        .create(
            &PostParams::default(),
            &pod("owner", "busybox", &["sleep", "60"]),
        )
        .await
        .expect("pod");
    wait_for(&pods, "owner", "running", phase_is("Running")).await;
    let leases: Api<Lease> = Api::default_namespaced(client.clone());
    leases
        .create(&PostParams::default(), &lease("owned", "owner"))
        .await
        .expect("lease");
    leases
        .create(&PostParams::default(), &lease("unowned", "x"))
        .await
        .expect("lease");
    let owner_ref = json!({"metadata": {"ownerReferences": [{
        "apiVersion": "v1", "kind": "Pod", "name": "owner", "uid": owner.metadata.uid}]}});
    leases
        .patch("owned", &PatchParams::default(), &Patch::Merge(&owner_ref))
        .await
        .expect("owner set");
    // An owner that is already gone: collected at once.
    let gone_ref = json!({"metadata": {"ownerReferences": [{
        "apiVersion": "v1", "kind": "Pod", "name": "never", "uid": "no-such-uid"}]}});
    leases
        .create(&PostParams::default(), &lease("orphan", "never"))
        .await
        .expect("lease");
    leases
        .patch("orphan", &PatchParams::default(), &Patch::Merge(&gone_ref))
        .await
        .expect("owner set");
    wait_deleted(&leases, "orphan").await;
    assert!(
        leases.get_opt("owned").await.expect("get").is_some(),
        "its owner still runs"
    );

    pods.delete("owner", &DeleteParams::default().grace_period(0))
        .await
        .expect("pod deleted");
    wait_deleted(&pods, "owner").await;
    wait_deleted(&leases, "owned").await;
    assert!(
        leases.get_opt("unowned").await.expect("get").is_some(),
        "a lease without owner stays"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn arc_default_role_grants_no_leases() {
    let sim = start(SimConfig {
        rbac: Some(arc_chart_default_role()),
        ..Default::default()
    })
    .await;
    let leases: Api<Lease> = Api::default_namespaced(sim.client().await);
    match leases
        .create(&PostParams::default(), &lease("slot-0", "a"))
        .await
    {
        Err(kube::Error::Api(e)) => assert_eq!(e.code, 403, "{e:?}"),
        other => panic!("ARC's Role has no leases: {other:?}"),
    }
    sim.shutdown().await;
}
