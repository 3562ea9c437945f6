//! Compiles `proto/*.proto` with protox (a protobuf compiler written in Rust)
//! and prost-build, so building sockloop never needs a system `protoc`.
//! Only the `services` feature speaks protobuf: without it this does nothing.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=build.rs");
    #[cfg(feature = "services")]
    {
        const PROTOS: &[&str] = &["proto/chat.proto"];
        for proto in PROTOS {
            println!("cargo:rerun-if-changed={proto}");
        }
        let descriptors = protox::compile(PROTOS, ["proto"])?;
        prost_build::Config::new().compile_fds(descriptors)?;
    }
    Ok(())
}
