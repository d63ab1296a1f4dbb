package api

import (
	"bytes"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"slices"

	"engram/dag"
	"engram/projections"
)

// Cross-signing (spec: "Cross-signing"): a user's master key signs their
// self-signing key (which signs their devices) and user-signing key (which
// signs other users' master keys).

func errInvalidSignature(msg string) *Error { return merr(400, "M_INVALID_SIGNATURE", msg) }

// crossSigningBody is the part of a cross-signing key the server checks.
type crossSigningBody struct {
	UserID string            `json:"user_id"`
	Usage  []string          `json:"usage"`
	Keys   map[string]string `json:"keys"`
}

// checkCrossSigningKey validates a cross-signing key object of user for
// usage and returns its public key (base64, as written in its key ID).
func checkCrossSigningKey(raw []byte, user, usage string) (string, *Error) {
	var k crossSigningBody
	if e := decodeJSON(raw, &k); e != nil {
		return "", e
	}
	if k.UserID != user {
		return "", errInvalid("Invalid " + usage + " key: user_id does not match the requester")
	}
	if !slices.Contains(k.Usage, usage) {
		return "", errInvalid("Invalid " + usage + " key: usage does not contain " + usage)
	}
	pub, ok := crossSigningPub(raw)
	if !ok {
		return "", errInvalid("Invalid " + usage + " key: it must hold exactly one ed25519 key, named by its public key")
	}
	if b, ok := decodeKeyB64(pub); !ok || len(b) != ed25519.PublicKeySize {
		return "", errInvalid("Invalid " + usage + " key: bad ed25519 public key")
	}
	return pub, nil
}

// unsignedContent returns the canonical JSON of a key object without its
// signatures and unsigned members: what signatures cover.
func unsignedContent(raw []byte) ([]byte, bool) {
	var obj map[string]json.RawMessage
	if json.Unmarshal(raw, &obj) != nil {
		return nil, false
	}
	delete(obj, "signatures")
	delete(obj, "unsigned")
	b, err := json.Marshal(obj)
	if err != nil {
		return nil, false
	}
	c, err := dag.Canonical(nil, b, false)
	return c, err == nil
}

func sameUnsignedContent(a, b []byte) bool {
	ca, ok1 := unsignedContent(a)
	cb, ok2 := unsignedContent(b)
	return ok1 && ok2 && bytes.Equal(ca, cb)
}

// crossSigningUpload serves POST /keys/device_signing/upload. Like Synapse
// (MSC3967), the first upload (no master key yet) and an upload identical to
// the stored keys need no user-interactive auth; replacing keys needs the
// password.
func (s *Server) crossSigningUpload(r *Req) error {
	var b struct {
		Master      json.RawMessage `json:"master_key"`
		SelfSigning json.RawMessage `json:"self_signing_key"`
		UserSigning json.RawMessage `json:"user_signing_key"`
		Auth        *uiaAuth        `json:"auth"`
	}
	if e := r.decode(&b); e != nil {
		return e
	}
	given := []struct {
		typ string
		raw json.RawMessage
	}{{projections.CrossSigningMaster, b.Master}, {projections.CrossSigningSelfSigning, b.SelfSigning}, {projections.CrossSigningUserSigning, b.UserSigning}}
	existingMaster, err := s.store.CrossSigningKey(r.User, projections.CrossSigningMaster)
	if err != nil && !errors.Is(err, projections.ErrNotFound) {
		return err
	}
	needAuth := false
	if existingMaster != nil {
		for _, g := range given {
			if isNull(g.raw) {
				continue
			}
			old, err := s.store.CrossSigningKey(r.User, g.typ)
			if err != nil && !errors.Is(err, projections.ErrNotFound) {
				return err
			}
			if old == nil || !sameUnsignedContent(old, g.raw) {
				needAuth = true
			}
		}
	}
	if needAuth {
		sess, err := s.reauth(r, b.Auth)
		if sess == nil {
			return err
		}
	}
	rec := &projections.CrossSigningRecord{UserID: r.User}
	masterPub := ""
	if !isNull(b.Master) {
		pub, e := checkCrossSigningKey(b.Master, r.User, "master")
		if e != nil {
			return e
		}
		masterPub = pub
		rec.Master = append([]byte(nil), bytes.TrimSpace(b.Master)...)
	}
	for _, g := range given[1:] {
		if isNull(g.raw) {
			continue
		}
		if _, e := checkCrossSigningKey(g.raw, r.User, g.typ); e != nil {
			return e
		}
		if masterPub == "" {
			if existingMaster == nil {
				return errMissing("No master key available to verify signature")
			}
			masterPub, _ = crossSigningPub(existingMaster)
		}
		mp, ok := decodeKeyB64(masterPub)
		if !ok {
			return errMissing("No valid master key available to verify signature")
		}
		if err := dag.VerifyJSON(g.raw, r.User, "ed25519:"+masterPub, mp); err != nil {
			return errInvalidSignature("Invalid signature on " + g.typ + " key")
		}
		v := append([]byte(nil), bytes.TrimSpace(g.raw)...)
		if g.typ == projections.CrossSigningSelfSigning {
			rec.SelfSigning = v
		} else {
			rec.UserSigning = v
		}
	}
	if rec.Master == nil && rec.SelfSigning == nil && rec.UserSigning == nil {
		return r.json(struct{}{})
	}
	unlock := s.lockUser(r.User)
	err = s.appendRecords(rec)
	unlock()
	if err != nil {
		return err
	}
	return r.json(struct{}{})
}

// signaturesUpload serves POST /keys/signatures/upload: each signed object
// must match the stored key, and each new signature must verify with the
// key the spec says signs it (a device key or the self-signing key for the
// user's own keys, the user-signing key for other users' master keys).
func (s *Server) signaturesUpload(r *Req) error {
	var b map[string]map[string]json.RawMessage
	if e := r.decode(&b); e != nil {
		return e
	}
	failures := map[string]map[string]map[string]string{}
	rec := &projections.KeySignaturesRecord{}
	users := make([]string, 0, len(b))
	for u := range b {
		users = append(users, u)
	}
	slices.Sort(users)
	for _, user := range users {
		ids := make([]string, 0, len(b[user]))
		for id := range b[user] {
			ids = append(ids, id)
		}
		slices.Sort(ids)
		for _, keyID := range ids {
			sigs, e := s.checkSignedKey(r.User, user, keyID, b[user][keyID])
			if e != nil {
				if failures[user] == nil {
					failures[user] = map[string]map[string]string{}
				}
				failures[user][keyID] = map[string]string{"errcode": e.Code, "error": e.Message}
				continue
			}
			rec.Signatures = append(rec.Signatures, sigs...)
		}
	}
	if len(rec.Signatures) > 0 {
		if err := s.appendRecords(rec); err != nil {
			return err
		}
	}
	return r.json(map[string]any{"failures": failures})
}

// checkSignedKey verifies the signatures requester made on target's key
// keyID and returns them.
func (s *Server) checkSignedKey(requester, target, keyID string, raw []byte) ([]projections.KeySignature, *Error) {
	var obj struct {
		UserID     string                       `json:"user_id"`
		Signatures map[string]map[string]string `json:"signatures"`
	}
	if e := decodeJSON(raw, &obj); e != nil {
		return nil, e
	}
	if obj.UserID != target {
		return nil, errInvalid("user_id of the signed object does not match")
	}
	if !s.accounts.isLocal(target) {
		return nil, merr(404, "M_NOT_FOUND", "Signing keys of remote users are not available yet")
	}
	get := func(user, typ string) (string, []byte, *Error) {
		k, err := s.store.CrossSigningKey(user, typ)
		if err != nil {
			return "", nil, merr(404, "M_NOT_FOUND", "No "+typ+" key for "+user)
		}
		pub, ok := crossSigningPub(k)
		if !ok {
			return "", nil, merr(404, "M_NOT_FOUND", "No valid "+typ+" key for "+user)
		}
		return pub, k, nil
	}
	mine := obj.Signatures[requester]
	var out []projections.KeySignature
	verify := func(signerKeyID string, pubB64 string, targetKey string) *Error {
		pub, ok := decodeKeyB64(pubB64)
		if !ok || len(pub) != ed25519.PublicKeySize {
			return errInvalidSignature("Bad signing key " + signerKeyID)
		}
		if err := dag.VerifyJSON(raw, requester, signerKeyID, pub); err != nil {
			return errInvalidSignature("Invalid signature " + signerKeyID)
		}
		out = append(out, projections.KeySignature{TargetUser: target, TargetKey: targetKey,
			SignerUser: requester, SignerKeyID: signerKeyID, Signature: mine[signerKeyID]})
		return nil
	}
	if target != requester {
		usPub, _, e := get(requester, projections.CrossSigningUserSigning)
		if e != nil {
			return nil, e
		}
		mPub, stored, e := get(target, projections.CrossSigningMaster)
		if e != nil {
			return nil, e
		}
		if keyID != mPub || !sameUnsignedContent(stored, raw) {
			return nil, errInvalid("Signed key does not match the user's master key")
		}
		if _, ok := mine["ed25519:"+usPub]; !ok {
			return nil, errInvalidSignature("Missing signature by the user-signing key")
		}
		if e := verify("ed25519:"+usPub, usPub, mPub); e != nil {
			return nil, e
		}
		return out, nil
	}
	if mPub, stored, e := get(target, projections.CrossSigningMaster); e == nil && keyID == mPub {
		// The user's own master key, signed by their devices.
		if !sameUnsignedContent(stored, raw) {
			return nil, errInvalid("Signed key does not match the stored master key")
		}
		ids := make([]string, 0, len(mine))
		for id := range mine {
			ids = append(ids, id)
		}
		slices.Sort(ids)
		for _, sigID := range ids {
			if sigID == "ed25519:"+mPub {
				continue
			}
			dev := sigID[min(len(sigID), len("ed25519:")):]
			dk, err := s.store.DeviceKeys(target, dev)
			if err != nil {
				return nil, errInvalidSignature("Unknown signing device " + dev)
			}
			var body deviceKeysBody
			if json.Unmarshal(dk, &body) != nil {
				return nil, errInvalidSignature("Unknown signing device " + dev)
			}
			if e := verify(sigID, body.Keys[sigID], mPub); e != nil {
				return nil, e
			}
		}
		if len(out) == 0 {
			return nil, errInvalidSignature("No device signature on the master key")
		}
		return out, nil
	}
	// One of the user's devices, signed by the self-signing key.
	stored, err := s.store.DeviceKeys(target, keyID)
	if err != nil {
		return nil, merr(404, "M_NOT_FOUND", "Unknown device "+keyID)
	}
	if !sameUnsignedContent(stored, raw) {
		return nil, errInvalid("Signed key does not match the stored device keys")
	}
	ssPub, _, e := get(target, projections.CrossSigningSelfSigning)
	if e != nil {
		return nil, e
	}
	if _, ok := mine["ed25519:"+ssPub]; !ok {
		return nil, errInvalidSignature("Missing signature by the self-signing key")
	}
	if e := verify("ed25519:"+ssPub, ssPub, keyID); e != nil {
		return nil, e
	}
	return out, nil
}
