// The playground page's script: plain ES2020, no framework, nothing from another origin.
//
// Every call goes to this proxy's own API (data-api-base, same origin), like any client's.
// The caller key lives in sessionStorage (this tab only) and is sent only as
// `Authorization: Bearer` to that API; with the host app's login (data-auth="session") there
// is no key and the same-origin session cookie does the work. Text from the API is always put
// in the page with textContent, never parsed as markup.
"use strict";

(() => {
  const body = document.body;
  const API = body.dataset.apiBase || "/v1";
  const AUTH = body.dataset.auth || "key";
  const KEY_REQUIRED = body.dataset.keyRequired === "true";
  const KEY_STORAGE = "sora_proxy.playground.key";
  const DEFAULT_POLL_MS = 2000;
  const MIN_POLL_MS = 250;
  const MAX_POLL_MS = 60000;
  const PAGE_SIZE = 20;
  // A create repeated this soon after the last one answered counts as a double click.
  const REPEAT_MS = 3000;
  // content_url answers meaning "no signed URLs here" (not built, not routed, not allowed):
  // fall back to fetching the bytes with the key. 500 too: an unimplemented view says that.
  const NO_SIGNED_URLS = new Set([404, 405, 500, 501, 503]);
  const TERMINAL = new Set(["completed", "failed"]);

  const $ = (selector) => document.querySelector(selector);
  const el = {
    keyForm: $("#key-form"),
    key: $("#api-key"),
    forgetKey: $("#forget-key"),
    createForm: $("#create-form"),
    model: $("#model"),
    modelInfo: $("#model-info"),
    prompt: $("#prompt"),
    orientation: $("#orientation"),
    seconds: $("#seconds"),
    size: $("#size"),
    dropZone: $("#drop-zone"),
    reference: $("#reference"),
    referencePreview: $("#reference-preview"),
    referenceImage: $("#reference-image"),
    referenceName: $("#reference-name"),
    clearReference: $("#clear-reference"),
    create: $("#create"),
    alert: $("#alert"),
    watching: $("#watching"),
    status: $("#status"),
    progress: $("#progress"),
    videoError: $("#video-error"),
    player: $("#player"),
    videos: $("#videos"),
    videosEmpty: $("#videos-empty"),
    loadMore: $("#load-more"),
    refresh: $("#refresh"),
    itemTemplate: $("#video-item"),
  };

  const state = {
    models: [],
    referenceFile: null,
    referenceUrl: null,
    // One Idempotency-Key per distinct create: a retry of the same form reuses it.
    pendingCreate: null,
    watchToken: 0,
    watchTimer: null,
    polling: null, // the poll in flight, if any
    watchedId: null,
    playToken: 0,
    playerBlobs: [],
    listAfter: null,
    listToken: 0,
  };

  // --- talking to the API -------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, message, code) {
      super(message);
      this.status = status;
      this.code = code || null;
    }
  }

  function storedKey() {
    try {
      return sessionStorage.getItem(KEY_STORAGE) || "";
    } catch (_error) {
      return ""; // storage refused (privacy settings): the key then lasts as long as the field
    }
  }

  function currentKey() {
    if (AUTH !== "key") return "";
    return storedKey() || (el.key ? el.key.value.trim() : "");
  }

  // A fetch of `path` under the API base. Resolves to the Response when it is 2xx; otherwise
  // rejects with an ApiError carrying the envelope's message and code.
  async function api(path, { method = "GET", json, form, headers = {} } = {}) {
    const sent = new Headers(headers);
    const key = currentKey();
    if (key) sent.set("Authorization", `Bearer ${key}`);
    let payload;
    if (json !== undefined) {
      sent.set("Content-Type", "application/json");
      payload = JSON.stringify(json);
    } else if (form !== undefined) {
      payload = form; // the browser writes the multipart boundary itself
    }
    let response;
    try {
      response = await fetch(API + path, {
        method,
        headers: sent,
        body: payload,
        credentials: "same-origin",
        cache: "no-store",
      });
    } catch (error) {
      throw new ApiError(0, `Could not reach the proxy (${error.message}).`, "network_error");
    }
    if (!response.ok) throw await errorOf(response);
    return response;
  }

  async function errorOf(response) {
    let message = `${response.status} ${response.statusText}`.trim();
    let code = null;
    try {
      const answer = await response.json();
      if (answer && answer.error) {
        if (typeof answer.error.message === "string") message = answer.error.message;
        if (typeof answer.error.code === "string") code = answer.error.code;
      }
    } catch (_error) {
      // not JSON: the status line says enough
    }
    return new ApiError(response.status, message, code);
  }

  function newIdempotencyKey() {
    if (crypto.randomUUID) return crypto.randomUUID();
    // randomUUID needs a secure context; getRandomValues works on plain http too.
    const bytes = crypto.getRandomValues(new Uint8Array(16));
    return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  function videoPath(id, rest = "") {
    return `/videos/${encodeURIComponent(id)}${rest}`;
  }

  // --- the alert region ------------------------------------------------------------------

  function showAlert(message) {
    el.alert.textContent = message;
    el.alert.hidden = false;
  }

  function clearAlert() {
    el.alert.textContent = "";
    el.alert.hidden = true;
  }

  function report(error) {
    const text = error instanceof ApiError ? error.message : `Something went wrong: ${error}`;
    showAlert(error instanceof ApiError && error.status === 401 ? authHint(text) : text);
  }

  function authHint(text) {
    if (AUTH === "session") return `${text} Sign in to this site, then reload the page.`;
    return `${text} Enter a valid key above and choose "Use key".`;
  }

  // --- the key ---------------------------------------------------------------------------

  function setUpKey() {
    if (!el.keyForm) return;
    el.key.value = storedKey();
    el.keyForm.addEventListener("submit", (event) => {
      event.preventDefault();
      const key = el.key.value.trim();
      try {
        if (key) sessionStorage.setItem(KEY_STORAGE, key);
        else sessionStorage.removeItem(KEY_STORAGE);
      } catch (_error) {
        // storage refused: currentKey() reads the field instead
      }
      clearAlert();
      start();
    });
    el.forgetKey.addEventListener("click", () => {
      try {
        sessionStorage.removeItem(KEY_STORAGE);
      } catch (_error) {
        // nothing was stored
      }
      el.key.value = "";
      el.videos.replaceChildren();
      updateEmpty();
      el.loadMore.hidden = true;
    });
  }

  // --- models, orientation, length -------------------------------------------------------

  function orientationOf(size) {
    const [width, height] = String(size).split("x").map(Number);
    if (!width || !height) return null;
    if (width === height) return "square";
    return width > height ? "landscape" : "portrait";
  }

  function selectedModel() {
    return state.models.find((model) => model.id === el.model.value) || null;
  }

  function sizeFor(model, orientation) {
    const sizes = (model && model.sizes) || [];
    return sizes.find((size) => orientationOf(size) === orientation) || null;
  }

  function fillSelect(select, values, labelOf = String) {
    const previous = select.value;
    select.replaceChildren(...values.map((value) => new Option(labelOf(value), value)));
    if (values.includes(previous)) select.value = previous;
  }

  async function loadModels() {
    const answer = await (await api("/videos/models")).json();
    state.models = Array.isArray(answer.data) ? answer.data.filter((m) => m && m.id) : [];
    const ids = state.models.map((model) => String(model.id));
    fillSelect(el.model, ids);
    if (!ids.includes(el.model.value) && ids.length) {
      el.model.value = ids.includes("sora-2") ? "sora-2" : ids[0];
    }
    if (!ids.length) el.modelInfo.textContent = "This proxy offers no models.";
    modelChanged();
  }

  function modelChanged() {
    const model = selectedModel();
    if (!model) return;
    const sizes = (model.sizes || []).map(String);
    const seconds = (model.seconds || []).map(String);
    el.modelInfo.textContent =
      `Sizes: ${sizes.join(", ") || "the upstream's default"} · ` +
      `Seconds: ${seconds.join(", ") || "the upstream's default"}`;
    const orientations = ["landscape", "portrait", "square"].filter((o) => sizeFor(model, o));
    const names = { landscape: "Landscape", portrait: "Portrait", square: "Square" };
    if (orientations.length) {
      fillSelect(el.orientation, orientations, (o) => names[o]);
      el.orientation.disabled = false;
    } else {
      el.orientation.replaceChildren(new Option("Upstream default", ""));
      el.orientation.disabled = true;
    }
    if (seconds.length) {
      fillSelect(el.seconds, seconds);
      el.seconds.disabled = false;
    } else {
      el.seconds.replaceChildren(new Option("Upstream default", ""));
      el.seconds.disabled = true;
    }
    orientationChanged();
  }

  function orientationChanged() {
    el.size.textContent = sizeFor(selectedModel(), el.orientation.value) || "the upstream's default";
  }

  // --- the reference image ---------------------------------------------------------------

  function setReference(file) {
    if (state.referenceUrl) URL.revokeObjectURL(state.referenceUrl);
    state.referenceFile = null;
    state.referenceUrl = null;
    el.referencePreview.hidden = true;
    el.referenceImage.removeAttribute("src");
    el.referenceName.textContent = "";
    if (!file) {
      el.reference.value = "";
      return;
    }
    if (!/^image\/(png|jpeg|webp)$/.test(file.type)) {
      el.reference.value = "";
      showAlert(`"${file.name}" is not a PNG, JPEG or WebP image.`);
      return;
    }
    state.referenceFile = file;
    state.referenceUrl = URL.createObjectURL(file);
    el.referenceImage.src = state.referenceUrl;
    el.referenceName.textContent = `${file.name} (${Math.ceil(file.size / 1024)} KiB)`;
    el.referencePreview.hidden = false;
  }

  function setUpDropZone() {
    el.reference.addEventListener("change", () => setReference(el.reference.files[0] || null));
    el.clearReference.addEventListener("click", () => setReference(null));
    for (const type of ["dragenter", "dragover"]) {
      el.dropZone.addEventListener(type, (event) => {
        event.preventDefault();
        el.dropZone.classList.add("dragging");
      });
    }
    for (const type of ["dragleave", "dragend"]) {
      el.dropZone.addEventListener(type, () => el.dropZone.classList.remove("dragging"));
    }
    el.dropZone.addEventListener("drop", (event) => {
      event.preventDefault();
      el.dropZone.classList.remove("dragging");
      const file = event.dataTransfer && event.dataTransfer.files[0];
      if (file) {
        clearAlert();
        setReference(file);
      }
    });
    // A file dropped beside the zone must not navigate away from the page.
    for (const type of ["dragover", "drop"]) {
      window.addEventListener(type, (event) => event.preventDefault());
    }
  }

  // --- create ----------------------------------------------------------------------------

  function createFields() {
    const model = selectedModel();
    const fields = { prompt: el.prompt.value.trim(), model: el.model.value };
    const size = sizeFor(model, el.orientation.value);
    if (size) fields.size = size;
    if (el.seconds.value) fields.seconds = el.seconds.value;
    return fields;
  }

  async function createVideo(event) {
    event.preventDefault();
    clearAlert();
    const fields = createFields();
    if (!fields.prompt) {
      showAlert("Write a prompt first.");
      el.prompt.focus();
      return;
    }
    const file = state.referenceFile;
    const form = new FormData();
    for (const [name, value] of Object.entries(fields)) form.append(name, value);
    if (file) form.append("input_reference", file, file.name);
    // The same form sent again keeps its key, so it is not paid twice: a retry after an
    // error, or a second click just after the first answered (the proxy replays that
    // answer). Any change, or the same form a while later, is a new video.
    const fingerprint = JSON.stringify([fields, file && [file.name, file.size, file.lastModified]]);
    const previous = state.pendingCreate;
    const recent = previous && (previous.doneAt === null || Date.now() - previous.doneAt < REPEAT_MS);
    if (!recent || previous.fingerprint !== fingerprint) {
      state.pendingCreate = { fingerprint, key: newIdempotencyKey(), doneAt: null };
    }
    const pending = state.pendingCreate;
    el.create.disabled = true;
    try {
      const response = await api("/videos", {
        method: "POST",
        form,
        headers: { "Idempotency-Key": pending.key },
      });
      const video = await response.json();
      pending.doneAt = Date.now();
      watch(video, response);
      refreshList();
    } catch (error) {
      report(error);
    } finally {
      el.create.disabled = false;
    }
  }

  // --- watching one video ----------------------------------------------------------------

  function pollDelay(response) {
    const header = response && response.headers.get("openai-poll-after-ms");
    const value = header === null || header === undefined || header === "" ? NaN : Number(header);
    if (!Number.isFinite(value)) return DEFAULT_POLL_MS;
    return Math.min(Math.max(value, MIN_POLL_MS), MAX_POLL_MS);
  }

  function stopWatching() {
    state.watchToken += 1;
    clearTimeout(state.watchTimer);
    state.watchTimer = null;
  }

  // Show `video` and follow it until it is completed or failed; `response` is the answer it
  // came in (its poll-after hint decides when to ask again).
  function watch(video, response) {
    stopWatching();
    const token = state.watchToken;
    state.watchedId = video.id;
    clearPlayer();
    const prompt = typeof video.prompt === "string" && video.prompt ? ` · ${video.prompt}` : "";
    el.watching.textContent = `${video.id}${prompt}`;
    showStatus(video);
    updateItem(video);
    if (TERMINAL.has(video.status)) {
      finished(video);
      return;
    }
    schedulePoll(video.id, token, pollDelay(response));
  }

  async function poll(id, token) {
    let delay = DEFAULT_POLL_MS;
    try {
      const response = await api(videoPath(id));
      const video = await response.json();
      if (token !== state.watchToken) return;
      showStatus(video);
      updateItem(video);
      if (TERMINAL.has(video.status)) {
        finished(video);
        return;
      }
      delay = pollDelay(response);
    } catch (error) {
      if (token !== state.watchToken) return;
      report(error);
      if (error.status && error.status !== 429 && error.status < 500) return; // 401, 404: stop
      delay = 5000; // the proxy or its upstream is struggling: ask again, gently
    }
    schedulePoll(id, token, delay);
  }

  function schedulePoll(id, token, delay) {
    state.watchTimer = setTimeout(() => {
      state.polling = poll(id, token);
    }, delay);
  }

  function showStatus(video) {
    const progress = Number.isFinite(video.progress) ? Math.max(0, Math.min(100, video.progress)) : 0;
    const done = video.status === "completed" ? 100 : progress;
    el.progress.value = done;
    el.progress.textContent = `${done}%`;
    // The API's own words (queued, in_progress, completed, failed), as in the list.
    const label = String(video.status || "unknown");
    el.status.textContent = TERMINAL.has(video.status) ? label : `${label} · ${done}%`;
    el.status.dataset.status = String(video.status || "");
    if (video.status === "failed") {
      const error = video.error || {};
      const code = typeof error.code === "string" ? error.code : "failed";
      const message = typeof error.message === "string" ? error.message : "The video failed.";
      el.videoError.textContent = `${code}: ${message}`;
      el.videoError.hidden = false;
    } else {
      el.videoError.textContent = "";
      el.videoError.hidden = true;
    }
  }

  function finished(video) {
    if (video.status === "completed") play(video.id, { autoplay: true });
    refreshList();
  }

  // --- the player ------------------------------------------------------------------------

  function clearPlayer() {
    state.playToken += 1;
    el.player.pause();
    el.player.removeAttribute("src");
    el.player.removeAttribute("poster");
    el.player.load();
    for (const url of state.playerBlobs) URL.revokeObjectURL(url);
    state.playerBlobs = [];
  }

  // A URL the <video> can load with no header: a signed content URL when the proxy mints
  // them, else the bytes fetched with the key into a blob: URL.
  async function contentUrl(id, variant) {
    try {
      const response = await api(videoPath(id, "/content_url"), {
        method: "POST",
        json: { variant },
      });
      const answer = await response.json();
      const url = new URL(String(answer && answer.url), window.location.href);
      if (url.protocol !== "http:" && url.protocol !== "https:") {
        throw new ApiError(0, "The proxy answered a content URL that is not http(s).");
      }
      return url.href;
    } catch (error) {
      if (!(error instanceof ApiError) || !NO_SIGNED_URLS.has(error.status)) throw error;
    }
    const response = await api(videoPath(id, `/content?variant=${encodeURIComponent(variant)}`));
    const url = URL.createObjectURL(await response.blob());
    state.playerBlobs.push(url);
    return url;
  }

  async function play(id, { autoplay = false } = {}) {
    clearPlayer();
    const token = state.playToken;
    // The thumbnail is a nicety: the video plays without it.
    const [video, poster] = await Promise.allSettled([
      contentUrl(id, "video"),
      contentUrl(id, "thumbnail"),
    ]);
    if (token !== state.playToken) return; // another video was chosen meanwhile
    if (poster.status === "fulfilled") el.player.poster = poster.value;
    if (video.status === "rejected") {
      report(video.reason);
      return;
    }
    el.player.src = video.value;
    el.player.dataset.playing = id; // not data-video-id: that marks list items only
    el.player.load();
    if (autoplay) el.player.play().catch(() => {}); // a browser may want a click first
  }

  function setUpPlayer() {
    el.player.addEventListener("error", () => {
      if (el.player.getAttribute("src")) {
        showAlert("The video could not be played (its link may have expired: press Play again).");
      }
    });
  }

  // --- the list --------------------------------------------------------------------------

  function itemOf(id) {
    for (const item of el.videos.children) {
      if (item.dataset.videoId === id) return item;
    }
    return null;
  }

  function renderItem(video) {
    const item = el.itemTemplate.content.firstElementChild.cloneNode(true);
    item.dataset.videoId = video.id;
    fillItem(item, video);
    return item;
  }

  function fillItem(item, video) {
    const status = String(video.status || "unknown");
    const badge = item.querySelector(".video-status");
    badge.textContent =
      status === "in_progress" && Number.isFinite(video.progress)
        ? `in_progress ${video.progress}%`
        : status;
    badge.dataset.status = status;
    item.dataset.status = status;
    item.querySelector(".video-model").textContent = String(video.model || "");
    const meta = [video.size, video.seconds ? `${video.seconds} s` : null].filter(Boolean);
    item.querySelector(".video-meta").textContent = meta.join(" · ");
    const remixed = video.remixed_from_video_id ? ` (remix of ${video.remixed_from_video_id})` : "";
    item.querySelector(".video-prompt").textContent =
      (typeof video.prompt === "string" ? video.prompt : "") + remixed;
    item.querySelector(".video-id").textContent = video.id;
    const playButton = item.querySelector(".play");
    playButton.disabled = status !== "completed";
    playButton.setAttribute("aria-label", `Play ${video.id}`);
    item.querySelector(".remix").setAttribute("aria-label", `Remix ${video.id}`);
    item.querySelector(".delete").setAttribute("aria-label", `Delete ${video.id}`);
  }

  function updateItem(video) {
    const item = itemOf(video.id);
    if (item) fillItem(item, video);
  }

  function updateEmpty() {
    el.videosEmpty.hidden = el.videos.children.length > 0;
  }

  async function fetchPage(after) {
    const query = new URLSearchParams({ limit: String(PAGE_SIZE) });
    if (after) query.set("after", after);
    const page = await (await api(`/videos?${query}`)).json();
    const videos = Array.isArray(page.data) ? page.data.filter((v) => v && v.id) : [];
    const last = page.last_id || (videos.length ? videos[videos.length - 1].id : null);
    return { videos, more: Boolean(page.has_more) && Boolean(last), last };
  }

  async function refreshList() {
    const token = ++state.listToken;
    try {
      const page = await fetchPage(null);
      if (token !== state.listToken) return; // a newer refresh is on its way
      el.videos.replaceChildren(...page.videos.map(renderItem));
      state.listAfter = page.last;
      el.loadMore.hidden = !page.more;
    } catch (error) {
      if (token === state.listToken) report(error);
    }
    updateEmpty();
  }

  async function loadMore() {
    el.loadMore.disabled = true;
    const token = state.listToken;
    try {
      const page = await fetchPage(state.listAfter);
      if (token !== state.listToken) return;
      for (const video of page.videos) {
        if (!itemOf(video.id)) el.videos.append(renderItem(video));
      }
      state.listAfter = page.last;
      el.loadMore.hidden = !page.more;
    } catch (error) {
      report(error);
    } finally {
      el.loadMore.disabled = false;
      updateEmpty();
    }
  }

  async function deleteVideo(id, button) {
    button.disabled = true;
    if (state.watchedId === id) {
      // No poll of it may land after the delete (its 404 would be reported as an error).
      stopWatching();
      await state.polling;
    }
    try {
      await api(videoPath(id), { method: "DELETE" });
      const item = itemOf(id);
      if (item) item.remove();
      if (state.watchedId === id) {
        stopWatching();
        clearPlayer();
        state.watchedId = null;
        el.watching.textContent = `Deleted ${id}.`;
        el.status.textContent = "Idle";
        delete el.status.dataset.status;
        el.progress.value = 0;
      }
      updateEmpty();
      refreshList();
    } catch (error) {
      report(error);
      button.disabled = false;
    }
  }

  async function remixVideo(id, form) {
    const input = form.querySelector(".remix-prompt");
    const prompt = input.value.trim();
    if (!prompt) {
      input.focus();
      return;
    }
    const submit = form.querySelector(".remix-submit");
    submit.disabled = true;
    // One key per remix form: a double submit of it is one paid remix.
    form.dataset.idempotencyKey = form.dataset.idempotencyKey || newIdempotencyKey();
    try {
      const response = await api(videoPath(id, "/remix"), {
        method: "POST",
        json: { prompt },
        headers: { "Idempotency-Key": form.dataset.idempotencyKey },
      });
      const video = await response.json();
      form.hidden = true;
      input.value = "";
      delete form.dataset.idempotencyKey;
      watch(video, response);
      refreshList();
    } catch (error) {
      report(error);
    } finally {
      submit.disabled = false;
    }
  }

  function setUpList() {
    el.videos.addEventListener("click", (event) => {
      const button = event.target.closest("button");
      const item = button && button.closest("[data-video-id]");
      if (!item) return;
      const id = item.dataset.videoId;
      const form = item.querySelector(".remix-form");
      if (button.classList.contains("play")) {
        clearAlert();
        stopWatching();
        state.watchedId = id;
        el.watching.textContent = id;
        el.status.textContent = "completed";
        el.status.dataset.status = "completed";
        el.progress.value = 100;
        el.videoError.hidden = true;
        play(id, { autoplay: true });
      } else if (button.classList.contains("delete")) {
        clearAlert();
        deleteVideo(id, button);
      } else if (button.classList.contains("remix")) {
        form.hidden = !form.hidden;
        if (!form.hidden) form.querySelector(".remix-prompt").focus();
      } else if (button.classList.contains("remix-cancel")) {
        form.hidden = true;
      }
    });
    el.videos.addEventListener("submit", (event) => {
      const form = event.target.closest(".remix-form");
      if (!form) return;
      event.preventDefault();
      clearAlert();
      remixVideo(form.closest("[data-video-id]").dataset.videoId, form);
    });
    el.loadMore.addEventListener("click", loadMore);
    el.refresh.addEventListener("click", () => {
      clearAlert();
      refreshList();
    });
  }

  // --- start -----------------------------------------------------------------------------

  async function start() {
    if (AUTH === "key" && KEY_REQUIRED && !currentKey()) {
      el.modelInfo.textContent = "Enter your key above to see the models.";
      updateEmpty();
      return;
    }
    try {
      await loadModels();
    } catch (error) {
      el.modelInfo.textContent = "The models could not be loaded.";
      report(error);
      return;
    }
    await refreshList();
  }

  setUpKey();
  setUpDropZone();
  setUpPlayer();
  setUpList();
  el.model.addEventListener("change", modelChanged);
  el.orientation.addEventListener("change", orientationChanged);
  el.createForm.addEventListener("submit", createVideo);
  start();
})();
