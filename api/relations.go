package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"sort"
	"strconv"

	"engram/projections"
)

// Relations, threads, search, the user directory and mutual rooms.
// Relationships ("Forming relationships between events") are read from
// projections.Relations; every event returned passes filterVisible.

func (s *Server) relationRoutes() {
	for _, p := range []string{
		"/rooms/{roomId}/relations/{eventId}",
		"/rooms/{roomId}/relations/{eventId}/{relType}",
		"/rooms/{roomId}/relations/{eventId}/{relType}/{eventType}",
	} {
		s.rt.handle("GET", "/_matrix/client/v1"+p, authed, s.relations)
	}
	s.rt.handle("GET", "/_matrix/client/v1/rooms/{roomId}/threads", authed, s.threads)
	s.rt.client("POST", "/search", authed, s.search)
	s.rt.client("POST", "/user_directory/search", authed, s.userDirectorySearch)
	s.rt.handle("GET", "/_matrix/client/v1/mutual_rooms", authed, s.mutualRooms)
}

const (
	// relationsDefaultLimit and threadsDefaultLimit are Synapse's defaults.
	relationsDefaultLimit = 5
	threadsDefaultLimit   = 5
	// maxRecursionDepth is how deep recurse=true follows relations, as
	// Synapse ("the actual depth to which the server recursed").
	maxRecursionDepth = 3
	// maxRecursedEvents bounds the events one recursive request collects.
	maxRecursedEvents = 10000
	// maxBundledReferences bounds the m.reference chunk of a bundle.
	maxBundledReferences = 100
)

// appendBundledRelations appends unsigned."m.relations" (with a leading
// comma when unsigned already holds members) for an event being served:
// the bundled aggregations of "Aggregations of child events". An event
// without aggregatable children costs one point read. redacted says the
// event is served redacted: "If the original event is redacted, any
// m.replace relationship should not be bundled with it." "State events do
// not currently receive bundled aggregations."
func (s *Server) appendBundledRelations(unsigned []byte, rec *projections.EventRecord, redacted bool, viewer, device string, now int64) []byte {
	return s.appendRelationsBundle(unsigned, rec, redacted, viewer, device, now, true)
}

func (s *Server) appendRelationsBundle(unsigned []byte, rec *projections.EventRecord, redacted bool, viewer, device string, now int64, withThread bool) []byte {
	if rec.StateKey != nil || rec.Status != projections.Accepted {
		return unsigned
	}
	sum, err := s.store.RelationSummary(rec.RoomID, rec.EventID)
	if err != nil || (sum.Edits == 0 && sum.Threads == 0 && sum.Refs == 0) {
		return unsigned
	}
	var parts [][]byte
	if sum.Edits > 0 && !redacted {
		if b := s.bundledEdit(rec, viewer, device, now); b != nil {
			parts = append(parts, b)
		}
	}
	if sum.Threads > 0 && withThread {
		if b := s.bundledThread(rec, &sum, viewer, device, now); b != nil {
			parts = append(parts, b)
		}
	}
	if sum.Refs > 0 {
		if b := s.bundledReferences(rec, viewer); b != nil {
			parts = append(parts, b)
		}
	}
	if len(parts) == 0 {
		return unsigned
	}
	if len(unsigned) > 0 {
		unsigned = append(unsigned, ',')
	}
	unsigned = append(unsigned, `"m.relations":{`...)
	for i, p := range parts {
		if i > 0 {
			unsigned = append(unsigned, ',')
		}
		unsigned = append(unsigned, p...)
	}
	return append(unsigned, '}')
}

// visibleTo reports whether viewer may see the event at seq of room.
func (s *Server) visibleTo(viewer, room string, seq uint64) bool {
	v, err := s.filterVisible(viewer, room, []uint64{seq})
	return err == nil && len(v) == 1
}

// bundledEdit is the m.replace aggregation: "the most recent valid
// replacement event, formatted as normal". The validity rules that involve
// the original are applied here: same sender and type (the edit index is
// keyed by both), no state_key, and "the original event must not, itself,
// have a rel_type of m.replace".
func (s *Server) bundledEdit(rec *projections.EventRecord, viewer, device string, now int64) []byte {
	if c, err := s.store.RelationChild(rec.EventID); err == nil && c.Rel == projections.RelReplace {
		return nil
	}
	seq, err := s.store.LatestEdit(rec.RoomID, rec.EventID, rec.Sender, rec.Type)
	if err != nil || !s.visibleTo(viewer, rec.RoomID, seq) {
		return nil
	}
	edit, err := s.store.Record(seq)
	if err != nil {
		return nil
	}
	b := append([]byte(nil), `"m.replace":`...)
	return appendClientEventWith(b, edit, viewer, device, now, nil)
}

// bundledThread is the m.thread aggregation: latest_event ("serialized in
// the same form as the event itself", with its own aggregations but no
// nested thread, so loops cannot happen), count, and
// current_user_participated (the viewer sent the root or a reply).
func (s *Server) bundledThread(rec *projections.EventRecord, sum *projections.RelSummary, viewer, device string, now int64) []byte {
	if sum.Latest == 0 || !s.visibleTo(viewer, rec.RoomID, sum.Latest) {
		return nil
	}
	latest, err := s.store.Record(sum.Latest)
	if err != nil {
		return nil
	}
	b := append([]byte(nil), `"m.thread":{"latest_event":`...)
	served, because := s.servedRecord(latest)
	var unsigned []byte
	if because != nil {
		unsigned = append(unsigned, `"redacted_because":`...)
		unsigned = appendClientEventWith(unsigned, because, viewer, device, now, nil)
	}
	unsigned = s.appendRelationsBundle(unsigned, latest, because != nil, viewer, device, now, false)
	b = appendClientEventWith(b, served, viewer, device, now, unsigned)
	b = append(b, `,"count":`...)
	b = strconv.AppendUint(b, sum.Threads, 10)
	b = append(b, `,"current_user_participated":`...)
	return append(strconv.AppendBool(b, s.participated(rec, viewer)), '}')
}

// participated: "the sender of the thread root event" or "the sender of an
// event which references the thread root with a rel_type of m.thread".
func (s *Server) participated(root *projections.EventRecord, user string) bool {
	if user == "" {
		return false
	}
	if root.Sender == user {
		return true
	}
	ok, err := s.store.ThreadParticipant(root.RoomID, root.EventID, user)
	return err == nil && ok
}

// bundledReferences is the m.reference aggregation: "a single chunk
// property, which lists all the events which m.reference the event".
func (s *Server) bundledReferences(rec *projections.EventRecord, viewer string) []byte {
	var refs []projections.Relation
	err := s.store.Relations(rec.RoomID, rec.EventID, projections.RelReference, "", 0, math.MaxUint64, false, func(r projections.Relation) bool {
		refs = append(refs, r)
		return len(refs) < maxBundledReferences
	})
	if err != nil || len(refs) == 0 {
		return nil
	}
	seqs := make([]uint64, len(refs))
	for i, r := range refs {
		seqs[i] = r.Seq
	}
	vis, err := s.filterVisible(viewer, rec.RoomID, seqs)
	if err != nil || len(vis) == 0 {
		return nil
	}
	ok := make(map[uint64]bool, len(vis))
	for _, q := range vis {
		ok[q] = true
	}
	b := append([]byte(nil), `"m.reference":{"chunk":[`...)
	n := 0
	for _, r := range refs {
		if !ok[r.Seq] {
			continue
		}
		if n > 0 {
			b = append(b, ',')
		}
		n++
		b = append(b, `{"event_id":`...)
		b = appendJSONString(b, r.EventID)
		b = append(b, '}')
	}
	return append(b, "]}"...)
}

// relations serves GET /v1/rooms/{roomId}/relations/{eventId}[/{relType}[/{eventType}]]:
// the children of an event, "ordered topologically most-recent first" (dir
// b, the default) or oldest first (dir f). Tokens are log positions, as
// for /messages: from P backwards returns children at or before P,
// forwards children after P.
func (s *Server) relations(r *Req) error {
	room, parent := r.Param("roomId"), r.Param("eventId")
	relType, evType := r.Param("relType"), r.Param("eventType")
	dir := r.Query("dir")
	if dir == "" {
		dir = "b"
	}
	if dir != "b" && dir != "f" {
		return errInvalid("dir must be b or f")
	}
	limit, e := parseLimit(r, relationsDefaultLimit)
	if e != nil {
		return e
	}
	recurse := false
	switch r.Query("recurse") {
	case "", "false":
	case "true":
		recurse = true
	default:
		return errInvalid("recurse must be true or false")
	}
	from, hasFrom, e := tokenParam(r, "from")
	if e != nil {
		return e
	}
	to, hasTo, e := tokenParam(r, "to")
	if e != nil {
		return e
	}
	// Synapse checks the room first (403), then the event (404).
	acc, err := s.readAccess(room, r.User, true)
	if err != nil {
		return err
	}
	_, pseq, err := s.roomEvent(room, parent)
	if errors.Is(err, projections.ErrNotFound) {
		return errNotFound("Event not found.")
	}
	if err != nil {
		return err
	}
	if !s.visibleTo(r.User, room, pseq) {
		return errNotFound("Event not found.")
	}

	backwards := dir == "b"
	var lo, hi uint64 // exclusive bounds
	if backwards {
		hi = acc.upto + 1
		if hasFrom {
			hi = min(hi, from+1)
		}
		if hasTo {
			lo = to
		}
	} else {
		hi = acc.upto + 1
		if hasFrom {
			lo = from
		}
		if hasTo {
			hi = min(hi, to+1)
		}
	}
	var seqs []uint64
	more := false
	if limit > 0 {
		if recurse {
			seqs, more, err = s.recursiveRelations(r.User, room, parent, relType, evType, lo, hi, backwards, limit)
		} else {
			seqs, more, err = s.directRelations(r.User, room, parent, relType, evType, lo, hi, backwards, limit)
		}
		if err != nil {
			return err
		}
	}
	b := append(make([]byte, 0, 1024), `{"chunk":`...)
	if b, err = s.appendEventList(b, seqs, r.User, r.Device, nowMS()); err != nil {
		return err
	}
	if more && len(seqs) > 0 {
		last := seqs[len(seqs)-1]
		if backwards {
			last--
		}
		b = append(b, `,"next_batch":`...)
		b = appendJSONString(b, pageToken(last))
	}
	if hasFrom {
		b = append(b, `,"prev_batch":`...)
		b = appendJSONString(b, r.Query("from"))
	}
	if recurse {
		b = append(b, `,"recursion_depth":`...)
		b = strconv.AppendInt(b, maxRecursionDepth, 10)
	}
	r.raw(200, append(b, '}'))
	return nil
}

// tokenParam parses an optional pagination token query parameter.
func tokenParam(r *Req, name string) (uint64, bool, *Error) {
	t := r.Query(name)
	if t == "" {
		return 0, false, nil
	}
	p, ok := parseToken(t)
	if !ok {
		return 0, false, errInvalid("Invalid " + name + " token")
	}
	return p, true, nil
}

// directRelations pages through a parent's direct children in (lo, hi),
// keeping those the user may see, up to limit; more says whether the walk
// stopped before the end of the range.
func (s *Server) directRelations(user, room, parent, relType, evType string, lo, hi uint64, backwards bool, limit int) ([]uint64, bool, error) {
	var out []uint64
	scanned := 0
	for lo+1 < hi {
		n := min(max(2*(limit-len(out)), 20), 500)
		var batch []uint64
		err := s.store.Relations(room, parent, relType, evType, lo, hi, backwards, func(rel projections.Relation) bool {
			batch = append(batch, rel.Seq)
			return len(batch) < n
		})
		if err != nil {
			return nil, false, err
		}
		if len(batch) == 0 {
			return out, false, nil
		}
		vis, err := s.filterVisible(user, room, append([]uint64(nil), batch...))
		if err != nil {
			return nil, false, err
		}
		vi := 0
		for i, q := range batch {
			if backwards {
				hi = q
			} else {
				lo = q
			}
			scanned++
			if vi < len(vis) && vis[vi] == q {
				vi++
				out = append(out, q)
				if len(out) == limit {
					return out, i < len(batch)-1 || len(batch) == n, nil
				}
			}
		}
		if len(batch) < n {
			return out, false, nil
		}
		if scanned >= pageScanBudget {
			return out, true, nil
		}
	}
	return out, false, nil
}

// recursiveRelations collects the children of parent and their children,
// down to maxRecursionDepth, over every relation type (as Synapse does),
// then keeps those matching relType/evType in (lo, hi) that the user may
// see.
func (s *Server) recursiveRelations(user, room, parent, relType, evType string, lo, hi uint64, backwards bool, limit int) ([]uint64, bool, error) {
	type node struct {
		seq uint64
		id  string
	}
	var all []node
	seen := map[string]bool{parent: true}
	level := []string{parent}
	for depth := 0; depth < maxRecursionDepth && len(level) > 0 && len(all) < maxRecursedEvents; depth++ {
		var next []string
		for _, p := range level {
			err := s.store.Relations(room, p, "", "", 0, math.MaxUint64, false, func(rel projections.Relation) bool {
				if !seen[rel.EventID] {
					seen[rel.EventID] = true
					all = append(all, node{rel.Seq, rel.EventID})
					next = append(next, rel.EventID)
				}
				return len(all) < maxRecursedEvents
			})
			if err != nil {
				return nil, false, err
			}
		}
		level = next
	}
	var cand []uint64
	for _, n := range all {
		if n.seq <= lo || n.seq >= hi {
			continue
		}
		if relType != "" {
			c, err := s.store.RelationChild(n.id)
			if err != nil || c.Rel != relType || (evType != "" && c.Type != evType) {
				continue
			}
		}
		cand = append(cand, n.seq)
	}
	sort.Slice(cand, func(i, j int) bool { return cand[i] < cand[j] })
	if backwards {
		for i, j := 0, len(cand)-1; i < j; i, j = i+1, j-1 {
			cand[i], cand[j] = cand[j], cand[i]
		}
	}
	vis, err := s.filterVisible(user, room, cand)
	if err != nil {
		return nil, false, err
	}
	if len(vis) > limit {
		return vis[:limit], true, nil
	}
	return vis, false, nil
}

// threads serves GET /v1/rooms/{roomId}/threads: the room's thread roots,
// "ordered by the latest_event in each event's aggregated children", with
// bundled aggregations. include=participated keeps the threads the user
// participated in. Tokens are the position of a thread's latest reply.
func (s *Server) threads(r *Req) error {
	room := r.Param("roomId")
	include := r.Query("include")
	if include == "" {
		include = "all"
	}
	if include != "all" && include != "participated" {
		return errInvalid("include must be all or participated")
	}
	limit := threadsDefaultLimit
	if l := r.Query("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n <= 0 {
			return errInvalid("limit must be an integer greater than zero")
		}
		limit = min(n, maxPageLimit)
	}
	from, hasFrom, e := tokenParam(r, "from")
	if e != nil {
		return e
	}
	acc, err := s.readAccess(room, r.User, true)
	if err != nil {
		return err
	}
	before := acc.upto + 1
	if hasFrom {
		before = min(before, from)
	}
	var seqs []uint64
	var lastLatest uint64
	more := false
	scanned := 0
	var ierr error
	err = s.store.Threads(room, before, func(t projections.Thread) bool {
		if len(seqs) == limit {
			more = true
			return false
		}
		scanned++
		if scanned > pageScanBudget {
			more = true
			return false
		}
		rec, seq, err := s.roomEvent(room, t.Root)
		if err != nil {
			if !errors.Is(err, projections.ErrNotFound) {
				ierr = err
				return false
			}
			lastLatest = t.Latest
			return true
		}
		lastLatest = t.Latest
		if !s.visibleTo(r.User, room, seq) {
			return true
		}
		if include == "participated" && !s.participated(rec, r.User) {
			return true
		}
		seqs = append(seqs, seq)
		return true
	})
	if err == nil {
		err = ierr
	}
	if err != nil {
		return err
	}
	b := append(make([]byte, 0, 1024), `{"chunk":`...)
	if b, err = s.appendEventList(b, seqs, r.User, r.Device, nowMS()); err != nil {
		return err
	}
	if more && lastLatest > 0 {
		b = append(b, `,"next_batch":`...)
		b = appendJSONString(b, pageToken(lastLatest))
	}
	r.raw(200, append(b, '}'))
	return nil
}

// maxAnnotationKey is Synapse's bound on an annotation key.
const maxAnnotationKey = 500

// validateRelation checks a local client's event carrying
// content."m.relates_to" before it is sent, as Synapse does:
//   - an annotation needs a key (of at most 500 bytes), and a second
//     annotation by the same user with the same event type and key is
//     refused: "Attempts to send such an annotation should be rejected
//     with a 400 error and an error code of M_DUPLICATE_ANNOTATION";
//   - a known parent must be in the same room;
//   - "Servers SHOULD reject client requests which attempt to start a
//     thread off an event with an m.relates_to property" (400 M_UNKNOWN).
//
// It is meant for the send path (PUT /send); events without a
// relationship pass untouched.
func (s *Server) validateRelation(room, sender, typ string, content []byte) error {
	if !mayRelate(content) {
		return nil
	}
	var c struct {
		RelatesTo *struct {
			RelType string  `json:"rel_type"`
			EventID string  `json:"event_id"`
			Key     *string `json:"key"`
		} `json:"m.relates_to"`
	}
	if json.Unmarshal(content, &c) != nil || c.RelatesTo == nil || c.RelatesTo.RelType == "" || c.RelatesTo.EventID == "" {
		return nil
	}
	rt := c.RelatesTo
	if rt.RelType == projections.RelAnnotation {
		if rt.Key == nil {
			return errBadJSON("Missing aggregation key")
		}
		if len(*rt.Key) > maxAnnotationKey {
			return errBadJSON("Aggregation key is too long")
		}
		dup, err := s.store.HasAnnotation(room, rt.EventID, typ, *rt.Key, sender)
		if err != nil {
			return err
		}
		if dup {
			return merr(400, "M_DUPLICATE_ANNOTATION", "Can't send same reaction twice")
		}
	}
	parent, _, err := s.store.Event(rt.EventID)
	if errors.Is(err, projections.ErrNotFound) {
		return nil // nothing to check against an unknown parent
	}
	if err != nil {
		return err
	}
	if parent.RoomID != room {
		return errBadJSON("Relations must be in the same room")
	}
	if rt.RelType == projections.RelThread {
		if _, err := s.store.RelationChild(parent.EventID); err == nil {
			return merr(400, "M_UNKNOWN", "Cannot start threads from an event with a relation")
		}
	}
	return nil
}

// mayRelate reports whether event content can hold an m.relates_to: the
// key spelled plainly, or any escape (which could spell it otherwise).
func mayRelate(content []byte) bool {
	return bytes.Contains(content, []byte(`"m.relates_to"`)) || bytes.IndexByte(content, '\\') >= 0
}
