package stateres

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"testing"

	"engram/dag"
)

// authCase is one clause of the authorisation rules, tested in every room
// version its want covers. want gives the rule number the clause has in
// each version (from the text of rooms/v<N>.md) or "ok".
type authCase struct {
	name  string
	setup func(f *fixture)
	ev    func(f *fixture) *dag.Event
	want  want
}

// Rule numbers by version family, for the m.room.member clauses.
// v1-v5: member=5 (aliases is 4); v6-v7: member=4; v8-v11: 4 with 4.2
// join_authorised_via_users_server; v12: 5 (rule 2 added).

var tpiSeed = bytes.Repeat([]byte{7}, ed25519.SeedSize)

func tpiKey() (ed25519.PrivateKey, string) {
	priv := ed25519.NewKeyFromSeed(tpiSeed)
	return priv, base64.RawStdEncoding.EncodeToString(priv.Public().(ed25519.PublicKey))
}

// signedTPI builds content.third_party_invite.signed for mxid and token,
// signed with the test key (or another key if wrongKey).
func signedTPI(mxid, token string, wrongKey bool) obj {
	priv, _ := tpiKey()
	if wrongKey {
		priv = ed25519.NewKeyFromSeed(bytes.Repeat([]byte{9}, ed25519.SeedSize))
	}
	var buf bytes.Buffer
	canonicalObject(&buf, map[string]json.RawMessage{"mxid": mustJSON(mxid), "token": mustJSON(token)})
	sig := ed25519.Sign(priv, buf.Bytes())
	return obj{
		"mxid":  mxid,
		"token": token,
		"signatures": obj{
			"identity.org": obj{"ed25519:0": base64.RawStdEncoding.EncodeToString(sig)},
		},
	}
}

func mustJSON(v any) json.RawMessage {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

func tpiEvent(f *fixture, sender, token string, listKey bool) *dag.Event {
	_, pub := tpiKey()
	content := obj{"display_name": "x", "key_validity_url": "https://identity.org/v", "public_key": pub}
	if listKey {
		content = obj{"display_name": "x", "public_key": "bm90IGEga2V5", "public_keys": []obj{{"public_key": pub}}}
	}
	return f.put(f.event(sender, typeThirdPartyInvite, sk(token), content))
}

func inviteTPI(f *fixture, sender, target string, tpi any) *dag.Event {
	return f.event(sender, typeMember, sk(target), obj{"membership": "invite", "third_party_invite": tpi})
}

func msg(f *fixture, sender string) *dag.Event {
	return f.event(sender, "m.room.message", nil, obj{"body": "hi", "msgtype": "m.text"})
}

func memberEv(f *fixture, sender, target, membership string) *dag.Event {
	return f.event(sender, typeMember, sk(target), obj{"membership": membership})
}

func plEv(f *fixture, sender string, content obj) *dag.Event {
	return f.event(sender, typePowerLevels, sk(""), content)
}

func createEv(f *fixture, content obj) *dag.Event {
	ev := f.event(alice, typeCreate, sk(""), content)
	ev.PrevEvents = nil
	if f.ver.RoomIDFromCreate {
		ev.ID = "$newcreate"
		ev.RoomID = "!newcreate"
	} else {
		ev.RoomID = "!new:a.org"
	}
	return ev
}

var authCases = []authCase{
	// 1. If type is m.room.create
	{name: "1 create allowed",
		ev:   func(f *fixture) *dag.Event { return createEv(f, createContent(f.ver, alice, nil)) },
		want: w("1-12:ok")},
	{name: "1.1 create with prev_events",
		ev: func(f *fixture) *dag.Event {
			ev := createEv(f, createContent(f.ver, alice, nil))
			ev.PrevEvents = []string{"$x:a.org"}
			return ev
		},
		want: w("1-12:1.1")},
	{name: "1.2 create room_id domain is not the sender's (v1-v11) or room_id present (v12)",
		ev: func(f *fixture) *dag.Event {
			ev := createEv(f, createContent(f.ver, alice, nil))
			if f.ver.RoomIDFromCreate {
				ev.RoomID = "!chosen:a.org"
			} else {
				ev.RoomID = "!new:other.org"
			}
			return ev
		},
		want: w("1-12:1.2")},
	{name: "1.2 v12 create with room_id in the raw PDU",
		ev: func(f *fixture) *dag.Event {
			ev := createEv(f, createContent(f.ver, alice, nil))
			ev.Raw = []byte(`{"room_id":"!newcreate","type":"m.room.create"}`)
			return ev
		},
		want: w("12:1.2")},
	{name: "1.3 create with unknown room_version",
		ev: func(f *fixture) *dag.Event {
			return createEv(f, createContent(f.ver, alice, obj{"room_version": "999"}))
		},
		want: w("1-12:1.3")},
	{name: "1.3 create with non-string room_version",
		ev:   func(f *fixture) *dag.Event { return createEv(f, createContent(f.ver, alice, obj{"room_version": 10})) },
		want: w("1-12:1.3")},
	{name: "1.4 create without creator (required until v10)",
		ev:   func(f *fixture) *dag.Event { return createEv(f, obj{"room_version": f.ver.ID}) },
		want: w("1-10:1.4 11-12:ok")},
	{name: "1.4 create with malformed additional_creators (v12)",
		ev: func(f *fixture) *dag.Event {
			return createEv(f, createContent(f.ver, alice, obj{"additional_creators": []any{"@ok:b.org", "not a user"}}))
		},
		want: w("1-11:ok 12:1.4")},
	{name: "1.4 create with additional_creators not an array (v12)",
		ev: func(f *fixture) *dag.Event {
			return createEv(f, createContent(f.ver, alice, obj{"additional_creators": "@ok:b.org"}))
		},
		want: w("1-11:ok 12:1.4")},
	{name: "1.4 create with valid additional_creators",
		ev: func(f *fixture) *dag.Event {
			return createEv(f, createContent(f.ver, alice, obj{"additional_creators": []string{"@bob:b.org"}}))
		},
		want: w("1-12:ok")},

	// v12 2. room_id must name the create event
	{name: "2 room_id does not name the create event (v12)",
		ev: func(f *fixture) *dag.Event {
			ev := msg(f, user)
			ev.RoomID = "!someotherhash"
			return ev
		},
		want: w("1-11:ok 12:2")},
	{name: "2.4 no create event in the state (v1-v11)",
		setup: func(f *fixture) { delete(f.state, createKey) },
		ev:    func(f *fixture) *dag.Event { return msg(f, user) },
		want:  w("1-11:2.4 12:2")},

	// m.federate
	{name: "3 m.federate false rejects a foreign sender",
		setup: func(f *fixture) {
			f.create.Content = js(createContent(f.ver, alice, obj{"m.federate": false}))
			f.create.ID += "nofed"
			if f.ver.RoomIDFromCreate {
				f.roomID = "!createhashnofed"
			}
		},
		ev:   func(f *fixture) *dag.Event { return msg(f, mod) },
		want: w("1-11:3 12:4")},
	{name: "3 m.federate false allows the create sender's server",
		setup: func(f *fixture) {
			f.create.Content = js(createContent(f.ver, alice, obj{"m.federate": false}))
			f.create.ID += "nofed"
			if f.ver.RoomIDFromCreate {
				f.roomID = "!createhashnofed"
			}
		},
		ev:   func(f *fixture) *dag.Event { return msg(f, admin) },
		want: w("1-12:ok")},

	// 4. If type is m.room.aliases (v1-v5)
	{name: "4.1 aliases without state_key",
		ev:   func(f *fixture) *dag.Event { return f.event(user, typeAliases, nil, obj{"aliases": []string{}}) },
		want: w("1-5:4.1 6-12:ok")},
	{name: "4.2 aliases state_key is not the sender's domain",
		ev: func(f *fixture) *dag.Event {
			return f.event(user, typeAliases, sk("other.org"), obj{"aliases": []string{}})
		},
		want: w("1-5:4.2 6-11:7 12:8")},
	{name: "4.3 aliases from a non-member for their own domain",
		ev: func(f *fixture) *dag.Event {
			return f.event(stranger, typeAliases, sk("d.org"), obj{"aliases": []string{}})
		},
		want: w("1-5:ok 6-11:5 12:6")},

	// m.room.member .1
	{name: "member without membership",
		ev:   func(f *fixture) *dag.Event { return f.event(user, typeMember, sk(user), obj{"displayname": "u"}) },
		want: w("1-5:5.1 6-11:4.1 12:5.1")},
	{name: "member with non-string membership",
		ev:   func(f *fixture) *dag.Event { return f.event(user, typeMember, sk(user), obj{"membership": 1}) },
		want: w("1-5:5.1 6-11:4.1 12:5.1")},
	{name: "member without state_key",
		ev:   func(f *fixture) *dag.Event { return f.event(user, typeMember, nil, obj{"membership": "join"}) },
		want: w("1-5:5.1 6-11:4.1 12:5.1")},
	// .2 join_authorised_via_users_server (v8+)
	{name: "member join_authorised_via_users_server is not a user ID",
		ev: func(f *fixture) *dag.Event {
			return f.event(stranger, typeMember, sk(stranger), obj{"membership": "join", "join_authorised_via_users_server": "nobody"})
		},
		want: w("1-7:ok 8-11:4.2.1 12:5.2.1")},

	// membership join
	{name: "join: creator's first join after create",
		setup: func(f *fixture) {
			f.state = StateEvents{createKey: f.create}
		},
		ev: func(f *fixture) *dag.Event {
			ev := memberEv(f, alice, alice, mJoin)
			ev.PrevEvents = []string{f.create.ID}
			return ev
		},
		want: w("1-12:ok")},
	{name: "join: creator is the create sender from v11, content.creator before",
		setup: func(f *fixture) {
			f.create.Content = js(obj{"creator": admin, "room_version": f.ver.ID})
			f.state = StateEvents{createKey: f.create}
		},
		ev: func(f *fixture) *dag.Event {
			ev := memberEv(f, alice, alice, mJoin)
			ev.PrevEvents = []string{f.create.ID}
			return ev
		},
		want: w("1-5:5.2.4 6-7:4.2.4 8-10:4.3.4 11:ok 12:ok")},
	{name: "join: creator join needs the create as only prev event",
		setup: func(f *fixture) {
			f.state = StateEvents{createKey: f.create}
		},
		ev: func(f *fixture) *dag.Event {
			ev := memberEv(f, alice, alice, mJoin)
			ev.PrevEvents = []string{f.create.ID, "$other:a.org"}
			return ev
		},
		want: w("1-5:5.2.4 6-7:4.2.4 8-11:4.3.4 12:5.3.4")},
	{name: "join: sender is not state_key",
		ev:   func(f *fixture) *dag.Event { return memberEv(f, admin, stranger, mJoin) },
		want: w("1-5:5.2.2 6-7:4.2.2 8-11:4.3.2 12:5.3.2")},
	{name: "join: sender is banned",
		ev:   func(f *fixture) *dag.Event { return memberEv(f, banned, banned, mJoin) },
		want: w("1-5:5.2.3 6-7:4.2.3 8-11:4.3.3 12:5.3.3")},
	{name: "join: invite rule admits the invited",
		setup: func(f *fixture) { f.setJR(jrInvite) },
		ev:    func(f *fixture) *dag.Event { return memberEv(f, invited, invited, mJoin) },
		want:  w("1-12:ok")},
	{name: "join: invite rule admits the joined (profile change)",
		setup: func(f *fixture) { f.setJR(jrInvite) },
		ev:    func(f *fixture) *dag.Event { return memberEv(f, user, user, mJoin) },
		want:  w("1-12:ok")},
	{name: "join: invite rule rejects the uninvited",
		setup: func(f *fixture) { f.setJR(jrInvite) },
		ev:    func(f *fixture) *dag.Event { return memberEv(f, stranger, stranger, mJoin) },
		want:  w("1-5:5.2.4 6-7:4.2.4 8-11:4.3.4 12:5.3.4")},
	{name: "join: no join_rules event counts as invite",
		setup: func(f *fixture) { delete(f.state, jrKey) },
		ev:    func(f *fixture) *dag.Event { return memberEv(f, stranger, stranger, mJoin) },
		want:  w("1-5:5.2.4 6-7:4.2.4 8-11:4.3.4 12:5.3.4")},
	{name: "join: knock rule admits the invited (v7+)",
		setup: func(f *fixture) { f.setJR(jrKnock) },
		ev:    func(f *fixture) *dag.Event { return memberEv(f, invited, invited, mJoin) },
		want:  w("1-5:5.2.6 6:4.2.6 7:ok 8-12:ok")},
	{name: "join: knock rule rejects the uninvited",
		setup: func(f *fixture) { f.setJR(jrKnock) },
		ev:    func(f *fixture) *dag.Event { return memberEv(f, stranger, stranger, mJoin) },
		want:  w("1-5:5.2.6 6:4.2.6 7:4.2.4 8-11:4.3.4 12:5.3.4")},
	{name: "join: restricted admits the invited (v8+)",
		setup: func(f *fixture) { f.setJR(jrRestricted) },
		ev:    func(f *fixture) *dag.Event { return memberEv(f, invited, invited, mJoin) },
		want:  w("1-5:5.2.6 6-7:4.2.6 8-12:ok")},
	{name: "join: restricted without join_authorised_via_users_server",
		setup: func(f *fixture) { f.setJR(jrRestricted) },
		ev:    func(f *fixture) *dag.Event { return memberEv(f, stranger, stranger, mJoin) },
		want:  w("1-5:5.2.6 6-7:4.2.6 8-11:4.3.5.2 12:5.3.5.2")},
	{name: "join: restricted, authoriser not joined",
		setup: func(f *fixture) { f.setJR(jrRestricted) },
		ev: func(f *fixture) *dag.Event {
			return f.event(stranger, typeMember, sk(stranger), obj{"membership": "join", "join_authorised_via_users_server": left})
		},
		want: w("1-5:5.2.6 6-7:4.2.6 8-11:4.3.5.2 12:5.3.5.2")},
	{name: "join: restricted, authoriser below invite level",
		setup: func(f *fixture) {
			f.setJR(jrRestricted)
			f.setPL(obj{"users": f.plUsers(nil), "invite": 50})
		},
		ev: func(f *fixture) *dag.Event {
			return f.event(stranger, typeMember, sk(stranger), obj{"membership": "join", "join_authorised_via_users_server": user})
		},
		want: w("1-5:5.2.6 6-7:4.2.6 8-11:4.3.5.2 12:5.3.5.2")},
	{name: "join: restricted, valid authoriser",
		setup: func(f *fixture) {
			f.setJR(jrRestricted)
			f.setPL(obj{"users": f.plUsers(nil), "invite": 50})
		},
		ev: func(f *fixture) *dag.Event {
			return f.event(stranger, typeMember, sk(stranger), obj{"membership": "join", "join_authorised_via_users_server": mod})
		},
		want: w("1-5:5.2.6 6-7:4.2.6 8-12:ok")},
	{name: "join: knock_restricted with a valid authoriser (v10+)",
		setup: func(f *fixture) { f.setJR(jrKnockRestricted) },
		ev: func(f *fixture) *dag.Event {
			return f.event(stranger, typeMember, sk(stranger), obj{"membership": "join", "join_authorised_via_users_server": mod})
		},
		want: w("1-5:5.2.6 6-7:4.2.6 8-9:4.3.7 10-12:ok")},
	{name: "join: knock_restricted admits the invited (v10+)",
		setup: func(f *fixture) { f.setJR(jrKnockRestricted) },
		ev:    func(f *fixture) *dag.Event { return memberEv(f, invited, invited, mJoin) },
		want:  w("1-5:5.2.6 6-7:4.2.6 8-9:4.3.7 10-12:ok")},
	{name: "join: restricted admits the joined (profile change)",
		setup: func(f *fixture) { f.setJR(jrRestricted) },
		ev:    func(f *fixture) *dag.Event { return memberEv(f, user, user, mJoin) },
		want:  w("1-5:5.2.6 6-7:4.2.6 8-12:ok")},
	{name: "join: only the create sender gets the creator's first join",
		setup: func(f *fixture) {
			f.create.Content = js(createContent(f.ver, alice, obj{"additional_creators": []string{mod}}))
			f.create.ID += "add"
			if f.ver.RoomIDFromCreate {
				f.roomID = "!createhashadd"
			}
			f.state = StateEvents{createKey: f.create}
		},
		ev: func(f *fixture) *dag.Event {
			ev := memberEv(f, mod, mod, mJoin)
			ev.PrevEvents = []string{f.create.ID}
			return ev
		},
		want: w("1-5:5.2.4 6-7:4.2.4 8-11:4.3.4 12:5.3.4")},
	{name: "join: public",
		ev:   func(f *fixture) *dag.Event { return memberEv(f, stranger, stranger, mJoin) },
		want: w("1-12:ok")},
	{name: "join: private (any other rule) rejects",
		setup: func(f *fixture) { f.setJR("private") },
		ev:    func(f *fixture) *dag.Event { return memberEv(f, stranger, stranger, mJoin) },
		want:  w("1-5:5.2.6 6-7:4.2.6 8-11:4.3.7 12:5.3.7")},

	// membership invite with third_party_invite
	{name: "invite 3pid: allowed with a valid signature",
		setup: func(f *fixture) { tpiEvent(f, admin, "tok", false) },
		ev: func(f *fixture) *dag.Event {
			return inviteTPI(f, admin, stranger, obj{"signed": signedTPI(stranger, "tok", false)})
		},
		want: w("1-12:ok")},
	{name: "invite 3pid: allowed via public_keys",
		setup: func(f *fixture) { tpiEvent(f, admin, "tok", true) },
		ev: func(f *fixture) *dag.Event {
			return inviteTPI(f, admin, stranger, obj{"signed": signedTPI(stranger, "tok", false)})
		},
		want: w("1-12:ok")},
	{name: "invite 3pid: target is banned",
		setup: func(f *fixture) { tpiEvent(f, admin, "tok", false) },
		ev: func(f *fixture) *dag.Event {
			return inviteTPI(f, admin, banned, obj{"signed": signedTPI(banned, "tok", false)})
		},
		want: w("1-5:5.3.1.1 6-7:4.3.1.1 8-11:4.4.1.1 12:5.4.1.1")},
	{name: "invite 3pid: no signed",
		setup: func(f *fixture) { tpiEvent(f, admin, "tok", false) },
		ev:    func(f *fixture) *dag.Event { return inviteTPI(f, admin, stranger, obj{"display_name": "x"}) },
		want:  w("1-5:5.3.1.2 6-7:4.3.1.2 8-11:4.4.1.2 12:5.4.1.2")},
	{name: "invite 3pid: signed without token",
		setup: func(f *fixture) { tpiEvent(f, admin, "tok", false) },
		ev: func(f *fixture) *dag.Event {
			return inviteTPI(f, admin, stranger, obj{"signed": obj{"mxid": stranger, "signatures": obj{}}})
		},
		want: w("1-5:5.3.1.3 6-7:4.3.1.3 8-11:4.4.1.3 12:5.4.1.3")},
	{name: "invite 3pid: mxid is not state_key",
		setup: func(f *fixture) { tpiEvent(f, admin, "tok", false) },
		ev: func(f *fixture) *dag.Event {
			return inviteTPI(f, admin, stranger, obj{"signed": signedTPI(user, "tok", false)})
		},
		want: w("1-5:5.3.1.4 6-7:4.3.1.4 8-11:4.4.1.4 12:5.4.1.4")},
	{name: "invite 3pid: no m.room.third_party_invite for the token",
		setup: func(f *fixture) { tpiEvent(f, admin, "tok", false) },
		ev: func(f *fixture) *dag.Event {
			return inviteTPI(f, admin, stranger, obj{"signed": signedTPI(stranger, "other", false)})
		},
		want: w("1-5:5.3.1.5 6-7:4.3.1.5 8-11:4.4.1.5 12:5.4.1.5")},
	{name: "invite 3pid: sender did not send the third party invite",
		setup: func(f *fixture) { tpiEvent(f, admin, "tok", false) },
		ev: func(f *fixture) *dag.Event {
			return inviteTPI(f, mod, stranger, obj{"signed": signedTPI(stranger, "tok", false)})
		},
		want: w("1-5:5.3.1.6 6-7:4.3.1.6 8-11:4.4.1.6 12:5.4.1.6")},
	{name: "invite 3pid: signature by another key",
		setup: func(f *fixture) { tpiEvent(f, admin, "tok", false) },
		ev: func(f *fixture) *dag.Event {
			return inviteTPI(f, admin, stranger, obj{"signed": signedTPI(stranger, "tok", true)})
		},
		want: w("1-5:5.3.1.8 6-7:4.3.1.8 8-11:4.4.1.8 12:5.4.1.8")},

	// membership invite
	{name: "invite: sender is not joined",
		ev:   func(f *fixture) *dag.Event { return memberEv(f, invited, stranger, mInvite) },
		want: w("1-5:5.3.2 6-7:4.3.2 8-11:4.4.2 12:5.4.2")},
	{name: "invite: target is joined",
		ev:   func(f *fixture) *dag.Event { return memberEv(f, admin, user, mInvite) },
		want: w("1-5:5.3.3 6-7:4.3.3 8-11:4.4.3 12:5.4.3")},
	{name: "invite: target is banned",
		ev:   func(f *fixture) *dag.Event { return memberEv(f, admin, banned, mInvite) },
		want: w("1-5:5.3.3 6-7:4.3.3 8-11:4.4.3 12:5.4.3")},
	{name: "invite: sender at invite level",
		ev:   func(f *fixture) *dag.Event { return memberEv(f, user, stranger, mInvite) },
		want: w("1-12:ok")},
	{name: "invite: sender below invite level",
		setup: func(f *fixture) { f.setPL(obj{"users": f.plUsers(nil), "invite": 50}) },
		ev:    func(f *fixture) *dag.Event { return memberEv(f, user, stranger, mInvite) },
		want:  w("1-5:5.3.5 6-7:4.3.5 8-11:4.4.5 12:5.4.5")},

	// membership leave
	{name: "leave: self from join",
		ev:   func(f *fixture) *dag.Event { return memberEv(f, user, user, mLeave) },
		want: w("1-12:ok")},
	{name: "leave: self from invite (reject invite)",
		ev:   func(f *fixture) *dag.Event { return memberEv(f, invited, invited, mLeave) },
		want: w("1-12:ok")},
	{name: "leave: self from knock (v7+)",
		ev:   func(f *fixture) *dag.Event { return memberEv(f, knocker, knocker, mLeave) },
		want: w("1-5:5.4.1 6:4.4.1 7-12:ok")},
	{name: "leave: self from leave",
		ev:   func(f *fixture) *dag.Event { return memberEv(f, left, left, mLeave) },
		want: w("1-5:5.4.1 6-7:4.4.1 8-11:4.5.1 12:5.5.1")},
	{name: "leave: self while banned",
		ev:   func(f *fixture) *dag.Event { return memberEv(f, banned, banned, mLeave) },
		want: w("1-5:5.4.1 6-7:4.4.1 8-11:4.5.1 12:5.5.1")},
	{name: "leave: kick by a non-member",
		ev:   func(f *fixture) *dag.Event { return memberEv(f, stranger, user, mLeave) },
		want: w("1-5:5.4.2 6-7:4.4.2 8-11:4.5.2 12:5.5.2")},
	{name: "leave: unban below the ban level",
		setup: func(f *fixture) { f.setPL(obj{"users": f.plUsers(nil), "ban": 75}) },
		ev:    func(f *fixture) *dag.Event { return memberEv(f, mod, banned, mLeave) },
		want:  w("1-5:5.4.3 6-7:4.4.3 8-11:4.5.3 12:5.5.3")},
	{name: "leave: unban at ban and kick level",
		ev:   func(f *fixture) *dag.Event { return memberEv(f, mod, banned, mLeave) },
		want: w("1-12:ok")},
	{name: "leave: kick a lower user",
		ev:   func(f *fixture) *dag.Event { return memberEv(f, mod, user, mLeave) },
		want: w("1-12:ok")},
	{name: "leave: kick an equal user",
		ev:   func(f *fixture) *dag.Event { return memberEv(f, mod, mod2, mLeave) },
		want: w("1-5:5.4.5 6-7:4.4.5 8-11:4.5.5 12:5.5.5")},
	{name: "leave: kick below the kick level",
		ev:   func(f *fixture) *dag.Event { return memberEv(f, user, invited, mLeave) },
		want: w("1-5:5.4.5 6-7:4.4.5 8-11:4.5.5 12:5.5.5")},

	// membership ban
	{name: "ban: sender is not joined",
		ev:   func(f *fixture) *dag.Event { return memberEv(f, left, user, mBan) },
		want: w("1-5:5.5.1 6-7:4.5.1 8-11:4.6.1 12:5.6.1")},
	{name: "ban: allowed",
		ev:   func(f *fixture) *dag.Event { return memberEv(f, mod, user, mBan) },
		want: w("1-12:ok")},
	{name: "ban: target has a higher level",
		ev:   func(f *fixture) *dag.Event { return memberEv(f, mod, admin, mBan) },
		want: w("1-5:5.5.3 6-7:4.5.3 8-11:4.6.3 12:5.6.3")},
	{name: "ban: sender below the ban level",
		ev:   func(f *fixture) *dag.Event { return memberEv(f, user, stranger, mBan) },
		want: w("1-5:5.5.3 6-7:4.5.3 8-11:4.6.3 12:5.6.3")},

	// membership knock (v7+)
	{name: "knock: on a knock room",
		setup: func(f *fixture) { f.setJR(jrKnock) },
		ev:    func(f *fixture) *dag.Event { return memberEv(f, stranger, stranger, mKnock) },
		want:  w("1-5:5.6 6:4.6 7-12:ok")},
	{name: "knock: join rule is not knock",
		ev:   func(f *fixture) *dag.Event { return memberEv(f, stranger, stranger, mKnock) },
		want: w("1-5:5.6 6:4.6 7:4.6.1 8-11:4.7.1 12:5.7.1")},
	{name: "knock: on a knock_restricted room (v10+)",
		setup: func(f *fixture) { f.setJR(jrKnockRestricted) },
		ev:    func(f *fixture) *dag.Event { return memberEv(f, stranger, stranger, mKnock) },
		want:  w("1-5:5.6 6:4.6 7:4.6.1 8-9:4.7.1 10-12:ok")},
	{name: "knock: sender is not state_key",
		setup: func(f *fixture) { f.setJR(jrKnock) },
		ev:    func(f *fixture) *dag.Event { return memberEv(f, admin, stranger, mKnock) },
		want:  w("1-5:5.6 6:4.6 7:4.6.2 8-11:4.7.2 12:5.7.2")},
	{name: "knock: already invited",
		setup: func(f *fixture) { f.setJR(jrKnock) },
		ev:    func(f *fixture) *dag.Event { return memberEv(f, invited, invited, mKnock) },
		want:  w("1-5:5.6 6:4.6 7:4.6.4 8-11:4.7.4 12:5.7.4")},
	{name: "knock: banned",
		setup: func(f *fixture) { f.setJR(jrKnock) },
		ev:    func(f *fixture) *dag.Event { return memberEv(f, banned, banned, mKnock) },
		want:  w("1-5:5.6 6:4.6 7:4.6.4 8-11:4.7.4 12:5.7.4")},
	{name: "knock: already joined",
		setup: func(f *fixture) { f.setJR(jrKnock) },
		ev:    func(f *fixture) *dag.Event { return memberEv(f, user, user, mKnock) },
		want:  w("1-5:5.6 6:4.6 7:4.6.4 8-11:4.7.4 12:5.7.4")},
	{name: "member: unknown membership",
		ev:   func(f *fixture) *dag.Event { return memberEv(f, user, user, "dance") },
		want: w("1-5:5.6 6:4.6 7:4.7 8-11:4.8 12:5.8")},

	// The sender's current membership state is not join
	{name: "sender not joined: stranger",
		ev:   func(f *fixture) *dag.Event { return msg(f, stranger) },
		want: w("1-5:6 6-11:5 12:6")},
	{name: "sender not joined: invited",
		ev:   func(f *fixture) *dag.Event { return msg(f, invited) },
		want: w("1-5:6 6-11:5 12:6")},
	{name: "sender joined: message",
		ev:   func(f *fixture) *dag.Event { return msg(f, user) },
		want: w("1-12:ok")},

	// If type is m.room.third_party_invite
	{name: "third_party_invite event at invite level",
		ev: func(f *fixture) *dag.Event {
			return f.event(user, typeThirdPartyInvite, sk("tok"), obj{"public_key": "x"})
		},
		want: w("1-12:ok")},
	{name: "third_party_invite event below invite level",
		setup: func(f *fixture) { f.setPL(obj{"users": f.plUsers(nil), "invite": 10}) },
		ev: func(f *fixture) *dag.Event {
			return f.event(user, typeThirdPartyInvite, sk("tok"), obj{"public_key": "x"})
		},
		want: w("1-5:7.1 6-11:6.1 12:7.1")},

	// required power level
	{name: "required level: state event below state_default",
		ev:   func(f *fixture) *dag.Event { return f.event(user, "m.room.topic", sk(""), obj{"topic": "t"}) },
		want: w("1-5:8 6-11:7 12:8")},
	{name: "required level: message below events_default",
		setup: func(f *fixture) { f.setPL(obj{"users": f.plUsers(nil), "events_default": 10}) },
		ev:    func(f *fixture) *dag.Event { return msg(f, user) },
		want:  w("1-5:8 6-11:7 12:8")},
	{name: "required level: events entry overrides state_default",
		setup: func(f *fixture) { f.setPL(obj{"users": f.plUsers(nil), "events": obj{"m.room.topic": 0}}) },
		ev:    func(f *fixture) *dag.Event { return f.event(user, "m.room.topic", sk(""), obj{"topic": "t"}) },
		want:  w("1-12:ok")},
	{name: "required level: events entry above the sender",
		setup: func(f *fixture) { f.setPL(obj{"users": f.plUsers(nil), "events": obj{"m.reaction": 1}}) },
		ev:    func(f *fixture) *dag.Event { return f.event(user, "m.reaction", nil, obj{}) },
		want:  w("1-5:8 6-11:7 12:8")},
	{name: "required level: redactions follow events, not redact (v3+)",
		ev: func(f *fixture) *dag.Event {
			ev := f.event(user, typeRedaction, nil, obj{})
			ev.Redacts = "$target:a.org"
			return ev
		},
		want: w("1-2:11.3 3-12:ok")},

	// state_key starting with @
	{name: "state_key names another user",
		ev:   func(f *fixture) *dag.Event { return f.event(admin, "m.custom", sk(user), obj{}) },
		want: w("1-5:9 6-11:8 12:9")},
	{name: "state_key is the sender",
		ev:   func(f *fixture) *dag.Event { return f.event(admin, "m.custom", sk(admin), obj{}) },
		want: w("1-12:ok")},

	// m.room.power_levels
	{name: "power levels: first one is allowed",
		setup: func(f *fixture) { delete(f.state, plKey) },
		ev:    func(f *fixture) *dag.Event { return plEv(f, alice, obj{"users": obj{admin: 100}}) },
		want:  w("1-12:ok")},
	{name: "power levels: users key is not a user ID",
		ev:   func(f *fixture) *dag.Event { return plEv(f, admin, obj{"users": f.plUsers(obj{"nobody": 10})}) },
		want: w("1-5:10.1 6-9:9.1 10-11:9.3 12:10.3")},
	{name: "power levels: users is not an object",
		ev:   func(f *fixture) *dag.Event { return plEv(f, admin, obj{"users": []int{1}}) },
		want: w("1-5:10.1 6-9:9.1 10-11:9.3 12:10.3")},
	{name: "power levels: users value is a string",
		ev:   func(f *fixture) *dag.Event { return plEv(f, admin, obj{"users": f.plUsers(obj{mod: "50"})}) },
		want: w("1-9:ok 10-11:9.3 12:10.3")},
	{name: "power levels: users value is a non-integer string",
		ev:   func(f *fixture) *dag.Event { return plEv(f, admin, obj{"users": f.plUsers(obj{mod: "fifty"})}) },
		want: w("1-5:10.1 6-9:9.1 10-11:9.3 12:10.3")},
	{name: "power levels: users value is a float",
		ev:   func(f *fixture) *dag.Event { return plEv(f, admin, obj{"users": f.plUsers(obj{mod: 50.5})}) },
		want: w("1-5:ok 6-9:9.1 10-11:9.3 12:10.3")},
	{name: "power levels: ban is a string",
		ev:   func(f *fixture) *dag.Event { return plEv(f, admin, obj{"users": f.plUsers(nil), "ban": "50"}) },
		want: w("1-9:ok 10-11:9.1 12:10.1")},
	{name: "power levels: events value is a string",
		ev: func(f *fixture) *dag.Event {
			return plEv(f, admin, obj{"users": f.plUsers(nil), "events": obj{"m.room.topic": "50"}})
		},
		want: w("1-9:ok 10-11:9.2 12:10.2")},
	{name: "power levels: notifications value is a string",
		ev: func(f *fixture) *dag.Event {
			return plEv(f, admin, obj{"users": f.plUsers(nil), "notifications": obj{"room": "50"}})
		},
		want: w("1-9:ok 10-11:9.2 12:10.2")},
	{name: "power levels: users names the room creator (v12)",
		ev:   func(f *fixture) *dag.Event { return plEv(f, admin, obj{"users": f.plUsers(obj{alice: 100})}) },
		want: w("1-11:ok 12:10.4")},
	{name: "power levels: raising a level above the sender's",
		ev:   func(f *fixture) *dag.Event { return plEv(f, mod, obj{"users": f.plUsers(nil), "ban": 75}) },
		want: w("1-5:10.3 6-9:9.3 10-11:9.5 12:10.6")},
	{name: "power levels: changing a level that is above the sender's",
		setup: func(f *fixture) { f.setPL(obj{"users": f.plUsers(nil), "ban": 75}) },
		ev:    func(f *fixture) *dag.Event { return plEv(f, mod, obj{"users": f.plUsers(nil), "ban": 40}) },
		want:  w("1-5:10.3 6-9:9.3 10-11:9.5 12:10.6")},
	{name: "power levels: same value written differently is no change",
		setup: func(f *fixture) { f.setPL(obj{"users": f.plUsers(nil), "ban": 75}) },
		ev:    func(f *fixture) *dag.Event { return plEv(f, mod, obj{"users": f.plUsers(nil), "ban": "075"}) },
		want:  w("1-9:ok 10-11:9.1 12:10.1")},
	{name: "power levels: changing a level within the sender's",
		ev:   func(f *fixture) *dag.Event { return plEv(f, mod, obj{"users": f.plUsers(nil), "kick": 40}) },
		want: w("1-12:ok")},
	{name: "power levels: removing an events entry above the sender's",
		setup: func(f *fixture) { f.setPL(obj{"users": f.plUsers(nil), "events": obj{"m.room.name": 75}}) },
		ev:    func(f *fixture) *dag.Event { return plEv(f, mod, obj{"users": f.plUsers(nil)}) },
		want:  w("1-5:10.4 6-9:9.4 10-11:9.6 12:10.7")},
	{name: "power levels: adding an events entry above the sender's",
		ev: func(f *fixture) *dag.Event {
			return plEv(f, mod, obj{"users": f.plUsers(nil), "events": obj{"m.room.name": 75}})
		},
		want: w("1-5:10.5 6-9:9.5 10-11:9.7 12:10.8")},
	{name: "power levels: changing a notifications entry above the sender's (v6+)",
		setup: func(f *fixture) { f.setPL(obj{"users": f.plUsers(nil), "notifications": obj{"room": 75}}) },
		ev: func(f *fixture) *dag.Event {
			return plEv(f, mod, obj{"users": f.plUsers(nil), "notifications": obj{"room": 40}})
		},
		want: w("1-5:ok 6-9:9.4 10-11:9.6 12:10.7")},
	{name: "power levels: adding a notifications entry above the sender's (v6+)",
		ev: func(f *fixture) *dag.Event {
			return plEv(f, mod, obj{"users": f.plUsers(nil), "notifications": obj{"room": 75}})
		},
		want: w("1-5:ok 6-9:9.5 10-11:9.7 12:10.8")},
	{name: "power levels: removing a user at the sender's level",
		ev:   func(f *fixture) *dag.Event { return plEv(f, mod, obj{"users": f.plUsers(obj{mod2: nil})}) },
		want: w("1-5:10.6 6-9:9.6 10-11:9.8 12:10.9")},
	{name: "power levels: lowering the sender's own level",
		ev:   func(f *fixture) *dag.Event { return plEv(f, mod, obj{"users": f.plUsers(obj{mod: 10})}) },
		want: w("1-12:ok")},
	{name: "power levels: giving a user more than the sender's level",
		ev:   func(f *fixture) *dag.Event { return plEv(f, mod, obj{"users": f.plUsers(obj{user: 75})}) },
		want: w("1-5:10.7 6-9:9.7 10-11:9.9 12:10.10")},
	{name: "power levels: giving a user the sender's level",
		ev:   func(f *fixture) *dag.Event { return plEv(f, mod, obj{"users": f.plUsers(obj{user: 50})}) },
		want: w("1-12:ok")},
	{name: "power levels: content is not an object",
		ev:   func(f *fixture) *dag.Event { return f.event(admin, typePowerLevels, sk(""), "[]") },
		want: w("1-12:format")},

	// 11. m.room.redaction (v1, v2)
	{name: "redaction: same server as the redacted event (v1, v2)",
		ev: func(f *fixture) *dag.Event {
			ev := f.event(user, typeRedaction, nil, obj{})
			ev.Redacts = "$target:c.org"
			return ev
		},
		want: w("1-12:ok")},
	{name: "redaction: at the redact level",
		ev: func(f *fixture) *dag.Event {
			ev := f.event(mod, typeRedaction, nil, obj{})
			ev.Redacts = "$target:a.org"
			return ev
		},
		want: w("1-12:ok")},

	// creators
	{name: "creators: creator bans an admin (infinite in v12)",
		ev:   func(f *fixture) *dag.Event { return memberEv(f, alice, admin, mBan) },
		want: w("1-5:5.5.3 6-7:4.5.3 8-11:4.6.3 12:ok")},
	{name: "creators: an admin cannot kick a creator",
		ev:   func(f *fixture) *dag.Event { return memberEv(f, admin, alice, mLeave) },
		want: w("1-5:5.4.5 6-7:4.4.5 8-11:4.5.5 12:5.5.5")},
	{name: "creators: additional creator bans an admin (v12)",
		setup: func(f *fixture) {
			f.create.Content = js(createContent(f.ver, alice, obj{"additional_creators": []string{mod}}))
			f.create.ID += "add"
			if f.ver.RoomIDFromCreate {
				f.roomID = "!createhashadd"
				f.setPL(obj{"users": f.plUsers(obj{mod: nil})})
			}
		},
		ev:   func(f *fixture) *dag.Event { return memberEv(f, mod, admin, mBan) },
		want: w("1-5:5.5.3 6-7:4.5.3 8-11:4.6.3 12:ok")},
	{name: "creators: without power levels the creator has 100 (v1-v11), infinity (v12)",
		setup: func(f *fixture) { delete(f.state, plKey) },
		ev:    func(f *fixture) *dag.Event { return f.event(alice, "m.room.topic", sk(""), obj{"topic": "t"}) },
		want:  w("1-12:ok")},
	{name: "creators: without power levels others have 0",
		setup: func(f *fixture) { delete(f.state, plKey) },
		ev:    func(f *fixture) *dag.Event { return f.event(admin, "m.room.topic", sk(""), obj{"topic": "t"}) },
		want:  w("1-5:8 6-11:7 12:8")},
	{name: "creators: content.creator counts until v10, the sender from v11",
		setup: func(f *fixture) {
			delete(f.state, plKey)
			f.create.Content = js(obj{"creator": admin, "room_version": f.ver.ID})
		},
		ev:   func(f *fixture) *dag.Event { return f.event(admin, "m.room.topic", sk(""), obj{"topic": "t"}) },
		want: w("1-5:ok 6-10:ok 11:7 12:8")},

	// format
	{name: "format: sender is not a user ID",
		ev:   func(f *fixture) *dag.Event { return f.event("alice", "m.room.message", nil, obj{}) },
		want: w("1-12:format")},
}

func TestAuthRules(t *testing.T) {
	for _, c := range authCases {
		for _, ver := range allVersions {
			exp, ok := c.want[versionNumber(ver)]
			if !ok {
				continue
			}
			t.Run(c.name+"/v"+ver.ID, func(t *testing.T) {
				f := newFixture(t, ver)
				if c.setup != nil {
					c.setup(f)
				}
				ev := c.ev(f)
				checkOutcome(t, Allowed(ev, f.state), exp)
			})
		}
	}
}

// Every version must be covered by at least one case of every clause
// family, so that a version whose numbering differs cannot go untested.
func TestAuthRulesCoverEveryVersion(t *testing.T) {
	for _, c := range authCases {
		if len(c.want) == 0 {
			t.Errorf("%s: no versions", c.name)
		}
	}
	seen := map[int]int{}
	for _, c := range authCases {
		for v := range c.want {
			seen[v]++
		}
	}
	for _, ver := range allVersions {
		if seen[versionNumber(ver)] < 50 {
			t.Errorf("v%s: only %d cases", ver.ID, seen[versionNumber(ver)])
		}
	}
}

func TestAllowedBadInput(t *testing.T) {
	f := newFixture(t, &dag.RoomV10)
	if err := Allowed(nil, f.state); err == nil || IsDenied(err) {
		t.Fatalf("nil event: %v", err)
	}
	ev := msg(f, user)
	ev.Version = nil
	if err := Allowed(ev, f.state); err != ErrNoVersion {
		t.Fatalf("nil version: %v", err)
	}
	// No state at all: denied, not allowed by default.
	ev = msg(f, user)
	if err := Allowed(ev, nil); !IsDenied(err) {
		t.Fatalf("nil state: %v", err)
	}
	// Garbage content on a member event.
	ev = f.event(user, typeMember, sk(user), "not json")
	checkOutcome(t, Allowed(ev, f.state), "4.1")
	// A state entry of the wrong type under a key is not trusted.
	f.state[plKey] = msg(f, admin)
	f.state[dag.StateKeyTuple{Type: typeMember, StateKey: stranger}] = f.event(stranger, "m.room.message", nil, obj{"membership": "join"})
	checkOutcome(t, Allowed(msg(f, stranger), f.state), "5")
}

func TestDeniedErrorMessage(t *testing.T) {
	f := newFixture(t, &dag.RoomV11)
	err := Allowed(msg(f, stranger), f.state)
	if got, want := err.Error(), "stateres: rejected by rule 5: sender is not joined"; got != want {
		t.Fatalf("got %q want %q", got, want)
	}
}
