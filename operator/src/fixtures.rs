//! A mocked API server for controller tests: an in-memory object store
//! behind `tower_test`, answering the requests the controllers make (get,
//! list, server-side apply, merge and JSON patches, status patches, event
//! creation, deletion) and recording every request so tests can assert
//! method, path and body.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
};

use http::{Method, Request, Response, StatusCode};
use kube::{Client, client::Body};
use serde_json::{Value, json};

/// One request the fake API server received.
#[derive(Clone, Debug)]
pub struct Recorded {
    /// HTTP method.
    pub method: Method,
    /// Path without the query.
    pub path: String,
    /// Query string.
    pub query: String,
    /// `Content-Type` header.
    pub content_type: String,
    /// Body as JSON (Null when empty).
    pub body: Value,
}

impl Recorded {
    /// Whether the request changes state (anything but GET).
    pub fn is_write(&self) -> bool {
        self.method != Method::GET
    }
}

/// The fake API server's state.
#[derive(Clone, Default)]
pub struct FakeApi {
    objects: Arc<Mutex<BTreeMap<String, Value>>>,
    requests: Arc<Mutex<Vec<Recorded>>>,
    next_rv: Arc<Mutex<u64>>,
}

/// Collection path of an object (group, version, plural, namespace).
fn collection(api_version: &str, kind: &str, ns: &str) -> String {
    let plural = match kind {
        "BotSession" => "botsessions",
        "PaperAccount" => "paperaccounts",
        "StrategyConfig" => "strategyconfigs",
        "ConfigMap" => "configmaps",
        "Secret" => "secrets",
        "Service" => "services",
        "Pod" => "pods",
        "StatefulSet" => "statefulsets",
        "PersistentVolumeClaim" => "persistentvolumeclaims",
        other => panic!("fixture does not know kind {other}"),
    };
    if api_version.contains('/') {
        format!("/apis/{api_version}/namespaces/{ns}/{plural}")
    } else {
        format!("/api/{api_version}/namespaces/{ns}/{plural}")
    }
}

impl FakeApi {
    /// An empty API server.
    pub fn new() -> Self {
        Self::default()
    }

    /// Store an object (as a user's `kubectl apply` would).
    pub fn put(&self, obj: Value) -> &Self {
        let api_version = obj["apiVersion"].as_str().expect("apiVersion").to_string();
        let kind = obj["kind"].as_str().expect("kind").to_string();
        let ns = obj["metadata"]["namespace"]
            .as_str()
            .unwrap_or("default")
            .to_string();
        let name = obj["metadata"]["name"].as_str().expect("name").to_string();
        let mut obj = obj;
        self.stamp(&mut obj, true);
        let key = format!("{}/{name}", collection(&api_version, &kind, &ns));
        self.objects.lock().unwrap().insert(key, obj);
        self
    }

    /// Remove an object.
    pub fn remove(&self, api_version: &str, kind: &str, ns: &str, name: &str) {
        let key = format!("{}/{name}", collection(api_version, kind, ns));
        self.objects.lock().unwrap().remove(&key);
    }

    /// A stored object.
    pub fn get(&self, api_version: &str, kind: &str, ns: &str, name: &str) -> Option<Value> {
        let key = format!("{}/{name}", collection(api_version, kind, ns));
        self.objects.lock().unwrap().get(&key).cloned()
    }

    /// Change a stored object in place (e.g. a user edit, or the status a
    /// controller-manager would write); bumps `metadata.generation` when
    /// `spec` changed.
    pub fn edit(
        &self,
        api_version: &str,
        kind: &str,
        ns: &str,
        name: &str,
        f: impl FnOnce(&mut Value),
    ) {
        let key = format!("{}/{name}", collection(api_version, kind, ns));
        let mut objects = self.objects.lock().unwrap();
        let obj = objects.get_mut(&key).expect("object to edit exists");
        let spec_before = obj["spec"].clone();
        f(obj);
        let spec_changed = obj["spec"] != spec_before;
        drop(objects);
        let mut objects = self.objects.lock().unwrap();
        let obj = objects.get_mut(&key).expect("object to edit exists");
        let mut o = obj.clone();
        self.stamp(&mut o, spec_changed);
        *obj = o;
    }

    /// The stored objects of one kind, as typed values.
    pub fn objects<K: serde::de::DeserializeOwned>(&self, api_version: &str, kind: &str) -> Vec<K> {
        // Any namespace: the collection path up to the namespace segment.
        let sample = collection(api_version, kind, "NS");
        let (prefix, plural) = sample
            .split_once("/NS/")
            .expect("collection paths have a namespace segment");
        self.objects
            .lock()
            .unwrap()
            .iter()
            .filter(|(k, _)| k.starts_with(prefix) && k.contains(&format!("/{plural}/")))
            .map(|(_, v)| serde_json::from_value(v.clone()).expect("stored object is of its kind"))
            .collect()
    }

    /// Stores holding what this fake holds now, as the operator's watches
    /// would (children without the operator's managed fields, pods slimmed).
    pub fn stores(&self) -> crate::stores::Stores {
        use kube::runtime::{reflector::store::Writer, watcher::Event};
        fn fill<K>(w: &mut Writer<K>, objs: Vec<K>, slim: fn(&mut K))
        where
            K: kube::Resource<DynamicType = ()> + Clone + 'static,
        {
            w.apply_watcher_event(&Event::Init);
            for mut o in objs {
                slim(&mut o);
                w.apply_watcher_event(&Event::InitApply(o));
            }
            w.apply_watcher_event(&Event::InitDone);
        }
        use crate::stores::{keep_foreign_fields, slim_pod, slim_resource};
        let mut w = crate::stores::Writers::new();
        let v = "paperbot.io/v1alpha1";
        fill(
            &mut w.sessions,
            self.objects(v, "BotSession"),
            slim_resource,
        );
        fill(
            &mut w.accounts,
            self.objects(v, "PaperAccount"),
            slim_resource,
        );
        fill(
            &mut w.strategies,
            self.objects(v, "StrategyConfig"),
            slim_resource,
        );
        let stateful_sets: Vec<k8s_openapi::api::apps::v1::StatefulSet> =
            self.objects("apps/v1", "StatefulSet");
        fill(
            &mut w.stateful_sets,
            stateful_sets
                .into_iter()
                .map(|s| crate::stores::StatefulSetView::of(s).expect("serializable"))
                .collect(),
            keep_foreign_fields,
        );
        let pods: Vec<k8s_openapi::api::core::v1::Pod> = self.objects("v1", "Pod");
        fill(
            &mut w.pods,
            pods.into_iter().map(Into::into).collect(),
            slim_pod,
        );
        fill(
            &mut w.config_maps,
            self.objects("v1", "ConfigMap"),
            keep_foreign_fields,
        );
        fill(
            &mut w.secrets,
            self.objects("v1", "Secret"),
            keep_foreign_fields,
        );
        fill(
            &mut w.services,
            self.objects("v1", "Service"),
            keep_foreign_fields,
        );
        fill(
            &mut w.claims,
            self.objects("v1", "PersistentVolumeClaim"),
            keep_foreign_fields,
        );
        w.readers()
    }

    /// Requests received so far, and forget them.
    pub fn take_requests(&self) -> Vec<Recorded> {
        std::mem::take(&mut *self.requests.lock().unwrap())
    }

    fn stamp(&self, obj: &mut Value, bump_generation: bool) {
        let mut rv = self.next_rv.lock().unwrap();
        *rv += 1;
        let md = &mut obj["metadata"];
        md["resourceVersion"] = json!(rv.to_string());
        if md["uid"].is_null() {
            md["uid"] = json!(format!("uid-{}", *rv));
        }
        if md["creationTimestamp"].is_null() {
            md["creationTimestamp"] = json!("2026-01-01T00:00:00Z");
        }
        let generation = md["generation"].as_i64().unwrap_or(0);
        if bump_generation || generation == 0 {
            md["generation"] = json!(generation + 1);
        }
    }

    /// A client talking to this fake; the server runs on a spawned task.
    pub fn client(&self) -> Client {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let me = self.clone();
        tokio::spawn(async move {
            while let Some((request, send)) = handle.next_request().await {
                let response = me.handle(request).await;
                send.send_response(response);
            }
        });
        Client::new(service, "default")
    }

    async fn handle(&self, request: Request<Body>) -> Response<Body> {
        let (parts, body) = request.into_parts();
        let bytes = body.collect_bytes().await.unwrap_or_default();
        let body: Value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or(Value::Null)
        };
        let path = parts.uri.path().to_string();
        let rec = Recorded {
            method: parts.method.clone(),
            path: path.clone(),
            query: parts.uri.query().unwrap_or_default().to_string(),
            content_type: parts
                .headers
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string(),
            body: body.clone(),
        };
        self.requests.lock().unwrap().push(rec.clone());
        let (status, value) = self.route(&rec);
        Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(Body::from(serde_json::to_vec(&value).unwrap()))
            .unwrap()
    }

    fn not_found(path: &str) -> (StatusCode, Value) {
        (
            StatusCode::NOT_FOUND,
            json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                   "message": format!("{path} not found"), "reason": "NotFound", "code": 404}),
        )
    }

    fn route(&self, r: &Recorded) -> (StatusCode, Value) {
        let (key, status_sub) = match r.path.strip_suffix("/status") {
            Some(k) => (k.to_string(), true),
            None => (r.path.clone(), false),
        };
        if r.method == Method::POST && r.path.ends_with("/events") {
            return (StatusCode::CREATED, r.body.clone());
        }
        let objects = self.objects.lock().unwrap();
        match r.method {
            Method::GET => {
                if let Some(obj) = objects.get(&key) {
                    return (StatusCode::OK, obj.clone());
                }
                if !is_collection(&key) {
                    return Self::not_found(&key);
                }
                // A collection: the objects directly below it.
                let prefix = format!("{key}/");
                let items: Vec<Value> = objects
                    .iter()
                    .filter(|(k, _)| k.starts_with(&prefix) && !k[prefix.len()..].contains('/'))
                    .map(|(_, v)| v.clone())
                    .collect();
                (
                    StatusCode::OK,
                    json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": "1"}, "items": items}),
                )
            }
            Method::PATCH => {
                let exists = objects.contains_key(&key);
                let mut obj = match objects.get(&key) {
                    Some(o) => o.clone(),
                    None if status_sub => return Self::not_found(&key),
                    None => json!({"metadata": {}}),
                };
                let spec_before = obj["spec"].clone();
                match r.content_type.as_str() {
                    "application/json-patch+json" => {
                        // Like the API server, a `test` for null passes on a missing field.
                        let ops: Vec<Value> = r
                            .body
                            .as_array()
                            .expect("json patch is a list")
                            .iter()
                            .filter(|op| {
                                !(op["op"] == "test"
                                    && op["value"].is_null()
                                    && op["path"]
                                        .as_str()
                                        .is_some_and(|p| obj.pointer(p).is_none()))
                            })
                            .cloned()
                            .collect();
                        let patch: json_patch::Patch =
                            serde_json::from_value(Value::Array(ops)).expect("json patch");
                        if let Err(e) = json_patch::patch(&mut obj, &patch) {
                            return (
                                StatusCode::UNPROCESSABLE_ENTITY,
                                json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                                       "message": e.to_string(), "reason": "Invalid", "code": 422}),
                            );
                        }
                    }
                    _ => {
                        let mut patch = r.body.clone();
                        if status_sub {
                            patch = json!({"status": patch["status"].clone()});
                        }
                        // Server-side apply and merge patches both land as an RFC 7386 merge here.
                        json_patch::merge(&mut obj, &patch);
                    }
                }
                let spec_changed = obj["spec"] != spec_before;
                drop(objects);
                self.stamp(&mut obj, spec_changed || !exists);
                let mut objects = self.objects.lock().unwrap();
                // A deleted object whose last finalizer is removed goes away.
                let finalizers_empty = obj["metadata"]["finalizers"]
                    .as_array()
                    .is_none_or(|f| f.is_empty());
                if !obj["metadata"]["deletionTimestamp"].is_null() && finalizers_empty {
                    objects.remove(&key);
                } else {
                    objects.insert(key, obj.clone());
                }
                (StatusCode::OK, obj)
            }
            Method::DELETE => match objects.get(&key).cloned() {
                Some(obj) => {
                    drop(objects);
                    self.objects.lock().unwrap().remove(&key);
                    (StatusCode::OK, obj)
                }
                None => Self::not_found(&key),
            },
            _ => (StatusCode::METHOD_NOT_ALLOWED, json!({})),
        }
    }
}

fn is_collection(path: &str) -> bool {
    let last = path.rsplit('/').next().unwrap_or_default();
    matches!(
        last,
        "botsessions"
            | "paperaccounts"
            | "strategyconfigs"
            | "configmaps"
            | "secrets"
            | "services"
            | "pods"
            | "statefulsets"
            | "persistentvolumeclaims"
    )
}
