package federation

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"engram/dag"
	"engram/dag/rooms"
	"engram/projections"
)

func roomErr(err error) error {
	var fe *rooms.ForbiddenError
	switch {
	case errors.Is(err, rooms.ErrUnknownRoom):
		return ferr(404, "M_NOT_FOUND", "Unknown room")
	case errors.As(err, &fe):
		return ferr(403, "M_FORBIDDEN", fe.Error())
	case errors.Is(err, rooms.ErrBadEvent):
		return ferr(400, "M_BAD_JSON", err.Error())
	}
	return err
}

// handleMakeMembership serves make_join and make_leave.
func (f *Federation) handleMakeMembership(membership string) func(*req) error {
	return func(r *req) error {
		room, user := r.param("roomId"), r.param("userId")
		if dag.ServerName(user) != r.origin {
			return ferr(403, "M_FORBIDDEN", "User is not from the requesting server")
		}
		content := map[string]string{"membership": membership}
		if membership == "join" {
			vid, err := f.store.RoomVersion(room)
			if err != nil {
				return ferr(404, "M_NOT_FOUND", "Unknown room")
			}
			// "ver: The room versions the sending server has support for";
			// absent means only version 1.
			vers := r.ctx.QueryArgs().PeekMulti("ver")
			ok := len(vers) == 0 && vid == "1"
			for _, v := range vers {
				ok = ok || string(v) == vid
			}
			if !ok {
				b, _ := json.Marshal(map[string]string{"errcode": "M_INCOMPATIBLE_ROOM_VERSION", "error": "Your server does not support the room version", "room_version": vid})
				r.raw(400, b)
				return nil
			}
			via, err := f.restrictedJoin(room, user, dag.Version(vid))
			if err != nil {
				return err
			}
			if via != "" {
				content["join_authorised_via_users_server"] = via
			}
		}
		cb, _ := json.Marshal(content)
		tmpl, vid, err := f.rooms.MakeTemplate(room, user, "m.room.member", &user, cb)
		if err != nil {
			return roomErr(err)
		}
		return r.json(map[string]any{"event": json.RawMessage(tmpl), "room_version": vid})
	}
}

// receiveMembership sequences a membership event another server sent to
// send_join, send_leave or send_knock; what names it in the refusal.
func (f *Federation) receiveMembership(ev *dag.Event, what string) error {
	res, err := f.rooms.Receive(ev)
	if err != nil {
		return roomErr(err)
	}
	if res.Status != projections.Accepted {
		return ferr(403, "M_FORBIDDEN", what+" not allowed: "+res.Reason)
	}
	return nil
}

// acceptMembership parses and verifies a signed membership event sent to
// send_join or send_leave.
func (f *Federation) acceptMembership(r *req, membership string) (*dag.Event, error) {
	room, id := r.param("roomId"), r.param("eventId")
	vid, err := f.store.RoomVersion(room)
	if err != nil {
		return nil, ferr(404, "M_NOT_FOUND", "Unknown room")
	}
	ev, err := dag.ParseEvent(r.body, dag.Version(vid))
	if err != nil {
		return nil, ferr(400, "M_BAD_JSON", err.Error())
	}
	if ev.ID != id || ev.RoomID != room {
		return nil, ferr(400, "M_BAD_JSON", "Event ID or room ID does not match the path")
	}
	if ev.Type != "m.room.member" || ev.StateKey == nil || *ev.StateKey != ev.Sender || membershipOf(ev.Content) != membership {
		return nil, ferr(400, "M_BAD_JSON", "Not a "+membership+" event of its sender")
	}
	if dag.ServerName(ev.Sender) != r.origin {
		return nil, ferr(403, "M_FORBIDDEN", "Sender is not from the requesting server")
	}
	if membership == "join" {
		// Our signature first: a restricted join must carry it to verify.
		if ev, err = f.countersignJoin(ev); err != nil {
			return nil, err
		}
	}
	if ev, err = f.keys.VerifyEvent(ev); err != nil {
		return nil, ferr(403, "M_FORBIDDEN", "Bad signature: "+err.Error())
	}
	return ev, nil
}

func (f *Federation) handleSendJoin(r *req) error {
	t0 := time.Now()
	ev, err := f.acceptMembership(r, "join")
	if err != nil {
		return err
	}
	t1 := time.Now()
	before, err := f.rooms.StateBefore(ev)
	if err != nil {
		return roomErr(err)
	}
	t2 := time.Now()
	if err := f.receiveMembership(ev, "Join"); err != nil {
		return err
	}
	t3 := time.Now()
	stateIDs := make([]string, 0, len(before))
	for _, id := range before {
		stateIDs = append(stateIDs, id)
	}
	sort.Strings(stateIDs)
	chainIDs, err := f.rooms.AuthChain(append(append([]string(nil), stateIDs...), ev.ID))
	if err != nil {
		return err
	}
	t4 := time.Now()
	b, err := f.sendJoinAnswer(ev, stateIDs, chainIDs)
	if err != nil {
		return err
	}
	r.raw(200, b)
	f.logger.Debug("send_join answered", "room", ev.RoomID, "state", len(stateIDs), "auth_chain", len(chainIDs), "bytes", len(b),
		"verify", t1.Sub(t0), "state_before", t2.Sub(t1), "sequence", t3.Sub(t2), "auth_chain_walk", t4.Sub(t3), "encode", time.Since(t4))
	return nil
}

// sendJoinAnswer is the body of a send_join (v2) answer, written from the
// stored PDU bytes of the state before the join and of its auth chain:
// no event is decoded or re-encoded. servers_in_room ("the servers active
// in the room (ie, those with joined members) before the join") comes
// from the same records.
func (f *Federation) sendJoinAnswer(ev *dag.Event, stateIDs, chainIDs []string) ([]byte, error) {
	state, err := f.records(stateIDs)
	if err != nil {
		return nil, err
	}
	chain, err := f.records(chainIDs)
	if err != nil {
		return nil, err
	}
	size := 256 + len(ev.Raw)
	servers := map[string]bool{f.cfg.ServerName: true}
	for _, rec := range state {
		if rec == nil {
			continue
		}
		size += len(rec.PDU) + 1
		if rec.Type == "m.room.member" && rec.StateKey != nil && rec.Membership == "join" {
			servers[dag.ServerName(*rec.StateKey)] = true
		}
	}
	for _, rec := range chain {
		if rec != nil {
			size += len(rec.PDU) + 1
		}
	}
	sl := make([]string, 0, len(servers))
	for s := range servers {
		if s != "" {
			sl = append(sl, s)
			size += len(s) + 3
		}
	}
	sort.Strings(sl)
	b := make([]byte, 0, size)
	b = append(b, `{"origin":`...)
	b = strconv.AppendQuote(b, f.cfg.ServerName)
	b = append(b, `,"members_omitted":false,"event":`...)
	b = append(b, ev.Raw...)
	b = append(b, `,"state":`...)
	b = appendPDUList(b, state)
	b = append(b, `,"auth_chain":`...)
	b = appendPDUList(b, chain)
	b = append(b, `,"servers_in_room":`...)
	sb, err := json.Marshal(sl)
	if err != nil {
		return nil, err
	}
	b = append(b, sb...)
	return append(b, '}'), nil
}

// appendPDUList appends a JSON array of the records' PDUs (nil records,
// events not held, are left out).
func appendPDUList(b []byte, recs []*projections.EventRecord) []byte {
	b = append(b, '[')
	first := true
	for _, rec := range recs {
		if rec == nil || len(rec.PDU) == 0 {
			continue
		}
		if !first {
			b = append(b, ',')
		}
		first = false
		b = append(b, rec.PDU...)
	}
	return append(b, ']')
}

// records reads the records of events, in parallel for many; an event not
// held comes back nil.
func (f *Federation) records(ids []string) ([]*projections.EventRecord, error) {
	out := make([]*projections.EventRecord, len(ids))
	errs := make([]error, len(ids))
	rooms.Parallel(len(ids), func(i int) {
		rec, _, err := f.store.Event(ids[i])
		if err != nil {
			if !errors.Is(err, projections.ErrNotFound) {
				errs[i] = err
			}
			return
		}
		out[i] = rec
	})
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return out, nil
}

func (f *Federation) handleSendLeave(r *req) error {
	ev, err := f.acceptMembership(r, "leave")
	if err != nil {
		return err
	}
	if err := f.receiveMembership(ev, "Leave"); err != nil {
		return err
	}
	return r.json(struct{}{})
}

// verifyPDUs parses the state and auth chain of a send_join answer and
// checks their signatures and content hashes (receipt checks 1 to 3), in
// parallel on every core and outside any lock. An event that fails to
// parse or is not validly signed is dropped; one whose content hash does
// not match comes back redacted. An event listed in both is checked once.
func (f *Federation) verifyPDUs(stateRaw, chainRaw []json.RawMessage, ver *dag.RoomVersion) (state, chain []*dag.Event) {
	raws := make([]json.RawMessage, 0, len(stateRaw)+len(chainRaw))
	raws = append(append(raws, stateRaw...), chainRaw...)
	// Identical bytes are one event: check them once.
	first := make(map[string]int, len(chainRaw))
	dup := make([]int, len(raws))
	for i := range raws {
		dup[i] = -1
	}
	for i := len(stateRaw); i < len(raws); i++ {
		first[string(raws[i])] = i
	}
	if len(first) > 0 {
		for i := range stateRaw {
			if j, ok := first[string(raws[i])]; ok {
				dup[j] = i
			}
		}
	}
	evs := make([]*dag.Event, len(raws))
	rooms.Parallel(len(raws), func(i int) {
		if dup[i] >= 0 {
			return
		}
		ev, err := dag.ParseEvent(raws[i], ver)
		if err != nil {
			return
		}
		if ev, err = f.keys.VerifyEvent(ev); err == nil {
			evs[i] = ev
		}
	})
	for i, j := range dup {
		if j >= 0 {
			evs[i] = evs[j]
		}
	}
	keep := func(evs []*dag.Event) []*dag.Event {
		out := evs[:0]
		for _, ev := range evs {
			if ev != nil {
				out = append(out, ev)
			}
		}
		return out
	}
	return keep(evs[:len(stateRaw):len(stateRaw)]), keep(evs[len(stateRaw):])
}

// sendJoinResp is the part of a send_join answer the joining server uses.
type sendJoinResp struct {
	State     []json.RawMessage `json:"state"`
	AuthChain []json.RawMessage `json:"auth_chain"`
	Event     json.RawMessage   `json:"event"`
}

// parseSendJoin splits a send_join answer into its PDUs in one pass over
// the structure (strings and nesting only): the thousands of events of a
// large room are each validated by dag.ParseEvent afterwards, on every
// core, so checking them here too (as encoding/json does, twice) is wasted.
// Whatever the fast pass does not expect goes to encoding/json.
func parseSendJoin(b []byte) (sendJoinResp, error) {
	var out sendJoinResp
	if scanSendJoin(b, &out) {
		return out, nil
	}
	out = sendJoinResp{}
	err := json.Unmarshal(b, &out)
	return out, err
}

func scanSendJoin(b []byte, out *sendJoinResp) bool {
	i := skipSpace(b, 0)
	if i >= len(b) || b[i] != '{' {
		return false
	}
	i = skipSpace(b, i+1)
	if i < len(b) && b[i] == '}' {
		return skipSpace(b, i+1) == len(b)
	}
	for {
		if i >= len(b) || b[i] != '"' {
			return false
		}
		end, ok := skipJSONString(b, i)
		if !ok {
			return false
		}
		key := b[i+1 : end-1]
		if bytes.IndexByte(key, '\\') >= 0 {
			return false // an escaped key: leave it to encoding/json
		}
		for _, k := range []string{"state", "auth_chain", "event"} {
			if string(key) != k && strings.EqualFold(string(key), k) {
				return false // encoding/json matches keys case-insensitively
			}
		}
		i = skipSpace(b, end)
		if i >= len(b) || b[i] != ':' {
			return false
		}
		i = skipSpace(b, i+1)
		switch string(key) {
		case "state", "auth_chain":
			var elems []json.RawMessage
			if i, ok = scanArray(b, i, &elems); !ok {
				return false
			}
			if string(key) == "state" {
				out.State = elems
			} else {
				out.AuthChain = elems
			}
		default:
			start := i
			if i, ok = skipJSONValue(b, i); !ok {
				return false
			}
			if string(key) == "event" {
				out.Event = b[start:i]
			}
		}
		i = skipSpace(b, i)
		if i >= len(b) {
			return false
		}
		switch b[i] {
		case ',':
			i = skipSpace(b, i+1)
		case '}':
			return skipSpace(b, i+1) == len(b)
		default:
			return false
		}
	}
}

// scanArray appends the elements of the array at b[i] (subslices of b).
func scanArray(b []byte, i int, elems *[]json.RawMessage) (int, bool) {
	if i >= len(b) || b[i] != '[' {
		return i, false
	}
	i = skipSpace(b, i+1)
	if i < len(b) && b[i] == ']' {
		return i + 1, true
	}
	for {
		start := i
		end, ok := skipJSONValue(b, i)
		if !ok {
			return i, false
		}
		*elems = append(*elems, json.RawMessage(b[start:end]))
		i = skipSpace(b, end)
		if i >= len(b) {
			return i, false
		}
		switch b[i] {
		case ',':
			i = skipSpace(b, i+1)
		case ']':
			return i + 1, true
		default:
			return i, false
		}
	}
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// skipJSONString returns the index after the string starting at b[i].
func skipJSONString(b []byte, i int) (int, bool) {
	for j := i + 1; j < len(b); j++ {
		switch b[j] {
		case '\\':
			j++
		case '"':
			return j + 1, true
		}
	}
	return len(b), false
}

// skipJSONValue returns the index after the value starting at b[i],
// following strings and nesting only.
func skipJSONValue(b []byte, i int) (int, bool) {
	if i >= len(b) {
		return i, false
	}
	switch b[i] {
	case '"':
		return skipJSONString(b, i)
	case '{', '[':
		depth := 0
		for j := i; j < len(b); j++ {
			switch b[j] {
			case '"':
				end, ok := skipJSONString(b, j)
				if !ok {
					return end, false
				}
				j = end - 1
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return j + 1, true
				}
			}
		}
		return len(b), false
	case '}', ']', ',', ':':
		return i, false
	}
	j := i
	for j < len(b) && !strings.ContainsRune(",}] \t\n\r", rune(b[j])) {
		j++
	}
	return j, j > i
}

// pdus returns the stored bytes of events.
func (f *Federation) pdus(ids []string) ([]json.RawMessage, error) {
	out := make([]json.RawMessage, 0, len(ids))
	for _, id := range ids {
		rec, _, err := f.store.Event(id)
		if err != nil {
			if errors.Is(err, projections.ErrNotFound) {
				continue
			}
			return nil, err
		}
		out = append(out, rec.PDU)
	}
	return out, nil
}

// Join makes a local user join a room through one of the via servers
// (make_join, sign, send_join v2) and records the room. It returns the
// room ID.
func (f *Federation) Join(room, user string, via []string) (string, error) {
	if s := dag.ServerName(room); s != "" && !slices.Contains(via, s) {
		via = append(via, s)
	}
	// Invited (or knocked) over federation: the inviting server is in
	// the room.
	if s := f.inviterServer(room, user); s != "" && !slices.Contains(via, s) {
		via = append(via, s)
	}
	var last error = errors.New("federation: no server to join through")
	for _, srv := range via {
		if srv == f.cfg.ServerName || srv == "" {
			continue
		}
		if err := f.joinVia(room, user, srv); err != nil {
			last = err
			f.logger.Info("join failed", "room", room, "via", srv, "err", err)
			continue
		}
		return room, nil
	}
	return "", last
}

func (f *Federation) joinVia(room, user, srv string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	q := make([]string, 0, 12)
	for v := 1; v <= 12; v++ {
		if dag.Version(fmt.Sprint(v)) != nil {
			q = append(q, fmt.Sprintf("ver=%d", v))
		}
	}
	var mk struct {
		Event       json.RawMessage `json:"event"`
		RoomVersion string          `json:"room_version"`
	}
	path := "/_matrix/federation/v1/make_join/" + pathEscape(room) + "/" + pathEscape(user) + "?" + strings.Join(q, "&")
	if err := f.client.Do(ctx, srv, "GET", path, nil, &mk); err != nil {
		return err
	}
	ver := dag.Version(mk.RoomVersion)
	if ver == nil {
		ver = dag.Version("1")
	}
	if ver == nil {
		return fmt.Errorf("federation: unsupported room version %q", mk.RoomVersion)
	}
	// Fill in what the template may lack and make the event ours.
	var tmpl map[string]json.RawMessage
	if err := json.Unmarshal(mk.Event, &tmpl); err != nil {
		return fmt.Errorf("federation: make_join template: %w", err)
	}
	if string(tmpl["sender"]) != fmt.Sprintf("%q", user) || string(tmpl["state_key"]) != fmt.Sprintf("%q", user) {
		return errors.New("federation: make_join template is for another user")
	}
	tmpl["origin_server_ts"], _ = json.Marshal(time.Now().UnixMilli())
	delete(tmpl, "signatures")
	delete(tmpl, "hashes")
	delete(tmpl, "unsigned")
	raw, err := json.Marshal(tmpl)
	if err != nil {
		return err
	}
	if raw, err = dag.AddContentHash(raw, ver); err != nil {
		return err
	}
	if raw, err = dag.SignEvent(raw, ver, f.cfg.ServerName, f.cfg.Key.ID, f.cfg.Key.Key); err != nil {
		return err
	}
	join, err := dag.ParseEvent(raw, ver)
	if err != nil {
		return err
	}
	if join.RoomID != room {
		return errors.New("federation: make_join template is for another room")
	}
	t0 := time.Now()
	path = "/_matrix/federation/v2/send_join/" + pathEscape(room) + "/" + pathEscape(join.ID)
	body, err := f.client.DoRaw(ctx, srv, "PUT", path, json.RawMessage(join.Raw))
	if err != nil {
		return err
	}
	sj, err := parseSendJoin(body)
	if err != nil {
		return fmt.Errorf("federation: answer of %s: %w", srv, err)
	}
	t1 := time.Now()
	// A restricted join comes back countersigned by the resident server;
	// taken only if every signature it needs verifies.
	if len(sj.Event) > 0 {
		if ev, err := dag.ParseEvent(sj.Event, ver); err == nil && ev.ID == join.ID {
			if ev, err = f.keys.VerifyEvent(ev); err == nil && ev.ID == join.ID {
				join = ev
			}
		}
	}
	state, chain := f.verifyPDUs(sj.State, sj.AuthChain, ver)
	t2 := time.Now()
	res, err := f.rooms.JoinRemote(join, state, chain)
	if err != nil {
		return err
	}
	if res.Status != projections.Accepted {
		return fmt.Errorf("federation: join not accepted: %s", res.Reason)
	}
	f.logger.Debug("joined over federation", "room", room, "via", srv, "state", len(state), "auth_chain", len(chain),
		"send_join", t1.Sub(t0), "verify", t2.Sub(t1), "record", time.Since(t2))
	f.sender.wake("")
	return nil
}
