package stateres

import "strings"

// domainOf returns the server name of a user, room (v1-v11) or event (v1,
// v2) ID: everything after the first colon, or "" if there is none.
func domainOf(id string) string {
	if i := strings.IndexByte(id, ':'); i >= 0 {
		return id[i+1:]
	}
	return ""
}

// looseUserID is the check other servers apply to the keys of
// m.room.power_levels users and to senders: "@", a localpart, a colon, a
// server name. It is deliberately no stricter than that (Synapse's
// UserID.from_string), because rejecting what other servers accept would
// split the room.
func looseUserID(s string) bool {
	if len(s) < 4 || len(s) > 255 || s[0] != '@' {
		return false
	}
	i := strings.IndexByte(s, ':')
	return i > 1 && i < len(s)-1
}

// validUserID also checks the server name grammar (appendices, "Server
// name"): a DNS name, an IPv4 literal or a bracketed IPv6 literal, with an
// optional port. It is used where the spec says "passes the user ID
// validation applied to sender" (v12 additional_creators) and for
// join_authorised_via_users_server, whose server must be able to sign.
func validUserID(s string) bool {
	if !looseUserID(s) {
		return false
	}
	return validServerName(s[strings.IndexByte(s, ':')+1:])
}

func validServerName(s string) bool {
	host := s
	if strings.HasPrefix(s, "[") {
		end := strings.IndexByte(s, ']')
		if end < 0 {
			return false
		}
		for _, c := range s[1:end] {
			if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F' || c == ':' || c == '.') {
				return false
			}
		}
		if end == 1 {
			return false
		}
		return validPort(s[end+1:])
	}
	if i := strings.LastIndexByte(s, ':'); i >= 0 {
		host = s[:i]
		if !validPort(s[i:]) {
			return false
		}
	}
	if host == "" || len(host) > 255 {
		return false
	}
	for i := 0; i < len(host); i++ {
		c := host[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.') {
			return false
		}
	}
	return true
}

// validPort accepts "" or ":" followed by 1 to 5 digits.
func validPort(p string) bool {
	if p == "" {
		return true
	}
	if p[0] != ':' || len(p) < 2 || len(p) > 6 {
		return false
	}
	for i := 1; i < len(p); i++ {
		if p[i] < '0' || p[i] > '9' {
			return false
		}
	}
	return true
}

// createIDForRoom reports whether createID is the event ID a v12 room ID
// names: the same string with "$" instead of "!" (rooms/v12 rule 2: "If the
// event's room_id is not an event ID for an accepted (not rejected)
// m.room.create event, with the sigil ! instead of $, reject.").
func createIDForRoom(createID, roomID string) bool {
	return len(roomID) > 1 && roomID[0] == '!' && len(createID) == len(roomID) &&
		createID[0] == '$' && createID[1:] == roomID[1:]
}

// createIDOfRoom is the event ID of the create event a v12 room ID names.
func createIDOfRoom(roomID string) string {
	if len(roomID) < 2 || roomID[0] != '!' {
		return ""
	}
	return "$" + roomID[1:]
}
