// What the VDO.Ninja-app-like test pages share (plain JS, no build step): loaded by
// publisher.html and viewer.html before their own script, as one namespace object,
// window.VdoCommon.
//
// Protocol: /work/shared/docs/vdo-ninja-protocol.md (sections 2-6).  Here, like the
// VDO.Ninja browser app:
//  * the password rules (none given: the app's default; "false"/"0"/"off": none) and
//    random ids;
//  * identity: the room id hashed and the stream id suffixed with SHA-256(password +
//    salt), and the AES-256-CBC key (§5);
//  * AES-256-CBC encryption/decryption of description/candidates/candidate (one random
//    IV per message, hex, in `vector`);
//  * SignalSocket: the WebSocket to the handshake server (every message sent with our
//    `from`, encrypted and serialised in order; messages received decrypted and handled
//    one at a time; server alerts go to fail);
//  * CandidateBatcher: local ICE candidates trickled in batches (over the data channel
//    once it is open, else over the WebSocket), and adding a peer's candidates;
//  * the data channel: encrypted sends, messages handled one at a time, ping -> pong,
//    pong and `bye` handling, a synchronous `bye`;
//  * the page's log/fail pair (errors kept in the page's info.errors) and a walk over
//    the RTP entries of getStats().
// Apart from window.VdoCommon, nothing here sets window.*: the test hooks are the pages'.
"use strict";

window.VdoCommon = (function () {
  const DEFAULT_PASSWORD = "someEncryptionKey123";
  const ENCRYPTED_FIELDS = ["description", "candidates", "candidate"];
  const CANDIDATE_BATCH_MS = 40;

  // ------------------------------------------------------------------ config / ids / logs

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

  // The query parameters both pages take: ws, room, streamid, password, salt.
  function baseConfig(params, defaultStreamId) {
    return {
      ws: params.get("ws"),
      room: params.get("room"),
      streamid: params.get("streamid") || defaultStreamId,
      password: resolvePassword(params.get("password")),
      salt: params.get("salt") || "vdo.ninja",
    };
  }

  // log(...) to the console and fail(message) into `errors` (the page's info.errors) and
  // console.error, both tagged "[<tag>]".
  function logger(tag, errors) {
    return {
      log(...args) {
        console.log("[" + tag + "]", ...args);
      },
      fail(message) {
        errors.push(String(message));
        console.error("[" + tag + "] " + message);
      },
    };
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

  // {streamWire, roomWire, key}: the stream and room ids as sent, and the AES-CBC
  // CryptoKey (null without a password).
  async function identity(cfg) {
    if (cfg.password === null) return { streamWire: cfg.streamid, roomWire: cfg.room, key: null };
    return {
      streamWire: cfg.streamid + (await hashHex(cfg.password + cfg.salt, 6)),
      roomWire: cfg.room ? await hashHex(cfg.room + cfg.password + cfg.salt, 16) : null,
      key: await crypto.subtle.importKey("raw", await sha256(cfg.password + cfg.salt), { name: "AES-CBC" }, false, [
        "encrypt",
        "decrypt",
      ]),
    };
  }

  // AES-256-CBC (WebCrypto pads with PKCS#7), one random IV per message, hex out.
  async function encryptMessage(key, msg) {
    if (!key) return msg;
    const fields = ENCRYPTED_FIELDS.filter((f) => f in msg);
    if (!fields.length) return msg;
    const out = Object.assign({}, msg);
    const iv = crypto.getRandomValues(new Uint8Array(16));
    for (const field of fields) {
      const plain = new TextEncoder().encode(JSON.stringify(out[field]));
      out[field] = toHex(await crypto.subtle.encrypt({ name: "AES-CBC", iv }, key, plain));
    }
    out.vector = toHex(iv);
    return out;
  }

  async function decryptMessage(key, msg) {
    if (msg.vector === undefined) return msg;
    if (!key) throw new Error("encrypted message but no password is set");
    const iv = fromHex(msg.vector);
    const out = Object.assign({}, msg);
    delete out.vector;
    for (const field of ENCRYPTED_FIELDS) {
      if (typeof out[field] === "string") {
        const plain = await crypto.subtle.decrypt({ name: "AES-CBC", iv }, key, fromHex(out[field]));
        out[field] = JSON.parse(new TextDecoder().decode(plain));
      }
    }
    return out;
  }

  // ------------------------------------------------------------------ messages

  function normaliseCandidates(msg) {
    let cands = msg.candidates;
    if (cands === undefined && msg.candidate !== undefined) cands = msg.candidate ? [msg.candidate] : [];
    if (cands && !Array.isArray(cands)) cands = [cands];
    return (cands || []).filter((c) => c && typeof c === "object");
  }

  function peerOf(msg) {
    const peer = msg.from || msg.UUID;
    return peer === undefined || peer === null ? null : String(peer);
  }

  // A message without a roomid, or with ours (hashed ids compare case-insensitively).
  function inRoom(msg, roomWire) {
    return !msg.roomid || !roomWire || String(msg.roomid).toLowerCase() === roomWire.toLowerCase();
  }

  function isHangup(request) {
    return request === "bye" || request === "hangup" || request === "cleanup";
  }

  // ------------------------------------------------------------------ WebSocket

  // The WebSocket to the handshake server at `url`, opened at once.  Every message is
  // sent with `from` (our server is never an official host), encrypted with `key` (AES
  // key or null) and in order; fail(message) takes what goes wrong.  opts: queue (true:
  // keep what is sent before the socket opens and send it on open; false: drop it),
  // decrypt(msg) (default: decryptMessage with key), onOpen(), onSignal(msg) (async;
  // each decrypted message, one at a time, in order: an answer before its candidates),
  // isStopped() (then messages are not handled), onClose().  Server alerts and errors go
  // to fail.
  class SignalSocket {
    constructor(url, from, key, fail, opts) {
      this.from = from;
      this.key = key;
      this.fail = fail;
      this.opts = opts;
      this.waiting = []; // opts.queue: sent before the socket opened
      this.txChain = Promise.resolve();
      this.rxChain = Promise.resolve();
      const ws = (this.ws = new WebSocket(url));
      ws.onopen = () => {
        for (const text of this.waiting) ws.send(text);
        this.waiting = [];
        opts.onOpen();
      };
      ws.onmessage = (event) => {
        let msg;
        try {
          msg = JSON.parse(event.data);
        } catch (err) {
          fail("bad JSON from server: " + err);
          return;
        }
        this.rxChain = this.rxChain.then(async () => {
          let plain;
          try {
            plain = await (opts.decrypt ? opts.decrypt(msg) : decryptMessage(key, msg));
          } catch (err) {
            fail("could not decrypt a server message: " + err);
            return;
          }
          await this.handle(plain).catch((err) => fail("handling a server message failed: " + err));
        });
      };
      ws.onerror = () => fail("websocket error");
      ws.onclose = () => opts.onClose();
    }

    async handle(msg) {
      if (msg.request === "alert" || msg.error) {
        this.fail("server: " + (msg.message || msg.error));
        return;
      }
      if (this.opts.isStopped()) return;
      await this.opts.onSignal(msg);
    }

    send(msg) {
      msg = Object.assign({}, msg, { from: this.from });
      // Chained so that messages leave in order (encryption is asynchronous).
      this.txChain = this.txChain
        .then(() => encryptMessage(this.key, msg))
        .then((out) => {
          const text = JSON.stringify(out);
          if (this.ws.readyState === WebSocket.OPEN) this.ws.send(text);
          else if (this.opts.queue) this.waiting.push(text);
        })
        .catch((err) => this.fail("encrypt failed: " + err));
    }

    // Close after `ms` (lets a last message leave).
    closeAfter(ms) {
      setTimeout(() => this.ws.close(), ms);
    }
  }

  // ------------------------------------------------------------------ data channel

  function channelOpen(dc) {
    return !!dc && dc.readyState === "open";
  }

  // Encrypt `msg` and send it on `dc` if it is still open then.  With `tail` (the promise
  // of the previous send) messages leave in order; without, each as soon as it is
  // encrypted.  Returns the new tail.
  function channelSend(dc, key, msg, fail, tail) {
    const encrypted = tail ? tail.then(() => encryptMessage(key, msg)) : encryptMessage(key, msg);
    return encrypted
      .then((out) => {
        if (channelOpen(dc)) dc.send(JSON.stringify(out));
      })
      .catch((err) => fail("encrypt failed: " + err));
  }

  // `bye` sent synchronously (not through encryption) so that it leaves before a close().
  function sendByeNow(dc) {
    if (!channelOpen(dc)) return;
    try {
      dc.send(JSON.stringify({ bye: true }));
    } catch (err) {
      /* already closing */
    }
  }

  // dc.onmessage: handle(data) for one message at a time, in order; errors to onError.
  function handleMessagesInOrder(dc, handle, onError) {
    let chain = Promise.resolve();
    dc.onmessage = (e) => {
      chain = chain.then(() => handle(e.data)).catch(onError);
    };
  }

  // The channel's keep-alive and hang-up: a ping is answered with a pong (send(msg)), a
  // pong goes to onPong (when given), a bye to onBye.  True when `msg` was one of them.
  function handleKeepAlive(msg, send, onPong, onBye) {
    if ("ping" in msg) {
      send({ pong: msg.ping });
      return true;
    }
    if ("pong" in msg && onPong) {
      onPong();
      return true;
    }
    if (msg.bye) {
      onBye();
      return true;
    }
    return false;
  }

  // ------------------------------------------------------------------ ICE candidates

  // Local candidates batched: sent shortly after the first one, or at once at the end of
  // gathering, as {candidates, session, type} on the data channel while it is open, else
  // as {UUID: peer, session, type, candidates} over the WebSocket.  opts: type ("local"
  // from the publisher, "remote" from the viewer), peer, session, dcSend(msg) (false when
  // the channel is not open), wsSend(msg), isClosed(), usernameFragment (send it too).
  class CandidateBatcher {
    constructor(opts) {
      this.opts = opts;
      this.pending = [];
      this.timer = null;
    }

    add(cand) {
      if (cand && cand.candidate) {
        const c = { candidate: cand.candidate, sdpMid: cand.sdpMid, sdpMLineIndex: cand.sdpMLineIndex };
        if (this.opts.usernameFragment) c.usernameFragment = cand.usernameFragment;
        this.pending.push(c);
      }
      if (!cand) this.flush();
      else if (!this.timer) this.timer = setTimeout(() => this.flush(), CANDIDATE_BATCH_MS);
    }

    flush() {
      clearTimeout(this.timer);
      this.timer = null;
      const o = this.opts;
      if (!this.pending.length || o.isClosed()) return;
      const batch = this.pending;
      this.pending = [];
      if (!o.dcSend({ candidates: batch, session: o.session, type: o.type })) {
        o.wsSend({ UUID: o.peer, session: o.session, type: o.type, candidates: batch });
      }
    }

    cancel() {
      clearTimeout(this.timer);
    }
  }

  // The peer's candidates into `pc` (with usernameFragment when asked); failures warned.
  async function addCandidates(pc, cands, usernameFragment) {
    for (const c of cands) {
      if (!c.candidate) continue;
      const init = {
        candidate: c.candidate,
        sdpMid: c.sdpMid === undefined ? null : c.sdpMid,
        sdpMLineIndex: c.sdpMLineIndex === undefined ? null : c.sdpMLineIndex,
      };
      if (usernameFragment) init.usernameFragment = c.usernameFragment === undefined ? null : c.usernameFragment;
      try {
        await pc.addIceCandidate(init);
      } catch (err) {
        console.warn("addIceCandidate failed", err, c);
      }
    }
  }

  // ------------------------------------------------------------------ stats

  // fn(stat, codec) for every getStats() entry of `type` ("inbound-rtp", "outbound-rtp");
  // codec: the entry its codecId names, if any.
  async function eachRtpStat(pc, type, fn) {
    const report = await pc.getStats();
    const byId = new Map();
    report.forEach((s) => byId.set(s.id, s));
    report.forEach((s) => {
      if (s.type !== type) return;
      fn(s, s.codecId ? byId.get(s.codecId) : null);
    });
  }

  return {
    DEFAULT_PASSWORD,
    ENCRYPTED_FIELDS,
    CANDIDATE_BATCH_MS,
    resolvePassword,
    randomId,
    baseConfig,
    logger,
    toHex,
    fromHex,
    sha256,
    hashHex,
    identity,
    encryptMessage,
    decryptMessage,
    normaliseCandidates,
    peerOf,
    inRoom,
    isHangup,
    SignalSocket,
    channelOpen,
    channelSend,
    sendByeNow,
    handleMessagesInOrder,
    handleKeepAlive,
    CandidateBatcher,
    addCandidates,
    eachRtpStat,
  };
})();
