// Helpers for the end-to-end encryption tests: matrix-js-sdk clients with the
// Rust crypto stack (@matrix-org/matrix-sdk-crypto-wasm, the version
// matrix-js-sdk 37.5.0 depends on) in an in-memory store, since Node has no
// IndexedDB.
//
// Every device is unverified: the SDK's default (globalBlacklistUnverifiedDevices
// false) already sends room keys to unverified devices, and the tests set it
// explicitly so a changed default cannot hide a server bug.

import { webcrypto } from "node:crypto";
import * as RustCrypto from "@matrix-org/matrix-sdk-crypto-wasm";
import { sdk, waitFor, startSyncing, http } from "./harness.mjs";

// The wasm bindings use the Web Crypto API; Node 20 has it as a global, older
// builds only under node:crypto.
if (!globalThis.crypto) globalThis.crypto = webcrypto;

// The first initRustCrypto logs at DEBUG before the level above can be
// lowered; drop the Rust SDK's console lines below ERROR.
if (!process.env.ENGRAM_E2E_SDK_LOG) {
    for (const m of ["debug", "info", "log", "warn", "trace"]) {
        const real = console[m].bind(console);
        console[m] = (...args) => {
            if (typeof args[0] === "string" && /^(TRACE|DEBUG|INFO|WARN) matrix_sdk/.test(args[0])) return;
            real(...args);
        };
    }
}

// Timers that would hold the test process open for minutes after the last
// client stopped: the Rust crypto wrapper arms a 5-minute setTimeout per
// encrypted live event still waiting for its key (to drop a listener), and
// ServerCapabilities re-arms its 6-hour poll when a fetch that was in flight
// during stopClient() completes. They are unref'd: they still fire while the
// process lives, they just do not keep it alive (as sdkenv.mjs does for the
// request watchdogs).
{
    const prev = globalThis.setTimeout;
    globalThis.setTimeout = function setTimeoutCryptoUnref(fn, ms, ...args) {
        const t = prev(fn, ms, ...args);
        if (typeof ms === "number" && ms >= 60_000 && /rust-crypto|serverCapabilities/.test(new Error().stack ?? "")) {
            t?.unref?.();
        }
        return t;
    };
    Object.assign(globalThis.setTimeout, prev);
}

/** Logs in again as user (a register() result): a new device. */
export async function loginNewDevice(server, user, displayName = "e2e second device") {
    const res = await http(server.baseUrl, null, "POST", "login", {
        type: "m.login.password",
        identifier: { type: "m.id.user", user: user.username },
        password: user.password,
        initial_device_display_name: displayName,
    });
    if (res.status !== 200) throw new Error(`login ${user.username}: ${res.status} ${res.body}`);
    return { ...user, accessToken: res.json.access_token, deviceId: res.json.device_id };
}

/**
 * A client for user with Rust crypto initialised in memory and syncing.
 * The device's keys are uploaded during initRustCrypto/first sync.
 */
export async function cryptoClient(server, user, { timeout = 20_000, lazyLoadMembers = false } = {}) {
    const c = server.client(user);
    await c.initRustCrypto({ useIndexedDB: false });
    // initRustCrypto turns the Rust SDK's tracing on at DEBUG (to the
    // console); keep errors only, unless SDK logs are wanted.
    if (!process.env.ENGRAM_E2E_SDK_LOG) new RustCrypto.Tracing(RustCrypto.LoggerLevel.Error).turnOn();
    const crypto = c.getCrypto();
    crypto.globalBlacklistUnverifiedDevices = false;
    if (lazyLoadMembers) {
        // As Element does: members come from /members when the client
        // needs them (here: to know whom to share a room key with).
        await c.startClient({ lazyLoadMembers: true, pollTimeout: 5_000 });
        await waitFor(() => ["PREPARED", "SYNCING"].includes(c.getSyncState()), {
            timeout,
            what: `${user.userId} first sync`,
        });
    } else {
        await startSyncing(c, { timeout });
    }
    // The device keys are on the server once the outgoing requests loop ran.
    await waitFor(
        async () => {
            const r = await server.req(user, "POST", "keys/query", { device_keys: { [user.userId]: [user.deviceId] } });
            return r.status === 200 && r.json.device_keys?.[user.userId]?.[user.deviceId];
        },
        { timeout, what: `device keys of ${user.userId}/${user.deviceId} uploaded` },
    );
    return c;
}

/** Enables m.megolm.v1.aes-sha2 in a room through the SDK (a state event). */
export async function enableEncryption(client, roomId) {
    await client.sendStateEvent(roomId, "m.room.encryption", { algorithm: "m.megolm.v1.aes-sha2" }, "");
    await waitFor(() => client.getRoom(roomId)?.hasEncryptionStateEvent(), {
        what: `${client.getUserId()} to see ${roomId} encrypted`,
    });
    await waitFor(async () => client.getCrypto().isEncryptionEnabledInRoom(roomId), {
        what: `crypto of ${client.getUserId()} to treat ${roomId} as encrypted`,
    });
}

/**
 * Waits until the client has an m.room.message in roomId whose decrypted body
 * is body; returns the MatrixEvent. Encrypted events that are still waiting
 * for their key are retried by the SDK once the key arrives (to-device or
 * backup), so polling the timeline is enough.
 */
export function waitForDecrypted(client, roomId, body, { timeout = 15_000 } = {}) {
    return waitFor(
        () => {
            const room = client.getRoom(roomId);
            if (!room) return null;
            for (const e of room.getLiveTimeline().getEvents()) {
                if (e.isEncrypted() && !e.isDecryptionFailure() && e.getClearContent()?.body === body) return e;
            }
            return null;
        },
        { timeout, what: `${client.getUserId()}/${client.getDeviceId()} to decrypt "${body}"` },
    );
}

/** Sends a text message; the SDK encrypts it when the room is encrypted. */
export async function sendText(client, roomId, body) {
    const { event_id: id } = await client.sendEvent(roomId, "m.room.message", { msgtype: "m.text", body });
    return id;
}

export { sdk };
