//! The registry client against a fake registry on a loopback port (a std
//! `TcpListener` thread that answers like distribution does): bearer token
//! and Basic auth, index platform picks, digest checks, the on-disk cache
//! and pull policies; plus the pure pieces (challenges, platforms, layers).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use serde_json::json;

use super::*;
use crate::wasm::reference::digest;

/// One request as the fake registry saw it.
#[derive(Clone, Debug)]
struct Req {
    method: String,
    /// Path and query.
    target: String,
    headers: HashMap<String, String>,
    body: String,
}

impl Req {
    fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or_default()
    }
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

/// An answer: status, extra headers, body.
struct Resp(u16, Vec<(String, String)>, Vec<u8>);

type Handler = dyn Fn(&Req) -> Resp + Send + Sync;

/// An HTTP/1.1 server answering every request with `handler` (one request
/// per connection), logging what it saw; stopped on drop.
struct Server {
    addr: SocketAddr,
    log: Arc<Mutex<Vec<Req>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    fn start(handler: Arc<Handler>) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let addr = listener.local_addr().expect("addr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (l, s) = (log.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                if let Some(req) = read_request(&conn) {
                    let Resp(status, headers, body) = handler(&req);
                    l.lock().unwrap().push(req);
                    let mut out = format!(
                        "HTTP/1.1 {status} {}\r\nContent-Length: {}\r\nConnection: close\r\n",
                        reason(status),
                        body.len()
                    );
                    for (k, v) in headers {
                        out.push_str(&format!("{k}: {v}\r\n"));
                    }
                    out.push_str("\r\n");
                    let mut conn = conn;
                    let _ = conn.write_all(out.as_bytes());
                    let _ = conn.write_all(&body);
                }
            }
        });
        Server {
            addr,
            log,
            stop,
            thread: Some(thread),
        }
    }

    fn host(&self) -> String {
        self.addr.to_string()
    }

    fn requests(&self) -> Vec<Req> {
        self.log.lock().unwrap().clone()
    }

    /// How many requests went to paths starting with `prefix`.
    fn hits(&self, prefix: &str) -> usize {
        self.requests()
            .iter()
            .filter(|r| r.path().starts_with(prefix))
            .count()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        401 => "Unauthorized",
        404 => "Not Found",
        _ => "Whatever",
    }
}

fn read_request(conn: &TcpStream) -> Option<Req> {
    let mut r = BufReader::new(conn.try_clone().ok()?);
    let mut line = String::new();
    r.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next()?.to_string(), parts.next()?.to_string());
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).ok()? == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let len: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    r.read_exact(&mut body).ok()?;
    Some(Req {
        method,
        target,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// How the fake registry wants to be talked to.
#[derive(Clone)]
enum Auth {
    Open,
    /// `WWW-Authenticate: Basic`, this user and password.
    Basic(&'static str, &'static str),
    /// `WWW-Authenticate: Bearer` with a realm on the same server; tokens
    /// need these Basic credentials (`None`: anonymous tokens).
    Bearer(Option<(&'static str, &'static str)>),
}

const TOKEN: &str = "tok-123";

/// A fake registry holding `repo`'s manifests (by tag and digest) and blobs.
struct Registry {
    server: Server,
}

#[derive(Default)]
struct Content {
    /// tag or digest → (media type, body).
    manifests: HashMap<String, (String, Vec<u8>)>,
    /// digest → body.
    blobs: HashMap<String, Vec<u8>>,
}

impl Content {
    /// Adds a manifest, by digest and under `tag`; returns its digest.
    fn manifest(&mut self, tag: Option<&str>, media_type: &str, body: &serde_json::Value) -> String {
        let bytes = serde_json::to_vec(body).unwrap();
        let d = format!("sha256:{}", digest(&bytes));
        if let Some(t) = tag {
            self.manifests
                .insert(t.into(), (media_type.into(), bytes.clone()));
        }
        self.manifests.insert(d.clone(), (media_type.into(), bytes));
        d
    }

    fn blob(&mut self, bytes: &[u8]) -> String {
        let d = format!("sha256:{}", digest(bytes));
        self.blobs.insert(d.clone(), bytes.to_vec());
        d
    }

    /// A CNCF Wasm artifact of `module` under `tag`: (manifest digest, module digest).
    fn artifact(&mut self, tag: Option<&str>, module: &[u8]) -> (String, String) {
        let config = self.blob(br#"{"architecture":"wasm","os":"wasip1"}"#);
        let layer = self.blob(module);
        let m = json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": WASM_CONFIG, "digest": config, "size": 36},
            "layers": [{"mediaType": WASM_LAYER, "digest": layer, "size": module.len()}],
        });
        (self.manifest(tag, OCI_MANIFEST, &m), layer)
    }
}

impl Registry {
    fn start(auth: Auth, content: Content) -> Registry {
        let content = Arc::new(Mutex::new(content));
        let realm = Arc::new(Mutex::new(String::new()));
        let r = realm.clone();
        let handler = move |req: &Req| -> Resp {
            let basic_of = |(u, p): (&str, &str)| {
                format!(
                    "Basic {}",
                    shturman_api::core::config::base64_encode(format!("{u}:{p}").as_bytes())
                )
            };
            let unauthorized = |challenge: String| {
                Resp(
                    401,
                    vec![
                        ("WWW-Authenticate".into(), challenge),
                        ("Content-Type".into(), "application/json".into()),
                    ],
                    br#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required","detail":null}]}"#
                        .to_vec(),
                )
            };
            let path = req.path().to_string();
            if path == "/token" {
                if let Auth::Bearer(Some(creds)) = &auth
                    && req.header("authorization") != Some(basic_of(*creds).as_str())
                {
                    return Resp(
                        401,
                        vec![],
                        br#"{"details":"incorrect username or password"}"#.to_vec(),
                    );
                }
                return Resp(200, vec![], json!({"token": TOKEN}).to_string().into_bytes());
            }
            let authorized = match &auth {
                Auth::Open => true,
                Auth::Basic(u, p) => req.header("authorization") == Some(basic_of((u, p)).as_str()),
                Auth::Bearer(_) => req.header("authorization") == Some(format!("Bearer {TOKEN}").as_str()),
            };
            if !authorized {
                return match &auth {
                    Auth::Basic(..) => unauthorized(r#"Basic realm="fake""#.into()),
                    _ => unauthorized(format!(
                        r#"Bearer realm="{}/token",service="fake-registry",scope="repository:wasm/app:pull""#,
                        r.lock().unwrap()
                    )),
                };
            }
            let c = content.lock().unwrap();
            if let Some(rest) = path.strip_prefix("/v2/wasm/app/manifests/") {
                return match c.manifests.get(rest) {
                    Some((mt, body)) => Resp(200, vec![("Content-Type".into(), mt.clone())], body.clone()),
                    None => Resp(
                        404,
                        vec![],
                        br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{"Tag":"x"}}]}"#
                            .to_vec(),
                    ),
                };
            }
            if let Some(d) = path.strip_prefix("/v2/wasm/app/blobs/") {
                return match c.blobs.get(d) {
                    Some(body) => Resp(200, vec![], body.clone()),
                    None => Resp(
                        404,
                        vec![],
                        br#"{"errors":[{"code":"BLOB_UNKNOWN","message":"blob unknown to registry"}]}"#
                            .to_vec(),
                    ),
                };
            }
            Resp(404, vec![], b"404 page not found".to_vec())
        };
        let server = Server::start(Arc::new(handler));
        *realm.lock().unwrap() = format!("http://{}", server.host());
        Registry { server }
    }

    fn host(&self) -> String {
        self.server.host()
    }
}

fn tag(t: &str) -> OciReference {
    OciReference::Tag(t.into())
}

fn pull_ref(
    dir: &Path,
    reg: &Registry,
    reference: &OciReference,
    opts: &PullOptions,
) -> Result<(String, Vec<u8>), RegistryError> {
    let host = reg.host();
    let image = Image {
        registry: &host,
        repository: "wasm/app",
        reference,
    };
    pull(dir, &image, opts, 1 << 20)
}

fn with_creds(user: &str, pass: &str) -> PullOptions {
    PullOptions {
        credentials: Some(Credentials {
            server: "127.0.0.1".into(),
            username: user.into(),
            password: pass.into(),
            ..Credentials::default()
        }),
        ..PullOptions::default()
    }
}

const MODULE: &[u8] = b"\0asm\x01\0\0\0 registry module";

fn files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn an_open_registry_serves_a_wasm_artifact_into_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = Content::default();
    let (_, layer) = c.artifact(Some("1"), MODULE);
    let reg = Registry::start(Auth::Open, c);
    let (got, bytes) = pull_ref(dir.path(), &reg, &tag("1"), &PullOptions::default()).unwrap();
    assert_eq!(format!("sha256:{got}"), layer);
    assert_eq!(bytes, MODULE);
    assert_eq!(
        files(dir.path()),
        vec![format!("{got}.wasm"), REFS_DIR.to_string()]
    );
    let manifest_get = &reg.server.requests()[0];
    assert_eq!(manifest_get.method, "GET");
    let accept = manifest_get.header("accept").unwrap_or_default();
    for t in [OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST] {
        assert!(accept.contains(t), "{accept}");
    }
}

#[test]
fn the_bearer_token_flow_with_and_without_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = Content::default();
    c.artifact(Some("1"), MODULE);
    let reg = Registry::start(Auth::Bearer(Some(("alice", "s3cret"))), c);
    let (got, _) = pull_ref(dir.path(), &reg, &tag("1"), &with_creds("alice", "s3cret")).unwrap();
    assert_eq!(got, digest(MODULE));
    let reqs = reg.server.requests();
    let token_req = reqs
        .iter()
        .find(|r| r.path() == "/token")
        .expect("a token request");
    assert!(
        token_req.target.contains("service=fake-registry")
            && token_req.target.contains("scope=repository%3Awasm%2Fapp%3Apull"),
        "{}",
        token_req.target
    );
    assert!(
        token_req
            .header("authorization")
            .unwrap_or_default()
            .starts_with("Basic ")
    );
    // The manifest is asked for twice (401, then with the token), the blob once with it.
    let with_token: Vec<&Req> = reqs
        .iter()
        .filter(|r| r.header("authorization") == Some(&format!("Bearer {TOKEN}")))
        .collect();
    assert_eq!(with_token.len(), 2, "{reqs:?}");
    assert!(with_token[1].path().starts_with("/v2/wasm/app/blobs/sha256:"));

    // Without credentials the token service refuses: ErrImagePull's message says what to do.
    let dir = tempfile::tempdir().unwrap();
    let err = pull_ref(dir.path(), &reg, &tag("1"), &PullOptions::default()).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, RegistryError::Token { .. }), "{text}");
    assert!(
        text.contains("401 Unauthorized") && text.contains("imagePullSecrets"),
        "{text}"
    );
    // Wrong credentials: refused, named as such.
    let err = pull_ref(dir.path(), &reg, &tag("1"), &with_creds("alice", "nope")).unwrap_err();
    assert!(err.to_string().contains("were refused"), "{err}");
    assert_eq!(files(dir.path()), Vec::<String>::new());
}

#[test]
fn anonymous_bearer_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = Content::default();
    c.artifact(Some("1"), MODULE);
    let reg = Registry::start(Auth::Bearer(None), c);
    let (got, _) = pull_ref(dir.path(), &reg, &tag("1"), &PullOptions::default()).unwrap();
    assert_eq!(got, digest(MODULE));
    let token_req = reg
        .server
        .requests()
        .into_iter()
        .find(|r| r.path() == "/token")
        .unwrap();
    assert_eq!(token_req.header("authorization"), None);
}

#[test]
fn identity_tokens_use_the_oauth2_refresh_grant() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = Content::default();
    c.artifact(Some("1"), MODULE);
    let reg = Registry::start(Auth::Bearer(None), c);
    let opts = PullOptions {
        credentials: Some(Credentials {
            identity_token: "refresh-me".into(),
            ..Credentials::default()
        }),
        ..PullOptions::default()
    };
    pull_ref(dir.path(), &reg, &tag("1"), &opts).unwrap();
    let token_req = reg
        .server
        .requests()
        .into_iter()
        .find(|r| r.path() == "/token")
        .unwrap();
    assert_eq!(token_req.method, "POST");
    assert!(
        token_req.body.contains("grant_type=refresh_token")
            && token_req.body.contains("refresh_token=refresh-me"),
        "{}",
        token_req.body
    );
}

#[test]
fn basic_auth_when_the_registry_asks_for_it() {
    let mut c = Content::default();
    c.artifact(Some("1"), MODULE);
    let reg = Registry::start(Auth::Basic("bob", "pw"), c);
    let dir = tempfile::tempdir().unwrap();
    let err = pull_ref(dir.path(), &reg, &tag("1"), &PullOptions::default()).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, RegistryError::Status { .. }), "{text}");
    assert!(
        text.contains("HTTP 401 Unauthorized (UNAUTHORIZED: authentication required)")
            && text.contains("kubernetes.io/dockerconfigjson")
            && text.contains(&reg.host()),
        "{text}"
    );
    let err = pull_ref(dir.path(), &reg, &tag("1"), &with_creds("bob", "wrong")).unwrap_err();
    assert!(err.to_string().contains("refused the pod's credentials"), "{err}");
    let (got, _) = pull_ref(dir.path(), &reg, &tag("1"), &with_creds("bob", "pw")).unwrap();
    assert_eq!(got, digest(MODULE));
}

#[test]
fn an_index_resolves_to_its_wasm_entry() {
    let mut c = Content::default();
    let (wasm, _) = c.artifact(None, MODULE);
    let linux = c.manifest(
        None,
        OCI_MANIFEST,
        &json!({"schemaVersion": 2, "config": {}, "layers": []}),
    );
    let index = json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            {"mediaType": OCI_MANIFEST, "digest": linux, "size": 1, "platform": {"os": "linux", "architecture": "amd64"}},
            {"mediaType": OCI_MANIFEST, "digest": wasm, "size": 1, "platform": {"os": "wasip1", "architecture": "wasm"}},
        ],
    });
    let index_digest = c.manifest(Some("multi"), OCI_INDEX, &index);
    let only_linux = json!({"schemaVersion": 2, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": linux, "size": 1, "platform": {"os": "linux", "architecture": "amd64"}},
        {"mediaType": OCI_MANIFEST, "digest": linux, "size": 1, "platform": {"os": "linux", "architecture": "arm64"}},
    ]});
    c.manifest(Some("linux"), OCI_INDEX, &only_linux);
    let reg = Registry::start(Auth::Open, c);
    let dir = tempfile::tempdir().unwrap();
    let (got, _) = pull_ref(dir.path(), &reg, &tag("multi"), &PullOptions::default()).unwrap();
    assert_eq!(got, digest(MODULE));
    assert!(reg.server.hits(&format!("/v2/wasm/app/manifests/{wasm}")) == 1);
    // The mapping remembers the index's digest: what the tag named.
    let key = format!("{}/wasm/app:multi", reg.host());
    let m: Mapping = serde_json::from_slice(&std::fs::read(mapping_path(dir.path(), &key)).unwrap()).unwrap();
    assert_eq!((m.reference, m.manifest, m.module), (key, index_digest, got));

    let err = pull_ref(dir.path(), &reg, &tag("linux"), &PullOptions::default()).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("no Wasm entry (found linux/amd64, linux/arm64)") && text.contains("wasip2/wasm"),
        "{text}"
    );
}

#[test]
fn a_wrong_blob_digest_keeps_nothing_and_never_runs() {
    let mut c = Content::default();
    let (_, layer) = c.artifact(Some("1"), MODULE);
    // The registry serves other bytes under the layer's digest.
    c.blobs
        .insert(layer.clone(), b"\0asm\x01\0\0\0 tampered".to_vec());
    let reg = Registry::start(Auth::Open, c);
    let dir = tempfile::tempdir().unwrap();
    let err = pull_ref(dir.path(), &reg, &tag("1"), &PullOptions::default()).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, RegistryError::Digest { .. }), "{text}");
    assert!(
        text.contains(&layer) && text.contains(&digest(b"\0asm\x01\0\0\0 tampered")),
        "{text}"
    );
    assert_eq!(files(dir.path()), Vec::<String>::new());
}

#[test]
fn a_manifest_that_does_not_match_its_digest_is_refused() {
    let mut c = Content::default();
    let (d, _) = c.artifact(Some("1"), MODULE);
    let (other, _) = c.artifact(None, b"\0asm\x01\0\0\0 other");
    // Served under `d`: the other manifest.
    let swapped = c.manifests.get(&other).cloned().unwrap();
    c.manifests.insert(d.clone(), swapped);
    let reg = Registry::start(Auth::Open, c);
    let dir = tempfile::tempdir().unwrap();
    let err = pull_ref(
        dir.path(),
        &reg,
        &OciReference::Digest(d.clone()),
        &PullOptions::default(),
    )
    .unwrap_err();
    assert!(
        matches!(&err, RegistryError::Digest { what: "a manifest", expected, .. } if *expected == d),
        "{err}"
    );
    assert_eq!(reg.server.hits("/v2/wasm/app/blobs/"), 0);
}

#[test]
fn cache_and_pull_policies() {
    let mut c = Content::default();
    let (d, _) = c.artifact(Some("1"), MODULE);
    let reg = Registry::start(Auth::Open, c);
    let dir = tempfile::tempdir().unwrap();
    let policy = |p| PullOptions {
        policy: Some(p),
        ..PullOptions::default()
    };
    // Never, not cached: a clear refusal, no request.
    let err = pull_ref(dir.path(), &reg, &tag("1"), &policy(ImagePullPolicy::Never)).unwrap_err();
    assert!(matches!(err, RegistryError::NeverPull { .. }), "{err}");
    assert_eq!(reg.server.requests().len(), 0);

    let want = digest(MODULE);
    let if_not_present = policy(ImagePullPolicy::IfNotPresent);
    assert_eq!(
        pull_ref(dir.path(), &reg, &tag("1"), &if_not_present).unwrap().0,
        want
    );
    let after_first = reg.server.requests().len();
    // IfNotPresent and Never: the tag's cached mapping, no request.
    assert_eq!(
        pull_ref(dir.path(), &reg, &tag("1"), &if_not_present).unwrap().0,
        want
    );
    assert_eq!(
        pull_ref(dir.path(), &reg, &tag("1"), &policy(ImagePullPolicy::Never))
            .unwrap()
            .0,
        want
    );
    assert_eq!(reg.server.requests().len(), after_first);
    // Always: the tag is resolved again; the same module is not downloaded again.
    assert_eq!(
        pull_ref(dir.path(), &reg, &tag("1"), &policy(ImagePullPolicy::Always))
            .unwrap()
            .0,
        want
    );
    assert_eq!(reg.server.hits("/v2/wasm/app/manifests/1"), 2);
    assert_eq!(reg.server.hits("/v2/wasm/app/blobs/"), 1);
    // A digest reference, once pulled, needs no network even under Always.
    let by_digest = OciReference::Digest(d);
    assert_eq!(
        pull_ref(dir.path(), &reg, &by_digest, &if_not_present).unwrap().0,
        want
    );
    let host = reg.host();
    drop(reg);
    let image = Image {
        registry: &host,
        repository: "wasm/app",
        reference: &by_digest,
    };
    let (got, bytes) = pull(dir.path(), &image, &policy(ImagePullPolicy::Always), 1 << 20).unwrap();
    assert_eq!((got.as_str(), bytes.as_slice()), (want.as_str(), MODULE));
    // A damaged cached module is not used: the pull goes to the (gone) registry.
    std::fs::write(dir.path().join(format!("{want}.wasm")), b"damaged").unwrap();
    let err = pull(dir.path(), &image, &if_not_present, 1 << 20).unwrap_err();
    assert!(err.to_string().contains("check that the server is up"), "{err}");
    assert!(!dir.path().join(format!("{want}.wasm")).exists());
}

#[test]
fn registry_errors_carry_the_registrys_words() {
    let reg = Registry::start(Auth::Open, Content::default());
    let dir = tempfile::tempdir().unwrap();
    let err = pull_ref(dir.path(), &reg, &tag("missing"), &PullOptions::default()).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("HTTP 404 Not Found (MANIFEST_UNKNOWN: manifest unknown)")
            && text.contains(&format!("{}/wasm/app:missing", reg.host()))
            && text.contains("tag"),
        "{text}"
    );
    // An unreachable registry.
    let host = reg.host();
    drop(reg);
    let reference = tag("1");
    let image = Image {
        registry: &host,
        repository: "wasm/app",
        reference: &reference,
    };
    let err = pull(dir.path(), &image, &PullOptions::default(), 1 << 20).unwrap_err();
    assert!(err.to_string().contains("check that the server is up"), "{err}");
}

#[test]
fn size_limits_hold_before_and_while_downloading() {
    let mut c = Content::default();
    c.artifact(Some("1"), &[0u8; 4096]);
    let reg = Registry::start(Auth::Open, c);
    let dir = tempfile::tempdir().unwrap();
    let host = reg.host();
    let reference = tag("1");
    let image = Image {
        registry: &host,
        repository: "wasm/app",
        reference: &reference,
    };
    let err = pull(dir.path(), &image, &PullOptions::default(), 1024).unwrap_err();
    assert!(
        matches!(
            err,
            RegistryError::TooLarge {
                size: 4096,
                limit: 1024,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(reg.server.hits("/v2/wasm/app/blobs/"), 0);
}

#[test]
fn container_images_are_refused_naming_their_media_types() {
    let mut c = Content::default();
    let layer = c.blob(b"not really a tarball");
    let image = json!({
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST,
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": layer, "size": 1},
        "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "digest": layer, "size": 21}],
    });
    c.manifest(Some("1"), DOCKER_MANIFEST, &image);
    let reg = Registry::start(Auth::Open, c);
    let dir = tempfile::tempdir().unwrap();
    let err = pull_ref(dir.path(), &reg, &tag("1"), &PullOptions::default()).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("application/vnd.docker.container.image.v1+json")
            && text.contains("application/vnd.docker.image.rootfs.diff.tar.gzip")
            && text.contains(WASM_CONFIG)
            && text.contains(WASM_TO_OCI_LAYER)
            && text.contains("runtimeClassName"),
        "{text}"
    );
}

#[test]
fn wasm_to_oci_and_other_layer_types() {
    for media in WASM_LAYER_TYPES {
        let m = json!({"config": {"mediaType": "application/vnd.wasm.config.v1+json"},
            "layers": [{"mediaType": media, "digest": format!("sha256:{}", "a".repeat(64)), "size": 3}]});
        let l = wasm_layer(OCI_MANIFEST, &m).unwrap();
        assert_eq!((l.size, l.media_type.as_str()), (3, *media));
    }
    let two = json!({"layers": [
        {"mediaType": WASM_LAYER, "digest": format!("sha256:{}", "a".repeat(64)), "size": 3},
        {"mediaType": WASM_TO_OCI_LAYER, "digest": format!("sha256:{}", "b".repeat(64)), "size": 3},
    ]});
    assert!(
        wasm_layer(OCI_MANIFEST, &two)
            .unwrap_err()
            .contains("2 Wasm layers")
    );
    let sha512 = json!({"layers": [{"mediaType": WASM_LAYER, "digest": "sha512:ab", "size": 3}]});
    assert!(
        wasm_layer(OCI_MANIFEST, &sha512)
            .unwrap_err()
            .contains("only sha256")
    );
    let schema1 = "application/vnd.docker.distribution.manifest.v1+prettyjws";
    assert!(wasm_layer(schema1, &json!({})).unwrap_err().contains("schema 1"));
}

#[test]
fn platform_picks() {
    let d = |c: char| format!("sha256:{}", c.to_string().repeat(64));
    let entry =
        |c: char, os: &str, arch: &str| json!({"digest": d(c), "platform": {"os": os, "architecture": arch}});
    let index = |entries: Vec<serde_json::Value>| json!({"manifests": entries});
    // wasip2 is preferred over wasip1, whatever the order.
    let both = index(vec![entry('1', "wasip1", "wasm"), entry('2', "wasip2", "wasm")]);
    assert_eq!(pick_platform(&both).unwrap(), d('2'));
    assert_eq!(
        pick_platform(&index(vec![entry('3', "wasi", "wasm")])).unwrap(),
        d('3')
    );
    // A single entry, whatever its platform; attestations do not count.
    let attestation = json!({"digest": d('9'), "platform": {"os": "unknown", "architecture": "unknown"},
        "annotations": {"vnd.docker.reference.type": "attestation-manifest"}});
    let single = index(vec![json!({"digest": d('4')}), attestation]);
    assert_eq!(pick_platform(&single).unwrap(), d('4'));
    let none = index(vec![entry('5', "linux", "amd64"), json!({"digest": d('6')})]);
    let e = pick_platform(&none).unwrap_err();
    assert!(e.contains("found linux/amd64, no platform"), "{e}");
    assert!(pick_platform(&index(vec![])).unwrap_err().contains("empty"));
    let bad = index(vec![json!({"digest": "md5:x"})]);
    assert!(pick_platform(&bad).unwrap_err().contains("only sha256"));
}

#[test]
fn challenges_parse_like_distribution_sends_them() {
    let c = parse_challenge(
        r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:samalba/my-app:pull,push""#,
    )
    .unwrap();
    assert_eq!(c.scheme, "Bearer");
    assert_eq!(c.param("realm"), Some("https://auth.docker.io/token"));
    assert_eq!(c.param("service"), Some("registry.docker.io"));
    assert_eq!(c.param("scope"), Some("repository:samalba/my-app:pull,push"));
    let c = parse_challenge(r#"Basic realm="a \"quoted\" realm", charset=UTF-8"#).unwrap();
    assert_eq!(c.param("realm"), Some(r#"a "quoted" realm"#));
    assert_eq!(c.param("CHARSET"), Some("UTF-8"));
    assert_eq!(parse_challenge("Basic").unwrap().params, vec![]);
    assert!(parse_challenge("  ").is_none());
    // Junk never loops or panics.
    for junk in [
        "Bearer ,,,",
        "Bearer realm",
        "Bearer =x",
        "Bearer realm=\"unterminated",
        "Bearer a=b=c",
    ] {
        let _ = parse_challenge(junk);
    }
}

#[test]
fn schemes_and_hosts() {
    let insecure = vec!["reg.lan:5000".to_string(), "other.lan".to_string()];
    assert_eq!(base_url("127.0.0.1:5000", &[]), "http://127.0.0.1:5000");
    assert_eq!(base_url("localhost:5000", &[]), "http://localhost:5000");
    assert_eq!(base_url("[::1]:5000", &[]), "http://[::1]:5000");
    assert_eq!(base_url("reg.lan:5000", &insecure), "http://reg.lan:5000");
    assert_eq!(base_url("reg.lan:5001", &insecure), "https://reg.lan:5001");
    assert_eq!(base_url("other.lan:443", &insecure), "http://other.lan:443");
    assert_eq!(base_url("ghcr.io", &insecure), "https://ghcr.io");
    assert_eq!(base_url("docker.io", &[]), "https://registry-1.docker.io");
    assert!(is_loopback_url("http://127.0.0.1:9/token"));
    assert!(!is_loopback_url("http://auth.example/token"));
}

#[test]
fn registry_details() {
    assert_eq!(
        registry_detail(
            br#"{"errors":[{"code":"DENIED","message":"requested access to the resource is denied"}]}"#
        ),
        " (DENIED: requested access to the resource is denied)"
    );
    assert_eq!(registry_detail(b"404 page not found\n"), " (404 page not found)");
    assert_eq!(registry_detail(b""), "");
    assert_eq!(registry_detail(b"<html>nope</html>"), "");
}
