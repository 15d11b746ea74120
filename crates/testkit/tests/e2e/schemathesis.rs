//! Property-based fuzzing of the live auth service and gateway from their OpenAPI documents
//! with schemathesis: no 5xx, and no response the document does not describe. Bounded in
//! examples per operation and in time per run.

use std::path::Path;
use std::process::Command;

use testkit::{unique_email, Stack};

/// Runs schemathesis; returns the number of test cases it generated. Panics with its report
/// when it found a failure.
fn schemathesis(doc: &str, base: &str, args: &[&str]) -> u64 {
    let doc = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi").join(doc);
    // Run in a scratch directory: schemathesis keeps a cache where it runs.
    let scratch = tempfile::tempdir().unwrap();
    let out = Command::new("schemathesis")
        .current_dir(scratch.path())
        .arg("run")
        .arg(&doc)
        .args(["--url", base, "--checks", "all", "--max-examples", "25", "--max-time", "25", "--workers", "1", "--seed", "1"])
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .expect("schemathesis is installed (pip install schemathesis; scripts/test.sh does)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "schemathesis found problems in {} {args:?}:\n{stdout}\n{}",
        doc.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout.lines().find(|l| l.contains(" generated, ")).unwrap_or_else(|| panic!("no summary in:\n{stdout}"));
    let generated: u64 = line.split_whitespace().next().unwrap().parse().unwrap();
    assert!(line.contains(&format!("{generated} passed")), "{line}");
    assert!(generated > 0);
    generated
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_documents_hold_under_fuzzing() {
    // Fuzzing sends many bad logins: keep the rate limiter out of its way.
    let stack = Stack::start(&[
        ("LOGIN_MAX_FAILURES", "1000000"),
        ("LOGIN_MAX_FAILURES_PER_ADDRESS", "1000000"),
        ("LOGIN_MAX_FAILURES_PER_ACCOUNT", "1000000"),
    ])
    .await
    .unwrap();
    let token = stack.user_token(&unique_email(), true).await.unwrap();
    let bearer = format!("Authorization: Bearer {token}");
    let auth = format!("http://127.0.0.1:{}", stack.auth_port);
    let gateway = stack.gateway_url("");

    let mut total = schemathesis("auth.yaml", &auth, &["-H", &bearer]);
    // `/jobs/events` is a stream that never ends by itself (its behaviour is tested in the
    // gateway's jobs tests); every other route, `/jobs/{id}/events` included, is fuzzed.
    total += schemathesis("gateway.yaml", &gateway, &["-H", &bearer, "--exclude-path", "/upload", "--exclude-path", "/jobs/events"]);
    // A schema cannot say "the first bytes must be a media container": schema-valid uploads of
    // other files are rightly refused with 415, so only the acceptance check is left out here.
    total += schemathesis(
        "gateway.yaml",
        &gateway,
        &["-H", &bearer, "--include-path", "/upload", "--exclude-checks", "positive_data_acceptance"],
    );
    println!("SCHEMATHESIS-EXAMPLES {total}");
    testkit::delete_queues(&[&stack.names.video_queue, &stack.names.mp3_queue]).await;
}
