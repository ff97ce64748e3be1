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
        for directive in [
            "script-src 'self'",
            "frame-ancestors 'none'",
            "object-src 'none'",
        ] {
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
