package api

import (
	"encoding/json"
	"strings"
	"sync"

	"engram/projections"
)

// syncFilter is the Filter of the spec ("Filtering") as /sync honours it.
type syncFilter struct {
	EventFields []string         `json:"event_fields"`
	EventFormat string           `json:"event_format"`
	Presence    syncEventFilter  `json:"presence"`
	AccountData syncEventFilter  `json:"account_data"`
	Room        syncRoomSelector `json:"room"`
}

// syncRoomSelector is the spec's RoomFilter.
type syncRoomSelector struct {
	Rooms        *[]string           `json:"rooms"`
	NotRooms     []string            `json:"not_rooms"`
	IncludeLeave bool                `json:"include_leave"`
	Timeline     syncRoomEventFilter `json:"timeline"`
	State        syncRoomEventFilter `json:"state"`
	Ephemeral    syncRoomEventFilter `json:"ephemeral"`
	AccountData  syncRoomEventFilter `json:"account_data"`
}

// syncEventFilter is the spec's EventFilter. Nil include lists mean "all";
// an empty one means none ("If this list is absent then all event types
// are included").
type syncEventFilter struct {
	Limit      *int      `json:"limit"`
	Types      *[]string `json:"types"`
	NotTypes   []string  `json:"not_types"`
	Senders    *[]string `json:"senders"`
	NotSenders []string  `json:"not_senders"`
}

// syncRoomEventFilter is the spec's RoomEventFilter.
type syncRoomEventFilter struct {
	syncEventFilter
	Rooms                     *[]string `json:"rooms"`
	NotRooms                  []string  `json:"not_rooms"`
	ContainsURL               *bool     `json:"contains_url"`
	LazyLoadMembers           bool      `json:"lazy_load_members"`
	IncludeRedundantMembers   bool      `json:"include_redundant_members"`
	UnreadThreadNotifications bool      `json:"unread_thread_notifications"`
}

const (
	defaultTimelineLimit = 10
	maxTimelineLimit     = 500
)

// parseSyncFilter reads the filter parameter: a filter ID of the user, or
// a JSON object ("The server will detect whether it is an ID or a JSON
// object by whether the first character is a "{" open brace").
func (s *Server) parseSyncFilter(user, raw string) (*syncFilter, *Error) {
	if raw == "" {
		return &syncFilter{}, nil
	}
	var key string
	if s.hub != nil {
		// Filters never change once stored (a new upload gets a new ID),
		// and a long-polling client sends the same one on every request:
		// parse it once. The parsed filter is shared and read-only.
		key = user + "\x00" + raw
		if f := s.hub.filters.get(key); f != nil {
			return f, nil
		}
	}
	f, e := s.parseSyncFilterUncached(user, raw)
	if e == nil && key != "" {
		s.hub.filters.put(key, f)
	}
	return f, e
}

// filterCache holds parsed sync filters by user and filter parameter.
type filterCache struct {
	mu sync.Mutex
	m  map[string]*syncFilter
}

const filterCacheMax = 4096

func (c *filterCache) get(key string) *syncFilter {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.m[key]
}

func (c *filterCache) put(key string, f *syncFilter) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil || len(c.m) >= filterCacheMax {
		c.m = map[string]*syncFilter{} // bounded: forgetting costs a parse
	}
	c.m[key] = f
}

func (s *Server) parseSyncFilterUncached(user, raw string) (*syncFilter, *Error) {
	f := &syncFilter{}
	var body []byte
	if raw[0] == '{' {
		body = []byte(raw)
	} else {
		stored, err := s.store.Filter(user, raw)
		if err != nil {
			return nil, errNotFound("No such filter")
		}
		body = stored
	}
	if e := decodeJSON(body, f); e != nil {
		e.Message = "Invalid filter: " + e.Message
		return nil, e
	}
	if e := f.validate(); e != nil {
		return nil, e
	}
	return f, nil
}

func (f *syncFilter) validate() *Error {
	switch f.EventFormat {
	case "", "client", "federation":
	default:
		return errBadJSON("Invalid filter: event_format must be client or federation")
	}
	for _, l := range []*int{f.Presence.Limit, f.AccountData.Limit, f.Room.Timeline.Limit, f.Room.State.Limit,
		f.Room.Ephemeral.Limit, f.Room.AccountData.Limit} {
		if l != nil && *l < 0 {
			return errBadJSON("Invalid filter: limit must not be negative")
		}
	}
	return nil
}

// timelineLimit is the number of timeline events per room.
func (f *syncFilter) timelineLimit() int {
	if l := f.Room.Timeline.Limit; l != nil {
		return min(*l, maxTimelineLimit)
	}
	return defaultTimelineLimit
}

// roomAllowed applies the RoomFilter's rooms and not_rooms.
func (f *syncFilter) roomAllowed(room string) bool {
	return listAllows(f.Room.Rooms, f.Room.NotRooms, room, false)
}

// listAllows applies an include list (nil: all) and an exclude list; the
// exclude list wins ("If this list is absent ... all ... are included";
// not_ lists "take precedence"). glob allows "*" wildcards.
func listAllows(include *[]string, exclude []string, v string, glob bool) bool {
	for _, x := range exclude {
		if x == v || (glob && globMatch(x, v)) {
			return false
		}
	}
	if include == nil {
		return true
	}
	for _, x := range *include {
		if x == v || (glob && globMatch(x, v)) {
			return true
		}
	}
	return false
}

// allows applies an EventFilter to an event's type and sender.
func (f *syncEventFilter) allows(typ, sender string) bool {
	return listAllows(f.Types, f.NotTypes, typ, true) && listAllows(f.Senders, f.NotSenders, sender, false)
}

// passAll reports whether the filter lets every event through.
func (f *syncEventFilter) passAll() bool {
	return f.Types == nil && len(f.NotTypes) == 0 && f.Senders == nil && len(f.NotSenders) == 0
}

// limit returns the filter's limit, or def.
func (f *syncEventFilter) limit(def int) int {
	if f.Limit != nil {
		return *f.Limit
	}
	return def
}

// roomAllowed applies a RoomEventFilter's rooms and not_rooms.
func (f *syncRoomEventFilter) roomAllowed(room string) bool {
	return listAllows(f.Rooms, f.NotRooms, room, false)
}

// passAll reports whether the filter lets every event of an allowed room
// through without looking at its content.
func (f *syncRoomEventFilter) passAll() bool {
	return f.syncEventFilter.passAll() && f.ContainsURL == nil
}

// match applies a RoomEventFilter to an event.
func (f *syncRoomEventFilter) match(rec *projections.EventRecord) bool {
	if !f.allows(rec.Type, rec.Sender) {
		return false
	}
	if f.ContainsURL != nil {
		var v struct {
			Content map[string]json.RawMessage `json:"content"`
		}
		json.Unmarshal(rec.PDU, &v)
		_, has := v.Content["url"]
		if has != *f.ContainsURL {
			return false
		}
	}
	return true
}

// applyEventFields keeps only the listed fields of a client event ("fields
// to include ... may include '.' to indicate sub-fields"; "A literal '.'
// character in a field name may be escaped using a '\'").
func applyEventFields(ev []byte, fields []string) []byte {
	var top map[string]json.RawMessage
	if json.Unmarshal(ev, &top) != nil {
		return ev
	}
	out := map[string]any{}
	for _, f := range fields {
		path := splitFieldPath(f)
		if len(path) == 0 {
			continue
		}
		copyField(out, top, path)
	}
	b, err := json.Marshal(out)
	if err != nil {
		return ev
	}
	return b
}

func copyField(dst map[string]any, src map[string]json.RawMessage, path []string) {
	v, ok := src[path[0]]
	if !ok {
		return
	}
	if len(path) == 1 {
		dst[path[0]] = v
		return
	}
	var inner map[string]json.RawMessage
	if json.Unmarshal(v, &inner) != nil {
		return
	}
	sub, _ := dst[path[0]].(map[string]any)
	if sub == nil {
		if _, taken := dst[path[0]]; taken {
			return // the whole object is already included
		}
		sub = map[string]any{}
	}
	copyField(sub, inner, path[1:])
	if len(sub) > 0 {
		dst[path[0]] = sub
	}
}

func splitFieldPath(f string) []string {
	var parts []string
	var cur strings.Builder
	for i := 0; i < len(f); i++ {
		switch {
		case f[i] == '\\' && i+1 < len(f):
			cur.WriteByte(f[i+1])
			i++
		case f[i] == '.':
			parts = append(parts, cur.String())
			cur.Reset()
		default:
			cur.WriteByte(f[i])
		}
	}
	return append(parts, cur.String())
}
