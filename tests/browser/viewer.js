// A VDO.Ninja-app-like viewer for the browser tests (plain JS, no build step).
//
// Protocol: /work/shared/docs/vdo-ninja-protocol.md (sections 2-6).  Like the VDO.Ninja
// browser app as a room guest that only watches:
//  * hashes the room id and suffixes the wanted stream id with SHA-256(password + salt);
//  * joins the room without a streamID and always sends `from` (our server is not official);
//  * sends `play` (addressed to the member) for EVERY announcement of the stream it sees:
//    the listing, `someonejoined`, `videoaddedtoroom`, a relayed `joinroom` or `seed`
//    (no de-duplication: a publisher announcing itself twice is asked twice);
//  * answers every offer, over the WebSocket or the data channel (renegotiation), and
//    a new session replaces the previous peer connection; trickles its candidates
//    (`type: "remote"`) batched, over the data channel once it is open;
//  * on the `sendChannel` data channel sends the media request, answers pings, handles
//    `bye`;
//  * encrypts description/candidates/candidate with AES-256-CBC when a password is set.
// Test hooks: window.viewerState ("starting" | "joined" | "connected" | "error" | "stopped"),
// window.viewerInfo (plays, offers, errors...), window.viewerStats() (inbound video/audio
// getStats(): framesDecoded, totalSamplesReceived, concealedSamples, totalAudioEnergy...),
// window.stopViewer().
"use strict";

(function () {
  const DEFAULT_PASSWORD = "someEncryptionKey123";
  const ENCRYPTED_FIELDS = ["description", "candidates", "candidate"];
  const CANDIDATE_BATCH_MS = 40;

  const params = new URLSearchParams(location.search);
  const cfg = {
    ws: params.get("ws"),
    room: params.get("room"),
    streamid: params.get("streamid"),
    password: resolvePassword(params.get("password")),
    salt: params.get("salt") || "vdo.ninja",
  };

  const info = {
    from: randomId(12),
    streamWire: null,
    roomWire: null,
    plays: 0, // play requests sent
    offers: [], // {peer, session, via} for every offer received
    errors: [],
    closedSessions: [],
  };
  window.viewerInfo = info;
  window.viewerState = "starting";

  let ws = null;
  let wsChain = Promise.resolve();
  let rxChain = Promise.resolve();
  let aesKey = null;
  let current = null; // the Session being watched
  let stopped = false;

  function log(...args) {
    console.log("[viewer " + cfg.streamid + "]", ...args);
  }

  function fail(message) {
    info.errors.push(String(message));
    console.error("[viewer " + cfg.streamid + "] " + message);
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
    info.roomWire = await hashHex(cfg.room + cfg.password + cfg.salt, 16);
    aesKey = await crypto.subtle.importKey("raw", await sha256(cfg.password + cfg.salt), { name: "AES-CBC" }, false, [
      "encrypt",
      "decrypt",
    ]);
  }

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
    msg = Object.assign({}, msg, { from: info.from });
    wsChain = wsChain
      .then(() => encryptMessage(msg))
      .then((out) => {
        if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(out));
      })
      .catch((err) => fail("encrypt failed: " + err));
  }

  function connectSocket() {
    ws = new WebSocket(cfg.ws);
    ws.onopen = () => {
      log("websocket open; joining room", info.roomWire);
      wsSend({ request: "joinroom", roomid: info.roomWire });
      window.viewerState = "joined";
    };
    ws.onmessage = (event) => {
      let msg;
      try {
        msg = JSON.parse(event.data);
      } catch (err) {
        fail("bad JSON from server: " + err);
        return;
      }
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
      if (!stopped) fail("websocket closed");
    };
  }

  function peerOf(msg) {
    const peer = msg.from || msg.UUID;
    return peer === undefined || peer === null ? null : String(peer);
  }

  function inOurRoom(msg) {
    return !msg.roomid || !info.roomWire || String(msg.roomid).toLowerCase() === info.roomWire.toLowerCase();
  }

  function announcements(msg) {
    const request = msg.request;
    if (request === "listing") return (msg.list || []).filter((m) => m && typeof m === "object");
    if (request === "someonejoined" || request === "videoaddedtoroom") return [msg];
    if ((request === "joinroom" || request === "seed") && msg.from && inOurRoom(msg)) return [msg];
    return [];
  }

  async function onSignal(msg) {
    if (msg.request === "alert" || msg.error) {
      fail("server: " + (msg.message || msg.error));
      return;
    }
    if (stopped) return;
    for (const member of announcements(msg)) {
      const peer = peerOf(member);
      if (peer && member.streamID === info.streamWire) {
        info.plays++;
        log("asking", peer, "for", info.streamWire);
        wsSend({ request: "play", streamID: info.streamWire, UUID: peer });
      }
    }
    const peer = peerOf(msg);
    if (!peer) return;
    if (msg.request === "bye" || msg.request === "hangup" || msg.request === "cleanup") {
      if (current && current.peer === peer) current.close(msg.request);
      return;
    }
    if (msg.description && msg.description.type === "offer") {
      await onOffer(peer, msg.session, msg.description, "websocket");
      return;
    }
    const cands = normaliseCandidates(msg);
    if (cands.length && current && current.peer === peer && String(current.id) === String(msg.session)) {
      await current.addCandidates(cands);
    }
  }

  async function onOffer(peer, session, description, via) {
    info.offers.push({ peer, session, via });
    if (!current || current.peer !== peer || String(current.id) !== String(session)) {
      if (current) current.close("replaced by a new session");
      current = new Session(peer, session);
    }
    await current.answer(description, via);
  }

  // ------------------------------------------------------------------ session

  class Session {
    constructor(peer, id) {
      this.peer = peer;
      this.id = id === undefined ? null : id;
      this.pc = new RTCPeerConnection({ iceServers: [] });
      this.dc = null;
      this.closed = false;
      this.pending = [];
      this.timer = null;
      this.stream = new MediaStream();
      this.pc.ontrack = (e) => {
        this.stream.addTrack(e.track);
        const video = document.getElementById("remote");
        const audio = document.getElementById("remote-audio");
        if (e.track.kind === "video" && video.srcObject !== this.stream) video.srcObject = this.stream;
        if (e.track.kind === "audio") {
          audio.srcObject = new MediaStream([e.track]);
          audio.play().catch((err) => log("audio play():", String(err)));
        }
        video.play().catch(() => {});
      };
      this.pc.onicecandidate = (e) => this.onLocalCandidate(e.candidate);
      this.pc.onconnectionstatechange = () => {
        const st = this.pc.connectionState;
        log("session", this.id, "connection", st);
        if (st === "connected") window.viewerState = "connected";
        if (st === "failed") this.close("connection failed");
      };
      this.pc.ondatachannel = (e) => this.onChannel(e.channel);
    }

    async answer(description, via) {
      if (this.closed) return;
      await this.pc.setRemoteDescription(description);
      await this.pc.setLocalDescription(await this.pc.createAnswer());
      const desc = { type: this.pc.localDescription.type, sdp: this.pc.localDescription.sdp };
      if (via === "datachannel") this.dcSend({ description: desc, session: this.id });
      else wsSend({ UUID: this.peer, session: this.id, description: desc });
    }

    onChannel(channel) {
      this.dc = channel;
      channel.onopen = () => this.dcSend({
        audio: true, video: true, allowscreenvideo: true, allowscreenaudio: true, downloads: false,
      });
      channel.onmessage = (e) => {
        this.rx = (this.rx || Promise.resolve())
          .then(() => this.onChannelMessage(e.data))
          .catch((err) => fail("data-channel handler failed: " + err));
      };
    }

    dcOpen() {
      return this.dc && this.dc.readyState === "open";
    }

    dcSend(msg) {
      if (!this.dcOpen()) return false;
      encryptMessage(msg)
        .then((out) => this.dcOpen() && this.dc.send(JSON.stringify(out)))
        .catch((err) => fail("encrypt failed: " + err));
      return true;
    }

    async onChannelMessage(data) {
      const msg = await decryptMessage(JSON.parse(data));
      if ("ping" in msg) {
        this.dcSend({ pong: msg.ping });
        return;
      }
      if (msg.bye) {
        this.close("bye");
        return;
      }
      if (msg.description && msg.description.type === "offer") {
        info.offers.push({ peer: this.peer, session: this.id, via: "datachannel" });
        await this.answer(msg.description, "datachannel");
      }
      const cands = normaliseCandidates(msg);
      if (cands.length) await this.addCandidates(cands);
    }

    onLocalCandidate(cand) {
      if (cand && cand.candidate) {
        this.pending.push({ candidate: cand.candidate, sdpMid: cand.sdpMid, sdpMLineIndex: cand.sdpMLineIndex });
      }
      if (!cand) this.flush();
      else if (!this.timer) this.timer = setTimeout(() => this.flush(), CANDIDATE_BATCH_MS);
    }

    flush() {
      clearTimeout(this.timer);
      this.timer = null;
      if (!this.pending.length || this.closed) return;
      const batch = this.pending;
      this.pending = [];
      if (!this.dcSend({ candidates: batch, session: this.id, type: "remote" })) {
        wsSend({ UUID: this.peer, session: this.id, type: "remote", candidates: batch });
      }
    }

    async addCandidates(cands) {
      for (const c of cands) {
        if (!c.candidate) continue;
        try {
          await this.pc.addIceCandidate({
            candidate: c.candidate,
            sdpMid: c.sdpMid === undefined ? null : c.sdpMid,
            sdpMLineIndex: c.sdpMLineIndex === undefined ? null : c.sdpMLineIndex,
          });
        } catch (err) {
          console.warn("addIceCandidate failed", err, c);
        }
      }
    }

    close(reason) {
      if (this.closed) return;
      this.closed = true;
      log("session", this.id, "closing:", reason);
      info.closedSessions.push({ session: this.id, peer: this.peer, reason });
      clearTimeout(this.timer);
      this.pc.close();
      if (current === this) current = null;
    }

    async stats() {
      const out = { session: this.id, peer: this.peer, connectionState: this.pc.connectionState, video: null, audio: null };
      const report = await this.pc.getStats();
      const byId = new Map();
      report.forEach((s) => byId.set(s.id, s));
      report.forEach((s) => {
        if (s.type !== "inbound-rtp") return;
        const codec = s.codecId ? byId.get(s.codecId) : null;
        const common = {
          packetsReceived: s.packetsReceived || 0,
          packetsLost: s.packetsLost || 0,
          mimeType: codec ? codec.mimeType : null,
        };
        if (s.kind === "video") {
          out.video = Object.assign(common, {
            framesReceived: s.framesReceived || 0,
            framesDecoded: s.framesDecoded || 0,
            framesDropped: s.framesDropped || 0,
            keyFramesDecoded: s.keyFramesDecoded || 0,
            frameWidth: s.frameWidth || 0,
            frameHeight: s.frameHeight || 0,
            freezeCount: s.freezeCount || 0,
            totalFreezesDuration: s.totalFreezesDuration || 0,
            decoderImplementation: s.decoderImplementation || null,
          });
        } else if (s.kind === "audio") {
          out.audio = Object.assign(common, {
            totalSamplesReceived: s.totalSamplesReceived || 0,
            concealedSamples: s.concealedSamples || 0,
            silentConcealedSamples: s.silentConcealedSamples || 0,
            totalAudioEnergy: s.totalAudioEnergy || 0,
            totalSamplesDuration: s.totalSamplesDuration || 0,
            audioLevel: s.audioLevel || 0,
          });
        }
      });
      return out;
    }
  }

  // ------------------------------------------------------------------ test hooks

  window.viewerStats = async function () {
    const base = { t: performance.now() / 1000, plays: info.plays, offers: info.offers.length };
    if (!current) return Object.assign(base, { session: null, connectionState: null, video: null, audio: null });
    return Object.assign(base, await current.stats());
  };

  window.stopViewer = async function () {
    const stats = await window.viewerStats();
    stopped = true;
    if (current) {
      if (current.dcOpen()) {
        try {
          current.dc.send(JSON.stringify({ bye: true }));
        } catch (err) {
          /* closing */
        }
      }
      const s = current;
      setTimeout(() => s.close("stopped"), 200);
    }
    if (ws) setTimeout(() => ws.close(), 300);
    window.viewerState = "stopped";
    return stats;
  };

  async function main() {
    if (!cfg.ws || !cfg.room || !cfg.streamid) throw new Error("ws, room and streamid query parameters are required");
    await setupIdentity();
    connectSocket();
  }

  main().catch((err) => {
    fail("start-up failed: " + err);
    window.viewerState = "error";
  });
})();
