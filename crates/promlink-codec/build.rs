//! Compiles the workspace's `proto/*.proto` (at the repository's top level, next to the
//! `promlink` crate that documents them) with a pure-Rust protobuf compiler (protox), so a fresh
//! machine needs no `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "../../proto";
    let files = [
        format!("{proto}/remote_write_v1.proto"),
        format!("{proto}/remote_write_v2.proto"),
    ];
    for f in &files {
        println!("cargo:rerun-if-changed={f}");
    }
    let descriptors = protox::compile(&files, [proto])?;
    prost_build::Config::new().compile_fds(descriptors)?;
    Ok(())
}
