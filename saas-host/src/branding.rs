//! White-label (issue 17): the product name, logo, colours, support address
//! and documentation page title a reseller configures, applied to the
//! dashboard (title, header, welcome text, footer support link), the API
//! viewer (`/docs` page title; its heading is the OpenAPI `info.title`, the
//! product name) and the OpenAPI document. The default is qlearn's own.
//!
//! Everything is rendered once, when the configuration is made
//! ([`Brand::new`]): the dashboard's `index.html` and the docs page with
//! every configured text HTML-escaped, `/static/brand.css` (the colours as
//! CSS custom properties, from values checked against a strict colour
//! grammar, so the dashboard's CSP, `style-src 'self'`, needs no inline
//! style), `/static/brand.json` and the logo file (`/static/brand-logo`).
//! With the default brand the embedded pages are served as built (with
//! their gzip forms).

use std::fmt;
use std::hash::{Hash, Hasher};
use std::path::Path;

use bytes::Bytes;
use qlearn_core::tenancy::normalize_email;
use qlearn_core::{Error, Result};
use serde::Serialize;

use crate::assets::{Asset, DOCS_PAGE, STATIC_FILES};

/// The product's name by default.
pub const DEFAULT_NAME: &str = "qlearn";
/// The documentation page's title by default.
pub const DEFAULT_DOCS_TITLE: &str = "qlearn API";
/// Largest logo file, bytes.
pub const MAX_LOGO_BYTES: usize = 256 * 1024;

/// What an operator configures (flags `--brand-*`, variables `BRAND_*`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BrandSettings {
    /// Product name (default `qlearn`): 1 to 60 characters, no control
    /// characters.
    pub name: Option<String>,
    /// A logo image file (SVG, PNG, JPEG, WebP or GIF; at most 256 KiB),
    /// served as `/static/brand-logo` in place of the built-in mark.
    pub logo: Option<std::path::PathBuf>,
    /// Primary colour (buttons, links, bars): `#rgb`, `#rgba`, `#rrggbb`,
    /// `#rrggbbaa`, or `rgb()`/`rgba()`/`hsl()`/`hsla()` of numbers.
    pub primary_color: Option<String>,
    /// Accent colour (badges, highlights), same forms.
    pub accent_color: Option<String>,
    /// Support address: an email (linked as `mailto:`) or an `https://` URL.
    pub support: Option<String>,
    /// The documentation page's title (default `qlearn API`).
    pub docs_title: Option<String>,
}

/// A rendered file the server answers with.
#[derive(Clone)]
pub struct Rendered {
    /// Its Content-Type.
    pub content_type: &'static str,
    /// Its bytes.
    pub bytes: Bytes,
    /// Its strong ETag (quoted): a hash of the bytes.
    pub etag: String,
}

impl Rendered {
    fn new(content_type: &'static str, bytes: Vec<u8>) -> Rendered {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        bytes.hash(&mut h);
        Rendered {
            content_type,
            etag: format!("\"brand-{:016x}-{}\"", h.finish(), bytes.len()),
            bytes: Bytes::from(bytes),
        }
    }
}

/// The brand in force: its texts, and its files rendered once.
#[derive(Clone)]
pub struct Brand {
    /// Product name.
    pub name: String,
    /// Documentation page title.
    pub docs_title: String,
    /// The support link's target (`mailto:...` or `https://...`), if any.
    pub support_href: Option<String>,
    /// `index.html` and the docs page with the brand applied; `None`:
    /// the default brand, served as embedded.
    pub index: Option<Rendered>,
    /// The docs page, as `index`.
    pub docs: Option<Rendered>,
    /// `/static/brand.css`.
    pub css: Rendered,
    /// `/static/brand.json`.
    pub json: Rendered,
    /// `/static/brand-logo`, if configured.
    pub logo: Option<Rendered>,
}

impl fmt::Debug for Brand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Brand")
            .field("name", &self.name)
            .field("docs_title", &self.docs_title)
            .field("support_href", &self.support_href)
            .field("logo", &self.logo.is_some())
            .finish_non_exhaustive()
    }
}

impl Default for Brand {
    fn default() -> Self {
        match Brand::new(&BrandSettings::default()) {
            Ok(b) => b,
            // The default settings are valid and the embedded pages hold
            // every anchor (tested); keep serving the embedded files.
            Err(_) => Brand {
                name: DEFAULT_NAME.into(),
                docs_title: DEFAULT_DOCS_TITLE.into(),
                support_href: None,
                index: None,
                docs: None,
                css: Rendered::new(CSS, Vec::new()),
                json: Rendered::new(JSON, b"{}".to_vec()),
                logo: None,
            },
        }
    }
}

const CSS: &str = "text/css; charset=utf-8";
const JSON: &str = "application/json";

/// What `/static/brand.json` says (for scripts; the page has it already).
#[derive(Serialize)]
struct BrandJson<'a> {
    name: &'a str,
    docs_title: &'a str,
    support: Option<&'a str>,
    logo: Option<&'static str>,
    primary_color: Option<&'a str>,
    accent_color: Option<&'a str>,
}

impl Brand {
    /// Checks `s` and renders the brand's files. Errors name the setting
    /// (`brand_name`, `brand_primary_color`, ...).
    pub fn new(s: &BrandSettings) -> Result<Brand> {
        let name = text("brand_name", s.name.as_deref(), DEFAULT_NAME, 60)?;
        let docs_title = text(
            "brand_docs_title",
            s.docs_title.as_deref(),
            DEFAULT_DOCS_TITLE,
            100,
        )?;
        let primary = s
            .primary_color
            .as_deref()
            .map(|c| css_color("brand_primary_color", c))
            .transpose()?;
        let accent = s
            .accent_color
            .as_deref()
            .map(|c| css_color("brand_accent_color", c))
            .transpose()?;
        let support_href = s.support.as_deref().map(support_href).transpose()?;
        let logo = s.logo.as_deref().map(read_logo).transpose()?;

        let default = name == DEFAULT_NAME && support_href.is_none() && logo.is_none();
        let index = if default {
            None
        } else {
            Some(Rendered::new(
                "text/html; charset=utf-8",
                render_index(&name, support_href.as_deref(), logo.is_some())?.into_bytes(),
            ))
        };
        let docs = if docs_title == DEFAULT_DOCS_TITLE && logo.is_none() {
            None
        } else {
            Some(Rendered::new(
                "text/html; charset=utf-8",
                render_docs(&docs_title, logo.is_some())?.into_bytes(),
            ))
        };
        let css = Rendered::new(
            CSS,
            brand_css(primary.as_deref(), accent.as_deref()).into_bytes(),
        );
        let json = serde_json::to_vec(&BrandJson {
            name: &name,
            docs_title: &docs_title,
            support: support_href.as_deref(),
            logo: logo.as_ref().map(|_| "/static/brand-logo"),
            primary_color: primary.as_deref(),
            accent_color: accent.as_deref(),
        })
        .map_err(|e| Error::Internal(e.to_string()))?;
        Ok(Brand {
            name,
            docs_title,
            support_href,
            index,
            docs,
            css,
            json: Rendered::new(JSON, json),
            logo,
        })
    }

    /// The brand's own file `name` under `/static/`, if it is one.
    pub fn static_file(&self, name: &str) -> Option<&Rendered> {
        match name {
            "brand.css" => Some(&self.css),
            "brand.json" => Some(&self.json),
            "brand-logo" => self.logo.as_ref(),
            _ => None,
        }
    }
}

/// A configured text, or `default`: trimmed, 1 to `max` characters, no
/// control characters.
fn text(field: &str, v: Option<&str>, default: &str, max: usize) -> Result<String> {
    let Some(v) = v else {
        return Ok(default.to_owned());
    };
    let v = v.trim();
    let n = v.chars().count();
    if n == 0 || n > max || v.chars().any(char::is_control) {
        return Err(Error::field(
            field,
            format!("must be 1 to {max} characters without control characters"),
        ));
    }
    Ok(v.to_owned())
}

/// Checks a CSS colour: hex (`#rgb`, `#rgba`, `#rrggbb`, `#rrggbbaa`) or a
/// functional `rgb()`, `rgba()`, `hsl()`, `hsla()` of numbers, percentages,
/// `deg`, commas, slashes and spaces. Anything else (names, `var()`,
/// `url()`, a `;` or `}` that would end the rule) is refused, so the value
/// is safe to write into `brand.css`.
pub fn css_color(field: &str, v: &str) -> Result<String> {
    let v = v.trim().to_ascii_lowercase();
    let bad = || {
        Error::field(
            field,
            "must be a CSS colour: #rgb, #rrggbb (or with alpha), rgb(), rgba(), hsl() or hsla()",
        )
    };
    if let Some(hex) = v.strip_prefix('#') {
        let ok = matches!(hex.len(), 3 | 4 | 6 | 8) && hex.bytes().all(|b| b.is_ascii_hexdigit());
        return if ok { Ok(v) } else { Err(bad()) };
    }
    let args = ["rgba(", "rgb(", "hsla(", "hsl("]
        .iter()
        .find_map(|f| v.strip_prefix(f))
        .and_then(|rest| rest.strip_suffix(')'))
        .ok_or_else(bad)?;
    let allowed = |c: char| c.is_ascii_digit() || " .,%/+-deg".contains(c);
    let numbers = args
        .split([',', ' ', '/'])
        .filter(|p| !p.is_empty())
        .count();
    if args.chars().all(allowed) && (3..=4).contains(&numbers) {
        Ok(v)
    } else {
        Err(bad())
    }
}

/// The support link's target: `mailto:` an email, or an `https://` URL.
fn support_href(v: &str) -> Result<String> {
    let v = v.trim();
    if let Some(url) = v.strip_prefix("https://") {
        let ok = !url.is_empty()
            && v.len() <= 300
            && !url
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || "\"'<>`\\".contains(c));
        return if ok {
            Ok(v.to_owned())
        } else {
            Err(Error::field(
                "brand_support",
                "must be an email or an https:// URL",
            ))
        };
    }
    let email = normalize_email(v)
        .map_err(|_| Error::field("brand_support", "must be an email or an https:// URL"))?;
    Ok(format!("mailto:{email}"))
}

/// Reads a logo file (its type from its extension).
fn read_logo(path: &Path) -> Result<Rendered> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    let content_type = match ext.as_deref() {
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("webp") => "image/webp",
        Some("gif") => "image/gif",
        _ => {
            return Err(Error::field(
                "brand_logo",
                "must be an .svg, .png, .jpg, .webp or .gif file",
            ))
        }
    };
    let bytes = std::fs::read(path)
        .map_err(|e| Error::field("brand_logo", format!("cannot read {}: {e}", path.display())))?;
    if bytes.is_empty() || bytes.len() > MAX_LOGO_BYTES {
        return Err(Error::field(
            "brand_logo",
            format!("must be 1 byte to {MAX_LOGO_BYTES} bytes"),
        ));
    }
    Ok(Rendered::new(content_type, bytes))
}

/// `s` with `&`, `<`, `>`, `"` and `'` escaped, for HTML text and quoted
/// attribute values.
pub fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// An embedded page's text.
fn embedded(files: &[Asset], path: &str) -> Result<String> {
    files
        .iter()
        .find(|a| a.path == path)
        .and_then(|a| std::str::from_utf8(a.bytes).ok())
        .map(str::to_owned)
        .ok_or_else(|| Error::Internal(format!("embedded {path} missing")))
}

/// Replaces `anchor` (which must occur exactly once) in `page` by `with`.
fn replace_once(page: &mut String, anchor: &str, with: &str) -> Result<()> {
    let at = page
        .find(anchor)
        .filter(|&i| !page[i + anchor.len()..].contains(anchor))
        .ok_or_else(|| Error::Internal(format!("branding: the page has no single {anchor:?}")))?;
    page.replace_range(at..at + anchor.len(), with);
    Ok(())
}

/// The dashboard's `index.html` with the brand applied.
fn render_index(name: &str, support: Option<&str>, logo: bool) -> Result<String> {
    let mut page = embedded(STATIC_FILES, "index.html")?;
    let n = html_escape(name);
    replace_once(&mut page, "<title>qlearn —", &format!("<title>{n} —"))?;
    replace_once(
        &mut page,
        "aria-label=\"qlearn home\"",
        &format!("aria-label=\"{n} home\""),
    )?;
    replace_once(
        &mut page,
        "<span>qlearn</span>",
        &format!("<span data-testid=\"brand-name\">{n}</span>"),
    )?;
    replace_once(&mut page, "Welcome to qlearn<", &format!("Welcome to {n}<"))?;
    replace_once(&mut page, "<span>qlearn ·", &format!("<span>{n} ·"))?;
    if let Some(href) = support {
        replace_once(
            &mut page,
            "<a href=\"/openapi.json\">OpenAPI</a>",
            &format!(
                "<a href=\"/openapi.json\">OpenAPI</a> · <a href=\"{}\" data-testid=\"support-link\">Support</a>",
                html_escape(href)
            ),
        )?;
    }
    if logo {
        replace_once(&mut page, FAVICON, LOGO_ICON)?;
        let start = page
            .find("<svg class=\"brand-mark\"")
            .ok_or_else(|| Error::Internal("branding: the page has no brand mark".into()))?;
        let end = page[start..]
            .find("</svg>")
            .map(|i| start + i + "</svg>".len())
            .ok_or_else(|| Error::Internal("branding: the brand mark is not closed".into()))?;
        page.replace_range(
            start..end,
            "<img class=\"brand-mark\" src=\"/static/brand-logo\" alt=\"\" data-testid=\"brand-logo\">",
        );
    }
    Ok(page)
}

/// The built-in favicon's link, replaced by the logo's.
const FAVICON: &str = "<link rel=\"icon\" href=\"/static/favicon.svg\" type=\"image/svg+xml\">";
/// The logo as the favicon.
const LOGO_ICON: &str = "<link rel=\"icon\" href=\"/static/brand-logo\">";

/// The API viewer's page with the brand's title (and logo as its icon).
fn render_docs(title: &str, logo: bool) -> Result<String> {
    let mut page = embedded(DOCS_PAGE, "index.html")?;
    replace_once(
        &mut page,
        "<title>qlearn API</title>",
        &format!("<title>{}</title>", html_escape(title)),
    )?;
    if logo {
        replace_once(&mut page, FAVICON, LOGO_ICON)?;
    }
    Ok(page)
}

/// `brand.css`: the colours as the dashboard's custom properties (the
/// default brand's: none, so `app.css`'s stand).
fn brand_css(primary: Option<&str>, accent: Option<&str>) -> String {
    let mut out =
        String::from("/* The brand's colours (generated from the server's configuration). */\n");
    if primary.is_none() && accent.is_none() {
        return out;
    }
    out.push_str(":root {\n");
    if let Some(p) = primary {
        out.push_str(&format!(
            "  --accent: {p};\n  --accent-strong: color-mix(in srgb, {p} 82%, #000);\n"
        ));
    }
    if let Some(a) = accent {
        out.push_str(&format!(
            "  --brand-accent: {a};\n  --accent-soft: color-mix(in srgb, {a} 16%, #fff);\n"
        ));
    }
    out.push_str("}\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_brand_serves_the_embedded_pages() {
        let b = Brand::new(&BrandSettings::default()).unwrap();
        assert_eq!(
            (b.name.as_str(), b.docs_title.as_str()),
            ("qlearn", "qlearn API")
        );
        assert!(b.index.is_none() && b.docs.is_none() && b.logo.is_none());
        assert!(!String::from_utf8_lossy(&b.css.bytes).contains(":root"));
    }

    #[test]
    fn a_brand_is_applied_and_escaped() {
        let dir = tempfile::tempdir().unwrap();
        let logo = dir.path().join("logo.svg");
        std::fs::write(&logo, "<svg xmlns='http://www.w3.org/2000/svg'/>").unwrap();
        let s = BrandSettings {
            name: Some("Acme <AI> & \"Co\"".into()),
            logo: Some(logo),
            primary_color: Some("#0A7".into()),
            accent_color: Some("rgb(255, 120, 0)".into()),
            support: Some("Help@Acme.example".into()),
            docs_title: Some("Acme <docs>".into()),
        };
        let b = Brand::new(&s).unwrap();
        let index = String::from_utf8(b.index.unwrap().bytes.to_vec()).unwrap();
        let name = "Acme &lt;AI&gt; &amp; &quot;Co&quot;";
        assert!(index.contains(&format!("<title>{name} —")), "title");
        assert!(index.contains(&format!("data-testid=\"brand-name\">{name}</span>")));
        assert!(index.contains(&format!("Welcome to {name}<")));
        assert!(index.contains("href=\"mailto:help@acme.example\" data-testid=\"support-link\""));
        assert!(index.contains("src=\"/static/brand-logo\""));
        assert!(index.contains(LOGO_ICON) && !index.contains(FAVICON));
        assert!(!index.contains("<AI>") && !index.contains(">qlearn<"));
        let docs = String::from_utf8(b.docs.unwrap().bytes.to_vec()).unwrap();
        assert!(docs.contains("<title>Acme &lt;docs&gt;</title>") && docs.contains(LOGO_ICON));
        let css = String::from_utf8(b.css.bytes.to_vec()).unwrap();
        assert!(
            css.contains("--accent: #0a7;") && css.contains("--brand-accent: rgb(255, 120, 0);")
        );
        assert_eq!(b.logo.unwrap().content_type, "image/svg+xml");
    }

    #[test]
    fn colours_follow_a_strict_grammar() {
        for ok in [
            "#fff",
            "#FFFA",
            "#0a0b0c",
            "#0a0b0c80",
            "rgb(1, 2, 3)",
            "rgba(1 2 3 / 50%)",
            "hsl(120deg 50% 40%)",
        ] {
            css_color("c", ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for bad in [
            "red",
            "#ggg",
            "#12345",
            "rgb(1,2,3);}body{x:url(a)",
            "var(--x)",
            "url(x)",
            "rgb(1)",
            "expression(1)",
            "",
        ] {
            assert!(css_color("c", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn settings_are_checked() {
        let bad = |s: BrandSettings, field: &str| {
            let e = Brand::new(&s).unwrap_err().to_string();
            assert!(e.contains(field), "{e}");
        };
        bad(
            BrandSettings {
                name: Some(" ".into()),
                ..Default::default()
            },
            "brand_name",
        );
        bad(
            BrandSettings {
                name: Some("a\u{7}b".into()),
                ..Default::default()
            },
            "brand_name",
        );
        bad(
            BrandSettings {
                support: Some("javascript:alert(1)".into()),
                ..Default::default()
            },
            "brand_support",
        );
        bad(
            BrandSettings {
                support: Some("https://x.example/\"><script>".into()),
                ..Default::default()
            },
            "brand_support",
        );
        bad(
            BrandSettings {
                logo: Some("/nonexistent/logo.svg".into()),
                ..Default::default()
            },
            "brand_logo",
        );
        bad(
            BrandSettings {
                logo: Some("logo.exe".into()),
                ..Default::default()
            },
            "brand_logo",
        );
        let b = Brand::new(&BrandSettings {
            support: Some("https://help.acme.example/?a=1&b=2".into()),
            ..Default::default()
        })
        .unwrap();
        let index = String::from_utf8(b.index.unwrap().bytes.to_vec()).unwrap();
        assert!(index.contains("href=\"https://help.acme.example/?a=1&amp;b=2\""));
    }

    #[test]
    fn a_logo_is_served_as_the_type_its_extension_names() {
        let dir = tempfile::tempdir().unwrap();
        let logo = |name: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, b"logo").unwrap();
            read_logo(&path)
        };
        for (name, content_type) in [
            ("a.svg", "image/svg+xml"),
            ("a.png", "image/png"),
            ("a.jpg", "image/jpeg"),
            ("a.JPEG", "image/jpeg"),
            ("a.webp", "image/webp"),
            ("a.Gif", "image/gif"),
        ] {
            let r = logo(name).unwrap();
            assert_eq!(
                (r.content_type, &r.bytes[..]),
                (content_type, &b"logo"[..]),
                "{name}"
            );
        }
        for name in ["a.bmp", "a.jpg.txt", "jpg"] {
            match logo(name) {
                Err(Error::InvalidField { field, .. }) => assert_eq!(field, "brand_logo"),
                other => panic!("{name}: {:?}", other.map(|r| r.content_type)),
            }
        }
    }
}
