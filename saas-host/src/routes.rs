//! The route table: every path the service answers, with the methods it
//! allows, whether it needs credentials and whether `/openapi.json`
//! describes it, written once. The router matches paths against it and
//! takes its labels from it, the metrics count by it, and a test checks it
//! against the OpenAPI document in both directions.

use qlearn_core::store::KeyScope;

/// One route of the table.
#[derive(Clone, Copy, Debug)]
pub struct RouteSpec {
    /// The path template, `{name}` for a segment taken from the path; also
    /// the route's metrics label.
    pub template: &'static str,
    /// The methods the route allows, as the `Allow` header of a 405 says them.
    pub allow: &'static str,
    /// Answered without credentials (no authentication, no per-user rate limit).
    pub public: bool,
    /// Described by `/openapi.json` (service routes such as the dashboard's
    /// files and the document itself are not).
    pub documented: bool,
    /// The last placeholder takes the rest of the path (files in subfolders).
    pub rest: bool,
}

/// Declares [`Route`], [`Route::ALL`] and [`Route::spec`] from one list.
macro_rules! route_table {
    ($( $(#[$doc:meta])* $variant:ident = $template:literal, $allow:literal,
        $access:ident, $documented:ident $(, $rest:ident)?; )*) => {
        /// A route of the table (the value its path placeholder took is
        /// returned next to it by [`Route::parse`]).
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum Route {
            $( $(#[$doc])* $variant, )*
        }

        impl Route {
            /// Every route, in matching order (a literal segment before a
            /// placeholder in the same position).
            pub const ALL: &'static [Route] = &[$(Route::$variant),*];

            /// The route's entry in the table.
            pub const fn spec(self) -> RouteSpec {
                match self {
                    $(Route::$variant => RouteSpec {
                        template: $template,
                        allow: $allow,
                        public: route_table!(@public $access),
                        documented: route_table!(@documented $documented),
                        rest: route_table!(@rest $($rest)?),
                    },)*
                }
            }
        }
    };
    (@public public) => { true };
    (@public auth) => { false };
    (@documented documented) => { true };
    (@documented undocumented) => { false };
    (@rest rest) => { true };
    (@rest) => { false };
}

route_table! {
    /// The dashboard's index.html.
    Index = "/", "GET", public, undocumented;
    /// A file of the dashboard.
    Static = "/static/{file}", "GET", public, undocumented, rest;
    /// Liveness.
    Health = "/healthz", "GET", public, documented;
    /// Prometheus metrics.
    Metrics = "/metrics", "GET", public, documented;
    /// The OpenAPI document.
    OpenApi = "/openapi.json", "GET", public, undocumented;
    /// The API viewer.
    Docs = "/docs", "GET", public, undocumented;
    /// A file of the API viewer.
    DocsAsset = "/docs/{file}", "GET", public, undocumented;
    /// Registration.
    Register = "/register", "POST", public, documented;
    /// Login.
    Login = "/login", "POST", public, documented;
    /// Every plan (public; with credentials, the caller's marked).
    Plans = "/plans", "GET", public, documented;
    /// The billing provider's signed webhook.
    BillingWebhook = "/billing/webhook", "POST", public, documented;
    /// The caller's profile.
    Me = "/me", "GET", auth, documented;
    /// Password change.
    MePassword = "/me/password", "POST", auth, documented;
    /// The caller's API keys.
    ApiKeys = "/api-keys", "GET, POST", auth, documented;
    /// One API key.
    ApiKey = "/api-keys/{id}", "DELETE", auth, documented;
    /// The caller's models.
    Models = "/models", "GET, POST", auth, documented;
    /// Model import.
    ModelsImport = "/models/import", "POST", auth, documented;
    /// One model.
    Model = "/models/{id}", "GET, PATCH, DELETE", auth, documented;
    /// A model's export.
    ModelExport = "/models/{id}/export", "GET", auth, documented;
    /// A model's live events.
    ModelEvents = "/models/{id}/events", "GET", auth, documented;
    /// A single-use ticket to open a model's event stream.
    ModelEventsTicket = "/models/{id}/events/ticket", "POST", auth, documented;
    /// Metered prediction.
    Predict = "/predict", "POST", auth, documented;
    /// The behaviour policy's probabilities (metered like a prediction).
    PredictProbabilities = "/predict/probabilities", "POST", auth, documented;
    /// Metered update.
    Update = "/update", "POST", auth, documented;
    /// Metered batch update.
    UpdateBatch = "/update/batch", "POST", auth, documented;
    /// A reward for a logged decision (metered when counted).
    Rewards = "/rewards", "POST", auth, documented;
    /// Rewards for up to 1,000 logged decisions.
    RewardsBatch = "/rewards/batch", "POST", auth, documented;
    /// The end of an episode of logged decisions.
    EpisodesEnd = "/episodes/end", "POST", auth, documented;
    /// A model's decision log.
    ModelDecisions = "/models/{id}/decisions", "GET", auth, documented;
    /// A model's decision log as NDJSON.
    ModelDecisionsExport = "/models/{id}/decisions/export", "GET", auth, documented;
    /// A model's episodes and their returns.
    ModelEpisodes = "/models/{id}/episodes", "GET", auth, documented;
    /// A model's offline evaluation jobs.
    ModelEvaluations = "/models/{id}/evaluations", "GET, POST", auth, documented;
    /// One offline evaluation job.
    ModelEvaluation = "/models/{id}/evaluations/{eid}", "GET, DELETE", auth, documented;
    /// A model's status and Q-table page.
    Status = "/status/{id}", "GET", auth, documented;
    /// The caller's dashboard.
    Dashboard = "/dashboard", "GET", auth, documented;
    /// Admin change of a user.
    AdminUser = "/admin/users/{id}", "PATCH", auth, documented;
    /// Every user's usage in a month, for invoicing (admin).
    AdminUsage = "/admin/usage", "GET", auth, documented;
}

/// Most segments in a path the service answers.
const MAX_SEGMENTS: usize = 4;

impl Route {
    /// The route's metrics label (its template).
    pub const fn label(self) -> &'static str {
        self.spec().template
    }

    /// The API-key scope `method` on this route needs (a JWT has them all):
    /// - `read`: every `GET` but the export, and event-stream tickets;
    /// - `engine`: `read` and predict (and its probabilities), update, batch, import, export,
    ///   rewards, episode ends, the decision log's export and creating an
    ///   evaluation job;
    /// - `full`: everything else a user may do (models, keys, password);
    /// - `admin`: the admin routes (which also need the admin role).
    pub fn scope(self, method: &str) -> KeyScope {
        match self {
            Route::AdminUser | Route::AdminUsage => KeyScope::Admin,
            Route::Predict
            | Route::PredictProbabilities
            | Route::Update
            | Route::UpdateBatch
            | Route::ModelsImport
            | Route::ModelExport
            | Route::Rewards
            | Route::RewardsBatch
            | Route::EpisodesEnd
            | Route::ModelDecisionsExport => KeyScope::Engine,
            Route::ModelEventsTicket => KeyScope::Read,
            Route::ModelEvaluations if method == "POST" => KeyScope::Engine,
            _ if method == "GET" => KeyScope::Read,
            _ => KeyScope::Full,
        }
    }

    /// Whether the route allows `method`: one of [`RouteSpec::allow`], or
    /// `HEAD` where it allows `GET` (every GET route answers HEAD).
    pub fn allows(self, method: &str) -> bool {
        let method = if method == "HEAD" { "GET" } else { method };
        let bit = method_bit(method);
        bit != 0 && ALLOW_BITS.get(self as usize).is_some_and(|b| b & bit != 0)
    }

    /// The `Allow` header of the route: its methods, with `HEAD` after `GET`.
    pub fn allow_header(self) -> &'static str {
        match self.spec().allow {
            "GET" => "GET, HEAD",
            "GET, POST" => "GET, HEAD, POST",
            "GET, PATCH, DELETE" => "GET, HEAD, PATCH, DELETE",
            "GET, DELETE" => "GET, HEAD, DELETE",
            other => other,
        }
    }

    /// The route `path` matches (one trailing `/` ignored), with the value
    /// its placeholder took (empty when it has none; the values joined
    /// with `/` when it has two), or `None`.
    pub fn parse(path: &str) -> Option<(Route, String)> {
        let p = path.strip_prefix('/')?;
        let p = p.strip_suffix('/').unwrap_or(p);
        // A path that is a template without placeholders (`/update`,
        // `/predict`: the hot routes) is one hash lookup, not a walk of
        // the table.
        if let Some(&route) = LITERALS.get(p) {
            return Some((route, String::new()));
        }
        Self::walk(p)
    }

    /// [`Route::parse`] by walking the table in its matching order; `p` is
    /// the path without its leading and trailing `/`.
    fn walk(p: &str) -> Option<(Route, String)> {
        let mut segments = [""; MAX_SEGMENTS];
        let mut n = 0;
        for s in p.split('/') {
            *segments.get_mut(n)? = s;
            n += 1;
        }
        let segments = &segments[..n];
        TEMPLATES
            .iter()
            .find_map(|t| t.matches(segments).map(|param| (t.route, param)))
    }
}

/// One segment of a route's template.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Segment {
    /// Must equal the path's segment.
    Literal(&'static str),
    /// Takes any non-empty segment (the last one of a `rest` route takes
    /// the rest of the path).
    Placeholder,
}

/// A route's template split once (the router matches every request against
/// these: splitting the templates per request cost more than the rest of
/// the match).
#[derive(Debug)]
struct Template {
    route: Route,
    segments: Vec<Segment>,
    rest: bool,
}

/// A method's bit in [`ALLOW_BITS`] (0: a method no route allows).
fn method_bit(method: &str) -> u8 {
    match method {
        "GET" => 1,
        "POST" => 2,
        "PUT" => 4,
        "PATCH" => 8,
        "DELETE" => 16,
        _ => 0,
    }
}

/// Each route's `allow` list as bits of [`method_bit`], by `route as
/// usize` (checked on every request, so not split per request).
static ALLOW_BITS: std::sync::LazyLock<Vec<u8>> = std::sync::LazyLock::new(|| {
    Route::ALL
        .iter()
        .map(|r| {
            r.spec()
                .allow
                .split(", ")
                .fold(0, |bits, m| bits | method_bit(m))
        })
        .collect()
});

/// The routes whose template has no placeholder, by their template
/// without its leading `/`: each only where walking the table gives that
/// route for it too, so the lookup never answers differently.
static LITERALS: std::sync::LazyLock<qlearn_core::FastMap<&'static str, Route>> =
    std::sync::LazyLock::new(|| {
        Route::ALL
            .iter()
            .filter_map(|&route| {
                let t = &route.spec().template[1..];
                let own = !t.contains('{') && Route::walk(t).is_some_and(|(r, _)| r == route);
                own.then_some((t, route))
            })
            .collect()
    });

/// Every route's template, in [`Route::ALL`]'s matching order.
static TEMPLATES: std::sync::LazyLock<Vec<Template>> = std::sync::LazyLock::new(|| {
    Route::ALL
        .iter()
        .map(|&route| {
            let spec = route.spec();
            let segments = spec.template[1..]
                .split('/')
                .map(|t| match t.starts_with('{') {
                    true => Segment::Placeholder,
                    false => Segment::Literal(t),
                })
                .collect();
            Template {
                route,
                segments,
                rest: spec.rest,
            }
        })
        .collect()
});

impl Template {
    /// The placeholder's value if `segments` match this template (no
    /// allocation unless they do; most templates fail on the first segment).
    fn matches(&self, segments: &[&str]) -> Option<String> {
        let last = self.segments.len().checked_sub(1)?;
        let mut param = "";
        let mut first = "";
        for (i, t) in self.segments.iter().enumerate() {
            let s = *segments.get(i)?;
            match *t {
                Segment::Literal(l) if l != s => return None,
                Segment::Literal(_) => {}
                Segment::Placeholder if self.rest && i == last => {
                    return Some(segments[i..].join("/"));
                }
                Segment::Placeholder if s.is_empty() => return None,
                Segment::Placeholder => {
                    first = param;
                    param = s;
                }
            }
        }
        (segments.len() == self.segments.len()).then(|| match first {
            "" => param.to_owned(),
            f => format!("{f}/{param}"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_match_their_routes_and_take_their_placeholder() {
        let cases: &[(&str, Option<(Route, &str)>)] = &[
            ("/", Some((Route::Index, ""))),
            ("/static/app.js", Some((Route::Static, "app.js"))),
            (
                "/static/pages/a/b.js",
                Some((Route::Static, "pages/a/b.js")),
            ),
            ("/models/import", Some((Route::ModelsImport, ""))),
            ("/models/m1", Some((Route::Model, "m1"))),
            ("/models/m1/", Some((Route::Model, "m1"))),
            ("/models/m1/events", Some((Route::ModelEvents, "m1"))),
            (
                "/models/m1/events/ticket",
                Some((Route::ModelEventsTicket, "m1")),
            ),
            ("/update/batch", Some((Route::UpdateBatch, ""))),
            (
                "/predict/probabilities",
                Some((Route::PredictProbabilities, "")),
            ),
            ("/admin/users/u1", Some((Route::AdminUser, "u1"))),
            (
                "/models/m1/evaluations",
                Some((Route::ModelEvaluations, "m1")),
            ),
            (
                "/models/m1/evaluations/ev_2",
                Some((Route::ModelEvaluation, "m1/ev_2")),
            ),
            (
                "/models/m1/evaluations/",
                Some((Route::ModelEvaluations, "m1")),
            ),
            ("/models//evaluations/ev_2", None),
            ("/models//export", None),
            ("/models/m1/x", None),
            ("/me/password/x/y", None),
            ("/static/a/b/c/d", None),
            ("predict", None),
        ];
        for (path, want) in cases {
            let got = Route::parse(path);
            let got = got.as_ref().map(|(r, p)| (*r, p.as_str()));
            assert_eq!(got, *want, "{path}");
        }
    }

    #[test]
    fn the_literal_lookup_answers_as_the_walk_of_the_table() {
        let mut paths: Vec<String> = ["/", "//", "/update//", "update", "/x", "/models/"]
            .iter()
            .map(|p| p.to_string())
            .collect();
        for &r in Route::ALL {
            let t = r.spec().template;
            let filled = t
                .replace("{id}", "m1")
                .replace("{eid}", "ev_2")
                .replace("{file}", "a.js");
            for p in [
                t.to_string(),
                format!("{t}/"),
                filled.clone(),
                format!("{filled}/"),
            ] {
                paths.push(p);
            }
        }
        for path in &paths {
            let walked = path
                .strip_prefix('/')
                .and_then(|p| Route::walk(p.strip_suffix('/').unwrap_or(p)));
            assert_eq!(Route::parse(path), walked, "{path}");
        }
        // The hot routes take the lookup.
        for (t, r) in [("update", Route::Update), ("predict", Route::Predict)] {
            assert_eq!(LITERALS.get(t), Some(&r));
        }
    }

    #[test]
    fn every_method_a_route_allows_has_its_bit() {
        for &r in Route::ALL {
            for m in r.spec().allow.split(", ") {
                assert_ne!(method_bit(m), 0, "{r:?} allows {m}");
                assert!(r.allows(m), "{r:?} {m}");
            }
            for m in [
                "GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "",
            ] {
                let listed = r.spec().allow.split(", ").any(|a| a == m);
                assert_eq!(r.allows(m), listed, "{r:?} {m}");
            }
        }
    }

    #[test]
    fn a_route_is_its_index_in_the_table() {
        // The metrics index their counters by `route as usize`.
        for (i, &r) in Route::ALL.iter().enumerate() {
            assert_eq!(r as usize, i, "{r:?}");
        }
    }

    #[test]
    fn head_is_allowed_and_advertised_exactly_where_get_is() {
        for &r in Route::ALL {
            let get = r.spec().allow.split(", ").any(|m| m == "GET");
            assert_eq!(r.allows("HEAD"), get, "{r:?}");
            let header: Vec<&str> = r.allow_header().split(", ").collect();
            assert_eq!(header.contains(&"HEAD"), get, "{r:?}");
            let spec: Vec<&str> = r.spec().allow.split(", ").collect();
            let without_head: Vec<&str> = header.into_iter().filter(|m| *m != "HEAD").collect();
            assert_eq!(without_head, spec, "{r:?}");
        }
    }

    #[test]
    fn every_route_matches_its_own_template() {
        for &r in Route::ALL {
            let path = r
                .spec()
                .template
                .replace("{id}", "x")
                .replace("{file}", "x")
                .replace("{eid}", "y");
            assert_eq!(Route::parse(&path).map(|(m, _)| m), Some(r), "{path}");
        }
    }
}
