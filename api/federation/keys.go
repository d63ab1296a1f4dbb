package federation

import (
	"context"
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
	old := map[string]any{}
	for _, o := range f.keys.ownOldKeys() {
		old[o.ID] = map[string]any{"key": base64.RawStdEncoding.EncodeToString(o.Public), "expired_ts": o.ExpiredTS}
	}
	body := map[string]any{
		"server_name":    f.cfg.ServerName,
		"valid_until_ts": time.Now().Add(f.cfg.KeyValidity).UnixMilli(),
		"verify_keys":    map[string]any{k.ID: map[string]string{"key": k.PublicBase64()}},
		// "The public keys that the server used to use and when it
		// stopped using them" (rotate-key keeps them next to the key).
		"old_verify_keys": old,
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
	// own holds this server's retired keys (SetOldKeys); notaries the
	// trusted key servers asked when a server cannot be reached
	// (SetTrustedKeyServers). Both under mu.
	own      []OldKey
	notaries []string
}

// OldKey is one of this server's retired signing keys: published in
// old_verify_keys and still accepted for our own events sent before
// ExpiredTS (ms).
type OldKey struct {
	ID        string // "ed25519:<version>"
	Public    ed25519.PublicKey
	ExpiredTS int64
}

// SetOldKeys installs this server's retired keys (engram rotate-key). Keys
// with the current key's ID or a bad public key are ignored.
func (f *Federation) SetOldKeys(keys []OldKey) {
	var own []OldKey
	for _, o := range keys {
		if o.ID != f.cfg.Key.ID && len(o.Public) == ed25519.PublicKeySize {
			own = append(own, o)
		}
	}
	f.keys.mu.Lock()
	f.keys.own = own
	f.keys.mu.Unlock()
}

// SetTrustedKeyServers names the notaries asked (POST
// /_matrix/key/v2/query) for a server's keys when the server itself
// cannot be reached ("Notary servers can return keys for servers that are
// offline or having issues serving their own keys by using cached
// responses").
func (f *Federation) SetTrustedKeyServers(servers []string) {
	var ns []string
	for _, s := range servers {
		if s = strings.TrimSpace(s); s != "" && s != f.cfg.ServerName {
			ns = append(ns, s)
		}
	}
	f.keys.mu.Lock()
	f.keys.notaries = ns
	f.keys.mu.Unlock()
}

func (k *KeyRing) ownOldKeys() []OldKey {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.own
}

func (k *KeyRing) trustedNotaries() []string {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.notaries
}

func (k *KeyRing) isNotary(server string) bool {
	for _, n := range k.trustedNotaries() {
		if n == server {
			return true
		}
	}
	return false
}

func newKeyRing(f *Federation) *KeyRing {
	return &KeyRing{f: f, cache: map[string]*serverKeys{}, locks: map[string]*sync.Mutex{}}
}

var errNoKey = errors.New("federation: no such key")

// PublicKey returns server's key keyID, valid at ts (ms; 0 means now),
// fetching the server's keys if the cache has nothing usable.
func (k *KeyRing) PublicKey(server, keyID string, ts int64) (ed25519.PublicKey, error) {
	now := time.Now().UnixMilli()
	if ts == 0 {
		ts = now
	}
	if server == k.f.cfg.ServerName {
		if keyID == k.f.cfg.Key.ID {
			return k.f.cfg.Key.Public(), nil
		}
		// A retired key still verifies what it signed before it expired,
		// as other servers see it in old_verify_keys.
		for _, o := range k.ownOldKeys() {
			if o.ID == keyID && ts < o.ExpiredTS {
				return o.Public, nil
			}
		}
		return nil, fmt.Errorf("%w: %s %s", errNoKey, server, keyID)
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
	sk, err := k.fetch(server, keyID)
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

// fetch asks the server itself for its keys and verifies the response;
// when that fails, it asks the trusted notaries (fetchFromNotaries). A
// notary's own keys are only ever fetched directly,
// so looking up the key that signs a notary answer never needs a notary:
// no recursion, and per-server locks are always taken in the order
// "server, then notary".
func (k *KeyRing) fetch(server, keyID string) (*serverKeys, error) {
	sk, err := k.fetchDirect(server)
	if err == nil {
		return sk, nil
	}
	if k.isNotary(server) || len(k.trustedNotaries()) == 0 {
		return nil, err
	}
	nsk, nerr := k.fetchFromNotaries(server, keyID, time.Now().UnixMilli())
	if nerr != nil {
		return nil, fmt.Errorf("%w; %w", err, nerr)
	}
	return nsk, nil
}

// fetchDirect asks the server itself (GET /_matrix/key/v2/server).
func (k *KeyRing) fetchDirect(server string) (*serverKeys, error) {
	raw, err := k.f.client.getUnsigned(server, "/_matrix/key/v2/server")
	if err != nil {
		return nil, fmt.Errorf("federation: fetching keys of %s: %w", server, err)
	}
	return parseServerKeys(raw, server)
}

// fetchFromNotaries asks each trusted notary in turn for server's key
// keyID valid until at least minValid (POST /_matrix/key/v2/query; the
// notary "may return multiple keys regardless of the Key IDs given") and
// returns
// the first answer that checks out: signed by the notary with a key of
// the notary's own (fetched from the notary), self-signed by every key of
// server it lists (parseServerKeys), and valid until minValid or later.
// Of several answers from one notary, the one valid longest wins.
func (k *KeyRing) fetchFromNotaries(server, keyID string, minValid int64) (*serverKeys, error) {
	body, err := json.Marshal(map[string]any{"server_keys": map[string]any{server: map[string]any{
		keyID: map[string]int64{"minimum_valid_until_ts": minValid}}}})
	if err != nil {
		return nil, err
	}
	var last error = fmt.Errorf("federation: no notary has the keys of %s", server)
	for _, notary := range k.trustedNotaries() {
		if notary == server {
			continue
		}
		sk, err := k.askNotary(notary, server, body, minValid)
		if err != nil {
			k.f.logger.Debug("notary key query failed", "notary", notary, "server", server, "err", err)
			last = err
			continue
		}
		return sk, nil
	}
	return nil, last
}

func (k *KeyRing) askNotary(notary, server string, body []byte, minValid int64) (*serverKeys, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	raw, err := k.f.client.do(ctx, notary, "POST", "/_matrix/key/v2/query", body, false)
	if err != nil {
		return nil, fmt.Errorf("federation: asking notary %s: %w", notary, err)
	}
	var resp struct {
		ServerKeys []json.RawMessage `json:"server_keys"`
	}
	if err := json.Unmarshal(raw, &resp); err != nil {
		return nil, fmt.Errorf("federation: answer of notary %s: %w", notary, err)
	}
	var best *serverKeys
	last := fmt.Errorf("federation: notary %s has no keys of %s", notary, server)
	for _, entry := range resp.ServerKeys {
		var head struct {
			ServerName string `json:"server_name"`
		}
		if json.Unmarshal(entry, &head) != nil || head.ServerName != server {
			continue
		}
		if err := k.verifyNotarySignature(entry, notary); err != nil {
			last = err
			continue
		}
		sk, err := parseServerKeys(entry, server)
		if err != nil {
			last = err
			continue
		}
		// "The returned keys SHOULD be valid until at least this
		// timestamp": an answer that is not is of no use to us.
		if sk.validUntil < minValid {
			last = fmt.Errorf("federation: notary %s answered keys of %s valid only until %d", notary, server, sk.validUntil)
			continue
		}
		if best == nil || sk.validUntil > best.validUntil {
			best = sk
		}
	}
	if best == nil {
		return nil, last
	}
	return best, nil
}

// verifyNotarySignature checks that a key response carries a valid
// signature of the notary, made with one of the notary's current keys.
func (k *KeyRing) verifyNotarySignature(raw []byte, notary string) error {
	ids, err := dag.SignatureKeyIDs(raw, notary)
	if err != nil {
		return err
	}
	var last error = fmt.Errorf("federation: key response not signed by notary %s", notary)
	for _, id := range ids {
		pub, err := k.PublicKey(notary, id, 0)
		if err != nil {
			last = err
			continue
		}
		if err := dag.VerifyJSON(raw, notary, id, pub); err != nil {
			last = err
			continue
		}
		return nil
	}
	return last
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
		// Directly only: notaries asking each other would loop.
		fresh, err := k.fetchDirect(server)
		if err != nil {
			if sk != nil {
				// "Notary servers can return keys for servers that are
				// offline [...] by using cached responses."
				return dag.SignJSON(sk.raw, k.f.cfg.ServerName, k.f.cfg.Key.ID, k.f.cfg.Key.Key)
			}
			return nil, err
		}
		sk = fresh
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
