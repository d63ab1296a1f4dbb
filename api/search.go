package api

import (
	"encoding/json"
	"sort"
	"strconv"

	"engram/projections"
)

// searchRequest is the body of POST /search.
type searchRequest struct {
	SearchCategories *struct {
		RoomEvents *roomEventsCriteria `json:"room_events"`
	} `json:"search_categories"`
}

type roomEventsCriteria struct {
	SearchTerm   *string          `json:"search_term"`
	Keys         []string         `json:"keys"`
	Filter       json.RawMessage  `json:"filter"`
	OrderBy      string           `json:"order_by"`
	EventContext *searchContext   `json:"event_context"`
	IncludeState bool             `json:"include_state"`
	Groupings    *searchGroupings `json:"groupings"`
}

type searchContext struct {
	BeforeLimit    *int `json:"before_limit"`
	AfterLimit     *int `json:"after_limit"`
	IncludeProfile bool `json:"include_profile"`
}

type searchGroupings struct {
	GroupBy []struct {
		Key string `json:"key"`
	} `json:"group_by"`
}

const (
	searchDefaultLimit   = 10 // Synapse's default
	searchContextDefault = 5  // "By default, this is 5."
	maxSearchContext     = 100
	// maxSearchHitsPerTerm bounds the index rows one term reads per room.
	maxSearchHitsPerTerm = 50000
)

// searchFields maps the spec's keys to index fields.
var searchFields = map[string]byte{
	"content.body":  projections.SearchBody,
	"content.name":  projections.SearchName,
	"content.topic": projections.SearchTopic,
}

type searchResult struct {
	seq  uint64
	room string
	rank float64
}

// search serves POST /search (room_events only, the one category the spec
// defines). Every term must match, by word prefix, in one of the keys (as
// Synapse's Postgres search does); the search runs over the rooms the user
// is joined to (Synapse), narrowed by the filter, and every result passes
// the user's history visibility. Redacted events are never found.
// next_batch is "b<pos>" for order_by recent (results before that
// position: stable while new events arrive) and "o<offset>" for rank.
func (s *Server) search(r *Req) error {
	var req searchRequest
	if e := r.decode(&req); e != nil {
		return e
	}
	if req.SearchCategories == nil {
		return errBadJSON("Missing search_categories")
	}
	c := req.SearchCategories.RoomEvents
	if c == nil {
		return r.json(map[string]any{"search_categories": map[string]any{}})
	}
	if c.SearchTerm == nil {
		return errBadJSON("Missing search_term")
	}
	orderBy := c.OrderBy
	if orderBy == "" {
		orderBy = "rank"
	}
	if orderBy != "rank" && orderBy != "recent" {
		return errInvalid("order_by must be rank or recent")
	}
	keys := c.Keys
	if len(keys) == 0 {
		keys = []string{"content.body", "content.name", "content.topic"}
	}
	var fields []byte
	for _, k := range keys {
		f, ok := searchFields[k]
		if !ok {
			return errInvalid("Unknown search key " + strconv.Quote(k))
		}
		fields = append(fields, f)
	}
	f := &roomEventFilter{}
	if len(c.Filter) > 0 && string(c.Filter) != "null" {
		if e := decodeJSON(c.Filter, f); e != nil {
			e.Message = "Invalid filter: " + e.Message
			return e
		}
		var probe map[string]json.RawMessage
		if json.Unmarshal(c.Filter, &probe) == nil {
			_, f.typesSet = probe["types"]
		}
	}
	limit := searchDefaultLimit
	if f.Limit != nil {
		if *f.Limit < 0 {
			return errBadJSON("Invalid filter: limit must not be negative")
		}
		limit = min(*f.Limit, maxPageLimit)
	}
	var groupBy []string
	if c.Groupings != nil {
		for _, g := range c.Groupings.GroupBy {
			if g.Key != "room_id" && g.Key != "sender" {
				return errInvalid("group_by key must be room_id or sender")
			}
			groupBy = append(groupBy, g.Key)
		}
	}
	var afterPos uint64 // recent: results before this position (0: none)
	offset := 0
	if nb := r.Query("next_batch"); nb != "" {
		n, err := strconv.ParseUint(nb[1:], 10, 64)
		switch {
		case err != nil || len(nb) < 2:
			return errInvalid("Invalid next_batch token")
		case nb[0] == 'b' && orderBy == "recent":
			afterPos = n
		case nb[0] == 'o' && orderBy == "rank" && n < 1<<20:
			offset = int(n)
		default:
			return errInvalid("Invalid next_batch token")
		}
	}

	rooms, err := s.searchRooms(r.User, f)
	if err != nil {
		return err
	}
	terms := projections.SearchTokens(*c.SearchTerm)
	var all []searchResult
	highlight := map[string]bool{}
	if len(terms) > 0 {
		for _, room := range rooms {
			res, err := s.searchRoom(r.User, room, terms, fields, f, highlight)
			if err != nil {
				return err
			}
			all = append(all, res...)
		}
	}
	if orderBy == "recent" {
		sort.Slice(all, func(i, j int) bool { return all[i].seq > all[j].seq })
	} else {
		sort.Slice(all, func(i, j int) bool {
			if all[i].rank != all[j].rank {
				return all[i].rank > all[j].rank
			}
			return all[i].seq > all[j].seq
		})
	}
	page := all
	if afterPos > 0 {
		i := sort.Search(len(page), func(i int) bool { return page[i].seq < afterPos })
		page = page[i:]
	}
	if offset > 0 {
		page = page[min(offset, len(page)):]
	}
	more := len(page) > limit
	page = page[:min(limit, len(page))]

	now := nowMS()
	b := append(make([]byte, 0, 4096), `{"search_categories":{"room_events":{"count":`...)
	b = strconv.AppendInt(b, int64(len(all)), 10)
	b = append(b, `,"highlights":[`...)
	hl := make([]string, 0, len(highlight))
	for t := range highlight {
		hl = append(hl, t)
	}
	sort.Strings(hl)
	for i, t := range hl {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendJSONString(b, t)
	}
	b = append(b, `],"results":[`...)
	for i, res := range page {
		if i > 0 {
			b = append(b, ',')
		}
		if b, err = s.appendSearchResult(b, r, res, c.EventContext, now); err != nil {
			return err
		}
	}
	b = append(b, ']')
	if more && len(page) > 0 {
		b = append(b, `,"next_batch":`...)
		if orderBy == "recent" {
			b = appendJSONString(b, "b"+strconv.FormatUint(page[len(page)-1].seq, 10))
		} else {
			b = appendJSONString(b, "o"+strconv.Itoa(offset+len(page)))
		}
	}
	if len(groupBy) > 0 {
		if b, err = s.appendSearchGroups(b, page, groupBy); err != nil {
			return err
		}
	}
	if c.IncludeState {
		if b, err = s.appendSearchState(b, r, page, now); err != nil {
			return err
		}
	}
	r.raw(200, append(b, "}}}"...))
	return nil
}

// searchRooms returns the rooms a search runs over: the user's joined
// rooms, narrowed by the filter's rooms and not_rooms.
func (s *Server) searchRooms(user string, f *roomEventFilter) ([]string, error) {
	urs, err := s.store.UserRooms(user)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, ur := range urs {
		if ur.Membership != projections.MemberJoin {
			continue
		}
		if contains(f.NotRooms, ur.RoomID) || (f.Rooms != nil && !contains(f.Rooms, ur.RoomID)) {
			continue
		}
		out = append(out, ur.RoomID)
	}
	return out, nil
}

// searchRoom finds the events of one room holding every term (by prefix)
// in one of fields, that the user may see, pass the filter and are not
// redacted. rank is the number of matching words.
func (s *Server) searchRoom(user, room string, terms []string, fields []byte, f *roomEventFilter, highlight map[string]bool) ([]searchResult, error) {
	var hits map[uint64]float64
	matched := map[uint64][]string{}
	for _, term := range terms {
		cur := map[uint64]float64{}
		for _, field := range fields {
			n := 0
			err := s.store.SearchPrefix(room, field, term, func(h projections.SearchHit) bool {
				n++
				if hits == nil || hits[h.Seq] > 0 {
					cur[h.Seq] += float64(max(h.Count, 1))
					matched[h.Seq] = append(matched[h.Seq], h.Token)
				}
				return n < maxSearchHitsPerTerm
			})
			if err != nil {
				return nil, err
			}
		}
		if hits != nil {
			for q, v := range cur {
				cur[q] = v + hits[q]
			}
		}
		hits = cur
		if len(hits) == 0 {
			return nil, nil
		}
	}
	seqs := make([]uint64, 0, len(hits))
	for q := range hits {
		seqs = append(seqs, q)
	}
	sort.Slice(seqs, func(i, j int) bool { return seqs[i] < seqs[j] })
	vis, err := s.filterVisible(user, room, seqs)
	if err != nil {
		return nil, err
	}
	var out []searchResult
	for _, q := range vis {
		rec, err := s.store.Record(q)
		if err != nil {
			return nil, err
		}
		if rec.RoomID != room || !f.match(rec) {
			continue
		}
		if _, because := s.servedRecord(rec); because != nil {
			continue
		}
		out = append(out, searchResult{seq: q, room: room, rank: hits[q]})
		for _, t := range matched[q] {
			highlight[t] = true
		}
	}
	return out, nil
}

// appendSearchResult appends one result: its rank, the event, and the
// event_context when asked for.
func (s *Server) appendSearchResult(b []byte, r *Req, res searchResult, ctx *searchContext, now int64) ([]byte, error) {
	rec, err := s.store.Record(res.seq)
	if err != nil {
		return nil, err
	}
	b = append(b, `{"rank":`...)
	b = strconv.AppendFloat(b, res.rank, 'f', -1, 64)
	b = append(b, `,"result":`...)
	b = s.appendServedEvent(b, rec, res.seq, r.User, r.Device, now)
	if ctx != nil {
		before, after := searchContextDefault, searchContextDefault
		if ctx.BeforeLimit != nil {
			before = min(max(*ctx.BeforeLimit, 0), maxSearchContext)
		}
		if ctx.AfterLimit != nil {
			after = min(max(*ctx.AfterLimit, 0), maxSearchContext)
		}
		var evBefore, evAfter []uint64
		if before > 0 {
			if evBefore, _, _, err = s.pageScan(res.room, r.User, nil, 0, res.seq, true, before); err != nil {
				return nil, err
			}
		}
		if after > 0 {
			if evAfter, _, _, err = s.pageScan(res.room, r.User, nil, res.seq, s.log.Last()+1, false, after); err != nil {
				return nil, err
			}
		}
		start, end := res.seq-1, res.seq
		if len(evBefore) > 0 {
			start = evBefore[len(evBefore)-1] - 1
		}
		if len(evAfter) > 0 {
			end = evAfter[len(evAfter)-1]
		}
		b = append(b, `,"context":{"start":`...)
		b = appendJSONString(b, pageToken(start))
		b = append(b, `,"end":`...)
		b = appendJSONString(b, pageToken(end))
		b = append(b, `,"events_before":`...)
		if b, err = s.appendEventList(b, evBefore, r.User, r.Device, now); err != nil {
			return nil, err
		}
		b = append(b, `,"events_after":`...)
		if b, err = s.appendEventList(b, evAfter, r.User, r.Device, now); err != nil {
			return nil, err
		}
		if ctx.IncludeProfile {
			b = append(b, `,"profile_info":`...)
			seqs := append(append(append([]uint64(nil), evBefore...), res.seq), evAfter...)
			if b, err = s.appendProfileInfo(b, res.room, seqs, end); err != nil {
				return nil, err
			}
		}
		b = append(b, '}')
	}
	return append(b, '}'), nil
}

// appendProfileInfo appends the display names and avatars of the senders
// of seqs, from their membership events as of position at.
func (s *Server) appendProfileInfo(b []byte, room string, seqs []uint64, at uint64) ([]byte, error) {
	b = append(b, '{')
	seen := map[string]bool{}
	n := 0
	for _, q := range seqs {
		rec, err := s.store.Record(q)
		if err != nil {
			return nil, err
		}
		if seen[rec.Sender] {
			continue
		}
		seen[rec.Sender] = true
		if n > 0 {
			b = append(b, ',')
		}
		n++
		b = appendJSONString(b, rec.Sender)
		b = append(b, ':')
		name, avatar := s.memberProfileAt(room, rec.Sender, at)
		pi := map[string]string{}
		if name != "" {
			pi["displayname"] = name
		}
		if avatar != "" {
			pi["avatar_url"] = avatar
		}
		j, _ := json.Marshal(pi)
		b = append(b, j...)
	}
	return append(b, '}'), nil
}

// memberProfileAt returns the display name and avatar of a user's
// membership event in a room as of position at ("" when unknown).
func (s *Server) memberProfileAt(room, user string, at uint64) (string, string) {
	id, _, err := s.store.StateEventAt(room, "m.room.member", user, at)
	if err != nil {
		return "", ""
	}
	rec, _, err := s.store.Event(id)
	if err != nil {
		return "", ""
	}
	return memberProfile(rec)
}

// memberProfile reads displayname and avatar_url of a member event.
func memberProfile(rec *projections.EventRecord) (string, string) {
	var ev struct {
		Content struct {
			DisplayName any `json:"displayname"`
			AvatarURL   any `json:"avatar_url"`
		} `json:"content"`
	}
	if json.Unmarshal(rec.PDU, &ev) != nil {
		return "", ""
	}
	name, _ := ev.Content.DisplayName.(string)
	avatar, _ := ev.Content.AvatarURL.(string)
	return name, avatar
}

// appendSearchGroups appends groups for this page of results: per key,
// per value, the result event IDs in result order and the group's order.
func (s *Server) appendSearchGroups(b []byte, page []searchResult, groupBy []string) ([]byte, error) {
	b = append(b, `,"groups":{`...)
	for gi, key := range groupBy {
		if gi > 0 {
			b = append(b, ',')
		}
		b = appendJSONString(b, key)
		b = append(b, ":{"...)
		var order []string
		ids := map[string][]string{}
		for _, res := range page {
			rec, err := s.store.Record(res.seq)
			if err != nil {
				return nil, err
			}
			v := res.room
			if key == "sender" {
				v = rec.Sender
			}
			if _, ok := ids[v]; !ok {
				order = append(order, v)
			}
			ids[v] = append(ids[v], rec.EventID)
		}
		for i, v := range order {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendJSONString(b, v)
			b = append(b, `:{"order":`...)
			b = strconv.AppendInt(b, int64(i+1), 10)
			b = append(b, `,"results":[`...)
			for j, id := range ids[v] {
				if j > 0 {
					b = append(b, ',')
				}
				b = appendJSONString(b, id)
			}
			b = append(b, "]}"...)
		}
		b = append(b, '}')
	}
	return append(b, '}'), nil
}

// appendSearchState appends the current state of the rooms of this page
// of results (include_state).
func (s *Server) appendSearchState(b []byte, r *Req, page []searchResult, now int64) ([]byte, error) {
	b = append(b, `,"state":{`...)
	seen := map[string]bool{}
	n := 0
	for _, res := range page {
		if seen[res.room] {
			continue
		}
		seen[res.room] = true
		entries, err := s.store.CurrentState(res.room, "")
		if err != nil {
			return nil, err
		}
		var seqs []uint64
		for _, e := range entries {
			pos, _, err := s.store.EventPos(e.EventID)
			if err != nil {
				return nil, err
			}
			seqs = append(seqs, pos)
		}
		if n > 0 {
			b = append(b, ',')
		}
		n++
		b = appendJSONString(b, res.room)
		b = append(b, ':')
		if b, err = s.appendEventList(b, seqs, r.User, r.Device, now); err != nil {
			return nil, err
		}
	}
	return append(b, '}'), nil
}
