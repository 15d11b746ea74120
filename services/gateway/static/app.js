// The page's behaviour: upload with a progress bar (XMLHttpRequest, cancellable), and the user's
// jobs kept current from the jobs API's event stream (EventSource; no polling, no reloads).
// Plain JavaScript with no build step; the session is an HttpOnly cookie this script never sees.
"use strict";

(function () {
  const form = document.getElementById("upload-form");
  // Marks the page usable, and when (the browser test reports it as the time to interactive).
  const ready = () => {
    document.documentElement.dataset.readyAt = String(performance.now());
    document.documentElement.dataset.ready = "1";
  };
  if (!form) {
    ready();
    return; // the login form needs no script
  }

  const $ = (id) => document.getElementById(id);
  const input = $("video");
  const drop = $("drop");
  const hint = $("video-hint");
  const hintText = hint.textContent;
  const button = $("upload-button");
  const cancel = $("cancel-button");
  const statusRow = $("upload-status");
  const bar = $("upload-progress");
  const barText = $("upload-text");
  const message = $("upload-message");
  const list = $("jobs");
  const empty = $("jobs-empty");
  const jobsError = $("jobs-error");
  const maxBytes = Number(form.dataset.maxBytes);
  const jobs = new Map(); // id -> {job, el}

  // ---- helpers ---------------------------------------------------------------------------------

  function bytes(n) {
    const units = ["bytes", "KB", "MB", "GB", "TB"];
    let i = 0;
    while (n >= 1000 && i < units.length - 1) {
      n /= 1000;
      i++;
    }
    return (i === 0 ? n : n.toFixed(n < 10 ? 1 : 0)) + " " + units[i];
  }

  function clock(seconds) {
    if (seconds == null || !isFinite(seconds)) return "";
    const s = Math.round(seconds);
    const h = Math.floor(s / 3600);
    const m = Math.floor((s % 3600) / 60);
    const pad = (x) => String(x).padStart(2, "0");
    return (h ? h + ":" + pad(m) : m) + ":" + pad(s % 60);
  }

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v == null || v === false) continue;
      if (k === "class") node.className = v;
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v === true ? "" : v);
    }
    for (const c of children) if (c != null) node.append(c);
    return node;
  }

  function say(text, kind) {
    message.textContent = text;
    message.className = "message" + (kind ? " " + kind : "");
  }

  // The server's reason, from a JSON error body or a plain-text one.
  function reason(xhrOrText) {
    const text = typeof xhrOrText === "string" ? xhrOrText : xhrOrText.responseText || "";
    try {
      const body = JSON.parse(text);
      return body.error || body.message || text;
    } catch (_) {
      return text.trim();
    }
  }

  // ---- choosing a file ------------------------------------------------------------------------

  function chosen() {
    const file = input.files && input.files[0];
    hint.textContent = file ? file.name + " (" + bytes(file.size) + ")" : hintText;
    drop.classList.toggle("has-file", !!file);
    say("");
  }
  input.addEventListener("change", chosen);
  for (const type of ["dragenter", "dragover"]) {
    drop.addEventListener(type, (e) => {
      e.preventDefault();
      drop.classList.add("over");
    });
  }
  for (const type of ["dragleave", "dragend"]) drop.addEventListener(type, () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    if (e.dataTransfer && e.dataTransfer.files.length) {
      input.files = e.dataTransfer.files;
      chosen();
    }
  });

  // Bitrate (CBR) and quality (VBR) exclude each other.
  const bitrate = $("bitrate");
  const quality = $("quality");
  bitrate.addEventListener("change", () => bitrate.value && (quality.value = ""));
  quality.addEventListener("change", () => quality.value && (bitrate.value = ""));

  // ---- uploading ------------------------------------------------------------------------------

  let xhr = null;

  function uploading(on) {
    button.disabled = on;
    input.disabled = on;
    cancel.hidden = !on;
    statusRow.hidden = !on;
    if (on) {
      bar.value = 0;
      barText.textContent = "";
    }
  }

  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const file = input.files && input.files[0];
    if (!file) {
      say("Choose a video first.", "error");
      input.focus();
      return;
    }
    if (file.size > maxBytes) {
      say("Too large: " + file.name + " is " + bytes(file.size) + "; the limit is " + form.dataset.maxHuman + ".", "error");
      return;
    }
    if (file.type && !/^(video|audio)\//.test(file.type)) {
      say("Not a video: " + file.name + " is " + file.type + ". Choose a video or audio file.", "error");
      return;
    }
    const data = new FormData();
    for (const name of ["bitrate", "quality", "start", "end"]) {
      const value = form.elements[name].value.trim();
      if (value) data.append(name, value);
    }
    data.append("file", file, file.name);

    xhr = new XMLHttpRequest();
    xhr.open("POST", "/upload");
    xhr.setRequestHeader("Accept", "application/json");
    xhr.upload.addEventListener("progress", (ev) => {
      if (!ev.lengthComputable) return;
      bar.value = Math.floor((ev.loaded / ev.total) * 100);
      barText.textContent = bytes(ev.loaded) + " of " + bytes(ev.total);
    });
    xhr.addEventListener("load", () => {
      const r = xhr;
      xhr = null;
      uploading(false);
      if (r.status >= 200 && r.status < 300) {
        let job = null;
        try {
          job = JSON.parse(r.responseText);
        } catch (_) {
          /* an old gateway answers "success!" */
        }
        if (job && job.id) upsert(job);
        form.reset();
        chosen();
        say("Uploaded " + file.name + ". It appears below and converts on its own.", "ok");
        return;
      }
      const why = reason(r);
      const prefix =
        r.status === 413 ? "Too large: " :
        r.status === 415 ? "Not a video: " :
        r.status === 429 ? "Quota reached: " :
        r.status === 401 || r.status === 403 ? "Not allowed: " :
        r.status >= 500 ? "The service is busy: " : "Refused: ";
      say(prefix + why, "error");
    });
    xhr.addEventListener("error", () => {
      xhr = null;
      uploading(false);
      say("Upload failed: the connection was lost. Try again.", "error");
    });
    xhr.addEventListener("abort", () => {
      xhr = null;
      uploading(false);
      say("Upload cancelled.");
    });
    uploading(true);
    say("Uploading " + file.name + "…");
    xhr.send(data);
  });

  cancel.addEventListener("click", () => xhr && xhr.abort());

  // ---- the jobs list --------------------------------------------------------------------------

  const LABELS = { queued: "Queued", converting: "Converting", done: "Done", failed: "Failed", expired: "Expired" };

  function render(job) {
    const name = job.filename || job.id;
    const when = job.created_at ? new Date(job.created_at).toLocaleString() : "";
    const meta = [when, clock(job.duration_seconds)].filter(Boolean).join(" · ");
    const li = el(
      "li",
      { class: "job", "data-id": job.id, "data-state": job.state },
      el("div", { class: "job-head" }, el("span", { class: "name" }, name), el("span", { class: "badge " + job.state }, LABELS[job.state] || job.state)),
      meta ? el("div", { class: "hint" }, meta) : null
    );
    if (job.state === "queued" || job.state === "converting") {
      const p = Math.max(0, Math.min(100, Math.round(job.progress || 0)));
      li.append(
        el("div", { class: "progress-row" },
          el("progress", { max: "100", value: String(p), "aria-label": "Converting " + name }),
          el("span", { class: "hint percent" }, job.state === "queued" ? "waiting" : p + "%"))
      );
    }
    if (job.state === "done" && job.download_url) {
      li.append(el("audio", { controls: true, preload: "metadata", src: job.download_url, "aria-label": "Play " + name }));
    }
    if (job.state === "failed") {
      li.append(el("p", { class: "error" }, job.error || "The conversion failed."));
    }
    if (job.state === "expired") {
      li.append(el("p", { class: "hint" }, "Its files were removed after the retention period."));
    }
    const actions = el("div", { class: "actions" });
    if (job.state === "done" && job.download_url) {
      actions.append(el("a", { class: "button", href: job.download_url, download: name.replace(/\.[^.]*$/, "") + ".mp3" }, "Download"));
    }
    actions.append(el("button", { type: "button", class: "secondary danger", "aria-label": "Delete " + name, onclick: () => remove(job.id, li) }, "Delete"));
    li.append(actions);
    return li;
  }

  function newerFirst(a, b) {
    return String(b.created_at || "").localeCompare(String(a.created_at || "")) || String(b.id).localeCompare(String(a.id));
  }

  function forget(id) {
    const known = jobs.get(id);
    if (known) known.el.remove();
    jobs.delete(id);
    empty.hidden = jobs.size > 0;
  }

  function upsert(job) {
    const known = jobs.get(job.id);
    if (job.state === "deleted") {
      // Deleted here or in another tab: the stream says so once.
      forget(job.id);
      return;
    }
    if (known && known.job.state === job.state && known.job.download_url === job.download_url) {
      // Same state: only the numbers move (keeps an <audio> that is playing untouched).
      known.job = job;
      const progress = known.el.querySelector("progress");
      if (progress) progress.value = Math.round(job.progress || 0);
      const pct = known.el.querySelector(".percent");
      if (pct && job.state === "converting") pct.textContent = Math.round(job.progress || 0) + "%";
      return;
    }
    const li = render(job);
    if (known) {
      known.el.replaceWith(li);
    } else {
      let before = null;
      for (const other of jobs.values()) {
        if (newerFirst(job, other.job) < 0 && (!before || newerFirst(other.job, before.job) < 0)) before = other;
      }
      list.insertBefore(li, before ? before.el : null);
    }
    jobs.set(job.id, { job, el: li });
    empty.hidden = jobs.size > 0;
  }

  async function remove(id, li) {
    const buttons = li.querySelectorAll("button");
    buttons.forEach((b) => (b.disabled = true));
    const resp = await fetch("/jobs/" + encodeURIComponent(id), { method: "DELETE", credentials: "same-origin" }).catch(() => null);
    if (resp && (resp.status === 204 || resp.status === 404)) {
      forget(id);
      say("Deleted.");
      return;
    }
    buttons.forEach((b) => (b.disabled = false));
    say("Could not delete: " + (resp ? reason(await resp.text()) : "the connection was lost."), "error");
  }

  async function load() {
    try {
      const resp = await fetch("/jobs?limit=100", { headers: { Accept: "application/json" }, credentials: "same-origin" });
      if (!resp.ok) throw new Error(reason(await resp.text()) || resp.statusText);
      const body = await resp.json();
      for (const job of body.jobs || []) upsert(job);
    } catch (e) {
      jobsError.textContent = "Your files could not be listed: " + e.message;
      jobsError.hidden = false;
    }
    follow();
    ready();
  }

  function follow() {
    const events = new EventSource("/jobs/events");
    events.addEventListener("job", (e) => {
      try {
        upsert(JSON.parse(e.data));
      } catch (_) {
        /* a malformed event is skipped; the next one carries the whole job again */
      }
    });
    events.addEventListener("open", () => (jobsError.hidden = true));
    events.addEventListener("error", () => {
      // EventSource reconnects by itself unless the server refused it (e.g. the session ended).
      if (events.readyState === EventSource.CLOSED) {
        jobsError.textContent = "Live updates stopped. Reload the page to resume them.";
        jobsError.hidden = false;
      }
    });
  }

  load();
})();
