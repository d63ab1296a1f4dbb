package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"regexp"
	"sync"
	"unicode/utf8"

	"engram/dag/rooms"
	"engram/projections"
)

// Profiles (spec: "Profiles", with the v1.16 custom fields). A change is a
// KindProfile record; a change of displayname or avatar_url is then sent as
// a new m.room.member join event to every room the user is joined to (spec:
// "Events on Change of Profile Information").

func (s *Server) profileRoutes() {
	rt := &s.rt
	rt.client("GET", "/profile/{userId}", public, s.getProfile)
	rt.client("GET", "/profile/{userId}/{keyName}", public, s.getProfileField)
	rt.client("PUT", "/profile/{userId}/{keyName}", authed, s.putProfileField)
	rt.client("DELETE", "/profile/{userId}/{keyName}", authed, s.deleteProfileField)
}

// Synapse's limits: MAX_DISPLAYNAME_LEN, MAX_AVATAR_URL_LEN; and the spec's.
const (
	maxDisplayNameLen = 256
	maxAvatarURLLen   = 1000
	maxProfileBytes   = 64 << 10
	maxProfileKeyLen  = 255
)

// profileKeyRe is the keyName pattern of the spec's profile endpoints.
var profileKeyRe = regexp.MustCompile(`^(avatar_url|displayname|m\.tz|[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+)$`)

// profileContent returns the user's displayname and avatar_url as they go
// into the content of the user's own m.room.member events (spec: "when
// homeservers emit room membership events for their own users, they should
// include the display name and avatar URL fields"). Fields that are not set
// are absent; the map is fresh and the caller may add to it. Errors are
// logged and yield what could be read: a join must not fail over a profile.
func (s *Server) profileContent(user string) map[string]any {
	out := map[string]any{}
	fields, err := s.store.Profile(user)
	if err != nil {
		s.logger.Warn("reading profile", "user", user, "err", err)
		return out
	}
	for _, f := range fields {
		if f.Key != "displayname" && f.Key != "avatar_url" {
			continue
		}
		var v string
		if json.Unmarshal(f.Value, &v) == nil && v != "" {
			out[f.Key] = v
		}
	}
	return out
}

// profileTarget validates the userId parameter.
func (s *Server) profileTarget(r *Req) (string, *Error) {
	user := r.Param("userId")
	if !validUserID(user) {
		return "", errInvalid("Invalid user ID")
	}
	return user, nil
}

// profileExists reports whether user has an account here. Remote profiles
// need a federation query, which engram does not make (yet): they are 404.
func (s *Server) profileExists(user string) (bool, error) {
	if !s.accounts.isLocal(user) {
		return false, nil
	}
	_, err := s.store.Account(user)
	if errors.Is(err, projections.ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}

func (s *Server) getProfile(r *Req) error {
	user, e := s.profileTarget(r)
	if e != nil {
		return e
	}
	if done, err := s.fedProfile(r, user, ""); done || err != nil {
		return err
	}
	ok, err := s.profileExists(user)
	if err != nil {
		return err
	}
	if !ok {
		return errNotFound("Profile not found")
	}
	fields, err := s.store.Profile(user)
	if err != nil {
		return err
	}
	if len(fields) == 0 { // Synapse: an empty profile is not found
		return errNotFound("Profile not found")
	}
	b := []byte{'{'}
	for i, f := range fields {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendJSONString(b, f.Key)
		b = append(b, ':')
		b = append(b, f.Value...)
	}
	r.raw(200, append(b, '}'))
	return nil
}

func (s *Server) profileKey(r *Req) (string, *Error) {
	key := r.Param("keyName")
	if len(key) > maxProfileKeyLen {
		return "", merr(400, "M_KEY_TOO_LARGE", "Profile key is too long")
	}
	if !profileKeyRe.MatchString(key) {
		return "", errInvalid("Invalid profile key.")
	}
	return key, nil
}

func (s *Server) getProfileField(r *Req) error {
	user, e := s.profileTarget(r)
	if e != nil {
		return e
	}
	key, e := s.profileKey(r)
	if e != nil {
		return e
	}
	if done, err := s.fedProfile(r, user, key); done || err != nil {
		return err
	}
	ok, err := s.profileExists(user)
	if err != nil {
		return err
	}
	if !ok {
		return errNotFound("Profile not found")
	}
	v, err := s.store.ProfileValue(user, key)
	if errors.Is(err, projections.ErrNotFound) {
		return errNotFound("Profile field not found")
	}
	if err != nil {
		return err
	}
	b := appendJSONString([]byte{'{'}, key)
	b = append(append(b, ':'), v...)
	r.raw(200, append(b, '}'))
	return nil
}

// profileLocks orders a user's profile changes with their propagation, so
// the member events of two quick changes land in the order of the changes.
var profileLocks sync.Map // user ID -> *sync.Mutex

func lockProfile(user string) func() {
	m, _ := profileLocks.LoadOrStore(user, new(sync.Mutex))
	mu := m.(*sync.Mutex)
	mu.Lock()
	return mu.Unlock
}

func (s *Server) putProfileField(r *Req) error {
	user, e := s.profileTarget(r)
	if e != nil {
		return e
	}
	key, e := s.profileKey(r)
	if e != nil {
		return e
	}
	if user != r.User {
		return errForbidden("Cannot set another user's profile")
	}
	var body map[string]json.RawMessage
	if e := r.decode(&body); e != nil {
		return e
	}
	raw, ok := body[key]
	if !ok {
		return errMissing("Missing key '" + key + "'")
	}
	value, del, e := checkProfileValue(key, raw)
	if e != nil {
		return e
	}
	unlock := lockProfile(user)
	defer unlock()
	if !del {
		fields, err := s.store.Profile(user)
		if err != nil {
			return err
		}
		size := len(key) + len(value)
		for _, f := range fields {
			if f.Key != key {
				size += len(f.Key) + len(f.Value)
			}
		}
		if size > maxProfileBytes {
			return merr(400, "M_PROFILE_TOO_LARGE", "The profile would exceed 64 KiB")
		}
	}
	return s.setProfileField(r, user, key, value, del)
}

// checkProfileValue validates a field's new value; del is true when it
// clears the field (an empty displayname or avatar_url, as in Synapse).
func checkProfileValue(key string, raw json.RawMessage) (value []byte, del bool, e *Error) {
	raw = bytes.TrimSpace(raw)
	switch key {
	case "displayname", "avatar_url", "m.tz":
		var v string
		if len(raw) == 0 || raw[0] != '"' || json.Unmarshal(raw, &v) != nil {
			return nil, false, errInvalid("'" + key + "' must be a string")
		}
		if key == "displayname" && utf8.RuneCountInString(v) > maxDisplayNameLen {
			return nil, false, merr(400, "M_UNKNOWN", "Displayname is too long (max 256)")
		}
		if key == "avatar_url" && utf8.RuneCountInString(v) > maxAvatarURLLen {
			return nil, false, merr(400, "M_UNKNOWN", "Avatar URL is too long (max 1000)")
		}
		if v == "" && key != "m.tz" {
			return nil, true, nil
		}
		return mustJSON(v), false, nil
	}
	// Custom fields: any JSON, stored compactly.
	var buf bytes.Buffer
	if err := json.Compact(&buf, raw); err != nil {
		return nil, false, errBadJSON("Malformed JSON payload.")
	}
	return buf.Bytes(), false, nil
}

func (s *Server) deleteProfileField(r *Req) error {
	user, e := s.profileTarget(r)
	if e != nil {
		return e
	}
	key, e := s.profileKey(r)
	if e != nil {
		return e
	}
	if user != r.User {
		return errForbidden("Cannot delete another user's profile")
	}
	unlock := lockProfile(user)
	defer unlock()
	if _, err := s.store.ProfileValue(user, key); errors.Is(err, projections.ErrNotFound) {
		return r.json(struct{}{}) // "deleted or it doesn't exist"
	} else if err != nil {
		return err
	}
	return s.setProfileField(r, user, key, nil, true)
}

// setProfileField logs the change and, for displayname and avatar_url,
// sends the new member events. The caller holds the user's profile lock.
func (s *Server) setProfileField(r *Req, user, key string, value []byte, del bool) error {
	if err := s.appendRecords(&projections.ProfileRecord{UserID: user, Key: key, Value: value, Delete: del, TS: nowMS()}); err != nil {
		return err
	}
	if key == "displayname" || key == "avatar_url" {
		s.propagateProfile(user)
	}
	return r.json(struct{}{})
}

// propagateProfile sends a join event with the current profile to every
// room the user is joined to, keeping the rest of the current member
// content. Rooms where nothing changes are skipped; failures are logged
// (the profile itself is already saved).
func (s *Server) propagateProfile(user string) {
	urs, err := s.store.UserRooms(user)
	if err != nil {
		s.logger.Error("profile: listing rooms", "user", user, "err", err)
		return
	}
	prof := s.profileContent(user)
	var joined []string
	for _, ur := range urs {
		if ur.Membership == projections.MemberJoin {
			joined = append(joined, ur.RoomID)
		}
	}
	inParallel(joined, func(room string) {
		content, err := s.memberContent(room, user)
		if err != nil {
			s.logger.Warn("profile: reading membership", "room", room, "err", err)
			return
		}
		changed := false
		for _, k := range []string{"displayname", "avatar_url"} {
			want, has := prof[k]
			if has && content[k] != want {
				content[k], changed = want, true
			} else if !has {
				if _, had := content[k]; had {
					delete(content, k)
					changed = true
				}
			}
		}
		if !changed {
			return
		}
		content["membership"] = "join"
		if _, err := s.rooms.Send(rooms.Event{Room: room, Sender: user, Type: "m.room.member",
			StateKey: str(user), Content: mustJSON(content)}); err != nil {
			s.logger.Warn("profile: updating membership", "room", room, "user", user, "err", err)
		}
	})
}

// roomWorkers bounds the member events sent at once for one user's profile
// change or deactivation: rooms sequence independently and their appends
// share group commits, so a user in many rooms is not served one fsync at
// a time.
const roomWorkers = 8

// inParallel calls fn for each room, roomWorkers at a time, and waits.
func inParallel(rooms []string, fn func(room string)) {
	work := make(chan string)
	var wg sync.WaitGroup
	for i := 0; i < min(roomWorkers, len(rooms)); i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for room := range work {
				fn(room)
			}
		}()
	}
	for _, room := range rooms {
		work <- room
	}
	close(work)
	wg.Wait()
}

// memberContent returns the content of the user's current member event.
func (s *Server) memberContent(room, user string) (map[string]any, error) {
	id, err := s.store.StateEvent(room, "m.room.member", user)
	if err != nil {
		return nil, err
	}
	rec, _, err := s.store.Event(id)
	if err != nil {
		return nil, err
	}
	var v pduView
	if err := json.Unmarshal(rec.PDU, &v); err != nil {
		return nil, err
	}
	c := map[string]any{}
	if len(v.Content) > 0 {
		if err := json.Unmarshal(v.Content, &c); err != nil {
			return nil, err
		}
	}
	return c, nil
}
