//! Embeds the web dashboard and the API viewer: generates a table of every
//! file under `static/` (subfolders included) and under `assets/swagger/`
//! (path, Content-Type, `include_bytes!`), so a new file is served without a
//! code change and nothing served is listed by hand.

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

/// The Rust source of a table named `name` of every file under `dir`.
fn table(name: &str, dir: &Path, what: &str) -> String {
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut files = Vec::new();
    walk(dir, &mut files);
    let mut code = format!(
        "/// Every file under `{what}`: (path relative to it, Content-Type, bytes).\npub static {name}: &[(&str, &str, &[u8])] = &[\n"
    );
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
        let rel = f.strip_prefix(dir).expect("walked under dir");
        let rel = rel.to_string_lossy().replace('\\', "/");
        if rel.split('/').any(|s| s.starts_with('.')) {
            continue;
        }
        let _ = writeln!(
            code,
            "    ({:?}, {:?}, include_bytes!({:?})),",
            rel,
            content_type(f),
            f.display().to_string()
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
        "DOCS_ASSETS",
        &root.join("assets").join("swagger"),
        "assets/swagger/",
    ));
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"))
        .join("static_files.rs");
    std::fs::write(out, code).expect("write the static file tables");
}
