// Core acceptance: two real matrix-js-sdk clients talk through engram, and
// nothing acknowledged is lost or repeated across a graceful restart or a
// kill -9.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import {
    EngramServer,
    stopAllClients,
    startSyncing,
    waitFor,
    waitForRoom,
    waitForTimelineEvent,
    timelineMessageIds,
    syncRoomUntil,
    initialSync,
    allMessages,
    sendTexts,
    roomWith,
    uniqueName,
    enc,
    sleep,
    sdk,
} from "./harness.mjs";

let server;

before(async () => {
    server = await EngramServer.create();
});

after(async () => {
    stopAllClients();
    await server?.destroy();
});

const isMsg = (e) => e.type === "m.room.message";
const ids = (events) => events.map((e) => e.event_id);

function assertNoDuplicates(list, what) {
    const seen = new Set();
    for (const x of list) {
        assert.ok(!seen.has(x), `${what}: ${x} appears twice in ${JSON.stringify(list)}`);
        seen.add(x);
    }
}

test("server answers GET / and /versions", async () => {
    const res = await fetch(server.baseUrl + "/");
    assert.equal(res.status, 200);
    assert.match(await res.text(), /engram is running/);
    const v = await server.req(null, "GET", "/_matrix/client/versions");
    assert.equal(v.status, 200);
    assert.ok(Array.isArray(v.json.versions) && v.json.versions.length > 0, v.body);
});

test("two users: invite, join and exchange messages seen through sync", async () => {
    const a = await server.newClient("alice");
    const b = await server.newClient("bob");
    assert.match(a.getUserId(), /^@alice.*:localhost$/);
    await startSyncing(a);
    await startSyncing(b);

    const { room_id: roomId } = await a.createRoom({
        preset: "private_chat",
        invite: [b.getUserId()],
        name: "core room",
    });
    assert.match(roomId, /^!/);

    // B is told about the invite by sync, then joins.
    await waitForRoom(b, roomId, "invite");
    await b.joinRoom(roomId);
    await waitForRoom(b, roomId, "join");
    await waitFor(() => a.getRoom(roomId)?.getMember(b.getUserId())?.membership === "join", {
        what: "A to see B joined",
    });

    // A -> B
    const { event_id: e1 } = await a.sendTextMessage(roomId, "hello from A");
    assert.match(e1, /^\$/);
    const seenByB = await waitForTimelineEvent(b, roomId, (e) => e.getId() === e1, { what: `A's message ${e1}` });
    assert.equal(seenByB.getSender(), a.getUserId());
    assert.equal(seenByB.getContent().body, "hello from A");
    assert.equal(seenByB.getType(), "m.room.message");

    // B -> A, through the generic sendEvent.
    const { event_id: e2 } = await b.sendEvent(roomId, "m.room.message", { msgtype: "m.text", body: "hi A, B here" });
    const seenByA = await waitForTimelineEvent(a, roomId, (e) => e.getId() === e2, { what: `B's message ${e2}` });
    assert.equal(seenByA.getSender(), b.getUserId());
    assert.equal(seenByA.getContent().body, "hi A, B here");

    // Both timelines agree on the order of the two messages.
    await waitFor(() => timelineMessageIds(a, roomId).includes(e1) && timelineMessageIds(b, roomId).includes(e2));
    assert.deepEqual(timelineMessageIds(a, roomId), [e1, e2]);
    assert.deepEqual(timelineMessageIds(b, roomId), [e1, e2]);

    // The room name set at creation is part of the state both clients see.
    assert.equal(b.getRoom(roomId).name, "core room");
    a.stopClient();
    b.stopClient();
});

test("public_chat room: a second user joins without an invite", async () => {
    const a = await server.newClient("pa");
    const b = await server.newClient("pb");
    await startSyncing(b);
    const { room_id: roomId } = await a.createRoom({ preset: "public_chat", name: "open" });
    await b.joinRoom(roomId);
    await waitForRoom(b, roomId, "join");
    const { event_id } = await a.sendTextMessage(roomId, "welcome");
    const ev = await waitForTimelineEvent(b, roomId, (e) => e.getId() === event_id, { what: "welcome" });
    assert.equal(ev.getContent().body, "welcome");
    const joined = await b.getJoinedRooms();
    assert.ok(joined.joined_rooms.includes(roomId));
    b.stopClient();
});

// The sync long-poll must notice a membership that begins while it waits,
// even when the room already had activity earlier in the same poll (when
// the user was not in it yet). Raw /sync, so the timing is deterministic.
for (const how of ["join", "invite"]) {
    test(`a waiting /sync sees ${how === "join" ? "a join" : "an invite"} to a room that was active earlier in the same poll`, async () => {
        const a = await server.register(uniqueName("wa"));
        const b = await server.register(uniqueName("wb"));
        const t0 = (await initialSync(server, b)).next_batch;
        const member = (evs) =>
            evs.some((e) => e.type === "m.room.member" && e.state_key === b.userId);
        // One poll of up to 3 s in flight while A acts.
        const polling = server.req(b, "GET", "sync", undefined, { query: { since: t0, timeout: 3000 } });
        await sleep(300);
        const created = await server.req(a, "POST", "createRoom", { preset: how === "join" ? "public_chat" : "private_chat" });
        const roomId = created.json.room_id;
        await sendTexts(server, a, roomId, ["before b"]);
        await sleep(300);
        if (how === "join") {
            assert.equal((await server.req(b, "POST", `join/${enc(roomId)}`, {})).status, 200);
        } else {
            assert.equal((await server.req(a, "POST", `rooms/${enc(roomId)}/invite`, { user_id: b.userId })).status, 200);
        }
        const first = await polling;
        assert.equal(first.status, 200, first.body);
        const section = how === "join" ? "join" : "invite";
        let seen = !!first.json.rooms?.[section]?.[roomId];
        if (!seen) {
            // Not in the poll that was waiting; it must at least not be lost.
            const later = await server.req(b, "GET", "sync", undefined, { query: { since: first.json.next_batch, timeout: 500 } });
            seen = !!later.json.rooms?.[section]?.[roomId];
            assert.ok(
                seen,
                `the ${how} is lost: neither the waiting /sync (since=${t0} -> ${first.json.next_batch}) nor the next one ` +
                    `has ${roomId} under rooms.${section}, though the ${how} request succeeded`,
            );
        }
        if (how === "join") {
            const s = await syncRoomUntil(server, b, roomId, t0, member, { timeout: 1500 });
            assert.ok(member(s.events), "B's join is in B's timeline");
        }
    });
}

test("/messages pages backwards through the whole history, and a client can scroll back", async () => {
    const a = await server.newClient("pga");
    const b = await server.newClient("pgb");
    const roomId = await roomWith(server, a.e2eUser, [b.e2eUser]);
    const bodies = Array.from({ length: 25 }, (_, i) => `page msg ${i}`);
    const sent = await sendTexts(server, a.e2eUser, roomId, bodies);

    // Raw pages of 10, newest first, through the js-sdk's request helper.
    const pages = [];
    let from = null;
    for (let i = 0; i < 20; i++) {
        const page = await b.createMessagesRequest(roomId, from, 10, sdk.Direction.Backward);
        assert.ok(Array.isArray(page.chunk), JSON.stringify(page));
        assert.equal(typeof page.start, "string");
        pages.push(page);
        if (!page.end || page.chunk.length === 0) break;
        assert.notEqual(page.end, from, "end token must move");
        from = page.end;
    }
    const all = pages.flatMap((p) => p.chunk);
    assertNoDuplicates(ids(all), "backward pagination");
    const msgs = all.filter(isMsg);
    assert.deepEqual(ids(msgs), [...sent].reverse(), "messages newest first, none missing");
    assert.deepEqual(
        msgs.map((e) => e.content.body),
        [...bodies].reverse(),
    );
    // Walking back reaches the room's first event.
    assert.equal(all.at(-1).type, "m.room.create", `oldest event is ${all.at(-1).type}`);
    assert.ok(pages[0].chunk.length === 10, "first page is full");

    // Paging forwards from the first page's end token returns that page's
    // events again, oldest first: tokens are positions between events.
    const fwd = await b.createMessagesRequest(roomId, pages[0].end, 10, sdk.Direction.Forward);
    assert.deepEqual(ids(fwd.chunk), ids(pages[0].chunk).reverse());

    // A js-sdk client that synced only the last 5 events scrolls back to
    // all 25 using the prev_batch token sync gave it.
    await startSyncing(b, { initialSyncLimit: 5 });
    const room = await waitForRoom(b, roomId, "join");
    for (let i = 0; i < 20 && timelineMessageIds(b, roomId).length < sent.length; i++) {
        const more = await b.paginateEventTimeline(room.getLiveTimeline(), { backwards: true, limit: 10 });
        if (!more) break;
    }
    assert.deepEqual(timelineMessageIds(b, roomId), sent, "scrollback shows every message once, in order");
    b.stopClient();
});

test("a limited sync gap is filled exactly by /messages from prev_batch back to the old token", async () => {
    const a = await server.register(uniqueName("ga"));
    const b = await server.register(uniqueName("gb"));
    const roomId = await roomWith(server, a, [b]);
    const t0 = (await initialSync(server, b)).next_batch;
    const sent = await sendTexts(
        server,
        a,
        roomId,
        Array.from({ length: 30 }, (_, i) => `gap ${i}`),
    );
    const res = await server.req(b, "GET", "sync", undefined, {
        query: { since: t0, timeout: 0, filter: JSON.stringify({ room: { timeline: { limit: 10 } } }) },
    });
    assert.equal(res.status, 200, res.body);
    const tl = res.json.rooms.join[roomId].timeline;
    assert.equal(tl.limited, true, "30 new events with limit 10 is a gap");
    assert.deepEqual(ids(tl.events), sent.slice(20), "the newest 10, oldest first");
    assert.equal(typeof tl.prev_batch, "string");
    // Back-fill: from prev_batch towards t0, which the spec allows as a `to` token.
    const filled = [];
    let from = tl.prev_batch;
    for (let i = 0; i < 10; i++) {
        const page = await server.req(b, "GET", `rooms/${enc(roomId)}/messages`, undefined, {
            query: { dir: "b", from, to: t0, limit: 7 },
        });
        assert.equal(page.status, 200, page.body);
        filled.push(...page.json.chunk);
        if (!page.json.end || page.json.chunk.length === 0) break;
        from = page.json.end;
    }
    assert.deepEqual(ids(filled).reverse(), sent.slice(0, 20), "exactly the 20 skipped events, nothing before t0");
});

test("send with the same txnId twice returns the same event_id and sends once", async () => {
    const a = await server.register(uniqueName("txa"));
    const { room_id: roomId } = (await server.req(a, "POST", "createRoom", { preset: "private_chat" })).json;
    const path = `rooms/${enc(roomId)}/send/m.room.message/${uniqueName("txn")}`;
    const body = { msgtype: "m.text", body: "only once" };
    const r1 = await server.req(a, "PUT", path, body);
    const r2 = await server.req(a, "PUT", path, body);
    assert.equal(r1.status, 200, r1.body);
    assert.equal(r2.status, 200, r2.body);
    assert.match(r1.json.event_id, /^\$/);
    assert.equal(r2.json.event_id, r1.json.event_id);
    // A retry racing the original still maps to the same event.
    const path2 = `rooms/${enc(roomId)}/send/m.room.message/${uniqueName("txn")}`;
    const racing = await Promise.all([1, 2, 3].map(() => server.req(a, "PUT", path2, { msgtype: "m.text", body: "raced" })));
    for (const r of racing) assert.equal(r.status, 200, r.body);
    assert.equal(new Set(racing.map((r) => r.json.event_id)).size, 1, "concurrent retries, one event");

    const msgs = (await allMessages(server, a, roomId)).filter(isMsg);
    assert.deepEqual(
        msgs.map((e) => e.content.body),
        ["only once", "raced"],
    );
});

test("graceful restart: sync resumes from its token with no gap and no duplicate", async () => {
    const a = await server.register(uniqueName("ra"));
    const b = await server.register(uniqueName("rb"));
    const roomId = await roomWith(server, a, [b]);

    // A live js-sdk client for B that keeps running across the restart.
    const live = server.client(b);
    await startSyncing(live);
    await waitForRoom(live, roomId, "join");

    const t0 = (await initialSync(server, b)).next_batch;
    assert.equal(typeof t0, "string");

    const N = 6;
    const M = 5;
    const txn = uniqueName("rtx");
    const before = await sendTexts(server, a, roomId, Array.from({ length: N }, (_, i) => `before ${i}`), txn);
    const s1 = await syncRoomUntil(server, b, roomId, t0, (evs) => evs.filter(isMsg).length >= N);
    assert.ok(!s1.timedOut, "B saw the first messages");
    assert.deepEqual(ids(s1.events.filter(isMsg)), before);
    const t1 = s1.next;
    await waitFor(() => before.every((id) => timelineMessageIds(live, roomId).includes(id)), {
        what: "live client sees the first messages",
    });

    const stopped = await server.stop();
    assert.equal(stopped?.code, 0, `graceful stop exits 0 (got ${JSON.stringify(stopped)})\n${server.tail()}`);
    await server.start();

    // The same transaction retried after the restart is still the same event.
    const retry = await server.req(a, "PUT", `rooms/${enc(roomId)}/send/m.room.message/${txn}_0`, {
        msgtype: "m.text",
        body: "before 0",
    });
    assert.equal(retry.status, 200, retry.body);
    assert.equal(retry.json.event_id, before[0], "txnId survives a restart");

    const afterIds = await sendTexts(server, a, roomId, Array.from({ length: M }, (_, i) => `after ${i}`));

    // From t1: exactly the M new ones.
    const s2 = await syncRoomUntil(server, b, roomId, t1, (evs) => evs.filter(isMsg).length >= M);
    assert.deepEqual(ids(s2.events.filter(isMsg)), afterIds, "resume from pre-restart token: exactly the new messages");
    assert.ok(!s2.limited, "no gap");
    // And nothing more trickles in afterwards.
    const s3 = await syncRoomUntil(server, b, roomId, s2.next, () => false, { timeout: 600, poll: 300 });
    assert.deepEqual(ids(s3.events.filter(isMsg)), [], "no duplicates after catching up");

    // From t0: all N+M, in order.
    const s4 = await syncRoomUntil(server, b, roomId, t0, (evs) => evs.filter(isMsg).length >= N + M);
    assert.deepEqual(ids(s4.events.filter(isMsg)), [...before, ...afterIds]);
    assert.ok(!s4.limited, "no gap");

    // The live client reconnects and ends with exactly N+M, in order.
    live.retryImmediately();
    await waitFor(
        () => {
            live.retryImmediately();
            return afterIds.every((id) => timelineMessageIds(live, roomId).includes(id));
        },
        { timeout: 20_000, interval: 200, what: "live client catches up after restart" },
    );
    assert.deepEqual(timelineMessageIds(live, roomId), [...before, ...afterIds]);
    live.stopClient();

    // History agrees.
    const hist = (await allMessages(server, b, roomId)).filter(isMsg);
    assert.deepEqual(ids(hist), [...before, ...afterIds]);
});

test("kill -9: every acknowledged send survives, none is repeated", async () => {
    const a = await server.register(uniqueName("ka"));
    const b = await server.register(uniqueName("kb"));
    const roomId = await roomWith(server, a, [b]);
    const t0 = (await initialSync(server, b)).next_batch;

    const N0 = 5;
    const first = await sendTexts(server, a, roomId, Array.from({ length: N0 }, (_, i) => `pre ${i}`));
    const s1 = await syncRoomUntil(server, b, roomId, t0, (evs) => evs.filter(isMsg).length >= N0);
    assert.deepEqual(ids(s1.events.filter(isMsg)), first);
    const t1 = s1.next;

    // A sender in a loop, one request at a time; the server dies under it.
    const acked = [];
    const ackedBodies = [];
    let inFlight = null;
    let stop = false;
    const sender = (async () => {
        for (let i = 0; i < 10_000 && !stop; i++) {
            const body = `flight ${i}`;
            inFlight = body;
            let res;
            try {
                res = await server.req(a, "PUT", `rooms/${enc(roomId)}/send/m.room.message/${uniqueName("k")}`, {
                    msgtype: "m.text",
                    body,
                });
            } catch {
                return; // connection reset: the server is gone
            }
            if (res.status !== 200) return;
            acked.push(res.json.event_id);
            ackedBodies.push(body);
            inFlight = null;
        }
    })();
    await waitFor(() => acked.length >= 15, { timeout: 15_000, what: "15 acknowledged sends" });
    await server.kill();
    stop = true;
    await sender;
    const lostCandidate = inFlight; // sent, maybe written, never acknowledged

    await server.start();
    const M = 4;
    const post = await sendTexts(server, a, roomId, Array.from({ length: M }, (_, i) => `post ${i}`));

    const hist = (await allMessages(server, b, roomId)).filter(isMsg);
    const histIds = ids(hist);
    assertNoDuplicates(histIds, "history after kill -9");
    const expected = [...first, ...acked, ...post];
    const present = histIds.filter((id) => expected.includes(id));
    assert.deepEqual(present, expected, "every acknowledged event is present, in send order");
    const extra = hist.filter((e) => !expected.includes(e.event_id));
    assert.ok(
        extra.length === 0 || (extra.length === 1 && extra[0].content.body === lostCandidate),
        `only the one unacknowledged in-flight send may appear; extra: ${JSON.stringify(extra.map((e) => e.content.body))}`,
    );

    // Sync from the pre-crash token: the acknowledged sends and the new ones, once each.
    const s2 = await syncRoomUntil(server, b, roomId, t1, (evs) => post.every((id) => ids(evs).includes(id)));
    const s2ids = ids(s2.events.filter(isMsg));
    assertNoDuplicates(s2ids, "sync after kill -9");
    assert.ok(!s2.limited, "no gap");
    assert.deepEqual(
        s2ids.filter((id) => expected.includes(id)),
        [...acked, ...post],
    );
    assert.equal(s2ids.length, acked.length + post.length + extra.length);
});

test("kill -9 under concurrent senders in two rooms: no acknowledged send lost", async () => {
    const users = await Promise.all([0, 1, 2, 3].map((i) => server.register(uniqueName(`c${i}`))));
    const rooms = [
        await roomWith(server, users[0], [users[1]]),
        await roomWith(server, users[2], [users[3]]),
    ];
    const acked = users.map(() => []);
    let dead = false;
    const senders = users.map(async (u, k) => {
        const roomId = rooms[k >> 1];
        for (let i = 0; i < 10_000 && !dead; i++) {
            let res;
            try {
                res = await server.req(u, "PUT", `rooms/${enc(roomId)}/send/m.room.message/${uniqueName("cc")}`, {
                    msgtype: "m.text",
                    body: `u${k} ${i}`,
                });
            } catch {
                return;
            }
            if (res.status !== 200) return;
            acked[k].push(res.json.event_id);
        }
    });
    await waitFor(() => acked.every((l) => l.length >= 8), { timeout: 15_000, what: "8 acknowledged sends per sender" });
    await server.kill();
    dead = true;
    await Promise.all(senders);
    await server.start();
    for (let r = 0; r < 2; r++) {
        const hist = ids((await allMessages(server, users[2 * r], rooms[r])).filter(isMsg));
        assertNoDuplicates(hist, `room ${r}`);
        for (const k of [2 * r, 2 * r + 1]) {
            const mine = hist.filter((id) => acked[k].includes(id));
            assert.deepEqual(mine, acked[k], `sender ${k}: every acknowledged send present, in order`);
        }
        // At most one unacknowledged in-flight send per sender may have landed.
        assert.ok(hist.length <= acked[2 * r].length + acked[2 * r + 1].length + 2, `room ${r}: ${hist.length} events`);
    }
});
