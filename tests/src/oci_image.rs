//! Small OCI images built without Docker: layers written as tar.gz in Rust, an OCI image layout directory (`oci-layout`, `index.json`, `blobs/sha256/…`), and OCI archives of it for `ctr images import`.
//!
//! Everything is deterministic (fixed mtimes, uid/gid 0, sorted JSON keys), so
//! the same inputs give the same digests. Images are tagged with a full
//! reference under the `shturman.local/` domain: `index.json` carries the tag as
//! `org.opencontainers.image.ref.name` (what `skopeo copy oci:DIR:TAG` looks
//! up) and the full reference as `io.containerd.image.name` (what
//! `ctr images import` names the image; without it ctr 1.6 would drop a full
//! reference and invent `import-DATE:TAG` names).

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// Media type of a gzip-compressed layer.
pub const LAYER_MEDIA_TYPE: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// Media type of an image manifest.
pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
/// Media type of an image index (a multi-arch "manifest list").
pub const INDEX_MEDIA_TYPE: &str = "application/vnd.oci.image.index.v1+json";
/// Media type of an image config.
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";

/// The busybox binary the images are made of (Debian's busybox-static).
pub const BUSYBOX: &str = "/bin/busybox";

/// The page `busybox-httpd` serves at `/`.
pub const INDEX_HTML: &str = "<!doctype html>\n<html><head><title>shturman</title></head>\n<body><h1>Hello from a Shturman OCI pod</h1></body></html>\n";

/// Reference of the local `busybox` image (for `ctr run` baselines).
pub const BUSYBOX_REF: &str = "shturman.local/busybox:latest";
/// Reference of the local `busybox-httpd` image (the seed "nginx" replacement).
pub const BUSYBOX_HTTPD_REF: &str = "shturman.local/busybox-httpd:latest";
/// Reference of the local CRI sandbox ("pause") image.
pub const PAUSE_REF: &str = "shturman.local/pause:3.9";

/// The fixed modification time of every entry (2020-01-01T00:00:00Z).
const MTIME: u64 = 1_577_836_800;
/// The fixed creation time of every image config.
const CREATED: &str = "2020-01-01T00:00:00Z";

/// A content descriptor: what a manifest or index points at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Descriptor {
    pub media_type: String,
    /// `sha256:<hex>`.
    pub digest: String,
    pub size: u64,
}

impl Descriptor {
    /// The descriptor as OCI JSON (without platform or annotations).
    pub fn to_json(&self) -> Value {
        json!({ "mediaType": self.media_type, "digest": self.digest, "size": self.size })
    }

    /// The hex part of the digest.
    pub fn hex(&self) -> &str {
        self.digest.strip_prefix("sha256:").unwrap_or(&self.digest)
    }
}

/// The platform an image is for, in Go's (GOOS/GOARCH) names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl Platform {
    /// `linux/<arch>`, with the variant containerd expects for 32-bit arm (v7).
    pub fn linux(architecture: &str) -> Platform {
        Platform {
            os: "linux".into(),
            architecture: architecture.into(),
            variant: (architecture == "arm").then(|| "v7".to_string()),
        }
    }

    /// The platform of this host (`amd64`, `arm64`, `arm`, …).
    pub fn host() -> Platform {
        Platform::linux(crate::kube_arch())
    }

    /// The platform as an OCI descriptor's `platform` object.
    pub fn to_json(&self) -> Value {
        let mut p = json!({ "os": self.os, "architecture": self.architecture });
        if let Some(v) = &self.variant {
            p["variant"] = json!(v);
        }
        p
    }
}

/// One file system entry of a layer.
#[derive(Clone, Debug)]
pub enum Entry {
    Dir { path: String, mode: u32 },
    File { path: String, mode: u32, data: Vec<u8> },
    Symlink { path: String, target: String },
}

/// A layer being described: entries in the order they are written.
#[derive(Clone, Debug, Default)]
pub struct Layer {
    entries: Vec<Entry>,
}

/// A layer as written: the gzip blob's descriptor and the uncompressed tar's digest.
#[derive(Clone, Debug)]
pub struct BuiltLayer {
    pub descriptor: Descriptor,
    /// `sha256:` of the uncompressed tar (the config's `rootfs.diff_ids`).
    pub diff_id: String,
    pub gz: Vec<u8>,
}

impl Layer {
    pub fn new() -> Layer {
        Layer::default()
    }

    /// A directory (paths are relative to the root: `bin`, `www`).
    pub fn dir(mut self, path: &str, mode: u32) -> Layer {
        self.entries.push(Entry::Dir {
            path: path.trim_matches('/').to_string(),
            mode,
        });
        self
    }

    /// A regular file with `data`.
    pub fn file(mut self, path: &str, mode: u32, data: impl Into<Vec<u8>>) -> Layer {
        self.entries.push(Entry::File {
            path: path.trim_start_matches('/').to_string(),
            mode,
            data: data.into(),
        });
        self
    }

    /// A regular file copied from the host.
    pub fn host_file(self, path: &str, mode: u32, host: &Path) -> Result<Layer> {
        let data = std::fs::read(host).with_context(|| format!("reading {}", host.display()))?;
        Ok(self.file(path, mode, data))
    }

    /// A symbolic link `path -> target`.
    pub fn symlink(mut self, path: &str, target: &str) -> Layer {
        self.entries.push(Entry::Symlink {
            path: path.trim_start_matches('/').to_string(),
            target: target.to_string(),
        });
        self
    }

    /// The uncompressed tar.
    pub fn tar(&self) -> Result<Vec<u8>> {
        let mut b = tar::Builder::new(Vec::new());
        for e in &self.entries {
            let mut h = tar::Header::new_gnu();
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(MTIME);
            match e {
                Entry::Dir { path, mode } => {
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_mode(*mode);
                    h.set_size(0);
                    b.append_data(&mut h, format!("{path}/"), std::io::empty())?;
                }
                Entry::File { path, mode, data } => {
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_mode(*mode);
                    h.set_size(data.len() as u64);
                    b.append_data(&mut h, path, data.as_slice())?;
                }
                Entry::Symlink { path, target } => {
                    h.set_entry_type(tar::EntryType::Symlink);
                    h.set_mode(0o777);
                    h.set_size(0);
                    b.append_link(&mut h, path, target)?;
                }
            }
        }
        Ok(b.into_inner()?)
    }

    /// Tars and gzips the layer.
    pub fn build(&self) -> Result<BuiltLayer> {
        let tar = self.tar()?;
        // GzBuilder's header has mtime 0 and no file name: deterministic.
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&tar)?;
        let gz = gz.finish()?;
        Ok(BuiltLayer {
            descriptor: Descriptor {
                media_type: LAYER_MEDIA_TYPE.into(),
                digest: sha256_digest(&gz),
                size: gz.len() as u64,
            },
            diff_id: sha256_digest(&tar),
            gz,
        })
    }
}

/// What an image is made of and how it starts.
#[derive(Clone, Debug)]
pub struct ImageSpec {
    pub platform: Platform,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub working_dir: String,
    /// `80/tcp`-style ports for the config's `ExposedPorts`.
    pub exposed_ports: Vec<String>,
    pub layers: Vec<Layer>,
}

impl ImageSpec {
    /// An image for this host with one layer and a default `PATH`.
    pub fn new(layer: Layer) -> ImageSpec {
        ImageSpec {
            platform: Platform::host(),
            entrypoint: Vec::new(),
            cmd: Vec::new(),
            env: vec!["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()],
            working_dir: "/".into(),
            exposed_ports: Vec::new(),
            layers: vec![layer],
        }
    }

    pub fn entrypoint(mut self, args: &[&str]) -> ImageSpec {
        self.entrypoint = args.iter().map(|s| s.to_string()).collect();
        self
    }

    pub fn cmd(mut self, args: &[&str]) -> ImageSpec {
        self.cmd = args.iter().map(|s| s.to_string()).collect();
        self
    }

    pub fn expose(mut self, port: &str) -> ImageSpec {
        self.exposed_ports.push(port.to_string());
        self
    }

    pub fn platform(mut self, platform: Platform) -> ImageSpec {
        self.platform = platform;
        self
    }
}

/// An OCI image layout directory holding one tagged image or image index.
#[derive(Clone, Debug)]
pub struct OciLayout {
    pub dir: PathBuf,
    /// Repository part of the reference: `shturman.local/busybox`.
    pub name: String,
    pub tag: String,
    /// What `index.json` points at: a manifest, or an index for multi-arch.
    pub descriptor: Descriptor,
}

impl OciLayout {
    /// `name:tag`, e.g. `shturman.local/busybox:latest`.
    pub fn reference(&self) -> String {
        format!("{}:{}", self.name, self.tag)
    }

    /// The `oci:DIR:TAG` transport reference skopeo reads.
    pub fn skopeo_ref(&self) -> String {
        format!("oci:{}:{}", self.dir.display(), self.tag)
    }

    /// Writes the layout as an OCI archive (a plain tar of the directory), the
    /// format `ctr images import` takes.
    pub fn write_archive(&self, path: &Path) -> Result<()> {
        let file = std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
        let mut b = tar::Builder::new(std::io::BufWriter::new(file));
        let mut blobs: Vec<PathBuf> = std::fs::read_dir(self.dir.join("blobs/sha256"))?
            .map(|e| e.map(|e| e.path()))
            .collect::<std::io::Result<_>>()?;
        blobs.sort();
        for d in ["blobs", "blobs/sha256"] {
            let mut h = archive_header(tar::EntryType::Directory, 0o755, 0);
            b.append_data(&mut h, format!("{d}/"), std::io::empty())?;
        }
        let mut files = vec![
            ("oci-layout".to_string(), self.dir.join("oci-layout")),
            ("index.json".to_string(), self.dir.join("index.json")),
        ];
        for p in blobs {
            let name = p.file_name().context("blob name")?.to_string_lossy().into_owned();
            files.push((format!("blobs/sha256/{name}"), p));
        }
        for (name, p) in files {
            let data = std::fs::read(&p).with_context(|| format!("reading {}", p.display()))?;
            let mut h = archive_header(tar::EntryType::Regular, 0o644, data.len() as u64);
            b.append_data(&mut h, name, data.as_slice())?;
        }
        b.into_inner()?.flush()?;
        Ok(())
    }
}

fn archive_header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(MTIME);
    h
}

/// `sha256:<hex>` of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    let d = Sha256::digest(bytes);
    let mut s = String::with_capacity(7 + 64);
    s.push_str("sha256:");
    for b in d.iter() {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// Stores `data` as a blob of the layout at `dir`; returns its descriptor.
fn put_blob(dir: &Path, media_type: &str, data: &[u8]) -> Result<Descriptor> {
    let desc = Descriptor {
        media_type: media_type.into(),
        digest: sha256_digest(data),
        size: data.len() as u64,
    };
    let path = dir.join("blobs/sha256").join(desc.hex());
    if !path.exists() {
        std::fs::write(&path, data).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(desc)
}

fn init_layout(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir.join("blobs/sha256"))
        .with_context(|| format!("creating the layout at {}", dir.display()))?;
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#)?;
    Ok(())
}

/// Writes the layers, config and manifest of `spec` as blobs; returns the
/// manifest's descriptor.
fn put_image(dir: &Path, spec: &ImageSpec) -> Result<Descriptor> {
    let mut layers = Vec::new();
    let mut diff_ids = Vec::new();
    for l in &spec.layers {
        let built = l.build()?;
        put_blob(dir, LAYER_MEDIA_TYPE, &built.gz)?;
        diff_ids.push(built.diff_id);
        layers.push(built.descriptor.to_json());
    }
    let mut config = json!({
        "Env": spec.env,
        "WorkingDir": spec.working_dir,
    });
    if !spec.entrypoint.is_empty() {
        config["Entrypoint"] = json!(spec.entrypoint);
    }
    if !spec.cmd.is_empty() {
        config["Cmd"] = json!(spec.cmd);
    }
    if !spec.exposed_ports.is_empty() {
        let ports: serde_json::Map<String, Value> = spec
            .exposed_ports
            .iter()
            .map(|p| (p.clone(), json!({})))
            .collect();
        config["ExposedPorts"] = Value::Object(ports);
    }
    let mut image_config = json!({
        "created": CREATED,
        "architecture": spec.platform.architecture,
        "os": spec.platform.os,
        "config": config,
        "rootfs": { "type": "layers", "diff_ids": diff_ids },
        "history": spec.layers.iter().map(|_| json!({
            "created": CREATED,
            "created_by": "shturman-e2e oci_image",
        })).collect::<Vec<_>>(),
    });
    if let Some(v) = &spec.platform.variant {
        image_config["variant"] = json!(v);
    }
    let config_desc = put_blob(dir, CONFIG_MEDIA_TYPE, &serde_json::to_vec(&image_config)?)?;
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "config": config_desc.to_json(),
        "layers": layers,
    });
    put_blob(dir, MANIFEST_MEDIA_TYPE, &serde_json::to_vec(&manifest)?)
}

/// Writes `index.json` pointing at `desc`, tagged `name:tag`.
fn write_index_json(dir: &Path, name: &str, tag: &str, mut entry: Value) -> Result<()> {
    entry["annotations"] = json!({
        "org.opencontainers.image.ref.name": tag,
        "io.containerd.image.name": format!("{name}:{tag}"),
    });
    let index = json!({
        "schemaVersion": 2,
        "mediaType": INDEX_MEDIA_TYPE,
        "manifests": [entry],
    });
    std::fs::write(dir.join("index.json"), serde_json::to_vec_pretty(&index)?)?;
    Ok(())
}

fn check_name(name: &str, tag: &str) -> Result<()> {
    if name.is_empty() || tag.is_empty() || tag.contains(['/', ':', '@']) {
        bail!("bad image reference {name}:{tag}");
    }
    Ok(())
}

/// Writes a single-platform image as an OCI layout at `dir` (created if
/// needed; a previous `index.json` there is replaced), tagged `name:tag`.
pub fn write_image(dir: &Path, name: &str, tag: &str, spec: &ImageSpec) -> Result<OciLayout> {
    check_name(name, tag)?;
    init_layout(dir)?;
    let manifest = put_image(dir, spec)?;
    let mut entry = manifest.to_json();
    entry["platform"] = spec.platform.to_json();
    write_index_json(dir, name, tag, entry)?;
    Ok(OciLayout {
        dir: dir.to_path_buf(),
        name: name.into(),
        tag: tag.into(),
        descriptor: manifest,
    })
}

/// Writes a multi-arch image: one manifest per spec (each with its
/// platform), an image index over them, and `index.json` tagging that index
/// `name:tag`. Push it with [`crate::registry::Registry::push_layout`] (which
/// copies every platform).
pub fn write_multi_arch(dir: &Path, name: &str, tag: &str, specs: &[ImageSpec]) -> Result<OciLayout> {
    check_name(name, tag)?;
    if specs.is_empty() {
        bail!("a multi-arch image needs at least one platform");
    }
    init_layout(dir)?;
    let mut manifests = Vec::new();
    for spec in specs {
        let m = put_image(dir, spec)?;
        let mut entry = m.to_json();
        entry["platform"] = spec.platform.to_json();
        manifests.push(entry);
    }
    let index = json!({
        "schemaVersion": 2,
        "mediaType": INDEX_MEDIA_TYPE,
        "manifests": manifests,
    });
    let index_desc = put_blob(dir, INDEX_MEDIA_TYPE, &serde_json::to_vec(&index)?)?;
    write_index_json(dir, name, tag, index_desc.to_json())?;
    Ok(OciLayout {
        dir: dir.to_path_buf(),
        name: name.into(),
        tag: tag.into(),
        descriptor: index_desc,
    })
}

/// The busybox applets to link into `/bin`, from the binary's own list.
fn busybox_applets() -> Result<Vec<String>> {
    let out = std::process::Command::new(BUSYBOX)
        .arg("--list")
        .output()
        .with_context(|| {
            format!("running {BUSYBOX} --list (is busybox-static installed? scripts/setup.sh installs it)")
        })?;
    if !out.status.success() {
        bail!(
            "{BUSYBOX} --list failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|a| !a.is_empty() && *a != "busybox" && !a.contains('/'))
        .map(String::from)
        .collect())
}

/// A root file system with busybox in `/bin` (every applet linked), `/etc`
/// with a root user, `/tmp` and `/root`.
pub fn busybox_layer() -> Result<Layer> {
    if !Path::new(BUSYBOX).exists() {
        bail!("{BUSYBOX} is missing: install busybox-static (scripts/setup.sh does)");
    }
    let mut l = Layer::new()
        .dir("bin", 0o755)
        .host_file("bin/busybox", 0o755, Path::new(BUSYBOX))?;
    for a in busybox_applets()? {
        l = l.symlink(&format!("bin/{a}"), "busybox");
    }
    Ok(l.dir("etc", 0o755)
        .file("etc/passwd", 0o644, "root:x:0:0:root:/root:/bin/sh\n")
        .file("etc/group", 0o644, "root:x:0:\n")
        .dir("root", 0o700)
        .dir("tmp", 0o1777))
}

/// `shturman.local/busybox:latest`: plain busybox, `sh` by default.
pub fn busybox(dir: &Path) -> Result<OciLayout> {
    let spec = ImageSpec::new(busybox_layer()?).cmd(&["sh"]);
    let (name, tag) = split_ref(BUSYBOX_REF);
    write_image(dir, name, tag, &spec)
}

/// `shturman.local/busybox-httpd:latest`: busybox serving [`INDEX_HTML`]
/// from `/www` on port 80 (`busybox httpd -f -p 80 -h /www`).
pub fn busybox_httpd(dir: &Path) -> Result<OciLayout> {
    let www = Layer::new()
        .dir("www", 0o755)
        .file("www/index.html", 0o644, INDEX_HTML);
    let mut spec = ImageSpec::new(busybox_layer()?)
        .entrypoint(&["/bin/busybox", "httpd", "-f", "-p", "80", "-h", "/www"])
        .expose("80/tcp");
    spec.layers.push(www);
    let (name, tag) = split_ref(BUSYBOX_HTTPD_REF);
    write_image(dir, name, tag, &spec)
}

/// `shturman.local/pause:3.9`: the CRI sandbox image, built locally. Its
/// process sleeps forever and exits 0 on SIGTERM/SIGINT (as PID 1 of the
/// sandbox it gets only the signals it has handlers for, hence the trap).
pub fn pause(dir: &Path) -> Result<OciLayout> {
    let spec = ImageSpec::new(busybox_layer()?).entrypoint(&[
        "/bin/sh",
        "-c",
        "trap 'exit 0' TERM INT; while :; do sleep 3600 & wait $!; done",
    ]);
    let (name, tag) = split_ref(PAUSE_REF);
    write_image(dir, name, tag, &spec)
}

/// `name:tag` → (`name`, `tag`) (the tag is after the last `:` that follows the last `/`).
pub fn split_ref(reference: &str) -> (&str, &str) {
    let slash = reference.rfind('/').map_or(0, |i| i + 1);
    match reference[slash..].rfind(':') {
        Some(i) => (&reference[..slash + i], &reference[slash + i + 1..]),
        None => (reference, "latest"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_ref_handles_ports_and_defaults() {
        assert_eq!(
            split_ref("shturman.local/pause:3.9"),
            ("shturman.local/pause", "3.9")
        );
        assert_eq!(split_ref("127.0.0.1:5000/a/b:t"), ("127.0.0.1:5000/a/b", "t"));
        assert_eq!(split_ref("127.0.0.1:5000/a"), ("127.0.0.1:5000/a", "latest"));
    }

    #[test]
    fn layers_are_deterministic() {
        let l = Layer::new()
            .dir("a", 0o755)
            .file("a/b", 0o644, "x")
            .symlink("a/c", "b");
        let (x, y) = (l.build().unwrap(), l.build().unwrap());
        assert_eq!(x.descriptor, y.descriptor);
        assert_eq!(x.diff_id, y.diff_id);
        let mut names = Vec::new();
        let tar = l.tar().unwrap();
        let mut ar = tar::Archive::new(tar.as_slice());
        for e in ar.entries().unwrap() {
            let e = e.unwrap();
            names.push(e.path().unwrap().display().to_string());
        }
        assert_eq!(names, ["a/", "a/b", "a/c"]);
    }

    #[test]
    fn multi_arch_index_lists_every_platform() {
        let dir = tempfile::tempdir().unwrap();
        let specs: Vec<ImageSpec> = ["amd64", "arm64"]
            .iter()
            .map(|a| ImageSpec::new(Layer::new().file("arch", 0o644, *a)).platform(Platform::linux(a)))
            .collect();
        let l = write_multi_arch(dir.path(), "shturman.local/multi", "v1", &specs).unwrap();
        assert_eq!(l.descriptor.media_type, INDEX_MEDIA_TYPE);
        let blob = std::fs::read(dir.path().join("blobs/sha256").join(l.descriptor.hex())).unwrap();
        let index: Value = serde_json::from_slice(&blob).unwrap();
        let archs: Vec<&str> = index["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["platform"]["architecture"].as_str().unwrap())
            .collect();
        assert_eq!(archs, ["amd64", "arm64"]);
    }
}
