//! Image platforms: which `os/arch` an OCI pod's images are built for, when
//! that is known, so the scheduler does not place an amd64-only image on an
//! arm64 Raspberry Pi.
//!
//! Two sources, intersected (a pod runs only where *every* image runs):
//! - the pod annotation [`IMAGE_PLATFORMS_ANNOTATION`]
//!   (`shturman.io/image-platforms: linux/amd64,linux/arm64`), which applies
//!   to every container image of the pod — a user or a CI pipeline states
//!   what it built;
//! - an [`ImagePlatforms`] index the caller supplies, image reference →
//!   platforms (e.g. filled later from registry manifest lists).
//!
//! Neither present means "unknown": the pod may go to any arch. Wasm pods
//! are arch-neutral and never consult this. Matching is on `os` and `arch`
//! (Go's names, as `kubernetes.io/arch` uses); a variant (`linux/arm/v7`) is
//! parsed and kept but not matched, because nodes do not report one.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use shturman_api::core::Pod;

/// The pod annotation listing the platforms the pod's images provide.
pub const IMAGE_PLATFORMS_ANNOTATION: &str = "shturman.io/image-platforms";

/// One `os/arch[/variant]` platform.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Platform {
    pub os: String,
    pub arch: String,
    pub variant: Option<String>,
}

/// Why a platform (list) was rejected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid platform {input:?}: {reason}; write os/arch[/variant] such as linux/amd64 or linux/arm/v7, comma-separated"
)]
pub struct PlatformError {
    pub input: String,
    pub reason: &'static str,
}

impl Platform {
    /// Whether a node with this `os` and `arch` can run this platform.
    pub fn runs_on(&self, os: &str, arch: &str) -> bool {
        self.os == os && self.arch == arch
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.arch)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// Go's architecture name for common aliases (`x86_64` → `amd64`).
pub fn normalize_arch(arch: &str) -> &str {
    match arch {
        "x86_64" | "x86-64" => "amd64",
        "aarch64" => "arm64",
        "armhf" | "armv7l" | "armv7" | "armv6l" => "arm",
        other => other,
    }
}

impl FromStr for Platform {
    type Err = PlatformError;

    fn from_str(s: &str) -> Result<Platform, PlatformError> {
        let err = |reason| PlatformError {
            input: s.to_string(),
            reason,
        };
        let mut parts = s.trim().split('/');
        let os = parts.next().unwrap_or("").trim();
        let arch = parts.next().ok_or_else(|| err("it has no architecture"))?.trim();
        let variant = parts.next().map(str::trim);
        if parts.next().is_some() {
            return Err(err("it has more than three parts"));
        }
        let valid = |p: &str| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        };
        if !valid(os) {
            return Err(err(
                "the os is empty or has characters other than letters, digits, '-' and '_'",
            ));
        }
        if !valid(arch) {
            return Err(err(
                "the architecture is empty or has characters other than letters, digits, '-' and '_'",
            ));
        }
        if variant.is_some_and(|v| !valid(v)) {
            return Err(err(
                "the variant is empty or has characters other than letters, digits, '-' and '_'",
            ));
        }
        Ok(Platform {
            os: os.to_ascii_lowercase(),
            arch: normalize_arch(&arch.to_ascii_lowercase()).to_string(),
            variant: variant.map(str::to_string),
        })
    }
}

/// A set of platforms (small: a handful per image).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PlatformSet(Vec<Platform>);

impl PlatformSet {
    /// Parses a comma-separated list (`linux/amd64,linux/arm64`).
    pub fn parse_list(s: &str) -> Result<PlatformSet, PlatformError> {
        let mut set = PlatformSet::default();
        for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            set.insert(item.parse()?);
        }
        if set.0.is_empty() {
            return Err(PlatformError {
                input: s.to_string(),
                reason: "it lists no platform",
            });
        }
        Ok(set)
    }

    pub fn insert(&mut self, p: Platform) {
        if !self.0.contains(&p) {
            self.0.push(p);
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = &Platform> {
        self.0.iter()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether a node with `os` and `arch` runs any platform of the set.
    pub fn runs_on(&self, os: &str, arch: &str) -> bool {
        self.0.iter().any(|p| p.runs_on(os, arch))
    }

    /// The platforms of `self` whose os/arch `other` also provides.
    pub fn intersect(&self, other: &PlatformSet) -> PlatformSet {
        PlatformSet(
            self.0
                .iter()
                .filter(|p| other.runs_on(&p.os, &p.arch))
                .cloned()
                .collect(),
        )
    }
}

impl FromIterator<Platform> for PlatformSet {
    fn from_iter<I: IntoIterator<Item = Platform>>(iter: I) -> Self {
        let mut set = PlatformSet::default();
        for p in iter {
            set.insert(p);
        }
        set
    }
}

/// Caller-supplied platforms per image reference.
#[derive(Clone, Debug, Default)]
pub struct ImagePlatforms {
    by_image: HashMap<String, PlatformSet>,
}

impl ImagePlatforms {
    /// Records that `image` is available for `platforms`.
    pub fn insert(&mut self, image: impl Into<String>, platforms: PlatformSet) {
        self.by_image.insert(image.into(), platforms);
    }

    pub fn get(&self, image: &str) -> Option<&PlatformSet> {
        self.by_image.get(image)
    }

    pub fn is_empty(&self) -> bool {
        self.by_image.is_empty()
    }
}

/// The platforms an OCI pod can run on: the intersection of the annotation
/// and the index entries of its images; `None` when nothing is known.
pub fn pod_platforms(pod: &Pod, index: &ImagePlatforms) -> Result<Option<PlatformSet>, PlatformError> {
    let mut known: Option<PlatformSet> = match pod.metadata.annotations.get(IMAGE_PLATFORMS_ANNOTATION) {
        Some(v) => Some(PlatformSet::parse_list(v)?),
        None => None,
    };
    if !index.is_empty() {
        for c in &pod.spec.containers {
            if let Some(set) = index.get(&c.image) {
                known = Some(match known {
                    Some(k) => k.intersect(set),
                    None => set.clone(),
                });
            }
        }
    }
    Ok(known)
}
