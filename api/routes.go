package api

import (
	"encoding/json"
	"strconv"

	"engram/projections"
)

func (s *Server) routes() {
	rt := &s.rt
	rt.handle("GET", "/", public, s.rootPage)
	rt.handle("GET", "/_matrix/client/versions", public, s.versions)

	rt.client("GET", "/register/available", public, s.registerAvailable)
	rt.client("POST", "/register", public, s.register)
	rt.client("GET", "/login", public, s.loginFlows)
	rt.client("POST", "/login", public, s.login)
	rt.client("POST", "/logout", authed, s.logout)
	rt.client("POST", "/logout/all", authed, s.logoutAll)
	rt.client("GET", "/account/whoami", authed, s.whoami)

	rt.client("POST", "/user/{userId}/filter", authed, s.postFilter)
	rt.client("GET", "/user/{userId}/filter/{filterId}", authed, s.getFilter)

	rt.client("POST", "/createRoom", authed, s.createRoom)
	rt.client("POST", "/join/{roomIdOrAlias}", authed, s.join)
	rt.client("POST", "/rooms/{roomId}/join", authed, s.join)
	rt.client("POST", "/rooms/{roomId}/leave", authed, s.leave)
	rt.client("POST", "/rooms/{roomId}/invite", authed, s.targetMembership("invite"))
	rt.client("POST", "/rooms/{roomId}/kick", authed, s.targetMembership("leave"))
	rt.client("POST", "/rooms/{roomId}/ban", authed, s.targetMembership("ban"))
	rt.client("POST", "/rooms/{roomId}/unban", authed, s.unban)
	rt.client("PUT", "/rooms/{roomId}/send/{eventType}/{txnId}", authed, s.sendEvent)
	rt.client("PUT", "/rooms/{roomId}/state/{eventType}/{stateKey}", authed, s.putState)
	rt.client("PUT", "/rooms/{roomId}/state/{eventType}", authed, s.putState)
	rt.client("GET", "/rooms/{roomId}/state", authed, s.getState)
	rt.client("GET", "/rooms/{roomId}/state/{eventType}/{stateKey}", authed, s.getStateEvent)
	rt.client("GET", "/rooms/{roomId}/state/{eventType}", authed, s.getStateEvent)
	rt.client("GET", "/rooms/{roomId}/messages", authed, s.messages)
	rt.client("GET", "/joined_rooms", authed, s.joinedRooms)
	rt.client("GET", "/sync", authed, s.sync)
	rt.client("GET", "/capabilities", authed, s.capabilities)
	rt.client("GET", "/pushrules/", authed, s.pushRules)
}

const rootHTML = `<!doctype html>
<html><head><meta charset="utf-8"><title>engram</title></head>
<body><h1>engram is running</h1>
<p>This is a Matrix homeserver. Point a Matrix client at this address to use it.</p>
</body></html>
`

func (s *Server) rootPage(r *Req) error {
	r.ctx.Response.Header.SetContentType("text/html; charset=utf-8")
	r.ctx.SetBodyString(rootHTML)
	return nil
}

// specVersions are the client-server API versions engram answers to.
var versionsBody = []byte(`{"versions":["r0.6.1","v1.1","v1.2","v1.3","v1.4","v1.5","v1.6","v1.7","v1.8","v1.9","v1.10","v1.11","v1.12"],"unstable_features":{}}`)

func (s *Server) versions(r *Req) error {
	r.raw(200, versionsBody)
	return nil
}

func (s *Server) postFilter(r *Req) error {
	if r.Param("userId") != r.User {
		return errForbidden("Cannot create filters for other users")
	}
	var f map[string]json.RawMessage
	if e := r.decode(&f); e != nil {
		return e
	}
	body, _ := r.body()
	// Filter IDs only need to be unique per user; a log-independent random
	// ID is captured in the record so replay reproduces it.
	id := strconv.FormatUint(uint64(nowMS()), 36) + randomID(4)
	rec, err := projections.Encode(&projections.FilterRecord{UserID: r.User, FilterID: id, JSON: append([]byte(nil), body...)})
	if err != nil {
		return err
	}
	if _, err := s.log.Append(rec); err != nil {
		return err
	}
	return r.json(map[string]string{"filter_id": id})
}

func (s *Server) getFilter(r *Req) error {
	if r.Param("userId") != r.User {
		return errForbidden("Cannot read filters of other users")
	}
	f, err := s.store.Filter(r.User, r.Param("filterId"))
	if err != nil {
		return errNotFound("No such filter")
	}
	r.raw(200, f)
	return nil
}
