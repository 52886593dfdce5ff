//! A CouchDB-compatible server for tests: pouchdb-server (from the npm registry), in memory, on
//! a free loopback port, stopped when the fixture is dropped; and the plain HTTP calls a user
//! would make to it.

#![allow(clippy::unwrap_used, clippy::missing_panics_doc)] // Fixtures fail loudly on purpose.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A pouchdb-server on 127.0.0.1; killed on drop.
pub struct PouchServer {
    child: Child,
    port: u16,
    /// Where it runs: pouchdb-server writes its config and log there.
    _dir: tempfile::TempDir,
}

/// A free loopback port.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl PouchServer {
    /// Starts pouchdb-server on a free port.
    pub fn start() -> PouchServer {
        Self::start_on(free_port())
    }

    /// Starts pouchdb-server on `port` and waits until it answers.
    pub fn start_on(port: u16) -> PouchServer {
        let dir = tempfile::tempdir().unwrap();
        let child = Command::new("pouchdb-server")
            .args([
                "--in-memory",
                "--host",
                "127.0.0.1",
                "--port",
                &port.to_string(),
            ])
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start pouchdb-server ({e}): the CouchDB tests need it; run \
                     scripts/setup.sh --tests, which installs it from the npm registry"
                )
            });
        let server = PouchServer {
            child,
            port,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while server.try_request("GET", "/", None).is_none() {
            assert!(
                Instant::now() < deadline,
                "pouchdb-server did not answer on port {port} within 60 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        server
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn try_request(&self, method: &str, path: &str, body: Option<&str>) -> Option<(u16, String)> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        let body = body.unwrap_or("");
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .ok()?;
        let mut response = String::new();
        stream.read_to_string(&mut response).ok()?;
        let status = response.split(' ').nth(1)?.parse().ok()?;
        let body = response.split_once("\r\n\r\n").map(|(_, b)| b)?.to_owned();
        Some((status, body))
    }

    /// An HTTP request; returns the status and the body (as JSON).
    pub fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> (u16, serde_json::Value) {
        let (status, text) = self
            .try_request(method, path, body)
            .unwrap_or_else(|| panic!("{method} {path} failed"));
        // Chunked bodies: take the JSON object inside.
        let json = text
            .find(['{', '['])
            .and_then(|start| text.rfind(['}', ']']).map(|end| &text[start..=end]))
            .unwrap_or("null");
        (
            status,
            serde_json::from_str(json).unwrap_or(serde_json::Value::Null),
        )
    }

    /// Creates a database.
    pub fn create_db(&self, db: &str) {
        let (status, body) = self.request("PUT", &format!("/{db}"), None);
        assert!(
            status == 201 || status == 200,
            "creating {db}: {status} {body}"
        );
    }

    /// Writes a document (with `rev` to update it); returns its new revision.
    pub fn put(&self, db: &str, id: &str, rev: Option<&str>, doc: serde_json::Value) -> String {
        let mut doc = doc;
        if let Some(rev) = rev {
            doc["_rev"] = rev.into();
        }
        let (status, body) = self.request("PUT", &format!("/{db}/{id}"), Some(&doc.to_string()));
        assert!(
            status == 201 || status == 200,
            "writing {id}: {status} {body}"
        );
        body["rev"].as_str().unwrap().to_owned()
    }

    /// Deletes a document at revision `rev`.
    pub fn delete(&self, db: &str, id: &str, rev: &str) {
        let (status, body) = self.request("DELETE", &format!("/{db}/{id}?rev={rev}"), None);
        assert!(
            status == 200 || status == 201,
            "deleting {id}: {status} {body}"
        );
    }
}

impl Drop for PouchServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
