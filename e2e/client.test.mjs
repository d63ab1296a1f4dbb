// The fuller client scenario, written against the Matrix spec v1.19
// (client-server API): edits, reactions, redaction, typing, receipts,
// display names, leave / kick / ban, history visibility, transaction scope.
//
// Scenarios the server does not implement yet are marked todo (see TODO
// below): node:test still runs them and prints their outcome, but a failure
// does not fail the run. Remove an entry once its scenario passes.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import {
    EngramServer,
    stopAllClients,
    startSyncing,
    armEvent,
    waitFor,
    waitForRoom,
    waitForTimelineEvent,
    allMessages,
    sendTexts,
    initialSync,
    syncRoomUntil,
    uniqueName,
    enc,
    sdk,
} from "./harness.mjs";

// Scenario name -> why it is todo. Keep in step with the server.
const TODO = {};
const opts = (name) => (TODO[name] ? { todo: TODO[name] } : {});
/** test() with the TODO table applied. */
const scenario = (name, fn) => test(name, opts(name), fn);

let server;

before(async () => {
    server = await EngramServer.create();
});

after(async () => {
    stopAllClients();
    await server?.destroy();
});

const isMsg = (e) => e.type === "m.room.message";

/** Two syncing clients sharing a fresh room (A creates with preset, B joins). */
async function pair(createBody = { preset: "private_chat" }) {
    const a = await server.newClient("a");
    const b = await server.newClient("b");
    await Promise.all([startSyncing(a), startSyncing(b)]);
    const { room_id: roomId } = await a.createRoom({ ...createBody, invite: [b.getUserId()] });
    await waitForRoom(b, roomId, "invite");
    await b.joinRoom(roomId);
    await waitForRoom(b, roomId, "join");
    await waitFor(() => a.getRoom(roomId)?.getMember(b.getUserId())?.membership === "join", {
        what: "A sees B joined",
    });
    return { a, b, roomId };
}

function expectError(res, status, errcode) {
    assert.equal(res.status, status, `expected ${status} ${errcode ?? ""}, got ${res.status} ${res.body}`);
    if (errcode) assert.equal(res.json?.errcode, errcode, res.body);
}

async function sdkError(promise) {
    try {
        await promise;
    } catch (e) {
        return e;
    }
    assert.fail("expected the request to fail");
}

// ---------------------------------------------------------------------------
// Edits and reactions

async function sendEdit(client, roomId, originalId, newBody) {
    return client.sendEvent(roomId, "m.room.message", {
        msgtype: "m.text",
        body: `* ${newBody}`,
        "m.new_content": { msgtype: "m.text", body: newBody },
        "m.relates_to": { rel_type: "m.replace", event_id: originalId },
    });
}

scenario("edit: the other user sees the m.replace event and the client applies it", async () => {
    const { a, b, roomId } = await pair();
    const { event_id: orig } = await a.sendTextMessage(roomId, "I like cake");
    await waitForTimelineEvent(b, roomId, (e) => e.getId() === orig, { what: "original" });
    const { event_id: edit } = await sendEdit(a, roomId, orig, "I like chocolate cake");

    const editEv = await waitFor(() => b.getRoom(roomId).findEventById(edit), { what: "edit event at B" });
    assert.equal(editEv.getRelation()?.rel_type, "m.replace");
    assert.equal(editEv.getRelation()?.event_id, orig);
    const origEv = b.getRoom(roomId).findEventById(orig);
    await waitFor(() => origEv.replacingEventId() === edit, { what: "B's client applies the edit" });
    assert.equal(origEv.getContent().body, "I like chocolate cake");
    // The server must not rewrite the original's content (spec v1.7+).
    assert.equal(origEv.getOriginalContent().body, "I like cake");
    a.stopClient();
    b.stopClient();
});

scenario("edit: the server bundles the latest m.replace under unsigned.m.relations", async () => {
    const a = await server.register(uniqueName("ea"));
    const { room_id: roomId } = (await server.req(a, "POST", "createRoom", { preset: "private_chat" })).json;
    const [orig] = await sendTexts(server, a, roomId, ["v1"]);
    const edits = [];
    for (const body of ["v2", "v3"]) {
        const r = await server.req(a, "PUT", `rooms/${enc(roomId)}/send/m.room.message/${uniqueName("e")}`, {
            msgtype: "m.text",
            body: `* ${body}`,
            "m.new_content": { msgtype: "m.text", body },
            "m.relates_to": { rel_type: "m.replace", event_id: orig },
        });
        assert.equal(r.status, 200, r.body);
        edits.push(r.json.event_id);
    }
    const page = await server.req(a, "GET", `rooms/${enc(roomId)}/messages`, undefined, { query: { dir: "b", limit: 10 } });
    const inPage = page.json.chunk.find((e) => e.event_id === orig);
    assert.equal(inPage?.content?.body, "v1", "original content is left intact");
    const bundled = inPage?.unsigned?.["m.relations"]?.["m.replace"];
    assert.ok(bundled, `no bundled m.replace in ${JSON.stringify(inPage)}`);
    assert.equal(bundled.event_id, edits[1], "the most recent edit is bundled");
    assert.equal(bundled.content["m.new_content"].body, "v3");

    const ev = await server.req(a, "GET", `rooms/${enc(roomId)}/event/${enc(orig)}`);
    assert.equal(ev.status, 200, ev.body);
    assert.equal(ev.json.content.body, "v1");
    assert.equal(ev.json.unsigned?.["m.relations"]?.["m.replace"]?.event_id, edits[1], "/event bundles it too");
});

scenario("reaction: the other user sees an m.annotation and the client counts it", async () => {
    const { a, b, roomId } = await pair();
    const { event_id: msg } = await a.sendTextMessage(roomId, "react to me");
    await waitForTimelineEvent(b, roomId, (e) => e.getId() === msg, { what: "message at B" });
    const { event_id: r1 } = await b.sendEvent(roomId, "m.reaction", {
        "m.relates_to": { rel_type: "m.annotation", event_id: msg, key: "👍" },
    });
    const rEv = await waitForTimelineEvent(a, roomId, (e) => e.getId() === r1, { what: "reaction at A" });
    assert.equal(rEv.getType(), "m.reaction");
    assert.equal(rEv.getRelation()?.key, "👍");
    const rels = await waitFor(
        () => a.getRoom(roomId).relations.getChildEventsForEvent(msg, "m.annotation", "m.reaction"),
        { what: "A aggregates the reaction" },
    );
    const byKey = rels.getSortedAnnotationsByKey();
    assert.equal(byKey.length, 1);
    assert.equal(byKey[0][0], "👍");
    assert.equal(byKey[0][1].size, 1);
    a.stopClient();
    b.stopClient();
});

scenario("reaction: a second identical annotation is rejected with M_DUPLICATE_ANNOTATION", async () => {
    const a = await server.register(uniqueName("da"));
    const { room_id: roomId } = (await server.req(a, "POST", "createRoom", { preset: "private_chat" })).json;
    const [msg] = await sendTexts(server, a, roomId, ["x"]);
    const content = { "m.relates_to": { rel_type: "m.annotation", event_id: msg, key: "🎉" } };
    const r1 = await server.req(a, "PUT", `rooms/${enc(roomId)}/send/m.reaction/${uniqueName("r")}`, content);
    assert.equal(r1.status, 200, r1.body);
    const r2 = await server.req(a, "PUT", `rooms/${enc(roomId)}/send/m.reaction/${uniqueName("r")}`, content);
    expectError(r2, 400, "M_DUPLICATE_ANNOTATION");
});

scenario("relations: GET /v1/rooms/{roomId}/relations lists edits and reactions", async () => {
    const a = await server.register(uniqueName("rla"));
    const { room_id: roomId } = (await server.req(a, "POST", "createRoom", { preset: "private_chat" })).json;
    const [msg] = await sendTexts(server, a, roomId, ["parent"]);
    const react = await server.req(a, "PUT", `rooms/${enc(roomId)}/send/m.reaction/${uniqueName("r")}`, {
        "m.relates_to": { rel_type: "m.annotation", event_id: msg, key: "❤️" },
    });
    const edit = await server.req(a, "PUT", `rooms/${enc(roomId)}/send/m.room.message/${uniqueName("e")}`, {
        msgtype: "m.text",
        body: "* parent!",
        "m.new_content": { msgtype: "m.text", body: "parent!" },
        "m.relates_to": { rel_type: "m.replace", event_id: msg },
    });
    assert.equal(react.status, 200, react.body);
    assert.equal(edit.status, 200, edit.body);
    const base = `/_matrix/client/v1/rooms/${enc(roomId)}/relations/${enc(msg)}`;
    const all = await server.req(a, "GET", base);
    assert.equal(all.status, 200, all.body);
    assert.deepEqual(all.json.chunk.map((e) => e.event_id).sort(), [react.json.event_id, edit.json.event_id].sort());
    const ann = await server.req(a, "GET", `${base}/m.annotation`);
    assert.deepEqual(
        ann.json.chunk.map((e) => e.event_id),
        [react.json.event_id],
    );
    const rep = await server.req(a, "GET", `${base}/m.replace/m.room.message`);
    assert.deepEqual(
        rep.json.chunk.map((e) => e.event_id),
        [edit.json.event_id],
    );
    // Through the SDK as well.
    const c = server.client(a);
    const viaSdk = await c.relations(roomId, msg, "m.annotation", "m.reaction");
    assert.deepEqual(
        viaSdk.events.map((e) => e.getId()),
        [react.json.event_id],
    );
});

scenario("threads: a reply is bundled on its root, listed by /threads, and built into a thread by the SDK", async () => {
    const a = await server.register(uniqueName("tha"));
    const b = await server.register(uniqueName("thb"));
    const { room_id: roomId } = (
        await server.req(a, "POST", "createRoom", { preset: "public_chat" })
    ).json;
    assert.equal((await server.req(b, "POST", `join/${enc(roomId)}`, {})).status, 200);
    const [root] = await sendTexts(server, a, roomId, ["thread root"]);
    const reply = await server.req(b, "PUT", `rooms/${enc(roomId)}/send/m.room.message/${uniqueName("t")}`, {
        msgtype: "m.text",
        body: "in the thread",
        "m.relates_to": { rel_type: "m.thread", event_id: root, is_falling_back: true, "m.in_reply_to": { event_id: root } },
    });
    assert.equal(reply.status, 200, reply.body);
    // Spec "Server-side aggregation of m.thread relationships".
    const ev = await server.req(a, "GET", `rooms/${enc(roomId)}/event/${enc(root)}`);
    const agg = ev.json.unsigned?.["m.relations"]?.["m.thread"];
    assert.ok(agg, `no m.thread aggregation on the root: ${ev.body}`);
    assert.equal(agg.count, 1);
    assert.equal(agg.latest_event?.event_id, reply.json.event_id);
    // Spec: true for the root's sender and for senders of m.thread replies.
    assert.equal(agg.current_user_participated, true, "A sent the root");
    const c3 = await server.register(uniqueName("thc"));
    assert.equal((await server.req(c3, "POST", `join/${enc(roomId)}`, {})).status, 200);
    const seenByC = await server.req(c3, "GET", `rooms/${enc(roomId)}/event/${enc(root)}`);
    assert.equal(seenByC.json.unsigned?.["m.relations"]?.["m.thread"]?.current_user_participated, false, seenByC.body);
    const list = await server.req(a, "GET", `/_matrix/client/v1/rooms/${enc(roomId)}/threads`);
    assert.equal(list.status, 200, list.body);
    assert.deepEqual(
        list.json.chunk.map((e) => e.event_id),
        [root],
    );

    // An Element-like client: lazy-loaded members and thread support.
    const c = server.client(a);
    await c.startClient({ lazyLoadMembers: true, threadSupport: true, initialSyncLimit: 20, pollTimeout: 5000 });
    const room = await waitForRoom(c, roomId, "join");
    await room.loadMembersIfNeeded();
    assert.deepEqual(room.getJoinedMembers().map((m) => m.userId).sort(), [a.userId, b.userId, c3.userId].sort());
    const thread = await waitFor(() => room.getThread(root), { what: "the SDK builds the thread" });
    await waitFor(() => thread.events.some((e) => e.getId() === reply.json.event_id), { what: "reply in the thread" });
    c.stopClient();
});

// ---------------------------------------------------------------------------
// Redaction

scenario("redaction: the other user sees the event redacted; only permitted users may redact", async () => {
    const { a, b, roomId } = await pair();
    const { event_id: msg } = await a.sendTextMessage(roomId, "oops, secret");
    const { event_id: bMsg } = await b.sendTextMessage(roomId, "B's own message");
    const origAtB = await waitForTimelineEvent(b, roomId, (e) => e.getId() === msg, { what: "message at B" });
    await waitForTimelineEvent(a, roomId, (e) => e.getId() === bMsg, { what: "B's message at A" });

    // B (power 0) may not redact A's message: redact needs 50 by default.
    const denied = await server.req(b, "PUT", `rooms/${enc(roomId)}/redact/${enc(msg)}/${uniqueName("x")}`, {});
    expectError(denied, 403, "M_FORBIDDEN");

    const { event_id: redaction } = await a.redactEvent(roomId, msg, undefined, { reason: "typo" });
    assert.match(redaction, /^\$/);
    await waitFor(() => origAtB.isRedacted(), { what: "B sees the message redacted" });
    assert.deepEqual(origAtB.getContent(), {});

    // The server serves the redacted form from now on.
    const ev = await server.req(b, "GET", `rooms/${enc(roomId)}/event/${enc(msg)}`);
    assert.equal(ev.status, 200, ev.body);
    assert.deepEqual(ev.json.content, {});
    assert.equal(ev.json.unsigned?.redacted_because?.event_id, redaction);
    const hist = await allMessages(server, b, roomId);
    const h = hist.find((e) => e.event_id === msg);
    assert.deepEqual(h.content, {});
    const r = hist.find((e) => e.event_id === redaction);
    assert.equal(r?.type, "m.room.redaction");
    assert.equal(r.redacts ?? r.content.redacts, msg);

    // A sender may redact their own message.
    const own = await server.req(b, "PUT", `rooms/${enc(roomId)}/redact/${enc(bMsg)}/${uniqueName("x")}`, {});
    assert.equal(own.status, 200, own.body);
    a.stopClient();
    b.stopClient();
});

// ---------------------------------------------------------------------------
// Ephemeral: typing and receipts

scenario("typing: the other user sees typing start and stop", async () => {
    const { a, b, roomId } = await pair();
    const started = armEvent(
        b,
        sdk.RoomMemberEvent.Typing,
        (_ev, member) => member.userId === a.getUserId() && member.typing === true,
        { timeout: 8000, what: "B sees A typing" },
    );
    await a.sendTyping(roomId, true, 20_000);
    await started.promise;
    const stopped = armEvent(
        b,
        sdk.RoomMemberEvent.Typing,
        (_ev, member) => member.userId === a.getUserId() && member.typing === false,
        { timeout: 8000, what: "B sees A stop typing" },
    );
    await a.sendTyping(roomId, false, 0);
    await stopped.promise;
    a.stopClient();
    b.stopClient();
});

scenario("typing: a typing notification expires after its timeout", async () => {
    const { a, b, roomId } = await pair();
    const started = armEvent(
        b,
        sdk.RoomMemberEvent.Typing,
        (_ev, member) => member.userId === a.getUserId() && member.typing === true,
        { timeout: 8000, what: "B sees A typing" },
    );
    const t0 = Date.now();
    await a.sendTyping(roomId, true, 1500);
    await started.promise;
    const expired = armEvent(
        b,
        sdk.RoomMemberEvent.Typing,
        (_ev, member) => member.userId === a.getUserId() && member.typing === false,
        { timeout: 8000, what: "A's typing to expire at B without an explicit stop" },
    );
    await expired.promise;
    assert.ok(Date.now() - t0 >= 1000, "not cleared before (roughly) its timeout");
    a.stopClient();
    b.stopClient();
});

scenario("read receipts: the other user sees m.read for the event", async () => {
    const { a, b, roomId } = await pair();
    const { event_id: msg } = await a.sendTextMessage(roomId, "please read");
    const ev = await waitForTimelineEvent(b, roomId, (e) => e.getId() === msg, { what: "message at B" });
    await b.sendReadReceipt(ev, sdk.ReceiptType.Read);
    await waitFor(() => a.getRoom(roomId).getEventReadUpTo(b.getUserId()) === msg, {
        timeout: 8000,
        what: "A sees B's read receipt",
    });
    const readers = a.getRoom(roomId).getUsersReadUpTo(a.getRoom(roomId).findEventById(msg));
    assert.ok(readers.includes(b.getUserId()), JSON.stringify(readers));
    a.stopClient();
    b.stopClient();
});

// ---------------------------------------------------------------------------
// Profile

scenario("display name change is seen by the other user as a member event", async () => {
    const { a, b, roomId } = await pair();
    const name = `Alice ${uniqueName("n")}`;
    await a.setDisplayName(name);
    const memberEv = await waitForTimelineEvent(
        b,
        roomId,
        (e) => e.getType() === "m.room.member" && e.getStateKey() === a.getUserId() && e.getContent().displayname === name,
        { timeout: 8000, what: "B sees A's new display name" },
    );
    assert.equal(memberEv.getContent().membership, "join");
    assert.equal(memberEv.getPrevContent().membership, "join");
    assert.equal(b.getRoom(roomId).getMember(a.getUserId()).name, name);
    const prof = await b.getProfileInfo(a.getUserId(), "displayname");
    assert.equal(prof.displayname, name);
    a.stopClient();
    b.stopClient();
});

// ---------------------------------------------------------------------------
// Room state and aliases

scenario("room name change and alias: seen by the other user, join by alias", async () => {
    const { a, b, roomId } = await pair({ preset: "public_chat", name: "first name" });
    await a.setRoomName(roomId, "second name");
    await waitFor(() => b.getRoom(roomId)?.name === "second name", { what: "B sees the new room name" });

    const alias = `#${uniqueName("al")}:localhost`;
    await a.createAlias(alias, roomId);
    const resolved = await b.getRoomIdForAlias(alias);
    assert.equal(resolved.room_id, roomId);
    assert.ok(Array.isArray(resolved.servers) && resolved.servers.includes("localhost"), JSON.stringify(resolved));

    const c = await server.newClient("c");
    await startSyncing(c);
    const joined = await c.joinRoom(alias);
    assert.equal(joined.roomId, roomId);
    await waitForRoom(c, roomId, "join");
    await waitFor(() => a.getRoom(roomId)?.getMember(c.getUserId())?.membership === "join", {
        what: "A sees C join by alias",
    });
    const unknown = await server.req(c.e2eUser, "GET", `directory/room/${enc(`#${uniqueName("nope")}:localhost`)}`);
    expectError(unknown, 404, "M_NOT_FOUND");
    a.stopClient();
    b.stopClient();
    c.stopClient();
});

// ---------------------------------------------------------------------------
// Sessions

scenario("logout ends that session only: its token is refused, the other device keeps working", async () => {
    const u = await server.register(uniqueName("lo"));
    const login = await server.req(null, "POST", "login", {
        type: "m.login.password",
        identifier: { type: "m.id.user", user: u.username },
        password: u.password,
    });
    assert.equal(login.status, 200, login.body);
    const second = server.client({
        userId: login.json.user_id,
        accessToken: login.json.access_token,
        deviceId: login.json.device_id,
    });
    await startSyncing(second);
    const loggedOut = armEvent(second, sdk.HttpApiEvent.SessionLoggedOut, () => true, {
        timeout: 10_000,
        what: "the SDK to notice its session ended",
    });
    const lo = await server.req({ accessToken: login.json.access_token }, "POST", "logout", {});
    assert.equal(lo.status, 200, lo.body);
    const who = await server.req({ accessToken: login.json.access_token }, "GET", "account/whoami");
    expectError(who, 401, "M_UNKNOWN_TOKEN");
    // The SDK's running sync is refused and it reports the logout.
    await loggedOut.promise;
    second.stopClient();
    const stillOk = await server.req(u, "GET", "account/whoami");
    assert.equal(stillOk.status, 200, stillOk.body);
    assert.equal(stillOk.json.user_id, u.userId);
    assert.equal(stillOk.json.device_id, u.deviceId);
});

// ---------------------------------------------------------------------------
// Membership: leave, kick, ban

scenario("leave: the other user sees it and the leaver can no longer send", async () => {
    const { a, b, roomId } = await pair();
    await b.leave(roomId);
    await waitFor(() => a.getRoom(roomId)?.getMember(b.getUserId())?.membership === "leave", {
        what: "A sees B leave",
    });
    await waitForRoom(b, roomId, "leave");
    const res = await server.req(b.e2eUser, "PUT", `rooms/${enc(roomId)}/send/m.room.message/${uniqueName("l")}`, {
        msgtype: "m.text",
        body: "after leaving",
    });
    expectError(res, 403, "M_FORBIDDEN");
    const joined = await b.getJoinedRooms();
    assert.ok(!joined.joined_rooms.includes(roomId));
    // What is said after B left stays hidden from B (history up to the leave only).
    const [later] = await sendTexts(server, a.e2eUser, roomId, ["said after B left"]);
    const hist = await allMessages(server, b.e2eUser, roomId);
    assert.ok(hist.length > 0, "B still reads the history up to its leave");
    assert.ok(!hist.some((e) => e.event_id === later), "no event after the leave in B's /messages");
    const ev = await server.req(b.e2eUser, "GET", `rooms/${enc(roomId)}/event/${enc(later)}`);
    assert.equal(ev.status, 404, `B fetched an event from after its leave: ${ev.body}`);
    a.stopClient();
    b.stopClient();
});

scenario("kick: the kicked user is out, cannot send, and cannot rejoin an invite-only room", async () => {
    const { a, b, roomId } = await pair();
    await a.kick(roomId, b.getUserId(), "bye");
    await waitForRoom(b, roomId, "leave");
    const memberEv = b.getRoom(roomId).currentState.getStateEvents("m.room.member", b.getUserId());
    assert.equal(memberEv.getSender(), a.getUserId(), "kick is a leave sent by someone else");
    assert.equal(memberEv.getContent().reason, "bye");

    const send = await server.req(b.e2eUser, "PUT", `rooms/${enc(roomId)}/send/m.room.message/${uniqueName("k")}`, {
        msgtype: "m.text",
        body: "still here?",
    });
    expectError(send, 403, "M_FORBIDDEN");
    const rejoin = await server.req(b.e2eUser, "POST", `rooms/${enc(roomId)}/join`, {});
    expectError(rejoin, 403, "M_FORBIDDEN");

    // A user without kick power cannot kick: B is invited back, joins, tries to kick A.
    await a.invite(roomId, b.getUserId());
    await waitForRoom(b, roomId, "invite");
    await b.joinRoom(roomId);
    const kickA = await server.req(b.e2eUser, "POST", `rooms/${enc(roomId)}/kick`, { user_id: a.getUserId() });
    expectError(kickA, 403, "M_FORBIDDEN");
    a.stopClient();
    b.stopClient();
});

scenario("ban: a banned user cannot send and cannot rejoin until unbanned", async () => {
    const { a, b, roomId } = await pair({ preset: "public_chat" });
    await a.ban(roomId, b.getUserId(), "spam");
    await waitForRoom(b, roomId, "ban");
    await waitFor(() => a.getRoom(roomId)?.getMember(b.getUserId())?.membership === "ban", { what: "A sees the ban" });

    const send = await server.req(b.e2eUser, "PUT", `rooms/${enc(roomId)}/send/m.room.message/${uniqueName("b")}`, {
        msgtype: "m.text",
        body: "let me in",
    });
    expectError(send, 403, "M_FORBIDDEN");
    // The room is public, so only the ban keeps B out.
    const rejoin = await server.req(b.e2eUser, "POST", `join/${enc(roomId)}`, {});
    expectError(rejoin, 403, "M_FORBIDDEN");
    const sdkErr = await sdkError(b.joinRoom(roomId));
    assert.equal(sdkErr.httpStatus, 403);

    // Nothing B tried is in the room.
    const hist = await allMessages(server, a.e2eUser, roomId);
    assert.ok(!hist.some((e) => e.sender === b.getUserId() && isMsg(e)));

    await a.unban(roomId, b.getUserId());
    const again = await server.req(b.e2eUser, "POST", `join/${enc(roomId)}`, {});
    assert.equal(again.status, 200, again.body);
    a.stopClient();
    b.stopClient();
});

// ---------------------------------------------------------------------------
// History visibility

async function laterJoiner(visibility) {
    const a = await server.register(uniqueName("ha"));
    const c = await server.register(uniqueName("hc"));
    const create = await server.req(a, "POST", "createRoom", {
        preset: "public_chat",
        initial_state: [{ type: "m.room.history_visibility", state_key: "", content: { history_visibility: visibility } }],
    });
    assert.equal(create.status, 200, create.body);
    const roomId = create.json.room_id;
    const hv = await server.req(a, "GET", `rooms/${enc(roomId)}/state/m.room.history_visibility/`);
    assert.equal(hv.json?.history_visibility, visibility, hv.body);
    const beforeIds = await sendTexts(server, a, roomId, ["before join 1", "before join 2"]);
    const j = await server.req(c, "POST", `join/${enc(roomId)}`, {});
    assert.equal(j.status, 200, j.body);
    const afterIds = await sendTexts(server, a, roomId, ["after join"]);
    const hist = (await allMessages(server, c, roomId)).filter(isMsg);
    const sync = await initialSync(server, c, JSON.stringify({ room: { timeline: { limit: 50 } } }));
    const syncMsgs = (sync.rooms?.join?.[roomId]?.timeline?.events ?? []).filter(isMsg);
    const ev = await server.req(c, "GET", `rooms/${enc(roomId)}/event/${enc(beforeIds[0])}`);
    return { a, c, roomId, beforeIds, afterIds, hist, syncMsgs, ev };
}

scenario('history_visibility "joined": a later joiner does not see earlier messages', async () => {
    const { beforeIds, afterIds, hist, syncMsgs, ev } = await laterJoiner("joined");
    assert.deepEqual(
        hist.map((e) => e.event_id),
        afterIds,
        "/messages shows only what was sent after the join",
    );
    assert.deepEqual(
        syncMsgs.map((e) => e.event_id),
        afterIds,
        "initial sync shows only what was sent after the join",
    );
    assert.ok(!hist.some((e) => beforeIds.includes(e.event_id)));
    assert.equal(ev.status, 404, `GET /event of a pre-join message must be hidden: ${ev.status} ${ev.body}`);
});

scenario('history_visibility "shared": a later joiner sees earlier messages', async () => {
    const { beforeIds, afterIds, hist, syncMsgs } = await laterJoiner("shared");
    assert.deepEqual(
        hist.map((e) => e.event_id),
        [...beforeIds, ...afterIds],
    );
    assert.deepEqual(
        syncMsgs.map((e) => e.event_id),
        [...beforeIds, ...afterIds],
    );
});

// ---------------------------------------------------------------------------
// Transaction IDs: scoped to one device and one request path (spec
// "Transaction identifiers").

scenario("txnId scope: another room or another device is a different transaction", async () => {
    const a = await server.register(uniqueName("ts"));
    const r1 = (await server.req(a, "POST", "createRoom", { preset: "private_chat" })).json.room_id;
    const r2 = (await server.req(a, "POST", "createRoom", { preset: "private_chat" })).json.room_id;
    const txn = uniqueName("same");
    const body = { msgtype: "m.text", body: "scoped" };
    const e1 = await server.req(a, "PUT", `rooms/${enc(r1)}/send/m.room.message/${txn}`, body);
    const e2 = await server.req(a, "PUT", `rooms/${enc(r2)}/send/m.room.message/${txn}`, body);
    assert.equal(e1.status, 200, e1.body);
    assert.equal(e2.status, 200, e2.body);
    assert.notEqual(e1.json.event_id, e2.json.event_id, "different path, different event");

    // A second device of the same user (password login).
    const login = await server.req(null, "POST", "login", {
        type: "m.login.password",
        identifier: { type: "m.id.user", user: a.userId },
        password: a.password,
    });
    assert.equal(login.status, 200, login.body);
    assert.notEqual(login.json.device_id, a.deviceId);
    const dev2 = { accessToken: login.json.access_token };
    const e3 = await server.req(dev2, "PUT", `rooms/${enc(r1)}/send/m.room.message/${txn}`, body);
    assert.equal(e3.status, 200, e3.body);
    assert.notEqual(e3.json.event_id, e1.json.event_id, "different device, different event");
    const hist = (await allMessages(server, a, r1)).filter(isMsg);
    assert.deepEqual(
        hist.map((e) => e.event_id),
        [e1.json.event_id, e3.json.event_id],
    );
});

// ---------------------------------------------------------------------------
// Single events and the sender's own echo

scenario("GET /rooms/{roomId}/event/{eventId} returns a visible event, 404 otherwise", async () => {
    const a = await server.register(uniqueName("ga"));
    const outsider = await server.register(uniqueName("go"));
    const { room_id: roomId } = (await server.req(a, "POST", "createRoom", { preset: "private_chat" })).json;
    const [id] = await sendTexts(server, a, roomId, ["fetch me"]);
    const ev = await server.req(a, "GET", `rooms/${enc(roomId)}/event/${enc(id)}`);
    assert.equal(ev.status, 200, ev.body);
    assert.equal(ev.json.event_id, id);
    assert.equal(ev.json.room_id, roomId);
    assert.equal(ev.json.sender, a.userId);
    assert.deepEqual(ev.json.content, { msgtype: "m.text", body: "fetch me" });
    const missing = await server.req(a, "GET", `rooms/${enc(roomId)}/event/${enc("$doesnotexist")}`);
    expectError(missing, 404, "M_NOT_FOUND");
    // The spec allows 404 for "not allowed to see" as well; 403 is not listed.
    const hidden = await server.req(outsider, "GET", `rooms/${enc(roomId)}/event/${enc(id)}`);
    assert.equal(hidden.status, 404, hidden.body);
    // And through the SDK (used for permalinks and replies).
    const viaSdk = await server.client(a).fetchRoomEvent(roomId, id);
    assert.equal(viaSdk.event_id, id);
});

scenario("the sender's own sync carries unsigned.transaction_id, other users' does not", async () => {
    const a = await server.register(uniqueName("ia"));
    const b = await server.register(uniqueName("ib"));
    const { room_id: roomId } = (await server.req(a, "POST", "createRoom", { preset: "public_chat" })).json;
    assert.equal((await server.req(b, "POST", `join/${enc(roomId)}`, {})).status, 200);
    const ta = (await initialSync(server, a)).next_batch;
    const tb = (await initialSync(server, b)).next_batch;
    const txn = uniqueName("echo");
    const sent = await server.req(a, "PUT", `rooms/${enc(roomId)}/send/m.room.message/${txn}`, {
        msgtype: "m.text",
        body: "echo",
    });
    assert.equal(sent.status, 200, sent.body);
    const id = sent.json.event_id;
    const sa = await syncRoomUntil(server, a, roomId, ta, (evs) => evs.some((e) => e.event_id === id));
    const sb = await syncRoomUntil(server, b, roomId, tb, (evs) => evs.some((e) => e.event_id === id));
    assert.equal(sa.events.find((e) => e.event_id === id).unsigned?.transaction_id, txn);
    assert.equal(sb.events.find((e) => e.event_id === id).unsigned?.transaction_id, undefined);
});

// ---------------------------------------------------------------------------
// The messages B sees through an incremental raw sync carry the fields the
// spec requires of a ClientEvent.

scenario("sync delivers well-formed client events", async () => {
    const a = await server.register(uniqueName("fa"));
    const b = await server.register(uniqueName("fb"));
    const { room_id: roomId } = (
        await server.req(a, "POST", "createRoom", { preset: "public_chat", name: "fields" })
    ).json;
    assert.equal((await server.req(b, "POST", `join/${enc(roomId)}`, {})).status, 200);
    const t0 = (await initialSync(server, b)).next_batch;
    const [id] = await sendTexts(server, a, roomId, ["fields"]);
    const s = await syncRoomUntil(server, b, roomId, t0, (evs) => evs.some((e) => e.event_id === id));
    const e = s.events.find((x) => x.event_id === id);
    assert.ok(e, "event arrived");
    assert.equal(e.type, "m.room.message");
    assert.equal(e.sender, a.userId);
    assert.equal(typeof e.origin_server_ts, "number");
    assert.deepEqual(e.content, { msgtype: "m.text", body: "fields" });
    assert.equal(e.room_id ?? roomId, roomId);
    // Events in /sync have no room_id (ClientEventWithoutRoomID) but /messages ones do.
    const page = await server.req(b, "GET", `rooms/${enc(roomId)}/messages`, undefined, { query: { dir: "b", limit: 1 } });
    assert.equal(page.json.chunk[0].event_id, id);
    assert.equal(page.json.chunk[0].room_id, roomId);
});
