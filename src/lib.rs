//! The library half of the `boxbench` package: the backend registry and the run documents that the
//! CLI (`src/main.rs`) and the Criterion benches (`benches/`) share.

pub mod backends;
pub mod compare;
pub mod docker_split;
pub mod images;
pub mod output;
pub mod reports;
pub mod soak;
