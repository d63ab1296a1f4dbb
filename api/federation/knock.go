package federation

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"engram/dag"
)

// StatusCode is the HTTP status of the answer, for callers that relay it
// without importing this package.
func (e *HTTPError) StatusCode() int { return e.Status }

// Knock makes a local user knock on a room this server does not take part
// in: make_knock and send_knock through the first of via (plus the room
// ID's server) that answers ("To knock on a room without being in it, the
// knocking server must first ask a resident server for an event template
// with make_knock, sign it, and send it back with send_knock"). The knock
// is then recorded here like a remote invite, so it shows in the user's
// /sync under rooms.knock, and a later invite or join goes through the
// usual remote paths. extra is merged into the event's content (reason,
// displayname, avatar_url); membership stays "knock". It returns the
// knock's event ID.
func (f *Federation) Knock(room, user string, via []string, extra json.RawMessage) (string, error) {
	if s := dag.ServerName(room); s != "" && !slices.Contains(via, s) {
		via = append(via, s)
	}
	var last error = errors.New("federation: no server to knock through")
	for _, srv := range via {
		if srv == "" || srv == f.cfg.ServerName {
			continue
		}
		id, err := f.knockVia(room, user, srv, extra)
		if err == nil {
			return id, nil
		}
		last = err
		f.logger.Info("knock failed", "room", room, "via", srv, "err", err)
		var he *HTTPError
		if errors.As(err, &he) && he.Status == 403 {
			break // the room refuses: another server will say the same
		}
	}
	return "", last
}

func (f *Federation) knockVia(room, user, srv string, extra json.RawMessage) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// "ver: The room versions the sending server has support for": only
	// versions with knocking make sense here.
	var q []string
	for v := 1; v <= 12; v++ {
		if rv := dag.Version(fmt.Sprint(v)); rv != nil && rv.Knocking {
			q = append(q, fmt.Sprintf("ver=%d", v))
		}
	}
	var mk struct {
		Event       json.RawMessage `json:"event"`
		RoomVersion string          `json:"room_version"`
	}
	path := "/_matrix/federation/v1/make_knock/" + pathEscape(room) + "/" + pathEscape(user) + "?" + strings.Join(q, "&")
	if err := f.client.Do(ctx, srv, "GET", path, nil, &mk); err != nil {
		return "", err
	}
	ver := dag.Version(mk.RoomVersion)
	if ver == nil || !ver.Knocking {
		return "", fmt.Errorf("federation: make_knock: unsupported room version %q", mk.RoomVersion)
	}
	tmpl, err := withContent(mk.Event, extra)
	if err != nil {
		return "", err
	}
	ev, err := f.signTemplate(tmpl, ver, true)
	if err != nil {
		return "", err
	}
	if ev.RoomID != room || ev.Sender != user || ev.Type != "m.room.member" || ev.StateKey == nil || *ev.StateKey != user || membershipOf(ev.Content) != "knock" {
		return "", errors.New("federation: make_knock template is not our knock")
	}
	var sk struct {
		KnockRoomState []json.RawMessage `json:"knock_room_state"`
	}
	path = "/_matrix/federation/v1/send_knock/" + pathEscape(room) + "/" + pathEscape(ev.ID)
	if err := f.client.Do(ctx, srv, "PUT", path, json.RawMessage(ev.Raw), &sk); err != nil {
		return "", err
	}
	if _, err := f.rooms.RecordRemoteMembership(withStrippedState(ev, "knock_room_state", sk.KnockRoomState)); err != nil {
		return "", err
	}
	return ev.ID, nil
}

// withContent merges extra into a template's content; the template's
// membership wins.
func withContent(tmpl, extra json.RawMessage) ([]byte, error) {
	if len(extra) == 0 {
		return tmpl, nil
	}
	var t map[string]json.RawMessage
	if err := json.Unmarshal(tmpl, &t); err != nil {
		return nil, fmt.Errorf("federation: event template: %w", err)
	}
	var c, x map[string]json.RawMessage
	if err := json.Unmarshal(t["content"], &c); err != nil || c == nil {
		return nil, errors.New("federation: event template has no content")
	}
	if err := json.Unmarshal(extra, &x); err != nil {
		return nil, fmt.Errorf("federation: knock content: %w", err)
	}
	for k, v := range x {
		if _, ok := c[k]; !ok {
			c[k] = v
		}
	}
	b, err := json.Marshal(c)
	if err != nil {
		return nil, err
	}
	t["content"] = b
	return json.Marshal(t)
}
