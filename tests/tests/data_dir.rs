//! A corrupt or unusable data dir gives a clear error and a non-zero exit,
//! never a panic or a restart loop.

use std::process::Command;

use shturman_e2e::{binary, free_port};

fn control(data_dir: &std::path::Path) -> (bool, String) {
    let out = Command::new(binary("shturman"))
        .args(["control", "--data-dir"])
        .arg(data_dir)
        .args(["--api-addr", &format!("127.0.0.1:{}", free_port())])
        .output()
        .expect("run shturman control");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn data_dir_that_is_a_file_is_refused_clearly() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    let (ok, err) = control(&file);
    assert!(!ok);
    assert!(err.contains("not-a-dir"), "names the path: {err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn garbage_store_is_refused_clearly() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    std::fs::create_dir_all(&store).unwrap();
    // Files where sled keeps its data, full of garbage.
    std::fs::write(store.join("conf"), b"\x00\xffgarbage that is not a sled config").unwrap();
    std::fs::write(store.join("db"), vec![0xAB; 4096]).unwrap();
    let (ok, err) = control(tmp.path());
    assert!(!ok, "a garbage store must not start");
    assert!(err.contains("store"), "names the store: {err}");
    assert!(!err.contains("panicked"), "{err}");
}
