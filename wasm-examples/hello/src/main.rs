//! `hello`: prints a greeting, its arguments, its environment and a mounted
//! config file, then exits 0. The file is `$CONFIG_FILE`, else
//! `/config/greeting.txt`; a missing file is reported, not fatal.

use std::io::Write;

fn main() {
    let mut out = std::io::stdout().lock();
    let who = std::env::var("GREETING_TARGET").unwrap_or_else(|_| "Shturman".into());
    let _ = writeln!(out, "Hello from Wasm, {who}!");
    for (i, arg) in std::env::args().enumerate() {
        let _ = writeln!(out, "arg[{i}]={arg}");
    }
    let mut env: Vec<(String, String)> = std::env::vars().collect();
    env.sort();
    for (k, v) in env {
        let _ = writeln!(out, "env {k}={v}");
    }
    let path = std::env::var("CONFIG_FILE").unwrap_or_else(|_| "/config/greeting.txt".into());
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            for line in text.lines() {
                let _ = writeln!(out, "config {path}: {line}");
            }
        }
        Err(e) => {
            let _ = writeln!(out, "config {path}: not readable ({e})");
        }
    }
}
