//! The service's own description: `/openapi.json` against the route table.

use std::collections::BTreeSet;

use saas_host::routes::Route;

use crate::common::{start, Backend};
use crate::GET;

/// Every documented route of the table is in `/openapi.json` with each of
/// its methods, no undocumented one is, and every path and method of the
/// document is in the table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_matches_the_route_table() {
    let Some(s) = start(Backend::Sqlite, "openapi_routes").await else {
        return;
    };
    let (st, api) = s.json(GET, "/openapi.json", None, None).await;
    assert_eq!(st, 200);
    let mut table = BTreeSet::new();
    for &r in Route::ALL {
        let spec = r.spec();
        let path = &api["paths"][spec.template];
        if !spec.documented {
            assert!(path.is_null(), "{} is documented", spec.template);
            continue;
        }
        for method in spec.allow.split(", ") {
            let method = method.to_ascii_lowercase();
            assert!(
                path[&method].is_object(),
                "openapi lacks {method} {}",
                spec.template
            );
            table.insert((spec.template.to_owned(), method));
        }
    }
    let mut document = BTreeSet::new();
    for (path, item) in api["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("path item").keys() {
            document.insert((path.clone(), method.clone()));
        }
    }
    assert_eq!(
        document, table,
        "the document's routes differ from the table's"
    );
}

/// Every response, HTML and JSON, errors included, carries the security
/// headers; the pages run no inline script (the policy would block it) and
/// the API viewer does not keep the bearer token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn security_headers_on_every_response() {
    let Some(s) = start(Backend::Sqlite, "sec_headers").await else {
        return;
    };
    for (path, status) in [
        ("/", 200),
        ("/docs", 200),
        ("/docs/init.js", 200),
        ("/healthz", 200),
        ("/openapi.json", 200),
        ("/me", 401),
        ("/no/such/route", 404),
    ] {
        let r = s.call(GET, path, None, None).await;
        assert_eq!(r.status(), status, "{path}");
        let h = r.headers();
        let csp = h["content-security-policy"].to_str().unwrap();
        // JSON may load nothing at all; pages only their own scripts.
        let json = h["content-type"] == "application/json";
        let directives: &[&str] = if json {
            &["default-src 'none'", "frame-ancestors 'none'"]
        } else {
            &[
                "script-src 'self'",
                "frame-ancestors 'none'",
                "object-src 'none'",
            ]
        };
        assert_eq!(
            json,
            !["/", "/docs", "/docs/init.js"].contains(&path),
            "{path}"
        );
        for directive in directives {
            assert!(csp.contains(directive), "{path}: {csp}");
        }
        assert!(
            !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
            "{csp}"
        );
        assert_eq!(h["x-frame-options"], "DENY", "{path}");
        assert_eq!(h["referrer-policy"], "no-referrer", "{path}");
        assert_eq!(h["x-content-type-options"], "nosniff", "{path}");
    }
    for page in ["/", "/docs"] {
        let html = s.call(GET, page, None, None).await.text().await.unwrap();
        for tag in html.split("<script").skip(1) {
            let open = &tag[..tag.find('>').unwrap()];
            assert!(
                open.contains("src="),
                "inline script on {page}: <script{open}>"
            );
        }
        assert!(
            !html.contains(" onclick=") && !html.contains(" onload="),
            "{page}"
        );
    }
    let init = s
        .call(GET, "/docs/init.js", None, None)
        .await
        .text()
        .await
        .unwrap();
    assert!(init.contains("SwaggerUIBundle") && !init.contains("persistAuthorization"));
}

/// HEAD answers every GET route with GET's status and headers (the length
/// included) and no body; other methods' routes say HEAD is not theirs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_on_every_get_route() {
    let Some(s) = start(Backend::Sqlite, "head_routes").await else {
        return;
    };
    let (token, _, model) = s.register("head@example.com").await;
    for &r in Route::ALL {
        if !r.allows("GET") {
            let resp = s
                .call(reqwest::Method::HEAD, r.spec().template, None, None)
                .await;
            assert_eq!(resp.status(), 405, "{}", r.spec().template);
            assert!(!resp.headers()["allow"].to_str().unwrap().contains("HEAD"));
            continue;
        }
        let path = r
            .spec()
            .template
            .replace("{id}", &model)
            .replace("{file}", "app.js")
            .replace("{eid}", "ev_none");
        let path = if r == Route::DocsAsset {
            "/docs/init.js".to_owned()
        } else {
            path
        };
        if r == Route::ModelEvents {
            // A stream has no length: HEAD answers its headers and ends it.
            let resp = s
                .call(reqwest::Method::HEAD, &path, Some(&token), None)
                .await;
            assert_eq!(resp.status(), 200);
            assert_eq!(resp.headers()["content-type"], "text/event-stream");
            assert!(resp.bytes().await.unwrap().is_empty());
            continue;
        }
        let get = s.call(GET, &path, Some(&token), None).await;
        let head = s
            .call(reqwest::Method::HEAD, &path, Some(&token), None)
            .await;
        assert_eq!(head.status(), get.status(), "{path}");
        if r == Route::ModelEvaluation {
            // No such job: HEAD is refused alike.
            assert_eq!(get.status(), 404, "{path}");
            continue;
        }
        if r.scope("GET") == qlearn_core::store::KeyScope::Admin {
            // Admin only: this user is refused alike (the rest as below).
            assert_eq!(get.status(), 403, "{path}");
        } else {
            assert!(get.status().is_success(), "{path}: {}", get.status());
        }
        for name in ["content-type", "content-length", "etag", "cache-control"] {
            if r == Route::Metrics && name == "content-length" {
                continue; // its counters moved between the two requests
            }
            assert_eq!(
                head.headers().get(name),
                get.headers().get(name),
                "{path}: {name}"
            );
        }
        assert!(head.headers().contains_key("content-length"), "{path}");
        assert!(head.bytes().await.unwrap().is_empty(), "{path}");
    }
    let r = s
        .call(reqwest::Method::OPTIONS, "/models", None, None)
        .await;
    assert_eq!(r.headers()["allow"], "GET, HEAD, POST");
}

/// The embedded files carry a strong ETag; `If-None-Match` with it is
/// answered 304 without a body, another ETag gets the file; a client that
/// accepts gzip gets the precompressed file (another representation, so
/// another ETag), one that does not gets the bytes as they are; both
/// `Vary: Accept-Encoding`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_files_have_etags_and_gzip() {
    use std::io::Read;
    let Some(s) = start(Backend::Sqlite, "static_etag").await else {
        return;
    };
    // reqwest here asks for no encoding by itself (no gzip feature).
    let http = reqwest::Client::new();
    for path in ["/", "/static/app.js", "/docs", "/docs/swagger-ui.css"] {
        let plain = http.get(s.url(path)).send().await.unwrap();
        assert_eq!(plain.status(), 200, "{path}");
        let h = plain.headers().clone();
        assert!(h.get("content-encoding").is_none(), "{path}");
        assert_eq!(h["vary"], "Accept-Encoding", "{path}");
        let etag = h["etag"].to_str().unwrap().to_owned();
        assert!(
            etag.starts_with('"') && etag.ends_with('"') && etag.len() > 20,
            "{etag}"
        );
        let body = plain.bytes().await.unwrap();

        let again = http
            .get(s.url(path))
            .header("if-none-match", format!("\"other\", {etag}"))
            .send()
            .await
            .unwrap();
        assert_eq!(again.status(), 304, "{path}");
        assert_eq!(again.headers()["etag"], etag.as_str());
        assert_eq!(again.headers()["vary"], "Accept-Encoding");
        assert!(again.bytes().await.unwrap().is_empty());
        let changed = http
            .get(s.url(path))
            .header("if-none-match", "\"other\"")
            .send()
            .await
            .unwrap();
        assert_eq!(changed.status(), 200, "{path}");

        let gz = http
            .get(s.url(path))
            .header("accept-encoding", "br;q=1, gzip;q=0.8")
            .send()
            .await
            .unwrap();
        assert_eq!(gz.headers()["content-encoding"], "gzip", "{path}");
        assert_eq!(gz.headers()["vary"], "Accept-Encoding");
        let gz_etag = gz.headers()["etag"].to_str().unwrap().to_owned();
        assert_ne!(gz_etag, etag, "{path}");
        let packed = gz.bytes().await.unwrap();
        assert!(packed.len() < body.len(), "{path}");
        let mut unpacked = Vec::new();
        flate2::read::GzDecoder::new(&packed[..])
            .read_to_end(&mut unpacked)
            .unwrap();
        assert_eq!(unpacked, body, "{path}");
        let gz304 = http
            .get(s.url(path))
            .header("accept-encoding", "gzip")
            .header("if-none-match", &gz_etag)
            .send()
            .await
            .unwrap();
        assert_eq!(gz304.status(), 304, "{path}");
        let refused = http
            .get(s.url(path))
            .header("accept-encoding", "gzip;q=0, identity")
            .send()
            .await
            .unwrap();
        assert!(
            refused.headers().get("content-encoding").is_none(),
            "{path}"
        );
    }
}
