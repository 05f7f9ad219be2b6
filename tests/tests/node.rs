//! The test control plane's real node (`tests/control-plane/start.sh
//! --real-node`): containerd, kubelet, kube-proxy and CoreDNS in a private
//! network namespace beside the kwok fake nodes. Proves that pods really run
//! there (logs, cluster DNS, the API server through its ClusterIP with a
//! ServiceAccount token, a ClusterIP Service between pods, PodSecurity
//! admission) and that stopping the plane leaves nothing on the machine.
//!
//! Needs root. One real-node plane runs per machine, so the tests here run
//! one at a time and each starts and stops its own.

use std::sync::{Mutex, MutexGuard};

use paperbot_e2e::real_node::{
    HostState, POD_CIDR, POD_PLACEMENT_YAML, REAL_NODE_KEY, REAL_NODE_NAME, RealNodePlane,
    oci_image, rss_kib,
};

static ONE_PLANE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn one_plane_at_a_time() -> MutexGuard<'static, ()> {
    ONE_PLANE_AT_A_TIME
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

/// `kubectl ARGS`, printed as a user would see it; returns stdout.
fn show(cp: &RealNodePlane, args: &[&str]) -> String {
    let out = cp.kubectl_ok(args);
    println!("$ kubectl {}\n{out}", args.join(" "));
    out
}

/// Wait until pod `ns/name` reaches `phase` (`Running`, `Succeeded`);
/// panics with `kubectl describe` and its logs when it does not within 120 s.
fn wait_phase(cp: &RealNodePlane, ns: &str, name: &str, phase: &str) {
    let out = cp.kubectl(&[
        "wait",
        "-n",
        ns,
        &format!("--for=jsonpath={{.status.phase}}={phase}"),
        &format!("pod/{name}"),
        "--timeout=120s",
    ]);
    if !out.status.success() {
        let describe = cp.kubectl(&["describe", "-n", ns, "pod", name]);
        let logs = cp.kubectl(&["logs", "-n", ns, name]);
        panic!(
            "pod {ns}/{name} did not reach {phase}: {}\n{}\nlogs:\n{}{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&describe.stdout),
            String::from_utf8_lossy(&logs.stdout),
            String::from_utf8_lossy(&logs.stderr)
        );
    }
}

/// A busybox pod on the real node running `script` with `sh -c`, never
/// restarted; `extra` is more YAML for the container (indented four spaces).
fn busybox_pod(cp: &RealNodePlane, name: &str, script: &str, extra: &str) -> String {
    let script: String = script.lines().map(|l| format!("      {l}\n")).collect();
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  labels: {{app: {name}}}\nspec:\n{POD_PLACEMENT_YAML}  \
         restartPolicy: Never\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: main\n    image: {image}\n    \
         imagePullPolicy: Never\n{extra}    command:\n    - sh\n    - -c\n    - |\n{script}",
        image = cp.busybox_image
    )
}

/// Host state before the plane starts, and the plane's leftovers after it
/// stops: none allowed.
fn stop_and_check_nothing_left(cp: &RealNodePlane, before: &HostState) {
    let report = cp.stop();
    let left = cp.leftovers(before);
    println!(
        "stopped the plane at {}: {} leftovers",
        cp.state.display(),
        left.len()
    );
    assert!(
        left.is_empty(),
        "the stopped plane left on the machine:\n{}\nstop.sh said:\n{report}",
        left.join("\n")
    );
    assert!(
        report.trim().is_empty(),
        "stop.sh reported leftovers:\n{report}"
    );
}

/// Answer every HTTP request on `listener` with `hello from the host`.
fn serve_hello_from_the_host(listener: std::net::TcpListener) {
    use std::io::{BufRead, BufReader, Write};
    for conn in listener.incoming() {
        let Ok(mut conn) = conn else { continue };
        let Ok(read_half) = conn.try_clone() else {
            continue;
        };
        // Read the request head (up to the empty line), then answer.
        let mut reader = BufReader::new(read_half);
        let mut line = String::new();
        while reader.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
            line.clear();
        }
        let body = "hello from the host\n";
        let _ = write!(
            conn,
            "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
    }
}

fn print_figures(cp: &RealNodePlane) {
    println!(
        "stack (control plane, containerd, images, kubelet, node Ready, kube-proxy, CoreDNS) up in {:.1} s",
        cp.started_in.as_secs_f64()
    );
    for c in [
        "kubelet",
        "containerd",
        "kube-proxy",
        "kube-apiserver",
        "etcd",
    ] {
        let rss = cp.component_pid(c).and_then(rss_kib);
        match rss {
            Some(kib) => println!("RSS {c}: {:.0} MiB", kib as f64 / 1024.0),
            None => println!("RSS {c}: not running"),
        }
    }
}

/// The node is Ready beside the kwok nodes, with its taint and label; a
/// busybox pod runs there and `kubectl logs` shows its output; it resolves
/// `kubernetes.default.svc` through CoreDNS and authenticates to the API
/// server at 10.96.0.1:443 with its projected ServiceAccount token; a
/// ClusterIP Service reaches a second pod by `http://<svc>.<ns>.svc:PORT`; a
/// namespace enforcing the `restricted` Pod Security Standard admits a
/// hardened pod (which runs as uid 65532) and rejects a privileged one; and
/// after the stop nothing is left on the machine.
#[test]
fn real_node_runs_pods_with_dns_services_and_pod_security_and_stops_clean() {
    let _one = one_plane_at_a_time();
    let before = HostState::capture();
    let cp = RealNodePlane::start();
    print_figures(&cp);

    // The node, beside the fake ones.
    let nodes = show(&cp, &["get", "nodes", "-o", "wide"]);
    let line = nodes
        .lines()
        .find(|l| l.starts_with(REAL_NODE_NAME))
        .unwrap_or_else(|| panic!("node {REAL_NODE_NAME} missing:\n{nodes}"));
    assert!(
        line.contains(" Ready "),
        "{REAL_NODE_NAME} not Ready: {line}"
    );
    assert!(
        line.contains(&cp.node_ip),
        "InternalIP not {}: {line}",
        cp.node_ip
    );
    assert!(
        line.contains("containerd://"),
        "runtime not containerd: {line}"
    );
    let kwok_ready = nodes
        .lines()
        .filter(|l| l.starts_with("kwok-node-") && l.contains(" Ready "))
        .count();
    assert_eq!(kwok_ready, 3, "the kwok nodes must stay:\n{nodes}");
    let taints = cp.kubectl_ok(&[
        "get",
        "node",
        REAL_NODE_NAME,
        "-o",
        "jsonpath={range .spec.taints[*]}{.key}={.value}:{.effect}{\"\\n\"}{end}",
    ]);
    assert_eq!(
        taints.trim(),
        format!("{REAL_NODE_KEY}=true:NoSchedule"),
        "the real node's taints"
    );
    let label = cp.kubectl_ok(&[
        "get",
        "node",
        REAL_NODE_NAME,
        "-o",
        &format!(
            "jsonpath={{.metadata.labels.{}}}",
            REAL_NODE_KEY.replace('.', "\\.")
        ),
    ]);
    assert_eq!(label, "true", "label {REAL_NODE_KEY}");

    // A pod runs and prints; DNS; the API server with the pod's token.
    let ns = cp.namespace("node-pods");
    let review = r#"{"apiVersion":"authentication.k8s.io/v1","kind":"SelfSubjectReview"}"#;
    let script = format!(
        "echo \"hello from a real pod on $(hostname)\"\n\
         for try in 1 2 3 4 5; do nslookup kubernetes.default.svc.cluster.local && break; sleep 1; done\n\
         T=$(cat /var/run/secrets/kubernetes.io/serviceaccount/token)\n\
         for api in https://10.96.0.1:443 https://kubernetes.default.svc; do\n\
           echo \"POST $api/apis/authentication.k8s.io/v1/selfsubjectreviews\"\n\
           wget -q -O- --header \"Authorization: Bearer $T\" --header \"Content-Type: application/json\" \
                --post-data '{review}' $api/apis/authentication.k8s.io/v1/selfsubjectreviews > /tmp/review || exit 1\n\
           grep '\"username\"' /tmp/review || exit 1\n\
         done\n"
    );
    cp.kubectl_stdin_ok(
        &["apply", "-n", &ns, "-f", "-"],
        &busybox_pod(&cp, "hello", &script, ""),
    );
    wait_phase(&cp, &ns, "hello", "Succeeded");
    let logs = show(&cp, &["logs", "-n", &ns, "hello"]);
    assert!(logs.contains("hello from a real pod on hello"), "{logs}");
    assert!(
        logs.contains("Server:\t\t10.96.0.10") && logs.contains("Address: 10.96.0.1\n"),
        "CoreDNS (10.96.0.10) should answer kubernetes.default.svc.cluster.local = 10.96.0.1:\n{logs}"
    );
    let me = format!("\"username\": \"system:serviceaccount:{ns}:default\"");
    assert_eq!(
        logs.matches(&me).count(),
        2,
        "the API server should authenticate the pod's token at 10.96.0.1:443 and at kubernetes.default.svc ({me}):\n{logs}"
    );
    let ip = cp.kubectl_ok(&[
        "get",
        "pod",
        "-n",
        &ns,
        "hello",
        "-o",
        "jsonpath={.spec.nodeName} {.status.podIP}",
    ]);
    let prefix = POD_CIDR.trim_end_matches("0/24");
    assert!(
        ip.starts_with(&format!("{REAL_NODE_NAME} {prefix}")),
        "pod should run on {REAL_NODE_NAME} with an IP in {POD_CIDR}: {ip}"
    );

    // A ClusterIP Service to a second pod.
    let web = busybox_pod(
        &cp,
        "web",
        "mkdir -p /tmp/www && echo \"served by $(hostname)\" > /tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www",
        "    ports: [{containerPort: 8080}]\n    readinessProbe: {tcpSocket: {port: 8080}, periodSeconds: 1}\n",
    );
    cp.kubectl_stdin_ok(&["apply", "-n", &ns, "-f", "-"], &web);
    cp.kubectl_stdin_ok(
        &["apply", "-n", &ns, "-f", "-"],
        "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  selector: {app: web}\n  ports: [{port: 80, targetPort: 8080}]\n",
    );
    cp.kubectl_ok(&[
        "wait",
        "-n",
        &ns,
        "--for=condition=Ready",
        "pod/web",
        "--timeout=120s",
    ]);
    // kube-proxy programs the Service a moment after the endpoint is ready.
    let client = format!(
        "for i in $(seq 1 60); do wget -q -O- http://web.{ns}.svc:80/ && exit 0; sleep 1; done; exit 1"
    );
    cp.kubectl_stdin_ok(
        &["apply", "-n", &ns, "-f", "-"],
        &busybox_pod(&cp, "client", &client, ""),
    );
    wait_phase(&cp, &ns, "client", "Succeeded");
    show(
        &cp,
        &["get", "service,endpointslices", "-n", &ns, "-o", "wide"],
    );
    let served = show(&cp, &["logs", "-n", &ns, "client"]);
    assert!(
        served.contains("served by web"),
        "http://web.{ns}.svc:80/ should reach the web pod:\n{served}"
    );

    // A port on the host's loopback, reached from a pod (host-port.sh).
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding a host port");
    let port = listener.local_addr().expect("local address").port();
    std::thread::spawn(move || serve_hello_from_the_host(listener));
    let addr = cp.expose_host_port(port);
    println!("host 127.0.0.1:{port} is reachable from pods at {addr}");
    cp.kubectl_stdin_ok(
        &["apply", "-n", &ns, "-f", "-"],
        &busybox_pod(&cp, "to-host", &format!("wget -q -O- http://{addr}/"), ""),
    );
    wait_phase(&cp, &ns, "to-host", "Succeeded");
    let answer = show(&cp, &["logs", "-n", &ns, "to-host"]);
    assert_eq!(answer, "hello from the host\n");

    // An image assembled by oci-image.sh and loaded into the node's containerd.
    let dir = tempfile::tempdir().expect("temporary directory");
    let tar = oci_image(
        "paperbot.test/greeter:1",
        &dir.path().join("greeter.tar"),
        &[
            "--entrypoint",
            "/bin/busybox",
            "--cmd",
            "echo",
            "--cmd",
            "greetings from an image built by oci-image.sh",
            "--user",
            "65532:65532",
            "/bin/busybox:/bin/busybox",
        ],
    );
    cp.load_image(&tar);
    cp.kubectl_stdin_ok(
        &["apply", "-n", &ns, "-f", "-"],
        &format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: greeter}}\nspec:\n{POD_PLACEMENT_YAML}  restartPolicy: Never\n  \
             containers:\n  - {{name: main, image: \"paperbot.test/greeter:1\", imagePullPolicy: Never}}\n"
        ),
    );
    wait_phase(&cp, &ns, "greeter", "Succeeded");
    let greeting = show(&cp, &["logs", "-n", &ns, "greeter"]);
    assert_eq!(greeting, "greetings from an image built by oci-image.sh\n");

    // Pod security: restricted admits a hardened pod, rejects a privileged one.
    let strict = cp.restricted_namespace("node-restricted");
    let hardened = busybox_pod(
        &cp,
        "hardened",
        "id",
        "    securityContext:\n      allowPrivilegeEscalation: false\n      readOnlyRootFilesystem: true\n      \
         capabilities: {drop: [ALL]}\n      runAsNonRoot: true\n      runAsUser: 65532\n      runAsGroup: 65532\n      \
         seccompProfile: {type: RuntimeDefault}\n",
    );
    cp.kubectl_stdin_ok(&["apply", "-n", &strict, "-f", "-"], &hardened);
    wait_phase(&cp, &strict, "hardened", "Succeeded");
    let id = show(&cp, &["logs", "-n", &strict, "hardened"]);
    assert!(id.contains("uid=65532 gid=65532"), "{id}");
    let privileged = busybox_pod(
        &cp,
        "privileged",
        "id",
        "    securityContext: {privileged: true}\n",
    );
    let out = cp.kubectl_stdin(&["apply", "-n", &strict, "-f", "-"], &privileged);
    let rejection = String::from_utf8_lossy(&out.stderr).into_owned();
    println!("$ kubectl apply -n {strict} -f privileged-pod.yaml\n{rejection}");
    assert!(
        !out.status.success(),
        "the restricted namespace admitted a privileged pod"
    );
    assert!(
        rejection.contains("violates PodSecurity \"restricted:latest\"")
            && rejection.contains("privileged"),
        "rejection should name the restricted level and the privileged field:\n{rejection}"
    );
    let pods = show(&cp, &["get", "pods", "-A", "-o", "wide"]);
    assert!(!pods.contains("privileged"), "{pods}");

    stop_and_check_nothing_left(&cp, &before);
}

/// A plane with a real node starts again after a stop (twice in a row: each
/// start finds a machine the previous stop put back), runs a pod each time,
/// and each stop leaves nothing.
#[test]
fn a_second_start_after_a_stop_works() {
    let _one = one_plane_at_a_time();
    let before = HostState::capture();
    for round in 1..=2 {
        let cp = RealNodePlane::start();
        println!("round {round}: up in {:.1} s", cp.started_in.as_secs_f64());
        let ready = cp.kubectl_ok(&[
            "get",
            "node",
            REAL_NODE_NAME,
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
        ]);
        assert_eq!(ready, "True", "round {round}: node Ready");
        let ns = cp.namespace(&format!("node-round-{round}"));
        cp.kubectl_stdin_ok(
            &["apply", "-n", &ns, "-f", "-"],
            &busybox_pod(&cp, "round", &format!("echo round {round}"), ""),
        );
        wait_phase(&cp, &ns, "round", "Succeeded");
        let logs = show(&cp, &["logs", "-n", &ns, "round"]);
        assert_eq!(logs.trim(), format!("round {round}"));
        stop_and_check_nothing_left(&cp, &before);
    }
}
