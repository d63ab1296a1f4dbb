// Harness for engram's end-to-end tests: starts real engram servers on
// loopback, registers users, hands out matrix-js-sdk clients, and waits for
// conditions with bounded timeouts.
//
// Every wait in here has a deadline, and every child server is killed when
// the test process ends, whether the tests passed or not.

import "./sdkenv.mjs"; // must precede the SDK import: see sdkenv.mjs
import * as sdk from "matrix-js-sdk";
import { spawn } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

export { sdk };

const here = path.dirname(fileURLToPath(import.meta.url));

/** The engram binary: $ENGRAM_BIN, else ../bin/engram relative to this folder. */
export const ENGRAM_BIN = process.env.ENGRAM_BIN || path.join(here, "..", "bin", "engram");

export const SERVER_NAME = "localhost";

// ---------------------------------------------------------------------------
// Small utilities

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Resolves with p's value, or with null after ms; the timer never holds the process open. */
function within(p, ms) {
    let timer;
    const t = new Promise((r) => {
        timer = setTimeout(() => r(null), ms);
        timer.unref?.();
    });
    return Promise.race([p, t]).finally(() => clearTimeout(timer));
}

/**
 * Polls fn (sync or async) until it returns a truthy value, which is returned.
 * Throws after timeout ms with what in the message. Errors thrown by fn count
 * as "not yet" and the last one is reported on timeout.
 */
export async function waitFor(fn, { timeout = 10_000, interval = 50, what = "condition" } = {}) {
    const deadline = Date.now() + timeout;
    let lastErr;
    for (;;) {
        try {
            const v = await fn();
            if (v) return v;
        } catch (e) {
            lastErr = e;
        }
        if (Date.now() >= deadline) {
            const why = lastErr ? `; last error: ${lastErr?.stack || lastErr}` : "";
            throw new Error(`timed out after ${timeout} ms waiting for ${what}${why}`);
        }
        await sleep(interval);
    }
}

/**
 * Resolves with the arguments of the first emission of event on emitter for
 * which pred(...args) is true; rejects after timeout ms.
 * Returns { promise, cancel } so a caller can arm it before triggering the
 * action that emits.
 */
export function armEvent(emitter, event, pred = () => true, { timeout = 10_000, what } = {}) {
    let onEvent, timer;
    const promise = new Promise((resolve, reject) => {
        onEvent = (...args) => {
            let ok = false;
            try {
                ok = pred(...args);
            } catch (e) {
                cleanup();
                reject(e);
                return;
            }
            if (ok) {
                cleanup();
                resolve(args);
            }
        };
        timer = setTimeout(() => {
            cleanup();
            reject(new Error(`timed out after ${timeout} ms waiting for ${what || String(event)}`));
        }, timeout);
        emitter.on(event, onEvent);
    });
    function cleanup() {
        clearTimeout(timer);
        emitter.removeListener(event, onEvent);
    }
    // A test that fails before awaiting this must not leave an unhandled
    // rejection behind; awaiting it still throws.
    promise.catch(() => {});
    return { promise, cancel: cleanup };
}

/** Asks the kernel for a free loopback TCP port. */
export function freePort() {
    return new Promise((resolve, reject) => {
        const srv = net.createServer();
        srv.unref();
        srv.on("error", reject);
        srv.listen(0, "127.0.0.1", () => {
            const { port } = srv.address();
            srv.close(() => resolve(port));
        });
    });
}

let uniq = 0;
/** A localpart unique within this process and across runs. */
export function uniqueName(prefix = "u") {
    uniq++;
    return `${prefix}${uniq}_${process.pid}_${Date.now().toString(36)}`.toLowerCase();
}

// ---------------------------------------------------------------------------
// Raw HTTP, for the checks that must see exact status codes and bodies.

/**
 * One client-server API request. path is relative to /_matrix/client/v3
 * unless it starts with /_matrix or /. Returns { status, body, json }.
 * Never throws on HTTP status; throws on connection errors and timeouts.
 */
export async function http(baseUrl, token, method, urlPath, body, { timeout = 15_000, query } = {}) {
    let p = urlPath.startsWith("/") ? urlPath : `/_matrix/client/v3/${urlPath}`;
    if (query) {
        const qs = new URLSearchParams();
        for (const [k, v] of Object.entries(query)) if (v !== undefined && v !== null) qs.set(k, String(v));
        const s = qs.toString();
        if (s) p += (p.includes("?") ? "&" : "?") + s;
    }
    const headers = {};
    if (token) headers.Authorization = `Bearer ${token}`;
    let payload;
    if (body !== undefined) {
        headers["Content-Type"] = "application/json";
        payload = typeof body === "string" ? body : JSON.stringify(body);
    }
    const res = await fetch(baseUrl + p, { method, headers, body: payload, signal: AbortSignal.timeout(timeout) });
    const text = await res.text();
    let json;
    try {
        json = text ? JSON.parse(text) : undefined;
    } catch {
        json = undefined;
    }
    return { status: res.status, body: text, json };
}

/** Path segment encoding for room IDs, event IDs, user IDs, types. */
export const enc = encodeURIComponent;

// ---------------------------------------------------------------------------
// Servers

const liveServers = new Set();

function killAllSync() {
    for (const s of liveServers) {
        try {
            s.proc?.kill("SIGKILL");
        } catch {
            /* already gone */
        }
    }
}
process.on("exit", killAllSync);
for (const sig of ["SIGINT", "SIGTERM", "SIGHUP"]) {
    process.once(sig, () => {
        killAllSync();
        process.exit(130);
    });
}

/**
 * One engram server process bound to a fixed data dir and port, so it can be
 * stopped, killed and started again on the same state.
 */
export class EngramServer {
    constructor({ dataDir, port, ownsDir = true, extraArgs = [] }) {
        this.dataDir = dataDir;
        this.port = port;
        this.ownsDir = ownsDir;
        this.extraArgs = extraArgs;
        this.baseUrl = `http://127.0.0.1:${port}`;
        this.proc = null;
        this.exited = null; // promise of { code, signal } for the current process
        this.output = []; // last lines of stdout+stderr across all runs, for diagnostics
        this.starts = 0;
    }

    /** Creates a server on a fresh temp data dir and a free port, and starts it. */
    static async create(opts = {}) {
        const dataDir = opts.dataDir || (await mkdtemp(path.join(os.tmpdir(), "engram-e2e-")));
        const port = opts.port || (await freePort());
        const s = new EngramServer({ dataDir, port, ownsDir: !opts.dataDir, extraArgs: opts.extraArgs || [] });
        await s.start(opts);
        return s;
    }

    get running() {
        return this.proc !== null;
    }

    _log(chunk) {
        const lines = chunk.toString().split("\n").filter(Boolean);
        for (const l of lines) this.output.push(l);
        if (this.output.length > 400) this.output.splice(0, this.output.length - 400);
        if (process.env.ENGRAM_E2E_SERVER_LOG) for (const l of lines) process.stderr.write(`[engram:${this.port}] ${l}\n`);
    }

    /** The server's recent output, for assertion messages. */
    tail(n = 40) {
        return this.output.slice(-n).join("\n");
    }

    /** Starts the process and waits until GET / says "engram is running". */
    async start({ readyTimeout = 20_000 } = {}) {
        if (this.proc) throw new Error("harness: server already running");
        this.starts++;
        const args = [
            "serve",
            "--dev",
            "--data-dir",
            this.dataDir,
            "--client-listen",
            `127.0.0.1:${this.port}`,
            "--server-name",
            SERVER_NAME,
            ...this.extraArgs,
        ];
        const proc = spawn(ENGRAM_BIN, args, { stdio: ["ignore", "pipe", "pipe"] });
        this.proc = proc;
        liveServers.add(this);
        proc.stdout.on("data", (c) => this._log(c));
        proc.stderr.on("data", (c) => this._log(c));
        this.exited = new Promise((resolve) => {
            proc.on("exit", (code, signal) => {
                this._log(`-- process exited code=${code} signal=${signal}`);
                if (this.proc === proc) {
                    this.proc = null;
                    liveServers.delete(this);
                }
                resolve({ code, signal });
            });
            proc.on("error", (err) => {
                this._log(`-- spawn error: ${err.message}`);
                if (this.proc === proc) {
                    this.proc = null;
                    liveServers.delete(this);
                }
                resolve({ code: null, signal: null, error: err });
            });
        });
        const deadline = Date.now() + readyTimeout;
        for (;;) {
            if (this.proc !== proc) {
                throw new Error(`harness: engram exited before it was ready (${ENGRAM_BIN})\n${this.tail()}`);
            }
            try {
                const res = await fetch(this.baseUrl + "/", { signal: AbortSignal.timeout(1000) });
                const text = await res.text();
                if (res.status === 200 && text.includes("engram is running")) return;
            } catch {
                /* not listening yet */
            }
            if (Date.now() >= deadline) {
                await this.kill();
                throw new Error(`harness: engram not ready after ${readyTimeout} ms\n${this.tail()}`);
            }
            await sleep(50);
        }
    }

    /** Graceful stop: SIGTERM, then SIGKILL if it is not gone within timeout. */
    async stop({ timeout = 10_000 } = {}) {
        const proc = this.proc;
        if (!proc) return null;
        proc.kill("SIGTERM");
        const r = await within(this.exited, timeout);
        if (r) return r;
        this._log(`-- did not stop within ${timeout} ms of SIGTERM; killing`);
        proc.kill("SIGKILL");
        const r2 = await this.exited;
        return { ...r2, forced: true };
    }

    /** Crash: SIGKILL, and wait for the process to be gone. */
    async kill() {
        const proc = this.proc;
        if (!proc) return null;
        proc.kill("SIGKILL");
        return await within(this.exited, 10_000);
    }

    /** Stop (SIGTERM) or kill (SIGKILL), then start again on the same dir and port. */
    async restart({ hard = false } = {}) {
        const r = hard ? await this.kill() : await this.stop();
        await this.start();
        return r;
    }

    /** Kills the process and removes the data dir if the harness created it. */
    async destroy() {
        await this.kill();
        if (this.ownsDir && !process.env.ENGRAM_E2E_KEEP) {
            await rm(this.dataDir, { recursive: true, force: true }).catch(() => {});
        }
    }

    // -----------------------------------------------------------------------
    // Users and clients

    /**
     * Registers a user with the m.login.dummy flow: the first request without
     * auth gets a 401 with a UIA session, the second completes it. Returns
     * { userId, accessToken, deviceId, password, username }.
     */
    async register(username = uniqueName(), password = "correct horse battery staple") {
        const c = sdk.createClient({ baseUrl: this.baseUrl });
        const req = { username, password, initial_device_display_name: `e2e ${username}` };
        let res;
        try {
            res = await c.registerRequest(req);
        } catch (e) {
            if (e.httpStatus !== 401 || !e.data?.flows) {
                throw new Error(`register ${username}: ${e.httpStatus} ${e.message}`);
            }
            const flows = e.data.flows.map((f) => f.stages.join(","));
            if (!flows.includes("m.login.dummy")) {
                throw new Error(`register ${username}: no m.login.dummy flow in ${JSON.stringify(e.data.flows)}`);
            }
            res = await c.registerRequest({ ...req, auth: { type: "m.login.dummy", session: e.data.session } });
        }
        if (!res.access_token || !res.user_id || !res.device_id) {
            throw new Error(`register ${username}: incomplete response ${JSON.stringify(res)}`);
        }
        return { userId: res.user_id, accessToken: res.access_token, deviceId: res.device_id, password, username };
    }

    /** A matrix-js-sdk client for a registered user (not started). */
    client(user) {
        const c = sdk.createClient({
            baseUrl: this.baseUrl,
            accessToken: user.accessToken,
            userId: user.userId,
            deviceId: user.deviceId,
            timelineSupport: true,
        });
        c.e2eUser = user;
        trackClient(c);
        return c;
    }

    /** Registers a user and returns a (not started) client for it. */
    async newClient(prefix = "u") {
        const u = await this.register(uniqueName(prefix));
        return this.client(u);
    }

    /** Raw request as a user (user may be a client or the register() result). */
    req(user, method, urlPath, body, opts) {
        const token = user?.getAccessToken ? user.getAccessToken() : user?.accessToken;
        return http(this.baseUrl, token, method, urlPath, body, opts);
    }
}

// ---------------------------------------------------------------------------
// Clients

const liveClients = new Set();
function trackClient(c) {
    liveClients.add(c);
}

/** Stops every client the harness created (sync loops, pending requests). */
export function stopAllClients() {
    for (const c of liveClients) {
        try {
            c.stopClient();
        } catch {
            /* best effort */
        }
    }
    liveClients.clear();
}

/**
 * Starts a client's sync loop and waits until its first sync is processed
 * (state PREPARED or SYNCING). Fails fast if the SDK reports ERROR
 * repeatedly, with the SDK's error.
 */
export async function startSyncing(client, { timeout = 15_000, initialSyncLimit = 30 } = {}) {
    const ready = new Promise((resolve, reject) => {
        let errors = 0;
        const timer = setTimeout(() => {
            client.removeListener(sdk.ClientEvent.Sync, onSync);
            reject(new Error(`client ${client.getUserId()} did not sync within ${timeout} ms (state ${client.getSyncState()})`));
        }, timeout);
        function onSync(state, _prev, data) {
            if (state === "PREPARED" || state === "SYNCING") {
                clearTimeout(timer);
                client.removeListener(sdk.ClientEvent.Sync, onSync);
                resolve();
            } else if (state === "ERROR") {
                errors++;
                if (errors >= 2) {
                    clearTimeout(timer);
                    client.removeListener(sdk.ClientEvent.Sync, onSync);
                    const err = data?.error;
                    reject(
                        new Error(
                            `client ${client.getUserId()} sync error: ${err?.httpStatus ?? ""} ${err?.errcode ?? ""} ${err?.message ?? err}`,
                        ),
                    );
                }
            }
        }
        client.on(sdk.ClientEvent.Sync, onSync);
    });
    await client.startClient({ initialSyncLimit, pollTimeout: 5_000 });
    await ready;
    return client;
}

/** Waits until the client's store has the room with the given membership. */
export function waitForRoom(client, roomId, membership = "join", { timeout = 10_000 } = {}) {
    return waitFor(
        () => {
            const r = client.getRoom(roomId);
            return r && r.getMyMembership() === membership ? r : null;
        },
        { timeout, what: `${client.getUserId()} to see ${roomId} as ${membership}` },
    );
}

/**
 * Waits until the client's live timeline of roomId holds an event matching
 * pred; returns the MatrixEvent.
 */
export function waitForTimelineEvent(client, roomId, pred, { timeout = 10_000, what = "timeline event" } = {}) {
    return waitFor(
        () => {
            const r = client.getRoom(roomId);
            if (!r) return null;
            return r.getLiveTimeline().getEvents().find((e) => pred(e)) || null;
        },
        { timeout, what: `${client.getUserId()}: ${what}` },
    );
}

/** Event IDs of m.room.message events in a client's live timeline, in order. */
export function timelineMessageIds(client, roomId) {
    const r = client.getRoom(roomId);
    if (!r) return [];
    return r
        .getLiveTimeline()
        .getEvents()
        .filter((e) => e.getType() === "m.room.message" && !e.isSending() && e.getId()?.startsWith("$"))
        .map((e) => e.getId());
}

// ---------------------------------------------------------------------------
// Raw sync and pagination, for exact gap/duplicate checks.

/**
 * Incremental /sync from since until pred(accumulated) holds or the deadline
 * passes. Collects the timeline events of roomId in order across responses.
 * Returns { next, events, responses, limited } where limited tells whether
 * any response for the room was limited (a gap).
 */
export async function syncRoomUntil(server, user, roomId, since, pred, { timeout = 10_000, filter, poll = 1000 } = {}) {
    const deadline = Date.now() + timeout;
    const events = [];
    let next = since;
    let limited = false;
    let responses = 0;
    const f = filter ?? JSON.stringify({ room: { timeline: { limit: 200 } } });
    for (;;) {
        const left = deadline - Date.now();
        const res = await server.req(user, "GET", "sync", undefined, {
            query: { since: next, timeout: Math.max(0, Math.min(poll, left)), filter: f },
            timeout: Math.max(left, 0) + 5_000,
        });
        if (res.status !== 200) throw new Error(`/sync since=${next}: ${res.status} ${res.body}`);
        responses++;
        const room = res.json.rooms?.join?.[roomId] ?? res.json.rooms?.leave?.[roomId];
        if (room) {
            if (room.timeline?.limited) limited = true;
            for (const e of room.timeline?.events ?? []) events.push(e);
        }
        next = res.json.next_batch;
        if (!next) throw new Error(`/sync: no next_batch in ${res.body.slice(0, 200)}`);
        if (pred(events)) return { next, events, responses, limited };
        if (Date.now() >= deadline) return { next, events, responses, limited, timedOut: true };
    }
}

/** Initial /sync; returns the parsed body. */
export async function initialSync(server, user, filter) {
    const res = await server.req(user, "GET", "sync", undefined, {
        query: { filter: filter ?? JSON.stringify({ room: { timeline: { limit: 1 } } }) },
    });
    if (res.status !== 200) throw new Error(`initial /sync: ${res.status} ${res.body}`);
    return res.json;
}

/**
 * Pages /messages backwards from the newest event to the start of the room
 * (or maxPages), returning every event oldest first. Bounded.
 */
export async function allMessages(server, user, roomId, { pageSize = 50, maxPages = 200 } = {}) {
    const out = [];
    let from;
    for (let i = 0; i < maxPages; i++) {
        const res = await server.req(user, "GET", `rooms/${enc(roomId)}/messages`, undefined, {
            query: { dir: "b", limit: pageSize, from },
        });
        if (res.status !== 200) throw new Error(`/messages: ${res.status} ${res.body}`);
        out.push(...res.json.chunk);
        if (!res.json.end || res.json.chunk.length === 0) return out.reverse();
        if (res.json.end === from) throw new Error(`/messages: end token did not advance (${from})`);
        from = res.json.end;
    }
    throw new Error(`/messages: more than ${maxPages} pages`);
}

/** Sends m.text messages one after another with raw PUTs; returns the event IDs. */
export async function sendTexts(server, user, roomId, bodies, txnPrefix = uniqueName("t")) {
    const ids = [];
    for (let i = 0; i < bodies.length; i++) {
        const res = await server.req(user, "PUT", `rooms/${enc(roomId)}/send/m.room.message/${txnPrefix}_${i}`, {
            msgtype: "m.text",
            body: bodies[i],
        });
        if (res.status !== 200 || !res.json?.event_id) throw new Error(`send "${bodies[i]}": ${res.status} ${res.body}`);
        ids.push(res.json.event_id);
    }
    return ids;
}

/** Creates a room as owner and joins each of members to it (invite + join). */
export async function roomWith(server, owner, members, createBody = { preset: "private_chat" }) {
    const res = await server.req(owner, "POST", "createRoom", {
        ...createBody,
        invite: members.map((m) => m.userId ?? m.getUserId()),
    });
    if (res.status !== 200) throw new Error(`createRoom: ${res.status} ${res.body}`);
    const roomId = res.json.room_id;
    for (const m of members) {
        const j = await server.req(m, "POST", `join/${enc(roomId)}`, {});
        if (j.status !== 200) throw new Error(`join ${roomId}: ${j.status} ${j.body}`);
    }
    return roomId;
}
