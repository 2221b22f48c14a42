//! Compiles `proto/` with a vendored protoc (no system protoc needed) and
//! writes the descriptor set that server reflection serves.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    std::env::set_var("PROTOC", protoc);
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    println!("cargo:rerun-if-changed=proto");
    // sqlx::migrate! embeds these; a new file must rebuild the crate.
    println!("cargo:rerun-if-changed=migrations");
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("aegis_cluster_descriptor.bin"))
        .build_client(true)
        .build_server(true)
        // Small per-stream buffers: a replica holds tens of thousands of streams.
        .codec_path("crate::grpc::codec::LeanCodec")
        .compile_protos(&["proto/aegis_cluster.proto"], &["proto"])?;
    Ok(())
}
