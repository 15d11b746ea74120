#!/usr/bin/env python3
"""The web page in a real browser (Debian's chromium driven by Playwright), against running services.

Run by crates/testkit/tests/web.rs (which starts the four services and makes the users), or by hand
against scripts/dev-up.sh's stack:

    python3 crates/testkit/web/page_test.py --url http://127.0.0.1:8080 --user georgio@email.com \
        --password Admin123 --other-user someone@example.com --other-password ... --video .dev/test.mkv

Steps (a screenshot of each under --out): login page and its accessibility, a refused login, login,
the page's weight and time to interactive, a cancelled upload, a refused upload (server's reason),
an upload through the file picker with its progress bar, the list reaching "done" through live
updates (one GET /jobs, no reload), the <audio> duration against the source's, the download checked
with ffprobe, a second user who never sees the first one's job, a cross-site request refused,
delete, log out. Prints `WEB-METRICS {json}` and exits non-zero on the first failed check.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import Page, expect, sync_playwright

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def probe_duration(path: Path) -> tuple[str, float]:
    """(first audio codec, duration in seconds) by ffprobe."""
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-print_format", "json", "-show_format", "-show_streams", str(path)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    info = json.loads(out)
    audio = next((s["codec_name"] for s in info["streams"] if s["codec_type"] == "audio"), None)
    return audio, float(info["format"]["duration"])


class Run:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.out = Path(args.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.step_no = 0
        self.metrics: dict[str, object] = {}
        self.axe = Axe()

    def shot(self, page: Page, name: str, **kw) -> Path:
        self.step_no += 1
        path = self.out / f"{self.step_no:02d}-{name}.png"
        page.screenshot(path=str(path), **kw)
        print(f"step {self.step_no:02d} {name}: {path}", flush=True)
        return path

    def accessible(self, page: Page, what: str) -> None:
        """axe-core in the page: no serious or critical violation."""
        results = self.axe.run(page)
        bad = [v for v in results.response["violations"] if v.get("impact") in ("serious", "critical")]
        others = [v["id"] for v in results.response["violations"] if v not in bad]
        self.metrics[f"axe_{what}"] = {"serious_or_critical": len(bad), "minor_or_moderate": others}
        assert not bad, f"axe on the {what} page: " + json.dumps(
            [{"id": v["id"], "impact": v["impact"], "nodes": [n["html"] for n in v["nodes"]][:3]} for v in bad], indent=1
        )

    def login_with_keyboard(self, page: Page, user: str, password: str) -> None:
        """The login form with the keyboard alone: the email field has the focus, Tab, Enter."""
        expect(page.get_by_label("Email", exact=True)).to_be_focused()
        page.keyboard.type(user)
        page.keyboard.press("Tab")
        expect(page.get_by_label("Password", exact=True)).to_be_focused()
        page.keyboard.type(password)
        page.keyboard.press("Enter")
        expect(page.get_by_role("button", name="Log out")).to_be_visible()
        expect(page.locator("html[data-ready='1']")).to_have_count(1)

    def login(self, page: Page, user: str, password: str) -> None:
        page.get_by_label("Email", exact=True).fill(user)
        page.get_by_label("Password", exact=True).fill(password)
        page.get_by_role("button", name="Log in").click()
        expect(page.get_by_role("button", name="Log out")).to_be_visible()
        expect(page.locator("html[data-ready='1']")).to_have_count(1)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", required=True, help="the gateway, e.g. http://127.0.0.1:8080")
    p.add_argument("--user", required=True)
    p.add_argument("--password", required=True)
    p.add_argument("--other-user", required=True, help="a second user, who must never see the first one's jobs")
    p.add_argument("--other-password", required=True)
    p.add_argument("--video", required=True, help="a small video with an audio track")
    p.add_argument("--out", default="target/web-test", help="screenshots and the downloaded mp3 go here")
    p.add_argument("--readme-shot", help="also save a small screenshot of the page with a finished job here")
    p.add_argument("--timeout", type=float, default=120, help="seconds for the conversion to finish")
    args = p.parse_args()
    run = Run(args)
    expect.set_options(timeout=15_000)
    video = Path(args.video)
    _, source_duration = probe_duration(video)
    base = args.url.rstrip("/")
    csp_violations: list[str] = []

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        ctx = browser.new_context(viewport={"width": 1100, "height": 820}, accept_downloads=True)
        ctx.set_default_timeout(15_000)
        page = ctx.new_page()
        page.on("console", lambda m: csp_violations.append(m.text) if "Content Security Policy" in m.text else None)
        script_errors: list[str] = []
        page.on("pageerror", lambda e: script_errors.append(str(e)))
        jobs_lists: list[str] = []
        page.on("request", lambda r: jobs_lists.append(r.url) if r.method == "GET" and re.search(r"/jobs(\?|$)", r.url) else None)

        # ---- login page ----------------------------------------------------------------------
        resp = page.goto(base + "/")
        assert resp is not None and resp.status == 200, resp and resp.status
        headers = resp.headers
        csp = headers.get("content-security-policy", "")
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp, csp
        assert headers.get("x-content-type-options") == "nosniff", headers
        expect(page.get_by_role("button", name="Log in")).to_be_visible()
        run.accessible(page, "login")
        run.shot(page, "login")

        page.get_by_label("Email", exact=True).fill(args.user)
        page.get_by_label("Password", exact=True).fill(args.password + "-wrong")
        page.get_by_role("button", name="Log in").click()
        expect(page.get_by_role("alert")).to_have_text("Invalid credentials.")
        expect(page.get_by_label("Email", exact=True)).to_have_value(args.user)  # kept, so only the password is retyped
        run.shot(page, "login-refused")

        # ---- login; weight and time to interactive -------------------------------------------
        try:
            run.login(page, args.user, args.password)
        finally:
            assert not script_errors, script_errors
        cookies = {c["name"]: c for c in ctx.cookies()}
        session = cookies.get("mp3c_session")
        assert session and session["httpOnly"] and session["sameSite"] == "Strict", cookies
        assert args.password not in page.url and session["value"] not in page.url
        assert page.evaluate("document.cookie") == "", "the session cookie must be invisible to scripts"
        # A fresh navigation, timed by the browser itself: HTML + CSS + JS bytes as decoded, and the
        # moment the script marked the page ready (listed the jobs and opened the event stream).
        jobs_lists.clear()
        page.reload()
        expect(page.locator("html[data-ready='1']")).to_have_count(1)
        timing = page.evaluate(
            """() => {
              const nav = performance.getEntriesByType('navigation')[0];
              const res = performance.getEntriesByType('resource').filter(r => /\\/static\\//.test(r.name));
              return {
                html: nav.decodedBodySize,
                assets: res.map(r => ({name: r.name.split('/').pop(), bytes: r.decodedBodySize})),
                dom_interactive_ms: nav.domInteractive,
                dom_content_loaded_ms: nav.domContentLoadedEventEnd,
              };
            }"""
        )
        ready_ms = page.evaluate("Number(document.documentElement.dataset.readyAt)")
        weight = timing["html"] + sum(a["bytes"] for a in timing["assets"])
        run.metrics.update(
            page_html_bytes=timing["html"],
            page_assets=timing["assets"],
            page_weight_bytes=weight,
            dom_interactive_ms=round(timing["dom_interactive_ms"], 1),
            time_to_interactive_ms=round(ready_ms, 1),
        )
        assert len(timing["assets"]) == 2, timing
        run.accessible(page, "app")
        run.shot(page, "logged-in")

        # The hashed assets are cacheable for good and carry an ETag.
        css = next(a["name"] for a in timing["assets"] if a["name"].endswith(".css"))
        asset = ctx.request.get(f"{base}/static/{css}")
        assert asset.status == 200 and "immutable" in asset.headers["cache-control"] and asset.headers.get("etag"), asset.headers
        again = ctx.request.get(f"{base}/static/{css}", headers={"If-None-Match": asset.headers["etag"]})
        assert again.status == 304, again.status

        # ---- drag and drop onto the drop zone names the file ------------------------------------
        dropped = page.evaluate_handle(
            """() => { const dt = new DataTransfer();
                       dt.items.add(new File(['x'], 'dropped.mkv', {type: 'video/x-matroska'})); return dt; }"""
        )
        page.dispatch_event("#drop", "dragover", {"dataTransfer": dropped})
        page.dispatch_event("#drop", "drop", {"dataTransfer": dropped})
        expect(page.locator("#video-hint")).to_have_text("dropped.mkv (1 bytes)")
        assert page.evaluate("document.getElementById('video').files[0].name") == "dropped.mkv"

        # ---- a cancelled upload (throttled so there is time to watch the bar and cancel) -------
        cdp = ctx.new_cdp_session(page)
        cdp.send("Network.enable")
        throttle = {"offline": False, "latency": 20, "downloadThroughput": -1, "uploadThroughput": max(video.stat().st_size // 4, 8_000)}
        cdp.send("Network.emulateNetworkConditions", throttle)
        page.get_by_label("Video", exact=True).set_input_files(str(video))
        page.get_by_role("button", name="Upload").click()
        expect(page.locator("#upload-text")).to_contain_text(" of ")
        expect(page.get_by_role("button", name="Cancel")).to_be_visible()
        run.shot(page, "upload-in-progress")
        page.get_by_role("button", name="Cancel").click()
        expect(page.locator("#upload-message")).to_have_text("Upload cancelled.")
        expect(page.locator("li.job")).to_have_count(0)
        cdp.send("Network.emulateNetworkConditions", {**throttle, "latency": 0, "uploadThroughput": -1})

        # ---- a refused upload shows the server's reason ---------------------------------------
        fake = run.out / "not-a-video.mkv"
        fake.write_text("this is text, not a video\n" * 100)
        page.get_by_label("Video", exact=True).set_input_files(str(fake))
        page.get_by_role("button", name="Upload").click()
        expect(page.locator("#upload-message")).to_contain_text("Not a video: unsupported file type")
        run.shot(page, "upload-refused")

        # ---- the upload, and the live list ------------------------------------------------------
        page.evaluate("window.__sameDocument = true")
        page.get_by_label("Video", exact=True).set_input_files(str(video))
        page.get_by_role("button", name="Upload").click()
        expect(page.locator("#upload-message")).to_contain_text("Uploaded " + video.name)
        job = page.locator("li.job").filter(has_text=video.name)
        expect(job).to_have_count(1)
        run.shot(page, "uploaded")
        started = time.monotonic()
        states_seen: list[str] = []
        progress_seen: list[str] = []  # informational: a short source converts between two looks
        deadline = started + args.timeout
        while True:
            state = job.get_attribute("data-state")
            if not states_seen or states_seen[-1] != state:
                states_seen.append(state)
            if state == "converting":
                value = job.locator("progress").get_attribute("value")
                if value is not None and value not in progress_seen:
                    progress_seen.append(value)
            if state in ("done", "failed"):
                break
            assert time.monotonic() < deadline, f"still {state} after {args.timeout} s: {states_seen}"
            page.wait_for_timeout(100)  # a poll of the DOM with a deadline, not a wait for the server
        assert state == "done", f"the job failed: {job.inner_text()}"
        run.metrics["upload_to_done_s"] = round(time.monotonic() - started, 2)
        run.metrics["states_seen"] = states_seen
        run.metrics["progress_seen"] = progress_seen
        assert page.evaluate("window.__sameDocument === true"), "the page was reloaded"
        assert len(jobs_lists) == 1, f"the list must be fetched once and then follow events, got {jobs_lists}"
        job_id = job.get_attribute("data-id")

        audio = job.locator("audio")
        expect(audio).to_have_count(1)
        page.wait_for_function("a => a.duration > 0 && isFinite(a.duration)", arg=audio.element_handle(), timeout=15_000)
        played = audio.evaluate("a => a.duration")
        run.metrics["audio_duration_s"] = played
        run.metrics["source_duration_s"] = source_duration
        assert abs(played - source_duration) < 0.6, f"<audio> says {played} s, the source is {source_duration} s"
        run.accessible(page, "app-with-a-done-job")
        run.shot(page, "done")
        if args.readme_shot:
            page.set_viewport_size({"width": 760, "height": 760})
            page.screenshot(path=args.readme_shot)
            page.set_viewport_size({"width": 1100, "height": 820})

        with page.expect_download() as dl:
            job.get_by_role("link", name="Download").click()
        mp3 = run.out / "downloaded.mp3"
        dl.value.save_as(str(mp3))
        codec, duration = probe_duration(mp3)
        assert codec == "mp3" and abs(duration - source_duration) < 0.6, (codec, duration)
        run.metrics["download_bytes"] = mp3.stat().st_size

        # A phone screen.
        page.set_viewport_size({"width": 390, "height": 844})
        run.shot(page, "phone", full_page=True)
        page.set_viewport_size({"width": 1100, "height": 820})

        # ---- a second user sees none of it -------------------------------------------------------
        other_ctx = browser.new_context(viewport={"width": 1100, "height": 820})
        other_ctx.set_default_timeout(15_000)
        other = other_ctx.new_page()
        other.goto(base + "/")
        run.login_with_keyboard(other, args.other_user, args.other_password)
        expect(other.locator("#jobs-empty")).to_be_visible()
        expect(other.locator("li.job")).to_have_count(0)
        assert video.name not in other.content()
        assert other_ctx.request.get(f"{base}/jobs/{job_id}").status == 404
        run.shot(other, "other-user")

        # ---- a cross-site request with the session cookie is refused ----------------------------
        forged = ctx.request.delete(f"{base}/jobs/{job_id}", headers={"Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site"})
        assert forged.status == 403, forged.status
        assert ctx.request.get(f"{base}/jobs/{job_id}").status == 200, "the forged delete must change nothing"

        # ---- delete, log out ---------------------------------------------------------------------
        job.get_by_role("button", name=re.compile("^Delete")).click()
        expect(page.locator("li.job")).to_have_count(0)
        assert ctx.request.get(f"{base}/jobs/{job_id}").status == 404
        run.shot(page, "deleted")

        page.get_by_role("button", name="Log out").click()
        expect(page.get_by_role("button", name="Log in")).to_be_visible()
        assert "mp3c_session" not in {c["name"] for c in ctx.cookies()}
        assert ctx.request.get(f"{base}/jobs").status == 401
        run.shot(page, "logged-out")

        # Other user still sees nothing after all that.
        other.reload()
        expect(other.locator("html[data-ready='1']")).to_have_count(1)
        expect(other.locator("li.job")).to_have_count(0)
        other_ctx.close()
        browser.close()

    assert not csp_violations, csp_violations
    assert not script_errors, script_errors
    print("WEB-METRICS " + json.dumps(run.metrics), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
