package federation

import (
	"encoding/json"
	"net"
	"path"
	"strconv"
	"strings"
	"sync"

	"engram/projections"
)

// Server ACLs ("Server Access Control Lists"): "Servers MUST apply ACLs to
// their own federation traffic, and MUST deny requests from servers that
// are banned by the ACLs" — every request naming a room, and each PDU and
// EDU of a transaction for its room.

type acl struct {
	allow, deny     []string
	allowIPLiterals bool
}

type aclCache struct {
	mu sync.Mutex
	m  map[string]aclEntry // room -> parsed ACL of the current ACL event
}

type aclEntry struct {
	eventID string
	acl     *acl
}

// ServerAllowed reports whether server may take part in room under the
// room's current m.room.server_acl (no ACL: everyone).
func (f *Federation) ServerAllowed(room, server string) bool {
	id, err := f.store.StateEvent(room, "m.room.server_acl", "")
	if err != nil || id == "" {
		return true
	}
	f.acl.mu.Lock()
	e, ok := f.acl.m[room]
	f.acl.mu.Unlock()
	if !ok || e.eventID != id {
		rec, _, err := f.store.Event(id)
		if err != nil || rec.Status != projections.Accepted {
			return true
		}
		e = aclEntry{eventID: id, acl: parseACL(rec.PDU)}
		f.acl.mu.Lock()
		if f.acl.m == nil {
			f.acl.m = map[string]aclEntry{}
		}
		f.acl.m[room] = e
		f.acl.mu.Unlock()
	}
	return e.acl.allows(server)
}

// parseACL reads an ACL event's content; malformed entries are skipped
// (not strings), as a missing allow list allows nothing.
func parseACL(pdu []byte) *acl {
	var ev struct {
		Content struct {
			Allow           []any `json:"allow"`
			Deny            []any `json:"deny"`
			AllowIPLiterals *bool `json:"allow_ip_literals"`
		} `json:"content"`
	}
	a := &acl{allowIPLiterals: true}
	if json.Unmarshal(pdu, &ev) != nil {
		return a
	}
	strs := func(xs []any) []string {
		var out []string
		for _, x := range xs {
			if s, ok := x.(string); ok {
				out = append(out, s)
			}
		}
		return out
	}
	a.allow, a.deny = strs(ev.Content.Allow), strs(ev.Content.Deny)
	if ev.Content.AllowIPLiterals != nil {
		a.allowIPLiterals = *ev.Content.AllowIPLiterals
	}
	return a
}

// allows applies the rules to a server name "excluding the port": IP
// literals first, then deny, then allow.
func (a *acl) allows(server string) bool {
	host := server
	if strings.HasPrefix(host, "[") {
		if end := strings.IndexByte(host, ']'); end > 0 {
			host = host[1:end]
		}
	} else if i := strings.LastIndexByte(host, ':'); i >= 0 {
		if _, err := strconv.Atoi(host[i+1:]); err == nil {
			host = host[:i]
		}
	}
	host = strings.ToLower(host)
	if !a.allowIPLiterals && net.ParseIP(host) != nil {
		return false
	}
	for _, g := range a.deny {
		if globMatch(g, host) {
			return false
		}
	}
	for _, g := range a.allow {
		if globMatch(g, host) {
			return true
		}
	}
	return false
}

// globMatch matches * and ? wildcards ("*" any sequence, "?" one
// character); everything else literally, case-insensitively.
func globMatch(glob, s string) bool {
	var b strings.Builder
	for _, c := range strings.ToLower(glob) {
		switch c {
		case '*', '?':
			b.WriteRune(c)
		case '[', ']', '\\':
			b.WriteByte('\\')
			b.WriteRune(c)
		default:
			b.WriteRune(c)
		}
	}
	ok, err := path.Match(b.String(), s)
	if err != nil {
		return false
	}
	return ok
}
