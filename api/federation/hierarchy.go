package federation

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"
)

// Spaces over federation (spec: server-server-api.md, "Spaces"): GET
// /_matrix/federation/v1/hierarchy/{roomId} both ways. The answer is built
// by the client API's space code (which owns room summaries and the
// "could this server peek or join" check), installed with SetHierarchy, as
// /publicRooms is.

// maxHierarchyServers bounds how many via servers one lookup tries.
const maxHierarchyServers = 5

// SetHierarchy installs what answers GET /hierarchy/{roomId} for another
// server: fn returns the JSON answer and the HTTP status. Until then every
// room is unknown (404 M_NOT_FOUND).
func (f *Federation) SetHierarchy(fn func(origin, room string, suggestedOnly bool) ([]byte, int)) {
	f.hierarchy = fn
}

func (f *Federation) hierarchyOpenIDRoutes() []route {
	mk := func(method, path string, authed bool, h func(*req) error) route {
		return route{method, strings.Split(strings.Trim(path, "/"), "/"), authed, h}
	}
	return []route{
		mk("GET", "/_matrix/federation/v1/hierarchy/{roomId}", true, f.handleHierarchy),
		// The OpenID userinfo call comes from third-party services, not
		// servers: it carries the OpenID token, not an X-Matrix signature.
		mk("GET", "/_matrix/federation/v1/openid/userinfo", false, f.handleOpenIDUserinfo),
	}
}

func (f *Federation) handleHierarchy(r *req) error {
	if f.hierarchy == nil {
		return ferr(404, "M_NOT_FOUND", "Room does not exist.")
	}
	b, status := f.hierarchy(r.origin, r.param("roomId"), r.query("suggested_only") == "true")
	r.raw(status, b)
	return nil
}

// Hierarchy asks the servers (the via list of an m.space.child event, in
// order, at most five) for a room's hierarchy and returns the first
// answer that describes that room. It fails when none answers.
func (f *Federation) Hierarchy(servers []string, room string, suggestedOnly bool) (json.RawMessage, error) {
	path := "/_matrix/federation/v1/hierarchy/" + url.PathEscape(room)
	if suggestedOnly {
		path += "?suggested_only=true"
	}
	var last error = fmt.Errorf("federation: no server to ask for the hierarchy of %s", room)
	tried := map[string]bool{f.cfg.ServerName: true, "": true}
	asked := 0
	for _, srv := range servers {
		if tried[srv] || asked == maxHierarchyServers {
			continue
		}
		tried[srv] = true
		asked++
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		raw, err := f.client.DoRaw(ctx, srv, "GET", path, nil)
		cancel()
		if err != nil {
			last = err
			continue
		}
		var probe struct {
			Room struct {
				RoomID string `json:"room_id"`
			} `json:"room"`
		}
		if json.Unmarshal(raw, &probe) != nil || probe.Room.RoomID != room {
			last = errors.New("federation: hierarchy answer of " + srv + " does not describe " + room)
			continue
		}
		return raw, nil
	}
	return nil, last
}
