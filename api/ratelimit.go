package api

import (
	"math"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Limit is a token bucket: Burst actions at once, refilled at PerSecond.
// PerSecond <= 0 means no limit.
type Limit struct {
	PerSecond float64
	Burst     int
}

// RateLimits are the limits on the account endpoints, named after Synapse's
// rc_login (address, account, failed_attempts) and rc_registration.
type RateLimits struct {
	LoginAddress Limit // logins per client address
	LoginAccount Limit // logins per account being logged into
	LoginFailed  Limit // failed password checks per account (login and UIA)
	Registration Limit // registrations per client address
	// Loopback also limits requests from loopback addresses. It is off by
	// default so that tests and benchmarks, which register and log in many
	// users from 127.0.0.1, are not throttled. A server behind a reverse
	// proxy on the same host must set AccountConfig.TrustForwardedFor (or
	// this), or every client looks like loopback and is exempt.
	Loopback bool
}

// DefaultRateLimits follow the brief and Synapse's rc_* defaults in spirit:
// a burst of 3, then one action every ~6 seconds.
func DefaultRateLimits() RateLimits {
	l := Limit{PerSecond: 0.17, Burst: 3}
	return RateLimits{LoginAddress: l, LoginAccount: l, LoginFailed: l, Registration: l}
}

// limiter is a set of token buckets, one per key (an address or a user ID).
// Ephemeral by design: rate limits are not worth the log.
type limiter struct {
	lim Limit

	mu      sync.Mutex
	buckets map[string]*bucket
	swept   time.Time
}

type bucket struct {
	tokens float64
	at     time.Time
}

func newLimiter(l Limit) *limiter {
	return &limiter{lim: l, buckets: map[string]*bucket{}}
}

// maxBuckets bounds memory: past it, full buckets are swept at once.
const maxBuckets = 100_000

// level refills b to now and returns it (a fresh full bucket if absent).
func (l *limiter) level(key string, now time.Time) *bucket {
	b := l.buckets[key]
	if b == nil {
		if len(l.buckets) >= maxBuckets || now.Sub(l.swept) > time.Minute {
			l.sweep(now)
		}
		b = &bucket{tokens: float64(l.lim.Burst), at: now}
		l.buckets[key] = b
		return b
	}
	if dt := now.Sub(b.at).Seconds(); dt > 0 {
		b.tokens = math.Min(float64(l.lim.Burst), b.tokens+dt*l.lim.PerSecond)
		b.at = now
	}
	return b
}

// sweep drops buckets that have refilled: they are equal to absent ones.
func (l *limiter) sweep(now time.Time) {
	l.swept = now
	full := float64(l.lim.Burst)
	for k, b := range l.buckets {
		if b.tokens+now.Sub(b.at).Seconds()*l.lim.PerSecond >= full {
			delete(l.buckets, k)
		}
	}
	if len(l.buckets) >= maxBuckets { // all busy: forget them rather than grow
		clear(l.buckets)
	}
}

// allow reports whether one action under key may happen now, consuming a
// token if take; otherwise it returns how long until one may.
func (l *limiter) allow(key string, take bool) (bool, time.Duration) {
	if l == nil || l.lim.PerSecond <= 0 {
		return true, 0
	}
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.level(key, now)
	if b.tokens >= 1 {
		if take {
			b.tokens--
		}
		return true, 0
	}
	wait := time.Duration((1 - b.tokens) / l.lim.PerSecond * float64(time.Second))
	return false, max(wait, time.Millisecond)
}

// record consumes a token under key if one is left (an action that already
// happened, such as a failed password check).
func (l *limiter) record(key string) { l.allow(key, true) }

// limitError is 429 M_LIMIT_EXCEEDED with retry_after_ms and, as the spec
// asks since v1.10, a Retry-After header (whole seconds, rounded up).
func limitError(r *Req, wait time.Duration) *Error {
	r.ctx.Response.Header.Set("Retry-After", strconv.FormatInt(int64(math.Ceil(wait.Seconds())), 10))
	return errLimit(wait.Milliseconds())
}

// clientAddr is the request's client address: the connection's peer, or the
// first X-Forwarded-For entry behind a trusted reverse proxy.
func (s *Server) clientAddr(r *Req) string {
	if s.cfg.Accounts.TrustForwardedFor {
		if xff := string(r.ctx.Request.Header.Peek("X-Forwarded-For")); xff != "" {
			if i := strings.IndexByte(xff, ','); i >= 0 {
				xff = xff[:i]
			}
			if a := strings.TrimSpace(xff); a != "" {
				return a
			}
		}
	}
	return r.ctx.RemoteIP().String()
}

// addrLimited reports whether the client address is subject to rate limits.
func (s *Server) addrLimited(addr string) bool {
	if s.accounts.limits.Loopback {
		return true
	}
	ip := net.ParseIP(addr)
	return ip == nil || !ip.IsLoopback()
}

// limitAddr applies an address limit to r; take consumes a token.
func (s *Server) limitAddr(r *Req, l *limiter, take bool) *Error {
	addr := s.clientAddr(r)
	if !s.addrLimited(addr) {
		return nil
	}
	if ok, wait := l.allow(addr, take); !ok {
		return limitError(r, wait)
	}
	return nil
}

// limitUser applies a per-account limit. Loopback exemption applies here
// too: the account limits would otherwise throttle tests that log one user in
// many times.
func (s *Server) limitUser(r *Req, l *limiter, user string, take bool) *Error {
	if !s.addrLimited(s.clientAddr(r)) {
		return nil
	}
	if ok, wait := l.allow(user, take); !ok {
		return limitError(r, wait)
	}
	return nil
}

// recordUser counts an action (a failure) against user, unless exempt.
func (s *Server) recordUser(r *Req, l *limiter, user string) {
	if s.addrLimited(s.clientAddr(r)) {
		l.record(user)
	}
}

// recordAddr counts an action against the client address, unless exempt.
func (s *Server) recordAddr(r *Req, l *limiter) {
	if addr := s.clientAddr(r); s.addrLimited(addr) {
		l.record(addr)
	}
}
