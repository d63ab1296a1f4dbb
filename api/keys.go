package api

import (
	"bytes"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"sort"
	"strings"

	"engram/dag"
	"engram/projections"
)

// deviceKeysBody is the part of a device_keys object the server checks.
type deviceKeysBody struct {
	UserID     string            `json:"user_id"`
	DeviceID   string            `json:"device_id"`
	Algorithms []string          `json:"algorithms"`
	Keys       map[string]string `json:"keys"`
}

// isNull reports whether a raw JSON member is absent or null.
func isNull(raw json.RawMessage) bool {
	t := bytes.TrimSpace(raw)
	return len(t) == 0 || string(t) == "null"
}

// checkDeviceKeys validates uploaded device keys: they must be the
// requester's, for the requesting device, and carry the device's valid
// self-signature (its ed25519 key over the canonical JSON of the object
// without signatures and unsigned). Synapse answers a user or device
// mismatch with 400; so do we.
func checkDeviceKeys(raw []byte, user, device string) *Error {
	var dk deviceKeysBody
	if e := decodeJSON(raw, &dk); e != nil {
		return e
	}
	if dk.UserID != user {
		return errInvalid("Provided `user_id` in `device_keys` does not match that of the authenticated user")
	}
	if dk.DeviceID != device {
		return errInvalid("Provided `device_id` in `device_keys` does not match that of the authenticated user device")
	}
	keyID := "ed25519:" + device
	pubB64, ok := dk.Keys[keyID]
	if !ok {
		return errInvalid("device_keys must contain the device's ed25519 key " + keyID)
	}
	pub, ok := decodeKeyB64(pubB64)
	if !ok || len(pub) != ed25519.PublicKeySize {
		return errInvalid("Invalid ed25519 key " + keyID)
	}
	if err := dag.VerifyJSON(raw, user, keyID, pub); err != nil {
		return errInvalid("Invalid signature on device keys: " + err.Error())
	}
	return nil
}

// splitKeyID splits "algorithm:keyID".
func splitKeyID(s string) (algo, id string, ok bool) {
	i := strings.IndexByte(s, ':')
	if i <= 0 || i == len(s)-1 {
		return "", "", false
	}
	return s[:i], s[i+1:], true
}

// sameKey compares two one-time keys as Synapse does: objects without their
// signatures, strings as strings.
func sameKey(a, b []byte) bool {
	norm := func(x []byte) []byte {
		var v any
		if json.Unmarshal(x, &v) != nil {
			return x
		}
		if m, ok := v.(map[string]any); ok {
			delete(m, "signatures")
		}
		out, err := json.Marshal(v)
		if err != nil {
			return x
		}
		return out
	}
	return bytes.Equal(norm(a), norm(b))
}

// keysUpload serves POST /keys/upload.
func (s *Server) keysUpload(r *Req) error {
	if d := r.Param("deviceId"); d != "" && d != r.Device {
		return errInvalid("Can only upload keys for the current device")
	}
	var b struct {
		DeviceKeys   json.RawMessage            `json:"device_keys"`
		OneTimeKeys  map[string]json.RawMessage `json:"one_time_keys"`
		FallbackKeys map[string]json.RawMessage `json:"fallback_keys"`
	}
	if e := r.decode(&b); e != nil {
		return e
	}
	rec := &projections.KeysUploadRecord{UserID: r.User, DeviceID: r.Device}
	if !isNull(b.DeviceKeys) {
		if e := checkDeviceKeys(b.DeviceKeys, r.User, r.Device); e != nil {
			return e
		}
	}
	parse := func(m map[string]json.RawMessage, what string) ([]projections.OneTimeKey, *Error) {
		ids := make([]string, 0, len(m))
		for id := range m {
			ids = append(ids, id)
		}
		sort.Strings(ids)
		var out []projections.OneTimeKey
		for _, id := range ids {
			algo, kid, ok := splitKeyID(id)
			if !ok {
				return nil, errBadJSON("Invalid " + what + " key ID " + id)
			}
			v := bytes.TrimSpace(m[id])
			if len(v) == 0 || (v[0] != '{' && v[0] != '"') {
				return nil, errBadJSON("Invalid " + what + " key " + id)
			}
			out = append(out, projections.OneTimeKey{Algorithm: algo, KeyID: kid, JSON: append([]byte(nil), v...)})
		}
		return out, nil
	}
	otks, e := parse(b.OneTimeKeys, "one-time")
	if e != nil {
		return e
	}
	fbs, e := parse(b.FallbackKeys, "fallback")
	if e != nil {
		return e
	}

	unlock := s.lockDevices([][2]string{{r.User, r.Device}})
	err := func() error {
		if !isNull(b.DeviceKeys) {
			old, err := s.store.DeviceKeys(r.User, r.Device)
			if err != nil && !errors.Is(err, projections.ErrNotFound) {
				return err
			}
			if !bytes.Equal(old, bytes.TrimSpace(b.DeviceKeys)) {
				rec.DeviceKeys = append([]byte(nil), bytes.TrimSpace(b.DeviceKeys)...)
			}
		}
		if len(otks) > 0 {
			existing := map[string][]byte{}
			if err := s.store.OneTimeKeys(r.User, r.Device, "", func(k projections.StoredOTK) bool {
				existing[k.Algorithm+":"+k.KeyID] = k.JSON
				return true
			}); err != nil {
				return err
			}
			for _, k := range otks {
				old, ok := existing[k.Algorithm+":"+k.KeyID]
				if !ok {
					rec.OneTimeKeys = append(rec.OneTimeKeys, k)
					continue
				}
				// Synapse: "One time key %s:%s already exists", 400
				// M_UNKNOWN; re-uploading the same key is accepted.
				if !sameKey(old, k.JSON) {
					return merr(400, "M_UNKNOWN", "One time key "+k.Algorithm+":"+k.KeyID+" already exists")
				}
			}
		}
		if len(fbs) > 0 {
			cur, err := s.store.FallbackKeys(r.User, r.Device)
			if err != nil {
				return err
			}
			for _, k := range fbs {
				// An identical fallback key is not reset to unused.
				if old, ok := cur[k.Algorithm]; ok && old.KeyID == k.KeyID && sameKey(old.JSON, k.JSON) {
					continue
				}
				rec.FallbackKeys = append(rec.FallbackKeys, k)
			}
		}
		if rec.DeviceKeys == nil && len(rec.OneTimeKeys) == 0 && len(rec.FallbackKeys) == 0 {
			return nil
		}
		return s.appendRecords(rec)
	}()
	unlock()
	if err != nil {
		return err
	}
	counts, err := s.otkCounts(r.User, r.Device)
	if err != nil {
		return err
	}
	return r.json(map[string]any{"one_time_key_counts": counts})
}

// mergeSignatures returns the stored key JSON raw with the extra signatures
// merged into its signatures object and, when unsigned is not nil, its
// unsigned object replaced.
func mergeSignatures(raw []byte, extra map[string]map[string]string, unsigned map[string]any) (json.RawMessage, error) {
	if len(extra) == 0 && unsigned == nil {
		return raw, nil
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(raw, &obj); err != nil {
		return nil, err
	}
	if len(extra) > 0 {
		sigs := map[string]map[string]json.RawMessage{}
		if s, ok := obj["signatures"]; ok {
			_ = json.Unmarshal(s, &sigs)
		}
		for u, m := range extra {
			if sigs[u] == nil {
				sigs[u] = map[string]json.RawMessage{}
			}
			for k, v := range m {
				if _, ok := sigs[u][k]; !ok {
					enc, _ := json.Marshal(v)
					sigs[u][k] = enc
				}
			}
		}
		enc, err := json.Marshal(sigs)
		if err != nil {
			return nil, err
		}
		obj["signatures"] = enc
	}
	if unsigned != nil {
		enc, err := json.Marshal(unsigned)
		if err != nil {
			return nil, err
		}
		obj["unsigned"] = enc
	}
	return json.Marshal(obj)
}

// storedSignatures returns the uploaded signatures of a user's key that
// requester may see: the owner's own, and requester's (user-signing
// signatures are "only visible to the user who made them").
func (s *Server) storedSignatures(owner, target, requester string) (map[string]map[string]string, error) {
	out := map[string]map[string]string{}
	err := s.store.KeySignatures(owner, target, func(signer, keyID, sig string) bool {
		if signer == owner || signer == requester {
			if out[signer] == nil {
				out[signer] = map[string]string{}
			}
			out[signer][keyID] = sig
		}
		return true
	})
	return out, err
}

// crossSigningPub returns the public key of a cross-signing key object (the
// part after "ed25519:" of its one key).
func crossSigningPub(raw []byte) (string, bool) {
	var k struct {
		Keys map[string]string `json:"keys"`
	}
	if json.Unmarshal(raw, &k) != nil || len(k.Keys) != 1 {
		return "", false
	}
	for id, v := range k.Keys {
		if !strings.HasPrefix(id, "ed25519:") || id[len("ed25519:"):] != v {
			return "", false
		}
		return v, true
	}
	return "", false
}

// keysQuery serves POST /keys/query. Remote users are asked of their
// servers (POST /_matrix/federation/v1/user/keys/query, in parallel, within
// the request's timeout) unless their keys are cached (api/e2ee_remote.go);
// a server that does not answer is listed under failures.
func (s *Server) keysQuery(r *Req) error {
	var b struct {
		DeviceKeys map[string][]string `json:"device_keys"`
		Timeout    *int64              `json:"timeout"`
	}
	if e := r.decode(&b); e != nil {
		return e
	}
	res := newKeysQueryResult()
	remote := map[string]map[string][]string{}
	for user, devices := range b.DeviceKeys {
		if !s.accounts.isLocal(user) {
			if srv := serverOf(user); srv != "" {
				if remote[srv] == nil {
					remote[srv] = map[string][]string{}
				}
				remote[srv][user] = devices
			}
			continue
		}
		if err := s.localKeys(res, user, devices, r.User); err != nil {
			return err
		}
	}
	s.queryRemoteKeys(res, remote, remoteTimeout(b.Timeout))
	return r.json(map[string]any{"device_keys": res.deviceKeys, "master_keys": res.master,
		"self_signing_keys": res.selfSigning, "user_signing_keys": res.userSigning, "failures": res.failures})
}

// keysQueryResult accumulates a /keys/query answer (also the federation's
// /user/keys/query answer, without user_signing_keys and failures).
type keysQueryResult struct {
	deviceKeys                       map[string]map[string]json.RawMessage
	master, selfSigning, userSigning map[string]json.RawMessage
	failures                         map[string]any
}

func newKeysQueryResult() *keysQueryResult {
	return &keysQueryResult{deviceKeys: map[string]map[string]json.RawMessage{}, master: map[string]json.RawMessage{},
		selfSigning: map[string]json.RawMessage{}, userSigning: map[string]json.RawMessage{}, failures: map[string]any{}}
}

// localKeys adds a local user's device keys and cross-signing keys to res,
// as requester may see them (requester "" is another server: no
// user-signing key).
func (s *Server) localKeys(res *keysQueryResult, user string, devices []string, requester string) error {
	dk, err := s.localDeviceKeys(user, devices)
	if err != nil {
		return err
	}
	res.deviceKeys[user] = dk
	for _, p := range []struct {
		typ string
		out map[string]json.RawMessage
	}{{projections.CrossSigningMaster, res.master}, {projections.CrossSigningSelfSigning, res.selfSigning}, {projections.CrossSigningUserSigning, res.userSigning}} {
		if p.typ == projections.CrossSigningUserSigning && user != requester {
			continue
		}
		raw, err := s.localCrossSigningKey(user, p.typ, requester)
		if errors.Is(err, projections.ErrNotFound) {
			continue
		} else if err != nil {
			return err
		}
		p.out[user] = raw
	}
	return nil
}

// localCrossSigningKey returns a local user's cross-signing key of a type
// with the signatures requester may see merged in.
func (s *Server) localCrossSigningKey(user, typ, requester string) (json.RawMessage, error) {
	raw, err := s.store.CrossSigningKey(user, typ)
	if err != nil {
		return nil, err
	}
	if pub, ok := crossSigningPub(raw); ok {
		sigs, err := s.storedSignatures(user, pub, requester)
		if err != nil {
			return nil, err
		}
		return mergeSignatures(raw, sigs, nil)
	}
	return raw, nil
}

// localDeviceKeys returns a local user's device keys (all devices when
// devices is empty) with merged signatures and unsigned.device_display_name.
func (s *Server) localDeviceKeys(user string, devices []string) (map[string]json.RawMessage, error) {
	out := map[string]json.RawMessage{}
	want := map[string]bool{}
	for _, d := range devices {
		want[d] = true
	}
	var ferr error
	err := s.store.UserDeviceKeys(user, func(device string, keys []byte) bool {
		if len(want) > 0 && !want[device] {
			return true
		}
		unsigned := map[string]any{}
		if d, err := s.store.Device(user, device); err == nil && d.DisplayName != "" {
			unsigned["device_display_name"] = d.DisplayName
		}
		sigs, err := s.storedSignatures(user, device, user)
		if err != nil {
			ferr = err
			return false
		}
		m, err := mergeSignatures(keys, sigs, unsigned)
		if err != nil {
			ferr = err
			return false
		}
		out[device] = m
		return true
	})
	if err == nil {
		err = ferr
	}
	return out, err
}

// keysClaim serves POST /keys/claim. Each device's claims are serialized
// (lockDevices) and logged before the answer, so a one-time key is handed
// out exactly once, across concurrent claims, restarts and replays. When a
// device has no one-time key of the algorithm left, its fallback key is
// returned (and stays until the device replaces it). Keys of remote users
// are claimed from their servers (POST /_matrix/federation/v1/user/keys/claim).
func (s *Server) keysClaim(r *Req) error {
	var b struct {
		OneTimeKeys map[string]map[string]string `json:"one_time_keys"`
		Timeout     *int64                       `json:"timeout"`
	}
	if e := r.decode(&b); e != nil {
		return e
	}
	local := map[string]map[string]string{}
	remote := map[string]map[string]map[string]string{}
	for user, devs := range b.OneTimeKeys {
		if !s.accounts.isLocal(user) {
			if srv := serverOf(user); srv != "" {
				if remote[srv] == nil {
					remote[srv] = map[string]map[string]string{}
				}
				remote[srv][user] = devs
			}
			continue
		}
		local[user] = devs
	}
	result, err := s.claimLocalKeys(local)
	if err != nil {
		return err
	}
	failures := s.claimRemoteKeys(result, remote, remoteTimeout(b.Timeout))
	return r.json(map[string]any{"one_time_keys": result, "failures": failures})
}

// claimLocalKeys claims one key per (local user, device) of the given
// algorithm and returns them as the one_time_keys of a claim response. The
// federation endpoint (POST /_matrix/federation/v1/user/keys/claim) can
// answer with it too.
func (s *Server) claimLocalKeys(req map[string]map[string]string) (map[string]map[string]map[string]json.RawMessage, error) {
	type want struct{ user, device, algo string }
	var wants []want
	for user, devs := range req {
		for d, algo := range devs {
			wants = append(wants, want{user, d, algo})
		}
	}
	sort.Slice(wants, func(i, j int) bool {
		a, c := wants[i], wants[j]
		if a.user != c.user {
			return a.user < c.user
		}
		return a.device < c.device
	})
	pairs := make([][2]string, len(wants))
	for i, w := range wants {
		pairs[i] = [2]string{w.user, w.device}
	}
	result := map[string]map[string]map[string]json.RawMessage{}
	put := func(w want, id string, v []byte) {
		if result[w.user] == nil {
			result[w.user] = map[string]map[string]json.RawMessage{}
		}
		result[w.user][w.device] = map[string]json.RawMessage{w.algo + ":" + id: v}
	}
	unlock := s.lockDevices(pairs)
	defer unlock()
	rec := &projections.KeysClaimRecord{}
	for _, w := range wants {
		var got *projections.StoredOTK
		if err := s.store.OneTimeKeys(w.user, w.device, w.algo, func(k projections.StoredOTK) bool {
			got = &k
			return false
		}); err != nil {
			return nil, err
		}
		if got != nil {
			rec.Claims = append(rec.Claims, projections.ClaimedKey{UserID: w.user, DeviceID: w.device,
				Algorithm: w.algo, KeyID: got.KeyID, Seq: got.Seq, Idx: got.Idx})
			put(w, got.KeyID, got.JSON)
			continue
		}
		fks, err := s.store.FallbackKeys(w.user, w.device)
		if err != nil {
			return nil, err
		}
		fk, ok := fks[w.algo]
		if !ok {
			continue
		}
		if !fk.Used {
			rec.Claims = append(rec.Claims, projections.ClaimedKey{UserID: w.user, DeviceID: w.device,
				Algorithm: w.algo, KeyID: fk.KeyID, Fallback: true})
		}
		put(w, fk.KeyID, fk.JSON)
	}
	if len(rec.Claims) > 0 {
		if err := s.appendRecords(rec); err != nil {
			return nil, err
		}
	}
	return result, nil
}

// keysChanges serves GET /keys/changes.
func (s *Server) keysChanges(r *Req) error {
	from, ok := parseToken(r.Query("from"))
	if !ok {
		return errInvalid("Invalid from token")
	}
	to, ok := parseToken(r.Query("to"))
	if !ok {
		return errInvalid("Invalid to token")
	}
	to = min(to, s.log.Last())
	changed, left, err := s.deviceListChanges(r.User, from, to)
	if err != nil {
		return err
	}
	if changed == nil {
		changed = []string{}
	}
	if left == nil {
		left = []string{}
	}
	return r.json(map[string]any{"changed": changed, "left": left})
}
