//! The OpenAPI 3.1 document, generated from the route table
//! (`routes::declare`) and the types' `schemars` schemas.
//!
//! Why this bridge and not utoipa or aide: the bodies the operator reads
//! (`RuntimeStatus`, `ConfigUpdate`, ...) live in `paperbot-crds` and derive
//! `schemars::JsonSchema` (the CRD schemas come from the same derives);
//! utoipa would need a second derive on every one of those types, from a
//! second schema generator that could disagree with the first, and aide's
//! release line on schemars 1 is still alpha. OpenAPI 3.1's schema objects
//! *are* JSON Schema 2020-12, which is what schemars emits, so the schemas
//! go in unchanged (`$ref`s pointed at `#/components/schemas/`); this module
//! only lays out paths, parameters, security and responses. Every route is
//! declared once, with its handler and its documentation side by side, and
//! both the router and this document are built from that one declaration, so
//! they cannot drift apart. Schemas follow serde's deserialize contract
//! (schemars' default, as for the CRDs).

use schemars::{JsonSchema, Schema, SchemaGenerator, generate::SchemaSettings};
use serde_json::{Map, Value, json};

use paperbot_crds::runtime_api::ApiError;

use super::auth::Access;
use super::paging::ParamDoc;

/// Produces the schema of one type (a `$ref` for named types).
type SchemaFn = fn(&mut SchemaGenerator) -> Schema;

fn schema_of<T: JsonSchema>(g: &mut SchemaGenerator) -> Schema {
    g.subschema_for::<T>()
}

/// HTTP method of an operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// `GET` (and `HEAD`).
    Get,
    /// `POST`.
    Post,
}

/// One response of an operation.
#[derive(Clone, Debug)]
struct Response {
    status: u16,
    description: String,
    content: Option<(&'static str, SchemaFn)>,
}

/// The documentation of one route.
#[derive(Clone, Debug)]
pub struct Operation {
    /// Its method.
    pub method: Method,
    summary: &'static str,
    description: Option<&'static str>,
    tag: &'static str,
    /// Who may call it.
    pub access: Access,
    query: &'static [ParamDoc],
    path_params: Vec<(&'static str, &'static str)>,
    body: Option<SchemaFn>,
    responses: Vec<Response>,
    events: Vec<(&'static str, &'static str, SchemaFn)>,
    /// Answers 503 when the session or the ledger cannot answer.
    may_be_unavailable: bool,
}

impl Operation {
    fn new(method: Method, tag: &'static str, summary: &'static str) -> Self {
        Self {
            method,
            summary,
            description: None,
            tag,
            access: Access::Open,
            query: &[],
            path_params: Vec::new(),
            body: None,
            responses: Vec::new(),
            events: Vec::new(),
            may_be_unavailable: false,
        }
    }

    /// A `GET` in group `tag`.
    pub fn get(tag: &'static str, summary: &'static str) -> Self {
        Self::new(Method::Get, tag, summary)
    }

    /// A `POST` in group `tag`.
    pub fn post(tag: &'static str, summary: &'static str) -> Self {
        Self::new(Method::Post, tag, summary)
    }

    /// Longer description (CommonMark).
    pub fn describe(mut self, text: &'static str) -> Self {
        self.description = Some(text);
        self
    }

    /// Who may call it.
    pub fn access(mut self, access: Access) -> Self {
        self.access = access;
        self
    }

    /// Its query parameters.
    pub fn query(mut self, params: &'static [ParamDoc]) -> Self {
        self.query = params;
        self
    }

    /// A path parameter (`{name}` in the path).
    pub fn path_param(mut self, name: &'static str, description: &'static str) -> Self {
        self.path_params.push((name, description));
        self
    }

    /// Its JSON request body.
    pub fn body<T: JsonSchema>(mut self) -> Self {
        self.body = Some(schema_of::<T>);
        self
    }

    /// A `200` JSON answer of type `T`.
    pub fn ok<T: JsonSchema>(mut self, description: &str) -> Self {
        self.responses.push(Response {
            status: 200,
            description: description.to_owned(),
            content: Some(("application/json", schema_of::<T>)),
        });
        self
    }

    /// A `200` answer of `content_type` whose body is text.
    pub fn ok_text(mut self, content_type: &'static str, description: &str) -> Self {
        self.responses.push(Response {
            status: 200,
            description: description.to_owned(),
            content: Some((content_type, schema_of::<String>)),
        });
        self
    }

    /// An error answer ([`ApiError`] body).
    pub fn error(mut self, status: u16, description: &str) -> Self {
        self.responses.push(Response {
            status,
            description: description.to_owned(),
            content: Some(("application/json", schema_of::<ApiError>)),
        });
        self
    }

    /// May answer 503 (session or ledger unavailable).
    pub fn unavailable(mut self) -> Self {
        self.may_be_unavailable = true;
        self
    }

    /// A server-sent event `name` whose `data` is JSON of type `T`.
    pub fn event<T: JsonSchema>(mut self, name: &'static str, description: &'static str) -> Self {
        self.events.push((name, description, schema_of::<T>));
        self
    }

    /// The operation object, its schemas registered in `g`.
    fn render(&self, g: &mut SchemaGenerator) -> Value {
        let mut op = Map::new();
        op.insert("summary".into(), self.summary.into());
        if let Some(d) = self.description {
            op.insert("description".into(), d.into());
        }
        op.insert("tags".into(), json!([self.tag]));
        let mut params: Vec<Value> = self
            .path_params
            .iter()
            .map(|(name, description)| {
                json!({"name": name, "in": "path", "required": true,
                       "description": description, "schema": {"type": "string"}})
            })
            .collect();
        params.extend(self.query.iter().map(|p| {
            let mut schema = json!({"type": p.json_type});
            if let Some(f) = p.format {
                schema["format"] = f.into();
            }
            if let Some((min, max, default)) = p.range {
                schema["minimum"] = min.into();
                schema["maximum"] = max.into();
                schema["default"] = default.into();
            }
            json!({"name": p.name, "in": "query", "required": false,
                   "description": p.description, "schema": schema})
        }));
        if !params.is_empty() {
            op.insert("parameters".into(), params.into());
        }
        if let Some(body) = self.body {
            op.insert(
                "requestBody".into(),
                json!({"required": true,
                       "content": {"application/json": {"schema": body(g)}}}),
            );
        }
        match self.access {
            Access::Open => {
                op.insert("security".into(), json!([]));
            }
            Access::Read => {
                // An empty requirement: a runtime with open reads needs none.
                op.insert("security".into(), json!([{"bearer": []}, {}]));
            }
            Access::Control => {
                op.insert("security".into(), json!([{"bearer": []}]));
            }
        }

        let mut responses = self.responses.clone();
        let mut add = |status: u16, description: &str| {
            if !responses.iter().any(|r| r.status == status) {
                responses.push(Response {
                    status,
                    description: description.to_owned(),
                    content: Some(("application/json", schema_of::<ApiError>)),
                });
            }
        };
        if !self.query.is_empty() || self.body.is_some() || !self.path_params.is_empty() {
            add(400, "A parameter or the body is invalid; `field` names it.");
        }
        if self.body.is_some() {
            add(413, "The body is larger than the server's limit.");
            add(415, "The body is not `application/json`.");
        }
        if self.access != Access::Open {
            add(
                401,
                "No bearer token was sent (`WWW-Authenticate: Bearer`).",
            );
            add(
                403,
                "The bearer token is wrong, or the runtime has no token configured.",
            );
        }
        if self.may_be_unavailable {
            add(503, "The session or its ledger cannot answer now; retry.");
        }
        responses.sort_by_key(|r| r.status);
        let mut out = Map::new();
        for r in &responses {
            let mut resp = Map::new();
            resp.insert("description".into(), r.description.clone().into());
            if let Some((content_type, schema)) = r.content {
                resp.insert(
                    "content".into(),
                    json!({content_type: {"schema": schema(g)}}),
                );
            }
            out.insert(r.status.to_string(), resp.into());
        }
        op.insert("responses".into(), out.into());
        if !self.events.is_empty() {
            let events: Map<String, Value> = self
                .events
                .iter()
                .map(|(name, description, schema)| {
                    let s = schema(g);
                    (
                        (*name).to_owned(),
                        json!({"description": description, "data": s}),
                    )
                })
                .collect();
            // OpenAPI 3.1 cannot type the items of an event stream: list
            // each event name with the schema of its `data` in an extension.
            op.insert("x-sse-events".into(), events.into());
        }
        op.into()
    }
}

/// Collects operations into a document.
pub struct Spec {
    generator: SchemaGenerator,
    paths: Map<String, Value>,
}

impl Default for Spec {
    fn default() -> Self {
        let settings = SchemaSettings::draft2020_12().with(|s| {
            s.definitions_path = "/components/schemas".into();
            s.meta_schema = None;
        });
        Self {
            generator: settings.into_generator(),
            paths: Map::new(),
        }
    }
}

impl Spec {
    /// Document `op` at `path` (axum's and OpenAPI's `{param}` syntax agree).
    pub fn add(&mut self, path: &str, op: &Operation) {
        let rendered = op.render(&mut self.generator);
        let method = match op.method {
            Method::Get => "get",
            Method::Post => "post",
        };
        let item = self
            .paths
            .entry(path.to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
        if let Some(item) = item.as_object_mut() {
            item.insert(method.into(), rendered);
        }
    }

    /// The finished document.
    pub fn finish(mut self) -> Value {
        let schemas = self.generator.take_definitions(true);
        json!({
            "openapi": "3.1.0",
            "info": {
                "title": "paperbot bot-runtime API",
                "version": env!("CARGO_PKG_VERSION"),
                "description": DESCRIPTION,
                "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
            },
            "tags": [
                {"name": "probes", "description": "Liveness, readiness, metrics (no token)."},
                {"name": "session", "description": "The session's live status and event stream."},
                {"name": "history", "description": "Cursor-paged rows from the ledger."},
                {"name": "control", "description": "Pause, resume, stop, breaker reset, hot reload (token always)."},
            ],
            "paths": self.paths,
            "components": {
                "schemas": schemas,
                "securitySchemes": {
                    "bearer": {
                        "type": "http",
                        "scheme": "bearer",
                        "description": "The session's API token (key `api-token` of its Secret).",
                    }
                }
            }
        })
    }
}

const DESCRIPTION: &str = "\
The HTTP API of one paperbot session (`bot-runtime serve`).

Money and prices are exact decimals as JSON strings in the account's base \
currency; percentages are percent (0–100); times are RFC 3339 UTC market \
time. Every 4xx and 5xx answer has an `ApiError` body naming the field at \
fault and what is expected; unknown routes answer 404 and known routes with \
another method 405, both with that body.

Authentication: `Authorization: Bearer <token>`. Control routes always need \
it; read routes (`GET /v1/*`) need it unless the runtime was started with \
open reads; probes, `/metrics` and this document never do. No token: 401 \
with `WWW-Authenticate: Bearer`; a wrong token: 403. A runtime started \
without a token refuses every control request (403).";
