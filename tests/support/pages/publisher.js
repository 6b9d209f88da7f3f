// A VDO.Ninja-app-like publisher for the browser tests (plain JS, no build step).
// Loaded after vdo_common.js (window.VdoCommon), which holds what it shares with
// viewer.js: password rules, ids, hashing and identity, AES-256-CBC, the WebSocket,
// candidate batching, data-channel sends, ping/pong and bye handling.
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
// window.stopPublisher(), window.setVideoScale(f), window.applyVideoConstraints(c),
// window.addVideoNow() (with `videolater=1`: audio first, the camera added by a later
// renegotiation), window.switchVideoCodec(codec) (a renegotiation that changes the codec).
// With `report=<name>` (browsers without a driver, e.g. Firefox) the page also POSTs
// {state, info, stats, ...} to /report/<name> every `reportms` ms and on every state
// change, and runs the commands in the reply: {"command": "stop"} (then a last report
// with `final`: the stats taken before the bye), {"command": "join"} (with
// `joinon=command` the page opens the camera, reports state "media" and joins the room
// only then) and {"command": "call", "id", "fn", "args"} (window[fn](...args); the
// result comes back in the next report's `results`).
"use strict";

(function () {
  const C = window.VdoCommon; // vdo_common.js
  const PING_INTERVAL_MS = 3000;

  const params = new URLSearchParams(location.search);
  const cfg = Object.assign(C.baseConfig(params, C.randomId(8)), {
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
    // "1": answer the media request with audio only; window.addVideoNow() adds the camera later
    videolater: params.get("videolater") === "1",
    // "1": offer only the chosen video codec (and its RTX), like a GStreamer publisher
    onlycodec: params.get("onlycodec") === "1",
  });

  const info = {
    from: C.randomId(12),
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

  let socket = null; // C.SignalSocket once connected
  let aesKey = null; // CryptoKey when a password is set
  let localStream = null;
  const sessions = new Map(); // session id -> Session
  let stopped = false;
  const { log, fail } = C.logger("publisher " + cfg.streamid, info.errors);

  async function decryptMessage(msg) {
    // Tests check that a password really encrypts what the viewer sends.
    if (C.ENCRYPTED_FIELDS.some((f) => f in msg)) {
      if (msg.vector === undefined) info.plainIn++;
      else info.encryptedIn++;
    }
    return C.decryptMessage(aesKey, msg);
  }

  // ------------------------------------------------------------------ WebSocket

  function wsSend(msg) {
    socket.send(msg); // queued until the socket is open
  }

  function connectSocket() {
    socket = new C.SignalSocket(cfg.ws, info.from, aesKey, fail, {
      queue: true,
      decrypt: decryptMessage,
      isStopped: () => stopped,
      onSignal,
      onOpen() {
        log("websocket open; joining room", info.roomWire, "as", info.streamWire);
        const join = { request: "joinroom", roomid: info.roomWire, streamID: info.streamWire };
        wsSend(join);
        // Fan-out relays route `play` by `seed`; the official server ignores the repeat.
        wsSend({ request: "seed", streamID: info.streamWire });
        info.joined = true;
        updateState();
      },
      onClose() {
        info.joined = false;
        if (!stopped) fail("websocket closed");
        updateState();
      },
    });
  }

  async function onSignal(msg) {
    const request = msg.request;
    const peer = C.peerOf(msg);
    if (request === "offerSDP" && peer) {
      await startSession(peer); // official server: a viewer wants our stream
    } else if (request === "play" && peer && msg.from) {
      if (msg.streamID === info.streamWire || msg.streamID === cfg.streamid) await startSession(peer);
    } else if (request === "joinroom" && msg.from && peer) {
      // A newcomer on a fan-out relay (no listing there): announce ourselves to it.
      if (!C.inRoom(msg, info.roomWire)) return;
      if (cfg.onjoin === "offer") await startSession(peer);
      else wsSend({ request: "seed", streamID: info.streamWire, UUID: peer });
    } else if (C.isHangup(request) && peer) {
      for (const s of Array.from(sessions.values())) if (s.viewer === peer) s.close(request, false);
    } else if (peer && msg.session) {
      const s = sessions.get(String(msg.session));
      if (!s || s.viewer !== peer) return;
      if (msg.description) await s.onDescription(msg.description);
      const cands = C.normaliseCandidates(msg);
      if (cands.length) await s.addCandidates(cands);
    }
  }

  // ------------------------------------------------------------------ sessions

  class Session {
    constructor(viewer) {
      this.viewer = viewer;
      this.id = C.randomId(8);
      this.pc = new RTCPeerConnection({ iceServers: [] });
      this.dc = this.pc.createDataChannel("sendChannel");
      this.media = false; // audio/video added and negotiated
      this.mediaRequested = false;
      // Batched local candidates: on the data channel once it is open, else on the WebSocket.
      this.candidates = new C.CandidateBatcher({
        type: "local",
        peer: viewer,
        session: this.id,
        dcSend: (msg) => this.dcSend(msg),
        wsSend,
        isClosed: () => this.closed,
        usernameFragment: true,
      });
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
      this.pc.onicecandidate = (e) => this.candidates.add(e.candidate);
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
      C.handleMessagesInOrder(
        this.dc,
        (data) => this.onChannelMessage(data),
        (err) => fail("session " + this.id + ": data-channel handler failed: " + err),
      );
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
      return C.channelOpen(this.dc);
    }

    // Encrypted, in order; false when the channel is not open.
    dcSend(msg) {
      if (!this.dcOpen()) return false;
      this.dcChain = C.channelSend(this.dc, aesKey, msg, fail, this.dcChain);
      return true;
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
      await C.addCandidates(this.pc, cands, true);
    }

    async onChannelMessage(data) {
      let msg;
      try {
        msg = await decryptMessage(JSON.parse(data));
      } catch (err) {
        fail("session " + this.id + ": bad data-channel message: " + err);
        return;
      }
      const keepAlive = C.handleKeepAlive(
        msg,
        (reply) => this.dcSend(reply),
        () => this.pongs++,
        () => this.close("bye", false),
      );
      if (keepAlive) return;
      if (msg.description) await this.onDescription(msg.description);
      const cands = C.normaliseCandidates(msg);
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
      this.videoCodec = codec;
      if (wantVideo && !cfg.videolater) await this.addVideo(codec);
      if (!wantAudio && !wantVideo) return;
      await this.renegotiate();
    }

    async addVideo(codec) {
      for (const track of localStream.getVideoTracks()) {
        this.videoSender = this.pc.addTrack(track, localStream);
        const transceiver = this.pc.getTransceivers().find((t) => t.sender === this.videoSender);
        setVideoCodecPreference(transceiver, codec);
      }
      if (this.bitrateKbps !== null) await this.applyBitrate();
    }

    // Renegotiation offer over the data channel; the answer comes back on it too.
    async renegotiate() {
      const offer = await this.pc.createOffer();
      await this.pc.setLocalDescription(offer);
      this.offerVideo = videoSection(this.pc.localDescription.sdp);
      this.dcSend({ description: { type: this.pc.localDescription.type, sdp: this.pc.localDescription.sdp }, session: this.id });
    }

    close(reason, sendBye) {
      if (this.closed) return;
      this.closed = true;
      log("session", this.id, "closing:", reason);
      if (sendBye) C.sendByeNow(this.dc);
      clearInterval(this.pingTimer);
      this.candidates.cancel();
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
      await C.eachRtpStat(this.pc, "outbound-rtp", (s, codec) => {
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
    let rest = caps.filter((c) => !first.includes(c));
    if (cfg.onlycodec) rest = rest.filter((c) => /\/rtx$/i.test(c.mimeType));
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
      if (!joinReady || socket) fail("join command while not waiting to join (state " + window.publisherState + ")");
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
  // The camera turned on later (with videolater=1): add video to every session and renegotiate.
  window.addVideoNow = async function () {
    let n = 0;
    for (const s of Array.from(sessions.values())) {
      if (s.closed || !s.mediaRequested || s.videoSender) continue;
      await s.addVideo(s.videoCodec);
      await s.renegotiate();
      n++;
    }
    return n;
  };

  // A codec change mid-session: put `codec` first on every video sender and renegotiate.
  window.switchVideoCodec = async function (codec) {
    let n = 0;
    for (const s of Array.from(sessions.values())) {
      if (s.closed || !s.videoSender) continue;
      const transceiver = s.pc.getTransceivers().find((t) => t.sender === s.videoSender);
      setVideoCodecPreference(transceiver, codec);
      s.videoCodec = codec;
      await s.renegotiate();
      n++;
    }
    return n;
  };

  window.stopPublisher = async function () {
    const stats = await window.publisherStats();
    stopped = true;
    for (const s of Array.from(sessions.values())) s.close("stopped", true);
    if (localStream) for (const t of localStream.getTracks()) t.stop();
    if (socket) socket.closeAfter(300);
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
    const id = await C.identity(cfg);
    info.streamWire = id.streamWire;
    info.roomWire = id.roomWire;
    aesKey = id.key;
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
