// Everything a user would be upset to lose survives kill -9 and a replay:
// profile, aliases, edits, redactions, reactions, receipts, account data,
// tags, room state. The server is driven into a rich state, a snapshot of
// what it answers is taken, and the same snapshot must come back after a
// SIGKILL restart, and after `engram replay --verify` on the stopped data dir.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import {
    EngramServer,
    ENGRAM_BIN,
    stopAllClients,
    startSyncing,
    waitFor,
    waitForRoom,
    allMessages,
    sendTexts,
    initialSync,
    uniqueName,
    enc,
    SERVER_NAME,
} from "./harness.mjs";

let server;

before(async () => {
    server = await EngramServer.create();
});

after(async () => {
    stopAllClients();
    await server?.destroy();
});

function ok(res, what) {
    assert.equal(res.status, 200, `${what}: ${res.status} ${res.body}`);
    return res.json;
}

/** Runs a command to completion with a deadline; returns { code, out }. */
function run(cmd, args, timeout = 30_000) {
    return new Promise((resolve) => {
        const p = spawn(cmd, args, { stdio: ["ignore", "pipe", "pipe"] });
        let out = "";
        p.stdout.on("data", (c) => (out += c));
        p.stderr.on("data", (c) => (out += c));
        const timer = setTimeout(() => p.kill("SIGKILL"), timeout);
        p.on("exit", (code, signal) => {
            clearTimeout(timer);
            resolve({ code, signal, out });
        });
        p.on("error", (err) => {
            clearTimeout(timer);
            resolve({ code: null, out: String(err) });
        });
    });
}

/** The parts of an event that must never change once served (no ages). */
function stable(e) {
    if (!e) return e;
    return {
        event_id: e.event_id,
        type: e.type,
        sender: e.sender,
        state_key: e.state_key,
        origin_server_ts: e.origin_server_ts,
        content: e.content,
        redacted_because: e.unsigned?.redacted_because?.event_id,
        replaced_by: e.unsigned?.["m.relations"]?.["m.replace"]?.event_id,
    };
}

let world;

test("drive the server into a rich state", async () => {
    const a = await server.register(uniqueName("da"));
    const b = await server.register(uniqueName("db"));
    const room = ok(
        await server.req(a, "POST", "createRoom", { preset: "public_chat", name: "durable", topic: "before" }),
        "createRoom",
    ).room_id;
    ok(await server.req(b, "POST", `join/${enc(room)}`, {}), "join");

    const displayname = `Alice ${uniqueName("n")}`;
    ok(await server.req(a, "PUT", `profile/${enc(a.userId)}/displayname`, { displayname }), "displayname");
    const alias = `#${uniqueName("dur")}:${SERVER_NAME}`;
    ok(await server.req(a, "PUT", `directory/room/${enc(alias)}`, { room_id: room }), "alias");
    ok(await server.req(a, "PUT", `rooms/${enc(room)}/state/m.room.topic/`, { topic: "after" }), "topic");

    const [m1, m2, m3] = await sendTexts(server, a, room, ["keep me", "delete me", "read me"]);
    const edit = ok(
        await server.req(a, "PUT", `rooms/${enc(room)}/send/m.room.message/${uniqueName("e")}`, {
            msgtype: "m.text",
            body: "* keep me, edited",
            "m.new_content": { msgtype: "m.text", body: "keep me, edited" },
            "m.relates_to": { rel_type: "m.replace", event_id: m1 },
        }),
        "edit",
    ).event_id;
    const redaction = ok(
        await server.req(a, "PUT", `rooms/${enc(room)}/redact/${enc(m2)}/${uniqueName("r")}`, { reason: "oops" }),
        "redact",
    ).event_id;
    const reaction = ok(
        await server.req(b, "PUT", `rooms/${enc(room)}/send/m.reaction/${uniqueName("x")}`, {
            "m.relates_to": { rel_type: "m.annotation", event_id: m1, key: "👍" },
        }),
        "reaction",
    ).event_id;
    ok(await server.req(b, "POST", `rooms/${enc(room)}/receipt/m.read/${enc(m3)}`, {}), "receipt");
    ok(await server.req(a, "PUT", `user/${enc(a.userId)}/account_data/org.example.e2e`, { n: 1 }), "account data");
    ok(
        await server.req(a, "PUT", `user/${enc(a.userId)}/rooms/${enc(room)}/tags/u.work`, { order: 0.5 }),
        "tag",
    );
    world = { a, b, room, alias, displayname, m1, m2, m3, edit, redaction, reaction };
});

/** What the server answers about world, without volatile fields. */
async function snapshot() {
    const { a, b, room, alias, m1, m2 } = world;
    const snap = {};
    snap.profile = ok(await server.req(b, "GET", `profile/${enc(a.userId)}`), "profile");
    snap.alias = ok(await server.req(b, "GET", `directory/room/${enc(alias)}`), "alias").room_id;
    snap.m1 = stable(ok(await server.req(b, "GET", `rooms/${enc(room)}/event/${enc(m1)}`), "event m1"));
    snap.m2 = stable(ok(await server.req(b, "GET", `rooms/${enc(room)}/event/${enc(m2)}`), "event m2"));
    snap.history = (await allMessages(server, b, room)).map(stable);
    snap.state = ok(await server.req(b, "GET", `rooms/${enc(room)}/state`), "state")
        .map(stable)
        .sort((x, y) => (x.type + "\0" + x.state_key < y.type + "\0" + y.state_key ? -1 : 1));
    snap.joined = ok(await server.req(b, "GET", `rooms/${enc(room)}/joined_members`), "joined_members");
    snap.tags = ok(await server.req(a, "GET", `user/${enc(a.userId)}/rooms/${enc(room)}/tags`), "tags");
    snap.accountData = ok(await server.req(a, "GET", `user/${enc(a.userId)}/account_data/org.example.e2e`), "account data");
    const sync = await initialSync(server, a, JSON.stringify({ room: { timeline: { limit: 1 } } }));
    const receipts = (sync.rooms?.join?.[room]?.ephemeral?.events ?? []).filter((e) => e.type === "m.receipt");
    snap.receipts = {};
    for (const r of receipts) {
        for (const [eventId, byType] of Object.entries(r.content)) {
            for (const [type, byUser] of Object.entries(byType)) {
                for (const [user, data] of Object.entries(byUser)) {
                    snap.receipts[`${type} ${user}`] = { eventId, ts: data.ts };
                }
            }
        }
    }
    return snap;
}

let first;

test("the snapshot holds what was done", async () => {
    assert.ok(world, "needs the previous test");
    first = await snapshot();
    const { a, b, room, displayname, m1, m2, m3, edit, redaction, reaction } = world;
    assert.equal(first.profile.displayname, displayname);
    assert.equal(first.alias, room);
    assert.equal(first.m1.content.body, "keep me");
    assert.equal(first.m1.replaced_by, edit);
    assert.deepEqual(first.m2.content, {});
    assert.equal(first.m2.redacted_because, redaction);
    assert.ok(first.history.some((e) => e.event_id === reaction));
    assert.equal(first.state.find((e) => e.type === "m.room.topic").content.topic, "after");
    const member = first.state.find((e) => e.type === "m.room.member" && e.state_key === a.userId);
    assert.equal(member.content.displayname, displayname, "the display name reached the member event");
    assert.deepEqual(Object.keys(first.joined.joined).sort(), [a.userId, b.userId].sort());
    assert.deepEqual(first.tags.tags, { "u.work": { order: 0.5 } });
    assert.deepEqual(first.accountData, { n: 1 });
    assert.equal(first.receipts[`m.read ${b.userId}`]?.eventId, m3, JSON.stringify(first.receipts));
});

test("kill -9 and restart: the server answers the same", async () => {
    assert.ok(first, "needs the previous test");
    await server.kill();
    await server.start();
    assert.deepEqual(await snapshot(), first);
});

test("engram replay --verify on the stopped data dir, then the same answers again", async () => {
    assert.ok(first, "needs the previous test");
    const stopped = await server.stop();
    assert.equal(stopped?.code, 0, `graceful stop: ${JSON.stringify(stopped)}\n${server.tail()}`);
    const r = await run(ENGRAM_BIN, ["replay", "--data-dir", server.dataDir, "--verify"]);
    assert.equal(r.code, 0, `replay --verify failed (code ${r.code}, signal ${r.signal}):\n${r.out}`);
    await server.start();
    assert.deepEqual(await snapshot(), first);
});

test("a fresh js-sdk client sees the restored room as it was", async () => {
    assert.ok(first, "needs the previous test");
    const { a, b, room, displayname, m1, m2, edit } = world;
    const c = server.client(b);
    await startSyncing(c, { initialSyncLimit: 50 });
    const r = await waitForRoom(c, room, "join");
    assert.equal(r.name, "durable");
    assert.equal(r.currentState.getStateEvents("m.room.topic", "").getContent().topic, "after");
    assert.equal(r.getMember(a.userId).name, displayname);
    const orig = await waitFor(() => r.findEventById(m1), { what: "m1 in timeline" });
    await waitFor(() => orig.replacingEventId() === edit, { what: "client applies the edit" });
    assert.equal(orig.getContent().body, "keep me, edited");
    assert.ok(r.findEventById(m2)?.isRedacted(), "m2 is redacted");
    c.stopClient();
});

test("ephemeral streams after a restart: a client resuming with its old token still gets typing and receipts", async () => {
    const a = await server.register(uniqueName("ea"));
    const b = await server.register(uniqueName("eb"));
    const room = ok(await server.req(a, "POST", "createRoom", { preset: "public_chat" }), "createRoom").room_id;
    ok(await server.req(b, "POST", `join/${enc(room)}`, {}), "join");
    const [m1] = await sendTexts(server, a, room, ["one"]);
    // Move the ephemeral positions forward before the restart, and let B's
    // token cover them.
    for (let i = 0; i < 3; i++) {
        ok(await server.req(a, "PUT", `rooms/${enc(room)}/typing/${enc(a.userId)}`, { typing: true, timeout: 30000 }), "typing");
        ok(await server.req(a, "PUT", `rooms/${enc(room)}/typing/${enc(a.userId)}`, { typing: false }), "typing off");
    }
    ok(await server.req(a, "POST", `rooms/${enc(room)}/receipt/m.read/${enc(m1)}`, {}), "receipt");
    const tok = (await initialSync(server, b)).next_batch;

    await server.kill();
    await server.start();

    const [m2] = await sendTexts(server, a, room, ["two"]);
    ok(await server.req(a, "PUT", `rooms/${enc(room)}/typing/${enc(a.userId)}`, { typing: true, timeout: 30000 }), "typing");
    ok(await server.req(a, "POST", `rooms/${enc(room)}/receipt/m.read/${enc(m2)}`, {}), "receipt");
    let typingSeen = false;
    let receiptSeen = false;
    let since = tok;
    for (let i = 0; i < 10 && !(typingSeen && receiptSeen); i++) {
        const res = await server.req(b, "GET", "sync", undefined, { query: { since, timeout: 500 } });
        assert.equal(res.status, 200, res.body);
        for (const e of res.json.rooms?.join?.[room]?.ephemeral?.events ?? []) {
            if (e.type === "m.typing" && e.content.user_ids?.includes(a.userId)) typingSeen = true;
            if (e.type === "m.receipt" && e.content[m2]?.["m.read"]?.[a.userId]) receiptSeen = true;
        }
        since = res.json.next_batch;
    }
    assert.ok(typingSeen, "typing after the restart reaches a client with a pre-restart token");
    assert.ok(receiptSeen, "a receipt after the restart reaches a client with a pre-restart token");
});
