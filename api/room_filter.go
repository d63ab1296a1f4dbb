package api

import (
	"encoding/json"
	"strings"

	"engram/projections"
)

// roomEventFilter is the RoomEventFilter of the spec (Filtering), as
// /messages and /context take it in their filter query parameter.
type roomEventFilter struct {
	Limit                   *int     `json:"limit"`
	Types                   []string `json:"types"`
	NotTypes                []string `json:"not_types"`
	Senders                 []string `json:"senders"`
	NotSenders              []string `json:"not_senders"`
	Rooms                   []string `json:"rooms"`
	NotRooms                []string `json:"not_rooms"`
	ContainsURL             *bool    `json:"contains_url"`
	LazyLoadMembers         bool     `json:"lazy_load_members"`
	IncludeRedundantMembers bool     `json:"include_redundant_members"`
	typesSet                bool
}

// parseRoomEventFilter reads the filter query parameter (JSON) of r; an
// absent one filters nothing.
func parseRoomEventFilter(r *Req) (*roomEventFilter, *Error) {
	f := &roomEventFilter{}
	raw := r.Query("filter")
	if raw == "" {
		return f, nil
	}
	if e := decodeJSON([]byte(raw), f); e != nil {
		e.Message = "Invalid filter: " + e.Message
		return nil, e
	}
	if f.Limit != nil && *f.Limit < 0 {
		return nil, errBadJSON("Invalid filter: limit must not be negative")
	}
	// "types: A list of event types to include. If this list is absent then
	// all event types are included." An empty list includes none.
	var probe map[string]json.RawMessage
	if json.Unmarshal([]byte(raw), &probe) == nil {
		_, f.typesSet = probe["types"]
	}
	return f, nil
}

// globMatch matches an event type against a filter pattern: "A '*' can be
// used as a wildcard to match any sequence of characters."
func globMatch(pattern, s string) bool {
	if !strings.Contains(pattern, "*") {
		return pattern == s
	}
	parts := strings.Split(pattern, "*")
	if !strings.HasPrefix(s, parts[0]) {
		return false
	}
	s = s[len(parts[0]):]
	for i := 1; i < len(parts)-1; i++ {
		j := strings.Index(s, parts[i])
		if j < 0 {
			return false
		}
		s = s[j+len(parts[i]):]
	}
	return strings.HasSuffix(s, parts[len(parts)-1])
}

func anyGlob(patterns []string, s string) bool {
	for _, p := range patterns {
		if globMatch(p, s) {
			return true
		}
	}
	return false
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// empty reports whether the filter lets every event through.
func (f *roomEventFilter) empty() bool {
	return f == nil || (!f.typesSet && len(f.NotTypes) == 0 && f.Senders == nil && len(f.NotSenders) == 0 &&
		f.ContainsURL == nil && f.Rooms == nil && len(f.NotRooms) == 0)
}

// match reports whether an event passes the filter. The not_ lists win
// over the include lists, as the spec says.
func (f *roomEventFilter) match(rec *projections.EventRecord) bool {
	if f.empty() {
		return true
	}
	if contains(f.NotRooms, rec.RoomID) || (f.Rooms != nil && !contains(f.Rooms, rec.RoomID)) {
		return false
	}
	if contains(f.NotSenders, rec.Sender) || (f.Senders != nil && !contains(f.Senders, rec.Sender)) {
		return false
	}
	if anyGlob(f.NotTypes, rec.Type) || (f.typesSet && !anyGlob(f.Types, rec.Type)) {
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
