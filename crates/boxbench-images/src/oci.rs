//! The OCI image layout (`oci-layout`, `index.json`, `blobs/sha256/…`) of the rootfs: one gzip tar
//! layer, an image configuration whose `rootfs.diff_ids` is the digest of the uncompressed layer and
//! whose command is the hello workload, and a manifest tying them together, every blob named by its
//! sha256. Tools that read OCI layouts (`skopeo copy oci:…`, `podman load`) take it as is.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use boxbench_core::Workload;
use flate2::Compression;
use flate2::write::GzEncoder;
use oci_spec::OciSpecError;
use oci_spec::image::{
    Arch, ConfigBuilder, Descriptor, DescriptorBuilder, Digest as OciDigest, ImageConfigurationBuilder,
    ImageIndexBuilder, ImageManifestBuilder, MediaType, OciLayoutBuilder, Os, RootFsBuilder, Sha256Digest,
};
use sha2::{Digest, Sha256};

use crate::bundle::WORKLOAD_PATH;

/// The tag the image is known by in `index.json` (`org.opencontainers.image.ref.name`).
pub const IMAGE_REF_NAME: &str = "latest";

/// The gzip level of the layer (gzip's default, what registries and `docker save` see).
pub const LAYER_GZIP_LEVEL: u32 = 6;

/// An image layout that could not be written.
#[derive(Debug, thiserror::Error)]
pub enum OciError {
    /// A blob or file of the layout could not be written or read.
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    /// An OCI document could not be built or serialised.
    #[error("OCI {document}: {source}")]
    Spec { document: &'static str, source: OciSpecError },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> OciError + '_ {
    move |source| OciError::Io { path: path.to_owned(), source }
}

fn spec_err(document: &'static str) -> impl FnOnce(OciSpecError) -> OciError {
    move |source| OciError::Spec { document, source }
}

/// A writer that hashes and counts what passes through it.
struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    bytes: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// The hex sha256 of `bytes`.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    crate::hex(&Sha256::digest(bytes))
}

fn oci_digest(hex: &str) -> Result<OciDigest, OciError> {
    Sha256Digest::from_str(hex).map(OciDigest::from).map_err(spec_err("digest"))
}

/// Writes `bytes` as a blob of the layout and returns its descriptor.
fn write_blob(blobs: &Path, media_type: MediaType, bytes: &[u8]) -> Result<Descriptor, OciError> {
    let hex = sha256_hex(bytes);
    let path = blobs.join(&hex);
    fs::write(&path, bytes).map_err(io_err(&path))?;
    Ok(Descriptor::new(media_type, bytes.len() as u64, oci_digest(&hex)?))
}

/// Compresses the tar at `rootfs_tar` into a layer blob; returns its descriptor and the diff id.
fn write_layer(blobs: &Path, rootfs_tar: &Path) -> Result<(Descriptor, String), OciError> {
    let staging = blobs.join(".layer.tmp");
    let file = File::create(&staging).map_err(io_err(&staging))?;
    let mut gz = GzEncoder::new(
        HashingWriter { inner: file, hasher: Sha256::new(), bytes: 0 },
        Compression::new(LAYER_GZIP_LEVEL),
    );
    let mut tar = File::open(rootfs_tar).map_err(io_err(rootfs_tar))?;
    let mut uncompressed = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = tar.read(&mut buf).map_err(io_err(rootfs_tar))?;
        if n == 0 {
            break;
        }
        uncompressed.update(&buf[..n]);
        gz.write_all(&buf[..n]).map_err(io_err(&staging))?;
    }
    let compressed = gz.finish().map_err(io_err(&staging))?;
    let hex = crate::hex(&compressed.hasher.finalize());
    let path = blobs.join(&hex);
    fs::rename(&staging, &path).map_err(io_err(&path))?;
    let descriptor = Descriptor::new(MediaType::ImageLayerGzip, compressed.bytes, oci_digest(&hex)?);
    Ok((descriptor, format!("sha256:{}", crate::hex(&uncompressed.finalize()))))
}

/// Writes the image layout of the layer `rootfs_tar` into `dest` (which must not exist).
pub(crate) fn write_layout(rootfs_tar: &Path, dest: &Path) -> Result<(), OciError> {
    let blobs = dest.join("blobs/sha256");
    fs::create_dir_all(&blobs).map_err(io_err(&blobs))?;
    let (layer, diff_id) = write_layer(&blobs, rootfs_tar)?;

    let run_config = ConfigBuilder::default()
        .env(vec![WORKLOAD_PATH.to_owned()])
        .cmd(Workload::Hello.argv())
        .working_dir("/")
        .build()
        .map_err(spec_err("image config"))?;
    let config = ImageConfigurationBuilder::default()
        .architecture(Arch::Amd64)
        .os(Os::Linux)
        .config(run_config)
        .rootfs(RootFsBuilder::default().typ("layers").diff_ids(vec![diff_id]).build().map_err(spec_err("rootfs"))?)
        .build()
        .map_err(spec_err("image config"))?;
    let config_json = config.to_string().map_err(spec_err("image config"))?;
    let config_descriptor = write_blob(&blobs, MediaType::ImageConfig, config_json.as_bytes())?;

    let manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(config_descriptor)
        .layers(vec![layer])
        .build()
        .map_err(spec_err("manifest"))?;
    let manifest_json = manifest.to_string().map_err(spec_err("manifest"))?;
    let manifest_descriptor = write_blob(&blobs, MediaType::ImageManifest, manifest_json.as_bytes())?;
    let tagged = DescriptorBuilder::default()
        .media_type(MediaType::ImageManifest)
        .size(manifest_descriptor.size())
        .digest(manifest_descriptor.digest().clone())
        .annotations([("org.opencontainers.image.ref.name".to_owned(), IMAGE_REF_NAME.to_owned())])
        .build()
        .map_err(spec_err("index"))?;

    let index = ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(vec![tagged])
        .build()
        .map_err(spec_err("index"))?;
    let index_path = dest.join("index.json");
    fs::write(&index_path, index.to_string().map_err(spec_err("index"))?).map_err(io_err(&index_path))?;
    let layout = OciLayoutBuilder::default().image_layout_version("1.0.0").build().map_err(spec_err("oci-layout"))?;
    let layout_path = dest.join("oci-layout");
    fs::write(&layout_path, layout.to_string().map_err(spec_err("oci-layout"))?).map_err(io_err(&layout_path))?;

    Ok(())
}
