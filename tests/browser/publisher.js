// A VDO.Ninja-app-like publisher for the browser tests (plain JS, no build step).
//
// Protocol: /work/shared/docs/vdo-ninja-protocol.md (sections 2-6).  What it does,
// like the VDO.Ninja browser app:
//  * hashes the room id and suffixes the stream id with SHA-256(password + salt);
//  * joins the room with its streamID (plus `seed` on fan-out relays, which route
//    `play` by seed) and always sends `from` (our local server is not official);
//  * for each viewer (`offerSDP`, a `play` for our stream, or, on relays, answering a
//    newcomer's `joinroom` with a `seed` addressed to it) creates one peer connection
//    with a `sendChannel` data channel and sends a data-channel-only first offer over
//    the WebSocket, trickling batched candidates (`type: "local"`);
//  * when the viewer's media request arrives on the data channel, adds audio and video
//    (codec preferences: `preferVideoCodec`, else the `codec` parameter, first) and
//    renegotiates over the data channel; later candidates go over the data channel;
//    with `honorprefer=0` it ignores `preferVideoCodec` and the `codec` parameter and
//    offers Chromium's default codec order (VP8 first), like a publisher that knows no
//    codec preferences: then only the viewer's answer order can pick another codec;
//  * answers pings, pings itself, handles `bye`, sends `bye` on stop/unload;
//  * encrypts description/candidates/candidate with AES-256-CBC when a password is set.
//  * honours the viewer's `{"bitrate": kbps}` data-channel request like the VDO.Ninja app:
//    maxBitrate = kbps * 1000 on every encoding of its video senders (setParameters), kept
//    across renegotiations; the last value is in publisherInfo.requestedBitrate (kbps).
// Test hooks: window.publisherState, window.publisherInfo, window.publisherStats(),
// window.stopPublisher(), window.setVideoScale(f), window.applyVideoConstraints(c).
// With `report=<name>` (browsers without a driver, e.g. Firefox) the page also POSTs
// {state, info, stats, ...} to /report/<name> every `reportms` ms and on every state
// change, and runs the commands in the reply: {"command": "stop"} (then a last report
// with `final`: the stats taken before the bye), {"command": "join"} (with
// `joinon=command` the page opens the camera, reports state "media" and joins the room
// only then) and {"command": "call", "id", "fn", "args"} (window[fn](...args); the
// result comes back in the next report's `results`).
"use strict";

(function () {
  const DEFAULT_PASSWORD = "someEncryptionKey123";
  const ENCRYPTED_FIELDS = ["description", "candidates", "candidate"];
  const PING_INTERVAL_MS = 3000;
  const CANDIDATE_BATCH_MS = 40;

  const params = new URLSearchParams(location.search);
  const cfg = {
    ws: params.get("ws"),
    room: params.get("room"),
    streamid: params.get("streamid") || randomId(8),
    password: resolvePassword(params.get("password")),
    salt: params.get("salt") || "vdo.ninja",
    codec: (params.get("codec") || "vp8").toLowerCase(),
    width: parseInt(params.get("width") || "640", 10),
    height: parseInt(params.get("height") || "360", 10),
    framerate: parseInt(params.get("framerate") || "30", 10),
    onjoin: params.get("onjoin") || "seed", // relay newcomer: "seed" (Raspberry-Ninja-like) or "offer" (unsolicited)
    trace: params.get("trace") === "1", // record when audio and video start leaving
    // "0": ignore the viewer's preferVideoCodec (and `codec`); offer the browser's default order.
    honorprefer: !["0", "false", "off", "no"].includes((params.get("honorprefer") || "1").toLowerCase()),
    report: params.get("report"), // name to POST reports to (/report/<name>); none: no reports
    reportms: parseInt(params.get("reportms") || "250", 10),
    joinon: params.get("joinon") || "load", // "command": join the room on {"command": "join"} (needs report)
  };

  const info = {
    from: randomId(12),
    streamWire: null,
    roomWire: null,
    codec: cfg.codec,
    honorprefer: cfg.honorprefer,
    password: cfg.password !== null,
    encryptedIn: 0, // received messages whose description/candidates were encrypted
    plainIn: 0, // ... and those that were not
    errors: [],
    closedSessions: [],
    requestedBitrate: null, // kbps of the last {"bitrate": kbps} a viewer asked for
    bitrateRequests: [], // every such request: {session, kbps}
    userAgent: navigator.userAgent,
  };
  window.publisherInfo = info;
  window.publisherState = "starting";

  let ws = null;
  let wsQueue = [];
  let wsChain = Promise.resolve();
  let rxChain = Promise.resolve();
  let aesKey = null; // CryptoKey when a password is set
  let localStream = null;
  const sessions = new Map(); // session id -> Session
  let stopped = false;

  function log(...args) {
    console.log("[publisher " + cfg.streamid + "]", ...args);
  }

  function fail(message) {
    info.errors.push(String(message));
    console.error("[publisher " + cfg.streamid + "] " + message);
  }

  function resolvePassword(value) {
    if (value === null) return DEFAULT_PASSWORD;
    const v = value.trim().toLowerCase();
    if (v === "" || v === "true" || v === "1" || v === "on") return DEFAULT_PASSWORD;
    if (v === "false" || v === "0" || v === "off") return null;
    return value;
  }

  function randomId(n) {
    const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    const bytes = crypto.getRandomValues(new Uint8Array(n));
    let out = "";
    for (const b of bytes) out += alphabet[b % alphabet.length];
    return out;
  }

  // ------------------------------------------------------------------ hashing / crypto

  function toHex(buffer) {
    return Array.from(new Uint8Array(buffer), (b) => b.toString(16).padStart(2, "0")).join("");
  }

  function fromHex(hex) {
    if (typeof hex !== "string" || hex.length % 2 !== 0 || /[^0-9a-fA-F]/.test(hex)) {
      throw new Error("not a hex string");
    }
    const out = new Uint8Array(hex.length / 2);
    for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.substr(i * 2, 2), 16);
    return out;
  }

  async function sha256(text) {
    return crypto.subtle.digest("SHA-256", new TextEncoder().encode(text));
  }

  // hash(s, n): the first n/2 bytes of SHA-256(UTF-8 s), lower-case hex (§5).
  async function hashHex(text, length) {
    return toHex(await sha256(text)).slice(0, length);
  }

  async function setupIdentity() {
    if (cfg.password === null) {
      info.streamWire = cfg.streamid;
      info.roomWire = cfg.room;
      return;
    }
    info.streamWire = cfg.streamid + (await hashHex(cfg.password + cfg.salt, 6));
    info.roomWire = cfg.room ? await hashHex(cfg.room + cfg.password + cfg.salt, 16) : null;
    aesKey = await crypto.subtle.importKey("raw", await sha256(cfg.password + cfg.salt), { name: "AES-CBC" }, false, [
      "encrypt",
      "decrypt",
    ]);
  }

  // AES-256-CBC (WebCrypto pads with PKCS#7), one random IV per message, hex out.
  async function encryptMessage(msg) {
    if (!aesKey) return msg;
    const fields = ENCRYPTED_FIELDS.filter((f) => f in msg);
    if (!fields.length) return msg;
    const out = Object.assign({}, msg);
    const iv = crypto.getRandomValues(new Uint8Array(16));
    for (const field of fields) {
      const plain = new TextEncoder().encode(JSON.stringify(out[field]));
      out[field] = toHex(await crypto.subtle.encrypt({ name: "AES-CBC", iv }, aesKey, plain));
    }
    out.vector = toHex(iv);
    return out;
  }

  async function decryptMessage(msg) {
    // Tests check that a password really encrypts what the viewer sends.
    if (ENCRYPTED_FIELDS.some((f) => f in msg)) {
      if (msg.vector === undefined) info.plainIn++;
      else info.encryptedIn++;
    }
    if (msg.vector === undefined) return msg;
    if (!aesKey) throw new Error("encrypted message but no password is set");
    const iv = fromHex(msg.vector);
    const out = Object.assign({}, msg);
    delete out.vector;
    for (const field of ENCRYPTED_FIELDS) {
      if (typeof out[field] === "string") {
        const plain = await crypto.subtle.decrypt({ name: "AES-CBC", iv }, aesKey, fromHex(out[field]));
        out[field] = JSON.parse(new TextDecoder().decode(plain));
      }
    }
    return out;
  }

  function normaliseCandidates(msg) {
    let cands = msg.candidates;
    if (cands === undefined && msg.candidate !== undefined) cands = msg.candidate ? [msg.candidate] : [];
    if (cands && !Array.isArray(cands)) cands = [cands];
    return (cands || []).filter((c) => c && typeof c === "object");
  }

  // ------------------------------------------------------------------ WebSocket

  function wsSend(msg) {
    msg = Object.assign({}, msg, { from: info.from }); // our server is never an official host
    // Chained so that messages leave in order (encryption is asynchronous).
    wsChain = wsChain
      .then(() => encryptMessage(msg))
      .then((out) => {
        const text = JSON.stringify(out);
        if (ws && ws.readyState === WebSocket.OPEN) ws.send(text);
        else wsQueue.push(text);
      })
      .catch((err) => fail("encrypt failed: " + err));
  }

  function connectSocket() {
    ws = new WebSocket(cfg.ws);
    ws.onopen = () => {
      log("websocket open; joining room", info.roomWire, "as", info.streamWire);
      const join = { request: "joinroom", roomid: info.roomWire, streamID: info.streamWire };
      wsSend(join);
      // Fan-out relays route `play` by `seed`; the official server ignores the repeat.
      wsSend({ request: "seed", streamID: info.streamWire });
      for (const text of wsQueue) ws.send(text);
      wsQueue = [];
      info.joined = true;
      updateState();
    };
    ws.onmessage = (event) => {
      let msg;
      try {
        msg = JSON.parse(event.data);
      } catch (err) {
        fail("bad JSON from server: " + err);
        return;
      }
      // Handled one at a time, in order (an answer before its candidates).
      rxChain = rxChain.then(async () => {
        let plain;
        try {
          plain = await decryptMessage(msg);
        } catch (err) {
          fail("could not decrypt a server message: " + err);
          return;
        }
        await onSignal(plain).catch((err) => fail("handling a server message failed: " + err));
      });
    };
    ws.onerror = () => fail("websocket error");
    ws.onclose = () => {
      info.joined = false;
      if (!stopped) fail("websocket closed");
      updateState();
    };
  }

  function peerOf(msg) {
    const peer = msg.from || msg.UUID;
    return peer === undefined || peer === null ? null : String(peer);
  }

  async function onSignal(msg) {
    const request = msg.request;
    const peer = peerOf(msg);
    if (request === "alert" || msg.error) {
      fail("server: " + (msg.message || msg.error));
      return;
    }
    if (stopped) return;
    if (request === "offerSDP" && peer) {
      await startSession(peer); // official server: a viewer wants our stream
    } else if (request === "play" && peer && msg.from) {
      if (msg.streamID === info.streamWire || msg.streamID === cfg.streamid) await startSession(peer);
    } else if (request === "joinroom" && msg.from && peer) {
      // A newcomer on a fan-out relay (no listing there): announce ourselves to it.
      if (msg.roomid && info.roomWire && String(msg.roomid).toLowerCase() !== info.roomWire.toLowerCase()) return;
      if (cfg.onjoin === "offer") await startSession(peer);
      else wsSend({ request: "seed", streamID: info.streamWire, UUID: peer });
    } else if ((request === "bye" || request === "hangup" || request === "cleanup") && peer) {
      for (const s of Array.from(sessions.values())) if (s.viewer === peer) s.close(request, false);
    } else if (peer && msg.session) {
      const s = sessions.get(String(msg.session));
      if (!s || s.viewer !== peer) return;
      if (msg.description) await s.onDescription(msg.description);
      const cands = normaliseCandidates(msg);
      if (cands.length) await s.addCandidates(cands);
    }
  }

  // ------------------------------------------------------------------ sessions

  class Session {
    constructor(viewer) {
      this.viewer = viewer;
      this.id = randomId(8);
      this.pc = new RTCPeerConnection({ iceServers: [] });
      this.dc = this.pc.createDataChannel("sendChannel");
      this.media = false; // audio/video added and negotiated
      this.mediaRequested = false;
      this.pendingCandidates = [];
      this.candidateTimer = null;
      this.pingTimer = null;
      this.pings = 0;
      this.pongs = 0;
      this.closed = false;
      this.dcChain = Promise.resolve(); // keeps data-channel messages in order
      this.videoSender = null;
      this.audioSender = null;
      this.negotiatedVideo = null;
      this.mediaRequest = null; // the viewer's media request, as received
      this.offerVideo = null; // m=video of our media offer: {mline, codecs: ["PT name/clock fmtp", ...]}
      this.answerVideo = null; // ... and of the viewer's answer to it
      this.bitrateKbps = null; // the viewer's {"bitrate": kbps} request, applied to every video sender
      this.paramsChain = Promise.resolve(); // keeps getParameters/setParameters pairs apart
      this.pc.onicecandidate = (e) => this.onLocalCandidate(e.candidate);
      this.pc.onconnectionstatechange = () => {
        const st = this.pc.connectionState;
        log("session", this.id, "connection", st);
        if (st === "failed" || st === "closed") this.close("connection " + st, false);
        updateState();
      };
      this.dc.onopen = () => {
        log("session", this.id, "data channel open");
        this.pingTimer = setInterval(() => this.dcSend({ ping: String(Date.now()) }) && this.pings++, PING_INTERVAL_MS);
        updateState();
      };
      this.dc.onclose = () => this.close("data channel closed", false);
      this.rxChain = Promise.resolve();
      this.dc.onmessage = (e) => {
        this.rxChain = this.rxChain
          .then(() => this.onChannelMessage(e.data))
          .catch((err) => fail("session " + this.id + ": data-channel handler failed: " + err));
      };
    }

    async start() {
      // Data-channel-only first offer over the WebSocket (like the VDO.Ninja app).
      const offer = await this.pc.createOffer();
      await this.pc.setLocalDescription(offer);
      wsSend({
        UUID: this.viewer,
        session: this.id,
        streamID: info.streamWire,
        description: { type: this.pc.localDescription.type, sdp: this.pc.localDescription.sdp },
      });
    }

    dcOpen() {
      return this.dc.readyState === "open";
    }

    dcSend(msg) {
      if (!this.dcOpen()) return false;
      this.dcChain = this.dcChain
        .then(() => encryptMessage(msg))
        .then((out) => {
          if (this.dcOpen()) this.dc.send(JSON.stringify(out));
        })
        .catch((err) => fail("encrypt failed: " + err));
      return true;
    }

    onLocalCandidate(cand) {
      if (cand && cand.candidate) {
        this.pendingCandidates.push({
          candidate: cand.candidate,
          sdpMid: cand.sdpMid,
          sdpMLineIndex: cand.sdpMLineIndex,
          usernameFragment: cand.usernameFragment,
        });
      }
      // Batch: flush shortly after the first candidate, or now at end of gathering.
      if (!cand) this.flushCandidates();
      else if (!this.candidateTimer) this.candidateTimer = setTimeout(() => this.flushCandidates(), CANDIDATE_BATCH_MS);
    }

    flushCandidates() {
      clearTimeout(this.candidateTimer);
      this.candidateTimer = null;
      if (!this.pendingCandidates.length || this.closed) return;
      const batch = this.pendingCandidates;
      this.pendingCandidates = [];
      const msg = { UUID: this.viewer, session: this.id, type: "local", candidates: batch };
      if (this.dcOpen()) this.dcSend({ candidates: batch, session: this.id, type: "local" });
      else wsSend(msg);
    }

    async onDescription(desc) {
      if (this.closed) return;
      if (desc.type !== "answer") {
        fail("session " + this.id + ": unexpected " + desc.type + " from the viewer");
        return;
      }
      try {
        await this.pc.setRemoteDescription(desc);
      } catch (err) {
        fail("session " + this.id + ": setRemoteDescription(answer) failed: " + err);
        return;
      }
      if (this.mediaRequested && !this.media) {
        this.media = true;
        if (cfg.trace) this.traceStart();
        this.negotiatedVideo = negotiatedVideoCodec(desc.sdp);
        this.answerVideo = videoSection(desc.sdp);
        log("session", this.id, "media negotiated, video", JSON.stringify(this.negotiatedVideo));
      }
      // A renegotiation must not lose the viewer's bitrate cap.
      if (this.bitrateKbps !== null) await this.applyBitrate();
      updateState();
    }

    async addCandidates(cands) {
      for (const c of cands) {
        if (!c.candidate) continue;
        try {
          await this.pc.addIceCandidate({
            candidate: c.candidate,
            sdpMid: c.sdpMid === undefined ? null : c.sdpMid,
            sdpMLineIndex: c.sdpMLineIndex === undefined ? null : c.sdpMLineIndex,
            usernameFragment: c.usernameFragment === undefined ? null : c.usernameFragment,
          });
        } catch (err) {
          console.warn("addIceCandidate failed", err, c);
        }
      }
    }

    async onChannelMessage(data) {
      let msg;
      try {
        msg = await decryptMessage(JSON.parse(data));
      } catch (err) {
        fail("session " + this.id + ": bad data-channel message: " + err);
        return;
      }
      if ("ping" in msg) {
        this.dcSend({ pong: msg.ping });
        return;
      }
      if ("pong" in msg) {
        this.pongs++;
        return;
      }
      if (msg.bye) {
        this.close("bye", false);
        return;
      }
      if (msg.description) await this.onDescription(msg.description);
      const cands = normaliseCandidates(msg);
      if (cands.length) await this.addCandidates(cands);
      if (("audio" in msg || "video" in msg) && !this.mediaRequested) await this.onMediaRequest(msg);
      if ("bitrate" in msg) await this.onBitrateRequest(msg.bitrate);
    }

    // {"bitrate": kbps} from the viewer (the VDO.Ninja app's way of capping a sender):
    // maxBitrate = kbps * 1000 on the encodings of every video sender; 0 or less lifts the cap.
    async onBitrateRequest(value) {
      const kbps = Number(value);
      if (!Number.isFinite(kbps)) {
        fail("session " + this.id + ": bad bitrate request " + JSON.stringify(value));
        return;
      }
      log("session", this.id, "bitrate request", kbps, "kbps");
      this.bitrateKbps = kbps;
      info.requestedBitrate = kbps;
      info.bitrateRequests.push({ session: this.id, kbps });
      await this.applyBitrate();
    }

    videoSenders() {
      return this.pc.getSenders().filter((s) => s.track && s.track.kind === "video");
    }

    // getParameters -> mutate(encoding) -> setParameters on every video sender, one at a time.
    updateVideoEncodings(mutate, what) {
      const run = async () => {
        for (const sender of this.videoSenders()) {
          const p = sender.getParameters();
          if (!p.encodings || !p.encodings.length) p.encodings = [{}];
          for (const encoding of p.encodings) mutate(encoding);
          try {
            await sender.setParameters(p);
          } catch (err) {
            if (!this.closed) fail("session " + this.id + ": setParameters (" + what + ") failed: " + err);
          }
        }
      };
      this.paramsChain = this.paramsChain.then(run, run);
      return this.paramsChain;
    }

    applyBitrate() {
      if (this.bitrateKbps === null || this.closed) return Promise.resolve();
      const kbps = this.bitrateKbps;
      return this.updateVideoEncodings((e) => {
        if (kbps > 0) e.maxBitrate = Math.round(kbps * 1000);
        else delete e.maxBitrate;
      }, "maxBitrate " + kbps + " kbps");
    }

    async onMediaRequest(req) {
      this.mediaRequested = true;
      const wantAudio = req.audio !== false;
      const wantVideo = req.video !== false;
      this.mediaRequest = req;
      // honorprefer=0: no codec preferences at all (the browser's default order).
      const codec = cfg.honorprefer ? (req.preferVideoCodec || cfg.codec || "").toLowerCase() : "";
      log("session", this.id, "media request", JSON.stringify(req));
      if (wantAudio) {
        for (const track of localStream.getAudioTracks()) this.audioSender = this.pc.addTrack(track, localStream);
      }
      if (wantVideo) {
        for (const track of localStream.getVideoTracks()) {
          this.videoSender = this.pc.addTrack(track, localStream);
          const transceiver = this.pc.getTransceivers().find((t) => t.sender === this.videoSender);
          setVideoCodecPreference(transceiver, codec);
        }
        if (this.bitrateKbps !== null) await this.applyBitrate();
      }
      if (!wantAudio && !wantVideo) return;
      // Renegotiation offer over the data channel; the answer comes back on it too.
      const offer = await this.pc.createOffer();
      await this.pc.setLocalDescription(offer);
      this.offerVideo = videoSection(this.pc.localDescription.sdp);
      this.dcSend({ description: { type: this.pc.localDescription.type, sdp: this.pc.localDescription.sdp }, session: this.id });
    }

    close(reason, sendBye) {
      if (this.closed) return;
      this.closed = true;
      log("session", this.id, "closing:", reason);
      if (sendBye && this.dcOpen()) {
        // Sent synchronously (not through encryptMessage) so it leaves before close().
        try {
          this.dc.send(JSON.stringify({ bye: true }));
        } catch (err) {
          /* already closing */
        }
      }
      clearInterval(this.pingTimer);
      clearTimeout(this.candidateTimer);
      sessions.delete(this.id);
      info.closedSessions.push({ session: this.id, viewer: this.viewer, reason });
      const pc = this.pc;
      // Give the bye a moment to leave before the transport goes away.
      setTimeout(() => pc.close(), sendBye ? 300 : 0);
      updateState();
    }

    // Diagnostics (?trace=1): when the first audio packet and video frame left.
    async traceStart() {
      const t0 = performance.now();
      this.trace = { audio: null, video: null };
      while (performance.now() - t0 < 3000 && (this.trace.audio === null || this.trace.video === null)) {
        const report = await this.pc.getStats();
        report.forEach((s) => {
          if (s.type !== "outbound-rtp") return;
          const sent = s.kind === "video" ? s.framesSent : s.packetsSent;
          if (sent > 0 && this.trace[s.kind] === null) this.trace[s.kind] = Math.round(performance.now() - t0);
        });
        await new Promise((r) => setTimeout(r, 5));
      }
    }

    async stats() {
      const out = {
        viewer: this.viewer,
        session: this.id,
        connectionState: this.pc.connectionState,
        media: this.media,
        negotiatedVideo: this.negotiatedVideo,
        mediaRequest: this.mediaRequest,
        offerVideo: this.offerVideo,
        answerVideo: this.answerVideo,
        pings: this.pings,
        pongs: this.pongs,
        trace: this.trace || null,
        video: null,
        audio: null,
      };
      const report = await this.pc.getStats();
      const byId = new Map();
      report.forEach((s) => byId.set(s.id, s));
      report.forEach((s) => {
        if (s.type !== "outbound-rtp") return;
        const codec = s.codecId ? byId.get(s.codecId) : null;
        const common = {
          timestamp: s.timestamp, // ms: for rates between two samples
          ssrc: s.ssrc,
          packetsSent: s.packetsSent,
          bytesSent: s.bytesSent,
          mimeType: codec ? codec.mimeType : null,
          sdpFmtpLine: codec ? codec.sdpFmtpLine || null : null,
          payloadType: codec ? codec.payloadType : null,
        };
        if (s.kind === "video") {
          // Firefox gives no encoderImplementation, keyFramesEncoded, qualityLimitationReason
          // or scalabilityMode (left undefined, i.e. absent from JSON).
          out.video = Object.assign(common, {
            framesEncoded: s.framesEncoded,
            framesSent: s.framesSent,
            keyFramesEncoded: s.keyFramesEncoded,
            frameWidth: s.frameWidth,
            frameHeight: s.frameHeight,
            encoderImplementation: s.encoderImplementation,
            qualityLimitationReason: s.qualityLimitationReason,
            scalabilityMode: s.scalabilityMode,
          });
        } else if (s.kind === "audio") {
          out.audio = common;
        }
      });
      // Fields older engines may lack, filled from what they do give (listed in `derived`).
      const derived = [];
      if (out.video && out.video.framesSent === undefined && out.video.framesEncoded !== undefined) {
        out.video.framesSent = out.video.framesEncoded;
        derived.push("video.framesSent<-framesEncoded");
      }
      if (out.video && !out.video.mimeType && this.negotiatedVideo && this.negotiatedVideo.rtpmap) {
        out.video.mimeType = "video/" + this.negotiatedVideo.rtpmap.split("/")[0];
        derived.push("video.mimeType<-answer");
      }
      if (derived.length) out.derived = derived;
      if (out.video && this.videoSender) {
        // What the sender is set to: the viewer's bitrate cap lands here (bps).
        const encodings = this.videoSender.getParameters().encodings || [];
        out.video.maxBitrate = encodings.length && encodings[0].maxBitrate !== undefined ? encodings[0].maxBitrate : null;
      }
      out.requestedBitrate = this.bitrateKbps;
      return out;
    }
  }

  // Put `codec` first (all its variants, packetization-mode=1 before 0 for H.264),
  // keeping the browser's order for the rest, so the viewer's answer picks it.
  function setVideoCodecPreference(transceiver, codec) {
    if (!transceiver || !codec || !transceiver.setCodecPreferences) return;
    const caps = RTCRtpReceiver.getCapabilities("video").codecs;
    const wanted = "video/" + codec;
    const first = caps.filter((c) => c.mimeType.toLowerCase() === wanted);
    if (!first.length) {
      fail("codec " + codec + " is not supported by this browser");
      return;
    }
    if (codec === "h264") {
      const mode = (c) => (/packetization-mode=1/.test(c.sdpFmtpLine || "") ? 0 : 1);
      first.sort((a, b) => mode(a) - mode(b));
    }
    const rest = caps.filter((c) => !first.includes(c));
    try {
      transceiver.setCodecPreferences(first.concat(rest));
    } catch (err) {
      fail("setCodecPreferences failed: " + err);
    }
  }

  // The first video payload type of an SDP answer and its rtpmap/fmtp.
  function negotiatedVideoCodec(sdp) {
    const lines = sdp.split(/\r?\n/);
    let inVideo = false;
    let pt = null;
    const result = {};
    for (const line of lines) {
      if (line.startsWith("m=")) {
        inVideo = line.startsWith("m=video");
        if (inVideo && pt === null) {
          const parts = line.split(" ");
          pt = parts[3];
          result.payloadType = Number(pt);
        }
        continue;
      }
      if (!inVideo || pt === null) continue;
      if (line.startsWith("a=rtpmap:" + pt + " ")) result.rtpmap = line.slice(("a=rtpmap:" + pt + " ").length);
      if (line.startsWith("a=fmtp:" + pt + " ")) result.fmtp = line.slice(("a=fmtp:" + pt + " ").length);
    }
    return pt === null ? null : result;
  }

  // The first m=video section of an SDP: its m= line and its payload types in order,
  // each as "PT name/clock[ fmtp]" (RTX/RED/ULPFEC included, as listed).
  function videoSection(sdp) {
    const lines = sdp.split(/\r?\n/);
    const start = lines.findIndex((l) => l.startsWith("m=video"));
    if (start < 0) return null;
    let end = lines.findIndex((l, i) => i > start && l.startsWith("m="));
    if (end < 0) end = lines.length;
    const section = lines.slice(start, end);
    const attr = (prefix, pt) => {
      const line = section.find((l) => l.startsWith(prefix + pt + " "));
      return line ? line.slice((prefix + pt + " ").length) : null;
    };
    const codecs = lines[start].split(" ").slice(3).map((pt) => {
      const fmtp = attr("a=fmtp:", pt);
      return pt + " " + (attr("a=rtpmap:", pt) || "?") + (fmtp ? " " + fmtp : "");
    });
    return { mline: lines[start], codecs };
  }

  async function startSession(viewer) {
    if (!localStream) {
      fail("viewer " + viewer + " arrived before the camera was ready");
      return;
    }
    const s = new Session(viewer);
    sessions.set(s.id, s);
    log("new viewer", viewer, "session", s.id);
    try {
      await s.start();
    } catch (err) {
      fail("could not offer to " + viewer + ": " + err);
      s.close("error", false);
    }
    updateState();
  }

  function updateState() {
    const before = window.publisherState;
    if (stopped) {
      window.publisherState = "stopped";
    } else if (info.joined) {
      let n = 0;
      for (const s of sessions.values()) if (s.media && s.pc.connectionState === "connected") n++;
      window.publisherState = "connected-" + n;
    }
    if (window.publisherState !== before) reportSoon();
  }

  // ------------------------------------------------------------------ reports (?report=NAME)

  // POST {state, info, stats, ...} to /report/NAME (one at a time) every cfg.reportms and
  // soon after a state change; run the commands the test server answers with.
  let reportWake = null; // resolves the wait between two reports
  let reportsDone = false;
  let reportSeq = 0;
  let joinReady = false; // joinon=command: the camera is open, waiting for "join"
  const results = {}; // command id -> {value} | {error}, sent with the next report

  function reportSoon() {
    if (reportWake) reportWake();
  }

  async function postReport(extra) {
    const body = Object.assign(
      { seq: ++reportSeq, time: Date.now(), state: window.publisherState, info, stats: await window.publisherStats() },
      extra || {},
    );
    for (const id of Object.keys(results)) {
      body.results = body.results || {};
      body.results[id] = results[id];
      delete results[id];
    }
    const response = await fetch("/report/" + encodeURIComponent(cfg.report), {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
      cache: "no-store",
    });
    if (!response.ok) throw new Error("report refused: HTTP " + response.status);
    return (await response.json()).commands || [];
  }

  async function runCommand(cmd) {
    if (cmd.command === "stop") {
      const stats = stopped ? [] : await window.stopPublisher();
      reportsDone = true;
      await postReport({ final: stats });
    } else if (cmd.command === "join") {
      if (!joinReady || ws) fail("join command while not waiting to join (state " + window.publisherState + ")");
      else connectSocket();
    } else if (cmd.command === "call") {
      try {
        const fn = window[cmd.fn];
        if (typeof fn !== "function") throw new Error("no window." + cmd.fn + "()");
        const value = await fn.apply(window, cmd.args || []);
        results[cmd.id] = { value: value === undefined ? null : value };
      } catch (err) {
        results[cmd.id] = { error: String(err) };
      }
      reportSoon();
    } else {
      fail("unknown command " + JSON.stringify(cmd));
    }
  }

  async function reportLoop() {
    let failures = 0;
    while (!reportsDone) {
      let commands = [];
      try {
        commands = await postReport();
        failures = 0;
      } catch (err) {
        // The test server may be gone (test over); say so once in a while, never throw.
        if (++failures % 20 === 1) console.warn("[publisher " + cfg.streamid + "] report failed: " + err);
      }
      for (const cmd of commands) await runCommand(cmd);
      if (reportsDone) break;
      await new Promise((resolve) => {
        const timer = setTimeout(resolve, cfg.reportms);
        reportWake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      reportWake = null;
    }
  }

  // ------------------------------------------------------------------ test hooks

  window.publisherStats = async function () {
    return Promise.all(Array.from(sessions.values(), (s) => s.stats()));
  };

  // Stats of every session, then `bye` on every data channel; returns the stats.
  window.stopPublisher = async function () {
    const stats = await window.publisherStats();
    stopped = true;
    for (const s of Array.from(sessions.values())) s.close("stopped", true);
    if (localStream) for (const t of localStream.getTracks()) t.stop();
    if (ws) setTimeout(() => ws.close(), 300);
    window.publisherState = "stopped";
    return stats;
  };

  // Downscale what every viewer receives (1 = full size).
  // (Other encoding fields, e.g. a viewer's maxBitrate, stay as they are.)
  window.setVideoScale = async function (factor) {
    for (const s of sessions.values()) {
      if (!s.videoSender) continue;
      await s.updateVideoEncodings((e) => {
        e.scaleResolutionDownBy = factor;
      }, "scaleResolutionDownBy " + factor);
    }
  };

  window.applyVideoConstraints = async function (constraints) {
    for (const t of localStream.getVideoTracks()) await t.applyConstraints(constraints);
    const st = localStream.getVideoTracks()[0].getSettings();
    return { width: st.width, height: st.height };
  };

  window.addEventListener("beforeunload", () => {
    if (stopped) return;
    stopped = true;
    for (const s of Array.from(sessions.values())) s.close("unload", true);
  });

  // ------------------------------------------------------------------ start

  async function main() {
    if (!cfg.ws || !cfg.room) throw new Error("ws and room query parameters are required");
    await setupIdentity();
    localStream = await navigator.mediaDevices.getUserMedia({
      audio: true,
      video: { width: { ideal: cfg.width }, height: { ideal: cfg.height }, frameRate: { ideal: cfg.framerate } },
    });
    const preview = document.getElementById("preview");
    if (preview) preview.srcObject = localStream;
    window.publisherState = "media";
    reportSoon();
    // joinon=command: camera open, but join only on the test's {"command": "join"}.
    if (cfg.joinon === "command") joinReady = true;
    else connectSocket();
  }

  if (cfg.report) reportLoop();
  main().catch((err) => {
    fail("start-up failed: " + err);
    window.publisherState = "error";
    reportSoon();
  });
})();
