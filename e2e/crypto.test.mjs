// End-to-end encryption with matrix-js-sdk's Rust crypto against engram:
// device keys, one-time key claims, to-device room keys (Olm), Megolm room
// messages each side decrypts, a second device of a user, and a server-side
// key backup restored on a fresh device. The server never sees plaintext;
// these tests prove it relays everything the clients need.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { EngramServer, stopAllClients, waitFor, waitForRoom, uniqueName } from "./harness.mjs";
import { cryptoClient, enableEncryption, loginNewDevice, sendText, waitForDecrypted } from "./crypto-util.mjs";
import { startFederatedPair } from "./crypto-fed.mjs";

let server;

before(async () => {
    server = await EngramServer.create();
});

after(async () => {
    stopAllClients();
    await server?.destroy();
});

// Shared across the tests (they run in order): Alice and Bob in one room.
let alice, bob, a, b, roomId;

test("two users exchange Megolm-encrypted messages and decrypt them", { timeout: 40_000 }, async () => {
    alice = await server.register(uniqueName("alice"));
    bob = await server.register(uniqueName("bob"));
    a = await cryptoClient(server, alice);
    b = await cryptoClient(server, bob);

    ({ room_id: roomId } = await a.createRoom({ preset: "private_chat", invite: [bob.userId], name: "secret" }));
    await waitForRoom(b, roomId, "invite");
    await b.joinRoom(roomId);
    await waitForRoom(b, roomId, "join");
    await waitFor(() => a.getRoom(roomId)?.getMember(bob.userId)?.membership === "join", { what: "A to see B joined" });
    await enableEncryption(a, roomId);
    await waitFor(async () => b.getCrypto().isEncryptionEnabledInRoom(roomId), { what: "B to see the room encrypted" });

    const id1 = await sendText(a, roomId, "hello bob, secretly");
    const got1 = await waitForDecrypted(b, roomId, "hello bob, secretly");
    assert.equal(got1.getId(), id1);
    assert.equal(got1.getWireType(), "m.room.encrypted");
    assert.equal(got1.getSender(), alice.userId);

    const id2 = await sendText(b, roomId, "hello alice, secretly");
    const got2 = await waitForDecrypted(a, roomId, "hello alice, secretly");
    assert.equal(got2.getId(), id2);

    // The server holds only ciphertext.
    const raw = await server.req(alice, "GET", `rooms/${encodeURIComponent(roomId)}/event/${encodeURIComponent(id1)}`);
    assert.equal(raw.status, 200, raw.body);
    assert.equal(raw.json.type, "m.room.encrypted");
    assert.equal(raw.json.content.algorithm, "m.megolm.v1.aes-sha2");
    assert.ok(!raw.body.includes("secretly"), raw.body);
});

test("a new device of a user receives the room key and decrypts new messages", { timeout: 30_000 }, async () => {
    assert.ok(roomId, "needs the first test");
    const bob2 = await loginNewDevice(server, bob);
    assert.notEqual(bob2.deviceId, bob.deviceId);
    const b2 = await cryptoClient(server, bob2);
    await waitForRoom(b2, roomId, "join");

    // Alice's client learns of the new device through device_lists.changed
    // and shares the (rotated or existing) session with it before sending.
    await waitFor(
        async () => {
            const devs = await a.getCrypto().getUserDeviceInfo([bob.userId], true);
            return devs.get(bob.userId)?.has(bob2.deviceId);
        },
        { timeout: 15_000, what: "A to know B's second device" },
    );
    await sendText(a, roomId, "for both of bob's devices");
    await waitForDecrypted(b2, roomId, "for both of bob's devices");
    await waitForDecrypted(b, roomId, "for both of bob's devices");

    // The new device's own messages reach Alice too.
    await sendText(b2, roomId, "from bob's second device");
    const e = await waitForDecrypted(a, roomId, "from bob's second device");
    assert.equal(e.getSender(), bob.userId);
    b2.stopClient();
});

test("a backed-up room key is restored on a fresh device", { timeout: 40_000 }, async () => {
    assert.ok(roomId, "needs the first test");
    const crypto = a.getCrypto();
    await crypto.resetKeyBackup();
    // resetKeyBackup creates the version and enables it asynchronously.
    const info = await waitFor(() => crypto.getActiveSessionBackupVersion(), {
        timeout: 10_000,
        what: "the new backup version to be active",
    });
    const key = await crypto.getSessionBackupPrivateKey();
    assert.ok(key instanceof Uint8Array && key.length === 32);

    const secret = "only in the backup";
    await sendText(a, roomId, secret);
    await waitForDecrypted(b, roomId, secret);

    // The backup engine uploads Alice's inbound sessions in the background.
    await waitFor(
        async () => {
            const r = await server.req(alice, "GET", "room_keys/keys", undefined, { query: { version: info } });
            return r.status === 200 && Object.keys(r.json.rooms?.[roomId]?.sessions ?? {}).length > 0;
        },
        { timeout: 20_000, what: "room keys uploaded to the backup" },
    );
    const ver = await server.req(alice, "GET", "room_keys/version");
    assert.equal(ver.status, 200, ver.body);
    assert.equal(ver.json.version, info);
    assert.equal(ver.json.algorithm, "m.megolm_backup.v1.curve25519-aes-sha2");
    assert.ok(ver.json.count >= 1, ver.body);

    // A fresh device of Alice: no one shares the old session with it (it is
    // unverified, and key requests go only to verified devices), so only the
    // backup can decrypt the message.
    const alice2 = await loginNewDevice(server, alice, "restore device");
    const a2 = await cryptoClient(server, alice2);
    await waitForRoom(a2, roomId, "join");
    await waitFor(
        () => a2.getRoom(roomId)?.getLiveTimeline().getEvents().some((e) => e.isEncrypted() && e.isDecryptionFailure()),
        { timeout: 10_000, what: "the fresh device to see undecryptable history" },
    );
    await a2.getCrypto().storeSessionBackupPrivateKey(key, info);
    const res = await a2.getCrypto().restoreKeyBackup();
    assert.ok(res.imported >= 1, `imported ${JSON.stringify(res)}`);
    await waitForDecrypted(a2, roomId, secret);
    await waitForDecrypted(a2, roomId, "hello bob, secretly");
    a2.stopClient();
});

test("users on two federated servers exchange encrypted messages", { timeout: 45_000 }, async (t) => {
    const pair = await startFederatedPair();
    if (pair.skip) {
        t.skip(pair.skip);
        return;
    }
    try {
        const [sa, sb] = pair.servers;
        const carol = await sa.register(uniqueName("carol"));
        const dave = await sb.register(uniqueName("dave"));
        assert.ok(carol.userId.endsWith(":" + pair.names[0]) && dave.userId.endsWith(":" + pair.names[1]));
        // Lazy-loaded members (as Element): engram's initial /sync of a
        // room joined over federation does not carry the room's state yet
        // (see the report), while /members does.
        const c = await cryptoClient(sa, carol, { lazyLoadMembers: true });
        const d = await cryptoClient(sb, dave, { lazyLoadMembers: true });

        const { room_id: room } = await c.createRoom({ preset: "public_chat", name: "federated secret" });
        await d.joinRoom(room, { viaServers: [pair.names[0]] });
        await waitForRoom(d, room, "join", { timeout: 15_000 });
        await waitFor(() => c.getRoom(room)?.getMember(dave.userId)?.membership === "join", {
            timeout: 15_000,
            what: "carol's server to see dave joined",
        });
        await enableEncryption(c, room);
        await waitFor(async () => d.getCrypto().isEncryptionEnabledInRoom(room), {
            timeout: 15_000,
            what: "dave's server to see the room encrypted",
        });

        // Carol's client finds dave's device through her server (keys
        // query and claim over federation) and sends the room key as an
        // Olm to-device message (m.direct_to_device EDU).
        const id1 = await sendText(c, room, "across the federation, secretly");
        const got1 = await waitForDecrypted(d, room, "across the federation, secretly", { timeout: 20_000 });
        assert.equal(got1.getId(), id1);
        await sendText(d, room, "and back, secretly");
        const got2 = await waitForDecrypted(c, room, "and back, secretly", { timeout: 20_000 });
        assert.equal(got2.getSender(), dave.userId);

        // A second device of dave's reaches carol as a device list update.
        const dave2 = await loginNewDevice(sb, dave);
        const d2 = await cryptoClient(sb, dave2, { lazyLoadMembers: true });
        await waitForRoom(d2, room, "join");
        await waitFor(
            async () => (await c.getCrypto().getUserDeviceInfo([dave.userId], true)).get(dave.userId)?.has(dave2.deviceId),
            { timeout: 15_000, what: "carol to know dave's second device" },
        );
        await sendText(c, room, "for dave's new device");
        await waitForDecrypted(d2, room, "for dave's new device", { timeout: 20_000 });
        c.stopClient();
        d.stopClient();
        d2.stopClient();
    } finally {
        await pair.destroy();
    }
});
