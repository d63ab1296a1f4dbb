package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"hash/fnv"
	"strings"
	"sync"

	"engram/projections"
)

// Client config (client-server-api, "Client Config") and room tagging
// ("Room Tagging", stored as the m.tag room account data). Account data is
// logged (KindAccountData) and folded by projections.AccountData, which
// also keeps the per-user change stream incremental /sync reads.

func (s *Server) accountDataRoutes() {
	rt := &s.rt
	rt.client("GET", "/user/{userId}/account_data/{type}", authed, s.getAccountData)
	rt.client("PUT", "/user/{userId}/account_data/{type}", authed, s.putAccountData)
	rt.client("GET", "/user/{userId}/rooms/{roomId}/account_data/{type}", authed, s.getAccountData)
	rt.client("PUT", "/user/{userId}/rooms/{roomId}/account_data/{type}", authed, s.putAccountData)
	rt.client("GET", "/user/{userId}/rooms/{roomId}/tags", authed, s.getTags)
	rt.client("PUT", "/user/{userId}/rooms/{roomId}/tags/{tag}", authed, s.putTag)
	rt.client("DELETE", "/user/{userId}/rooms/{roomId}/tags/{tag}", authed, s.deleteTag)
}

const (
	typeTag         = "m.tag"
	typeIgnoredList = "m.ignored_user_list"
)

// accountDataTarget checks the user and room parameters of an account
// data request.
func accountDataTarget(r *Req, verb string) (room string, e *Error) {
	if r.Param("userId") != r.User {
		return "", errForbidden("Cannot " + verb + " account data for other users.")
	}
	room = r.Param("roomId")
	if routeHas(r, "roomId") && !strings.HasPrefix(room, "!") {
		return "", errInvalid("Invalid room ID " + room)
	}
	return room, nil
}

// routeHas reports whether the matched route has a parameter name.
func routeHas(r *Req, name string) bool {
	if r.route == nil {
		return false
	}
	for _, n := range r.route.names {
		if n == name {
			return true
		}
	}
	return false
}

func (s *Server) getAccountData(r *Req) error {
	room, e := accountDataTarget(r, "get")
	if e != nil {
		return e
	}
	typ := r.Param("type")
	if room == "" && typ == projections.TypePushRules {
		content, err := s.pushRulesContent(r.User)
		if err != nil {
			return err
		}
		r.raw(200, content)
		return nil
	}
	it, err := s.store.AccountData(r.User, room, typ)
	if errors.Is(err, projections.ErrNotFound) {
		return errNotFound("Account data not found.")
	}
	if err != nil {
		return err
	}
	r.raw(200, it.Content)
	return nil
}

func (s *Server) putAccountData(r *Req) error {
	room, e := accountDataTarget(r, "add")
	if e != nil {
		return e
	}
	typ := r.Param("type")
	if (room == "" && typ == projections.TypePushRules) || (room != "" && typ == typeFullyRead) {
		return merr(405, "M_BAD_JSON", "Cannot set "+typ+" through this API.")
	}
	body, e := r.body()
	if e != nil {
		return e
	}
	var probe map[string]json.RawMessage
	if e := decodeJSON(body, &probe); e != nil {
		return e
	}
	if typ == typeIgnoredList {
		var v struct {
			Ignored map[string]json.RawMessage `json:"ignored_users"`
		}
		if json.Unmarshal(body, &v) != nil {
			return errBadJSON("ignored_users must be an object")
		}
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, body); err != nil {
		return errNotJSON("Content not JSON.")
	}
	if err := s.appendAccountData(r.User, room, typ, buf.Bytes()); err != nil {
		return err
	}
	return r.json(struct{}{})
}

func (s *Server) appendAccountData(user, room, typ string, content []byte) error {
	rec, err := projections.Encode(&projections.AccountDataRecord{UserID: user, RoomID: room, Type: typ, Content: content})
	if err != nil {
		return err
	}
	_, err = s.log.Append(rec)
	return err
}

// userLocks serialize a user's read-modify-write changes (tags, push
// rules), so concurrent requests do not lose each other's change.
var userLocks [64]sync.Mutex

func lockUser(user string) func() {
	h := fnv.New32a()
	h.Write([]byte(user))
	m := &userLocks[h.Sum32()%uint32(len(userLocks))]
	m.Lock()
	return m.Unlock
}

// tagsOf returns the tags of a room for user (tag -> tag info).
func (s *Server) tagsOf(user, room string) (map[string]json.RawMessage, error) {
	tags := map[string]json.RawMessage{}
	it, err := s.store.AccountData(user, room, typeTag)
	if errors.Is(err, projections.ErrNotFound) {
		return tags, nil
	}
	if err != nil {
		return nil, err
	}
	var v struct {
		Tags map[string]json.RawMessage `json:"tags"`
	}
	if json.Unmarshal(it.Content, &v) == nil && v.Tags != nil {
		tags = v.Tags
	}
	return tags, nil
}

func (s *Server) getTags(r *Req) error {
	room, e := accountDataTarget(r, "get")
	if e != nil {
		return e
	}
	tags, err := s.tagsOf(r.User, room)
	if err != nil {
		return err
	}
	return r.json(map[string]any{"tags": tags})
}

func (s *Server) putTag(r *Req) error {
	room, e := accountDataTarget(r, "add")
	if e != nil {
		return e
	}
	tag := r.Param("tag")
	if tag == "" || len(tag) > 255 {
		return errInvalid("Invalid tag")
	}
	var info map[string]json.RawMessage
	if e := r.decode(&info); e != nil {
		return e
	}
	if o, ok := info["order"]; ok {
		var f float64
		if json.Unmarshal(o, &f) != nil {
			return errBadJSON("order must be a number")
		}
	}
	return s.changeTags(r, room, func(tags map[string]json.RawMessage) {
		b, _ := json.Marshal(info)
		tags[tag] = b
	})
}

func (s *Server) deleteTag(r *Req) error {
	room, e := accountDataTarget(r, "delete")
	if e != nil {
		return e
	}
	tag := r.Param("tag")
	return s.changeTags(r, room, func(tags map[string]json.RawMessage) { delete(tags, tag) })
}

func (s *Server) changeTags(r *Req, room string, change func(map[string]json.RawMessage)) error {
	defer lockUser(r.User)()
	tags, err := s.tagsOf(r.User, room)
	if err != nil {
		return err
	}
	change(tags)
	content, err := json.Marshal(map[string]any{"tags": tags})
	if err != nil {
		return err
	}
	if err := s.appendAccountData(r.User, room, typeTag, content); err != nil {
		return err
	}
	return r.json(struct{}{})
}

// ignoredUsers returns the users user ignores (m.ignored_user_list).
func (s *Server) ignoredUsers(user string) map[string]bool {
	out := map[string]bool{}
	it, err := s.store.AccountData(user, "", typeIgnoredList)
	if err != nil {
		return out
	}
	var v struct {
		Ignored map[string]json.RawMessage `json:"ignored_users"`
	}
	if json.Unmarshal(it.Content, &v) == nil {
		for u := range v.Ignored {
			if u != user {
				out[u] = true
			}
		}
	}
	return out
}
