package federation

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"time"

	"engram/dag"
)

// ourKeys returns our signed key response (GET /_matrix/key/v2/server):
// "Homeservers publish their signing keys in a JSON object at
// /_matrix/key/v2/server", signed by each listed key.
func (f *Federation) ourKeys() ([]byte, error) {
	k := f.cfg.Key
	body := map[string]any{
		"server_name":     f.cfg.ServerName,
		"valid_until_ts":  time.Now().Add(f.cfg.KeyValidity).UnixMilli(),
		"verify_keys":     map[string]any{k.ID: map[string]string{"key": k.PublicBase64()}},
		"old_verify_keys": map[string]any{},
	}
	raw, err := json.Marshal(body)
	if err != nil {
		return nil, err
	}
	return dag.SignJSON(raw, f.cfg.ServerName, k.ID, k.Key)
}

// serverKeys is a server's verified key response, cached until it expires.
type serverKeys struct {
	raw        []byte // the response as received (signed by the server)
	keys       map[string]ed25519.PublicKey
	old        map[string]oldKey
	validUntil int64
	fetched    time.Time
}

type oldKey struct {
	pub     ed25519.PublicKey
	expired int64
}

// KeyRing fetches and caches remote servers' signing keys.
type KeyRing struct {
	f     *Federation
	mu    sync.Mutex
	cache map[string]*serverKeys
	locks map[string]*sync.Mutex
}

func newKeyRing(f *Federation) *KeyRing {
	return &KeyRing{f: f, cache: map[string]*serverKeys{}, locks: map[string]*sync.Mutex{}}
}

var errNoKey = errors.New("federation: no such key")

// PublicKey returns server's key keyID, valid at ts (ms; 0 means now),
// fetching the server's keys if the cache has nothing usable.
func (k *KeyRing) PublicKey(server, keyID string, ts int64) (ed25519.PublicKey, error) {
	if server == k.f.cfg.ServerName {
		if keyID == k.f.cfg.Key.ID {
			return k.f.cfg.Key.Public(), nil
		}
		return nil, fmt.Errorf("%w: %s %s", errNoKey, server, keyID)
	}
	now := time.Now().UnixMilli()
	if ts == 0 {
		ts = now
	}
	if pub, ok := k.lookup(server, keyID, ts); ok {
		return pub, nil
	}
	// One fetch per server at a time.
	k.mu.Lock()
	l := k.locks[server]
	if l == nil {
		l = &sync.Mutex{}
		k.locks[server] = l
	}
	k.mu.Unlock()
	l.Lock()
	defer l.Unlock()
	if pub, ok := k.lookup(server, keyID, ts); ok {
		return pub, nil
	}
	k.mu.Lock()
	sk := k.cache[server]
	k.mu.Unlock()
	if sk != nil && time.Since(sk.fetched) < 10*time.Second {
		return nil, fmt.Errorf("%w: %s %s", errNoKey, server, keyID)
	}
	sk, err := k.fetch(server)
	if err != nil {
		return nil, err
	}
	k.mu.Lock()
	k.cache[server] = sk
	k.mu.Unlock()
	if pub, ok := k.lookup(server, keyID, ts); ok {
		return pub, nil
	}
	return nil, fmt.Errorf("%w: %s %s", errNoKey, server, keyID)
}

func (k *KeyRing) lookup(server, keyID string, ts int64) (ed25519.PublicKey, bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	sk := k.cache[server]
	if sk == nil {
		return nil, false
	}
	if pub, ok := sk.keys[keyID]; ok {
		// "the key is valid for signing events until valid_until_ts"; an
		// expired cache entry is refetched.
		if ts <= sk.validUntil && time.Now().UnixMilli() <= sk.validUntil {
			return pub, true
		}
	}
	if o, ok := sk.old[keyID]; ok && ts < o.expired {
		return o.pub, true
	}
	return nil, false
}

// fetch asks the server itself for its keys and verifies the response.
func (k *KeyRing) fetch(server string) (*serverKeys, error) {
	raw, err := k.f.client.getUnsigned(server, "/_matrix/key/v2/server")
	if err != nil {
		return nil, fmt.Errorf("federation: fetching keys of %s: %w", server, err)
	}
	return parseServerKeys(raw, server)
}

// parseServerKeys checks a key response: it must name server and be signed
// by every key it lists as verify_keys.
func parseServerKeys(raw []byte, server string) (*serverKeys, error) {
	var resp struct {
		ServerName   string `json:"server_name"`
		ValidUntilTS int64  `json:"valid_until_ts"`
		VerifyKeys   map[string]struct {
			Key string `json:"key"`
		} `json:"verify_keys"`
		OldVerifyKeys map[string]struct {
			Key       string `json:"key"`
			ExpiredTS int64  `json:"expired_ts"`
		} `json:"old_verify_keys"`
	}
	if err := json.Unmarshal(raw, &resp); err != nil {
		return nil, fmt.Errorf("federation: key response of %s: %w", server, err)
	}
	if resp.ServerName != server {
		return nil, fmt.Errorf("federation: key response names %q, want %q", resp.ServerName, server)
	}
	sk := &serverKeys{raw: raw, keys: map[string]ed25519.PublicKey{}, old: map[string]oldKey{}, validUntil: resp.ValidUntilTS, fetched: time.Now()}
	// "Servers should use the lesser of this field and 7 days into the future"
	if max := time.Now().Add(7 * 24 * time.Hour).UnixMilli(); sk.validUntil > max {
		sk.validUntil = max
	}
	for id, v := range resp.VerifyKeys {
		pub, err := decodeKey(v.Key)
		if err != nil {
			continue
		}
		if err := dag.VerifyJSON(raw, server, id, pub); err != nil {
			return nil, fmt.Errorf("federation: key response of %s not signed by %s: %w", server, id, err)
		}
		sk.keys[id] = pub
	}
	if len(sk.keys) == 0 {
		return nil, fmt.Errorf("federation: key response of %s has no usable key", server)
	}
	for id, v := range resp.OldVerifyKeys {
		if pub, err := decodeKey(v.Key); err == nil {
			sk.old[id] = oldKey{pub: pub, expired: v.ExpiredTS}
		}
	}
	return sk, nil
}

func decodeKey(s string) (ed25519.PublicKey, error) {
	b, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(s, "="))
	if err != nil || len(b) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("federation: bad public key")
	}
	return ed25519.PublicKey(b), nil
}

// notaryResponse returns server's key response countersigned by us, for
// /_matrix/key/v2/query: from the cache if it is valid until minValid, or
// fetched.
func (k *KeyRing) notaryResponse(server string, minValid int64) ([]byte, error) {
	if server == k.f.cfg.ServerName {
		return k.f.ourKeys()
	}
	k.mu.Lock()
	sk := k.cache[server]
	k.mu.Unlock()
	if sk == nil || sk.validUntil < minValid || time.Now().UnixMilli() > sk.validUntil {
		var err error
		if sk, err = k.fetch(server); err != nil {
			return nil, err
		}
		k.mu.Lock()
		k.cache[server] = sk
		k.mu.Unlock()
	}
	return dag.SignJSON(sk.raw, k.f.cfg.ServerName, k.f.cfg.Key.ID, k.f.cfg.Key.Key)
}

// verifySigned checks that a JSON object carries a valid signature of server.
func (k *KeyRing) verifySigned(raw []byte, server string, ts int64) error {
	ids, err := dag.SignatureKeyIDs(raw, server)
	if err != nil {
		return err
	}
	var last error = fmt.Errorf("federation: no signature of %s", server)
	for _, id := range ids {
		pub, err := k.PublicKey(server, id, ts)
		if err != nil {
			last = err
			continue
		}
		if err := dag.VerifyJSON(raw, server, id, pub); err != nil {
			last = err
			continue
		}
		return nil
	}
	return last
}

// VerifyEvent runs receipt checks 2 and 3 on a parsed PDU: it must be
// signed by every server RequiredSigners names (and, for a restricted join,
// by the authorising user's server), with keys valid at its
// origin_server_ts. A content hash mismatch yields the redacted event: "If
// the hash check fails, then the event is redacted".
func (k *KeyRing) VerifyEvent(ev *dag.Event) (*dag.Event, error) {
	signers := ev.RequiredSigners()
	if ev.Type == "m.room.member" && ev.Version.RestrictedJoins {
		var c struct {
			Via string `json:"join_authorised_via_users_server"`
		}
		if json.Unmarshal(ev.Content, &c) == nil && c.Via != "" && membershipOf(ev.Content) == "join" {
			signers = append(signers, dag.ServerName(c.Via))
		}
	}
	for _, srv := range signers {
		ids, err := dag.SignatureKeyIDs(ev.Raw, srv)
		if err != nil {
			return nil, err
		}
		ok := false
		var last error = fmt.Errorf("federation: event %s has no signature of %s", ev.ID, srv)
		for _, id := range ids {
			pub, err := k.PublicKey(srv, id, ev.OriginServerTS)
			if err != nil {
				last = err
				continue
			}
			if err := ev.VerifySignature(srv, id, pub); err != nil {
				last = err
				continue
			}
			ok = true
			break
		}
		if !ok {
			return nil, last
		}
	}
	if err := ev.CheckContentHash(); err != nil {
		red, rerr := ev.Redacted()
		if rerr != nil {
			return nil, rerr
		}
		return dag.ParseEvent(red, ev.Version)
	}
	return ev, nil
}

func membershipOf(content json.RawMessage) string {
	var c struct {
		Membership string `json:"membership"`
	}
	_ = json.Unmarshal(content, &c)
	return c.Membership
}

func pathEscape(s string) string { return url.PathEscape(s) }
