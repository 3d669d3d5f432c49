//! Harness for end-to-end tests: temp dirs, free loopback ports, real binaries.
