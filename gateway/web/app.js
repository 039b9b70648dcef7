// The live avatar page: WebRTC to POST /v1/realtime/calls, events on the "oai-events" channel.
// Plain browser JavaScript, no build step, no third-party code. `window.talkgate` exposes the
// peer connection and what the page saw, for the browser test and for curious people.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const TEXT = window.TALKGATE_TEXT;
  const state = {
    lang: (navigator.language || "en").toLowerCase().startsWith("zh") ? "zh" : "en",
    pc: null,
    dc: null,
    mic: null,
    config: { auth_required: false, ice_servers: [] },
    turnStart: null, // performance.now() at the end of the person's turn
    lines: {}, // transcript <li> by item id / response id
    backends: {}, // response id -> backend event
    latencies: [],
    events: [],
    playing: null,
    errors: [],
  };
  window.talkgate = state;

  // ------------------------------------------------------------------ language

  function t(key) {
    return (TEXT[state.lang] && TEXT[state.lang][key]) || TEXT.en[key] || key;
  }

  function applyLanguage() {
    document.documentElement.lang = state.lang === "zh" ? "zh-CN" : "en";
    document.querySelectorAll("[data-i18n]").forEach((el) => (el.textContent = t(el.dataset.i18n)));
    document.querySelectorAll("[data-i18n-aria]").forEach((el) => el.setAttribute("aria-label", t(el.dataset.i18nAria)));
    $("lang-en").setAttribute("aria-pressed", String(state.lang === "en"));
    $("lang-zh").setAttribute("aria-pressed", String(state.lang === "zh"));
    setCallState(state.callState || "stateIdle");
  }

  $("lang-en").addEventListener("click", () => { state.lang = "en"; applyLanguage(); });
  $("lang-zh").addEventListener("click", () => { state.lang = "zh"; applyLanguage(); });

  // ------------------------------------------------------------------ messages and state

  function showMessage(text, kind) {
    const el = $("message");
    el.textContent = text;
    el.className = "message " + (kind || "error");
    el.hidden = !text;
    if (text && kind !== "info") state.errors.push(text);
  }

  function setCallState(key) {
    state.callState = key;
    const el = $("call-state");
    el.textContent = t(key);
    el.dataset.state = key;
  }

  // ------------------------------------------------------------------ key and avatars

  const KEY_STORE = "talkgate.apiKey";
  const AVATAR_STORE = "talkgate.avatars";
  $("api-key").value = localStorage.getItem(KEY_STORE) || "";
  $("api-key").addEventListener("change", () => localStorage.setItem(KEY_STORE, $("api-key").value.trim()));

  function authHeaders() {
    const key = $("api-key").value.trim();
    return key ? { Authorization: "Bearer " + key } : {};
  }

  function savedAvatars() {
    try { return JSON.parse(localStorage.getItem(AVATAR_STORE) || "[]"); } catch (e) { return []; }
  }

  function renderAvatarChoices(selected) {
    const select = $("avatar");
    while (select.options.length > 1) select.remove(1);
    savedAvatars().forEach((a, i) => {
      const option = document.createElement("option");
      option.value = a.id;
      option.textContent = (a.name || "portrait " + (i + 1)) + " (" + a.id.slice(3, 11) + ")";
      select.appendChild(option);
    });
    if (selected) select.value = selected;
  }

  async function errorText(response) {
    try {
      const body = await response.json();
      return (body.error && body.error.message) || response.statusText;
    } catch (e) {
      return response.status + " " + response.statusText;
    }
  }

  $("portrait-file").addEventListener("change", async (event) => {
    const file = event.target.files[0];
    if (!file) return;
    showMessage(t("uploading"), "info");
    const form = new FormData();
    form.append("image", file);
    try {
      const response = await fetch("/v1/avatars", { method: "POST", headers: authHeaders(), body: form });
      if (!response.ok) {
        const prefix = response.status === 401 || response.status === 403 ? t("keyRefused") : t("uploadFailed");
        showMessage(prefix + (await errorText(response)));
        return;
      }
      const avatar = await response.json();
      const list = savedAvatars().filter((a) => a.id !== avatar.id);
      list.unshift({ id: avatar.id, name: file.name.slice(0, 40) });
      localStorage.setItem(AVATAR_STORE, JSON.stringify(list.slice(0, 20)));
      renderAvatarChoices(avatar.id);
      showMessage(t("uploaded"), "info");
    } catch (e) {
      showMessage(t("connectFailed") + e.message);
    }
  });

  // ------------------------------------------------------------------ transcript

  function line(id, who, cls) {
    let li = state.lines[id];
    if (!li) {
      li = document.createElement("li");
      li.className = cls;
      const name = document.createElement("span");
      name.className = "who";
      name.textContent = who + ": ";
      const text = document.createElement("span");
      text.className = "text";
      const meta = document.createElement("span");
      meta.className = "meta";
      li.append(name, text, meta);
      $("transcript").appendChild(li);
      state.lines[id] = li;
    }
    return li;
  }

  function scrollDown() {
    const box = $("transcript");
    box.scrollTop = box.scrollHeight;
  }

  function userText(id, text) {
    line(id, t("you"), "user").querySelector(".text").textContent = text;
    scrollDown();
  }

  function assistantDelta(responseId, delta) {
    const li = line(responseId, t("avatar"), "assistant");
    li.querySelector(".text").textContent += delta;
    scrollDown();
  }

  function assistantMeta(responseId) {
    const li = line(responseId, t("avatar"), "assistant");
    const parts = [];
    const backend = state.backends[responseId];
    if (backend) {
      const label = { cloud: t("backendCloud"), local: t("backendLocal"), fallback: t("backendFallback") }[backend.backend];
      const local = backend.provider && backend.provider.startsWith("local:") ? " · " + t("backendLocal") : "";
      parts.push(t("answeredBy") + " " + label + local + " (" + backend.provider + ")");
    }
    if (li.dataset.latency) parts.push(t("latency") + " " + li.dataset.latency + " " + t("ms"));
    if (li.dataset.interrupted) parts.push(t("interrupted"));
    li.querySelector(".meta").textContent = parts.length ? " — " + parts.join(" · ") : "";
    li.dataset.backend = backend ? backend.backend : "";
    li.dataset.provider = backend ? backend.provider : "";
  }

  // ------------------------------------------------------------------ server events

  function onEvent(event) {
    state.events.push({ type: event.type, at: performance.now() });
    switch (event.type) {
      case "input_audio_buffer.speech_started":
        userText(event.item_id, "…");
        setCallState("stateListening");
        break;
      case "input_audio_buffer.speech_stopped":
        state.turnStart = performance.now();
        setCallState("stateThinking");
        break;
      case "conversation.item.input_audio_transcription.completed":
        userText(event.item_id, event.transcript || "…");
        break;
      case "conversation.item.added":
        if (event.item && event.item.role === "user" && event.item.content && event.item.content[0]
            && event.item.content[0].type === "input_text") {
          userText(event.item.id, event.item.content[0].text);
        }
        break;
      case "response.created":
        state.activeResponse = event.response.id;
        line(event.response.id, t("avatar"), "assistant");
        break;
      case "response.output_audio_transcript.delta":
      case "response.output_text.delta":
        assistantDelta(event.response_id, event.delta);
        break;
      case "talkgate.response.backend":
        state.backends[event.response_id] = event;
        assistantMeta(event.response_id);
        break;
      case "output_audio_buffer.started": {
        setCallState("stateSpeaking");
        state.playing = event.response_id;
        if (state.turnStart !== null && event.response_id) {
          const ms = Math.round(performance.now() - state.turnStart);
          state.latencies.push(ms);
          line(event.response_id, t("avatar"), "assistant").dataset.latency = String(ms);
          assistantMeta(event.response_id);
          state.turnStart = null;
        }
        break;
      }
      case "output_audio_buffer.stopped":
      case "output_audio_buffer.cleared":
        state.playing = null;
        setCallState("stateListening");
        break;
      case "response.done":
        state.activeResponse = null;
        if (event.response && event.response.status === "cancelled") {
          const li = state.lines[event.response.id];
          if (li) { li.dataset.interrupted = "1"; assistantMeta(event.response.id); }
        }
        if (event.response && event.response.status === "failed") {
          const error = event.response.status_details && event.response.status_details.error;
          showMessage(t("serverError") + (error ? error.message : "failed"));
        }
        break;
      case "error":
        showMessage(t("serverError") + (event.error && event.error.message));
        break;
      default:
        break;
    }
  }

  function sendEvent(event) {
    if (state.dc && state.dc.readyState === "open") state.dc.send(JSON.stringify(event));
  }

  // ------------------------------------------------------------------ microphone

  async function openMicrophone() {
    try {
      return await navigator.mediaDevices.getUserMedia({
        audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true },
      });
    } catch (e) {
      showMessage(t("micRefused") + " (" + e.name + ")");
      return null;
    }
  }

  function meter(stream) {
    const ctx = new (window.AudioContext || window.webkitAudioContext)();
    const analyser = ctx.createAnalyser();
    analyser.fftSize = 512;
    ctx.createMediaStreamSource(stream).connect(analyser);
    const data = new Float32Array(analyser.fftSize);
    state.micLevels = [];
    const tick = () => {
      if (!state.pc) { ctx.close(); return; }
      analyser.getFloatTimeDomainData(data);
      let sum = 0;
      for (const v of data) sum += v * v;
      const level = Math.min(1, Math.sqrt(sum / data.length) * 4);
      $("mic-level").value = level;
      state.micLevel = level;
      requestAnimationFrame(tick);
    };
    tick();
  }

  // ------------------------------------------------------------------ the call

  function waitForIce(pc, ms) {
    if (pc.iceGatheringState === "complete") return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => { if (pc.iceGatheringState === "complete") { clearTimeout(timer); resolve(); } };
      const timer = setTimeout(resolve, ms);
      pc.addEventListener("icegatheringstatechange", done);
    });
  }

  async function connect() {
    showMessage("", "info");
    $("connect").disabled = true;
    setCallState("stateConnecting");
    const avatarId = $("avatar").value;
    const mic = await openMicrophone();
    state.mic = mic;
    const pc = new RTCPeerConnection({ iceServers: state.config.ice_servers || [] });
    state.pc = pc;
    const dc = pc.createDataChannel("oai-events");
    state.dc = dc;
    dc.addEventListener("message", (m) => {
      try { onEvent(JSON.parse(m.data)); } catch (e) { /* not an event */ }
    });
    dc.addEventListener("open", () => {
      $("question").disabled = false;
      $("send").disabled = false;
      setCallState("stateListening");
    });
    if (mic) {
      mic.getTracks().forEach((track) => pc.addTrack(track, mic));
      meter(mic);
    } else {
      pc.addTransceiver("audio", { direction: "recvonly" });
    }
    if (avatarId) pc.addTransceiver("video", { direction: "recvonly" });
    const remote = new MediaStream();
    const video = $("remote");
    pc.addEventListener("track", (e) => {
      remote.addTrack(e.track);
      video.srcObject = remote;
      $("video-empty").hidden = true;
      video.play().catch(() => {});
    });
    pc.addEventListener("connectionstatechange", () => {
      if (pc.connectionState === "failed") { showMessage(t("iceFailed")); hangup(); }
    });
    try {
      await pc.setLocalDescription(await pc.createOffer());
      await waitForIce(pc, 3000);
      const query = avatarId ? "?avatar_id=" + encodeURIComponent(avatarId) : "";
      const response = await fetch("/v1/realtime/calls" + query, {
        method: "POST",
        headers: Object.assign({ "Content-Type": "application/sdp" }, authHeaders()),
        body: pc.localDescription.sdp,
      });
      if (!response.ok) {
        const reason = await errorText(response);
        const prefix = response.status === 401 || response.status === 403 ? t("keyRefused") : t("connectFailed");
        throw new Error(prefix + reason);
      }
      state.callUrl = response.headers.get("location");
      await pc.setRemoteDescription({ type: "answer", sdp: await response.text() });
      $("hangup").disabled = false;
    } catch (e) {
      showMessage(e.message.startsWith(t("keyRefused")) || e.message.startsWith(t("connectFailed"))
        ? e.message : t("connectFailed") + e.message);
      hangup();
    }
  }

  function hangup() {
    if (state.pc) state.pc.close();
    if (state.mic) state.mic.getTracks().forEach((track) => track.stop());
    state.pc = null;
    state.dc = null;
    state.mic = null;
    $("connect").disabled = false;
    $("hangup").disabled = true;
    $("question").disabled = true;
    $("send").disabled = true;
    $("mic-level").value = 0;
    setCallState("stateClosed");
  }

  $("setup").addEventListener("submit", (e) => { e.preventDefault(); connect(); });
  $("hangup").addEventListener("click", hangup);

  $("ask").addEventListener("submit", (e) => {
    e.preventDefault();
    const text = $("question").value.trim();
    if (!text) return;
    if (state.activeResponse) sendEvent({ type: "response.cancel" });
    if (state.playing) sendEvent({ type: "output_audio_buffer.clear" });
    sendEvent({
      type: "conversation.item.create",
      item: { type: "message", role: "user", content: [{ type: "input_text", text: text }] },
    });
    sendEvent({ type: "response.create" });
    state.turnStart = performance.now();
    setCallState("stateThinking");
    $("question").value = "";
  });

  // ------------------------------------------------------------------ start

  fetch("/demo/config.json")
    .then((r) => r.json())
    .then((config) => {
      state.config = config;
      $("key-field").hidden = !config.auth_required && !$("api-key").value;
    })
    .catch(() => {});
  renderAvatarChoices(new URLSearchParams(location.search).get("avatar_id") || (savedAvatars()[0] || {}).id);
  const preset = new URLSearchParams(location.search).get("avatar_id");
  if (preset && !savedAvatars().some((a) => a.id === preset)) {
    localStorage.setItem(AVATAR_STORE, JSON.stringify([{ id: preset, name: "portrait" }].concat(savedAvatars())));
    renderAvatarChoices(preset);
  }
  applyLanguage();
})();
