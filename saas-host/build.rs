//! Embeds the web dashboard and the API viewer: generates a table of every
//! file under `static/` (subfolders included) and under `assets/swagger/`
//! (path, Content-Type, `include_bytes!`, its strong ETag and its gzip
//! form), so a new file is served without a code change and nothing served
//! is listed by hand. The ETag (a SHA-256 prefix of the bytes) and the gzip
//! compression are computed here, once, so serving them costs no CPU.

use std::fmt::Write;
use std::path::{Path, PathBuf};

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<_> = rd.filter_map(Result::ok).map(|e| e.path()).collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            println!("cargo:rerun-if-changed={}", p.display());
            walk(&p, out);
        } else if p.is_file() {
            out.push(p);
        }
    }
}

fn content_type(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()).unwrap_or("") {
        "html" | "htm" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" | "map" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "ico" => "image/x-icon",
        "woff" => "font/woff",
        "woff2" => "font/woff2",
        "ttf" => "font/ttf",
        // Extensionless files are the viewer's LICENSE, NOTICE and VERSION.
        "txt" | "md" | "" => "text/plain; charset=utf-8",
        "wasm" => "application/wasm",
        _ => "application/octet-stream",
    }
}

/// A strong ETag of `bytes`: the first 16 bytes of their SHA-256, quoted.
fn etag(bytes: &[u8]) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(bytes);
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("\"{hex}\"")
}

/// `bytes` gzip-compressed (best compression), written under `out` as
/// `file`; `None` when compression would not make them smaller.
fn gzip(bytes: &[u8], out: &Path, file: &str) -> Option<PathBuf> {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    enc.write_all(bytes).ok()?;
    let gz = enc.finish().ok()?;
    if gz.len() + 64 >= bytes.len() {
        return None;
    }
    let path = out.join(file);
    std::fs::write(&path, gz).expect("write a compressed file");
    Some(path)
}

/// The Rust source of a table named `name` of every file under `dir`.
fn table(name: &str, dir: &Path, what: &str) -> String {
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut files = Vec::new();
    walk(dir, &mut files);
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let mut code = format!("/// Every file under `{what}`.\npub static {name}: &[Asset] = &[\n");
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
        let rel = f.strip_prefix(dir).expect("walked under dir");
        let rel = rel.to_string_lossy().replace('\\', "/");
        if rel.split('/').any(|s| s.starts_with('.')) {
            continue;
        }
        let bytes = std::fs::read(f).expect("read a static file");
        let gz_name = format!("{name}-{}.gz", rel.replace('/', "__"));
        let gz = match gzip(&bytes, &out, &gz_name) {
            Some(p) => format!("Some(include_bytes!({:?}))", p.display().to_string()),
            None => "None".to_owned(),
        };
        let _ = writeln!(
            code,
            "    Asset {{ path: {:?}, content_type: {:?}, bytes: include_bytes!({:?}), etag: {:?}, gzip: {gz} }},",
            rel,
            content_type(f),
            f.display().to_string(),
            etag(&bytes),
        );
    }
    code.push_str("];\n");
    code
}

fn main() {
    let root =
        PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let mut code = table("STATIC_FILES", &root.join("static"), "static/");
    code.push_str(&table(
        "DOCS_PAGE",
        &root.join("assets").join("docs-page"),
        "assets/docs-page/",
    ));
    code.push_str(&table(
        "DOCS_ASSETS",
        &root.join("assets").join("swagger"),
        "assets/swagger/",
    ));
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"))
        .join("static_files.rs");
    std::fs::write(out, code).expect("write the static file tables");
}
