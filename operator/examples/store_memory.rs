//! Heap bytes held by one cached copy of each kind the operator watches
//! (after the same slimming as the watches), from `kubectl get -o json`
//! lists in a directory: `cargo run -p paperbot-operator --example
//! store_memory -- DIR` (files `botsession.json`, `statefulset.json`,
//! `pod.json`, `configmap.json`, `secret.json`, `service.json`).

use std::{
    alloc::{GlobalAlloc, Layout, System},
    sync::{
        Arc,
        atomic::{AtomicIsize, Ordering},
    },
};

use k8s_openapi::api::{
    apps::v1::StatefulSet,
    core::v1::{ConfigMap, Pod, Secret, Service},
};
use paperbot_crds::BotSession;
use paperbot_operator::stores::{
    PodView, StatefulSetView, keep_foreign_fields, slim_pod, slim_resource,
};

struct Counting;
static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: forwards to the system allocator, only counting sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(p, l) }
    }
}

#[global_allocator]
static A: Counting = Counting;

fn held<K: serde::de::DeserializeOwned>(dir: &str, file: &str, slim: fn(&mut K)) {
    let text = std::fs::read_to_string(format!("{dir}/{file}")).expect("list file");
    let list: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    let item = list["items"][0].to_string();
    let json_len = item.len();
    let before = LIVE.load(Ordering::Relaxed);
    let mut obj: K = serde_json::from_str(&item).expect("object of its kind");
    let type_name = std::any::type_name::<K>()
        .rsplit("::")
        .next()
        .unwrap_or_default();
    slim(&mut obj);
    let obj = Arc::new(obj);
    let after = LIVE.load(Ordering::Relaxed);
    println!(
        "{type_name:16} {file:18} JSON {json_len:6} B, held {:6} B (inline {} B)",
        after - before,
        std::mem::size_of::<K>()
    );
    drop(obj);
}

fn main() {
    let dir = std::env::args().nth(1).expect("usage: store_memory DIR");
    held::<BotSession>(&dir, "botsession.json", slim_resource);
    held::<StatefulSet>(&dir, "statefulset.json", keep_foreign_fields);
    held::<StatefulSetView>(&dir, "statefulset.json", keep_foreign_fields);
    held::<Pod>(&dir, "pod.json", |_| {});
    held::<PodView>(&dir, "pod.json", slim_pod);
    held::<ConfigMap>(&dir, "configmap.json", keep_foreign_fields);
    held::<Secret>(&dir, "secret.json", keep_foreign_fields);
    held::<Service>(&dir, "service.json", keep_foreign_fields);
}
