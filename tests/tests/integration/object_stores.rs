//! Smoke tests: put, get and list an object in MinIO, fake-gcs-server and Azurite with the
//! Rust SDKs dbprov uses.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use dbprov_tests::{Azurite, FakeGcs, Minio, require};
use futures::StreamExt;

const BODY: &[u8] = b"dbprov smoke object\n";

#[tokio::test]
async fn minio_put_get_list() {
    dbprov_tests::init_crypto();
    let minio = require!(Minio::start().await);
    let s3 = minio.s3_client();
    s3.create_bucket().bucket("smoke").send().await.unwrap();
    s3.put_object()
        .bucket("smoke")
        .key("dir/a.txt")
        .body(BODY.to_vec().into())
        .send()
        .await
        .unwrap();
    let got = s3
        .get_object()
        .bucket("smoke")
        .key("dir/a.txt")
        .send()
        .await
        .unwrap();
    let data = got.body.collect().await.unwrap().into_bytes();
    assert_eq!(&data[..], BODY);
    let listed = s3
        .list_objects_v2()
        .bucket("smoke")
        .prefix("dir/")
        .send()
        .await
        .unwrap();
    let keys: Vec<_> = listed.contents().iter().filter_map(|o| o.key()).collect();
    assert_eq!(keys, vec!["dir/a.txt"]);

    // Wrong credentials are refused: the server really authenticates.
    let err = minio
        .s3_client_with("nobody", "wrong-secret")
        .list_buckets()
        .send()
        .await
        .unwrap_err();
    let msg = format!("{:?}", err.into_service_error());
    assert!(msg.contains("InvalidAccessKeyId"), "{msg}");
}

#[tokio::test]
async fn fake_gcs_put_get_list() {
    use gcloud_storage::http::{
        buckets::insert::InsertBucketRequest,
        objects::{
            download::Range,
            get::GetObjectRequest,
            list::ListObjectsRequest,
            upload::{Media, UploadObjectRequest, UploadType},
        },
    };
    dbprov_tests::init_crypto();
    let gcs = require!(FakeGcs::start().await);
    let client = gcs.client();
    client
        .insert_bucket(&InsertBucketRequest {
            name: "smoke".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    client
        .upload_object(
            &UploadObjectRequest {
                bucket: "smoke".into(),
                ..Default::default()
            },
            BODY.to_vec(),
            &UploadType::Simple(Media::new("dir/a.txt")),
        )
        .await
        .unwrap();
    let data = client
        .download_object(
            &GetObjectRequest {
                bucket: "smoke".into(),
                object: "dir/a.txt".into(),
                ..Default::default()
            },
            &Range::default(),
        )
        .await
        .unwrap();
    assert_eq!(&data[..], BODY);
    let listed = client
        .list_objects(&ListObjectsRequest {
            bucket: "smoke".into(),
            prefix: Some("dir/".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let names: Vec<_> = listed
        .items
        .unwrap_or_default()
        .into_iter()
        .map(|o| o.name)
        .collect();
    assert_eq!(names, vec!["dir/a.txt".to_owned()]);
}

#[tokio::test]
async fn azurite_put_get_list() {
    dbprov_tests::init_crypto();
    let azurite = require!(Azurite::start().await);
    let container = azurite.blob_service_client().container_client("smoke");
    container.create().await.unwrap();
    let blob = container.blob_client("dir/a.txt");
    blob.put_block_blob(BODY.to_vec()).await.unwrap();
    let data = blob.get_content().await.unwrap();
    assert_eq!(&data[..], BODY);
    let mut pages = container.list_blobs().prefix("dir/").into_stream();
    let mut names = Vec::new();
    while let Some(page) = pages.next().await {
        names.extend(page.unwrap().blobs.blobs().map(|b| b.name.clone()));
    }
    assert_eq!(names, vec!["dir/a.txt".to_owned()]);
}
