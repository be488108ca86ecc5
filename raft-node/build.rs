//! Generates the etcd v3 API types and services from `proto/`.
//!
//! `protox` parses the `.proto` files in Rust, so a build needs no system
//! `protoc`; `tonic-prost-build` emits the messages and gRPC services, and
//! `pbjson-build` their proto3 JSON mapping (base64 bytes, 64-bit integers
//! as strings, etcd's original field names) for the `/v3` JSON gateway.

use std::path::PathBuf;

use prost::Message as _;

const PROTOS: &[&str] = &[
    "etcd/mvccpb/kv.proto",
    "etcd/authpb/auth.proto",
    "etcd/etcdserverpb/rpc.proto",
    "raftnode/internal.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(PROTOS, ["proto"])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    let descriptor_path = out.join("descriptors.bin");
    std::fs::write(&descriptor_path, fds.encode_to_vec())?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;

    let descriptors = std::fs::read(&descriptor_path)?;
    pbjson_build::Builder::new()
        .register_descriptors(&descriptors)?
        .preserve_proto_field_names()
        // etcd's gateway ignores fields it does not know (newer clients).
        .ignore_unknown_fields()
        .build(&[".etcdserverpb", ".mvccpb", ".authpb"])?;
    Ok(())
}
