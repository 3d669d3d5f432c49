//! Runs the store conformance suite against every backend.

use shturman_control::store::conformance::Factory;
use shturman_control::store::{SledStore, StoreOptions};

/// A sled store in its own temporary directory; later opens reopen it.
pub struct SledFactory {
    dir: tempfile::TempDir,
}

impl SledFactory {
    fn new() -> Self {
        SledFactory {
            dir: tempfile::tempdir().expect("a temporary directory"),
        }
    }
}

impl Factory for SledFactory {
    type Store = SledStore;
    fn open(&mut self, options: StoreOptions) -> SledStore {
        SledStore::open_with(&self.dir.path().join("store"), options).expect("opening the sled store")
    }
    fn persistent(&self) -> bool {
        true
    }
}

mod memory {
    shturman_control::store_conformance_tests!(shturman_control::store::conformance::MemoryFactory);
}

mod sled {
    shturman_control::store_conformance_tests!(super::SledFactory::new());
}
