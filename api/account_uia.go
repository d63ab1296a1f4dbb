package api

import (
	"slices"
	"strings"
	"time"
)

// User-interactive authentication (spec: "User-Interactive Authentication
// API"), as Synapse runs it: a session is created on the first request and
// bound to the request's method and path (and, for authenticated endpoints,
// to the requester); each request may complete one stage; the operation runs
// once every stage of some flow is complete. Sessions live in memory.

const (
	stageDummy    = "m.login.dummy"
	stagePassword = "m.login.password"
	stageRegToken = "m.login.registration_token"
)

// uiaSessionLife is Synapse's SESSION_EXPIRE_MS (48 hours); maxSessions bounds
// memory against clients that start sessions and never finish them.
const (
	uiaSessionLife = 48 * time.Hour
	maxSessions    = 100_000
)

// uiaSession is one user-interactive auth session. Its fields are guarded by
// accounts.mu.
type uiaSession struct {
	id         string
	created    time.Time
	op         string
	completed  []string
	authedUser string // who the password stage authenticated
	// Registration: the hash of the password given in an earlier request
	// (clients need not repeat it), and the registration token holding a use.
	pwHash   string
	pwDigest [32]byte
	regToken string
	// regParams are the registration parameters last given; a request that
	// carries only "auth" uses them (Synapse keeps the client dict so).
	regParams *registerBody
}

// uiaAuth is the "auth" object of a request.
type uiaAuth struct {
	Type       string          `json:"type"`
	Session    string          `json:"session"`
	Identifier *userIdentifier `json:"identifier"`
	User       string          `json:"user"` // deprecated form of identifier
	Password   string          `json:"password"`
	Token      string          `json:"token"`
}

// userIdentifier is the spec's "Identifier types".
type userIdentifier struct {
	Type    string `json:"type"`
	User    string `json:"user"`
	Medium  string `json:"medium"`
	Address string `json:"address"`
	Country string `json:"country"`
	Phone   string `json:"phone"`
}

// uiaOutcome is the result of one UIA step: done, or the 401 body to send.
type uiaOutcome struct {
	sess *uiaSession
	done bool
	body map[string]any
}

var passwordFlows = [][]string{{stagePassword}}

// startSession creates a session for op, expiring old ones first.
func (a *accounts) startSession(op string) *uiaSession {
	now := time.Now()
	sess := &uiaSession{id: randomToken(), created: now, op: op}
	a.mu.Lock()
	defer a.mu.Unlock()
	for len(a.sessionQ) > 0 && (now.Sub(a.sessionQ[0].created) > uiaSessionLife || len(a.sessionQ) >= maxSessions) {
		if old := a.sessions[a.sessionQ[0].id]; old != nil {
			a.dropLocked(old)
		}
		a.sessionQ = a.sessionQ[1:]
	}
	a.sessions[sess.id] = sess
	a.sessionQ = append(a.sessionQ, sessionRef{sess.id, now})
	return sess
}

func (a *accounts) getSession(id string) *uiaSession {
	a.mu.Lock()
	defer a.mu.Unlock()
	sess := a.sessions[id]
	if sess == nil || time.Since(sess.created) > uiaSessionLife {
		return nil
	}
	return sess
}

// endSession forgets a session whose operation succeeded.
func (a *accounts) endSession(sess *uiaSession) {
	a.mu.Lock()
	a.dropLocked(sess)
	a.mu.Unlock()
}

// dropLocked removes a session and releases its registration token use.
func (a *accounts) dropLocked(sess *uiaSession) {
	delete(a.sessions, sess.id)
	if sess.regToken != "" {
		if a.pending[sess.regToken]--; a.pending[sess.regToken] <= 0 {
			delete(a.pending, sess.regToken)
		}
		sess.regToken = ""
	}
}

// uia runs one step of user-interactive auth for r over flows. user is the
// requester for authenticated endpoints ("" for registration). A hard error
// (unknown session, changed operation, rate limit, deactivated account) is
// returned as error; an unsuccessful stage is reported inside the 401 body,
// as the spec shows ("the same HTTP status 401 response as above, with the
// addition of the standard errcode and error fields").
func (s *Server) uia(r *Req, au *uiaAuth, flows [][]string, user string) (uiaOutcome, error) {
	a := s.accounts
	op := string(r.ctx.Method()) + " " + string(r.ctx.Path()) + "\x00" + user
	var sess *uiaSession
	if au == nil || au.Session == "" {
		sess = a.startSession(op)
	} else {
		if sess = a.getSession(au.Session); sess == nil {
			return uiaOutcome{}, merr(400, "M_UNKNOWN", "Unknown session ID: "+au.Session)
		}
		if sess.op != op {
			return uiaOutcome{}, errForbidden("Requested operation has changed during the UI authentication session.")
		}
	}
	if au == nil {
		return uiaOutcome{sess: sess, body: uiaBody(sess, flows, nil, nil)}, nil
	}
	var stageErr *Error
	if au.Type != "" {
		if !slices.ContainsFunc(flows, func(f []string) bool { return slices.Contains(f, au.Type) }) && au.Type != stageDummy {
			return uiaOutcome{}, merr(400, "M_UNKNOWN", "Unknown login type "+au.Type)
		}
		var err error
		if stageErr, err = s.uiaStage(r, sess, au); err != nil {
			return uiaOutcome{}, err
		}
	}
	a.mu.Lock()
	completed := slices.Clone(sess.completed)
	a.mu.Unlock()
	for _, f := range flows {
		if allIn(f, completed) {
			return uiaOutcome{sess: sess, done: true}, nil
		}
	}
	if completed == nil {
		completed = []string{}
	}
	return uiaOutcome{sess: sess, body: uiaBody(sess, flows, completed, stageErr)}, nil
}

func allIn(stages, completed []string) bool {
	for _, st := range stages {
		if !slices.Contains(completed, st) {
			return false
		}
	}
	return true
}

// uiaBody is the 401 body: flows, params, session, and completed once the
// client has attempted a stage, with the stage's error when it failed.
func uiaBody(sess *uiaSession, flows [][]string, completed []string, stageErr *Error) map[string]any {
	fl := make([]map[string]any, len(flows))
	for i, f := range flows {
		fl[i] = map[string]any{"stages": f}
	}
	body := map[string]any{"flows": fl, "params": map[string]any{}, "session": sess.id}
	if completed != nil {
		body["completed"] = completed
	}
	if stageErr != nil {
		body["errcode"], body["error"] = stageErr.Code, stageErr.Message
	}
	return body
}

// uiaStage attempts one stage. It returns the stage's failure (merged into
// the 401) or a hard error.
func (s *Server) uiaStage(r *Req, sess *uiaSession, au *uiaAuth) (*Error, error) {
	a := s.accounts
	complete := func(stage string, f func()) {
		a.mu.Lock()
		if !slices.Contains(sess.completed, stage) {
			sess.completed = append(sess.completed, stage)
		}
		if f != nil {
			f()
		}
		a.mu.Unlock()
	}
	switch au.Type {
	case stageDummy:
		complete(stageDummy, nil)
	case stagePassword:
		user, e := s.identify(au.Identifier, au.User)
		if e != nil {
			if e.Status == 403 {
				return e, nil // unknown 3PID: a failed attempt, not a bad request
			}
			return nil, e
		}
		if e := s.limitUser(r, a.loginFailed, strings.ToLower(user), false); e != nil {
			return nil, e
		}
		canonical, res, err := a.checkPassword(user, au.Password)
		if err != nil {
			return nil, err
		}
		switch res {
		case pwDeactivated:
			return nil, errDeactivated()
		case pwWrong:
			s.recordUser(r, a.loginFailed, strings.ToLower(user))
			return errForbidden("Invalid password"), nil
		}
		complete(stagePassword, func() { sess.authedUser = canonical })
	case stageRegToken:
		if au.Token == "" {
			return merr(400, "M_MISSING_PARAM", "Missing registration token"), nil
		}
		ok, err := a.reserveRegToken(sess, au.Token)
		if err != nil {
			return nil, err
		}
		if !ok {
			return merr(401, "M_UNAUTHORIZED", "Invalid registration token"), nil
		}
		complete(stageRegToken, nil)
	}
	return nil, nil
}

func errDeactivated() *Error {
	return merr(403, "M_USER_DEACTIVATED", "This account has been deactivated")
}

// identify turns a login identifier (or the deprecated "user" field) into a
// user ID on this server. engram stores no third-party IDs, so a 3PID is
// unknown: 403 M_FORBIDDEN, as the spec says ("In the case that the
// homeserver does not know about the supplied 3PID, the homeserver must
// respond with 403 Forbidden").
func (s *Server) identify(id *userIdentifier, legacyUser string) (string, *Error) {
	user := legacyUser
	if id != nil {
		switch id.Type {
		case "m.id.user":
			user = id.User
		case "m.id.thirdparty":
			if id.Medium == "" || id.Address == "" {
				return "", errInvalid("Invalid thirdparty identifier")
			}
			return "", errForbidden("Invalid username or password")
		case "m.id.phone":
			if id.Country == "" || id.Phone == "" {
				return "", errInvalid("Invalid phone-type identifier")
			}
			return "", errForbidden("Invalid username or password")
		default:
			return "", merr(400, "M_UNKNOWN", "Unknown login identifier type")
		}
	}
	if user == "" {
		return "", errMissing("User identifier is missing 'user' key")
	}
	return s.qualify(user), nil
}

// reauth runs the password flow for an authenticated, sensitive operation
// (device deletion, password change, deactivation, login tokens). It returns
// the completed session, or nil when the response is already decided: err
// is then the error to return (nil once the 401 is written).
func (s *Server) reauth(r *Req, au *uiaAuth) (*uiaSession, error) {
	if e := s.limitUser(r, s.accounts.loginFailed, strings.ToLower(r.User), false); e != nil {
		return nil, e
	}
	out, err := s.uia(r, au, passwordFlows, r.User)
	if err != nil {
		return nil, err
	}
	if !out.done {
		return nil, r.jsonStatus(401, out.body)
	}
	s.accounts.mu.Lock()
	who := out.sess.authedUser
	s.accounts.mu.Unlock()
	// A completed session is single use: a replay needs the password again.
	s.accounts.endSession(out.sess)
	if who != r.User {
		return nil, errForbidden("Invalid auth")
	}
	return out.sess, nil
}
