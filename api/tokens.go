package api

import (
	"crypto/sha256"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Stream tokens are log positions: a token P names the gap just after
// position P (events at or before P are "before" it). Pagination tokens are
// "t<P>". Sync tokens are "s<P>_<E>": P the log position, E the position of
// the ephemeral streams (typing and presence, in memory; api/sync_hub.go).
// Every parser accepts both forms; P is what pagination uses.

func syncToken(p uint64) string { return "s" + strconv.FormatUint(p, 10) }
func pageToken(p uint64) string { return "t" + strconv.FormatUint(p, 10) }

// syncPos is a position in every stream /sync serves.
type syncPos struct {
	log uint64 // the log (room events, receipts, account data, ...)
	eph uint64 // typing and presence
}

func (p syncPos) token() string {
	b := make([]byte, 0, 40)
	b = append(b, 's')
	b = strconv.AppendUint(b, p.log, 10)
	b = append(b, '_')
	b = strconv.AppendUint(b, p.eph, 10)
	return string(b)
}

// parseSyncToken parses "s<P>", "s<P>_<E>" (and "t<P>"); further "_"
// parts, from a later version with more streams, are ignored.
func parseSyncToken(t string) (syncPos, bool) {
	if len(t) < 2 || (t[0] != 's' && t[0] != 't') {
		return syncPos{}, false
	}
	parts := strings.Split(t[1:], "_")
	var p syncPos
	var err error
	if p.log, err = strconv.ParseUint(parts[0], 10, 64); err != nil {
		return syncPos{}, false
	}
	if len(parts) > 1 && t[0] == 's' {
		if p.eph, err = strconv.ParseUint(parts[1], 10, 64); err != nil {
			return syncPos{}, false
		}
	}
	return p, true
}

// parseToken accepts either form and returns the log position; ok is false
// for anything else.
func parseToken(t string) (uint64, bool) {
	p, ok := parseSyncToken(t)
	return p.log, ok
}

func nowMS() int64 { return time.Now().UnixMilli() }

// Access tokens: every request looks its token up, and on a busy server
// the same few thousand tokens come back many times a second. The owner
// of a token is kept in memory by the token's hash, with the served
// tracker's position the lookup reflects, and is used again while the
// tracker has seen no record that can revoke a token since (tokensFresh:
// a login to an existing device, a logout, a refresh, a deactivation, a
// password change; served.go). The tracker is brought up to the log's
// durable position first, so a token revoked by a request that has
// answered is never accepted from the cache: its record is at or before
// that position. Expiry is checked on every use.
type tokenCache struct {
	mu sync.RWMutex
	m  map[[sha256.Size]byte]cachedToken
}

type cachedToken struct {
	user, device string
	expires      int64  // ms since the epoch; 0: the token does not expire
	p            uint64 // the lookup reflects at least this tracker position
}

// tokenCacheMax bounds the cache; reaching it forgets every entry, which
// only costs the lookups again.
const tokenCacheMax = 1 << 16

// cachedTokenOwner is tokenOwner through the token cache.
func (s *Server) cachedTokenOwner(tok []byte) (user, device string, e *Error) {
	if s.hub == nil {
		return s.tokenOwner(tok)
	}
	h := sha256.Sum256(tok)
	t := &s.hub.served
	t.advance(s, s.log.Last())
	c := &s.hub.tokens
	c.mu.RLock()
	ct, ok := c.m[h]
	c.mu.RUnlock()
	if ok && t.tokensFresh(ct.p) && (ct.expires == 0 || nowMS() < ct.expires) {
		return ct.user, ct.device, nil
	}
	p := t.scanned.Load() // the reads below reflect at least this position
	if user, device, e = s.tokenOwner(tok); e != nil {
		return "", "", e
	}
	ct = cachedToken{user: user, device: device, p: p}
	if strings.HasPrefix(string(tok), expiringPrefix) {
		exp, ok, err := s.store.TokenExpiry(h[:])
		if err != nil {
			return user, device, nil // answered; just not cached
		}
		if ok {
			ct.expires = max(exp, 1)
		}
	}
	c.mu.Lock()
	if c.m == nil || len(c.m) >= tokenCacheMax {
		c.m = map[[sha256.Size]byte]cachedToken{}
	}
	if old, had := c.m[h]; !had || old.p <= p {
		c.m[h] = ct
	}
	c.mu.Unlock()
	return user, device, nil
}
