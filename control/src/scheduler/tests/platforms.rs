//! Parsing and intersecting image platforms.

use super::*;
use crate::scheduler::platform::pod_platforms;
use crate::scheduler::{IMAGE_PLATFORMS_ANNOTATION, ImagePlatforms, Platform, PlatformSet};

fn set(s: &str) -> PlatformSet {
    PlatformSet::parse_list(s).unwrap()
}

#[test]
fn platforms_parse_with_variants_aliases_and_spaces() {
    let s = set(" linux/amd64 , linux/arm64,linux/arm/v7,Linux/x86_64 ");
    let shown: Vec<String> = s.iter().map(ToString::to_string).collect();
    assert_eq!(
        shown,
        ["linux/amd64", "linux/arm64", "linux/arm/v7"],
        "duplicates after aliasing collapse"
    );
    assert!(s.runs_on("linux", "arm"));
    assert!(!s.runs_on("windows", "amd64"));
    let p: Platform = "linux/aarch64".parse().unwrap();
    assert_eq!(p.arch, "arm64");
}

#[test]
fn bad_platforms_are_rejected_with_a_hint() {
    for bad in [
        "",
        ",",
        "amd64",
        "linux/",
        "/amd64",
        "linux/arm/v7/x",
        "linux/am d64",
        "linux/arm/",
    ] {
        let err = PlatformSet::parse_list(bad).unwrap_err();
        assert!(
            err.to_string().contains("write os/arch[/variant]"),
            "{bad:?}: {err}"
        );
    }
}

#[test]
fn sets_intersect_on_os_and_arch() {
    let a = set("linux/amd64,linux/arm64,linux/arm/v7");
    let b = set("linux/arm64,linux/arm/v6");
    let both: Vec<String> = a.intersect(&b).iter().map(ToString::to_string).collect();
    assert_eq!(both, ["linux/arm64", "linux/arm/v7"]);
    assert!(a.intersect(&set("linux/riscv64")).is_empty());
}

#[test]
fn a_pod_platforms_come_from_the_annotation_and_the_index_intersected() {
    let mut index = ImagePlatforms::default();
    assert_eq!(pod_platforms(&pod("p"), &index).unwrap(), None, "nothing known");
    let annotated_pod = annotated(pod("p"), IMAGE_PLATFORMS_ANNOTATION, "linux/amd64,linux/arm64");
    assert_eq!(
        pod_platforms(&annotated_pod, &index).unwrap(),
        Some(set("linux/amd64,linux/arm64"))
    );
    index.insert("nginx:1.27", set("linux/arm64,linux/arm/v7"));
    assert_eq!(
        pod_platforms(&pod("p"), &index).unwrap(),
        Some(set("linux/arm64,linux/arm/v7"))
    );
    assert_eq!(
        pod_platforms(&annotated_pod, &index).unwrap(),
        Some(set("linux/arm64"))
    );
}

#[test]
fn the_index_steers_placement_like_the_annotation() {
    let mut index = ImagePlatforms::default();
    index.insert("nginx:1.27", set("linux/arm64"));
    let s = snap(&[node("amd"), with_arch(node("arm"), "arm64")]);
    let mut sched = exhaustive().with_image_platforms(index);
    assert_eq!(sched.schedule(&pod("p"), &s).unwrap(), "arm");
}
