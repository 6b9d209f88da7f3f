// A VDO.Ninja-app-like viewer for the browser tests (plain JS, no build step).
// Loaded after vdo_common.js (window.VdoCommon), which holds what it shares with
// publisher.js: password rules, ids, hashing and identity, AES-256-CBC, the WebSocket,
// candidate batching, data-channel sends, ping/pong and bye handling.
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
  const C = window.VdoCommon; // vdo_common.js

  const params = new URLSearchParams(location.search);
  const cfg = C.baseConfig(params, null);

  const info = {
    from: C.randomId(12),
    streamWire: null,
    roomWire: null,
    plays: 0, // play requests sent
    offers: [], // {peer, session, via} for every offer received
    errors: [],
    closedSessions: [],
  };
  window.viewerInfo = info;
  window.viewerState = "starting";

  let socket = null; // C.SignalSocket once connected
  let aesKey = null;
  let current = null; // the Session being watched
  let stopped = false;
  const { log, fail } = C.logger("viewer " + cfg.streamid, info.errors);

  // ------------------------------------------------------------------ WebSocket

  function wsSend(msg) {
    socket.send(msg); // dropped unless the socket is open
  }

  function connectSocket() {
    socket = new C.SignalSocket(cfg.ws, info.from, aesKey, fail, {
      queue: false,
      isStopped: () => stopped,
      onSignal,
      onOpen() {
        log("websocket open; joining room", info.roomWire);
        wsSend({ request: "joinroom", roomid: info.roomWire });
        window.viewerState = "joined";
      },
      onClose() {
        if (!stopped) fail("websocket closed");
      },
    });
  }

  function announcements(msg) {
    const request = msg.request;
    if (request === "listing") return (msg.list || []).filter((m) => m && typeof m === "object");
    if (request === "someonejoined" || request === "videoaddedtoroom") return [msg];
    if ((request === "joinroom" || request === "seed") && msg.from && C.inRoom(msg, info.roomWire)) return [msg];
    return [];
  }

  async function onSignal(msg) {
    for (const member of announcements(msg)) {
      const peer = C.peerOf(member);
      if (peer && member.streamID === info.streamWire) {
        info.plays++;
        log("asking", peer, "for", info.streamWire);
        wsSend({ request: "play", streamID: info.streamWire, UUID: peer });
      }
    }
    const peer = C.peerOf(msg);
    if (!peer) return;
    if (C.isHangup(msg.request)) {
      if (current && current.peer === peer) current.close(msg.request);
      return;
    }
    if (msg.description && msg.description.type === "offer") {
      await onOffer(peer, msg.session, msg.description, "websocket");
      return;
    }
    const cands = C.normaliseCandidates(msg);
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
      // Batched local candidates: on the data channel once it is open, else on the WebSocket.
      this.candidates = new C.CandidateBatcher({
        type: "remote",
        peer,
        session: this.id,
        dcSend: (msg) => this.dcSend(msg),
        wsSend,
        isClosed: () => this.closed,
        usernameFragment: false,
      });
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
      this.pc.onicecandidate = (e) => this.candidates.add(e.candidate);
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
      C.handleMessagesInOrder(
        channel,
        (data) => this.onChannelMessage(data),
        (err) => fail("data-channel handler failed: " + err),
      );
    }

    dcOpen() {
      return C.channelOpen(this.dc);
    }

    // Encrypted, each sent as soon as it is (no ordering); false when the channel is not open.
    dcSend(msg) {
      if (!this.dcOpen()) return false;
      C.channelSend(this.dc, aesKey, msg, fail, null);
      return true;
    }

    async onChannelMessage(data) {
      const msg = await C.decryptMessage(aesKey, JSON.parse(data));
      if (C.handleKeepAlive(msg, (reply) => this.dcSend(reply), null, () => this.close("bye"))) return;
      if (msg.description && msg.description.type === "offer") {
        info.offers.push({ peer: this.peer, session: this.id, via: "datachannel" });
        await this.answer(msg.description, "datachannel");
      }
      const cands = C.normaliseCandidates(msg);
      if (cands.length) await this.addCandidates(cands);
    }

    async addCandidates(cands) {
      await C.addCandidates(this.pc, cands, false);
    }

    close(reason) {
      if (this.closed) return;
      this.closed = true;
      log("session", this.id, "closing:", reason);
      info.closedSessions.push({ session: this.id, peer: this.peer, reason });
      this.candidates.cancel();
      this.pc.close();
      if (current === this) current = null;
    }

    async stats() {
      const out = { session: this.id, peer: this.peer, connectionState: this.pc.connectionState, video: null, audio: null };
      await C.eachRtpStat(this.pc, "inbound-rtp", (s, codec) => {
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
      C.sendByeNow(current.dc);
      const s = current;
      setTimeout(() => s.close("stopped"), 200);
    }
    if (socket) socket.closeAfter(300);
    window.viewerState = "stopped";
    return stats;
  };

  async function main() {
    if (!cfg.ws || !cfg.room || !cfg.streamid) throw new Error("ws, room and streamid query parameters are required");
    const id = await C.identity(cfg);
    info.streamWire = id.streamWire;
    info.roomWire = id.roomWire;
    aesKey = id.key;
    connectSocket();
  }

  main().catch((err) => {
    fail("start-up failed: " + err);
    window.viewerState = "error";
  });
})();
