//! `ticker`: prints one numbered line a second, forever.

use std::io::Write;
use std::time::{Duration, Instant};

fn main() {
    let name = std::env::var("POD_NAME").unwrap_or_else(|_| "ticker".into());
    let start = Instant::now();
    let mut n: u64 = 0;
    loop {
        n += 1;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{name} tick {n} at {:.1}s", start.elapsed().as_secs_f64());
        let _ = out.flush();
        drop(out);
        std::thread::sleep(Duration::from_secs(1));
    }
}
