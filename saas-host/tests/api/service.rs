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
