package dag

import (
	"crypto/ed25519"
	"encoding/base64"
	"fmt"
	"strings"
)

// SignJSON signs a JSON object per the appendices, "Signing Details": the
// object without signatures and unsigned is encoded as canonical JSON and
// signed with ed25519; the unpadded base64 signature goes to
// signatures[serverName][keyID], next to any signatures already there. The
// result, unsigned included, is returned as canonical JSON. keyID is the full
// signing key identifier, e.g. "ed25519:a_bcde".
//
// Canonicalisation is lenient, like VerifyJSON's, so that objects carrying
// events of room versions 1-5 (federation request bodies, for instance) can
// be signed; for strict-valid input both modes give the same bytes.
func SignJSON(raw []byte, serverName, keyID string, key ed25519.PrivateKey) ([]byte, error) {
	buf := getBuf()
	defer putBuf(buf)
	canon, err := Canonical((*buf)[:0], raw, false)
	*buf = canon
	if err != nil {
		return nil, err
	}
	if len(canon) == 0 || canon[0] != '{' {
		return nil, fmt.Errorf("%w: only JSON objects can be signed", ErrBadJSON)
	}
	return signCanonical(canon, canon, serverName, keyID, key)
}

// signCanonical signs what covered (canonical, signatures and unsigned are
// removed here) and merges the signature into full.
func signCanonical(full, covered []byte, serverName, keyID string, key ed25519.PrivateKey) ([]byte, error) {
	if err := checkSigningKey(keyID, key); err != nil {
		return nil, err
	}
	buf := getBuf()
	defer putBuf(buf)
	msg, err := appendWithout((*buf)[:0], covered, "signatures", "unsigned")
	*buf = msg
	if err != nil {
		return nil, err
	}
	sig := ed25519.Sign(key, msg)
	return mergeSignature(full, serverName, keyID, sig)
}

func checkSigningKey(keyID string, key ed25519.PrivateKey) error {
	if len(key) != ed25519.PrivateKeySize {
		return fmt.Errorf("%w: ed25519 private key has %d bytes, want %d", ErrBadKey, len(key), ed25519.PrivateKeySize)
	}
	if !strings.HasPrefix(keyID, "ed25519:") || !validKeyVersion(keyID[len("ed25519:"):]) {
		return fmt.Errorf("%w: key ID %q is not ed25519:<[a-zA-Z0-9_]+>", ErrBadKey, keyID)
	}
	return nil
}

// mergeSignature returns full (canonical) with signatures[server][keyID]
// set to the base64 of sig.
func mergeSignature(full []byte, serverName, keyID string, sig []byte) ([]byte, error) {
	sigs := getMember(full, "signatures")
	if sigs == nil {
		sigs = []byte("{}")
	} else if sigs[0] != '{' {
		return nil, fmt.Errorf("%w: signatures is not an object", ErrBadJSON)
	}
	inner := getMember(sigs, serverName)
	if inner == nil {
		inner = []byte("{}")
	} else if inner[0] != '{' {
		return nil, fmt.Errorf("%w: signatures[%q] is not an object", ErrBadJSON, serverName)
	}
	var vb [96]byte
	v := append(vb[:0], '"')
	v = base64.RawStdEncoding.AppendEncode(v, sig)
	v = append(v, '"')
	b1, b2 := getBuf(), getBuf()
	defer putBuf(b1)
	defer putBuf(b2)
	inner2, err := setMember((*b1)[:0], inner, keyID, v)
	*b1 = inner2
	if err != nil {
		return nil, err
	}
	sigs2, err := setMember((*b2)[:0], sigs, serverName, inner2)
	*b2 = sigs2
	if err != nil {
		return nil, err
	}
	return setMember(make([]byte, 0, len(full)+len(sigs2)-len(sigs)+16), full, "signatures", sigs2)
}

// VerifyJSON checks the signature of serverName under keyID on a JSON object
// (appendices, "Checking for a Signature"): the object without signatures
// and unsigned is encoded as canonical JSON and the decoded signature checked
// against it with the ed25519 public key. Errors wrap ErrNoSignature when the
// signature is absent and ErrBadSignature when it does not verify.
//
// Canonicalisation is lenient here (room versions 1-5 events carry numbers
// that strict canonical JSON rejects); for strict-valid input both modes give
// the same bytes.
func VerifyJSON(raw []byte, serverName, keyID string, pub ed25519.PublicKey) error {
	buf := getBuf()
	defer putBuf(buf)
	canon, err := Canonical((*buf)[:0], raw, false)
	*buf = canon
	if err != nil {
		return err
	}
	if len(canon) == 0 || canon[0] != '{' {
		return fmt.Errorf("%w: only JSON objects carry signatures", ErrBadJSON)
	}
	return verifyCanonical(canon, canon, serverName, keyID, pub)
}

// verifyCanonical checks the signature found in sigSource against covered
// (canonical; signatures and unsigned are removed here).
func verifyCanonical(sigSource, covered []byte, serverName, keyID string, pub ed25519.PublicKey) error {
	if !strings.HasPrefix(keyID, "ed25519:") {
		return fmt.Errorf("%w: unsupported signing algorithm in key ID %q", ErrBadSignature, keyID)
	}
	if len(pub) != ed25519.PublicKeySize {
		return fmt.Errorf("%w: ed25519 public key has %d bytes, want %d", ErrBadKey, len(pub), ed25519.PublicKeySize)
	}
	sigs := getMember(sigSource, "signatures")
	if sigs == nil {
		return fmt.Errorf("%w: no signatures object", ErrNoSignature)
	}
	inner := getMember(sigs, serverName)
	if inner == nil {
		return fmt.Errorf("%w: no signatures from %s", ErrNoSignature, serverName)
	}
	enc := getMember(inner, keyID)
	if len(enc) == 0 || enc[0] != '"' {
		return fmt.Errorf("%w: no signature from %s with key %s", ErrNoSignature, serverName, keyID)
	}
	var sig [ed25519.SignatureSize]byte
	if !decodeBase64Value(sig[:], enc) {
		return fmt.Errorf("%w: signature from %s with key %s is not base64 of %d bytes", ErrBadSignature, serverName, keyID, ed25519.SignatureSize)
	}
	buf := getBuf()
	defer putBuf(buf)
	msg, err := appendWithout((*buf)[:0], covered, "signatures", "unsigned")
	*buf = msg
	if err != nil {
		return err
	}
	if !ed25519.Verify(pub, msg, sig[:]) {
		return fmt.Errorf("%w: signature from %s with key %s does not verify", ErrBadSignature, serverName, keyID)
	}
	return nil
}

// SignEvent adds serverName's signature to an event that already has its
// hashes (server-server API, "Adding hashes and signatures to outgoing
// events"): the event is redacted per the room version, the redacted copy is
// signed as in SignJSON, and the signature is copied back to the full event,
// which is returned as canonical JSON. Existing signatures are kept, so this
// also co-signs remote events (send_join, third-party invites).
func SignEvent(raw []byte, ver *RoomVersion, serverName, keyID string, key ed25519.PrivateKey) ([]byte, error) {
	if ver == nil {
		return nil, errNilVersion
	}
	buf := getBuf()
	defer putBuf(buf)
	canon, err := Canonical((*buf)[:0], raw, ver.StrictCanonicalJSON)
	*buf = canon
	if err != nil {
		return nil, err
	}
	return signEventCanonical(canon, ver, serverName, keyID, key)
}

func signEventCanonical(canon []byte, ver *RoomVersion, serverName, keyID string, key ed25519.PrivateKey) ([]byte, error) {
	buf := getBuf()
	defer putBuf(buf)
	red, err := redactCanonical((*buf)[:0], canon, ver, true)
	*buf = red
	if err != nil {
		return nil, err
	}
	return signCanonical(canon, red, serverName, keyID, key)
}

// VerifyEvent checks serverName's signature under keyID on an event
// (server-server API, "Validating hashes and signatures on received
// events"): "The event is redacted following the redaction algorithm, and
// the resultant object is checked for signatures from the originating
// server". It succeeds for the full event and for a redacted copy alike.
// Which servers must have signed (the sender's; for v1/v2 also the
// event_id's domain) and which keys were valid at origin_server_ts is the
// caller's business.
func VerifyEvent(raw []byte, ver *RoomVersion, serverName, keyID string, pub ed25519.PublicKey) error {
	if ver == nil {
		return errNilVersion
	}
	buf := getBuf()
	defer putBuf(buf)
	canon, err := Canonical((*buf)[:0], raw, ver.StrictCanonicalJSON)
	*buf = canon
	if err != nil {
		return err
	}
	return verifyEventCanonical(canon, ver, serverName, keyID, pub)
}

func verifyEventCanonical(canon []byte, ver *RoomVersion, serverName, keyID string, pub ed25519.PublicKey) error {
	buf := getBuf()
	defer putBuf(buf)
	red, err := redactCanonical((*buf)[:0], canon, ver, true)
	*buf = red
	if err != nil {
		return err
	}
	return verifyCanonical(canon, red, serverName, keyID, pub)
}

// SignatureKeyIDs lists the key IDs under which serverName signed a JSON
// object, in sorted order, so a verifier knows which keys to fetch. Key IDs of
// algorithms other than ed25519 are left out ("Removes any signing key
// identifiers from the entry with algorithms it doesn't understand").
func SignatureKeyIDs(raw []byte, serverName string) ([]string, error) {
	buf := getBuf()
	defer putBuf(buf)
	canon, err := Canonical((*buf)[:0], raw, false)
	*buf = canon
	if err != nil {
		return nil, err
	}
	if len(canon) == 0 || canon[0] != '{' {
		return nil, fmt.Errorf("%w: only JSON objects carry signatures", ErrBadJSON)
	}
	inner := getMember(getMember(canon, "signatures"), serverName)
	it, ok := iterObject(inner)
	if !ok {
		return nil, nil
	}
	var ids []string
	for k, _, ok := it.next(); ok; k, _, ok = it.next() {
		if id, _ := unquote(append(append([]byte{'"'}, k...), '"')); strings.HasPrefix(id, "ed25519:") {
			ids = append(ids, id)
		}
	}
	return ids, nil
}
