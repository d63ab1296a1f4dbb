package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"strconv"

	"engram/projections"
)

// Server-side key backups (spec: "Server-side key backups"). Versions are
// numbered per user from 1, as in Synapse; only the newest version that is
// not deleted takes new keys. The replacement rule for a session key that is
// already stored runs in the fold (projections.BackupKeyBetter), so
// concurrent uploads resolve in log order.

func (s *Server) backupRoutes() {
	rt := &s.rt
	rt.client("POST", "/room_keys/version", authed, s.backupCreate)
	rt.client("GET", "/room_keys/version", authed, s.backupGetVersion)
	rt.client("GET", "/room_keys/version/{version}", authed, s.backupGetVersion)
	rt.client("PUT", "/room_keys/version/{version}", authed, s.backupUpdate)
	rt.client("DELETE", "/room_keys/version/{version}", authed, s.backupDelete)
	for _, p := range []string{"/room_keys/keys", "/room_keys/keys/{roomId}", "/room_keys/keys/{roomId}/{sessionId}"} {
		rt.client("PUT", p, authed, s.backupPutKeys)
		rt.client("GET", p, authed, s.backupGetKeys)
		rt.client("DELETE", p, authed, s.backupDeleteKeys)
	}
}

func errNoBackup(v string) *Error { return errNotFound("Unknown backup version " + v) }

// backupVersionParam resolves a version string to a live (not deleted)
// version of user.
func (s *Server) backupVersionParam(user, v string) (uint64, *projections.BackupVersion, error) {
	n, err := strconv.ParseUint(v, 10, 64)
	if err != nil || n == 0 {
		return 0, nil, errNoBackup(v)
	}
	bv, err := s.store.BackupVersionInfo(user, n)
	if errors.Is(err, projections.ErrNotFound) || (err == nil && bv.Deleted) {
		return 0, nil, errNoBackup(v)
	}
	if err != nil {
		return 0, nil, err
	}
	return n, bv, nil
}

type backupVersionBody struct {
	Algorithm string          `json:"algorithm"`
	AuthData  json.RawMessage `json:"auth_data"`
	Version   *string         `json:"version"`
}

func (b *backupVersionBody) check() *Error {
	if b.Algorithm == "" {
		return errMissing("Missing algorithm")
	}
	if t := bytes.TrimSpace(b.AuthData); len(t) == 0 || t[0] != '{' {
		return errMissing("Missing or invalid auth_data")
	}
	return nil
}

func (s *Server) backupCreate(r *Req) error {
	var b backupVersionBody
	if e := r.decode(&b); e != nil {
		return e
	}
	if e := b.check(); e != nil {
		return e
	}
	unlock := s.lockUser(r.User)
	defer unlock()
	highest, _, err := s.store.BackupVersions(r.User)
	if err != nil {
		return err
	}
	v := highest + 1
	if err := s.appendRecords(&projections.BackupVersionRecord{UserID: r.User, Version: v, Op: projections.BackupCreate,
		Algorithm: b.Algorithm, AuthData: append([]byte(nil), bytes.TrimSpace(b.AuthData)...)}); err != nil {
		return err
	}
	return r.json(map[string]string{"version": strconv.FormatUint(v, 10)})
}

func (s *Server) backupGetVersion(r *Req) error {
	v := r.Param("version")
	var n uint64
	if v == "" {
		_, cur, err := s.store.BackupVersions(r.User)
		if err != nil {
			return err
		}
		if cur == 0 {
			return errNotFound("No current backup version")
		}
		n = cur
	} else {
		var err error
		if n, _, err = s.backupVersionParam(r.User, v); err != nil {
			return err
		}
	}
	bv, err := s.store.BackupVersionInfo(r.User, n)
	if err != nil {
		return err
	}
	return r.json(map[string]any{"algorithm": bv.Algorithm, "auth_data": json.RawMessage(bv.AuthData),
		"version": strconv.FormatUint(n, 10), "etag": strconv.FormatUint(bv.Etag, 10), "count": bv.Count})
}

func (s *Server) backupUpdate(r *Req) error {
	var b backupVersionBody
	if e := r.decode(&b); e != nil {
		return e
	}
	if e := b.check(); e != nil {
		return e
	}
	v := r.Param("version")
	if b.Version != nil && *b.Version != v {
		return errInvalid("Version in body does not match")
	}
	unlock := s.lockUser(r.User)
	defer unlock()
	n, bv, err := s.backupVersionParam(r.User, v)
	if err != nil {
		return err
	}
	if bv.Algorithm != b.Algorithm {
		return errInvalid("Algorithm does not match")
	}
	if err := s.appendRecords(&projections.BackupVersionRecord{UserID: r.User, Version: n, Op: projections.BackupUpdate,
		Algorithm: b.Algorithm, AuthData: append([]byte(nil), bytes.TrimSpace(b.AuthData)...)}); err != nil {
		return err
	}
	return r.json(struct{}{})
}

func (s *Server) backupDelete(r *Req) error {
	unlock := s.lockUser(r.User)
	defer unlock()
	n, _, err := s.backupVersionParam(r.User, r.Param("version"))
	if err != nil {
		return err
	}
	if err := s.appendRecords(&projections.BackupVersionRecord{UserID: r.User, Version: n, Op: projections.BackupDelete}); err != nil {
		return err
	}
	return r.json(struct{}{})
}

// keyBackupData is KeyBackupData; session_data is kept as sent.
type keyBackupData struct {
	FirstMessageIndex *int64          `json:"first_message_index"`
	ForwardedCount    *int64          `json:"forwarded_count"`
	IsVerified        *bool           `json:"is_verified"`
	SessionData       json.RawMessage `json:"session_data"`
}

func backupKey(room, session string, raw json.RawMessage) (projections.BackupKey, *Error) {
	var d keyBackupData
	if e := decodeJSON(raw, &d); e != nil {
		return projections.BackupKey{}, e
	}
	if d.FirstMessageIndex == nil || d.ForwardedCount == nil || d.IsVerified == nil {
		return projections.BackupKey{}, errBadJSON("first_message_index, forwarded_count and is_verified are required")
	}
	if t := bytes.TrimSpace(d.SessionData); len(t) == 0 || t[0] != '{' {
		return projections.BackupKey{}, errBadJSON("session_data must be an object")
	}
	return projections.BackupKey{RoomID: room, SessionID: session, FirstMessageIndex: *d.FirstMessageIndex,
		ForwardedCount: *d.ForwardedCount, IsVerified: *d.IsVerified, Data: append([]byte(nil), bytes.TrimSpace(raw)...)}, nil
}

type roomKeysBody struct {
	Sessions map[string]json.RawMessage `json:"sessions"`
}

func (s *Server) backupPutKeys(r *Req) error {
	v := r.Query("version")
	if v == "" {
		return errMissing("Missing version")
	}
	room, session := r.Param("roomId"), r.Param("sessionId")
	var keys []projections.BackupKey
	addRoom := func(room string, rk roomKeysBody) *Error {
		for sid, raw := range rk.Sessions {
			k, e := backupKey(room, sid, raw)
			if e != nil {
				return e
			}
			keys = append(keys, k)
		}
		return nil
	}
	switch {
	case session != "":
		var raw json.RawMessage
		if e := r.decode(&raw); e != nil {
			return e
		}
		k, e := backupKey(room, session, raw)
		if e != nil {
			return e
		}
		keys = append(keys, k)
	case room != "":
		var rk roomKeysBody
		if e := r.decode(&rk); e != nil {
			return e
		}
		if e := addRoom(room, rk); e != nil {
			return e
		}
	default:
		var b struct {
			Rooms map[string]roomKeysBody `json:"rooms"`
		}
		if e := r.decode(&b); e != nil {
			return e
		}
		for rid, rk := range b.Rooms {
			if e := addRoom(rid, rk); e != nil {
				return e
			}
		}
	}
	sortBackupKeys(keys)
	unlock := s.lockUser(r.User)
	defer unlock()
	n, _, err := s.backupVersionParam(r.User, v)
	if err != nil {
		return err
	}
	_, cur, err := s.store.BackupVersions(r.User)
	if err != nil {
		return err
	}
	if n != cur {
		return &Error{Status: 403, Code: "M_WRONG_ROOM_KEYS_VERSION", Message: "Wrong backup version.",
			Extra: `"current_version":` + strconv.Quote(strconv.FormatUint(cur, 10))}
	}
	if len(keys) > 0 {
		if err := s.appendRecords(&projections.BackupKeysRecord{UserID: r.User, Version: n, Keys: keys}); err != nil {
			return err
		}
	}
	return s.backupEtag(r, n)
}

func sortBackupKeys(keys []projections.BackupKey) {
	for i := 1; i < len(keys); i++ {
		for j := i; j > 0; j-- {
			a, b := &keys[j-1], &keys[j]
			if a.RoomID < b.RoomID || (a.RoomID == b.RoomID && a.SessionID <= b.SessionID) {
				break
			}
			keys[j-1], keys[j] = keys[j], keys[j-1]
		}
	}
}

// backupEtag answers {etag, count} of a version.
func (s *Server) backupEtag(r *Req, n uint64) error {
	bv, err := s.store.BackupVersionInfo(r.User, n)
	if err != nil {
		return err
	}
	return r.json(map[string]any{"etag": strconv.FormatUint(bv.Etag, 10), "count": bv.Count})
}

func (s *Server) backupGetKeys(r *Req) error {
	v := r.Query("version")
	if v == "" {
		return errMissing("Missing version")
	}
	n, _, err := s.backupVersionParam(r.User, v)
	if err != nil {
		return err
	}
	room, session := r.Param("roomId"), r.Param("sessionId")
	rooms := map[string]map[string]json.RawMessage{}
	var found json.RawMessage
	if err := s.store.BackupKeys(r.User, n, room, session, func(k *projections.BackupKey) bool {
		if rooms[k.RoomID] == nil {
			rooms[k.RoomID] = map[string]json.RawMessage{}
		}
		rooms[k.RoomID][k.SessionID] = k.Data
		found = k.Data
		return true
	}); err != nil {
		return err
	}
	switch {
	case session != "":
		if found == nil {
			return errNotFound("No room_keys found")
		}
		r.raw(200, found)
		return nil
	case room != "":
		sessions := rooms[room]
		if sessions == nil {
			sessions = map[string]json.RawMessage{}
		}
		return r.json(map[string]any{"sessions": sessions})
	}
	out := map[string]any{}
	for rid, ss := range rooms {
		out[rid] = map[string]any{"sessions": ss}
	}
	return r.json(map[string]any{"rooms": out})
}

func (s *Server) backupDeleteKeys(r *Req) error {
	v := r.Query("version")
	if v == "" {
		return errMissing("Missing version")
	}
	unlock := s.lockUser(r.User)
	defer unlock()
	n, _, err := s.backupVersionParam(r.User, v)
	if err != nil {
		return err
	}
	if err := s.appendRecords(&projections.BackupKeysRecord{UserID: r.User, Version: n, Delete: true,
		RoomID: r.Param("roomId"), SessionID: r.Param("sessionId")}); err != nil {
		return err
	}
	return s.backupEtag(r, n)
}
