//! The archive on S3: vigil-guard writes through object_store to a real S3 endpoint (moto's
//! server, started by the fixture below), and every row can be read back from the bucket.

#![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::TryStreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::{ObjectStore, ObjectStoreExt};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

/// An S3 endpoint on a free loopback port for one test; stopped when dropped.
struct MotoServer {
    child: Child,
    endpoint: String,
}

impl MotoServer {
    fn start() -> MotoServer {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start moto_server ({e}): the S3 tests need it; run scripts/setup.sh, which installs moto[server] from PyPI")
            });
        let server = MotoServer {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "moto_server did not start listening on port {port} within 30 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        server
    }

    /// Creates a bucket with a plain HTTP PUT, as the S3 API does it.
    fn create_bucket(&self, bucket: &str) {
        let address = self.endpoint.trim_start_matches("http://");
        let mut stream = TcpStream::connect(address).unwrap();
        write!(stream, "PUT /{bucket} HTTP/1.1\r\nHost: {address}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        assert!(
            response.starts_with("HTTP/1.1 200"),
            "creating bucket {bucket}: {response}"
        );
    }

    fn env(&self) -> [(&'static str, String); 5] {
        [
            ("AWS_ENDPOINT", self.endpoint.clone()),
            ("AWS_ALLOW_HTTP", "true".into()),
            ("AWS_ACCESS_KEY_ID", "test".into()),
            ("AWS_SECRET_ACCESS_KEY", "test".into()),
            ("AWS_REGION", "us-east-1".into()),
        ]
    }

    fn store(&self, bucket: &str) -> AmazonS3 {
        let mut builder = AmazonS3Builder::new().with_bucket_name(bucket);
        for (key, value) in self.env() {
            builder = builder.with_config(key.to_ascii_lowercase().parse().unwrap(), value);
        }
        builder.build().unwrap()
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn guard_archives_to_s3() {
    let moto = MotoServer::start();
    moto.create_bucket("vigil-archive");
    let output = Command::new(env!("CARGO_BIN_EXE_vigil-guard"))
        .args([
            "--archive",
            "s3://vigil-archive/runs/nab",
            "--alerts",
            "none",
            "--replica",
            "none",
            "-w",
            "2",
        ])
        .envs(moto.env())
        .env_remove("VIGIL_KEY")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("archived 22695"), "{stderr}");

    let store = moto.store("vigil-archive");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let rows: usize = runtime.block_on(async {
        let prefix = object_store::path::Path::from("runs/nab/telemetry");
        let objects: Vec<_> = store.list(Some(&prefix)).try_collect().await.unwrap();
        assert!(
            objects.len() > 100,
            "one file per hour partition, got {}",
            objects.len()
        );
        let mut rows = 0;
        for object in objects {
            let path = object.location.to_string();
            assert!(
                path.contains("/date=") && path.contains("/hour=") && path.ends_with(".parquet"),
                "{path}"
            );
            let bytes = store
                .get(&object.location)
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap();
            let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
                .unwrap()
                .build()
                .unwrap();
            rows += reader.map(|b| b.unwrap().num_rows()).sum::<usize>();
        }
        rows
    });
    assert_eq!(rows, 22_695);
}

#[test]
fn unreachable_s3_is_a_clear_error() {
    let moto = MotoServer::start();
    // No bucket: every write is refused, and the job says which file and what to check.
    let output = Command::new(env!("CARGO_BIN_EXE_vigil-guard"))
        .args([
            "--archive",
            "s3://no-such-bucket/x",
            "--alerts",
            "none",
            "--replica",
            "none",
        ])
        .envs(moto.env())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("check the archive is writable"), "{stderr}");
}
